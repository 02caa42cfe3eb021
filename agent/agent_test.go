package agent

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	pb "github.com/tetherlb/tether/api/healthpb"
	"github.com/tetherlb/tether/ctlplane/health"
)

// startUnit starts a real unit-side health server on loopback. It ages
// a host out only after 1000 missed heartbeats, that is never within a
// test: no test here is about aging (the health package tests it), and
// on a loaded machine heartbeats can come late enough for a unit that
// expects them every few tens of milliseconds to drop a host, a detour
// none of these tests expects.
func startUnit(t *testing.T, ctx context.Context, id uint32) *health.Server {
	t.Helper()
	return startUnitWith(t, ctx, id, nil)
}

// startUnitWith starts a unit that checks every host's key against
// master.
func startUnitWith(t *testing.T, ctx context.Context, id uint32, master []byte) *health.Server {
	t.Helper()
	s, err := health.New(health.Options{Listen: "127.0.0.1:0", Unit: id, Master: master, Missed: 1000, Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	go s.Run(ctx)
	return s
}

func freeUDP(t testing.TB) string {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().String()
}

func freeTCP(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func agentConfig(t *testing.T, id int, units []string, extra string) *Config {
	t.Helper()
	y := fmt.Sprintf(`
host: {id: %d, listen: "%s"}
units: [%s]
heartbeat: {interval: 50ms}
directive: {delay: 20ms, window: 50ms}
api: {socket: /nonexistent/agent.sock}
applications:
  - {name: web, vip: "192.0.2.10:80", endpoint: "10.0.%d.2:8080", capacity: 40}
  - {name: api, proto: udp, endpoint: "10.0.%d.2:53", capacity: 20}
%s`, id, freeUDP(t), strings.Join(units, ", "), id, id, extra)
	cfg, err := ParseConfig([]byte(y))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func runAgent(t *testing.T, ctx context.Context, cfg *Config) (*Agent, func()) {
	t.Helper()
	a, err := New(cfg, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	actx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { a.Run(actx); close(done) }()
	return a, func() { cancel(); <-done }
}

// eventually polls cond until it holds or 40 s pass; explain, if
// given, describes the state when it did not.
func eventually(t *testing.T, what string, cond func() bool, explain ...func() string) {
	t.Helper()
	// A bound, not a duration asserted: long enough for one of the
	// group's full state exchanges (memberlist's 30 s), which repairs a
	// gossip message a loaded machine lost.
	deadline := time.Now().Add(40 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			for _, e := range explain {
				t.Log(e())
			}
			t.Fatalf("timed out waiting: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// inSync reports whether the unit's copy of host id equals the agent's
// table.
func inSync(u *health.Server, a *Agent, id uint32) bool {
	_, want := a.table.Integrity()
	ok := false
	u.Read(func(c *health.Cache) {
		h := c.Host(id)
		ok = h != nil && len(h.Sums.Differ(want)) == 0 && len(h.Rows) == len(a.table.Names())
	})
	return ok
}

func row(u *health.Server, host uint32, ep string) *pb.Row {
	var r *pb.Row
	u.Read(func(c *health.Cache) {
		if h := c.Host(host); h != nil {
			for _, x := range h.Rows {
				if x.GetApp().GetEndpoint() == ep {
					r = x
				}
			}
		}
	})
	return r
}

func TestAgentKeepsUnitsInStep(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// The units do not age the host out (see startUnit): only the goodbye
	// can clear it.
	u1, u2 := startUnit(t, ctx, 1), startUnit(t, ctx, 2)
	cfg := agentConfig(t, 7, []string{`"` + u1.Addr().String() + `"`, `"` + u2.Addr().String() + `"`}, "")
	a, stop := runAgent(t, ctx, cfg)
	eventually(t, "both units hold the table", func() bool { return inSync(u1, a, 7) && inSync(u2, a, 7) })

	load := uint32(90)
	if err := a.Set(ctx, "web", nil, &load, nil, nil); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the load change reached the units", func() bool {
		r := row(u1, 7, "10.0.7.2:8080")
		return r != nil && r.GetLoad() == 90 && inSync(u2, a, 7)
	})

	// The directive handshake: target first, current once units agree.
	draining := pb.State_STATE_DRAINING
	if err := a.Set(ctx, "web", nil, nil, nil, &draining); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the handshake confirmed draining", func() bool {
		r, _ := a.table.Row("web")
		return r.GetCurrent() == pb.State_STATE_DRAINING
	})
	if r := row(u1, 7, "10.0.7.2:8080"); r.GetTarget() != pb.State_STATE_DRAINING {
		t.Fatalf("unit target %v", r.GetTarget())
	}
	eventually(t, "units hold the confirmed row", func() bool { return inSync(u1, a, 7) && inSync(u2, a, 7) })

	// A clean stop says goodbye: the units clear the host at once.
	stop()
	eventually(t, "goodbye cleared the host", func() bool {
		n := -1
		u1.Read(func(c *health.Cache) { n = c.Len() })
		return n == 0 && u1.Stats().Goodbyes == 1
	})
}

// TestHandshakeRepairsAUnitThatMissedTheChange: a unit missed the row
// change that set a new directive; the agent's postulate draws its
// postulate-wrong, the agent resends the change, and the handshake
// completes only in the round after. The late unit is a real unit that
// the agent reaches through a relay the test controls, so that the order
// of events is the test's and not the scheduler's: the unit is down
// (every datagram dropped) until the first postulate comes, and the
// original change is dropped whenever it comes. Without the relay the
// unit's first heartbeat would draw a snapshot that repairs it before
// any postulate, and the repair path would go untested.
func TestHandshakeRepairsAUnitThatMissedTheChange(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Neither unit ages the host out (see startUnit): a unit that lost it
	// would disagree with a postulate too, and add a round.
	u1 := startUnit(t, ctx, 1)
	u2 := startUnit(t, ctx, 2) // its own socket only sends, and takes snapshots
	relay, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	cfg := agentConfig(t, 7, []string{`"` + u1.Addr().String() + `"`, `"` + relay.LocalAddr().String() + `"`}, "")
	// A unit that does not answer within the window agrees: the window
	// must cover the relayed unit's answer on a loaded machine.
	cfg.Directive.Window = time.Second
	a, stop := runAgent(t, ctx, cfg)
	defer stop()
	eventually(t, "unit 1 in sync", func() bool { return inSync(u1, a, 7) })

	// classify names a row change of web's draining directive: the
	// original (target draining, in the table's sequence of generations),
	// the handshake's resend of it (generation 0: outside the sequence),
	// or the change that confirms it (current draining too).
	classify := func(env *pb.Envelope) string {
		for _, op := range env.GetRowChange().GetOps() {
			r := op.GetRow()
			switch {
			case r.GetApp().GetEndpoint() != "10.0.7.2:8080" || r.GetTarget() != pb.State_STATE_DRAINING:
			case r.GetCurrent() == pb.State_STATE_DRAINING:
				return "change confirmed"
			case env.GetRowChange().GetGeneration() != 0:
				return "change missed"
			default:
				return "change resent"
			}
		}
		return ""
	}
	// What the relay did, in order; never blocking the relay, which must
	// return when the test closes its socket.
	events := make(chan string, 100)
	note := func(e string) {
		select {
		case events <- e:
		default:
		}
	}
	var relaying sync.WaitGroup
	defer relaying.Wait()
	defer relay.Close()
	relaying.Go(func() {
		peek, _ := pb.NewCodec()
		in, _ := pb.NewCodec()
		buf := make([]byte, pb.MaxDatagram+1)
		up := false
		for {
			n, err := relay.Read(buf)
			if err != nil {
				return // closed: the test is over
			}
			env, _, err := peek.Decode(buf[:n], nil)
			if err != nil {
				note(fmt.Sprintf("undecodable datagram: %v", err))
				continue
			}
			switch c := classify(env); {
			case c == "change missed":
				note(c)
				continue
			case c != "":
				note(c)
			case env.GetPostulate() != nil && !up:
				up = true
				note("unit up")
			}
			if up {
				u2.Receive(in, bytes.Clone(buf[:n]), a.Addr())
			}
		}
	})

	draining := pb.State_STATE_DRAINING
	if err := a.Set(ctx, "web", nil, nil, nil, &draining); err != nil {
		t.Fatal(err)
	}
	// The original change and the first postulate may pass the relay in
	// either order (the agent sends them from two goroutines); the resend
	// comes after both.
	seen := map[string]bool{}
	for !seen["change resent"] {
		select {
		case e := <-events:
			if seen[e] || e != "change missed" && e != "unit up" && e != "change resent" {
				t.Fatalf("relay: got %q after %v, want the missed change, the unit up and the resend, once each", e, seen)
			}
			seen[e] = true
		case <-time.After(10 * time.Second):
			t.Fatalf("relay saw %v, want the missed change, the unit up and the resend", seen)
		}
	}
	if !seen["change missed"] || !seen["unit up"] {
		t.Fatalf("relay saw %v before the resend, want the missed change and the unit up", seen)
	}
	if n := u2.Stats().PostulateWrong; n != 1 {
		t.Fatalf("the late unit sent %d postulate-wrongs, want 1: the resend answers it", n)
	}
	// The handshake is marked done after the row's current state is set:
	// once the status says confirmed, the row says it too.
	handshake := func() string {
		for _, av := range a.View().Apps {
			if av.Name == "web" {
				return av.Handshake
			}
		}
		return ""
	}
	eventually(t, "the handshake completed", func() bool { return strings.HasPrefix(handshake(), "confirmed") })
	if got, want := handshake(), "confirmed draining after 2 rounds"; got != want {
		t.Fatalf("handshake: got %q, want %q: the round the unit disagreed cannot confirm", got, want)
	}
	if r, _ := a.table.Row("web"); r.GetCurrent() != pb.State_STATE_DRAINING {
		t.Fatalf("agent's row: got current %v, want draining", r.GetCurrent())
	}
	if r := row(u2, 7, "10.0.7.2:8080"); r.GetTarget() != pb.State_STATE_DRAINING {
		t.Fatalf("late unit holds %v, want target draining", r)
	}
}

// TestGroupAggregation: three agents in a group; the lowest host ID
// leads and sends one consolidated heartbeat per unit. When a member
// stops, the unit loses it; the others stay.
func TestGroupAggregation(t *testing.T) {
	for _, mode := range []string{ModeAggregate, ModeMembership} {
		t.Run(mode, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			// The unit does not age hosts out (see startUnit): the
			// stopped member must be cleared by goodbyes.
			// Every host has its own key: the leader relays its
			// members' frames, it cannot sign them.
			u := startUnitWith(t, ctx, 1, testMaster)
			dir := t.TempDir()
			groupKey := filepath.Join(dir, "group.key")
			if err := os.WriteFile(groupKey, []byte("group secret 0123456789"), 0o600); err != nil {
				t.Fatal(err)
			}
			binds := []string{freeTCP(t), freeTCP(t), freeTCP(t)}
			var agents []*Agent
			var stops []func()
			for i, id := range []int{3, 5, 9} {
				extra := fmt.Sprintf("group: {bind: %q, join: [%q], mode: %s, forward_every: 2, key_file: %q}\nauth: {key_file: %q}",
					binds[i], binds[0], mode, groupKey, writeHostKey(t, dir, uint32(id), fmt.Sprintf("10.0.%d.0/24", id)))
				a, stop := runAgent(t, ctx, agentConfig(t, id, []string{`"` + u.Addr().String() + `"`}, extra))
				agents, stops = append(agents, a), append(stops, stop)
			}
			defer func() {
				for _, s := range stops {
					s()
				}
			}()
			eventually(t, "all three hosts in sync through the leader", func() bool {
				return inSync(u, agents[0], 3) && inSync(u, agents[1], 5) && inSync(u, agents[2], 9)
			})
			explain := func() string {
				var s []string
				u.Read(func(c *health.Cache) {
					for _, id := range c.HostIDs() {
						s = append(s, fmt.Sprintf("unit hears %d via %d", id, c.Host(id).Leader))
					}
				})
				for _, a := range agents {
					s = append(s, fmt.Sprintf("agent %d sees leader %d, members %v", a.host, a.group.Leader(), a.group.Members()))
				}
				return strings.Join(s, "; ")
			}
			eventually(t, "members are heard through leader 3", func() bool {
				ok := false
				u.Read(func(c *health.Cache) {
					// A host the unit aged out (its heartbeats late on a
					// loaded machine) is absent until the next one.
					via := func(id uint32) int64 {
						if h := c.Host(id); h != nil {
							return int64(h.Leader)
						}
						return -1
					}
					ok = via(5) == 3 && via(9) == 3 && via(3) == 0
				})
				return ok
			}, explain)
			if st := u.Stats(); st.Received["aggregate"] == 0 || st.Received["heartbeat"] != 0 || st.Received["relayed_heartbeat"] == 0 ||
				st.Refused["authentication"]+st.Refused["not_own_host"]+st.Refused["replay"] != 0 {
				t.Fatalf("unit received %v, refused %v: want aggregates with members' own frames only, all accepted", st.Received, st.Refused)
			}
			stops[2]()
			stops[2] = func() {}
			eventually(t, "the stopped member is gone, the rest stay", func() bool {
				var ids []uint32
				u.Read(func(c *health.Cache) { ids = c.HostIDs() })
				return len(ids) == 2 && ids[0] == 3 && ids[1] == 5
			})
		})
	}
}

func TestConfigErrorsNameTheKey(t *testing.T) {
	cases := map[string]string{
		"host: {id: 0, listen: \"127.0.0.1:1\"}\nunits: [\"127.0.0.1:2\"]":                                                                            "host.id",
		"host: {id: 1, listen: \"nope\"}\nunits: [\"127.0.0.1:2\"]":                                                                                   "host.listen",
		"host: {id: 1, listen: \"127.0.0.1:1\"}\nunits: []":                                                                                           "units",
		"host: {id: 1, listen: \"127.0.0.1:1\"}\nunits: [\"x\"]":                                                                                      "units[0]",
		"host: {id: 1, listen: \"127.0.0.1:1\"}\nunits: [\"127.0.0.1:2\"]\nheartbeat: {interval: 1ms}":                                                "heartbeat.interval",
		"host: {id: 1, listen: \"127.0.0.1:1\"}\nunits: [\"127.0.0.1:2\"]\ngroup: {bind: \"127.0.0.1:9\", mode: x}":                                   "group.mode",
		"host: {id: 1, listen: \"127.0.0.1:1\"}\nunits: [\"127.0.0.1:2\"]\napplications: [{name: a, endpoint: \"10.0.0.1:80\", capacity: 100}]":       "applications[0].capacity",
		"host: {id: 1, listen: \"127.0.0.1:1\"}\nunits: [\"127.0.0.1:2\"]\napplications: [{name: a, endpoint: \"10.0.0.1:80\", check: {type: ping}}]": "applications[0].check",
		"host: {id: 1, listen: \"127.0.0.1:1\"}\nunits: [\"127.0.0.1:2\"]\napplications: [{name: a, endpoint: \"10.0.0.01:80\"}]":                     "applications[0]",
		"host: {id: 1, listen: \"127.0.0.1:1\"}\nunits: [\"127.0.0.1:2\"]\nbogus: 1":                                                                  "bogus",
	}
	for y, key := range cases {
		_, err := ParseConfig([]byte(y))
		if err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("%q: got %v, want an error naming %s", y, err, key)
		}
	}
}

func TestTableQueuesAndFolds(t *testing.T) {
	tb := NewTable(10)
	r := &pb.Row{App: &pb.AppID{Proto: "tcp", Endpoint: "10.0.0.1:80"}, Health: pb.Health_HEALTH_HEALTHY, Capacity: 10,
		Target: pb.State_STATE_ACTIVE, Current: pb.State_STATE_ACTIVE}
	if err := tb.Add("a", r); err != nil {
		t.Fatal(err)
	}
	if err := tb.Add("b", r); err == nil {
		t.Fatal("a second name for the same application was accepted")
	}
	tb.Update("a", func(r *pb.Row) { r.Load = 50 })
	if changed, _ := tb.Update("a", func(r *pb.Row) { r.Load = 50 }); changed {
		t.Fatal("a no-op update counted as a change")
	}
	if _, err := tb.Update("a", func(r *pb.Row) { r.Load = 500 }); err == nil {
		t.Fatal("an invalid load was accepted")
	}
	ops, gen := tb.TakePending(10)
	if len(ops) != 1 || ops[0].GetOp() != pb.RowOp_OP_ADD || ops[0].GetRow().GetLoad() != 50 || gen != 12 {
		t.Fatalf("ops %v at generation %d: want one add with load 50 at 12", ops, gen)
	}
	for i := range 5 {
		tb.Add(fmt.Sprintf("x%d", i), &pb.Row{App: &pb.AppID{Proto: "tcp", Endpoint: fmt.Sprintf("10.0.1.%d:80", i+1)},
			Target: pb.State_STATE_ACTIVE, Current: pb.State_STATE_ACTIVE})
	}
	tb.Remove("a")
	first, g1 := tb.TakePending(4)
	rest, g2 := tb.TakePending(4)
	if len(first) != 4 || g1 != 0 || len(rest) != 2 || g2 != 18 {
		t.Fatalf("batches of %d (gen %d) and %d (gen %d)", len(first), g1, len(rest), g2)
	}
	if rest[1].GetOp() != pb.RowOp_OP_DELETE {
		t.Fatalf("last op %v, want the delete", rest[1].GetOp())
	}
}

// testMaster is the units' master secret in these tests.
var testMaster = []byte("0123456789abcdef0123456789abcdef")

// writeHostKey writes host id's key for grant into dir and returns its
// path.
func writeHostKey(t testing.TB, dir string, id uint32, grant string) string {
	t.Helper()
	g, err := pb.ParseGrant(grant)
	if err != nil {
		t.Fatal(err)
	}
	k, err := pb.NewHostKey(testMaster, id, g)
	if err != nil {
		t.Fatal(err)
	}
	text, _ := k.MarshalText()
	path := filepath.Join(dir, fmt.Sprintf("host-%d.key", id))
	if err := os.WriteFile(path, text, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// unitFrame is a unit's frame to host, signed with key (nil: unsigned).
func unitFrame(t testing.TB, env *pb.Envelope, host, unit uint32, seq uint64, at time.Time, key []byte) []byte {
	t.Helper()
	c, _ := pb.NewCodec()
	b, err := c.Encode(env, &pb.Header{FromUnit: true, Host: host, Sender: unit, Seq: seq, Time: uint64(at.UnixMilli())}, key, false)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.Clone(b)
}

// fuzzAgentSeeds are units' frames to host 7 (signed with its key) and
// members' heartbeats, of every kind an agent receives.
func fuzzAgentSeeds(t testing.TB) [][]byte {
	g, _ := pb.ParseGrant("10.0.7.0/24")
	key := pb.DeriveKey(testMaster, 7, g)
	app := &pb.AppID{Proto: "tcp", Vip: "192.0.2.10:80", Endpoint: "10.0.7.2:8080"}
	now := time.Now()
	var out [][]byte
	for i, env := range []*pb.Envelope{
		{Body: &pb.Envelope_GetSnapshot{GetSnapshot: &pb.GetSnapshot{Unit: 1}}},
		{Body: &pb.Envelope_GetSnapshot{GetSnapshot: &pb.GetSnapshot{Unit: 1, Chunks: []uint32{3, 4}}}},
		{Body: &pb.Envelope_PostulateWrong{PostulateWrong: &pb.PostulateWrong{Unit: 1, Host: 7, App: app, Held: pb.State_STATE_ACTIVE, Seq: 1}}},
	} {
		out = append(out, unitFrame(t, env, 7, 1, uint64(i+1), now, key))
	}
	c, _ := pb.NewCodec()
	mg, _ := pb.ParseGrant("10.0.5.0/24")
	for i, env := range []*pb.Envelope{
		{Body: &pb.Envelope_Heartbeat{Heartbeat: &pb.Heartbeat{Host: 5, IntervalMs: 50, Leader: 7, VouchMs: 1000}}},
		{Body: &pb.Envelope_Goodbye{Goodbye: &pb.Goodbye{Host: 5}}},
	} {
		b, _ := c.Encode(env, &pb.Header{Host: 5, Sender: 5, Seq: uint64(i + 1), Time: uint64(now.UnixMilli()), Grant: mg}, pb.DeriveKey(testMaster, 5, mg), false)
		out = append(out, bytes.Clone(b))
	}
	return out
}

// TestWriteSeeds keeps testdata/fuzz/FuzzAgentReceive in step with the
// seeds.
func TestWriteSeeds(t *testing.T) {
	if os.Getenv("TETHER_WRITE_SEEDS") == "" {
		t.Skip("set TETHER_WRITE_SEEDS=1 to rewrite testdata/fuzz/FuzzAgentReceive")
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzAgentReceive")
	os.RemoveAll(dir)
	os.MkdirAll(dir, 0o755)
	for i, b := range fuzzAgentSeeds(t) {
		body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", b)
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("seed-%d", i)), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// FuzzAgentReceive: no datagram panics the agent, keyed or not.
func FuzzAgentReceive(f *testing.F) {
	for _, b := range fuzzAgentSeeds(f) {
		f.Add(b)
	}
	dir := f.TempDir()
	var agents []*Agent
	for _, keyed := range []bool{true, false} {
		auth := ""
		if keyed {
			auth = fmt.Sprintf("auth: {key_file: %q}", writeHostKey(f, dir, 7, "10.0.7.0/24"))
		}
		cfg, err := ParseConfig([]byte(fmt.Sprintf(`
host: {id: 7, listen: %q, name: localhost}
units: ["127.0.0.1:9"]
applications: [{name: web, vip: "192.0.2.10:80", endpoint: "10.0.7.2:8080"}]
%s`, freeUDP(f), auth)))
		if err != nil {
			f.Fatal(err)
		}
		a, err := New(cfg, zerolog.Nop())
		if err != nil {
			f.Fatal(err)
		}
		defer a.conn.Close()
		agents = append(agents, a)
	}
	in, _ := pb.NewCodec()
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, a := range agents {
			// From a unit's address; replies go to the agent itself and
			// are never read.
			a.receive(in, b, netip.MustParseAddrPort("127.0.0.1:9"))
		}
	})
}

// TestAnswersOnlyUnits: a snapshot request from an address that is not
// a configured unit is refused (no amplification of spoofed requests).
func TestAnswersOnlyUnits(t *testing.T) {
	cfg := agentConfig(t, 7, []string{`"127.0.0.1:9"`}, "")
	a, err := New(cfg, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer a.conn.Close()
	get := &pb.Envelope{Body: &pb.Envelope_GetSnapshot{GetSnapshot: &pb.GetSnapshot{Unit: 1}}}
	in, _ := pb.NewCodec()
	a.receive(in, unitFrame(t, get, 7, 1, 1, time.Now(), nil), netip.MustParseAddrPort("192.0.2.99:7310"))
	a.receive(in, unitFrame(t, get, 7, 1, 2, time.Now(), nil), netip.MustParseAddrPort("127.0.0.1:7310"))
	v := a.View()
	if v.Stats.Refused["not_a_unit"] != 1 || v.Stats.Sent["send_snapshot"] != 1 {
		t.Fatalf("refused %v, sent %v", v.Stats.Refused, v.Stats.Sent)
	}
}

// TestAgentRefusesUnitReplaysAndStrangers: a unit's frame must be signed
// with this host's key, addressed to this host, fresh and new.
func TestAgentRefusesUnitReplaysAndStrangers(t *testing.T) {
	dir := t.TempDir()
	cfg := agentConfig(t, 7, []string{`"127.0.0.1:9"`}, fmt.Sprintf("auth: {key_file: %q}", writeHostKey(t, dir, 7, "10.0.7.0/24")))
	a, err := New(cfg, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer a.conn.Close()
	g, _ := pb.ParseGrant("10.0.7.0/24")
	key := pb.DeriveKey(testMaster, 7, g)
	get := &pb.Envelope{Body: &pb.Envelope_GetSnapshot{GetSnapshot: &pb.GetSnapshot{Unit: 1}}}
	unit := netip.MustParseAddrPort("127.0.0.1:7310")
	in, _ := pb.NewCodec()
	good := unitFrame(t, get, 7, 1, 10, time.Now(), key)
	a.receive(in, good, unit)
	a.receive(in, good, unit)                                                           // replay
	a.receive(in, unitFrame(t, get, 7, 1, 11, time.Now().Add(-time.Minute), key), unit) // stale
	a.receive(in, unitFrame(t, get, 8, 1, 12, time.Now(), pb.DeriveKey(testMaster, 8, g)), unit)
	a.receive(in, unitFrame(t, get, 7, 1, 13, time.Now(), nil), unit)
	a.receive(in, unitFrame(t, get, 7, 2, 14, time.Now(), key), unit) // names unit 1, sent by 2
	// The unit restarts: its numbers start from a later epoch, and its
	// next request is answered.
	a.receive(in, unitFrame(t, get, 7, 1, pb.NewSequencer(time.Now().Add(time.Second)).Next(time.Now()), time.Now(), key), unit)
	v := a.View()
	want := map[string]uint64{"replay": 1, "stale": 1, "authentication": 1, "unauthenticated": 1, "not_own_host": 1}
	for k, n := range want {
		if v.Stats.Refused[k] != n {
			t.Fatalf("refused %v, want %v", v.Stats.Refused, want)
		}
	}
	if v.Stats.Sent["send_snapshot"] != 2 {
		t.Fatalf("answered %d snapshot requests, want 2 (the first, and the restarted unit's)", v.Stats.Sent["send_snapshot"])
	}
}

// TestKeyConfiguration: a key that is not this host's, or that does not
// grant an application's endpoint, and protocol 1's shared key, are
// refused at start, naming the key to fix.
func TestKeyConfiguration(t *testing.T) {
	dir := t.TempDir()
	cases := map[string]string{
		fmt.Sprintf("auth: {key_file: %q}", writeHostKey(t, dir, 8, "10.0.7.0/24")): "auth.key_file",
		fmt.Sprintf("auth: {key_file: %q}", writeHostKey(t, dir, 7, "10.0.9.0/24")): "applications[0].endpoint",
		`key_file: /etc/tether/health.key`:                                          "key_file",
	}
	shared := filepath.Join(dir, "shared")
	os.WriteFile(shared, []byte("0123456789abcdef0123"), 0o600)
	cases[fmt.Sprintf("auth: {key_file: %q}", shared)] = "auth.key_file"
	for extra, key := range cases {
		cfg, err := ParseConfig([]byte(fmt.Sprintf(`
host: {id: 7, listen: %q}
units: ["127.0.0.1:9"]
applications: [{name: web, endpoint: "10.0.7.2:8080"}]
%s`, freeUDP(t), extra)))
		if err == nil {
			var a *Agent
			if a, err = New(cfg, zerolog.Nop()); err == nil {
				a.conn.Close()
			}
		}
		if err == nil || !strings.HasPrefix(err.Error(), key) && !strings.Contains(err.Error(), key+":") {
			t.Errorf("%s: got %v, want an error naming %s", extra, err, key)
		}
	}
	// At run time too: an application outside the grant is refused.
	cfg := agentConfig(t, 7, []string{`"127.0.0.1:9"`}, fmt.Sprintf("auth: {key_file: %q}", writeHostKey(t, dir, 7, "10.0.7.0/24")))
	a, err := New(cfg, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer a.conn.Close()
	if err := a.AddApp("x", AppSpec{Endpoint: "10.0.9.2:80"}); err == nil {
		t.Fatal("an application outside the key's grant was added")
	}
}

// TestLoadCommand: a load command's percentage reaches the row, with
// hysteresis: a move smaller than load.step (5) is not reported, unless
// it reaches 0 or 100, and output that is no percentage changes nothing.
// Each step waits until the agent's status shows that the command ran on
// the step's output (its measurement, or one more failure) and only then
// reads the row, so "the load did not move" is proven by a measurement
// that did not move it, not by a pause that may have seen no run at all.
func TestLoadCommand(t *testing.T) {
	dir := t.TempDir()
	loadFile := filepath.Join(dir, "load")
	// setOutput replaces the file whole: cat never reads it half written,
	// so every run measures one step's output.
	setOutput := func(s string) {
		t.Helper()
		tmp := filepath.Join(dir, "load.tmp")
		if err := os.WriteFile(tmp, []byte(s+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, loadFile); err != nil {
			t.Fatal(err)
		}
	}
	// Consecutive steps measure different values: seeing a step's value is
	// how the test knows the command read that step's output.
	steps := []struct {
		output   string
		failed   bool   // the output is no percentage
		measured uint32 // what the status shows was measured
		load     uint32 // the row's load after it
	}{
		{output: "42%", measured: 42, load: 42},
		{output: "44.4", measured: 44, load: 42}, // up 2: within the step
		{output: "37.5", measured: 38, load: 42}, // down 4: within the step
		{output: "busy", failed: true, load: 42},
		{output: "97", measured: 97, load: 97},
		{output: "100", measured: 100, load: 100}, // up 3, but to full load
		{output: "98.6", measured: 99, load: 100}, // down 1: within the step
		{output: "3", measured: 3, load: 3},
		{output: "0", measured: 0, load: 0}, // down 3, but to idle
	}
	setOutput(steps[0].output)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cfg, err := ParseConfig([]byte(fmt.Sprintf(`
host: {id: 7, listen: %q}
units: ["127.0.0.1:9"]
api: {socket: /nonexistent/agent.sock}
load: {step: 5}
applications:
  - {name: batch, endpoint: "10.0.9.2:9000", load_command: [cat, %q], load_interval: 100ms}
`, freeUDP(t), loadFile)))
	if err != nil {
		t.Fatal(err)
	}
	a, stop := runAgent(t, ctx, cfg)
	defer stop()
	// status is the application as the API shows it; its load command's
	// state is there once the command has been started.
	status := func() (AppView, LoadView) {
		for _, av := range a.View().Apps {
			if av.Name == "batch" && av.LoadCommand != nil {
				return av, *av.LoadCommand
			}
		}
		return AppView{}, LoadView{}
	}
	for i, s := range steps {
		_, before := status()
		if i > 0 {
			setOutput(s.output)
		}
		eventually(t, fmt.Sprintf("the load command ran on %q", s.output), func() bool {
			_, lc := status()
			if s.failed {
				return lc.Failures > before.Failures
			}
			return lc.Measurements > 0 && lc.Measured == s.measured
		}, func() string { av, lc := status(); return fmt.Sprintf("load %d, command %+v", av.Load, lc) })
		// The measurement is counted after the row took it or ignored it:
		// this read sees the step's effect.
		if av, _ := status(); av.Load != s.load {
			t.Fatalf("after %q: got load %d, want %d", s.output, av.Load, s.load)
		}
	}
}
