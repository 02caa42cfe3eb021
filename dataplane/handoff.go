package dataplane

import (
	"encoding/binary"
	"fmt"
	"strings"
	"sync/atomic"

	"github.com/tetherlb/tether/api/unit"
	"github.com/tetherlb/tether/nic"
)

// The hand-off between workers that each read their own device queue
// (AF_XDP with forwarder.port.queues = workers). The device picks the
// queue, and so the worker, by a hash of its own (a NIC's RSS, a veth's
// transmit queue), which is right for the first packet of a flow and
// wrong for the replies of a translated one: a nat backend answers the
// SNAT address and port, a half-NAT backend answers the client, and both
// land on whatever queue their own hash picks, away from the flow table
// that holds the flow. An AF_XDP socket only receives from its own
// queue, so steering cannot happen before the socket; it happens after.
// Each worker runs the Steerer (software RSS, steer.go) on what it
// receives, processes the frames it owns and copies each other frame
// into a ring toward its owner, releasing its own buffer at once. The
// owner drains its inbound rings every loop, copying each frame into a
// free buffer of its own port (nic.Allocator), and processes them as
// received frames, so that what it transmits is in its own port's memory
// and no buffer ever crosses from one port to another.
//
// Copies rather than shared buffers: a frame is at most a few KiB, a
// copy of one costs less than the cache misses of handing a UMEM buffer
// across (and back, for the port that owns it), and UMEM stays owned by
// one socket, as the kernel wants. The rings are single-producer,
// single-consumer (one per ordered pair of workers) with fixed slots, so
// nothing is locked or allocated per frame.

// Hand-off ring sizing: a worker's inbound capacity, in frames, is split
// over the workers that hand to it, at least minHandOffSlots per ring.
const (
	handOffInbound   = 4096
	minHandOffSlots  = 64
	handOffSlotAlign = 64
	// slotHeader holds a frame's length and receive time.
	slotHeader = 16
)

// HandOffStats count one worker's hand-offs.
type HandOffStats struct {
	// Out counts frames this worker received and handed to their owner.
	Out uint64
	// In counts frames other workers handed to this one.
	In uint64
	// Full counts frames dropped because their owner's inbound ring was
	// full (the owner is slower than the queues that feed it).
	Full uint64
	// TooBig counts frames dropped because they do not fit a slot (a
	// frame longer than the interface's MTU allows).
	TooBig uint64
}

// Dropped returns the frames lost in the hand-off.
func (s *HandOffStats) Dropped() uint64 { return s.Full + s.TooBig }

// Add adds o's counters to s.
func (s *HandOffStats) Add(o HandOffStats) {
	s.Out += o.Out
	s.In += o.In
	s.Full += o.Full
	s.TooBig += o.TooBig
}

// copyRing is a bounded single-producer, single-consumer queue of frame
// copies in fixed-size slots: a slot is a header (length, receive time)
// and the frame's bytes. Like spsc, indexes are free-running and each
// side publishes its own with an atomic store; each side also keeps a
// private copy of the other's index, so that it touches the shared cache
// line only when its copy says the ring is full or empty, and publishes
// once per batch.
type copyRing struct {
	_    [64]byte
	head atomic.Uint64 // next slot to read; written by the consumer
	_    [56]byte
	tail atomic.Uint64 // next slot to write; written by the producer
	_    [56]byte
	// The producer's: the next slot it writes, and the head it last saw.
	ptail, phead uint64
	_            [48]byte
	// The consumer's: the next slot it reads, and the tail it last saw.
	chead, ctail uint64
	_            [48]byte
	data         []byte
	slot         int // bytes per slot, header included
	n            uint64
	mask         uint64
}

func newCopyRing(slots, frameSize int) *copyRing {
	n := 1
	for n < slots {
		n <<= 1
	}
	slot := (slotHeader + frameSize + handOffSlotAlign - 1) / handOffSlotAlign * handOffSlotAlign
	return &copyRing{data: make([]byte, n*slot), slot: slot, n: uint64(n), mask: uint64(n - 1)}
}

// capacity is the largest frame a slot holds.
func (r *copyRing) capacity() int { return r.slot - slotHeader }

// put copies b, received at t, into the next slot; false when the ring
// is full. The consumer sees it after publish.
func (r *copyRing) put(b []byte, t int64) bool {
	if r.ptail-r.phead == r.n {
		r.phead = r.head.Load()
		if r.ptail-r.phead == r.n {
			return false
		}
	}
	s := r.data[int(r.ptail&r.mask)*r.slot:][:r.slot]
	binary.NativeEndian.PutUint32(s, uint32(len(b)))
	binary.NativeEndian.PutUint64(s[8:], uint64(t))
	copy(s[slotHeader:], b)
	r.ptail++
	return true
}

// publish makes what put wrote visible to the consumer.
func (r *copyRing) publish() { r.tail.Store(r.ptail) }

// peek returns the next frame's bytes and receive time without taking
// it; false when the ring is empty.
func (r *copyRing) peek() ([]byte, int64, bool) {
	if r.chead == r.ctail {
		r.ctail = r.tail.Load()
		if r.chead == r.ctail {
			return nil, 0, false
		}
	}
	s := r.data[int(r.chead&r.mask)*r.slot:][:r.slot]
	n := binary.NativeEndian.Uint32(s)
	return s[slotHeader : slotHeader+int(n)], int64(binary.NativeEndian.Uint64(s[8:])), true
}

// next takes the frame peek returned; release hands its slots back.
func (r *copyRing) next() { r.chead++ }

// release makes the slots taken with next free for the producer.
func (r *copyRing) release() { r.head.Store(r.chead) }

// empty reports whether nothing is published; either side may ask.
func (r *copyRing) empty() bool { return r.head.Load() == r.tail.Load() }

// handOff is one worker's end of the hand-off.
type handOff struct {
	self  int
	steer *Steerer
	link  nic.LinkType
	alloc nic.Allocator
	out   []*copyRing // toward each worker; nil for self
	in    []*copyRing // from each worker; nil for self
	peers []*Worker   // to wake the owners of what was handed over
	sent  []bool      // rings written since the last publish
	gone  []nic.Frame // frames copied away, released together
	first int         // inbound ring drained first, rotating for fairness
	stats HandOffStats
}

// ConnectHandOff joins workers that each read their own device queue, so
// that every frame reaches the worker that owns its flow (see the top of
// this file). Every worker's port must be a nic.Allocator; frameSize is
// the longest frame the ports receive (a slot's size). Call it before
// Run.
func ConnectHandOff(workers []*Worker, frameSize int) error {
	n := len(workers)
	if n < 2 {
		return nil
	}
	if frameSize <= 0 {
		frameSize = 1 << 16 // bounded by the buffers below
	}
	slots := max(minHandOffSlots, handOffInbound/(n-1))
	for slots&(slots-1) != 0 {
		slots &= slots - 1 // round down to a power of two
	}
	ends := make([]*handOff, n)
	for i, w := range workers {
		alloc, ok := w.port.(nic.Allocator)
		if !ok {
			return fmt.Errorf("hand-off: port %s cannot lend buffers for frames other workers received", w.port.Name())
		}
		// No port receives a frame longer than its buffers, so a slot
		// need not be longer either, and a slot's frame always fits the
		// buffer its owner copies it into.
		f, ok := alloc.Alloc()
		if !ok {
			return fmt.Errorf("hand-off: port %s has no free buffer", w.port.Name())
		}
		frameSize = min(frameSize, len(f.Buf)-f.Off)
		w.port.Release([]nic.Frame{f})
		ends[i] = &handOff{
			self: i, steer: NewSteerer(n), link: w.port.LinkType(), alloc: alloc,
			out: make([]*copyRing, n), in: make([]*copyRing, n), peers: workers,
			sent: make([]bool, n), gone: make([]nic.Frame, 0, MaxBatch),
		}
	}
	for from := range n {
		for to := range n {
			if from != to {
				r := newCopyRing(slots, frameSize)
				ends[from].out[to], ends[to].in[from] = r, r
			}
		}
	}
	for i, w := range workers {
		w.ho = ends[i]
		w.in = make([]nic.Frame, len(w.frames))
	}
	return nil
}

// sort keeps the frames this worker owns at the front of frames and
// returns how many; every other frame is copied toward its owner (or
// dropped, counted, when its ring is full) and released to port.
func (h *handOff) sort(snap *Snapshot, frames []nic.Frame, port nic.Port) int {
	keep := 0
	for i := range frames {
		f := &frames[i]
		w := h.steer.Worker(snap, f, h.link)
		if w == h.self {
			frames[keep] = *f
			keep++
			continue
		}
		r := h.out[w]
		switch {
		case f.Len > r.capacity():
			h.stats.TooBig++
		case !r.put(f.Data(), f.Time):
			h.stats.Full++
		default:
			h.stats.Out++
			h.sent[w] = true
		}
		h.gone = append(h.gone, *f)
	}
	if len(h.gone) == 0 {
		return keep
	}
	port.Release(h.gone)
	clear(h.gone)
	h.gone = h.gone[:0]
	for w, s := range h.sent {
		if !s {
			continue
		}
		h.sent[w] = false
		h.out[w].publish()
		// The owner may be asleep in its port's poll: wake it, and
		// only then pay for the system call (see Worker.sleeping).
		if p := h.peers[w]; p.sleeping.Load() {
			p.waiter.Wake()
		}
	}
	return keep
}

// take fills frames with frames other workers handed over, each copied
// into a buffer of this worker's port, and returns how many. A frame
// stays in its ring while the port has no free buffer.
func (h *handOff) take(frames []nic.Frame) int {
	got := 0
	n := len(h.in)
	for k := range n {
		r := h.in[(h.first+k)%n]
		if r == nil {
			continue
		}
		took := false
		for got < len(frames) {
			b, t, ok := r.peek()
			if !ok {
				break
			}
			f, ok := h.alloc.Alloc()
			if !ok {
				break
			}
			// ConnectHandOff made slots no larger than the buffers.
			f.Len = copy(f.Buf[f.Off:], b)
			f.Time = t
			frames[got] = f
			got++
			r.next()
			took = true
		}
		if took {
			r.release()
		}
	}
	h.first = (h.first + 1) % n
	h.stats.In += uint64(got)
	return got
}

// pending reports whether a frame waits in an inbound ring: the last look
// before the worker sleeps, after announcing it.
func (h *handOff) pending() bool {
	for _, r := range h.in {
		if r != nil && !r.empty() {
			return true
		}
	}
	return false
}

// WorkerSummary is one worker's share of a Summary.
type WorkerSummary struct {
	RxPackets uint64
	NewFlows  uint64
	Flows     int
	HandOff   HandOffStats
}

// workerReports returns the frames lost in the hand-off and each
// worker's report, for the contract's Report.
func (r *Summary) workerReports() (uint64, []unit.WorkerReport) {
	var lost uint64
	var ws []unit.WorkerReport
	for i, w := range r.Workers {
		lost += w.HandOff.Dropped()
		ws = append(ws, unit.WorkerReport{Worker: i, RxPackets: w.RxPackets, NewFlows: w.NewFlows, Flows: w.Flows,
			HandedOut: w.HandOff.Out, HandedIn: w.HandOff.In})
	}
	return lost, ws
}

// writeHandOff adds the hand-off's totals to a summary's first line, when
// workers handed frames to each other.
func (r *Summary) writeHandOff(b *strings.Builder) {
	var t HandOffStats
	for _, w := range r.Workers {
		t.Add(w.HandOff)
	}
	if t.Out+t.Full+t.TooBig == 0 {
		return
	}
	fmt.Fprintf(b, ", %d handed by the worker whose queue received them to the one that owns their flow", t.Out)
	if t.Full > 0 {
		fmt.Fprintf(b, " (%d lost: the owner's ring was full)", t.Full)
	}
	if t.TooBig > 0 {
		fmt.Fprintf(b, " (%d lost: longer than a hand-off slot)", t.TooBig)
	}
}
