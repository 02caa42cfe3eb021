package e2e

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// A wake-up probe's round trips, and its bound.
const (
	WakeRounds  = 2000
	wakeTimeout = 10 * time.Second
)

// WakeTimes measures what this machine charges for waking a thread: a
// byte passed back and forth through two pipes between two threads,
// once on different cores (0 and 1) and once both on core 0, as perf
// bench sched pipe does. On a shared virtual machine the first moves
// with the host's load (an idle virtual CPU's wake-up goes through the
// hypervisor), and so does every figure of a benchmark and every
// test's margin: lbbench reports it before and after its loads, and the
// load tests log it, so that runs of different hours can be told apart.
func WakeTimes() string {
	across, err1 := WakeRoundTrip(0, 1)
	same, err2 := WakeRoundTrip(0, 0)
	if err1 != nil || err2 != nil {
		return fmt.Sprintf("not measured (%v, %v)", err1, err2)
	}
	return fmt.Sprintf("%.1f µs across cores, %.1f µs on one core", float64(across)/1e3, float64(same)/1e3)
}

// WakeRoundTrip is the mean time of one pass of the byte (half a round
// trip) between a thread on core a and one on core b. Both threads are
// pinned before either blocks on a pipe; a probe that does not finish
// within wakeTimeout is abandoned with its pipes (never closed under a
// thread that may still use them).
func WakeRoundTrip(a, b int) (time.Duration, error) {
	var ping, pong [2]int
	if err := unix.Pipe2(ping[:], unix.O_CLOEXEC); err != nil {
		return 0, err
	}
	if err := unix.Pipe2(pong[:], unix.O_CLOEXEC); err != nil {
		unix.Close(ping[0])
		unix.Close(ping[1])
		return 0, err
	}
	closeAll := func() {
		for _, fd := range []int{ping[0], ping[1], pong[0], pong[1]} {
			unix.Close(fd)
		}
	}
	// pin locks the goroutine to its thread and the thread to core c;
	// the thread ends with its goroutine (it stays locked), so no
	// pinned thread goes back to the runtime.
	pin := func(c int) error {
		runtime.LockOSThread()
		var set unix.CPUSet
		set.Set(c)
		return unix.SchedSetaffinity(0, &set)
	}
	pinned := make(chan error, 2)
	begin, abort := make(chan struct{}), make(chan struct{})
	wait := func() bool {
		select {
		case <-begin:
			return true
		case <-abort:
			return false
		}
	}
	// pass moves the byte WakeRounds times: from one pipe to the other
	// (the echo) or into one and back from the other (the timer).
	pass := func(in, out int, echo bool) error {
		var buf [1]byte
		for range WakeRounds {
			if !echo {
				if _, err := unix.Write(out, buf[:]); err != nil {
					return err
				}
			}
			if n, err := unix.Read(in, buf[:]); err != nil || n != 1 {
				return fmt.Errorf("read %d bytes: %v", n, err)
			}
			if echo {
				if _, err := unix.Write(out, buf[:]); err != nil {
					return err
				}
			}
		}
		return nil
	}
	echoed := make(chan error, 1)
	go func() {
		pinned <- pin(b)
		if wait() {
			echoed <- pass(ping[0], pong[1], true)
		}
	}()
	type timing struct {
		d   time.Duration
		err error
	}
	timed := make(chan timing, 1)
	go func() {
		pinned <- pin(a)
		if wait() {
			start := time.Now()
			err := pass(pong[0], ping[1], false)
			timed <- timing{time.Since(start) / (2 * WakeRounds), err}
		}
	}()
	if err := errors.Join(<-pinned, <-pinned); err != nil {
		close(abort)
		closeAll()
		return 0, err
	}
	close(begin)
	t := time.NewTimer(wakeTimeout)
	defer t.Stop()
	var r timing
	select {
	case r = <-timed:
	case <-t.C:
		return 0, fmt.Errorf("no answer within %v", wakeTimeout)
	}
	select {
	case err := <-echoed:
		r.err = errors.Join(r.err, err)
	case <-t.C:
		return 0, fmt.Errorf("no answer within %v", wakeTimeout)
	}
	closeAll()
	return r.d, r.err
}

// exclusiveLock is the file whose lock Exclusive takes: one per
// machine, whichever test binary asks.
var exclusiveLock = filepath.Join(os.TempDir(), "tether-tests-exclusive.lock")

// Exclusive keeps the tests that call it from running at the same time
// on this machine, across test binaries (go test runs packages side by
// side): those that load the CPU for minutes (the appliance's boots
// under software emulation) and those whose margins such a neighbour
// breaks (a flood's "within 1 s"). The lock is held until t ends. A
// test waits for it at most wait, then goes on without it (logged):
// a neighbour that hangs must not hang this test too. It reports
// whether t holds the lock.
func Exclusive(t testing.TB, wait time.Duration) bool {
	t.Helper()
	return exclusive(t, exclusiveLock, wait)
}

func exclusive(t testing.TB, path string, wait time.Duration) bool {
	t.Helper()
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o666)
	if err != nil {
		t.Logf("going on without the exclusive lock: %v", err)
		return false
	}
	// The waiter gets the descriptor before it starts: nothing closes
	// the file while it may still be about to use it.
	fd := int(f.Fd())
	got := make(chan error, 1)
	go func() { got <- unix.Flock(fd, unix.LOCK_EX) }()
	timer := time.NewTimer(wait)
	defer timer.Stop()
	start := time.Now()
	select {
	case err := <-got:
		// Closing the file releases the lock.
		t.Cleanup(func() { f.Close() })
		if err != nil {
			t.Logf("going on without the exclusive lock: %v", err)
			return false
		}
		if d := time.Since(start); d > time.Second {
			t.Logf("waited %v for the exclusive lock (another test binary held it)", d.Round(time.Second))
		}
		return true
	case <-timer.C:
		// The waiter keeps the file: once its flock returns (the lock
		// taken after all, or an error), it closes it, which lets the
		// lock go at once.
		go func() {
			<-got
			f.Close()
		}()
		t.Logf("going on without the exclusive lock: another test binary has held it for %v", wait)
		return false
	}
}
