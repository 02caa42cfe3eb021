package e2e

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Proc is a process started in a namespace.
type Proc struct {
	Name string
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan struct{}
	err  error
}

// syncBuffer collects a process's output for the test to read while it
// runs.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Start runs a command in a namespace in the background, with extra
// environment variables. Close stops it.
func (n *Net) Start(ns, name string, env []string, args ...string) (*Proc, error) {
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	// Its own process group, so that Stop reaches children too.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("e2e: start %s in %s: %w", name, ns, err)
	}
	p := &Proc{Name: name, cmd: cmd, out: out, done: make(chan struct{})}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	n.mu.Lock()
	n.procs = append(n.procs, p)
	n.mu.Unlock()
	return p, nil
}

// Output returns what the process printed so far.
func (p *Proc) Output() string { return p.out.String() }

// WaitFor waits until the process prints text, and fails if it exits or
// timeout passes first.
func (p *Proc) WaitFor(text string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if strings.Contains(p.Output(), text) {
			return nil
		}
		select {
		case <-p.done:
			return fmt.Errorf("e2e: %s exited (%v) before printing %q:\n%s", p.Name, p.err, text, p.Output())
		case <-time.After(20 * time.Millisecond):
		}
	}
	return fmt.Errorf("e2e: %s did not print %q within %s:\n%s", p.Name, text, timeout, p.Output())
}

// Done is closed when the process has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Signal sends a signal to the process.
func (p *Proc) Signal(sig syscall.Signal) error {
	return syscall.Kill(-p.cmd.Process.Pid, sig)
}

// Wait waits for the process to exit, up to timeout.
func (p *Proc) Wait(timeout time.Duration) error {
	select {
	case <-p.done:
		return p.err
	case <-time.After(timeout):
		return fmt.Errorf("e2e: %s still running after %s", p.Name, timeout)
	}
}

// Exited waits up to timeout for the process itself to exit. Unlike
// Wait it does not wait for the end of its output, which a child it
// left running keeps open: a control process's forwarder, SIGKILLed
// with it or not, holds the same pipes until it exits too.
func (p *Proc) Exited(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	// cmd.Wait reaps the process as soon as it exits, before it waits
	// for the pipes, so its pid is gone then.
	for syscall.Kill(p.cmd.Process.Pid, 0) == nil {
		if time.Now().After(deadline) {
			return fmt.Errorf("e2e: %s still running after %s", p.Name, timeout)
		}
		select {
		case <-p.done:
			return nil
		case <-time.After(10 * time.Millisecond):
		}
	}
	return nil
}

// Stop asks the process to stop (SIGTERM), then kills it after a grace
// period.
func (p *Proc) Stop() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(3 * time.Second):
		_ = p.Signal(syscall.SIGKILL)
		<-p.done
	}
}

// Poll calls f until it succeeds or bound passes, and returns its last
// error then: for a harness that waits on a condition it can only ask
// about (an API's view), not be told of.
func Poll(bound time.Duration, f func() error) error {
	deadline := time.Now().Add(bound)
	for {
		err := f()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
}
