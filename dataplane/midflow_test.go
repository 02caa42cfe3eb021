package dataplane

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/tetherlb/tether/api/unit"
	"github.com/tetherlb/tether/config"
	"github.com/tetherlb/tether/dataplane/channel"
	"github.com/tetherlb/tether/internal/pkttest"
	"github.com/tetherlb/tether/nic"
)

// clusterRig is a unit of a cluster (its configuration has a cluster
// section) with a control process connected.
func clusterRig(t testing.TB) *rig {
	t.Helper()
	c := loadConfig(t, 1024, "1024-65535")
	c.Cluster = &config.Cluster{}
	r := newRig(t, c)
	r.p.EnableOutbox(make(chan struct{}, 1))
	return r
}

// finAck and rst are segments of a connection under way.
func finAck(c, v pkttest.Endpoint) []byte {
	return pkttest.TCP(c, v, pkttest.FIN|pkttest.ACK, 9, 9, pkttest.Opts{})
}

func rst(c, v pkttest.Endpoint) []byte {
	return pkttest.TCP(c, v, pkttest.RST, 9, 0, pkttest.Opts{})
}

// rawTCPFlags returns a forwarded frame's TCP flags byte.
func rawTCPFlags(f []byte) byte {
	ip := pkttest.IP(f, false)
	return ip[int(ip[0]&0xf)*4+13]
}

// TestClusterPuntsMidFlowSegments: in a unit of a cluster, a TCP
// segment without SYN that no flow expects, on a nat, tunnel or ipip
// VIP, is held and punted as PuntMidFlow, with Maglev's choice (none for
// nat); its retransmission waits with it. Nothing is recorded for it.
func TestClusterPuntsMidFlowSegments(t *testing.T) {
	r := clusterRig(t)
	cases := []struct {
		name    string
		port    uint16
		segment func(c, v pkttest.Endpoint) []byte
		noPick  bool
	}{
		{"nat ACK", 80, ack, true},
		{"tunnel ACK", 82, ack, false},
		{"ipip ACK", 83, ack, false},
		{"tunnel FIN+ACK", 82, finAck, false},
		{"tunnel RST", 82, rst, false},
		{"nat RST", 80, rst, true},
	}
	for i, tc := range cases {
		c := cl(10+i, 5000)
		held := r.p.HeldPunts()
		tx, pass, drop := r.send(tc.segment(c, vip(tc.port)))
		if len(tx)+len(pass)+len(drop) != 0 || r.p.HeldPunts() != held+1 {
			t.Fatalf("%s: tx %d pass %d drop %d, held %d; want it held", tc.name, len(tx), len(pass), len(drop), r.p.HeldPunts()-held)
		}
		r.send(tc.segment(c, vip(tc.port))) // the retransmission
		_, punts := take(r)
		if len(punts) != 1 {
			t.Fatalf("%s: %d punts for a segment and its retransmission, want 1", tc.name, len(punts))
		}
		pu := punts[0]
		v := r.p.snap.VIPs[pu.VIP]
		want := uint32(channel.NoChoice)
		if !tc.noPick {
			want, _ = v.Choose(netip.AddrPortFrom(c.Addr, c.Port), 6)
		}
		if pu.Reason != channel.PuntMidFlow || v.Port != tc.port || pu.Choice != want ||
			pu.Key.SrcPort != c.Port || pu.Key.DstPort != tc.port || len(pu.Frame) == 0 {
			t.Errorf("%s: punt %+v; want a mid-flow punt of VIP port %d with choice %d", tc.name, pu, tc.port, want)
		}
	}
	s := r.p.Stats()
	if n4, _ := r.p.flows.Len(); s.Punted != uint64(2*len(cases)) || s.PuntedMidFlow != s.Punted || s.NewFlows != 0 || n4 != 0 {
		t.Errorf("punted %d (mid-flow %d), new flows %d, table %d; want %d held, nothing recorded",
			s.Punted, s.PuntedMidFlow, s.NewFlows, n4, 2*len(cases))
	}
}

// TestClusterMidFlowLeavesTheRestAlone: SYNs, halfnat VIPs and segments
// refuseNew refuses for more than a missing SYN take the way they took
// before flows were shared.
func TestClusterMidFlowLeavesTheRestAlone(t *testing.T) {
	r := clusterRig(t)
	cases := []struct {
		name  string
		frame []byte
		want  string
	}{
		{"a tunnel SYN opens its flow", syn(cl(1, 5000), vip(82)), "tx"},
		{"a halfnat ACK opens its flow by Maglev", ack(cl(2, 5000), vip(81)), "tx"},
		{"a SYN-ACK is backscatter", pkttest.TCP(cl(3, 5000), vip(82), pkttest.SYN|pkttest.ACK, 1, 1, pkttest.Opts{}), "tcp_not_syn"},
		{"a FIN alone is a scan", pkttest.TCP(cl(4, 5000), vip(82), pkttest.FIN, 1, 0, pkttest.Opts{}), "tcp_bad_flags"},
		{"a segment from a bad source", ack(pkttest.Endpoint{MAC: pkttest.MustMAC(gwMAC), Addr: netip.MustParseAddr("127.0.0.1"), Port: 1}, vip(80)), "bad_source"},
	}
	for _, tc := range cases {
		if got := r.fate(tc.frame); got != tc.want {
			t.Errorf("%s: %s, want %s", tc.name, got, tc.want)
		}
	}
	// The nat SYN waits for its flow event, as every nat SYN does with a
	// control process: it is not punted.
	if got := r.fate(syn(cl(5, 5000), vip(80))); got != "held" || r.p.HeldPunts() != 0 {
		t.Errorf("nat SYN: %s with %d punted, want held for its event, nothing punted", got, r.p.HeldPunts())
	}
	if s := r.p.Stats(); s.Punted != 0 || s.PuntedMidFlow != 0 {
		t.Errorf("punted %d (mid-flow %d), want none", s.Punted, s.PuntedMidFlow)
	}
}

// TestMidFlowWithoutClusterOrControl: a unit alone, or one whose control
// process is away, keeps deciding mid-flow segments itself: tunnel and
// ipip by Maglev; nat with a reset when the unit is alone, but a unit of
// a cluster drops the segment (no_flow), since another unit may carry
// the connection, and so a nat reply to its SNAT address.
func TestMidFlowWithoutClusterOrControl(t *testing.T) {
	alone := newRig(t, loadConfig(t, 1024, "1024-65535"))
	alone.p.EnableOutbox(make(chan struct{}, 1))
	away := clusterRig(t)
	away.p.SetControlConnected(false)
	c := loadConfig(t, 1024, "1024-65535")
	c.Cluster = &config.Cluster{}
	never := newRig(t, c) // no outbox: nobody to punt to
	for name, r := range map[string]*rig{"a unit alone": alone, "control away": away, "no control process": never} {
		for _, port := range []uint16{82, 83} {
			if got := r.fate(ack(cl(1, 6000), vip(port))); got != "tx" {
				t.Errorf("%s: ACK to port %d: %s, want forwarded by Maglev", name, port, got)
			}
		}
		tx, _, _ := r.send(ack(cl(2, 6000), vip(80)))
		if name == "a unit alone" {
			if len(tx) != 1 || rawTCPFlags(tx[0])&rstFlag == 0 || r.p.stats.ResetsSent != 1 {
				t.Errorf("%s: nat ACK: %d frames, %d resets; want one reset", name, len(tx), r.p.stats.ResetsSent)
			}
		} else if len(tx) != 0 || r.p.stats.ResetsSent != 0 || r.p.stats.Drops[DropTCPNotSYN] != 1 {
			t.Errorf("%s: nat ACK: %d frames, %d resets, drops %v; want it dropped (tcp_not_syn), no reset", name, len(tx), r.p.stats.ResetsSent, r.p.stats.Drops)
		}
		reply := pkttest.TCP(pkttest.Endpoint{MAC: pkttest.MustMAC(gwMAC), Addr: netip.MustParseAddr("10.1.0.2"), Port: 80},
			pkttest.Endpoint{MAC: pkttest.MustMAC(unitMAC), Addr: netip.MustParseAddr("198.51.100.1"), Port: 40009}, pkttest.ACK, 3, 3, pkttest.Opts{})
		resets := r.p.stats.ResetsSent
		tx, _, _ = r.send(reply)
		if wantRST := name == "a unit alone"; (r.p.stats.ResetsSent > resets) != wantRST || len(tx) != map[bool]int{true: 1}[wantRST] {
			t.Errorf("%s: nat reply: %d frames, resets %d → %d; want a reset only for a unit alone", name, len(tx), resets, r.p.stats.ResetsSent)
		}
		if r.p.stats.Punted != 0 {
			t.Errorf("%s: %d punted", name, r.p.stats.Punted)
		}
	}
}

// TestMidFlowRouteAdd: a route for a held mid-flow segment lets it go
// through the flow the route describes: a new flow to the route's
// backend (tunnel), or the connection's own entry given whole (nat,
// where only the entry carries the SNAT port the backend knows).
func TestMidFlowRouteAdd(t *testing.T) {
	r := clusterRig(t)
	c := cl(1, 7000)
	r.send(ack(c, vip(82)), ack(c, vip(80)))
	_, punts := take(r)
	if len(punts) != 2 {
		t.Fatalf("%d punts, want 2", len(punts))
	}
	for _, pu := range punts {
		v := r.p.snap.VIPs[pu.VIP]
		be := v.Backends[1] // not necessarily Maglev's choice: the route decides
		route := channel.Route{Op: channel.RouteAdd, Key: pu.Key, Action: unit.Action{Backend: be}}
		if v.Mode == unit.ModeNAT {
			b := &r.p.snap.Backends[be]
			route.Action = unit.Action{Mode: unit.ModeNAT, Backend: be, PortA: b.Port, PortB: 40000}
			copy(route.Action.A[:], b.Addr.AsSlice())
			copy(route.Action.B[:], netip.MustParseAddr("198.51.100.1").AsSlice())
		}
		if err := r.p.AddRoute(&route, r.now); err != nil {
			t.Fatal(err)
		}
	}
	tx, _, _ := r.send()
	if len(tx) != 2 || r.p.HeldPunts() != 0 {
		t.Fatalf("%d frames left after the routes, %d still held; want both segments", len(tx), r.p.HeldPunts())
	}
	for _, f := range tx {
		if rawTCPFlags(f)&rstFlag != 0 {
			t.Fatalf("a reset left instead of the segment")
		}
		if dst := dstOf(f); dst.Addr() != netip.MustParseAddr("10.1.0.2") {
			t.Errorf("segment sent to %s, want the route's backend 10.1.0.2", dst)
		}
	}
	// The nat segment left from the entry's SNAT address and port.
	for _, f := range tx {
		if src := srcOf(f); src.Addr() == netip.MustParseAddr("198.51.100.1") && src.Port() != 40000 {
			t.Errorf("nat segment from %s, want the route's SNAT port 40000", src)
		}
	}
	// Later segments use the flows without asking.
	if got := r.fate(ack(c, vip(82))); got != "tx" || r.p.stats.PuntedMidFlow != 2 {
		t.Errorf("a later segment: %s, %d mid-flow punts; want forwarded, still 2", got, r.p.stats.PuntedMidFlow)
	}
}

// TestMidFlowRouteRefuse: a refusal answers the held segments as a
// host that does not know the connection: each segment without RST
// gets a reset from the VIP; a reset is dropped (no_route). No flow is
// made, so the next segment asks again.
func TestMidFlowRouteRefuse(t *testing.T) {
	r := clusterRig(t)
	c := cl(1, 7000)
	seg := pkttest.TCP(c, vip(82), pkttest.ACK|pkttest.PSH, 1000, 5000, pkttest.Opts{Payload: []byte("hello")})
	r.send(seg, seg) // a segment and its retransmission
	r.send(rst(cl(2, 7000), vip(80)))
	_, punts := take(r)
	if len(punts) != 2 || r.p.HeldPunts() != 3 {
		t.Fatalf("%d punts, %d held; want 2 punts for 3 segments", len(punts), r.p.HeldPunts())
	}
	for _, pu := range punts {
		r.p.RefuseRoute(&pu.Key, r.now)
	}
	if r.p.HeldPunts() != 0 {
		t.Fatalf("%d still held after the refusals", r.p.HeldPunts())
	}
	tx, _, drop := r.send()
	if len(tx) != 2 || len(drop) != 1 {
		t.Fatalf("%d sent, %d dropped; want 2 resets and the held reset dropped", len(tx), len(drop))
	}
	for _, f := range tx {
		ip := pkttest.IP(f, false)
		tcp := ip[20:]
		if tcp[13] != rstFlag || binary.BigEndian.Uint32(tcp[4:]) != 5000 ||
			srcOf(f) != netip.MustParseAddrPort("192.0.2.1:82") || dstOf(f) != netip.AddrPortFrom(c.Addr, c.Port) {
			t.Errorf("not a reset from the VIP with seq = the segment's ack:\n% x", ip)
		}
		if err := (&pkttest.Checker{}).Check(f); err != nil {
			t.Error(err)
		}
	}
	s := r.p.Stats()
	if s.MidFlowRefused != 3 || s.ResetsSent != 2 || s.Drops[DropNoRoute] != 1 || s.NewFlows != 0 {
		t.Errorf("refused %d, resets %d, no_route %d, new flows %d; want 3, 2, 1, 0", s.MidFlowRefused, s.ResetsSent, s.Drops[DropNoRoute], s.NewFlows)
	}
	if s.RxPackets != s.TxPackets+s.Passed()+s.Dropped() {
		t.Errorf("rx %d != tx %d + passed %d + dropped %d", s.RxPackets, s.TxPackets, s.Passed(), s.Dropped())
	}
	if got := r.fate(seg); got != "held" || r.p.stats.PuntedMidFlow != 4 {
		t.Errorf("the next segment: %s, %d mid-flow punts; want held and punted again", got, r.p.stats.PuntedMidFlow)
	}
	// A refusal of a key nothing waits for changes nothing.
	if n := r.p.RefuseRoute(&unit.FlowKey{SrcPort: 1, DstPort: 82, Proto: 6}, r.now); n != 0 || r.p.HeldPunts() != 1 {
		t.Errorf("refusing an unknown key let %d go, %d held", n, r.p.HeldPunts())
	}
	// The client opens the tuple again while the control process asks:
	// the SYN makes the flow, and the refusal that comes after lets the
	// held segment through it instead of resetting the new connection.
	if got := r.fate(syn(c, vip(82))); got != "tx" {
		t.Fatalf("a SYN of the held tuple: %s, want forwarded", got)
	}
	_, punts = take(r)
	if len(punts) != 1 {
		t.Fatalf("%d punts, want the held segment's", len(punts))
	}
	r.p.RefuseRoute(&punts[0].Key, r.now)
	tx, _, _ = r.send()
	if len(tx) != 1 || rawTCPFlags(tx[0])&rstFlag != 0 || srcOf(tx[0]).Addr() != netip.MustParseAddr("198.51.100.254") {
		t.Errorf("%d frames after refusing a key with a flow; want the segment, through the flow", len(tx))
	}
	if s := r.p.Stats(); s.MidFlowRefused != 3 || s.ResetsSent != 2 {
		t.Errorf("refused %d, resets %d after the flow came; want still 3, 2", s.MidFlowRefused, s.ResetsSent)
	}
}

// TestMidFlowPuntTimesOut: a mid-flow segment nobody answers for is
// dropped as punt_timeout, like any punt.
func TestMidFlowPuntTimesOut(t *testing.T) {
	r := clusterRig(t)
	r.send(ack(cl(1, 5000), vip(83)))
	r.now += puntTimeout + 1
	_, _, drop := r.send()
	if len(drop) != 1 || r.p.stats.Drops[DropPuntTimeout] != 1 || r.p.HeldPunts() != 0 {
		t.Fatalf("unanswered mid-flow punt: %d dropped, punt_timeout %d", len(drop), r.p.stats.Drops[DropPuntTimeout])
	}
}

// TestMidFlowPuntDoesNotAllocate: holding and punting a mid-flow
// segment, the uplink's collection, the refusal and its reset allocate
// nothing.
func TestMidFlowPuntDoesNotAllocate(t *testing.T) {
	const runs = 200
	r := clusterRig(t)
	frames := make([]nic.Frame, runs+1)
	keys := make([]unit.FlowKey, len(frames))
	for i := range frames {
		c := cl(1+i%200, uint16(10000+i))
		frames[i] = frame(ack(c, vip(82)))
		keys[i] = unit.FlowKey{SrcPort: c.Port, DstPort: 82, Proto: 6}
		copy(keys[i].Src[:], c.Addr.AsSlice())
		copy(keys[i].Dst[:], netip.MustParseAddr("192.0.2.1").AsSlice())
	}
	var punts int
	collect := func(_ []channel.FlowEvent, p []channel.Punt, _ uint64) { punts += len(p) }
	j, refused := 0, 0
	noAllocs(t, runs, func() {
		r.now++
		r.out.Reset()
		r.p.Process(r.now, frames[j:j+1], r.out)
		r.p.TakeOutbox(collect)
		refused += r.p.RefuseRoute(&keys[j], r.now)
		j++
	})
	if punts != len(frames) || refused != len(frames) || r.p.stats.PuntedMidFlow != uint64(len(frames)) {
		t.Errorf("%d punts, %d refused, %d mid-flow punts counted; want %d of each", punts, refused, r.p.stats.PuntedMidFlow, len(frames))
	}
}

// TestMidFlowRouteForeign: a route to a backend the snapshot does not
// have (another unit's connection to a backend that left this unit's
// configuration before it started) makes a flow toward the route's
// address and port, counted under no backend: a new tunnel flow with
// this unit's flow ID, an ipip flow, and a nat connection's whole entry.
func TestMidFlowRouteForeign(t *testing.T) {
	r := clusterRig(t)
	c := cl(1, 7100)
	r.send(ack(c, vip(82)), ack(c, vip(83)), ack(c, vip(80)))
	_, punts := take(r)
	if len(punts) != 3 {
		t.Fatalf("%d punts, want 3", len(punts))
	}
	foreign := netip.MustParseAddr("10.9.9.9")
	for _, pu := range punts {
		route := channel.Route{Op: channel.RouteAdd, Key: pu.Key, Action: unit.Action{Backend: unit.ForeignBackend, PortA: 8080}}
		copy(route.Action.A[:], foreign.AsSlice())
		if r.p.snap.VIPs[pu.VIP].Mode == unit.ModeNAT {
			route.Action.Mode, route.Action.PortB = unit.ModeNAT, 40002
			copy(route.Action.B[:], netip.MustParseAddr("198.51.100.1").AsSlice())
		}
		if err := r.p.AddRoute(&route, r.now); err != nil {
			t.Fatalf("%+v: %v", route, err)
		}
	}
	// tunnel flows wait for the host's mapping when the unit has host
	// streams; this rig has none, so all three leave now.
	tx, _, _ := r.send()
	if len(tx) != 3 {
		t.Fatalf("%d frames left, want the three held segments", len(tx))
	}
	for _, f := range tx {
		if dst := dstOf(f); dst.Addr() != foreign {
			t.Errorf("segment sent to %s, want the foreign backend %s", dst, foreign)
		}
	}
	for _, b := range r.p.stats.Backends {
		if b.NewFlows != 0 || b.Packets != 0 {
			t.Errorf("a configured backend counted a foreign flow: %+v", b)
		}
	}
	// A foreign backend for a mode whose new flow needs the backend's
	// own state (nat without the whole entry) is refused, changing
	// nothing.
	k := punts[0].Key
	k.SrcPort++
	k.DstPort = 80
	if err := r.p.AddRoute(&channel.Route{Op: channel.RouteAdd, Key: k, Action: unit.Action{Backend: unit.ForeignBackend}}, r.now); err == nil {
		t.Error("a new nat flow to a foreign backend was accepted")
	}
}

// TestMidFlowPureACKsSuperseded: while a connection's route is looked
// up, a pure ACK replaces the pure ACK of the connection held before
// it (dropped as ack_superseded): only the latest leaves once the route
// arrives. Segments with data, and FINs, all wait.
func TestMidFlowPureACKsSuperseded(t *testing.T) {
	r := clusterRig(t)
	c := cl(1, 7200)
	pure := func(n uint32) []byte { return pkttest.TCP(c, vip(82), pkttest.ACK, 9, n, pkttest.Opts{}) }
	_, _, drop := r.send(pure(100), pure(200), pure(300))
	if len(drop) != 2 || r.p.HeldPunts() != 1 || r.p.stats.Drops[DropACKSuperseded] != 2 {
		t.Fatalf("three pure ACKs: %d dropped, %d held, %d superseded; want 2, 1, 2", len(drop), r.p.HeldPunts(), r.p.stats.Drops[DropACKSuperseded])
	}
	_, _, drop = r.send(ack(c, vip(82)), finAck(c, vip(82)), pure(400))
	if len(drop) != 1 || r.p.HeldPunts() != 3 {
		t.Fatalf("data, FIN and a pure ACK: %d dropped, %d held; want the older pure ACK dropped, 3 held", len(drop), r.p.HeldPunts())
	}
	_, punts := take(r)
	if len(punts) != 1 {
		t.Fatalf("%d punts, want the first segment's only", len(punts))
	}
	route := channel.Route{Op: channel.RouteAdd, Key: punts[0].Key, Action: unit.Action{Backend: r.p.snap.VIPs[punts[0].VIP].Backends[0]}}
	if err := r.p.AddRoute(&route, r.now); err != nil {
		t.Fatal(err)
	}
	tx, _, _ := r.send()
	if len(tx) != 3 {
		t.Fatalf("%d segments left, want 3", len(tx))
	}
	acks := 0
	for _, f := range tx {
		ip := pkttest.IP(f, false)
		th := ip[int(ip[0]&0xf)*4:]
		if th[13] == ackFlag && len(th) == 20 {
			acks++
			if got := binary.BigEndian.Uint32(th[8:12]); got != 400 {
				t.Errorf("the pure ACK that left acknowledges %d, want the latest, 400", got)
			}
		}
	}
	if acks != 1 {
		t.Errorf("%d pure ACKs left, want 1", acks)
	}
}

// TestMidFlowHeldPerFlow: one connection holds at most maxHeldPerFlow
// segments while its route is looked up; the rest of a moved
// download's burst is dropped (held_per_flow), for the sender to
// retransmit, and another connection's first segment is still held
// and asked about.
func TestMidFlowHeldPerFlow(t *testing.T) {
	r := clusterRig(t)
	c, other := cl(1, 7300), cl(2, 7301)
	var burst [][]byte
	for i := range maxHeldPerFlow + 3 {
		burst = append(burst, pkttest.TCP(c, vip(82), pkttest.ACK, uint32(9+100*i), 1, pkttest.Opts{Payload: make([]byte, 100)}))
	}
	_, _, drop := r.send(burst...)
	if len(drop) != 3 || r.p.HeldPunts() != maxHeldPerFlow || r.p.stats.Drops[DropHeldPerFlow] != 3 {
		t.Fatalf("a burst of %d: %d dropped, %d held, %d held_per_flow; want 3, %d, 3",
			len(burst), len(drop), r.p.HeldPunts(), r.p.stats.Drops[DropHeldPerFlow], maxHeldPerFlow)
	}
	_, _, drop = r.send(ack(other, vip(82)))
	if len(drop) != 0 || r.p.HeldPunts() != maxHeldPerFlow+1 {
		t.Fatalf("another connection's segment: %d dropped, %d held", len(drop), r.p.HeldPunts())
	}
	if _, punts := take(r); len(punts) != 2 {
		t.Fatalf("%d punts, want one per connection", len(punts))
	}
}

// TestMidFlowNATReply: in a cluster unit, a nat reply to a SNAT address
// that no flow expects (a dead unit's address, now routed here) is held
// and punted with NoVIP under the reply's key; the route the control
// process finds comes under the client's key with the whole entry, and
// releases the held reply, which leaves translated back to the client.
func TestMidFlowNATReply(t *testing.T) {
	r := clusterRig(t)
	backend := pkttest.Endpoint{MAC: pkttest.MustMAC(gwMAC), Addr: netip.MustParseAddr("10.1.0.2"), Port: 80}
	snat := pkttest.Endpoint{MAC: pkttest.MustMAC(unitMAC), Addr: netip.MustParseAddr("198.51.100.1"), Port: 40005}
	reply := pkttest.TCP(backend, snat, pkttest.ACK, 7, 9, pkttest.Opts{Payload: []byte("body")})
	r.send(reply)
	_, punts := take(r)
	if len(punts) != 1 || punts[0].VIP != channel.NoVIP || punts[0].Reason != channel.PuntMidFlow || r.p.HeldPunts() != 1 {
		t.Fatalf("punts %+v, %d held; want one mid-flow punt with NoVIP", punts, r.p.HeldPunts())
	}
	if src := punts[0].Key.SrcAddr(); src != backend.Addr || punts[0].Key.DstPort != 40005 {
		t.Fatalf("punt key %+v: want the reply's", punts[0].Key)
	}
	c := cl(3, 5000)
	client := unit.FlowKey{Proto: 6, SrcPort: c.Port, DstPort: 80}
	copy(client.Src[:], c.Addr.AsSlice())
	copy(client.Dst[:], vip(80).Addr.AsSlice())
	a := unit.Action{Mode: unit.ModeNAT, PortA: 80, PortB: 40005}
	for _, v := range r.p.snap.VIPs {
		if v != nil && v.Mode == unit.ModeNAT {
			a.Backend = v.Backends[1]
		}
	}
	copy(a.A[:], backend.Addr.AsSlice())
	copy(a.B[:], snat.Addr.AsSlice())
	if err := r.p.AddRoute(&channel.Route{Op: channel.RouteAdd, Key: client, Action: a}, r.now); err != nil {
		t.Fatal(err)
	}
	tx, _, _ := r.send()
	if len(tx) != 1 || r.p.HeldPunts() != 0 {
		t.Fatalf("%d frames left, %d held; want the reply", len(tx), r.p.HeldPunts())
	}
	if src, dst := srcOf(tx[0]), dstOf(tx[0]); src != netip.AddrPortFrom(vip(80).Addr, 80) || dst != netip.AddrPortFrom(c.Addr, c.Port) {
		t.Errorf("reply left %s → %s, want from the VIP to the client %s:%d", src, dst, c.Addr, c.Port)
	}
	// Outside a cluster the same reply is reset, as before.
	plain := newRig(t, loadConfig(t, 1024, "1024-65535"))
	plain.p.EnableOutbox(make(chan struct{}, 1))
	if got := plain.fate(reply); got == "held" {
		t.Error("a unit outside a cluster held a nat reply")
	}
}
