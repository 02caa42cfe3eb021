package nic

import (
	"encoding/binary"
	"fmt"
	"time"

	"golang.org/x/sys/unix"
)

// Wakeup lets another goroutine end a port's Wait early: the port polls
// an eventfd beside its own descriptor, and Wake makes it readable. A
// worker blocked in Wait on an idle port then runs a command (a step of
// a flow dump, a route) at once instead of at the end of its idle wait.
// The zero Wakeup has no eventfd: Wake does nothing and Poll waits for fd
// alone.
type Wakeup struct{ fd int }

// NewWakeup makes the eventfd.
func NewWakeup() (Wakeup, error) {
	fd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		return Wakeup{fd: -1}, fmt.Errorf("nic: eventfd: %w", err)
	}
	return Wakeup{fd: fd}, nil
}

// Wake ends the Poll in progress, or the next one.
func (w Wakeup) Wake() {
	if w.fd <= 0 {
		return
	}
	var one [8]byte
	binary.NativeEndian.PutUint64(one[:], 1)
	_, _ = unix.Write(w.fd, one[:]) // EAGAIN: the counter is already set
}

// Poll waits until fd is readable, Wake is called, or timeout passes.
func (w Wakeup) Poll(fd int, timeout time.Duration) error {
	fds := [2]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}, {Fd: int32(w.fd), Events: unix.POLLIN}}
	n := 2
	if w.fd <= 0 {
		n = 1
	}
	if _, err := unix.Poll(fds[:n], int(timeout.Milliseconds())); err != nil && err != unix.EINTR {
		return err
	}
	if n == 2 && fds[1].Revents&unix.POLLIN != 0 {
		var b [8]byte
		_, _ = unix.Read(w.fd, b[:]) // resets the counter
	}
	return nil
}

// Close closes the eventfd.
func (w Wakeup) Close() error {
	if w.fd <= 0 {
		return nil
	}
	return unix.Close(w.fd)
}
