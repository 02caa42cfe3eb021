package dataplane

import (
	"sync/atomic"

	"github.com/tetherlb/tether/nic"
)

// spsc is a bounded single-producer, single-consumer queue of frames: the
// hand-off between a dispatcher and a worker. Indexes are free-running;
// each side reads the other's index with an atomic load and publishes its
// own with an atomic store, so no lock is taken. Padding keeps the two
// indexes on separate cache lines.
type spsc struct {
	_    [64]byte
	head atomic.Uint64 // next slot to read; written by the consumer
	_    [56]byte
	tail atomic.Uint64 // next slot to write; written by the producer
	_    [56]byte
	buf  []nic.Frame
	mask uint64
}

func newSPSC(size int) *spsc {
	n := 1
	for n < size {
		n <<= 1
	}
	return &spsc{buf: make([]nic.Frame, n), mask: uint64(n - 1)}
}

// push appends as many frames as fit and returns how many did.
func (q *spsc) push(frames []nic.Frame) int {
	t := q.tail.Load()
	free := uint64(len(q.buf)) - (t - q.head.Load())
	n := min(uint64(len(frames)), free)
	for i := range n {
		q.buf[(t+i)&q.mask] = frames[i]
	}
	q.tail.Store(t + n)
	return int(n)
}

// pop fills frames from the queue and returns how many it took.
func (q *spsc) pop(frames []nic.Frame) int {
	h := q.head.Load()
	n := min(uint64(len(frames)), q.tail.Load()-h)
	for i := range n {
		frames[i] = q.buf[(h+i)&q.mask]
		q.buf[(h+i)&q.mask] = nic.Frame{}
	}
	q.head.Store(h + n)
	return int(n)
}

// empty reports whether the queue holds nothing; either side may ask.
func (q *spsc) empty() bool { return q.head.Load() == q.tail.Load() }
