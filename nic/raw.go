package nic

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// RawRead and RawWrite read and write a non-blocking descriptor without
// telling the Go scheduler: unix.Read and unix.Write enter a system call
// through the runtime, which, when the call lasts (a write into a veth
// runs the receiver's stack in the sender's softirq), hands the worker's
// P to another thread; the worker then waits for a P back, behind
// whatever that thread runs, and with the forwarder's other threads kept
// on other cores (cpuset) that wait is the slowest core's. A worker's
// calls never block (O_NONBLOCK, MSG_DONTWAIT), so keeping the P costs
// nothing; blocking waits (poll) still go through the scheduler.
func RawRead(fd int, b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	n, _, e := unix.RawSyscall(unix.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// RawWrite is RawRead's counterpart for writes.
func RawWrite(fd int, b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	n, _, e := unix.RawSyscall(unix.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}
