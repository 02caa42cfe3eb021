package dataplane

import (
	"context"
	"fmt"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/tetherlb/tether/nic"
)

// A Dispatcher spreads one port's frames over several workers (software
// RSS, see Steerer) when the device has fewer queues than there are
// workers. It owns the port: it receives, steers each frame to its
// worker's inbound queue, and sends or releases what the workers hand
// back. Each worker runs on a queuePort, an in-memory nic.Port over those
// queues, so the worker code is the same with or without a dispatcher.
type Dispatcher struct {
	port    nic.Port
	steer   *Steerer
	snap    atomic.Pointer[Snapshot]
	queues  []*queuePort
	frames  []nic.Frame
	scratch []nic.Frame
	byW     [][]nic.Frame
	// inflight counts frames lent to workers and not yet back.
	inflight  int
	queueFull atomic.Uint64 // DispatchStats.QueueFull, read by Stats from other goroutines
	// waiter is the port's, if it can block; sleeping is set while the
	// dispatcher blocks in it, so that a worker handing frames back
	// wakes it (and only then costs a system call).
	waiter   nic.Waiter
	sleeping atomic.Bool
}

// DispatchStats count the dispatcher's own losses.
type DispatchStats struct {
	// QueueFull counts frames dropped because their worker's queue was
	// full (the worker is slower than the port).
	QueueFull uint64
}

// queueSize is each queue's capacity in frames.
const queueSize = 4096

// queuePort is one worker's view of the dispatcher.
type queuePort struct {
	name  string
	link  nic.LinkType
	in    *spsc // dispatcher → worker
	tx    *spsc // worker → dispatcher: to send
	free  *spsc // worker → dispatcher: to release
	kick  chan struct{}
	stats nic.Stats
	d     *Dispatcher
}

// NewDispatcher makes a dispatcher for port and the ports its workers run
// on.
func NewDispatcher(port nic.Port, snap *Snapshot, workers, batch int) (*Dispatcher, []nic.Port) {
	d := &Dispatcher{
		port:    port,
		steer:   NewSteerer(workers),
		frames:  make([]nic.Frame, max(1, min(batch, MaxBatch))),
		scratch: make([]nic.Frame, MaxBatch),
		byW:     make([][]nic.Frame, workers),
	}
	d.waiter, _ = port.(nic.Waiter)
	d.snap.Store(snap)
	ports := make([]nic.Port, workers)
	for i := range workers {
		q := &queuePort{
			name: fmt.Sprintf("%s#%d", port.Name(), i),
			link: port.LinkType(),
			in:   newSPSC(queueSize), tx: newSPSC(queueSize), free: newSPSC(queueSize),
			kick: make(chan struct{}, 1),
			d:    d,
		}
		d.queues = append(d.queues, q)
		d.byW[i] = make([]nic.Frame, 0, MaxBatch)
		ports[i] = q
	}
	return d, ports
}

// SetSnapshot changes what steering decides by (VIPs and SNAT addresses).
func (d *Dispatcher) SetSnapshot(s *Snapshot) { d.snap.Store(s) }

// Stats returns the dispatcher's counters, from any goroutine.
func (d *Dispatcher) Stats() DispatchStats { return DispatchStats{QueueFull: d.queueFull.Load()} }

// Run moves frames until ctx ends or the port fails. Like a worker it
// locks its thread and backs off when idle, but it blocks in the port only
// when no frame is out with a worker, so that replies are never held up.
func (d *Dispatcher) Run(ctx context.Context) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	waiter := d.waiter
	idle := 0
	for ctx.Err() == nil {
		moved, err := d.step()
		if err != nil {
			return err
		}
		if moved {
			idle = 0
			continue
		}
		idle++
		switch {
		case idle < spinPolls:
		case idle < spinPolls+yieldPolls || d.inflight > 0 && waiter == nil:
			yieldCore() // as a worker does; see Worker.Run
		case waiter != nil:
			// Frames out with a worker come back with a wake-up (see
			// queuePort.handBack); the timeout only bounds the wait.
			d.sleeping.Store(true)
			var err error
			if !d.pending() {
				err = waiter.Wait(idleWait)
			}
			d.sleeping.Store(false)
			if err != nil {
				return fmt.Errorf("dispatch: %w", err)
			}
		default:
			time.Sleep(time.Millisecond)
		}
	}
	return nil
}

// pending reports whether a worker has handed frames back: the last look
// before the dispatcher sleeps, after announcing it.
func (d *Dispatcher) pending() bool {
	for _, q := range d.queues {
		if !q.tx.empty() || !q.free.empty() {
			return true
		}
	}
	return false
}

// step does one round: return what workers finished, then receive and
// steer one batch. It reports whether anything moved.
func (d *Dispatcher) step() (bool, error) {
	moved := false
	for _, q := range d.queues {
		for {
			n := q.tx.pop(d.scratch)
			if n == 0 {
				break
			}
			moved = true
			d.inflight -= n
			// Frames the port could not send are counted by the port.
			_, _ = d.port.Transmit(d.scratch[:n])
		}
		for {
			n := q.free.pop(d.scratch)
			if n == 0 {
				break
			}
			moved = true
			d.inflight -= n
			d.port.Release(d.scratch[:n])
		}
	}
	n, err := d.port.Receive(d.frames)
	if err != nil {
		return moved, fmt.Errorf("dispatch: %w", err)
	}
	if n == 0 {
		return moved, nil
	}
	snap := d.snap.Load()
	link := d.port.LinkType()
	for i := range n {
		w := d.steer.Worker(snap, &d.frames[i], link)
		d.byW[w] = append(d.byW[w], d.frames[i])
	}
	for w, fs := range d.byW {
		if len(fs) == 0 {
			continue
		}
		q := d.queues[w]
		pushed := q.in.push(fs)
		d.inflight += pushed
		if pushed < len(fs) {
			d.queueFull.Add(uint64(len(fs) - pushed))
			d.port.Release(fs[pushed:])
		}
		select {
		case q.kick <- struct{}{}:
		default:
		}
		d.byW[w] = fs[:0]
	}
	return true, nil
}

var (
	_ nic.Port   = (*queuePort)(nil)
	_ nic.Waiter = (*queuePort)(nil)
)

// Name implements nic.Port.Name.
func (q *queuePort) Name() string { return q.name }

// LinkType implements nic.Port.LinkType.
func (q *queuePort) LinkType() nic.LinkType { return q.link }

// Receive implements nic.Port.Receive.
func (q *queuePort) Receive(frames []nic.Frame) (int, error) {
	n := q.in.pop(frames)
	q.stats.RxFrames += uint64(n)
	return n, nil
}

// Transmit implements nic.Port.Transmit: the dispatcher sends the frames.
func (q *queuePort) Transmit(frames []nic.Frame) (int, error) {
	n := q.tx.push(frames)
	for n < len(frames) {
		// The dispatcher is behind: wait for it rather than lose frames
		// that are already processed.
		yieldCore()
		n += q.tx.push(frames[n:])
	}
	q.stats.TxFrames += uint64(len(frames))
	q.handBack()
	return len(frames), nil
}

// handBack wakes the dispatcher, if it sleeps, for frames a worker has
// just handed back: a reply must not wait out the dispatcher's idle wait.
func (q *queuePort) handBack() {
	if q.d.sleeping.Load() {
		q.d.waiter.Wake()
	}
}

// Release implements nic.Port.Release.
func (q *queuePort) Release(frames []nic.Frame) {
	if len(frames) == 0 {
		return
	}
	n := q.free.push(frames)
	for n < len(frames) {
		yieldCore()
		n += q.free.push(frames[n:])
	}
	q.handBack()
}

// Wait implements nic.Waiter: it returns when the dispatcher hands over
// frames, or after timeout.
func (q *queuePort) Wait(timeout time.Duration) error {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-q.kick:
	case <-t.C:
	}
	return nil
}

// Wake implements nic.Waiter.
func (q *queuePort) Wake() {
	select {
	case q.kick <- struct{}{}:
	default:
	}
}

// Stats implements nic.Port.Stats.
func (q *queuePort) Stats() nic.Stats { return q.stats }

// Close implements nic.Port.Close; the dispatcher owns the real port.
func (q *queuePort) Close() error { return nil }
