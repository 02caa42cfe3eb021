package dataplane

import (
	"context"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tetherlb/tether/internal/pkttest"
	"github.com/tetherlb/tether/nic"
	"github.com/tetherlb/tether/nic/ring"
)

// handOffRig is workers on ports of their own (a device queue each),
// joined by the hand-off and stepped on one goroutine.
type handOffRig struct {
	t     testing.TB
	ports []*wakePort
	ws    []*Worker
}

const handOffBufs = 256

func newHandOffRig(t testing.TB, workers int) *handOffRig {
	t.Helper()
	c := loadConfig(t, 1<<14, "1024-65535")
	c.Forwarder.Workers = workers
	s, err := Build(c, nil)
	if err != nil {
		t.Fatal(err)
	}
	r := &handOffRig{t: t}
	for w := range workers {
		pc := ConfigFrom(c, w, nic.LinkEthernet, uint64(w))
		p, err := New(pc, s)
		if err != nil {
			t.Fatal(err)
		}
		port := &wakePort{Port: ring.New("q", nic.LinkEthernet, handOffBufs, 2048)}
		r.ports = append(r.ports, port)
		r.ws = append(r.ws, NewWorker(p, port, 32, -1))
	}
	if err := ConnectHandOff(r.ws, 1518); err != nil {
		t.Fatal(err)
	}
	return r
}

// inject queues frames on worker w's port, as its device queue would.
func (r *handOffRig) inject(w int, frames ...[]byte) {
	r.t.Helper()
	for _, f := range frames {
		if err := r.ports[w].Inject(f, 0); err != nil {
			r.t.Fatal(err)
		}
	}
}

// settle steps every worker until none moves a frame, then hands what
// each port sent to drain (which may be nil). It allocates nothing.
func (r *handOffRig) settle(drain func([]byte, int64)) {
	for round := 0; ; round++ {
		if round == 1000 {
			r.t.Fatal("the workers never went quiet")
		}
		moved := 0
		for _, w := range r.ws {
			n, err := w.step()
			if err != nil {
				r.t.Fatal(err)
			}
			moved += n
		}
		if moved == 0 {
			break
		}
	}
	if drain != nil {
		for _, p := range r.ports {
			p.Drain(drain)
		}
	}
}

// run settles the workers and returns what each port sent.
func (r *handOffRig) run() [][][]byte {
	r.t.Helper()
	r.settle(nil)
	sent := make([][][]byte, len(r.ports))
	for i, p := range r.ports {
		p.Drain(func(d []byte, _ int64) { sent[i] = append(sent[i], append([]byte(nil), d...)) })
	}
	return sent
}

func (r *handOffRig) stats() (Stats, HandOffStats) {
	var s Stats
	var h HandOffStats
	for _, w := range r.ws {
		ws := w.p.Stats()
		s.Add(&ws)
		h.Add(w.HandOffStats())
	}
	return s, h
}

// only returns the one frame sent, by any port, and the port that sent
// it; it fails unless exactly one was.
func (r *handOffRig) only(sent [][][]byte, what string) ([]byte, int) {
	r.t.Helper()
	var got []byte
	from, n := -1, 0
	for i, fs := range sent {
		for _, f := range fs {
			got, from = f, i
			n++
		}
	}
	if n != 1 {
		s, _ := r.stats()
		r.t.Fatalf("%s: %d frames sent, want 1 (drops %v)", what, n, s.Drops)
	}
	return got, from
}

// TestHandOffKeepsFlowsWhole: with a device queue per worker, the device
// (not the flow) picks the queue. Every SYN arrives on alternating
// queues and every reply of a nat and a half-NAT flow arrives on the
// queue of the worker that does not own the flow: the hand-off must take
// each to its owner, so that every reply is translated and none is
// dropped as no_flow; every buffer goes back to its port.
func TestHandOffKeepsFlowsWhole(t *testing.T) {
	r := newHandOffRig(t, 2)
	const clients = 40
	for _, port := range []uint16{80, 81} {
		for i := range clients {
			c := cl(10+i, uint16(30000+i))
			r.inject(i%2, syn(c, vip(port)))
			out, owner := r.only(r.run(), "SYN")
			be, from := dstOf(out), srcOf(out)
			reply := pkttest.TCP(pkttest.Endpoint{MAC: pkttest.MustMAC(gwMAC), Addr: be.Addr(), Port: be.Port()},
				pkttest.Endpoint{MAC: pkttest.MustMAC(unitMAC), Addr: from.Addr(), Port: from.Port()}, pkttest.SYN|pkttest.ACK, 9, 2, pkttest.Opts{})
			r.inject(1-owner, reply) // the other worker's queue
			back, _ := r.only(r.run(), "reply")
			if srcOf(back) != netip.AddrPortFrom(netip.MustParseAddr("192.0.2.1"), port) || dstOf(back) != netip.AddrPortFrom(c.Addr, c.Port) {
				t.Fatalf("port %d client %d: reply %v > %v, want it translated back", port, i, srcOf(back), dstOf(back))
			}
		}
	}
	s, h := r.stats()
	if d := s.Dropped(); d != 0 {
		t.Fatalf("%d drops (no_flow %d)", d, s.Drops[DropNoFlow])
	}
	for w, wk := range r.ws {
		if ws := wk.p.Stats(); ws.NewFlows == 0 {
			t.Errorf("worker %d made no flows: steering does not spread", w)
		}
	}
	// Every reply came in on the wrong queue; about half the SYNs did.
	if h.Out < 2*clients || h.In != h.Out || h.Dropped() != 0 {
		t.Errorf("hand-offs %+v: want every reply handed over (>= %d) and taken, none lost", h, 2*clients)
	}
	for i, p := range r.ports {
		if p.Free() != handOffBufs {
			t.Errorf("port %d: %d of %d buffers back", i, p.Free(), handOffBufs)
		}
	}
}

// otherDst returns a frame to an address no VIP or SNAT address is (so
// the pipeline passes it) that worker owner owns under r's steering.
func (r *handOffRig) otherDst(owner int) []byte {
	st := NewSteerer(len(r.ws))
	for i := 1; ; i++ {
		d := pkttest.Endpoint{MAC: pkttest.MustMAC(unitMAC), Addr: netip.AddrFrom4([4]byte{10, 9, 0, byte(i)}), Port: 22}
		b := syn(cl(1, 1000), d)
		f := frame(b)
		if st.Worker(r.ws[0].p.snap, &f, nic.LinkEthernet) == owner {
			return b
		}
	}
}

// ownedClient returns a client that worker owner owns under r's
// steering, for SYNs to the nat VIP.
func (r *handOffRig) ownedClient(owner int) pkttest.Endpoint {
	st := NewSteerer(len(r.ws))
	for i := 1; ; i++ {
		c := cl(i, 1000)
		f := frame(syn(c, vip(80)))
		if st.Worker(r.ws[0].p.snap, &f, nic.LinkEthernet) == owner {
			return c
		}
	}
}

// TestHandOffRingFull: a worker that does not keep up fills its inbound
// ring; what does not fit is dropped and counted, and nothing leaks. A
// handed frame waits in the ring while its owner's port has no free
// buffer (every one is out being sent), and is taken once buffers come
// back.
func TestHandOffRingFull(t *testing.T) {
	r := newHandOffRig(t, 2)
	c := r.ownedClient(1)
	capacity := r.ws[0].ho.out[1].n
	sent := 0
	for sent < int(capacity)+500 {
		for range 200 {
			c.Port++ // a new connection each
			r.inject(0, syn(c, vip(80)))
		}
		sent += 200
		for range 16 { // worker 1 does not run
			if _, err := r.ws[0].step(); err != nil {
				t.Fatal(err)
			}
		}
		if r.ports[0].Free() != handOffBufs {
			t.Fatalf("worker 0 kept %d buffers: it does not hand frames over", handOffBufs-r.ports[0].Free())
		}
	}
	_, h := r.stats()
	if h.Out != capacity || h.Full != uint64(sent)-capacity {
		t.Fatalf("hand-offs %+v after %d frames into a ring of %d: want it full and the rest counted", h, sent, capacity)
	}
	// Worker 1 runs, but its port sends nothing (no Drain): it takes
	// frames while it has buffers, then leaves the rest in the ring.
	for range 64 {
		if _, err := r.ws[1].step(); err != nil {
			t.Fatal(err)
		}
	}
	if _, h = r.stats(); h.In != handOffBufs {
		t.Fatalf("worker 1 took %d frames with %d buffers", h.In, handOffBufs)
	}
	forwarded := 0
	for range 2 * capacity / 32 {
		if _, err := r.ws[1].step(); err != nil {
			t.Fatal(err)
		}
		r.ports[1].Drain(func([]byte, int64) { forwarded++ })
	}
	s, h := r.stats()
	if h.In != capacity || s.NewFlows != capacity || forwarded != int(capacity) {
		t.Fatalf("hand-offs %+v, %d new flows, %d SYNs forwarded: want all %d handed SYNs taken and forwarded", h, s.NewFlows, forwarded, capacity)
	}
	for i, p := range r.ports {
		if p.Free() != handOffBufs {
			t.Errorf("port %d: %d of %d buffers back", i, p.Free(), handOffBufs)
		}
	}
}

// TestHandOffWakesASleepingOwner: a frame handed to a worker asleep in
// its port's poll wakes it; one handed to a worker that is awake costs
// no wake-up.
func TestHandOffWakesASleepingOwner(t *testing.T) {
	r := newHandOffRig(t, 2)
	f := r.otherDst(1)
	r.inject(0, f)
	if _, err := r.ws[0].step(); err != nil {
		t.Fatal(err)
	}
	if r.ports[1].woken != 0 {
		t.Fatalf("%d wake-ups of an awake worker", r.ports[1].woken)
	}
	r.ws[1].sleeping.Store(true)
	if !r.ws[1].ho.pending() {
		t.Fatal("a handed frame is not pending for its owner")
	}
	r.inject(0, f, f)
	if _, err := r.ws[0].step(); err != nil {
		t.Fatal(err)
	}
	if r.ports[1].woken != 1 {
		t.Fatalf("%d wake-ups for one batch handed to a sleeping worker, want 1", r.ports[1].woken)
	}
	r.ws[1].sleeping.Store(false)
	r.run()
	if r.ws[1].ho.pending() {
		t.Fatal("pending after the owner took everything")
	}
}

// TestHandOffDoesNotAllocate: established nat and half-NAT traffic
// arriving on both queues, half of it on the wrong one, allocates
// nothing on its way through either worker and the hand-off.
func TestHandOffDoesNotAllocate(t *testing.T) {
	r := newHandOffRig(t, 2)
	var frames [][]byte
	for i := range 16 {
		for _, port := range []uint16{80, 81} {
			c := cl(20+i, uint16(40000+i))
			r.inject(0, syn(c, vip(port)))
			r.run()
			frames = append(frames, ack(c, vip(port)))
		}
	}
	r.run()
	sent := 0
	count := func([]byte, int64) { sent++ }
	noAllocs(t, 200, func() {
		for i, f := range frames {
			r.inject(i%2, f)
		}
		r.settle(count)
	})
	s, h := r.stats()
	if s.Dropped() != 0 || h.Out == 0 || h.Dropped() != 0 || sent != 201*len(frames) {
		t.Fatalf("drops %d, hand-offs %+v, %d of %d sent: want established traffic handed over and forwarded, none lost", s.Dropped(), h, sent, 201*len(frames))
	}
}

// lockedPort is an in-memory port that a worker's goroutine and the test
// share, and that blocks in Wait like a device's poll.
type lockedPort struct {
	mu   sync.Mutex
	p    *ring.Port
	kick chan struct{}
}

func (l *lockedPort) Name() string           { return "locked" }
func (l *lockedPort) LinkType() nic.LinkType { return nic.LinkEthernet }
func (l *lockedPort) Close() error           { return nil }
func (l *lockedPort) Stats() nic.Stats {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.p.Stats()
}
func (l *lockedPort) Receive(f []nic.Frame) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.p.Receive(f)
}
func (l *lockedPort) Transmit(f []nic.Frame) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.p.Transmit(f)
}
func (l *lockedPort) Release(f []nic.Frame) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.p.Release(f)
}
func (l *lockedPort) Alloc() (nic.Frame, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.p.Alloc()
}
func (l *lockedPort) Wait(timeout time.Duration) error {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-l.kick:
	case <-t.C:
	}
	return nil
}
func (l *lockedPort) Wake() {
	select {
	case l.kick <- struct{}{}:
	default:
	}
}

// inject queues a frame as the device would, waking a sleeping worker.
func (l *lockedPort) inject(t *testing.T, b []byte) {
	l.mu.Lock()
	err := l.p.Inject(b, 0)
	l.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	l.Wake()
}

// waitSent waits until a port has sent a frame and returns it and the
// port's index.
func waitSent(t *testing.T, ports []*lockedPort) ([]byte, int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		for i, p := range ports {
			var got []byte
			p.mu.Lock()
			p.p.Drain(func(d []byte, _ int64) { got = append([]byte(nil), d...) })
			p.mu.Unlock()
			if got != nil {
				return got, i
			}
		}
		runtime.Gosched() // waiting for the workers' output
	}
	t.Fatal("nothing sent in 10 s")
	return nil, 0
}

// TestHandOffRunningWorkers runs two workers on their own goroutines, as
// the forwarder does (the race detector watches the rings and the
// sleeping flag): replies that arrive on the other worker's queue, often
// while their owner sleeps in its port's poll, are translated.
func TestHandOffRunningWorkers(t *testing.T) {
	c := loadConfig(t, 1<<14, "1024-65535")
	c.Forwarder.Workers = 2
	s, err := Build(c, nil)
	if err != nil {
		t.Fatal(err)
	}
	var ports []*lockedPort
	var ws []*Worker
	for w := range 2 {
		pc := ConfigFrom(c, w, nic.LinkEthernet, uint64(w))
		p, err := New(pc, s)
		if err != nil {
			t.Fatal(err)
		}
		port := &lockedPort{p: ring.New("q", nic.LinkEthernet, 64, 2048), kick: make(chan struct{}, 1)}
		ports = append(ports, port)
		ws = append(ws, NewWorker(p, port, 32, -1))
	}
	if err := ConnectHandOff(ws, 0); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, w := range ws {
		wg.Go(func() {
			if err := w.Run(ctx); err != nil {
				t.Error(err)
			}
		})
	}
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			cancel()
			wg.Wait()
		}
	}
	t.Cleanup(stop)
	for i := range 20 {
		for _, vp := range []uint16{80, 81} {
			cli := cl(60+i, uint16(20000+i))
			ports[i%2].inject(t, syn(cli, vip(vp)))
			out, owner := waitSent(t, ports)
			be, from := dstOf(out), srcOf(out)
			ports[1-owner].inject(t, pkttest.TCP(pkttest.Endpoint{MAC: pkttest.MustMAC(gwMAC), Addr: be.Addr(), Port: be.Port()},
				pkttest.Endpoint{MAC: pkttest.MustMAC(unitMAC), Addr: from.Addr(), Port: from.Port()}, pkttest.SYN|pkttest.ACK, 9, 2, pkttest.Opts{}))
			back, _ := waitSent(t, ports)
			if dstOf(back) != netip.AddrPortFrom(cli.Addr, cli.Port) {
				t.Fatalf("client %d port %d: reply sent to %v", i, vp, dstOf(back))
			}
		}
	}
	stop()
	var h HandOffStats
	for _, w := range ws {
		h.Add(w.HandOffStats())
		if st := w.p.Stats(); st.Dropped() != 0 {
			t.Errorf("drops: %v", st.Drops)
		}
	}
	if h.Out < 40 || h.In != h.Out {
		t.Errorf("hand-offs %+v: want every reply handed over", h)
	}
}

// TestHandOffReported: each worker's share and the frames lost between
// workers reach the contract's report and the summary people read.
func TestHandOffReported(t *testing.T) {
	r := newHandOffRig(t, 2)
	sum := Summary{Snapshot: r.ws[0].p.snap, Workers: []WorkerSummary{
		{RxPackets: 10, NewFlows: 2, Flows: 4, HandOff: HandOffStats{Out: 3, In: 5, Full: 1}},
		{RxPackets: 20, NewFlows: 1, Flows: 2, HandOff: HandOffStats{Out: 5, In: 3, TooBig: 2}},
	}}
	rep := sum.Report()
	if rep.PortDropped.HandOff != 3 || len(rep.Workers) != 2 || rep.Workers[1].Worker != 1 ||
		rep.Workers[0].HandedOut != 3 || rep.Workers[0].HandedIn != 5 || rep.Workers[1].NewFlows != 1 {
		t.Fatalf("report: lost %d, workers %+v", rep.PortDropped.HandOff, rep.Workers)
	}
	var b strings.Builder
	if _, err := sum.WriteTo(&b); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"8 handed by the worker", "1 lost: the owner's ring was full", "2 lost: longer than a hand-off slot"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("summary lacks %q:\n%s", want, b.String())
		}
	}
}
