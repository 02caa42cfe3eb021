package ring

import (
	"fmt"

	"github.com/tetherlb/tether/nic"
)

// Port is an in-memory nic.Port.
type Port struct {
	name string
	link nic.LinkType
	nic.Buffers
	rx    fifo
	tx    fifo
	stats nic.Stats
}

var (
	_ nic.Port      = (*Port)(nil)
	_ nic.Allocator = (*Port)(nil)
)

// fifo is a bounded queue of frames.
type fifo struct {
	q          []nic.Frame
	head, size int
}

func (f *fifo) push(fr nic.Frame) bool {
	if f.size == len(f.q) {
		return false
	}
	f.q[(f.head+f.size)%len(f.q)] = fr
	f.size++
	return true
}

func (f *fifo) pop() (nic.Frame, bool) {
	if f.size == 0 {
		return nic.Frame{}, false
	}
	fr := f.q[f.head]
	f.head = (f.head + 1) % len(f.q)
	f.size--
	return fr, true
}

// New makes a port with n buffers of bufSize bytes each (headroom
// included).
func New(name string, link nic.LinkType, n, bufSize int) *Port {
	return &Port{
		name:    name,
		link:    link,
		Buffers: nic.NewBuffers(n, bufSize),
		rx:      fifo{q: make([]nic.Frame, n)},
		tx:      fifo{q: make([]nic.Frame, n)},
	}
}

// Inject queues a copy of data for Receive, stamped with time t (Unix
// nanoseconds). It fails when no buffer is free or data does not fit
// after the headroom.
func (p *Port) Inject(data []byte, t int64) error {
	f, ok := p.Alloc()
	if !ok {
		p.stats.RxDropped++
		return fmt.Errorf("ring %s: no free buffer", p.name)
	}
	if nic.Headroom+len(data) > len(f.Buf) {
		p.Put(f.Handle)
		p.stats.RxDropped++
		return fmt.Errorf("ring %s: frame of %d bytes does not fit a %d-byte buffer", p.name, len(data), len(f.Buf)-nic.Headroom)
	}
	f.Len, f.Time = copy(f.Buf[nic.Headroom:], data), t
	p.rx.push(f)
	return nil
}

// Drain calls fn for every transmitted frame in order and frees their
// buffers. fn must not keep data.
func (p *Port) Drain(fn func(data []byte, t int64)) {
	for {
		fr, ok := p.tx.pop()
		if !ok {
			return
		}
		fn(fr.Data(), fr.Time)
		p.Put(fr.Handle)
	}
}

// Name implements nic.Port.Name.
func (p *Port) Name() string { return p.name }

// LinkType implements nic.Port.LinkType.
func (p *Port) LinkType() nic.LinkType { return p.link }

// Receive implements nic.Port.Receive.
func (p *Port) Receive(frames []nic.Frame) (int, error) {
	n := 0
	for n < len(frames) {
		fr, ok := p.rx.pop()
		if !ok {
			break
		}
		frames[n] = fr
		p.stats.RxFrames++
		p.stats.RxBytes += uint64(fr.Len)
		n++
	}
	return n, nil
}

// Transmit implements nic.Port.Transmit.
func (p *Port) Transmit(frames []nic.Frame) (int, error) {
	for _, fr := range frames {
		p.tx.push(fr) // cannot fail: the queue holds every buffer
		p.stats.TxFrames++
		p.stats.TxBytes += uint64(fr.Len)
	}
	return len(frames), nil
}

// Stats implements nic.Port.Stats.
func (p *Port) Stats() nic.Stats { return p.stats }

// Close implements nic.Port.Close.
func (p *Port) Close() error { return nil }
