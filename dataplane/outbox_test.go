package dataplane

import (
	"encoding/binary"
	"sync/atomic"
	"testing"

	"github.com/tetherlb/tether/api/unit"
	"github.com/tetherlb/tether/dataplane/channel"
	"github.com/tetherlb/tether/internal/pkttest"
	"github.com/tetherlb/tether/nic"
)

func puntRig(t *testing.T) *rig {
	c := loadConfig(t, 1024, "1024-65535")
	for i := range c.VIPs {
		c.VIPs[i].Punt = true
	}
	r := newRig(t, c)
	r.p.EnableOutbox(make(chan struct{}, 1))
	return r
}

func take(r *rig) ([]channel.FlowEvent, []channel.Punt) {
	var evs []channel.FlowEvent
	var punts []channel.Punt
	r.p.TakeOutbox(func(e []channel.FlowEvent, p []channel.Punt, _ uint64) {
		evs = append(evs, e...)
		for _, x := range p {
			x.Frame = append([]byte(nil), x.Frame...)
			punts = append(punts, x)
		}
	})
	return evs, punts
}

// sendEvents does what the uplink does each round: it takes the outbox,
// "sends" it and tells the pipeline so.
func sendEvents(r *rig) []channel.FlowEvent {
	evs, _ := take(r)
	if g, waiting := r.p.TakeSendWait(); waiting {
		r.p.EventsSent(g)
	}
	return evs
}

// TestNATFirstPacketWaitsForItsEvent: a new nat flow's SYN leaves only
// after the collection carrying its opened event has been sent, so a
// forwarder killed in between has let nothing out the next one cannot
// put back. Without a control process, or when the uplink stalls, the
// packet still goes.
func TestNATFirstPacketWaitsForItsEvent(t *testing.T) {
	c := loadConfig(t, 1024, "1024-65535")
	r := newRig(t, c)
	r.p.EnableOutbox(make(chan struct{}, 1))
	if tx, _, _ := r.send(syn(cl(1, 7000), vip(80))); len(tx) != 0 {
		t.Fatal("nat SYN forwarded before its event was taken")
	}
	// Taken but not yet sent: still held.
	evs, _ := take(r)
	g, waiting := r.p.TakeSendWait()
	if len(evs) != 1 || !waiting {
		t.Fatalf("%d events, waiting %v; want the opened event and a waiting packet", len(evs), waiting)
	}
	// A second flow opened after the take belongs to the next round.
	if tx, _, _ := r.send(syn(cl(2, 7000), vip(80))); len(tx) != 0 {
		t.Fatal("second nat SYN forwarded early")
	}
	r.p.EventsSent(g)
	tx, _, _ := r.send()
	if len(tx) != 1 {
		t.Fatalf("after the send, %d packets left; want only the first flow's SYN", len(tx))
	}
	if r.p.stats.RxPackets != 2 {
		t.Fatalf("rx_packets %d, want 2: a held packet counts once", r.p.stats.RxPackets)
	}
	// The uplink stalls: the second SYN goes at the timeout anyway.
	r.now += sendWaitTimeout + 1
	if tx, _, _ := r.send(); len(tx) != 1 {
		t.Fatalf("%d packets after the wait timed out, want the held SYN", len(tx))
	}
	// The control process goes away: nothing waits for it.
	r.send(syn(cl(3, 7000), vip(80)))
	r.p.SetControlConnected(false)
	if tx, _, _ := r.send(); len(tx) != 1 {
		t.Fatal("held SYN not released when the control process went away")
	}
	if tx, _, _ := r.send(syn(cl(4, 7000), vip(80))); len(tx) != 1 {
		t.Fatal("nat SYN held with no control process connected")
	}
	// Packets of other modes never wait.
	if tx, _, _ := r.send(syn(cl(5, 7000), vip(81))); len(tx) != 1 {
		t.Fatal("halfnat SYN held")
	}
}

func TestPuntWaitsForRoute(t *testing.T) {
	r := puntRig(t)
	c := cl(1, 5000)
	tx, _, drop := r.send(syn(c, vip(80)))
	if len(tx)+len(drop) != 0 || r.p.HeldPunts() != 1 {
		t.Fatalf("punted SYN not held: tx %d drop %d held %d", len(tx), len(drop), r.p.HeldPunts())
	}
	// The retransmission waits too, without a second punt.
	r.send(syn(c, vip(80)))
	_, punts := take(r)
	if len(punts) != 1 || r.p.HeldPunts() != 2 {
		t.Fatalf("%d punts, %d held; want 1 punt for 2 held packets", len(punts), r.p.HeldPunts())
	}
	pu := punts[0]
	if pu.Key.DstPort != 80 || len(pu.Frame) == 0 {
		t.Fatalf("punt %+v", pu)
	}
	// Control picks backend b3 (ID 2).
	be := r.p.snap.VIPs[pu.VIP].Backends[2]
	if err := r.p.AddRoute(&channel.Route{Op: channel.RouteAdd, Key: pu.Key, Action: unit.Action{Backend: be}}, r.now); err != nil {
		t.Fatal(err)
	}
	tx, _, _ = r.send()
	if len(tx) != 2 {
		t.Fatalf("%d held packets sent after the route, want 2", len(tx))
	}
	for _, f := range tx {
		if got := dstOf(f).Addr().String(); got != "10.1.0.3" {
			t.Fatalf("sent to %s, want the backend control chose", got)
		}
	}
	evs, _ := take(r)
	if len(evs) != 1 || evs[0].Kind != channel.FlowOpened || evs[0].Action.Backend != be {
		t.Fatalf("events %+v", evs)
	}
}

func TestPuntTimesOut(t *testing.T) {
	r := puntRig(t)
	r.send(syn(cl(1, 5000), vip(81)))
	r.now += puntTimeout + 1
	_, _, drop := r.send()
	if len(drop) != 1 || r.p.stats.Drops[DropPuntTimeout] != 1 {
		t.Fatalf("unanswered punt: %d dropped, punt_timeout %d", len(drop), r.p.stats.Drops[DropPuntTimeout])
	}
}

func TestWithoutControlPuntVIPsUseMaglev(t *testing.T) {
	c := loadConfig(t, 1024, "1024-65535")
	c.VIPs[0].Punt = true
	r := newRig(t, c)
	if tx, _, _ := r.send(syn(cl(1, 5000), vip(80))); len(tx) != 1 {
		t.Fatal("punt VIP without a control process did not forward")
	}
}

// TestFlowsSurviveRestart: the opened events a worker reports put every
// flow back into a new pipeline exactly, so a NAT connection keeps its
// SNAT port across a forwarder restart.
func TestFlowsSurviveRestart(t *testing.T) {
	c := loadConfig(t, 1024, "1024-65535")
	r := newRig(t, c)
	r.p.EnableOutbox(make(chan struct{}, 1))
	var firsts [][]byte
	var evs []channel.FlowEvent
	for port := uint16(80); port <= 83; port++ {
		tx, _, _ := r.send(syn(cl(1, 7000), vip(port)))
		if port == 80 { // nat: the SYN leaves once its event has
			if len(tx) != 0 {
				t.Fatal("nat SYN forwarded before its flow event was sent")
			}
			evs = append(evs, sendEvents(r)...)
			tx, _, _ = r.send()
		}
		firsts = append(firsts, tx[0])
	}
	evs = append(evs, sendEvents(r)...)
	if len(evs) != 4 {
		t.Fatalf("%d opened events, want 4", len(evs))
	}
	fresh := newRig(t, c)
	for _, e := range evs {
		if err := fresh.p.AddRoute(&channel.Route{Op: channel.RouteAdd, Key: e.Key, Action: e.Action}, 0); err != nil {
			t.Fatal(err)
		}
	}
	for i, port := range []uint16{80, 81, 82, 83} {
		tx, _, _ := fresh.send(ack(cl(1, 7000), vip(port)))
		if len(tx) != 1 {
			t.Fatalf("port %d: restored flow not forwarded", port)
		}
		got, want := []any{srcOf(tx[0]), dstOf(tx[0])}, []any{srcOf(firsts[i]), dstOf(firsts[i])}
		if port == 83 { // ipip: the outer header has no ports
			got, want = []any{srcOf(tx[0]).Addr(), dstOf(tx[0]).Addr()}, []any{srcOf(firsts[i]).Addr(), dstOf(firsts[i]).Addr()}
		}
		if got[0] != want[0] || got[1] != want[1] {
			t.Fatalf("port %d: restored flow rewrites to %v, first flow went %v", port, got, want)
		}
	}
	// Replies of the restored NAT flow reach the client.
	be, snat := dstOf(firsts[0]), srcOf(firsts[0])
	reply := pkttest.TCP(pkttest.Endpoint{MAC: pkttest.MustMAC("02:00:00:00:0b:01"), Addr: be.Addr(), Port: be.Port()},
		pkttest.Endpoint{MAC: pkttest.MustMAC(unitMAC), Addr: snat.Addr(), Port: snat.Port()}, pkttest.ACK, 1, 1, pkttest.Opts{})
	if tx, _, _ := fresh.send(reply); len(tx) != 1 {
		t.Fatal("reply of a restored NAT flow dropped")
	}
}

func TestExpiryIsReported(t *testing.T) {
	c := loadConfig(t, 1024, "1024-65535")
	r := newRig(t, c)
	r.p.EnableOutbox(make(chan struct{}, 1))
	r.send(pkttest.UDP(cl(1, 9), pkttest.Endpoint{MAC: pkttest.MustMAC(unitMAC), Addr: vip(0).Addr, Port: 0}, pkttest.Opts{}))
	r.send(ack(cl(1, 9), vip(81)))
	take(r)
	r.now += 16 * 60 * 1000
	for range 3 {
		r.send()
		r.now += sweepPeriod
	}
	evs, _ := take(r)
	if len(evs) != 1 || evs[0].Kind != channel.FlowExpired || evs[0].Key.DstPort != 81 {
		t.Fatalf("expiry events %+v", evs)
	}
}

func TestRouteErrors(t *testing.T) {
	r := newRig(t, loadConfig(t, 1024, "1024-65535"))
	k := unit.FlowKey{Src: [16]byte{203, 0, 113, 1}, Dst: [16]byte{192, 0, 2, 99}, SrcPort: 1, DstPort: 80, Proto: 6}
	if err := r.p.AddRoute(&channel.Route{Op: channel.RouteAdd, Key: k, Action: unit.Action{Backend: 0}}, 0); err == nil {
		t.Fatal("route to an address that is no VIP accepted")
	}
	k.Dst = [16]byte{192, 0, 2, 1}
	if err := r.p.AddRoute(&channel.Route{Op: channel.RouteAdd, Key: k, Action: unit.Action{Backend: 999}}, 0); err == nil {
		t.Fatal("route to an unknown backend accepted")
	}
	if err := r.p.AddRoute(&channel.Route{Op: channel.RouteAdd, Key: k, Action: unit.Action{Mode: 77}}, 0); err == nil {
		t.Fatal("route with an unknown mode accepted")
	}
	if r.p.DeleteRoute(&k) {
		t.Fatal("deleted a route that does not exist")
	}
}

func TestClosingIsReported(t *testing.T) {
	r := newRig(t, loadConfig(t, 1024, "1024-65535"))
	r.p.EnableOutbox(make(chan struct{}, 1))
	c := cl(1, 4000)
	r.send(syn(c, vip(81)))
	r.send(pkttest.TCP(c, vip(81), pkttest.ACK|pkttest.FIN, 2, 2, pkttest.Opts{}))
	r.send(pkttest.TCP(c, vip(81), pkttest.ACK|pkttest.FIN, 2, 2, pkttest.Opts{}))
	evs, _ := take(r)
	if len(evs) != 2 || evs[0].Kind != channel.FlowOpened || evs[1].Kind != channel.FlowClosed {
		t.Fatalf("events %+v, want opened then one closed", evs)
	}
}

// TestEventsKeepTheirOrder: a flow removed and opened again under the
// same key within one collection reaches the control process as removed,
// then opened; the other order would make it drop a live connection
// from its inventory.
func TestEventsKeepTheirOrder(t *testing.T) {
	r := newRig(t, loadConfig(t, 1024, "1024-65535"))
	r.p.EnableOutbox(make(chan struct{}, 1))
	c := cl(1, 7000)
	r.send(syn(c, vip(81)))
	evs, _ := take(r)
	if len(evs) != 1 || evs[0].Kind != channel.FlowOpened {
		t.Fatalf("events %+v, want one opened", evs)
	}
	r.p.DeleteRoute(&evs[0].Key)
	r.send(syn(c, vip(81)))
	evs, _ = take(r)
	if len(evs) != 2 || evs[0].Kind != channel.FlowExpired || evs[1].Kind != channel.FlowOpened || evs[0].Key != evs[1].Key {
		t.Fatalf("events %+v, want removed then opened, same key", evs)
	}
}

// fakeDirect is a DirectSender that records what it sends, or refuses
// (all, or once room messages went, when room is not zero).
type fakeDirect struct {
	msgs   [][]byte
	refuse bool
	room   int
	seq    uint32
}

func (f *fakeDirect) TrySend(m []byte) bool {
	if f.refuse || f.room > 0 && len(f.msgs) == f.room {
		return false
	}
	f.msgs = append(f.msgs, append([]byte(nil), m...))
	return true
}
func (f *fakeDirect) Seq() uint32 { f.seq++; return f.seq }

// TestDirectSendReleasesFirstPackets: a worker that may send its flow
// events itself sends a new nat flow's opened event at the end of the
// batch and lets the held SYN go with the next; while the uplink holds
// events of its own (busy), or the socket refuses, it leaves them to the
// uplink and the SYN waits for it.
func TestDirectSendReleasesFirstPackets(t *testing.T) {
	r := newRig(t, loadConfig(t, 1024, "1024-65535"))
	r.p.EnableOutbox(make(chan struct{}, 1))
	d := &fakeDirect{}
	var busy atomic.Bool
	r.p.SetDirect(d, &busy)
	if tx, _, _ := r.send(syn(cl(1, 1000), vip(80))); len(tx) != 0 {
		t.Fatal("a nat SYN left before its event")
	}
	if len(d.msgs) != 1 {
		t.Fatalf("%d messages sent directly, want 1", len(d.msgs))
	}
	h, body, err := channel.ParseHeader(d.msgs[0])
	if err != nil || h.Type != channel.TFlowEvent {
		t.Fatalf("direct message: %+v, %v", h, err)
	}
	evs, err := channel.DecodeFlowEvents(nil, body)
	if err != nil || len(evs) != 1 || evs[0].Kind != channel.FlowOpened {
		t.Fatalf("direct events %+v, %v", evs, err)
	}
	if tx, _, _ := r.send(); len(tx) != 1 {
		t.Fatalf("%d frames after the event went, want the SYN", len(tx))
	}
	// Events without a packet waiting (a connection closing) go too,
	// and nothing rings the uplink for them.
	bell := make(chan struct{}, 1)
	r.p.out.bell = bell
	r.send(pkttest.TCP(cl(1, 1000), vip(80), pkttest.ACK|pkttest.FIN, 2, 1, pkttest.Opts{}))
	if len(d.msgs) != 2 || len(bell) != 0 {
		t.Fatalf("%d messages sent directly and %d rings after a FIN, want 2 and 0", len(d.msgs), len(bell))
	}
	taken := func() int {
		n := 0
		r.p.TakeOutbox(func(evs []channel.FlowEvent, _ []channel.Punt, _ uint64) { n = len(evs) })
		return n
	}
	if n := taken(); n != 0 {
		t.Fatalf("%d events left for the uplink after a direct send", n)
	}
	for i, c := range []struct {
		name         string
		busy, refuse bool
	}{{"uplink busy", true, false}, {"socket full", false, true}} {
		busy.Store(c.busy)
		d.refuse = c.refuse
		d.msgs = nil
		r.send(syn(cl(2+i, 2000), vip(80)))
		if tx, _, _ := r.send(); len(tx) != 0 || len(d.msgs) != 0 {
			t.Fatalf("%s: %d frames sent, %d messages sent directly; want the SYN held for the uplink", c.name, len(tx), len(d.msgs))
		}
		// The uplink is rung, so that it takes the event at once rather
		// than at its next tick.
		select {
		case <-bell:
		default:
			t.Fatalf("%s: the uplink was not rung for the event it must send", c.name)
		}
		if n := taken(); n != 1 {
			t.Fatalf("%s: %d events for the uplink, want 1", c.name, n)
		}
		g, _ := r.p.TakeSendWait()
		r.p.EventsSent(g)
		if tx, _, _ := r.send(); len(tx) != 1 {
			t.Fatalf("%s: the SYN did not follow the uplink's send", c.name)
		}
		r.p.stats.Drops = [numDrops]uint64{}
	}
}

// A unit with host streams holds a new tunnel flow's packets until the
// control process says the host holds the flow's mapping: none may reach
// a host that could not restore it. They then leave in order, and the
// flow's later packets go at once.
func TestTunnelFlowWaitsForItsHost(t *testing.T) {
	c := loadConfig(t, 1024, "1024-65535")
	c.Hosts.Listen = "127.0.0.1:7320"
	r := newRig(t, c)
	r.p.EnableOutbox(make(chan struct{}, 1))
	cli := cl(1, 5000)
	if tx, _, _ := r.send(syn(cli, vip(82))); len(tx) != 0 {
		t.Fatalf("a new tunnel flow's SYN left before its host had the mapping")
	}
	if tx, _, _ := r.send(ack(cli, vip(82))); len(tx) != 0 {
		t.Fatalf("a later packet of the waiting flow overtook its SYN")
	}
	evs, _ := take(r)
	if len(evs) != 1 || evs[0].Kind != channel.FlowOpened || evs[0].Action.Mode != unit.ModeTunnel {
		t.Fatalf("events %+v, want the tunnel flow opened", evs)
	}
	if s := r.p.Stats(); s.HeldForHost != 2 {
		t.Fatalf("held_for_host %d, want 2", s.HeldForHost)
	}
	if !r.p.ReleaseHeld(&evs[0].Key) {
		t.Fatal("release: no such flow")
	}
	tx, _, _ := r.send()
	if len(tx) != 2 || tcpFlags(tx[0])&pkttest.SYN == 0 || tcpFlags(tx[1])&pkttest.SYN != 0 {
		t.Fatalf("%d packets after the release, want the SYN then the ACK", len(tx))
	}
	id := binary.BigEndian.Uint32(evs[0].Action.B[:4])
	if got := uint32(srcOf(tx[0]).Port())<<16 | uint32(dstOf(tx[0]).Port()); got != id {
		t.Fatalf("sent with flow ID %#x, the event says %#x", got, id)
	}
	if tx, _, _ := r.send(ack(cli, vip(82))); len(tx) != 1 {
		t.Fatalf("a released flow's packet waited")
	}

	// A host that never confirms: the packets wait a bounded time.
	r.send(syn(cl(2, 5001), vip(82)))
	r.now += mappingTimeout + 1
	_, _, drop := r.send()
	if len(drop) != 1 || r.p.stats.Drops[DropMappingTimeout] != 1 {
		t.Fatalf("unconfirmed mapping: %d dropped, mapping_timeout %d", len(drop), r.p.stats.Drops[DropMappingTimeout])
	}

	// Without host streams nothing waits.
	plain := newRig(t, loadConfig(t, 1024, "1024-65535"))
	plain.p.EnableOutbox(make(chan struct{}, 1))
	if tx, _, _ := plain.send(syn(cli, vip(82))); len(tx) != 1 {
		t.Fatalf("without host streams a tunnel SYN waited")
	}
}

func tcpFlags(frame []byte) int {
	ip := pkttest.IP(frame, false)
	f := ip[int(ip[0]&0xf)*4+13]
	out := 0
	if f&0x02 != 0 {
		out |= pkttest.SYN
	}
	if f&0x10 != 0 {
		out |= pkttest.ACK
	}
	return out
}

// TestDirectPunts: a worker that may send itself sends its punts at the
// end of the batch, without ringing the uplink. When the socket takes
// only some, the rest wait in the outbox, each with its own frame, and
// the uplink is rung for them; while the uplink is busy, punts are left
// to it.
func TestDirectPunts(t *testing.T) {
	r := puntRig(t)
	bell := make(chan struct{}, 1)
	r.p.out.bell = bell
	d := &fakeDirect{room: 1}
	var busy atomic.Bool
	r.p.SetDirect(d, &busy)
	r.send(syn(cl(1, 1001), vip(80)), syn(cl(1, 1002), vip(80)), syn(cl(1, 1003), vip(80)))
	if len(d.msgs) != 1 {
		t.Fatalf("%d messages sent directly, want the first punt", len(d.msgs))
	}
	h, body, err := channel.ParseHeader(d.msgs[0])
	if err != nil || h.Type != channel.TPunt {
		t.Fatalf("direct message %+v, %v", h, err)
	}
	if pu, err := channel.DecodePunt(body); err != nil || pu.Key.SrcPort != 1001 {
		t.Fatalf("direct punt %+v, %v", pu, err)
	}
	select {
	case <-bell:
	default:
		t.Fatal("the uplink was not rung for the punts left")
	}
	// Another punt while the socket is still full joins them, in a
	// buffer of its own.
	r.send(syn(cl(1, 1004), vip(80)))
	_, punts := take(r)
	if len(punts) != 3 {
		t.Fatalf("%d punts left for the uplink, want 3", len(punts))
	}
	for i, pu := range punts {
		ip := pu.Frame[14:] // Ethernet, no tags
		tcp := ip[int(ip[0]&0xf)*4:]
		if port := binary.BigEndian.Uint16(tcp); pu.Key.SrcPort != uint16(1002+i) || port != pu.Key.SrcPort {
			t.Fatalf("punt %d: key port %d, frame port %d; want %d for both", i, pu.Key.SrcPort, port, 1002+i)
		}
	}
	if r.p.stats.PuntsSentDirect != 1 {
		t.Fatalf("punts_sent_direct %d, want 1", r.p.stats.PuntsSentDirect)
	}
	busy.Store(true)
	d.room, d.msgs = 0, nil
	r.send(syn(cl(1, 1005), vip(80)))
	if _, punts := take(r); len(d.msgs) != 0 || len(punts) != 1 {
		t.Fatalf("uplink busy: %d sent directly, %d left to it; want 0 and 1", len(d.msgs), len(punts))
	}
}

// countDirect is a DirectSender that only counts: what a socket's send
// would cost the pipeline in allocations is nothing.
type countDirect struct{ n, seq uint32 }

func (c *countDirect) TrySend([]byte) bool { c.n++; return true }
func (c *countDirect) Seq() uint32         { c.seq++; return c.seq }

// TestDirectPuntAllocs: a punt the worker sends itself allocates
// nothing (an l7 VIP's SYN without keys, its hold let go each time).
func TestDirectPuntAllocs(t *testing.T) {
	r := l7Rig(t, false)
	d := &countDirect{}
	var busy atomic.Bool
	r.p.SetDirect(d, &busy)
	in := syn(cl(1, 5000), vip(84))
	fr := []nic.Frame{frame(in)}
	buf := append([]byte(nil), fr[0].Buf...)
	a := testing.AllocsPerRun(200, func() {
		r.now++ // the budget of the worker's own sends grows
		copy(fr[0].Buf, buf)
		fr[0].Len, fr[0].Offload = len(in), nic.Offload{}
		r.out.Reset()
		r.p.Process(r.now, fr, r.out)
		r.p.Answer(r.p.acceptID, nil)
		r.p.flushAnswers(r.out)
	})
	if a != 0 || d.n < 200 || r.p.stats.PuntsSentDirect != uint64(d.n) {
		t.Fatalf("%v allocations per punt; %d sent, punts_sent_direct %d", a, d.n, r.p.stats.PuntsSentDirect)
	}
}

// TestDirectPuntBudget: the worker sends at most maxDirectPunts punts
// itself at once, and directPuntsPerTick more a tick; the rest wait for
// the uplink, which is rung, or for the budget to grow.
func TestDirectPuntBudget(t *testing.T) {
	r := puntRig(t)
	bell := make(chan struct{}, 1)
	r.p.out.bell = bell
	d := &countDirect{}
	var busy atomic.Bool
	r.p.SetDirect(d, &busy)
	const n = maxDirectPunts + 6
	in := make([][]byte, n)
	for i := range in {
		in[i] = syn(cl(1+i/200, uint16(2000+i)), vip(80))
	}
	r.send(in...)
	if d.n != maxDirectPunts || len(r.p.out.punts) != n-maxDirectPunts {
		t.Fatalf("%d sent directly, %d left; want %d and %d", d.n, len(r.p.out.punts), maxDirectPunts, n-maxDirectPunts)
	}
	select {
	case <-bell:
	default:
		t.Fatal("the uplink was not rung for the punts over the budget")
	}
	r.send() // the same tick: no budget yet
	if d.n != maxDirectPunts {
		t.Fatalf("%d sent directly within the tick, want %d", d.n, maxDirectPunts)
	}
	r.now++
	r.send()
	if d.n != n || len(r.p.out.punts) != 0 || r.p.stats.PuntsSentDirect != n {
		t.Fatalf("after a tick: %d sent directly, %d left, punts_sent_direct %d; want all %d sent", d.n, len(r.p.out.punts), r.p.stats.PuntsSentDirect, n)
	}
}
