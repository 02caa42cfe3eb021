package forwarder

import (
	"context"
	"encoding/json"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tetherlb/tether/api/unit"
	"github.com/tetherlb/tether/config"
	"github.com/tetherlb/tether/dataplane"
	"github.com/tetherlb/tether/dataplane/channel"
	"github.com/tetherlb/tether/dataplane/header"
	"github.com/tetherlb/tether/internal/pkttest"
	"github.com/tetherlb/tether/nic"
)

// These tests run a forwarder (real workers on an in-memory port) whose
// uplink connects to a fake control process: a real channel socket the
// test listens on and drives message by message. Waits are for messages
// or packets, bounded by wait.
const wait = 10 * time.Second

const uplinkConfig = `
unit: {name: u1, address4: 198.51.100.254, mac: "02:00:00:00:00:01"}
l2: {gateway_mac: "02:00:00:00:00:fe"}
forwarder: {flows: {max: 4096}}
vips:
  - name: web
    address: 192.0.2.1
    port: 80
    protocol: tcp
    mode: halfnat
    punt: true
    backends: [{name: b1, address: 10.1.0.1}, {name: b2, address: 10.1.0.2}]
  - name: api
    address: 192.0.2.2
    port: 443
    protocol: tcp
    mode: halfnat
    backends: [{name: a1, address: 10.1.1.1}]
`

type fakeControl struct {
	t    *testing.T
	f    *Forwarder
	port *chanPort
	conn *channel.Conn
	msgs chan []byte
	seq  uint32
	asm  channel.Assembler
}

// startUplink runs a forwarder on uplinkConfig connected to a fake
// control process, and returns once the forwarder's hello arrived (its
// workers punt from then on).
func startUplink(t *testing.T) *fakeControl {
	t.Helper()
	return startUplinkWith(t, uplinkConfig)
}

// startUplinkWith is startUplink on another configuration.
func startUplinkWith(t *testing.T, cfg string) *fakeControl {
	t.Helper()
	c, err := config.Parse([]byte(cfg))
	if err != nil {
		t.Fatal(err)
	}
	port := newChanPort()
	f, err := NewOnPorts(c, []nic.Port{port}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "ch.sock")
	l, err := channel.Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	f.ConnectControl(path)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { f.Run(ctx); close(done) }()
	accepted := make(chan *channel.Conn, 1)
	go func() {
		conn, err := channel.Accept(l)
		if err == nil {
			accepted <- conn
		}
	}()
	var conn *channel.Conn
	select {
	case conn = <-accepted:
	case <-time.After(wait):
		t.Fatal("the forwarder did not connect")
	}
	fc := &fakeControl{t: t, f: f, port: port, conn: conn, msgs: make(chan []byte, 256)}
	go func() {
		defer close(fc.msgs)
		for {
			m, err := conn.Recv()
			if err != nil {
				return
			}
			fc.msgs <- append([]byte(nil), m...)
		}
	}()
	t.Cleanup(func() { cancel(); conn.Close(); l.Close(); <-done })
	_, p := fc.expect(channel.THello)
	hello, err := channel.DecodeHello(p)
	if err != nil || hello.Role != channel.RoleForwarder || hello.Name != "u1" || hello.Workers != 1 {
		t.Fatalf("hello %+v, %v", hello, err)
	}
	return fc
}

// expect returns the next message of type typ, skipping flow events
// (the test asks for those with expect too).
func (fc *fakeControl) expect(typ channel.Type) (channel.Header, []byte) {
	fc.t.Helper()
	for {
		select {
		case m, ok := <-fc.msgs:
			if !ok {
				fc.t.Fatalf("the forwarder closed the channel; want a %s", typ)
			}
			h, p, err := channel.ParseHeader(m)
			if err != nil {
				fc.t.Fatalf("a malformed message from the forwarder: %v", err)
			}
			if h.Type == typ {
				return h, p
			}
			if h.Type != channel.TFlowEvent {
				fc.t.Fatalf("got a %s, want a %s", h.Type, typ)
			}
		case <-time.After(wait):
			fc.t.Fatalf("no %s from the forwarder", typ)
		}
	}
}

// call makes a call and returns its answer's body and error text.
func (fc *fakeControl) call(method string, body []byte) ([]byte, string) {
	fc.t.Helper()
	fc.seq++
	seq := fc.seq
	for _, m := range channel.AppendCalls(nil, seq, method, body) {
		if err := fc.conn.Send(m); err != nil {
			fc.t.Fatal(err)
		}
	}
	for {
		h, p := fc.expect(channel.TReturn)
		r, err := channel.DecodeReturn(p)
		if err != nil {
			fc.t.Fatal(err)
		}
		out, done, err := fc.asm.Add(h.Seq, r.Chunk, r.Chunks, r.Body)
		if err != nil {
			fc.t.Fatal(err)
		}
		if done && h.Seq == seq {
			return out, r.Err
		}
	}
}

func (fc *fakeControl) callJSON(method string, in, out any) string {
	fc.t.Helper()
	body, err := json.Marshal(in)
	if err != nil {
		fc.t.Fatal(err)
	}
	reply, errText := fc.call(method, body)
	if errText == "" && out != nil {
		if err := json.Unmarshal(reply, out); err != nil {
			fc.t.Fatalf("%s reply: %v", method, err)
		}
	}
	return errText
}

func (fc *fakeControl) send(m []byte) {
	fc.t.Helper()
	if err := fc.conn.Send(m); err != nil {
		fc.t.Fatal(err)
	}
}

// reload sends a configuration and returns the reply or error text.
func (fc *fakeControl) reload(text string, edit func(*config.Config)) (unit.ReloadReply, string) {
	fc.t.Helper()
	c, err := config.Parse([]byte(text))
	if err != nil {
		fc.t.Fatal(err)
	}
	if edit != nil {
		edit(c)
	}
	body, err := config.Encode(c)
	if err != nil {
		fc.t.Fatal(err)
	}
	out, errText := fc.call(unit.CallReload, body)
	var r unit.ReloadReply
	if errText == "" {
		if err := json.Unmarshal(out, &r); err != nil {
			fc.t.Fatal(err)
		}
	}
	return r, errText
}

func (fc *fakeControl) report() unit.Report {
	fc.t.Helper()
	var r unit.Report
	if e := fc.callJSON(unit.CallReport, nil, &r); e != "" {
		fc.t.Fatal(e)
	}
	return r
}

// packet waits for a frame the forwarder sends and returns its IPv4
// destination and TCP destination port.
func (fc *fakeControl) packet() (netip.Addr, uint16) {
	fc.t.Helper()
	select {
	case b := <-fc.port.out:
		ip := header.IPv4(b[header.EthernetSize:])
		dst, _ := netip.AddrFromSlice(ip.Dst())
		return dst, header.TCP(b[header.EthernetSize+int(ip.HeaderLength()):]).DstPort()
	case <-time.After(wait):
		fc.t.Fatal("the forwarder sent nothing")
	}
	return netip.Addr{}, 0
}

// startReloaded starts a forwarder on cfg with a fake control process
// that has it run cfg, and returns both with the forwarder's IDs.
func startReloaded(t *testing.T, cfg string) (*fakeControl, unit.ReloadReply) {
	t.Helper()
	fc := startUplinkWith(t, cfg)
	ids, errText := fc.reload(cfg, nil)
	if errText != "" {
		t.Fatal(errText)
	}
	return fc, ids
}

// testEnds are the client and the VIP (192.0.2.1:80) of the uplink
// tests' TCP segments.
func testEnds() (client, vip pkttest.Endpoint) {
	return pkttest.Endpoint{MAC: pkttest.MustMAC("02:00:00:00:00:fe"), Addr: netip.MustParseAddr("203.0.113.7"), Port: 40000},
		pkttest.Endpoint{MAC: pkttest.MustMAC("02:00:00:00:00:01"), Addr: netip.MustParseAddr("192.0.2.1"), Port: 80}
}

// punts is how many punts went to the control process: the uplink's and
// those the workers sent themselves.
func (fc *fakeControl) punts() uint64 {
	fc.t.Helper()
	s, err := fc.f.Summary(context.Background())
	if err != nil {
		fc.t.Fatal(err)
	}
	return fc.f.UplinkStats().Punts + s.Stats.PuntsSentDirect
}

func clientSYN(src string, sport uint16, vip string, vport uint16) []byte {
	return pkttest.TCP(pkttest.Endpoint{MAC: pkttest.MustMAC("02:00:00:00:00:fe"), Addr: netip.MustParseAddr(src), Port: sport},
		pkttest.Endpoint{MAC: pkttest.MustMAC("02:00:00:00:00:01"), Addr: netip.MustParseAddr(vip), Port: vport}, pkttest.SYN, 1, 0, pkttest.Opts{})
}

// TestUplinkPuntAndRoute: a new flow on a punt VIP is held and punted
// with Maglev's choice; the route the control process answers with, to
// the other backend, is what the held packet and the flow follow, and
// the flow event says so.
func TestUplinkPuntAndRoute(t *testing.T) {
	fc := startUplink(t)
	ids, errText := fc.reload(uplinkConfig, nil)
	if errText != "" {
		t.Fatal(errText)
	}
	fc.port.in <- clientSYN("203.0.113.7", 40000, "192.0.2.1", 80)
	_, p := fc.expect(channel.TPunt)
	pu, err := channel.DecodePunt(p)
	if err != nil {
		t.Fatal(err)
	}
	b1, b2 := ids.Backends[unit.BackendKey{VIP: "web", Backend: "b1"}], ids.Backends[unit.BackendKey{VIP: "web", Backend: "b2"}]
	if pu.VIP != ids.VIPs["web"] || (pu.Choice != b1 && pu.Choice != b2) || pu.Key.SrcAddr() != netip.MustParseAddr("203.0.113.7") {
		t.Fatalf("punt %+v; want VIP %d and a choice of %d or %d", pu, ids.VIPs["web"], b1, b2)
	}
	other, otherAddr := b1, "10.1.0.1"
	if pu.Choice == b1 {
		other, otherAddr = b2, "10.1.0.2"
	}
	fc.send(channel.AppendRoute(nil, 1, &channel.Route{Op: channel.RouteAdd, Worker: pu.Worker, Key: pu.Key, Action: unit.Action{Backend: other}}))
	if dst, port := fc.packet(); dst != netip.MustParseAddr(otherAddr) || port != 80 {
		t.Fatalf("the held packet went to %s:%d, want %s:80", dst, port, otherAddr)
	}
	_, p = fc.expect(channel.TFlowEvent)
	evs, err := channel.DecodeFlowEvents(nil, p)
	if err != nil || len(evs) != 1 || evs[0].Kind != channel.FlowOpened || evs[0].Action.Backend != other || evs[0].Action.Mode != unit.ModeHalfNAT {
		t.Fatalf("flow events %+v, %v", evs, err)
	}
	// A later packet of the flow follows the route without a punt.
	fc.port.in <- clientSYN("203.0.113.7", 40000, "192.0.2.1", 80)
	if dst, _ := fc.packet(); dst != netip.MustParseAddr(otherAddr) {
		t.Fatalf("a retransmitted SYN went to %s", dst)
	}
	if s := fc.f.UplinkStats(); !s.Connected || fc.punts() != 1 || s.Routes != 1 || s.RouteErrors != 0 {
		t.Errorf("uplink stats %+v, %d punts", s, fc.punts())
	}
}

// TestUplinkReload: the reload call takes a checked configuration or
// refuses it whole, the running one staying.
func TestUplinkReload(t *testing.T) {
	fc := startUplink(t)
	first, errText := fc.reload(uplinkConfig, nil)
	if errText != "" {
		t.Fatal(errText)
	}
	cases := []struct {
		name    string
		body    func() []byte
		wantErr string // "" accepted
	}{
		{"a weight changes", func() []byte {
			c, _ := config.Parse([]byte(uplinkConfig))
			w := 3
			c.VIPs[0].Backends[0].Weight = &w
			b, _ := config.Encode(c)
			return b
		}, ""},
		{"the workers change", func() []byte {
			c, _ := config.Parse([]byte(uplinkConfig))
			c.Forwarder.Workers = 2
			b, _ := config.Encode(c)
			return b
		}, "forwarder.workers"},
		{"an invalid mode", func() []byte {
			c, _ := config.Parse([]byte(uplinkConfig))
			c.VIPs[1].Mode = "sideways"
			b, _ := config.Encode(c)
			return b
		}, "vips[1].mode"},
		{"not a configuration", func() []byte { return []byte(`{"VIPs": "many"}`) }, "reload"},
		{"an unknown key", func() []byte { return []byte(`{"Colour": "blue"}`) }, "unknown field"},
	}
	gen := first.Generation
	for _, tc := range cases {
		out, errText := fc.call(unit.CallReload, tc.body())
		rep := fc.report()
		if tc.wantErr == "" {
			var r unit.ReloadReply
			if errText != "" || json.Unmarshal(out, &r) != nil || r.Generation != gen+1 || len(r.Backends) != 3 {
				t.Errorf("%s: reply %s %q", tc.name, out, errText)
			}
			gen = r.Generation
			if rep.Backends[0].Weight != 3 {
				t.Errorf("%s: b1's weight is %d", tc.name, rep.Backends[0].Weight)
			}
		} else if !strings.Contains(errText, tc.wantErr) {
			t.Errorf("%s: error %q, want it to name %q", tc.name, errText, tc.wantErr)
		}
		if rep.Generation != gen {
			t.Errorf("%s: the forwarder runs generation %d, want %d", tc.name, rep.Generation, gen)
		}
	}
}

// TestUplinkFlowsRestoreExplain: a route with a whole action puts an
// entry back exactly (a restarted forwarder's flows), the flows call
// lists it, explain names its backend, and a delete removes it; a
// malformed message is counted and the link stays.
func TestUplinkFlowsRestoreExplain(t *testing.T) {
	fc := startUplink(t)
	ids, _ := fc.reload(uplinkConfig, nil)
	a1 := ids.Backends[unit.BackendKey{VIP: "api", Backend: "a1"}]
	k := unit.FlowKey{SrcPort: 5555, DstPort: 443, Proto: 6}
	copy(k.Src[:], []byte{203, 0, 113, 9})
	copy(k.Dst[:], []byte{192, 0, 2, 2})
	// As a flow event of an established half-NAT pair carries it.
	act := unit.Action{Mode: unit.ModeHalfNAT, Backend: a1, PortA: 443, PortB: 5555, Flags: unit.FlowEstablished | unit.FlowPeer}
	copy(act.A[:], []byte{10, 1, 1, 1})
	copy(act.B[:], []byte{203, 0, 113, 9})
	fc.send(channel.AppendRoute(nil, 1, &channel.Route{Op: channel.RouteAdd, Worker: channel.AnyWorker, Key: k, Action: act}))
	fc.send([]byte("not a channel message"))
	fc.send(channel.AppendBarrier(nil, 99))
	if h, _ := fc.expect(channel.TAck); h.Seq != 99 {
		t.Fatalf("ack %d, want 99", h.Seq)
	}
	var page unit.FlowsReply
	if e := fc.callJSON(unit.CallFlows, unit.FlowsRequest{Backend: -1, VIP: "192.0.2.2:443"}, &page); e != "" {
		t.Fatal(e)
	}
	if page.Matched != 1 || len(page.Flows) != 1 || page.Flows[0].Key != k || page.Flows[0].Action != act {
		t.Fatalf("flows %+v, want the restored entry exactly", page)
	}
	var e unit.Explanation
	if errText := fc.callJSON(unit.CallExplain, unit.ExplainRequest{Proto: 6, Src: netip.MustParseAddrPort("203.0.113.9:5555"),
		Dst: netip.MustParseAddrPort("192.0.2.2:443")}, &e); errText != "" {
		t.Fatal(errText)
	}
	if !e.Existing || e.Backend != "a1" || e.VIP != "api" || e.Mode != unit.ModeHalfNAT {
		t.Errorf("explain %+v", e)
	}
	fc.send(channel.AppendRoute(nil, 2, &channel.Route{Op: channel.RouteDelete, Worker: channel.AnyWorker, Key: k}))
	fc.send(channel.AppendBarrier(nil, 100))
	fc.expect(channel.TAck)
	if e := fc.callJSON(unit.CallFlows, unit.FlowsRequest{Backend: -1}, &page); e != "" || page.Matched != 0 {
		t.Fatalf("after the delete: %+v %s", page, e)
	}
	if s := fc.f.UplinkStats(); s.BadMessages != 1 {
		t.Errorf("bad messages %d, want 1", s.BadMessages)
	}
	if _, errText := fc.call("colour", nil); !strings.Contains(errText, "unknown call") {
		t.Errorf("an unknown call: %q", errText)
	}
}

// TestUplinkFlowWalk: the control process reads a large table page by
// page with a cursor while flows come and go between the pages; every
// flow that lives through the walk is read exactly once.
func TestUplinkFlowWalk(t *testing.T) {
	fc := startUplinkWith(t, strings.Replace(uplinkConfig, "max: 4096", "max: 65536", 1))
	ids, _ := fc.reload(strings.Replace(uplinkConfig, "max: 4096", "max: 65536", 1), nil)
	a1 := ids.Backends[unit.BackendKey{VIP: "api", Backend: "a1"}]
	seq := uint32(1)
	route := func(op uint8, i int) {
		k := unit.FlowKey{SrcPort: uint16(i), DstPort: 443, Proto: 6}
		copy(k.Src[:], []byte{203, 0, byte(i >> 16), byte(i >> 8)})
		copy(k.Dst[:], []byte{192, 0, 2, 2})
		act := unit.Action{Mode: unit.ModeHalfNAT, Backend: a1, PortA: 443, PortB: uint16(i), Flags: unit.FlowEstablished}
		copy(act.A[:], []byte{10, 1, 1, 1})
		copy(act.B[:], k.Src[:4])
		seq++
		fc.send(channel.AppendRoute(nil, seq, &channel.Route{Op: op, Worker: channel.AnyWorker, Key: k, Action: act}))
	}
	barrier := func() {
		seq++
		fc.send(channel.AppendBarrier(nil, seq))
		fc.expect(channel.TAck)
	}
	id := func(k unit.FlowKey) int { return int(k.Src[2])<<16 | int(k.Src[3])<<8 | int(k.SrcPort&0xff) }
	const n = 20000
	survivors := map[int]bool{}
	for i := range n {
		route(channel.RouteAdd, i)
		survivors[i] = true
	}
	barrier()
	seen := map[int]int{}
	pages := 0
	next, added := 0, n
	for cur := &(unit.FlowCursor{}); cur != nil; pages++ {
		var page unit.FlowsReply
		if e := fc.callJSON(unit.CallFlows, unit.FlowsRequest{Backend: -1, Limit: 10, Cursor: cur}, &page); e != "" {
			t.Fatal(e)
		}
		for _, f := range page.Flows {
			seen[id(f.Key)]++
		}
		cur = page.Next
		// Churn: 500 go, 500 come.
		for range 500 {
			route(channel.RouteDelete, next)
			delete(survivors, next)
			next++
			route(channel.RouteAdd, added)
			added++
		}
		barrier()
	}
	if pages < 3 {
		t.Fatalf("the walk took %d pages: the test wants several", pages)
	}
	for i := range survivors {
		if seen[i] != 1 {
			t.Fatalf("flow %d, alive throughout, read %d times in %d pages", i, seen[i], pages)
		}
	}
	for i, c := range seen {
		if c != 1 {
			t.Fatalf("flow %d read %d times", i, c)
		}
	}
	var bad unit.FlowsReply
	if e := fc.callJSON(unit.CallFlows, unit.FlowsRequest{Backend: -1, Cursor: &unit.FlowCursor{Worker: 7}}, &bad); !strings.Contains(e, "cursor") {
		t.Errorf("a cursor past the workers: %q", e)
	}
}

// TestUplinkCallsDoNotHoldUpMessages: a call that waits for a busy
// worker leaves the receive loop free for the messages behind it, and a
// control process that queues more calls than the forwarder keeps is
// told it is busy instead of waiting without end.
func TestUplinkCallsDoNotHoldUpMessages(t *testing.T) {
	fc := startUplink(t)
	fc.reload(uplinkConfig, nil)
	stuck := make(chan struct{})
	if err := fc.f.workers[0].Post(context.Background(), func(*dataplane.Pipeline) { <-stuck }); err != nil {
		t.Fatal(err)
	}
	body, _ := json.Marshal(unit.FlowsRequest{Backend: -1})
	var seqs []uint32
	for range maxQueuedCalls + 2 { // one in the call loop, the queue full, one more
		fc.seq++
		seqs = append(seqs, fc.seq)
		for _, m := range channel.AppendCalls(nil, fc.seq, unit.CallFlows, body) {
			fc.send(m)
		}
	}
	// A call too many is refused while the worker is still stuck (the
	// call loop may not have taken the first yet: then two are).
	h, p := fc.expect(channel.TReturn)
	r, err := channel.DecodeReturn(p)
	if err != nil || h.Seq < seqs[len(seqs)-2] || !strings.Contains(r.Err, "busy") {
		t.Fatalf("first answer: call %d, %q; want one of the last calls refused as busy", h.Seq, r.Err)
	}
	// And a message behind the calls is handled.
	fc.send([]byte("not a channel message"))
	deadline := time.Now().Add(wait)
	for fc.f.UplinkStats().BadMessages != 1 {
		if time.Now().After(deadline) {
			t.Fatal("the receive loop waited for the calls")
		}
		time.Sleep(time.Millisecond) // polling a counter
	}
	close(stuck)
	answered := 1
	for answered < len(seqs) {
		h, p := fc.expect(channel.TReturn)
		r, err := channel.DecodeReturn(p)
		if err != nil || r.Err != "" && !(h.Seq == seqs[len(seqs)-2] && strings.Contains(r.Err, "busy")) {
			t.Fatalf("call %d: %v %q", h.Seq, err, r.Err)
		}
		answered++
	}
}

// clusterUplinkConfig is a unit of a cluster with a tunnel VIP: its
// workers hand mid-flow segments to the control process.
const clusterUplinkConfig = `
unit: {name: u1, address4: 198.51.100.254, mac: "02:00:00:00:00:01"}
l2: {gateway_mac: "02:00:00:00:00:fe"}
forwarder: {flows: {max: 4096}}
cluster: {key_file: /nonexistent/cluster.key, tls: {ca: /nonexistent/ca.crt, cert: /nonexistent/u.crt, key: /nonexistent/u.key}}
vips:
  - name: tun
    address: 192.0.2.1
    port: 80
    protocol: tcp
    mode: tunnel
    backends: [{name: b1, address: 10.1.0.1}, {name: b2, address: 10.1.0.2}]
`

// TestUplinkMidFlowRefuseAndRoute: in a cluster unit, an ACK no flow
// expects reaches the control process as a mid-flow punt; a refusal
// sends the client a reset, and a route sends the next segment to the
// route's backend.
func TestUplinkMidFlowRefuseAndRoute(t *testing.T) {
	fc, ids := startReloaded(t, clusterUplinkConfig)
	client, vip := testEnds()
	segment := func() []byte {
		return pkttest.TCP(client, vip, pkttest.ACK, 100, 200, pkttest.Opts{Payload: []byte("x")})
	}
	punted := func() channel.Punt {
		t.Helper()
		_, p := fc.expect(channel.TPunt)
		pu, err := channel.DecodePunt(p)
		if err != nil {
			t.Fatal(err)
		}
		if pu.Reason != channel.PuntMidFlow || pu.VIP != ids.VIPs["tun"] || pu.Key.SrcPort != client.Port {
			t.Fatalf("punt %+v; want a mid-flow punt of VIP %d", pu, ids.VIPs["tun"])
		}
		return pu
	}
	fc.port.in <- segment()
	pu := punted()
	fc.send(channel.AppendRoute(nil, 1, &channel.Route{Op: channel.RouteRefuse, Worker: pu.Worker, Key: pu.Key}))
	if dst, port := fc.packet(); dst != client.Addr || port != client.Port {
		t.Fatalf("after the refusal a frame went to %s:%d, want the reset to the client", dst, port)
	}
	fc.port.in <- segment()
	pu = punted()
	b2 := ids.Backends[unit.BackendKey{VIP: "tun", Backend: "b2"}]
	fc.send(channel.AppendRoute(nil, 2, &channel.Route{Op: channel.RouteAdd, Worker: pu.Worker, Key: pu.Key, Action: unit.Action{Backend: b2}}))
	if dst, _ := fc.packet(); dst != netip.MustParseAddr("10.1.0.2") {
		t.Fatalf("the routed segment went to %s, want 10.1.0.2", dst)
	}
	r := fc.report()
	if r.PuntedMidFlow != 2 || r.MidFlowRefused != 1 || r.ResetsSent != 1 || r.Drops["no_route"] != 0 {
		t.Errorf("report: punted_mid_flow %d, mid_flow_refused %d, resets_sent %d, no_route %d; want 2, 1, 1, 0",
			r.PuntedMidFlow, r.MidFlowRefused, r.ResetsSent, r.Drops["no_route"])
	}
}
