package dataplane

import (
	"net/netip"
	"testing"
	"time"

	"github.com/tetherlb/tether/internal/pkttest"
	"github.com/tetherlb/tether/nic"
	"github.com/tetherlb/tether/nic/ring"
)

// dispatchRig runs a dispatcher and its workers' pipelines step by step
// on one goroutine, over an in-memory port.
type dispatchRig struct {
	port  *ring.Port
	d     *Dispatcher
	qs    []nic.Port
	pipes []*Pipeline
	outs  []*Output
}

func newDispatchRig(t *testing.T, workers int) *dispatchRig {
	c := loadConfig(t, 4096, "1024-65535")
	c.Forwarder.Workers = workers
	s, err := Build(c, nil)
	if err != nil {
		t.Fatal(err)
	}
	r := &dispatchRig{port: ring.New("r", nic.LinkEthernet, 1024, 2048)}
	r.d, r.qs = NewDispatcher(r.port, s, workers, 32)
	for w := range workers {
		pc := ConfigFrom(c, w, nic.LinkEthernet, uint64(w))
		p, err := New(pc, s)
		if err != nil {
			t.Fatal(err)
		}
		r.pipes = append(r.pipes, p)
		r.outs = append(r.outs, NewOutput(&pc))
	}
	return r
}

// send pushes frames through the dispatcher and the workers and returns
// what left the port.
func (r *dispatchRig) send(t *testing.T, frames ...[]byte) [][]byte {
	t.Helper()
	for _, f := range frames {
		if err := r.port.Inject(f, 0); err != nil {
			t.Fatal(err)
		}
	}
	buf := make([]nic.Frame, 64)
	for range 4 {
		if _, err := r.d.step(); err != nil {
			t.Fatal(err)
		}
		for w, q := range r.qs {
			n, _ := q.Receive(buf)
			out := r.outs[w]
			out.Reset()
			r.pipes[w].Process(0, buf[:n], out)
			q.Transmit(out.TX)
			q.Release(out.Pass)
			q.Release(out.Drop)
		}
	}
	var sent [][]byte
	r.port.Drain(func(d []byte, _ int64) { sent = append(sent, append([]byte(nil), d...)) })
	return sent
}

func (r *dispatchRig) drops() uint64 {
	var n uint64
	for _, p := range r.pipes {
		s := p.Stats()
		n += s.Dropped()
	}
	return n
}

// TestDispatchKeepsFlowsWhole sends NAT and half-NAT connections through
// two workers: every reply must reach the worker that owns its flow (else
// it is dropped as no_flow or passed), and the work must be spread.
func TestDispatchKeepsFlowsWhole(t *testing.T) {
	r := newDispatchRig(t, 2)
	const clients = 40
	for _, port := range []uint16{80, 81} {
		for i := range clients {
			c := cl(10+i, uint16(30000+i))
			out := r.send(t, syn(c, vip(port)))
			if len(out) != 1 {
				t.Fatalf("port %d client %d: SYN not forwarded", port, i)
			}
			be, from := dstOf(out[0]), srcOf(out[0])
			reply := pkttest.TCP(pkttest.Endpoint{MAC: pkttest.MustMAC("02:00:00:00:0b:01"), Addr: be.Addr(), Port: be.Port()},
				pkttest.Endpoint{MAC: pkttest.MustMAC(unitMAC), Addr: from.Addr(), Port: from.Port()}, pkttest.SYN|pkttest.ACK, 9, 2, pkttest.Opts{})
			back := r.send(t, reply)
			if len(back) != 1 || srcOf(back[0]) != netip.AddrPortFrom(netip.MustParseAddr("192.0.2.1"), port) {
				t.Fatalf("port %d client %d: reply lost or untranslated (drops %d)", port, i, r.drops())
			}
		}
	}
	if d := r.drops(); d != 0 {
		t.Fatalf("%d drops", d)
	}
	for w, p := range r.pipes {
		if s := p.Stats(); s.NewFlows == 0 {
			t.Errorf("worker %d got no flows: steering does not spread", w)
		}
	}
	if r.port.Free() != 1024 {
		t.Fatalf("%d of 1024 buffers back: frames leaked between dispatcher and workers", r.port.Free())
	}
}

func TestDispatchFragmentsMeetTheirFlow(t *testing.T) {
	r := newDispatchRig(t, 2)
	for i := range 20 {
		seg := pkttest.TCP(cl(50+i, uint16(4000+i)), vip(81), pkttest.ACK, 1, 1, pkttest.Opts{Payload: payload(3000), ID: uint16(100 + i)})
		frags := pkttest.FragmentIPv4(seg, 1200, false)
		out := r.send(t, frags[2], frags[1], frags[0])
		if len(out) != 3 {
			t.Fatalf("datagram %d: %d of 3 fragments forwarded (drops %d)", i, len(out), r.drops())
		}
	}
}

func payload(n int) []byte { return make([]byte, n) }

// wakePort is a port that can block; it records wake-ups.
type wakePort struct {
	*ring.Port
	woken int
}

func (p *wakePort) Wait(time.Duration) error { return nil }
func (p *wakePort) Wake()                    { p.woken++ }

// TestDispatcherWokenByHandBack: a worker that hands frames back to a
// sleeping dispatcher (to send or to release) wakes it, so a reply never
// waits out the dispatcher's idle wait; one that is awake costs nothing.
func TestDispatcherWokenByHandBack(t *testing.T) {
	c := loadConfig(t, 4096, "1024-65535")
	c.Forwarder.Workers = 2
	s, err := Build(c, nil)
	if err != nil {
		t.Fatal(err)
	}
	port := &wakePort{Port: ring.New("r", nic.LinkEthernet, 16, 2048)}
	d, qs := NewDispatcher(port, s, 2, 32)
	if err := port.Inject(syn(cl(1, 1000), vip(80)), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := d.step(); err != nil {
		t.Fatal(err)
	}
	var got []nic.Frame
	buf := make([]nic.Frame, 4)
	for _, q := range qs {
		n, _ := q.Receive(buf)
		got = append(got, buf[:n]...)
	}
	if len(got) != 1 {
		t.Fatalf("%d frames reached the workers, want 1", len(got))
	}
	owner := qs[d.steer.Worker(s, &got[0], nic.LinkEthernet)]
	owner.Transmit(got) // awake: no wake-up
	if port.woken != 0 {
		t.Fatalf("%d wake-ups of an awake dispatcher", port.woken)
	}
	if !d.pending() {
		t.Fatal("a frame handed back is not pending")
	}
	d.step()
	d.sleeping.Store(true)
	if d.pending() {
		t.Fatal("pending after the dispatcher took everything")
	}
	owner.Transmit(got)
	owner.Release(got)
	owner.Release(nil)
	if port.woken != 2 {
		t.Fatalf("%d wake-ups for a send and a release to a sleeping dispatcher, want 2", port.woken)
	}
}
