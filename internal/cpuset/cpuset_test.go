package cpuset

import (
	"os"
	"runtime"
	"slices"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"
)

// TestAvoidMovesEveryThread: every thread of the process, those that
// exist when Avoid runs and those created later, stays off the avoided
// core. (It changes this test binary's affinity, which nothing else in
// the package minds.)
func TestAvoidMovesEveryThread(t *testing.T) {
	var all unix.CPUSet
	if err := unix.SchedGetaffinity(0, &all); err != nil {
		t.Fatal(err)
	}
	cores := Cores(&all)
	if len(cores) < 2 {
		t.Skip("needs two cores")
	}
	avoid := cores[len(cores)-1]
	left, err := Avoid([]int{avoid})
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(left, avoid) || len(left) != len(cores)-1 {
		t.Fatalf("left %v of %v after avoiding %d", left, cores, avoid)
	}
	// New threads: goroutines locked to threads of their own, so the
	// runtime must make some.
	done := make(chan struct{})
	for range 4 {
		go func() {
			runtime.LockOSThread()
			<-done
		}()
	}
	defer close(done)
	runtime.Gosched()
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	for _, task := range tasks {
		tid, _ := strconv.Atoi(task.Name())
		var set unix.CPUSet
		if err := unix.SchedGetaffinity(tid, &set); err != nil {
			continue // gone
		}
		if set.IsSet(avoid) {
			t.Errorf("thread %d may run on core %d: %v", tid, avoid, Cores(&set))
		}
	}
	if left, err := Avoid(cores); err != nil || left != nil {
		t.Errorf("avoiding every core: left %v, %v; want nothing changed", left, err)
	}
}
