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
	all, cores := allowed(t)
	defer setEvery(&all) // for the tests after this one
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

// TestAvoidWhileThreadsAreMade: threads the runtime makes while Avoid
// moves the others (a thread made by one not yet moved inherits the old
// mask) end up off the avoided core too.
func TestAvoidWhileThreadsAreMade(t *testing.T) {
	all, cores := allowed(t)
	defer setEvery(&all)
	avoid := cores[len(cores)-1]
	for round := range 20 {
		// Back on every core, each thread, for the next round.
		tasks, _ := os.ReadDir("/proc/self/task")
		for _, task := range tasks {
			tid, _ := strconv.Atoi(task.Name())
			unix.SchedSetaffinity(tid, &all)
		}
		stop, hold := make(chan struct{}), make(chan struct{})
		made := make(chan struct{})
		go func() {
			defer close(made)
			// Goroutines locked to threads of their own: each needs a
			// new thread while Avoid runs.
			for {
				select {
				case <-stop:
					return
				default:
				}
				go func() {
					runtime.LockOSThread()
					<-hold
				}()
				runtime.Gosched()
			}
		}()
		_, err := Avoid([]int{avoid})
		close(stop)
		<-made
		if err != nil {
			close(hold)
			t.Fatal(err)
		}
		tasks, _ = os.ReadDir("/proc/self/task")
		for _, task := range tasks {
			tid, _ := strconv.Atoi(task.Name())
			var set unix.CPUSet
			if unix.SchedGetaffinity(tid, &set) == nil && set.IsSet(avoid) {
				t.Errorf("round %d: thread %d (of %d) may run on core %d", round, tid, len(tasks), avoid)
			}
		}
		close(hold)
		if t.Failed() {
			return
		}
	}
}

// setEvery sets every thread's mask to set.
func setEvery(set *unix.CPUSet) {
	tasks, _ := os.ReadDir("/proc/self/task")
	for _, task := range tasks {
		tid, _ := strconv.Atoi(task.Name())
		unix.SchedSetaffinity(tid, set)
	}
}

// allowed returns the cores the process may use, as a set and a list;
// it skips the test on fewer than two.
func allowed(t *testing.T) (unix.CPUSet, []int) {
	t.Helper()
	var all unix.CPUSet
	if err := unix.SchedGetaffinity(0, &all); err != nil {
		t.Fatal(err)
	}
	cores := Cores(&all)
	if len(cores) < 2 {
		t.Skip("needs two cores")
	}
	return all, cores
}
