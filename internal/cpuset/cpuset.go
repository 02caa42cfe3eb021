package cpuset

import (
	"errors"
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// Avoid moves every thread of this process off the given cores, onto the
// rest of the cores it may use. It returns the cores left, and changes
// nothing when the given cores leave none (a one-core machine, or every
// core given to workers): then the threads share the workers' cores, as
// before.
func Avoid(cores []int) ([]int, error) {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		return nil, fmt.Errorf("cpuset: read affinity: %w", err)
	}
	for _, c := range cores {
		set.Clear(c)
	}
	left := Cores(&set)
	if len(left) == 0 {
		return nil, nil
	}
	// A thread made while the threads are moved inherits its maker's
	// mask, which may still be the old one: go over the threads again
	// until a pass finds each on the set. After such a pass every thread
	// that could make another had the new mask.
	for range maxPasses {
		moved, err := moveAll(&set)
		if err != nil || moved == 0 {
			return left, err
		}
	}
	return left, fmt.Errorf("cpuset: threads still being made on the old cores after %d passes", maxPasses)
}

// maxPasses bounds Avoid's passes over the threads.
const maxPasses = 20

// moveAll sets every thread's mask to set where it differs, and returns
// how many it changed.
func moveAll(set *unix.CPUSet) (int, error) {
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return 0, fmt.Errorf("cpuset: list threads: %w", err)
	}
	moved := 0
	var errs []error
	for _, t := range tasks {
		tid, err := strconv.Atoi(t.Name())
		if err != nil {
			continue
		}
		var cur unix.CPUSet
		// A thread that has exited since the listing is no concern.
		if err := unix.SchedGetaffinity(tid, &cur); errors.Is(err, unix.ESRCH) || (err == nil && cur == *set) {
			continue
		}
		if err := unix.SchedSetaffinity(tid, set); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("cpuset: thread %d: %w", tid, err))
			continue
		}
		moved++
	}
	return moved, errors.Join(errs...)
}

// Cores lists the cores in set, in order.
func Cores(set *unix.CPUSet) []int {
	var out []int
	for c := range len(set) * 64 {
		if set.IsSet(c) {
			out = append(out, c)
		}
	}
	return out
}
