package health

import (
	"bytes"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	pb "github.com/tetherlb/tether/api/healthpb"
)

// clock is a settable time for aging tests.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newTestServer(t *testing.T, key []byte) (*Server, *clock) {
	t.Helper()
	clk := &clock{t: time.Unix(1000, 0)}
	s, err := New(Options{Listen: "127.0.0.1:0", Unit: 9, Key: key, Missed: 4, Log: zerolog.Nop(), now: clk.now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.conn.Close() })
	return s, clk
}

// host is a test's stand-in for an agent: a real UDP socket.
type host struct {
	t     *testing.T
	conn  *net.UDPConn
	codec *pb.Codec
	src   netip.AddrPort
	marks uint64 // quiet's markers sent
}

func newHost(t *testing.T, key []byte) *host {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	codec, _ := pb.NewCodec(key)
	return &host{t: t, conn: c, codec: codec, src: c.LocalAddr().(*net.UDPAddr).AddrPort()}
}

// deliver encodes env and hands it to the server as if it came from h
// (synchronously, so tests need no waiting).
func (h *host) deliver(s *Server, env *pb.Envelope) {
	h.t.Helper()
	b, err := h.codec.Encode(env, false)
	if err != nil {
		h.t.Fatal(err)
	}
	in, _ := pb.NewCodec(s.opts.Key)
	s.Receive(in, bytes.Clone(b), h.src)
}

// recv waits for the server's next message to h.
func (h *host) recv() *pb.Envelope {
	h.t.Helper()
	buf := make([]byte, pb.MaxDatagram)
	h.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := h.conn.Read(buf)
	if err != nil {
		h.t.Fatalf("no message from the server: %v", err)
	}
	env, err := h.codec.Decode(buf[:n])
	if err != nil {
		h.t.Fatal(err)
	}
	return env
}

// quiet reports whether the server sent h nothing while handling what h
// delivered so far. It does not wait a while and take silence for an
// answer: Receive is synchronous, so anything it sent is already on its
// way, and a marker that always draws an answer (a postulate about a host
// the server has never heard of draws a postulate-wrong) is sent after
// it; the server was quiet if that answer is the first thing h receives.
func (h *host) quiet(s *Server) bool {
	h.t.Helper()
	h.marks++
	h.deliver(s, &pb.Envelope{Body: &pb.Envelope_Postulate{Postulate: &pb.PostulateState{
		Host: markerHost, App: markerApp, State: pb.State_STATE_ACTIVE, Seq: h.marks}}})
	env := h.recv()
	if w := env.GetPostulateWrong(); w.GetHost() != markerHost || w.GetSeq() != h.marks {
		h.t.Logf("got %v, want the answer to marker %d first", env, h.marks)
		return false
	}
	return true
}

// The marker of quiet: a host and application no test uses.
const markerHost = 999

var markerApp = &pb.AppID{Proto: "tcp", Vip: "192.0.2.99:80", Endpoint: "10.9.9.9:80"}

func testRow(ep string, health pb.Health, load uint32) *pb.Row {
	return &pb.Row{App: &pb.AppID{Proto: "tcp", Vip: "192.0.2.10:80", Endpoint: ep}, Health: health, Load: load, Capacity: 50,
		Target: pb.State_STATE_ACTIVE, Current: pb.State_STATE_ACTIVE}
}

func beat(id uint32, gen uint64, rows ...*pb.Row) *pb.Envelope {
	var s pb.Sums
	for _, r := range rows {
		s.Add(r)
	}
	return &pb.Envelope{Body: &pb.Envelope_Heartbeat{Heartbeat: &pb.Heartbeat{Host: id, Generation: gen, Chunks: s.List(), IntervalMs: 500}}}
}

func change(id uint32, gen uint64, ops ...*pb.RowOp) *pb.Envelope {
	return &pb.Envelope{Body: &pb.Envelope_RowChange{RowChange: &pb.RowChange{Host: id, Generation: gen, Ops: ops}}}
}

func add(r *pb.Row) *pb.RowOp { return &pb.RowOp{Op: pb.RowOp_OP_ADD, Row: r} }

// checkInvariants: every host's sums match its rows, and the type index
// matches the hosts.
func checkInvariants(t *testing.T, c *Cache) {
	t.Helper()
	types := map[string]map[uint32]int{}
	for id, h := range c.hosts {
		var s pb.Sums
		for k, r := range h.Rows {
			if pb.Key(r.GetApp()) != k {
				t.Fatalf("host %d: row %q filed under %q", id, pb.Key(r.GetApp()), k)
			}
			s.Add(r)
			if types[pb.TypeKey(r.GetApp())] == nil {
				types[pb.TypeKey(r.GetApp())] = map[uint32]int{}
			}
			types[pb.TypeKey(r.GetApp())][id]++
		}
		if s != h.Sums {
			t.Fatalf("host %d: sums out of step with rows", id)
		}
	}
	if len(types) != len(c.byType) {
		t.Fatalf("type index has %d types, rows have %d", len(c.byType), len(types))
	}
	for typ, m := range types {
		for id, n := range m {
			if c.byType[typ][id] != n {
				t.Fatalf("type index: %q host %d: %d, want %d", typ, id, c.byType[typ][id], n)
			}
		}
	}
}

func TestRowChangesAndHeartbeats(t *testing.T) {
	s, _ := newTestServer(t, nil)
	h := newHost(t, nil)
	r1, r2 := testRow("10.0.0.1:80", pb.Health_HEALTH_HEALTHY, 10), testRow("10.0.0.2:80", pb.Health_HEALTH_FAILING, 0)
	h.deliver(s, change(7, 100, add(r1), add(r2)))
	h.deliver(s, beat(7, 100, r1, r2))
	if !h.quiet(s) {
		t.Fatal("a matching heartbeat drew a message")
	}
	s.Read(func(c *Cache) {
		checkInvariants(t, c)
		if eps := c.OfType(pb.TypeKey(r1.App)); len(eps) != 2 || eps[0].Row.GetHealth() != pb.Health_HEALTH_HEALTHY {
			t.Fatalf("by type: %v", eps)
		}
	})
	// An update, then a stale replay of an older change: ignored.
	r1b := testRow("10.0.0.1:80", pb.Health_HEALTH_FAILING, 10)
	h.deliver(s, change(7, 101, &pb.RowOp{Op: pb.RowOp_OP_UPDATE, Row: r1b}))
	h.deliver(s, change(7, 100, add(r1)))
	s.Read(func(c *Cache) {
		if got := c.Host(7).Rows[pb.Key(r1.App)].GetHealth(); got != pb.Health_HEALTH_FAILING {
			t.Fatalf("stale change applied: health %v", got)
		}
	})
	if s.Stats().StaleChanges != 1 {
		t.Fatalf("stale changes: %d", s.Stats().StaleChanges)
	}
	h.deliver(s, change(7, 102, &pb.RowOp{Op: pb.RowOp_OP_DELETE, Row: &pb.Row{App: r2.App}}))
	h.deliver(s, &pb.Envelope{Body: &pb.Envelope_Goodbye{Goodbye: &pb.Goodbye{Host: 7}}})
	s.Read(func(c *Cache) {
		checkInvariants(t, c)
		if c.Len() != 0 {
			t.Fatal("goodbye left the host")
		}
	})
}

// TestSnapshotRepairsLostChange: a row change is lost; the next
// heartbeats reveal it; the server asks for the chunk and the snapshot
// repairs the copy.
func TestSnapshotRepairsLostChange(t *testing.T) {
	s, clk := newTestServer(t, nil)
	h := newHost(t, nil)
	r1 := testRow("10.0.0.1:80", pb.Health_HEALTH_HEALTHY, 10)
	h.deliver(s, change(7, 100, add(r1)))
	h.deliver(s, beat(7, 100, r1))
	r1b := testRow("10.0.0.1:80", pb.Health_HEALTH_HEALTHY, 90) // the lost change
	h.deliver(s, beat(7, 101, r1b))
	if !h.quiet(s) {
		t.Fatal("asked at once for a generation a row change may still be bringing")
	}
	clk.add(500 * time.Millisecond)
	h.deliver(s, beat(7, 101, r1b))
	env := h.recv()
	get := env.GetGetSnapshot()
	if get == nil || get.GetUnit() != 9 || len(get.GetChunks()) != 1 || get.GetChunks()[0] != pb.ChunkOf(r1.App) {
		t.Fatalf("want a get_snapshot for chunk %d, got %v", pb.ChunkOf(r1.App), env)
	}
	// Asked already: the next heartbeat within the retry does not ask again.
	h.deliver(s, beat(7, 101, r1b))
	if !h.quiet(s) {
		t.Fatal("asked twice within the retry interval")
	}
	h.deliver(s, &pb.Envelope{Body: &pb.Envelope_SendSnapshot{SendSnapshot: &pb.SendSnapshot{Host: 7, Generation: 101,
		Chunks: get.GetChunks(), Rows: []*pb.Row{r1b}}}})
	h.deliver(s, beat(7, 101, r1b))
	if !h.quiet(s) {
		t.Fatal("still asking after the snapshot")
	}
	s.Read(func(c *Cache) {
		checkInvariants(t, c)
		if c.Host(7).Rows[pb.Key(r1.App)].GetLoad() != 90 {
			t.Fatal("snapshot not applied")
		}
	})
}

// TestFirstContactAsksAtOnce: a unit that has never heard of a host asks
// for everything its first heartbeat lists.
func TestFirstContactAsksAtOnce(t *testing.T) {
	s, _ := newTestServer(t, nil)
	h := newHost(t, nil)
	h.deliver(s, beat(7, 100, testRow("10.0.0.1:80", pb.Health_HEALTH_HEALTHY, 10)))
	if h.recv().GetGetSnapshot() == nil {
		t.Fatal("no snapshot request on first contact")
	}
}

func TestAging(t *testing.T) {
	s, clk := newTestServer(t, nil)
	h := newHost(t, nil)
	r := testRow("10.0.0.1:80", pb.Health_HEALTH_HEALTHY, 10)
	h.deliver(s, change(7, 100, add(r)))
	h.deliver(s, beat(7, 100, r))
	clk.add(1900 * time.Millisecond) // under 4 × 500 ms
	if s.Age() {
		t.Fatal("aged out early")
	}
	clk.add(200 * time.Millisecond)
	if !s.Age() || s.Stats().AgedOut != 1 {
		t.Fatal("not aged out after 4 missed heartbeats")
	}
	s.Read(func(c *Cache) { checkInvariants(t, c) })
}

// TestLeaderVouches: in membership mode a leader's heartbeat keeps its
// members alive; in aggregate mode their own heartbeats inside the
// leader's message do.
func TestLeaderVouches(t *testing.T) {
	s, clk := newTestServer(t, nil)
	leader := newHost(t, nil)
	hb := beat(1, 100).GetHeartbeat()
	hb.Members = []uint32{2, 3}
	for range 5 {
		leader.deliver(s, &pb.Envelope{Body: &pb.Envelope_Aggregate{Aggregate: &pb.Aggregate{Leader: 1, Beats: []*pb.Heartbeat{hb}}}})
		clk.add(time.Second)
		s.Age()
	}
	s.Read(func(c *Cache) {
		if c.Len() != 3 || c.Host(2) == nil || c.Host(2).Leader != 1 {
			t.Fatalf("members not kept alive: %v", c.HostIDs())
		}
	})
	// The leader stops vouching for 3 and says goodbye for 2.
	hb.Members = nil
	leader.deliver(s, &pb.Envelope{Body: &pb.Envelope_Aggregate{Aggregate: &pb.Aggregate{Leader: 1, Beats: []*pb.Heartbeat{hb},
		Goodbyes: []*pb.Goodbye{{Host: 2}}}}})
	clk.add(2100 * time.Millisecond)
	leader.deliver(s, &pb.Envelope{Body: &pb.Envelope_Aggregate{Aggregate: &pb.Aggregate{Leader: 1, Beats: []*pb.Heartbeat{hb}}}})
	s.Age()
	s.Read(func(c *Cache) {
		if ids := c.HostIDs(); len(ids) != 1 || ids[0] != 1 {
			t.Fatalf("hosts %v, want only the leader", ids)
		}
	})
}

func TestPostulate(t *testing.T) {
	s, _ := newTestServer(t, nil)
	h := newHost(t, nil)
	r := testRow("10.0.0.1:80", pb.Health_HEALTH_HEALTHY, 10)
	h.deliver(s, change(7, 100, add(r)))
	post := func(st pb.State) {
		h.deliver(s, &pb.Envelope{Body: &pb.Envelope_Postulate{Postulate: &pb.PostulateState{Host: 7, App: r.App, State: st, Seq: 5}}})
	}
	post(pb.State_STATE_ACTIVE)
	if !h.quiet(s) {
		t.Fatal("agreement is silence, but the unit answered")
	}
	post(pb.State_STATE_DRAINING)
	w := h.recv().GetPostulateWrong()
	if w == nil || w.GetHeld() != pb.State_STATE_ACTIVE || w.GetSeq() != 5 || w.GetUnit() != 9 {
		t.Fatalf("want postulate_wrong holding active, got %v", w)
	}
	if h.recv().GetGetSnapshot() == nil {
		t.Fatal("a unit that disagrees should also ask to repair its copy")
	}
}

// TestRefusals: malformed, unauthenticated and invalid datagrams are
// counted by reason and change nothing.
func TestRefusals(t *testing.T) {
	key := []byte("0123456789abcdef")
	s, _ := newTestServer(t, key)
	good := newHost(t, key)
	stranger := newHost(t, nil)
	r := testRow("10.0.0.1:80", pb.Health_HEALTH_HEALTHY, 10)
	good.deliver(s, change(7, 100, add(r)))
	stranger.deliver(s, change(7, 101, &pb.RowOp{Op: pb.RowOp_OP_DELETE, Row: &pb.Row{App: r.App}}))
	in, _ := pb.NewCodec(key)
	s.Receive(in, []byte("garbage"), good.src)
	bad := testRow("10.0.0.1:80", pb.Health_HEALTH_HEALTHY, 10)
	bad.Load = 250
	good.deliver(s, change(7, 102, &pb.RowOp{Op: pb.RowOp_OP_UPDATE, Row: bad}))
	st := s.Stats()
	if st.Refused["unauthenticated"] != 1 || st.Refused["not_health"] != 1 || st.Refused["invalid"] != 1 {
		t.Fatalf("refusals: %v", st.Refused)
	}
	s.Read(func(c *Cache) {
		checkInvariants(t, c)
		if got := c.Host(7).Rows[pb.Key(r.App)]; got == nil || got.GetLoad() != 10 {
			t.Fatalf("a refused message changed the cache: %v", got)
		}
	})
}

// FuzzReceive: no datagram panics the server or breaks the cache's
// invariants; seeds cover every message kind.
func FuzzReceive(f *testing.F) {
	codec, _ := pb.NewCodec(nil)
	r := testRow("10.0.0.1:80", pb.Health_HEALTH_HEALTHY, 10)
	for _, env := range []*pb.Envelope{
		beat(7, 100, r), change(7, 100, add(r)),
		{Body: &pb.Envelope_Goodbye{Goodbye: &pb.Goodbye{Host: 7}}},
		{Body: &pb.Envelope_SendSnapshot{SendSnapshot: &pb.SendSnapshot{Host: 7, Chunks: []uint32{pb.ChunkOf(r.App)}, Rows: []*pb.Row{r}}}},
		{Body: &pb.Envelope_GetSnapshot{GetSnapshot: &pb.GetSnapshot{Unit: 3}}},
		{Body: &pb.Envelope_Postulate{Postulate: &pb.PostulateState{Host: 7, App: r.App, State: pb.State_STATE_DRAINING}}},
		{Body: &pb.Envelope_PostulateWrong{PostulateWrong: &pb.PostulateWrong{Unit: 3, Host: 7, App: r.App, Missing: true}}},
		{Body: &pb.Envelope_Aggregate{Aggregate: &pb.Aggregate{Leader: 1, Beats: []*pb.Heartbeat{beat(7, 1, r).GetHeartbeat()}}}},
	} {
		b, _ := codec.Encode(env, false)
		f.Add(bytes.Clone(b))
	}
	s, err := New(Options{Unit: 9, Log: zerolog.Nop()})
	if err != nil {
		f.Fatal(err)
	}
	in, _ := pb.NewCodec(nil)
	src := netip.MustParseAddrPort("127.0.0.1:9")
	f.Fuzz(func(t *testing.T, b []byte) {
		s.Receive(in, b, src)
		s.Age()
		s.Read(func(c *Cache) { checkInvariants(t, c) })
	})
}
