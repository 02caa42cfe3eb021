package control

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tetherlb/tether/api/unit"
	"github.com/tetherlb/tether/config"
	"github.com/tetherlb/tether/dataplane/channel"
)

// These tests run the control process against a fake forwarder: a real
// channel connection to the control process's socket, driven message by
// message by the test. Every wait is for a message or a state the test
// names, bounded by wait.
const wait = 10 * time.Second

const testConfig = `
unit: {name: u1}
vips:
  - name: web
    address: 192.0.2.10
    port: 80
    protocol: tcp
    mode: halfnat
    punt: true
    backends:
      - {name: b0, address: 10.0.0.10, port: 8080}
      - {name: b1, address: 10.0.0.11, port: 8080}
  - name: api
    address: 192.0.2.11
    port: 443
    protocol: tcp
    mode: halfnat
    punt: true
    health: {source: agent}
    backends:
      - {name: a0, address: 10.0.1.10, weight: 1}
      - {name: a1, address: 10.0.1.11, weight: 3}
`

// IDs the fake forwarder gives, unlike the order of the file, so that a
// decision that went through names instead of IDs shows.
var fakeIDs = unit.ReloadReply{Generation: 7,
	VIPs: map[string]uint32{"web": 3, "api": 5},
	Backends: map[unit.BackendKey]uint32{
		{VIP: "web", Backend: "b0"}: 40, {VIP: "web", Backend: "b1"}: 41,
		{VIP: "api", Backend: "a0"}: 50, {VIP: "api", Backend: "a1"}: 51,
	}}

// startControl runs a control process on the configuration text in a
// temporary directory and returns it with its configuration file.
func startControl(t *testing.T, text string) (*Control, string) {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "tether.yaml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, raw, err := config.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	c, err := New(Options{ConfigPath: path, Config: cfg, Raw: raw, RunDir: filepath.Join(dir, "run"), Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return c, path
}

// fakeForwarder is the forwarder's end of the channel, driven by a test.
type fakeForwarder struct {
	t    *testing.T
	conn *channel.Conn
	msgs chan []byte
	seq  uint32
	asm  channel.Assembler
}

// connectFake dials the control process's socket as forwarder pid of
// unit name and exchanges hellos.
func connectFake(t *testing.T, c *Control, pid uint32, name string) *fakeForwarder {
	t.Helper()
	path := filepath.Join(c.opts.RunDir, ChannelSocket)
	var conn *channel.Conn
	deadline := time.Now().Add(wait)
	for {
		var err error
		if conn, err = channel.Dial(path); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the control process's socket: %v", err)
		}
		time.Sleep(10 * time.Millisecond) // the control process is still starting: nothing to wait on but the socket
	}
	f := &fakeForwarder{t: t, conn: conn, msgs: make(chan []byte, 64)}
	go func() {
		defer close(f.msgs)
		for {
			m, err := conn.Recv()
			if err != nil {
				return
			}
			f.msgs <- append([]byte(nil), m...)
		}
	}()
	t.Cleanup(func() { conn.Close() })
	f.send(channel.AppendHello(nil, f.next(), &channel.Hello{Role: channel.RoleForwarder, PID: pid, Workers: 2, Name: name}))
	return f
}

func (f *fakeForwarder) next() uint32 { f.seq++; return f.seq }

func (f *fakeForwarder) send(m []byte) {
	f.t.Helper()
	if err := f.conn.Send(m); err != nil {
		f.t.Fatal(err)
	}
}

// recv returns the next message from the control process; ok is false
// when the control process closed the connection.
func (f *fakeForwarder) recv() (channel.Header, []byte, bool) {
	f.t.Helper()
	select {
	case m, ok := <-f.msgs:
		if !ok {
			return channel.Header{}, nil, false
		}
		h, p, err := channel.ParseHeader(m)
		if err != nil {
			f.t.Fatalf("a malformed message from the control process: %v", err)
		}
		return h, p, true
	case <-time.After(wait):
		f.t.Fatal("the control process sent nothing")
	}
	return channel.Header{}, nil, false
}

// expect returns the next message, which must be of type typ.
func (f *fakeForwarder) expect(typ channel.Type) (channel.Header, []byte) {
	f.t.Helper()
	h, p, ok := f.recv()
	if !ok {
		f.t.Fatalf("the control process closed the connection; want a %s", typ)
	}
	if h.Type != typ {
		f.t.Fatalf("got a %s, want a %s", h.Type, typ)
	}
	return h, p
}

// expectCall returns the next call, which must be method, and its body.
func (f *fakeForwarder) expectCall(method string) (uint32, []byte) {
	f.t.Helper()
	for {
		h, p := f.expect(channel.TCall)
		c, err := channel.DecodeCall(p)
		if err != nil {
			f.t.Fatal(err)
		}
		body, done, err := f.asm.Add(h.Seq, c.Chunk, c.Chunks, c.Body)
		if err != nil {
			f.t.Fatal(err)
		}
		if !done {
			continue
		}
		if c.Method != method {
			f.t.Fatalf("got a %s call, want %s", c.Method, method)
		}
		return h.Seq, body
	}
}

// answer returns a call: out as JSON, or the error text.
func (f *fakeForwarder) answer(seq uint32, out any, errText string) {
	f.t.Helper()
	var body []byte
	if out != nil {
		var err error
		if body, err = json.Marshal(out); err != nil {
			f.t.Fatal(err)
		}
	}
	for _, m := range channel.AppendReturns(nil, seq, errText, body) {
		f.send(m)
	}
}

// expectReload answers the reload call that follows a hello or a
// change, and returns the configuration the forwarder was told to run.
func (f *fakeForwarder) expectReload(reply unit.ReloadReply, errText string) *config.Config {
	f.t.Helper()
	seq, body := f.expectCall(unit.CallReload)
	cfg, err := config.Decode(body)
	if err != nil {
		f.t.Fatalf("the reload call's configuration: %v", err)
	}
	if errText != "" {
		f.answer(seq, nil, errText)
	} else {
		f.answer(seq, reply, "")
	}
	return cfg
}

// handshake completes a new forwarder's connection: hello, the running
// configuration, and the flows call of a control process that has not
// seen this forwarder's flows, answered with flows.
func (f *fakeForwarder) handshake(flows []unit.FlowRecord) *config.Config {
	f.t.Helper()
	f.expect(channel.THello)
	cfg := f.expectReload(fakeIDs, "")
	seq, _ := f.expectCall(unit.CallFlows)
	f.answer(seq, unit.FlowsReply{Flows: flows, Matched: len(flows)}, "")
	return cfg
}

func (f *fakeForwarder) punt(vip, choice uint32, key unit.FlowKey) {
	f.send(channel.AppendPunt(nil, f.next(), &channel.Punt{Worker: 1, Reason: channel.PuntNewFlow, VIP: vip, Choice: choice, Key: key, Frame: []byte{0x45}}))
}

// waitFor polls the control process's status until cond holds.
func waitFor(t *testing.T, c *Control, what string, cond func(unit.Status) bool) unit.Status {
	t.Helper()
	deadline := time.Now().Add(wait)
	for {
		s := c.Status(context.Background())
		if cond(s) {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: status stayed %+v", what, s)
		}
		time.Sleep(5 * time.Millisecond) // polling a state, not ordering events
	}
}

func key(src byte, sport uint16, dst byte, dport uint16) unit.FlowKey {
	k := unit.FlowKey{SrcPort: sport, DstPort: dport, Proto: 6}
	copy(k.Src[:], []byte{198, 51, 100, src})
	copy(k.Dst[:], []byte{192, 0, 2, dst})
	return k
}

// TestPuntDecisions: a punt is answered with a route naming the
// forwarder's backend ID: Maglev's choice for a VIP without allotments,
// an allotment's token for a health-managed VIP; a punt nobody can
// serve, or for a VIP the control process does not know, gets no route.
func TestPuntDecisions(t *testing.T) {
	c, _ := startControl(t, testConfig)
	f := connectFake(t, c, 100, "u1")
	sent := f.handshake(nil)
	if len(sent.VIPs) != 2 || sent.VIPs[1].Health.Source != config.SourceAgent {
		t.Fatalf("the forwarder got %d VIPs", len(sent.VIPs))
	}
	waitFor(t, c, "the forwarder's IDs", func(s unit.Status) bool { return s.Generation == fakeIDs.Generation })

	cases := []struct {
		name      string
		vip       uint32
		choice    uint32
		wantRoute bool
		want      []uint32 // the backends the route may name
	}{
		{"Maglev's choice stands", 3, 41, true, []uint32{41}},
		{"no backend takes new flows", 3, channel.NoChoice, false, nil},
		{"a VIP the control process does not know", 9, 40, false, nil},
		// api's backends are unreported but within the startup grace, so
		// the allotment shares by weight: both may be chosen, by ID.
		{"an allotment's token decides", 5, 50, true, []uint32{50, 51}},
	}
	for i, tc := range cases {
		before := c.Status(context.Background()).Punts
		k := key(byte(i+1), 40000, 10, 80)
		f.punt(tc.vip, tc.choice, k)
		if !tc.wantRoute {
			after := waitFor(t, c, tc.name, func(s unit.Status) bool { return s.Punts != before }).Punts
			if after.Decided != before.Decided {
				t.Errorf("%s: decided %+v", tc.name, after)
			}
			continue
		}
		_, p := f.expect(channel.TRoute)
		r, err := channel.DecodeRoute(p)
		if err != nil {
			t.Fatal(err)
		}
		if r.Op != channel.RouteAdd || r.Key != k || r.Worker != 1 || r.Action.Mode != 0 || !contains(tc.want, r.Action.Backend) {
			t.Errorf("%s: route %+v, want an add of the punted key to one of %v", tc.name, r, tc.want)
		}
		// The decision is counted once the route is sent.
		waitFor(t, c, tc.name+" counted", func(s unit.Status) bool { return s.Punts.Decided == before.Decided+1 })
	}
	// Tokens follow the weights 1:3 over many punts.
	n := map[uint32]int{}
	for i := range 400 {
		f.punt(5, 50, key(200, uint16(1000+i), 11, 443))
		_, p := f.expect(channel.TRoute)
		r, _ := channel.DecodeRoute(p)
		n[r.Action.Backend]++
	}
	if n[50] != 100 || n[51] != 300 {
		t.Errorf("400 punts to api went %v, want 100 to a0 (ID 50) and 300 to a1 (ID 51)", n)
	}
	s := waitFor(t, c, "402 decisions counted", func(s unit.Status) bool { return s.Punts.Decided == 402 }).Punts
	if s.NoBackend != 1 || s.Refused != 1 {
		t.Errorf("punt counters %+v", s)
	}
}

func contains(s []uint32, v uint32) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// TestReload: a changed file goes to the forwarder as a whole checked
// configuration; the forwarder's refusal leaves everything as it was; an
// invalid file never reaches the forwarder; and an operator's drain
// reaches the forwarder as the backend's state.
func TestReload(t *testing.T) {
	c, path := startControl(t, testConfig)
	f := connectFake(t, c, 100, "u1")
	f.handshake(nil)
	waitFor(t, c, "the forwarder's IDs", func(s unit.Status) bool { return s.Generation == 7 })
	write := func(text string) {
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	reload := func() chan error {
		ch := make(chan error, 1)
		go func() { ch <- c.Reload(context.Background()) }()
		return ch
	}

	// Accepted.
	write(strings.Replace(testConfig, "port: 8080}\n      - {name: b1", "port: 8080, weight: 5}\n      - {name: b1", 1))
	done := reload()
	accepted := fakeIDs
	accepted.Generation = 8
	got := f.expectReload(accepted, "")
	if w := got.VIPs[0].Backends[0].WeightValue(); w != 5 {
		t.Errorf("the forwarder was sent weight %d, want 5", w)
	}
	if err := <-done; err != nil {
		t.Fatalf("an accepted reload failed: %v", err)
	}
	if s := c.Status(context.Background()); s.Generation != 8 || !strings.Contains(string(c.Config()), "weight: 5") {
		t.Fatalf("after an accepted reload: generation %d, config %s", s.Generation, c.Config())
	}

	// Refused by the forwarder: nothing changes.
	write(strings.Replace(testConfig, "name: u1}", "name: u1}\nforwarder: {workers: 2}", 1))
	done = reload()
	f.expectReload(unit.ReloadReply{}, "forwarder.workers: changing the number of workers needs a restart")
	if err := <-done; err == nil || !strings.Contains(err.Error(), "forwarder.workers") {
		t.Fatalf("a refused reload returned %v", err)
	}
	if s := c.Status(context.Background()); s.Generation != 8 || strings.Contains(string(c.Config()), "workers") {
		t.Fatalf("a refused reload changed the unit: generation %d, config %s", s.Generation, c.Config())
	}

	// Invalid: refused before the forwarder hears of it.
	write(strings.Replace(testConfig, "mode: halfnat", "mode: sideways", 1))
	if err := c.Reload(context.Background()); err == nil || !strings.Contains(err.Error(), "vips[0].mode") {
		t.Fatalf("an invalid file: %v", err)
	}

	// An operator's drain: the same file, the backend draining.
	done = make(chan error, 1)
	go func() {
		done <- c.SetState(context.Background(), unit.BackendKey{VIP: "web", Backend: "b1"}, unit.StateDraining)
	}()
	got = f.expectReload(accepted, "")
	if got.VIPs[0].Backends[1].StateValue() != unit.StateDraining || got.VIPs[0].Backends[0].WeightValue() != 5 {
		t.Errorf("the drain reached the forwarder as %+v", got.VIPs[0].Backends)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if s := c.Status(context.Background()); s.States[unit.BackendKey{VIP: "web", Backend: "b1"}] != unit.StateDraining {
		t.Errorf("status states %v", s.States)
	}
	if err := c.SetState(context.Background(), unit.BackendKey{VIP: "web", Backend: "nope"}, unit.StateDraining); err == nil {
		t.Error("a drain of an unknown backend was accepted")
	}
}

// TestInventoryAndRestart: flow events feed the connection inventory; a
// forwarder that restarts (a new PID) gets the running configuration and
// then every inventoried flow back exactly, followed by a barrier; a
// forwarder of another unit is refused.
func TestInventoryAndRestart(t *testing.T) {
	c, _ := startControl(t, testConfig)
	f := connectFake(t, c, 100, "u1")
	// The flows the forwarder already had when this control process met
	// it, then three events.
	existing := unit.FlowRecord{Worker: 0, Key: key(1, 1111, 10, 80), Action: unit.Action{Mode: unit.ModeHalfNAT, Backend: 40, PortA: 8080, PortB: 1111, Flags: unit.FlowEstablished}}
	f.handshake([]unit.FlowRecord{existing})
	waitFor(t, c, "the flows read from the forwarder", func(s unit.Status) bool { return s.Flows == 1 })
	open := func(src byte, be uint32) channel.FlowEvent {
		return channel.FlowEvent{Kind: channel.FlowOpened, Worker: 1, Key: key(src, 2222, 10, 80),
			Action: unit.Action{Mode: unit.ModeHalfNAT, Backend: be, PortA: 8080, PortB: 2222, Flags: unit.FlowSYN}}
	}
	events := []channel.FlowEvent{open(2, 40), open(3, 41), open(4, 41)}
	f.send(channel.AppendFlowEvents(nil, f.next(), events))
	waitFor(t, c, "three opened flows", func(s unit.Status) bool { return s.Flows == 4 })
	closed := events[2]
	closed.Kind = channel.FlowExpired
	f.send(channel.AppendFlowEvents(nil, f.next(), []channel.FlowEvent{closed}))
	waitFor(t, c, "one flow expired", func(s unit.Status) bool { return s.Flows == 3 })

	// The forwarder restarts.
	f.conn.Close()
	waitFor(t, c, "the forwarder gone", func(s unit.Status) bool { return !s.Forwarder.Connected })
	g := connectFake(t, c, 200, "u1")
	g.expect(channel.THello)
	g.expectReload(fakeIDs, "")
	want := map[unit.FlowKey]unit.Action{existing.Key: existing.Action, events[0].Key: events[0].Action, events[1].Key: events[1].Action}
	for range len(want) { // a count: the loop deletes from want
		_, p := g.expect(channel.TRoute)
		r, err := channel.DecodeRoute(p)
		if err != nil {
			t.Fatal(err)
		}
		if a, ok := want[r.Key]; !ok || r.Action != a || r.Op != channel.RouteAdd {
			t.Fatalf("restored %+v, want one of %v exactly", r, want)
		}
		delete(want, r.Key)
	}
	h, _ := g.expect(channel.TBarrier)
	g.send(channel.AppendAck(nil, h.Seq))
	if s := c.Status(context.Background()); s.Forwarder.PID != 200 || s.Flows != 3 {
		t.Errorf("after the restart: %+v", s)
	}

	// Another unit's forwarder is refused at hello.
	x := connectFake(t, c, 300, "someone-else")
	if h, _, ok := x.recv(); ok {
		t.Fatalf("another unit's forwarder got a %s", h.Type)
	}
	if s := c.Status(context.Background()); s.Forwarder.PID != 200 {
		t.Errorf("another unit's forwarder replaced ours: %+v", s.Forwarder)
	}
}

// TestNoForwarder: without a forwarder the control process still
// applies changes to itself, and the calls that need one say why.
func TestNoForwarder(t *testing.T) {
	c, _ := startControl(t, testConfig)
	if err := c.SetState(context.Background(), unit.BackendKey{VIP: "web", Backend: "b0"}, unit.StateInactive); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.Report(context.Background()); err == nil || !strings.Contains(err.Error(), "not connected") {
		t.Errorf("report without a forwarder: %v", err)
	}
	// The forwarder that connects later gets the drain with the file.
	f := connectFake(t, c, 100, "u1")
	cfg := f.handshake(nil)
	if cfg.VIPs[0].Backends[0].StateValue() != unit.StateInactive {
		t.Errorf("a late forwarder got b0 %s", cfg.VIPs[0].Backends[0].State)
	}
}

// TestLostEventsReread: when the forwarder says it lost flow events, the
// control process re-reads its flows and sweeps what it no longer holds,
// keeping what events added meanwhile.
func TestLostEventsReread(t *testing.T) {
	c, _ := startControl(t, testConfig)
	f := connectFake(t, c, 100, "u1")
	rec := func(src byte, be uint32) unit.FlowRecord {
		return unit.FlowRecord{Key: key(src, 3000, 10, 80), Action: unit.Action{Mode: unit.ModeHalfNAT, Backend: be, PortA: 8080, PortB: 3000}}
	}
	a, b, d := rec(1, 40), rec(2, 41), rec(4, 40)
	f.handshake([]unit.FlowRecord{a, b})
	waitFor(t, c, "two flows read", func(s unit.Status) bool { return s.Flows == 2 })
	cEv := channel.FlowEvent{Kind: channel.FlowOpened, Key: key(3, 3000, 10, 80), Action: rec(3, 41).Action}
	f.send(channel.AppendFlowEvents(nil, f.next(), []channel.FlowEvent{cEv}))
	waitFor(t, c, "a third opened", func(s unit.Status) bool { return s.Flows == 3 })
	// The forwarder lost events: a and c are gone, d came, b stays.
	f.send(channel.AppendLost(nil, f.next(), 5))
	seq, _ := f.expectCall(unit.CallFlows)
	f.answer(seq, unit.FlowsReply{Flows: []unit.FlowRecord{b, d}, Matched: 2}, "")
	s := waitFor(t, c, "the inventory re-read", func(s unit.Status) bool { return s.Flows == 2 && s.EventsLost == 5 })
	if got := c.inv.all(); len(got) != 2 || !(got[0].Key == b.Key && got[1].Key == d.Key || got[0].Key == d.Key && got[1].Key == b.Key) {
		t.Errorf("inventory after the re-read: %+v (status %+v)", got, s)
	}

	// More losses: a re-read in two pages, the second resuming at the
	// first's cursor. Between them d is removed (its event arrives) and
	// more events are lost; the second page, read before d went, must
	// not bring it back, and the new losses call for another re-read.
	f.send(channel.AppendLost(nil, f.next(), 1))
	seq, body := f.expectCall(unit.CallFlows)
	var req unit.FlowsRequest
	if err := json.Unmarshal(body, &req); err != nil || req.Cursor == nil || *req.Cursor != (unit.FlowCursor{}) {
		t.Fatalf("re-read request %s: want a walk from the start", body)
	}
	mid := unit.FlowCursor{Worker: 1, Slot: 4096}
	f.answer(seq, unit.FlowsReply{Flows: []unit.FlowRecord{b}, Next: &mid}, "")
	f.send(channel.AppendFlowEvents(nil, f.next(), []channel.FlowEvent{{Kind: channel.FlowExpired, Key: d.Key}}))
	f.send(channel.AppendLost(nil, f.next(), 1))
	seq, body = f.expectCall(unit.CallFlows)
	if err := json.Unmarshal(body, &req); err != nil || req.Cursor == nil || *req.Cursor != mid {
		t.Fatalf("second page request %s: want the walk resumed at %+v", body, mid)
	}
	f.answer(seq, unit.FlowsReply{Flows: []unit.FlowRecord{d}}, "")
	waitFor(t, c, "the removed flow stays removed", func(s unit.Status) bool { return s.Flows == 1 && s.EventsLost == 7 })
	seq, _ = f.expectCall(unit.CallFlows)
	f.answer(seq, unit.FlowsReply{Flows: []unit.FlowRecord{b}}, "")
	if got := c.inv.all(); len(got) != 1 || got[0].Key != b.Key {
		t.Errorf("inventory after the walks: %+v, want b alone", got)
	}
}
