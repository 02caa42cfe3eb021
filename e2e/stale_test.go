package e2e

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"syscall"
	"testing"
	"time"
)

// deadPID can never be a process: the kernel allocates PIDs below
// pid_max, which is at most 1<<22 (PID_MAX_LIMIT on 64-bit).
const deadPID = 1 << 22

// staleTestBound bounds each wait of TestRemoveStaleKills. It is a
// bound for a failure message, not a measurement.
const staleTestBound = 30 * time.Second

// TestRemoveStaleKills leaves a namespace as a run killed by go test's
// -timeout would: named after a process that is gone, with a process
// still inside. RemoveStale must kill that process and delete the
// namespace.
func TestRemoveStaleKills(t *testing.T) {
	if err := Root(); err != nil {
		t.Skip(err)
	}
	if processAlive(deadPID) {
		t.Fatalf("PID %d exists; the test needs one that cannot", deadPID)
	}
	// Our PID in the tag: concurrent runs of this test do not share it.
	name := fmt.Sprintf("%s%ds%d", namePrefix, deadPID, os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })

	// Detached, as a test binary's qemu outlives its killed parent.
	sleeper := exec.Command("ip", "netns", "exec", name, "sleep", "1000")
	sleeper.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := sleeper.Start(); err != nil {
		t.Fatalf("start sleep in %s: %v", name, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- sleeper.Wait() }()
	t.Cleanup(func() {
		_ = sleeper.Process.Kill()
		<-exited
	})
	// ip execs sleep in place: the process is inside once ip netns pids
	// lists it.
	waitUntil(t, "sleep inside "+name, func() bool {
		pids, err := nsPIDs(name)
		return err == nil && slices.Contains(pids, sleeper.Process.Pid)
	})

	if err := RemoveStale(); err != nil {
		t.Fatalf("RemoveStale: %v", err)
	}
	if nsExists(name) {
		t.Errorf("namespace %s is still there after RemoveStale", name)
	}
	select {
	case err := <-exited:
		if !killed(err) {
			t.Errorf("the process inside %s ended with %v; want it killed (SIGKILL)", name, err)
		}
		exited <- err // for the cleanup
	case <-time.After(staleTestBound):
		t.Errorf("the process inside %s still runs %s after RemoveStale", name, staleTestBound)
	}
}

// killed reports whether a process's Wait says SIGKILL ended it.
func killed(err error) bool {
	var exit *exec.ExitError
	if !errors.As(err, &exit) {
		return false
	}
	status, ok := exit.Sys().(syscall.WaitStatus)
	return ok && status.Signaled() && status.Signal() == syscall.SIGKILL
}

// waitUntil polls cond until it holds, and fails the test if it does not
// within staleTestBound.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(staleTestBound)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, staleTestBound)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
