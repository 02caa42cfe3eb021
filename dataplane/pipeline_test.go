package dataplane

import (
	"net/netip"
	"testing"

	"github.com/tetherlb/tether/dataplane/channel"

	"github.com/tetherlb/tether/api/unit"
	"github.com/tetherlb/tether/config"
	"github.com/tetherlb/tether/internal/pkttest"
	"github.com/tetherlb/tether/nic"
	"github.com/tetherlb/tether/tables/flow"
)

// TestHotPathDoesNotAllocate runs batches through the pipeline and
// requires that none of them allocates: established flows in every mode
// with an echo request and frames passed to the host, new flows in
// batches and one at a time, and new flows into a full table that must
// evict. Every block also checks that its frames took the path it is
// named for, so that a block cannot pass by measuring a drop.
func TestHotPathDoesNotAllocate(t *testing.T) {
	const runs = 200
	calls := runs + 1 // AllocsPerRun calls f once more to warm up
	r := newRig(t, loadConfig(t, 1<<14, "1024-65535"))

	t.Run("established, echo and passes", func(t *testing.T) {
		var templates, opens [][]byte
		for i := range 8 {
			for port := uint16(80); port <= 83; port++ {
				templates = append(templates, ack(cl(i+1, uint16(1000+i)), vip(port)))
				opens = append(opens, syn(cl(i+1, uint16(1000+i)), vip(port)))
			}
		}
		r.send(opens...) // a SYN opens each flow (nat takes nothing else)
		forwarded := len(templates)
		templates = append(templates, pkttest.EchoRequest(cl(1, 0), vip(0), 1, 1, pkttest.Opts{}))
		const passes = 2
		unit := pkttest.Endpoint{MAC: pkttest.MustMAC(unitMAC), Addr: netip.MustParseAddr("198.51.100.254"), Port: 22}
		templates = append(templates,
			pkttest.ARP(gwMAC, cl(1, 0).Addr, unit.Addr), // not IP
			syn(cl(1, 1), unit))                          // not a VIP
		r.send(templates...) // creates the flows
		frames := make([]nic.Frame, len(templates))
		for i := range frames {
			frames[i] = frame(templates[i])
		}
		before := r.p.Stats()
		var tx, pass, drop int
		noAllocs(t, runs, func() {
			// Process rewrites frames in place: restore them.
			for i := range frames {
				frames[i].Off, frames[i].Len = nic.Headroom, len(templates[i])
				copy(frames[i].Buf[nic.Headroom:], templates[i])
			}
			r.out.Reset()
			r.p.Process(r.now, frames, r.out)
			tx, pass, drop = tx+len(r.out.TX), pass+len(r.out.Pass), drop+len(r.out.Drop)
		})
		after := r.p.Stats()
		if want := calls * (forwarded + 1); tx != want {
			t.Errorf("got %d frames sent, want %d: every established flow and every echo reply", tx, want)
		}
		if want := calls * passes; pass != want || drop != 0 {
			t.Errorf("got %d frames passed and %d dropped, want %d and 0", pass, drop, want)
		}
		if n := after.NewFlows - before.NewFlows; n != 0 {
			t.Errorf("got %d new flows, want 0: the flows were established", n)
		}
		if n := after.EchoReplies - before.EchoReplies; n != uint64(calls) {
			t.Errorf("got %d echo replies, want %d", n, calls)
		}
	})

	t.Run("new flows in batches", func(t *testing.T) {
		// The packets are built beforehand: building one allocates, in
		// the test, not in Process.
		const batch = 16
		packets := make([][]byte, calls*batch)
		for i := range packets {
			packets[i] = syn(cl(2, uint16(2000+i)), vip(80+uint16(i%4)))
		}
		fresh := make([]nic.Frame, batch)
		for i := range fresh {
			fresh[i] = frame(packets[i])
		}
		next, tx := 0, 0
		before := r.p.Stats()
		noAllocs(t, runs, func() {
			for i := range fresh {
				fresh[i].Off, fresh[i].Len = nic.Headroom, len(packets[next])
				copy(fresh[i].Buf[nic.Headroom:], packets[next])
				next++
			}
			r.out.Reset()
			r.p.Process(r.now, fresh, r.out)
			tx += len(r.out.TX)
		})
		if n := r.p.Stats().NewFlows - before.NewFlows; n != uint64(len(packets)) || tx != len(packets) {
			t.Errorf("got %d new flows and %d frames sent, want %d of each", n, tx, len(packets))
		}
	})

	t.Run("new flows one at a time", func(t *testing.T) {
		built := make([]nic.Frame, calls)
		for i := range built {
			built[i] = frame(syn(cl(3, uint16(3000+i)), vip(80+uint16(i%4))))
		}
		j, tx := 0, 0
		before := r.p.Stats()
		noAllocs(t, runs, func() {
			r.out.Reset()
			r.p.Process(r.now, built[j:j+1], r.out)
			tx += len(r.out.TX)
			j++
		})
		if n := r.p.Stats().NewFlows - before.NewFlows; n != uint64(calls) || tx != calls {
			t.Errorf("got %d new flows and %d frames sent, want %d of each", n, tx, calls)
		}
	})

	t.Run("new flows into a full table", func(t *testing.T) {
		// A SYN flood against a full table is the worst case of the hot
		// path: every new flow evicts an old one.
		full := newRig(t, loadConfig(t, 64, "1024-65535"))
		const batch = 16
		packets := make([][]byte, 64+calls*batch)
		for i := range packets {
			packets[i] = syn(cl(4, uint16(4000+i)), vip(81))
		}
		full.send(packets[:64]...) // fills the table
		packets = packets[64:]
		fresh := make([]nic.Frame, batch)
		for i := range fresh {
			fresh[i] = frame(packets[i])
		}
		next, tx := 0, 0
		before, evicted := full.p.Stats(), full.p.Flows().Stats().Evicted
		noAllocs(t, runs, func() {
			for i := range fresh {
				fresh[i].Off, fresh[i].Len = nic.Headroom, len(packets[next])
				copy(fresh[i].Buf[nic.Headroom:], packets[next])
				next++
			}
			full.out.Reset()
			full.p.Process(full.now, fresh, full.out)
			tx += len(full.out.TX)
		})
		if n := full.p.Stats().NewFlows - before.NewFlows; n != uint64(len(packets)) || tx != len(packets) {
			t.Errorf("got %d new flows and %d frames sent, want %d of each", n, tx, len(packets))
		}
		if n := full.p.Flows().Stats().Evicted - evicted; n < uint64(len(packets)) {
			t.Errorf("got %d flows evicted, want at least %d: one per new flow", n, len(packets))
		}
	})

	t.Run("new flows reported to the control process", func(t *testing.T) {
		// With a control process: every new flow's event, the removal
		// events of the flows it evicts, the nat SYNs held until their
		// events are sent, and the uplink's collection, as it runs.
		full := newRig(t, loadConfig(t, 64, "1024-65535"))
		const batch = 16
		packets := make([][]byte, 64+calls*batch)
		for i := range packets {
			packets[i] = syn(cl(6, uint16(6000+i)), vip(80+uint16(i%2))) // nat and halfnat
		}
		full.send(packets[:64]...) // fills the table
		full.p.EnableOutbox(make(chan struct{}, 1))
		packets = packets[64:]
		// A frame of its own for each packet: a held SYN keeps its
		// buffer until it leaves, as a port's frame does.
		frames := make([]nic.Frame, len(packets))
		for i := range frames {
			frames[i] = frame(packets[i])
		}
		var events, removed int
		collect := func(evs []channel.FlowEvent, _ []channel.Punt, _ uint64) {
			events += len(evs)
			for i := range evs {
				if evs[i].Kind == channel.FlowExpired {
					removed++
				}
			}
		}
		round := func(in []nic.Frame) int {
			// Time passes between batches, so that eviction, which
			// takes the most idle of a kind first, spares the flows
			// whose SYNs are still held.
			full.now++
			full.out.Reset()
			full.p.Process(full.now, in, full.out)
			full.p.TakeOutbox(collect)
			if g, waiting := full.p.TakeSendWait(); waiting {
				full.p.EventsSent(g)
			}
			return len(full.out.TX)
		}
		next, tx := 0, 0
		noAllocs(t, runs, func() {
			tx += round(frames[next : next+batch])
			next += batch
		})
		for range 4 {
			tx += round(nil) // the last held SYNs
		}
		if tx != len(packets) || events < 2*len(packets) || removed < len(packets) {
			t.Errorf("%d frames sent, %d events (%d removals) for %d new flows into a full table; want every frame, an opened and a removal per flow", tx, events, removed, len(packets))
		}
	})
}

// noAllocs fails t unless f allocates nothing, averaged over runs calls.
func noAllocs(t *testing.T, runs int, f func()) {
	t.Helper()
	if a := testing.AllocsPerRun(runs, f); a != 0 {
		t.Errorf("got %v allocations per batch, want 0", a)
	}
}

func TestNATTranslatesBothWays(t *testing.T) {
	r := newRig(t, loadConfig(t, 1024, "1024-65535"))
	c := cl(5, 5555)
	tx, _, _ := r.send(syn(c, vip(80)))
	if len(tx) != 1 {
		t.Fatal("SYN not forwarded")
	}
	be, snat := dstOf(tx[0]), srcOf(tx[0])
	if snat.Addr().String() != "198.51.100.1" || be.Port() != 80 {
		t.Fatalf("forwarded %v > %v", snat, be)
	}
	beEP := pkttest.Endpoint{MAC: pkttest.MustMAC("02:00:00:00:0b:01"), Addr: be.Addr(), Port: be.Port()}
	snatEP := pkttest.Endpoint{MAC: pkttest.MustMAC(unitMAC), Addr: snat.Addr(), Port: snat.Port()}
	tx, _, drop := r.send(pkttest.TCP(beEP, snatEP, pkttest.SYN|pkttest.ACK, 7, 2, pkttest.Opts{}))
	if len(tx) != 1 {
		t.Fatalf("reply not forwarded (%d dropped)", len(drop))
	}
	if got := srcOf(tx[0]); got != netip.MustParseAddrPort("192.0.2.1:80") {
		t.Errorf("reply source %v, want the VIP", got)
	}
	if got := dstOf(tx[0]); got.Addr() != c.Addr || got.Port() != c.Port {
		t.Errorf("reply destination %v, want the client", got)
	}
	ck := pkttest.Checker{}
	for _, f := range tx {
		if err := ck.Check(f); err != nil {
			t.Error(err)
		}
	}
}

func TestSNATPortsExhaust(t *testing.T) {
	r := newRig(t, loadConfig(t, 1024, "2000-2001"))
	// Every client reaches the same backend for this test: use one
	// client address with varying ports, and count what happens. With
	// two ports and three backends at most 2 flows per backend fit.
	fwd, dropped := 0, 0
	for i := range 20 {
		tx, _, drop := r.send(syn(cl(9, uint16(100+i)), vip(80)))
		fwd += len(tx)
		dropped += len(drop)
	}
	if fwd > 6 || r.p.stats.Drops[DropSNATExhausted] != uint64(dropped) || dropped < 14 {
		t.Fatalf("forwarded %d, dropped %d (snat_exhausted %d): two ports fit two flows per backend",
			fwd, dropped, r.p.stats.Drops[DropSNATExhausted])
	}
}

func TestWorkersOwnDisjointSNATPorts(t *testing.T) {
	c := loadConfig(t, 1024, "1024-1100")
	c.Forwarder.Workers = 2
	seen := map[uint16]int{}
	for w := range 2 {
		s, _ := Build(c, nil)
		pc := ConfigFrom(c, w, nic.LinkEthernet, 1)
		p, err := New(pc, s)
		if err != nil {
			t.Fatal(err)
		}
		r := &rig{t: t, p: p, out: NewOutput(&pc)}
		for i := range 10 {
			tx, _, _ := r.send(syn(cl(w+1, uint16(100+i)), vip(80)))
			port := srcOf(tx[0]).Port()
			if int(port)%2 != w {
				t.Fatalf("worker %d used port %d, which belongs to the other worker", w, port)
			}
			if prev, dup := seen[port]; dup && prev != w {
				t.Fatalf("port %d used by both workers", port)
			}
			seen[port] = w
		}
	}
}

// TestReload checks what a configuration change does to flows: a removed
// or draining backend keeps its flows and gets no new ones; an inactive
// backend loses its flows.
func TestReload(t *testing.T) {
	c := loadConfig(t, 1024, "1024-65535")
	r := newRig(t, c)
	// Open 30 halfnat flows and remember their backends.
	where := map[uint16]netip.Addr{}
	for i := range 30 {
		tx, _, _ := r.send(syn(cl(1, uint16(100+i)), vip(81)))
		where[uint16(100+i)] = dstOf(tx[0]).Addr()
	}
	b1 := netip.MustParseAddr("10.1.0.1")
	for _, state := range []string{"removed", unit.StateDraining.String(), unit.StateInactive.String()} {
		t.Run(state, func(t *testing.T) {
			nc := loadConfig(t, 1024, "1024-65535")
			bs := nc.VIPs[1].Backends
			if state == "removed" {
				nc.VIPs[1].Backends = bs[1:]
			} else {
				nc.VIPs[1].Backends = append([]config.Backend(nil), bs...)
				nc.VIPs[1].Backends[0].State = state
			}
			if err := nc.Check(); err != nil {
				t.Fatal(err)
			}
			s, err := Build(nc, r.p.Snapshot())
			if err != nil {
				t.Fatal(err)
			}
			r.p.SetSnapshot(s)
			for port, be := range where {
				tx, _, drop := r.send(ack(cl(1, port), vip(81)))
				switch {
				case be == b1 && state == unit.StateInactive.String():
					if len(drop) != 1 {
						t.Fatalf("flow to an inactive backend still forwarded")
					}
				case len(tx) != 1 || dstOf(tx[0]).Addr() != be:
					t.Fatalf("existing flow to %v moved or dropped", be)
				}
			}
			for i := range 30 {
				tx, _, _ := r.send(syn(cl(2, uint16(500+i)), vip(81)))
				if len(tx) == 1 && dstOf(tx[0]).Addr() == b1 {
					t.Fatalf("new flow sent to a %s backend", state)
				}
			}
		})
		// Back to the original configuration for the next state.
		s, _ := Build(loadConfig(t, 1024, "1024-65535"), r.p.Snapshot())
		r.p.SetSnapshot(s)
	}
}

func TestIdleFlowsExpire(t *testing.T) {
	r := newRig(t, loadConfig(t, 1024, "1024-65535"))
	for i := range 10 {
		r.send(pkttest.TCP(cl(1, uint16(100+i)), vip(81), pkttest.ACK, 1, 1, pkttest.Opts{}))
	}
	if n, _ := r.p.Flows().Len(); n != 20 {
		t.Fatalf("%d entries, want 10 pairs", n)
	}
	// Established timeout is 15 minutes; aging takes up to a sweep more.
	r.now = flow.Tick(15*60*1000 + 1)
	for range 5 {
		r.send()
		r.now += sweepPeriod
	}
	if n, _ := r.p.Flows().Len(); n != 0 {
		t.Fatalf("%d entries left after the idle timeout", n)
	}
}

func TestSYNAfterRSTReopensFlow(t *testing.T) {
	r := newRig(t, loadConfig(t, 1024, "1024-65535"))
	c := cl(1, 100)
	r.send(syn(c, vip(81)))
	r.send(pkttest.TCP(c, vip(81), pkttest.RST, 2, 0, pkttest.Opts{}))
	r.send(syn(c, vip(81)))
	var k flow.Key4
	copy(k.Src[:], c.Addr.AsSlice())
	k.Dst = [4]byte{192, 0, 2, 1}
	k.SrcPort, k.DstPort, k.Proto = 100, 81, 6
	v := r.p.Flows().Lookup4(&k, r.p.Flows().Hash4(&k))
	if v == nil || v.Flags&unit.FlowRST != 0 {
		t.Fatalf("flow flags after a new SYN: %v", v)
	}
}

func TestHalfNATReplyConflict(t *testing.T) {
	// Two VIPs whose only backend is the same host and port: one client
	// address and port reaching both would make the backend see two
	// connections with one 4-tuple. The second is refused.
	c, err := config.Parse([]byte(`
unit: {address4: 198.51.100.254}
l2: {gateway_mac: "02:00:00:00:00:fe"}
vips:
  - {name: a, address: 192.0.2.1, port: 80, protocol: tcp, mode: halfnat, backends: [{address: 10.1.0.1, port: 80}]}
  - {name: b, address: 192.0.2.2, port: 80, protocol: tcp, mode: halfnat, backends: [{address: 10.1.0.1, port: 80}]}
`))
	if err != nil {
		t.Fatal(err)
	}
	r := newRig(t, c)
	client := cl(1, 100)
	if tx, _, _ := r.send(syn(client, vip(80))); len(tx) != 1 {
		t.Fatal("first flow not forwarded")
	}
	other := pkttest.Endpoint{MAC: pkttest.MustMAC(unitMAC), Addr: netip.MustParseAddr("192.0.2.2"), Port: 80}
	r.send(syn(client, other))
	if r.p.stats.Drops[DropFlowConflict] != 1 {
		t.Fatal("conflicting half-NAT flow not refused")
	}
}

func TestFullTableEvicts(t *testing.T) {
	r := newRig(t, loadConfig(t, 64, "1024-65535"))
	for i := range 500 {
		r.now++
		if tx, _, _ := r.send(syn(cl(1, uint16(100+i)), vip(82))); len(tx) != 1 {
			t.Fatalf("flow %d not forwarded with a full table", i)
		}
	}
	if n, _ := r.p.Flows().Len(); n > 64 {
		t.Fatalf("%d entries in a table bounded at 64", n)
	}
	if r.p.Flows().Stats().Evicted == 0 {
		t.Fatal("nothing evicted")
	}
}

func TestIPv6HalfNAT(t *testing.T) {
	r := newRig(t, loadConfig(t, 1024, "1024-65535"))
	c := pkttest.EP(gwMAC, "[2001:db8:c::1]:4000")
	v := pkttest.EP(unitMAC, "[2001:db8::1]:80")
	tx, _, _ := r.send(syn(c, v))
	if len(tx) != 1 || !dstOf(tx[0]).Addr().Is6() {
		t.Fatal("IPv6 SYN not forwarded")
	}
	ck := pkttest.Checker{}
	if err := ck.Check(tx[0]); err != nil {
		t.Fatal(err)
	}
}

// TestSnapshotWithoutHistory swaps in a snapshot built without its
// predecessor (as a restarted control process would) and one that drops
// every VIP: existing flows must keep working and nothing may panic.
func TestSnapshotWithoutHistory(t *testing.T) {
	c := loadConfig(t, 1024, "1024-65535")
	r := newRig(t, c)
	for port := uint16(80); port <= 83; port++ {
		r.send(syn(cl(1, 100), vip(port)))
	}
	empty, err := config.Parse([]byte("unit: {address4: 198.51.100.254}\nl2: {gateway_mac: \"02:00:00:00:00:fe\"}\n"))
	if err != nil {
		t.Fatal(err)
	}
	for name, build := range map[string]func() (*Snapshot, error){
		"no VIPs":      func() (*Snapshot, error) { return Build(empty, r.p.Snapshot()) },
		"no history":   func() (*Snapshot, error) { return Build(empty, nil) },
		"back to full": func() (*Snapshot, error) { return Build(c, nil) },
	} {
		s, err := build()
		if err != nil {
			t.Fatal(err)
		}
		r.p.SetSnapshot(s)
		for port := uint16(80); port <= 83; port++ {
			if tx, _, _ := r.send(ack(cl(1, 100), vip(port))); len(tx) != 1 {
				t.Errorf("%s: existing flow to port %d not forwarded", name, port)
			}
		}
	}
}

// TestReusedTupleIsDecidedAgain: a client that closed a connection and
// opens another on the same tuple gets a new decision, so a backend
// drained since receives nothing new; a retransmitted SYN of a live
// connection keeps its backend.
func TestReusedTupleIsDecidedAgain(t *testing.T) {
	r := newRig(t, loadConfig(t, 1024, "1024-65535"))
	c := cl(1, 100)
	tx, _, _ := r.send(syn(c, vip(81)))
	first := dstOf(tx[0]).Addr()
	tx, _, _ = r.send(syn(c, vip(81))) // retransmission
	if dstOf(tx[0]).Addr() != first {
		t.Fatal("a retransmitted SYN changed backend")
	}
	r.send(pkttest.TCP(c, vip(81), pkttest.ACK|pkttest.FIN, 2, 1, pkttest.Opts{}))
	r.drain(1, first)
	tx, _, _ = r.send(syn(c, vip(81)))
	if len(tx) != 1 || dstOf(tx[0]).Addr() == first {
		t.Fatalf("a new connection on a closed flow's tuple went to the drained backend %v", first)
	}
	if st := r.p.Stats(); st.Reopened != 1 || st.NewFlows != 2 {
		t.Fatalf("reopened %d, new flows %d; want 1 and 2", st.Reopened, st.NewFlows)
	}
}

// TestReusedNATTupleKeepsItsPort: a nat connection closed and opened
// again on the same client tuple, to the same backend, keeps its SNAT
// port, so the backend's TIME_WAIT for that port meets the same client
// (whose timestamps only grow) and not another; both halves start the new
// connection afresh. Decided elsewhere, it gets a new port.
func TestReusedNATTupleKeepsItsPort(t *testing.T) {
	r := newRig(t, loadConfig(t, 1024, "1024-65535"))
	c := cl(1, 100)
	tx, _, _ := r.send(syn(c, vip(80)))
	first, port := dstOf(tx[0]).Addr(), srcOf(tx[0])
	backend := pkttest.Endpoint{MAC: pkttest.MustMAC(gwMAC), Addr: first, Port: dstOf(tx[0]).Port()}
	snat := pkttest.Endpoint{MAC: pkttest.MustMAC(unitMAC), Addr: port.Addr(), Port: port.Port()}
	// The backend closes first (it will hold TIME_WAIT), then the client.
	r.send(pkttest.TCP(backend, snat, pkttest.SYN|pkttest.ACK, 9, 2, pkttest.Opts{}))
	r.send(pkttest.TCP(backend, snat, pkttest.ACK|pkttest.FIN, 10, 2, pkttest.Opts{}))
	r.send(pkttest.TCP(c, vip(80), pkttest.ACK|pkttest.FIN, 2, 11, pkttest.Opts{}))
	r.now += 10
	tx, _, _ = r.send(syn(c, vip(80)))
	if len(tx) != 1 || srcOf(tx[0]) != port || dstOf(tx[0]).Addr() != first {
		t.Fatalf("reopened connection went %v → %v, want %v → %v", srcOf(tx[0]), dstOf(tx[0]), port, first)
	}
	rk := flow.Key4{Src: first.As4(), Dst: port.Addr().As4(), SrcPort: backend.Port, DstPort: port.Port(), Proto: 6}
	if _, flags, ok := r.p.Flows().PairState4(&rk, r.p.Flows().Hash4(&rk)); !ok || flags&(unit.FlowFIN|unit.FlowEstablished) != 0 || !flow.HalfOpen(flags) {
		t.Fatalf("reopened pair's flags %v (found %v), want a fresh handshake", flags, ok)
	}
	if st := r.p.Stats(); st.Reopened != 1 || st.NewFlows != 2 {
		t.Fatalf("reopened %d, new flows %d; want 1 and 2", st.Reopened, st.NewFlows)
	}

	// Closed again, with the backend drained meanwhile: a new decision.
	r.send(pkttest.TCP(c, vip(80), pkttest.RST, 3, 0, pkttest.Opts{}))
	r.drain(0, first)
	tx, _, _ = r.send(syn(c, vip(80)))
	if len(tx) != 1 || dstOf(tx[0]).Addr() == first {
		t.Fatalf("a connection reopened after its backend was drained went to it (%v)", dstOf(tx[0]))
	}
}

// drain rebuilds the rig's snapshot from its test configuration with the
// backend at addr of VIP v draining.
func (r *rig) drain(v int, addr netip.Addr) {
	r.t.Helper()
	nc := loadConfig(r.t, 1024, "1024-65535")
	for i := range nc.VIPs[v].Backends {
		if nc.VIPs[v].Backends[i].Address == addr.String() {
			nc.VIPs[v].Backends[i].State = unit.StateDraining.String()
		}
	}
	if err := nc.Check(); err != nil {
		r.t.Fatal(err)
	}
	s, err := Build(nc, r.p.Snapshot())
	if err != nil {
		r.t.Fatal(err)
	}
	r.p.SetSnapshot(s)
}
