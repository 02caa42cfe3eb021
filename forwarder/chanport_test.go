package forwarder

import (
	"runtime"
	"time"

	"github.com/tetherlb/tether/nic"
)

// chanPort is a thread-safe in-memory port: the benchmark injects frames
// from its own goroutine while a worker runs.
type chanPort struct {
	in    chan []byte
	out   chan []byte
	bufs  [][]byte
	free  []uint64
	stats nic.Stats
}

func newChanPort() *chanPort {
	p := &chanPort{in: make(chan []byte, 1024), out: make(chan []byte, 1024)}
	for i := range 512 {
		p.bufs = append(p.bufs, make([]byte, 4096))
		p.free = append(p.free, uint64(i))
	}
	return p
}

func (p *chanPort) Name() string           { return "chan" }
func (p *chanPort) LinkType() nic.LinkType { return nic.LinkEthernet }
func (p *chanPort) Stats() nic.Stats       { return p.stats }
func (p *chanPort) Close() error           { return nil }
func (p *chanPort) Receive(frames []nic.Frame) (int, error) {
	n := 0
	for n < len(frames) && len(p.free) > 0 {
		select {
		case data := <-p.in:
			h := p.free[len(p.free)-1]
			p.free = p.free[:len(p.free)-1]
			copy(p.bufs[h][nic.Headroom:], data)
			frames[n] = nic.Frame{Buf: p.bufs[h], Off: nic.Headroom, Len: len(data), Handle: h}
			n++
		default:
			return n, nil
		}
	}
	return n, nil
}
func (p *chanPort) Transmit(frames []nic.Frame) (int, error) {
	for _, f := range frames {
		p.out <- append([]byte(nil), f.Data()...)
		p.free = append(p.free, f.Handle)
	}
	return len(frames), nil
}
func (p *chanPort) Release(frames []nic.Frame) {
	for _, f := range frames {
		p.free = append(p.free, f.Handle)
	}
}
func (p *chanPort) Wait(timeout time.Duration) error {
	// The worker keeps polling: the benchmark measures the channel, not
	// the port's wake-up.
	runtime.Gosched()
	return nil
}

func (p *chanPort) Wake() {}
