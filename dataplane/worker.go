package dataplane

import (
	"context"
	"fmt"
	"runtime"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tetherlb/tether/nic"
	"github.com/tetherlb/tether/tables/flow"
)

// Back-off of an idle worker: spin through spinPolls empty receives (a
// packet arriving then costs no wake-up), yield for yieldPolls more, then
// block in the port for up to idleWait, so that an idle unit uses no CPU
// and a two-core machine is not starved. idleWait also bounds how late
// aging and held-fragment expiry run on an idle worker.
const (
	spinPolls  = 256
	yieldPolls = 256
	idleWait   = 50 * time.Millisecond
)

// Worker runs one Pipeline on one port, on one goroutine locked to its
// OS thread and, when given a core, pinned to it. Everything else talks
// to it through Do, which runs a function between batches: the command
// ring of the design, with Go's channel as the ring.
type Worker struct {
	p      *Pipeline
	port   nic.Port
	out    *Output
	frames []nic.Frame
	core   int
	cmds   chan func(*Pipeline)
	start  time.Time
	// waiter is the port's, if it can block; sleeping is set while the
	// worker blocks in it, so that a command wakes it (and only then
	// costs a system call).
	waiter   nic.Waiter
	sleeping atomic.Bool
	// ho is the worker's end of the hand-off between workers that each
	// read their own device queue (handoff.go), nil otherwise; in holds
	// the frames handed to it, copied into its port's buffers.
	ho *handOff
	in []nic.Frame
}

// NewWorker makes a worker; core < 0 leaves it unpinned.
func NewWorker(p *Pipeline, port nic.Port, batch, core int) *Worker {
	waiter, _ := port.(nic.Waiter)
	if a, ok := port.(nic.Allocator); ok {
		p.UseAllocator(a)
	}
	return &Worker{
		waiter: waiter,
		p:      p,
		port:   port,
		out:    NewOutput(&p.cfg),
		frames: make([]nic.Frame, max(1, min(batch, MaxBatch))),
		core:   core,
		cmds:   make(chan func(*Pipeline), 1024),
		start:  time.Now(),
	}
}

// Pipeline returns the worker's pipeline. Only the worker's goroutine may
// use it while Run runs; use Do.
func (w *Worker) Pipeline() *Pipeline { return w.p }

// Do runs fn on the worker's goroutine between batches and waits for it.
// It returns ctx's error if the worker does not get to it in time (it has
// stopped, or ctx ended); fn then never runs. Once the worker has begun
// fn, Do waits for its end whatever ctx says: fn usually writes the
// caller's variables, and must not run after Do returned.
func (w *Worker) Do(ctx context.Context, fn func(p *Pipeline)) error {
	done := make(chan struct{})
	var state atomic.Int32 // doQueued, doRunning or doAbandoned
	cmd := func(p *Pipeline) {
		if !state.CompareAndSwap(doQueued, doRunning) {
			return // the caller gave up before the worker got here
		}
		fn(p)
		close(done)
	}
	select {
	case w.cmds <- cmd:
		w.wake()
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		if state.CompareAndSwap(doQueued, doAbandoned) {
			return ctx.Err()
		}
		<-done // begun: one command between batches, short
		return nil
	}
}

// The states of a command Do queued.
const (
	doQueued int32 = iota
	doRunning
	doAbandoned
)

// Post queues fn to run on the worker's goroutine between batches and
// returns at once (it blocks only while the command queue is full).
func (w *Worker) Post(ctx context.Context, fn func(p *Pipeline)) error {
	select {
	case w.cmds <- fn:
		w.wake()
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// wake ends the worker's idle wait, if it is in one, for a new command.
func (w *Worker) wake() {
	if w.sleeping.Load() {
		w.waiter.Wake()
	}
}

// Now returns the worker's flow clock, for commands that need it.
func (w *Worker) Now() flow.Tick { return w.now() }

// now is the worker's flow clock.
func (w *Worker) now() flow.Tick { return flow.Tick(time.Since(w.start) / time.Millisecond) }

// step receives and processes one batch, and what other workers handed
// over, and returns how many frames it took.
func (w *Worker) step() (int, error) {
	n, err := w.port.Receive(w.frames)
	if err != nil {
		return 0, fmt.Errorf("worker: %w", err)
	}
	moved := n
	if w.ho != nil {
		// Frames other workers own go to them; what they handed here
		// is processed after this worker's own.
		n = w.ho.sort(w.p.snap, w.frames[:n], w.port)
	}
	w.p.Process(w.now(), w.frames[:n], w.out)
	w.flush()
	if w.ho != nil {
		if m := w.ho.take(w.in); m > 0 {
			moved += m
			w.p.Process(w.now(), w.in[:m], w.out)
			w.flush()
		}
	}
	return moved, nil
}

// flush hands the port what the pipeline decided.
func (w *Worker) flush() {
	if len(w.out.TX) > 0 {
		// Frames the port could not send are counted by the port.
		_, _ = w.port.Transmit(w.out.TX)
	}
	w.port.Release(w.out.Pass)
	w.port.Release(w.out.Drop)
	w.out.Reset()
}

// HandOffStats returns the worker's hand-off counters (zero when it has
// no hand-off). Call it from the worker's goroutine (Do) or after Run.
func (w *Worker) HandOffStats() HandOffStats {
	if w.ho == nil {
		return HandOffStats{}
	}
	return w.ho.stats
}

// yieldCore lets another thread the kernel runs on this core go first,
// keeping the goroutine's P.
func yieldCore() { unix.RawSyscall(unix.SYS_SCHED_YIELD, 0, 0, 0) }

// Run forwards until ctx ends or the port fails.
func (w *Worker) Run(ctx context.Context) error {
	// The thread stays locked: when Run returns it ends with the
	// goroutine, rather than go back to the runtime pinned to a core
	// other threads must keep off.
	runtime.LockOSThread()
	if w.core >= 0 {
		var set unix.CPUSet
		set.Set(w.core)
		if err := unix.SchedSetaffinity(0, &set); err != nil {
			return fmt.Errorf("worker: pin to core %d: %w", w.core, err)
		}
	}
	idle := 0
	for ctx.Err() == nil {
		// Apply pending commands (routes, swaps) before the batch, a
		// bounded number so packets keep flowing under a route storm.
	cmds:
		for range 64 {
			select {
			case fn := <-w.cmds:
				fn(w.p)
			default:
				break cmds
			}
		}
		moved, err := w.step()
		if err != nil {
			return err
		}
		if moved > 0 {
			idle = 0
			continue
		}
		idle++
		switch {
		case idle < spinPolls:
		case idle < spinPolls+yieldPolls || w.p.HeldPunts() > 0:
			// A worker waiting for routes keeps polling its commands.
			// It gives way, with sched_yield, to any other thread the
			// kernel runs on its core (a backend's server on a small
			// machine), which would otherwise wait for the scheduler's
			// time slice; the call is raw so that it keeps the worker's
			// P. It does not yield the P itself (runtime.Gosched): the
			// goroutine is locked to its thread, so the runtime would
			// put it back through another thread, which runs on
			// another core (cpuset) and, there busy, kept the worker
			// waiting for milliseconds. Only while punted packets wait
			// for the control process's routes does it let the
			// goroutines that bring them have the P.
			if w.p.HeldPunts() > 0 {
				runtime.Gosched()
			}
			yieldCore()
		case w.waiter != nil:
			// Announce the sleep before the last look at the commands
			// and the hand-off rings: a command queued, or a frame
			// handed over, after the look sees the flag and wakes us.
			w.sleeping.Store(true)
			var err error
			if len(w.cmds) == 0 && (w.ho == nil || !w.ho.pending()) {
				err = w.waiter.Wait(idleWait)
			}
			w.sleeping.Store(false)
			if err != nil {
				return fmt.Errorf("worker: %w", err)
			}
		default:
			time.Sleep(time.Millisecond)
		}
	}
	return nil
}
