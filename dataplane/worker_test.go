package dataplane

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tetherlb/tether/nic"
)

// sleepyPort never has a frame, and its Wait returns only when woken:
// a worker idle on it runs a command only if Do wakes it.
type sleepyPort struct{ woken chan struct{} }

func (p *sleepyPort) Name() string                        { return "sleepy" }
func (p *sleepyPort) LinkType() nic.LinkType              { return nic.LinkEthernet }
func (p *sleepyPort) Stats() nic.Stats                    { return nic.Stats{} }
func (p *sleepyPort) Close() error                        { return nil }
func (p *sleepyPort) Receive([]nic.Frame) (int, error)    { return 0, nil }
func (p *sleepyPort) Transmit(f []nic.Frame) (int, error) { return len(f), nil }
func (p *sleepyPort) Release([]nic.Frame)                 {}
func (p *sleepyPort) Wait(time.Duration) error            { <-p.woken; return nil }
func (p *sleepyPort) Wake() {
	select {
	case p.woken <- struct{}{}:
	default:
	}
}

// TestDoWakesAnIdleWorker: a command reaches a worker blocked in its
// port's idle wait at once, not when the wait ends (Explain and every
// step of a flow dump used to wait out the 50 ms idle wait).
func TestDoWakesAnIdleWorker(t *testing.T) {
	r := newRig(t, loadConfig(t, 1024, "1024-65535"))
	port := &sleepyPort{woken: make(chan struct{}, 1)}
	w := NewWorker(r.p, port, 32, -1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() { cancel(); port.Wake(); <-done })
	for i := range 3 {
		for !w.sleeping.Load() {
			time.Sleep(time.Millisecond) // polling a state: the worker goes idle
		}
		dctx, dcancel := context.WithTimeout(ctx, 10*time.Second)
		ran := false
		if err := w.Do(dctx, func(*Pipeline) { ran = true }); err != nil || !ran {
			t.Fatalf("command %d to a sleeping worker: %v (ran %v)", i, err, ran)
		}
		dcancel()
	}
}

// TestDoAbandonedNeverRuns: a command whose caller gave up (its context
// ended) before the worker got to it never runs: it would write the
// caller's variables after Do returned (a data race the uplink's
// collection met when its connection ended).
func TestDoAbandonedNeverRuns(t *testing.T) {
	r := newRig(t, loadConfig(t, 1024, "1024-65535"))
	w := NewWorker(r.p, &sleepyPort{woken: make(chan struct{}, 1)}, 32, -1) // not running
	ctx, cancel := context.WithCancel(context.Background())
	var ran atomic.Bool
	returned := make(chan error, 1)
	go func() { returned <- w.Do(ctx, func(*Pipeline) { ran.Store(true) }) }()
	for len(w.cmds) == 0 {
		time.Sleep(time.Millisecond) // polling a state: the command is queued
	}
	cancel()
	if err := <-returned; err == nil {
		t.Fatal("Do returned nil for a command the worker never took")
	}
	// The worker gets to the queue only now.
	(<-w.cmds)(r.p)
	if ran.Load() {
		t.Fatal("a command Do gave up on ran after Do returned")
	}
	// A command the worker takes in time runs and Do reports it.
	go func() { returned <- w.Do(context.Background(), func(*Pipeline) { ran.Store(true) }) }()
	for len(w.cmds) == 0 {
		time.Sleep(time.Millisecond)
	}
	(<-w.cmds)(r.p)
	if err := <-returned; err != nil || !ran.Load() {
		t.Fatalf("a command taken in time: %v (ran %v)", err, ran.Load())
	}
}
