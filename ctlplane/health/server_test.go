package health

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"google.golang.org/protobuf/proto"

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

// testMaster is the units' master secret in these tests.
var testMaster = []byte("0123456789abcdef0123456789abcdef")

// hostKey is host id's key for grant, from testMaster.
func hostKey(t testing.TB, id uint32, grant string) *pb.HostKey {
	t.Helper()
	g, err := pb.ParseGrant(grant)
	if err != nil {
		t.Fatal(err)
	}
	k, err := pb.NewHostKey(testMaster, id, g)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func newTestServer(t *testing.T, master []byte) (*Server, *clock) {
	t.Helper()
	clk := &clock{t: time.Unix(1_700_000_000, 0)}
	return newTestServerAt(t, master, clk), clk
}

func newTestServerAt(t *testing.T, master []byte, clk *clock) *Server {
	t.Helper()
	s, err := New(Options{Listen: "127.0.0.1:0", Unit: 9, Master: master, Missed: 4, Log: zerolog.Nop(), now: clk.now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.conn.Close() })
	return s
}

// host is a test's stand-in for an agent: a real UDP socket, and the
// key of one host (nil: unsigned frames that claim whichever host the
// message names, as a unit without a master secret takes them).
type host struct {
	t      *testing.T
	conn   *net.UDPConn
	codec  *pb.Codec
	src    netip.AddrPort
	key    *pb.HostKey
	marker *pb.HostKey // quiet's marker host, on the same socket
	seq    *pb.Sequencer
	clk    *clock
	marks  uint64 // quiet's markers sent
	last   []byte // the last frame delivered
}

func newHost(t *testing.T, clk *clock, key *pb.HostKey) *host {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	codec, _ := pb.NewCodec()
	h := &host{t: t, conn: c, codec: codec, src: c.LocalAddr().(*net.UDPAddr).AddrPort(), key: key, seq: pb.NewSequencer(clk.now()), clk: clk}
	if key != nil {
		h.marker = hostKey(t, markerHost, "10.9.9.9")
	}
	return h
}

// hostOf is the host a message speaks for.
func hostOf(env *pb.Envelope) uint32 {
	switch b := env.GetBody().(type) {
	case *pb.Envelope_Heartbeat:
		return b.Heartbeat.GetHost()
	case *pb.Envelope_Goodbye:
		return b.Goodbye.GetHost()
	case *pb.Envelope_RowChange:
		return b.RowChange.GetHost()
	case *pb.Envelope_SendSnapshot:
		return b.SendSnapshot.GetHost()
	case *pb.Envelope_Postulate:
		return b.Postulate.GetHost()
	case *pb.Envelope_Aggregate:
		return b.Aggregate.GetLeader()
	}
	return 0
}

// frame encodes env as h would send it now, signed with key (nil: h's
// own, or the marker's for the marker host).
func (h *host) frame(env *pb.Envelope, key *pb.HostKey) []byte {
	h.t.Helper()
	now := h.clk.now()
	hdr := &pb.Header{Host: hostOf(env), Sender: hostOf(env), Seq: h.seq.Next(now), Time: uint64(now.UnixMilli())}
	var k []byte
	if key == nil && h.key != nil {
		key = h.key
		if hostOf(env) == markerHost {
			key = h.marker
		}
	}
	if key != nil {
		hdr.Host, hdr.Sender, hdr.Grant, k = key.Host, key.Host, key.Grant, key.Key
	}
	b, err := h.codec.Encode(env, hdr, k, false)
	if err != nil {
		h.t.Fatal(err)
	}
	return bytes.Clone(b)
}

// deliver encodes env and hands it to the server as if it came from h
// (synchronously, so tests need no waiting).
func (h *host) deliver(s *Server, env *pb.Envelope) {
	h.t.Helper()
	h.last = h.frame(env, nil)
	h.deliverBytes(s, h.last)
}

func (h *host) deliverBytes(s *Server, b []byte) {
	in, _ := pb.NewCodec()
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
	var keys pb.Keys
	if h.key != nil {
		keys = func(hd *pb.Header) []byte {
			if hd.Host == h.key.Host {
				return h.key.Key
			}
			return h.marker.Key
		}
	}
	env, hdr, err := h.codec.Decode(buf[:n], keys)
	if err != nil {
		h.t.Fatal(err)
	}
	if !hdr.FromUnit || hdr.Sender != 9 {
		h.t.Fatalf("server's frame header %+v", hdr)
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
	s, clk := newTestServer(t, nil)
	h := newHost(t, clk, nil)
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
	h := newHost(t, clk, nil)
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
	s, clk := newTestServer(t, nil)
	h := newHost(t, clk, nil)
	h.deliver(s, beat(7, 100, testRow("10.0.0.1:80", pb.Health_HEALTH_HEALTHY, 10)))
	if h.recv().GetGetSnapshot() == nil {
		t.Fatal("no snapshot request on first contact")
	}
}

func TestAging(t *testing.T) {
	s, clk := newTestServer(t, nil)
	h := newHost(t, clk, nil)
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
// members alive, but only members whose own heartbeat named it as their
// leader, and only for as long as they allowed.
func TestLeaderVouches(t *testing.T) {
	s, clk := newTestServer(t, testMaster)
	leader := newHost(t, clk, hostKey(t, 1, "10.0.1.0/24"))
	m2 := newHost(t, clk, hostKey(t, 2, "10.0.2.0/24"))
	// Host 2 consents to be vouched for by 1 for 10 s; host 3 (never
	// heard) and host 4 (heard, without consent) do not.
	hb2 := beat(2, 100).GetHeartbeat()
	hb2.Leader, hb2.VouchMs = 1, 10000
	m2.deliver(s, &pb.Envelope{Body: &pb.Envelope_Heartbeat{Heartbeat: hb2}})
	newHost(t, clk, hostKey(t, 4, "10.0.4.0/24")).deliver(s, beat(4, 100))
	hb := beat(1, 100).GetHeartbeat()
	hb.Members = []uint32{2, 3, 4}
	for range 5 {
		leader.deliver(s, &pb.Envelope{Body: &pb.Envelope_Aggregate{Aggregate: &pb.Aggregate{Leader: 1, Own: hb}}})
		clk.add(time.Second)
		s.Age()
	}
	s.Read(func(c *Cache) {
		if ids := c.HostIDs(); len(ids) != 2 || c.Host(2) == nil || c.Host(2).Leader != 1 {
			t.Fatalf("hosts %v: want 1 and 2, 2 vouched for by 1", ids)
		}
	})
	if n := s.Stats().Refused["vouch_not_authorised"]; n != 10 {
		t.Fatalf("vouching without consent refused %d times, want 10 (hosts 3 and 4, five times)", n)
	}
	// Past the consent's 10 s the leader no longer keeps 2 alive.
	for range 8 {
		leader.deliver(s, &pb.Envelope{Body: &pb.Envelope_Aggregate{Aggregate: &pb.Aggregate{Leader: 1, Own: hb}}})
		clk.add(time.Second)
		s.Age()
	}
	s.Read(func(c *Cache) {
		if ids := c.HostIDs(); len(ids) != 1 || ids[0] != 1 {
			t.Fatalf("hosts %v, want only the leader", ids)
		}
	})
}

// TestRelayedFrames: a leader relays its members' own frames; the unit
// checks each as if it came directly, so a leader can neither forge a
// member's heartbeat nor replay one.
func TestRelayedFrames(t *testing.T) {
	s, clk := newTestServer(t, testMaster)
	leaderKey := hostKey(t, 1, "10.0.1.0/24")
	leader := newHost(t, clk, leaderKey)
	m2 := newHost(t, clk, hostKey(t, 2, "10.0.2.0/24"))
	r := testRow("10.0.2.2:80", pb.Health_HEALTH_HEALTHY, 10)
	m2.deliver(s, change(2, 100, add(r)))
	own := m2.frame(beat(2, 100, r), nil)
	agg := &pb.Envelope{Body: &pb.Envelope_Aggregate{Aggregate: &pb.Aggregate{Leader: 1, Own: beat(1, 5).GetHeartbeat(), Frames: [][]byte{own}}}}
	leader.deliver(s, agg)
	s.Read(func(c *Cache) {
		if h := c.Host(2); h == nil || h.Leader != 1 || len(h.Rows) != 1 {
			t.Fatalf("member 2 not heard through leader 1: %+v", h)
		}
	})
	if n := s.Stats().Received["relayed_heartbeat"]; n != 1 {
		t.Fatalf("relayed heartbeats: %d", n)
	}
	// The same member frame again, in a new aggregate: a replay.
	leader.deliver(s, agg)
	// A heartbeat for host 2 that the leader made and signed itself.
	forged := leader.frame(beat(2, 101), leaderKey)
	leader.deliver(s, &pb.Envelope{Body: &pb.Envelope_Aggregate{Aggregate: &pb.Aggregate{Leader: 1, Own: beat(1, 5).GetHeartbeat(), Frames: [][]byte{forged}}}})
	// A member's goodbye relayed: leaders relay heartbeats only.
	bye := m2.frame(&pb.Envelope{Body: &pb.Envelope_Goodbye{Goodbye: &pb.Goodbye{Host: 2}}}, nil)
	leader.deliver(s, &pb.Envelope{Body: &pb.Envelope_Aggregate{Aggregate: &pb.Aggregate{Leader: 1, Own: beat(1, 5).GetHeartbeat(), Frames: [][]byte{bye}}}})
	st := s.Stats()
	if st.Refused["replay"] != 1 || st.Refused["not_own_host"] != 1 || st.Refused["direction"] != 1 || st.Received["relayed_heartbeat"] != 1 {
		t.Fatalf("refused %v, received %v", st.Refused, st.Received)
	}
	s.Read(func(c *Cache) {
		if c.Host(2) == nil {
			t.Fatal("a relayed goodbye removed the member")
		}
	})
}

func TestPostulate(t *testing.T) {
	s, clk := newTestServer(t, nil)
	h := newHost(t, clk, nil)
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
	s, clk := newTestServer(t, testMaster)
	good := newHost(t, clk, hostKey(t, 7, "10.0.0.0/24"))
	stranger := newHost(t, clk, nil)
	r := testRow("10.0.0.1:80", pb.Health_HEALTH_HEALTHY, 10)
	good.deliver(s, change(7, 100, add(r)))
	stranger.deliver(s, change(7, 101, &pb.RowOp{Op: pb.RowOp_OP_DELETE, Row: &pb.Row{App: r.App}}))
	in, _ := pb.NewCodec()
	s.Receive(in, []byte("garbage"), good.src)
	// Version 1: its 4-byte header, then an envelope.
	s.Receive(in, append([]byte{'T', 'H', 1, 0}, 0x08, 0x01), good.src)
	bad := testRow("10.0.0.1:80", pb.Health_HEALTH_HEALTHY, 10)
	bad.Load = 250
	good.deliver(s, change(7, 102, &pb.RowOp{Op: pb.RowOp_OP_UPDATE, Row: bad}))
	st := s.Stats()
	if st.Refused["unauthenticated"] != 1 || st.Refused["not_health"] != 1 || st.Refused["invalid"] != 1 || st.Refused["old_version"] != 1 {
		t.Fatalf("refusals: %v", st.Refused)
	}
	s.Read(func(c *Cache) {
		checkInvariants(t, c)
		if got := c.Host(7).Rows[pb.Key(r.App)]; got == nil || got.GetLoad() != 10 {
			t.Fatalf("a refused message changed the cache: %v", got)
		}
	})
}

// TestReplayedGoodbyeRefused: the attack of issue 13: a goodbye captured
// on the wire and sent again later, from another address, cleared its
// host. Now the host comes back and stays.
func TestReplayedGoodbyeRefused(t *testing.T) {
	s, clk := newTestServer(t, testMaster)
	h := newHost(t, clk, hostKey(t, 7, "10.0.0.0/24"))
	r := testRow("10.0.0.1:80", pb.Health_HEALTH_HEALTHY, 10)
	h.deliver(s, change(7, 100, add(r)))
	inactive := proto.Clone(r).(*pb.Row)
	inactive.Target = pb.State_STATE_INACTIVE
	h.deliver(s, change(7, 101, &pb.RowOp{Op: pb.RowOp_OP_UPDATE, Row: inactive}))
	oldChange := h.last
	h.deliver(s, change(7, 102, &pb.RowOp{Op: pb.RowOp_OP_UPDATE, Row: r}))
	h.deliver(s, &pb.Envelope{Body: &pb.Envelope_Goodbye{Goodbye: &pb.Goodbye{Host: 7}}})
	goodbye := h.last
	// The agent restarts: a new sequence epoch, a new generation.
	clk.add(time.Second)
	h.seq = pb.NewSequencer(clk.now())
	h.deliver(s, change(7, 200, add(r)))
	h.deliver(s, beat(7, 200, r))
	heard := h.last
	// Replays, from another address: the goodbye, the old change that
	// made the application inactive, and the last heartbeat.
	other := newHost(t, clk, nil)
	for _, b := range [][]byte{goodbye, oldChange, heard} {
		other.deliverBytes(s, b)
	}
	// Long after the capture, when the window may have forgotten it:
	// refused by its time.
	clk.add(31 * time.Second)
	other.deliverBytes(s, goodbye)
	st := s.Stats()
	// The old change was sent before the goodbye: that run is over.
	if st.Refused["replay"] != 2 || st.Refused["before_goodbye"] != 1 || st.Refused["stale"] != 1 || st.Goodbyes != 1 {
		t.Fatalf("refused %v, goodbyes %d", st.Refused, st.Goodbyes)
	}
	s.Read(func(c *Cache) {
		ho := c.Host(7)
		if ho == nil || ho.Rows[pb.Key(r.App)].GetTarget() != pb.State_STATE_ACTIVE {
			t.Fatalf("host 7 after the replays: %+v", ho)
		}
	})
}

// TestImpersonationRefused: a host holding a valid key of its own can
// speak neither as another host nor about another host's endpoints, and
// the real host's later changes still count.
func TestImpersonationRefused(t *testing.T) {
	s, clk := newTestServer(t, testMaster)
	real7 := newHost(t, clk, hostKey(t, 7, "10.0.7.2"))
	r := testRow("10.0.7.2:8080", pb.Health_HEALTH_HEALTHY, 10)
	real7.deliver(s, change(7, 100, add(r)))
	real7.deliver(s, beat(7, 100, r))
	rogueKey := hostKey(t, 9, "10.0.9.2")
	rogue := newHost(t, clk, rogueKey)
	inactive := proto.Clone(r).(*pb.Row)
	inactive.Target, inactive.Current = pb.State_STATE_INACTIVE, pb.State_STATE_INACTIVE
	// As host 7, signed with host 9's key (the unit checks host 7's).
	b := rogue.frame(change(7, 1<<60, &pb.RowOp{Op: pb.RowOp_OP_UPDATE, Row: inactive}), nil)
	hdrHost := func(b []byte, id uint32) []byte {
		b = bytes.Clone(b)
		b[4], b[5], b[6], b[7] = byte(id>>24), byte(id>>16), byte(id>>8), byte(id)
		b[8], b[9], b[10], b[11] = b[4], b[5], b[6], b[7]
		return b
	}
	rogue.deliverBytes(s, hdrHost(b, 7))
	// As itself, about host 7: a goodbye for 7, a change of 7's rows.
	rogue.deliver(s, change(7, 1<<60, &pb.RowOp{Op: pb.RowOp_OP_UPDATE, Row: inactive}))
	rogue.deliver(s, &pb.Envelope{Body: &pb.Envelope_Goodbye{Goodbye: &pb.Goodbye{Host: 7}}})
	// As host 9 naming host 7's endpoint as inactive.
	rogue.deliver(s, change(9, 1, add(inactive)))
	rogue.deliver(s, &pb.Envelope{Body: &pb.Envelope_Postulate{Postulate: &pb.PostulateState{Host: 9, App: r.App, State: pb.State_STATE_INACTIVE}}})
	st := s.Stats()
	if st.Refused["authentication"] != 1 || st.Refused["not_own_host"] != 2 || st.Refused["endpoint_not_granted"] != 2 {
		t.Fatalf("refused %v", st.Refused)
	}
	// The real host's next change is applied, not discarded as stale.
	r2 := testRow("10.0.7.2:8080", pb.Health_HEALTH_HEALTHY, 70)
	real7.deliver(s, change(7, 101, &pb.RowOp{Op: pb.RowOp_OP_UPDATE, Row: r2}))
	s.Read(func(c *Cache) {
		checkInvariants(t, c)
		if c.Host(9) != nil {
			t.Fatal("the rogue host got a place in the cache")
		}
		eps := c.OfType(pb.TypeKey(r.App))
		if len(eps) != 1 || eps[0].Host != 7 || eps[0].Row.GetLoad() != 70 || eps[0].Row.GetTarget() != pb.State_STATE_ACTIVE {
			t.Fatalf("endpoints of the type: %v", eps)
		}
	})
	if s.Stats().StaleChanges != 0 {
		t.Fatal("the real host's change was taken for stale")
	}
}

// TestRestarts: an agent that restarts starts a new sequence epoch and is
// heard at once; a unit that restarts (no replay state) takes the next
// fresh datagram, and refuses a captured one older than the freshness
// window.
func TestRestarts(t *testing.T) {
	s, clk := newTestServer(t, testMaster)
	key := hostKey(t, 7, "10.0.0.0/24")
	h := newHost(t, clk, key)
	r := testRow("10.0.0.1:80", pb.Health_HEALTH_HEALTHY, 10)
	h.deliver(s, change(7, 100, add(r)))
	captured := h.last
	clk.add(5 * time.Millisecond)
	h2 := newHost(t, clk, key) // the restarted agent: a new sequencer
	r2 := testRow("10.0.0.1:80", pb.Health_HEALTH_HEALTHY, 20)
	h2.deliver(s, change(7, 200, &pb.RowOp{Op: pb.RowOp_OP_UPDATE, Row: r2}))
	if st := s.Stats(); len(st.Refused) != 0 || st.Received["row_change"] != 2 {
		t.Fatalf("restarted agent: refused %v, received %v", st.Refused, st.Received)
	}
	// The unit restarts 40 s later: the captured frame is refused by
	// its time, the agent's next one is taken.
	clk.add(40 * time.Second)
	s2 := newTestServerAt(t, testMaster, clk)
	h.deliverBytes(s2, captured)
	h2.deliver(s2, change(7, 300, add(r2)))
	st := s2.Stats()
	if st.Refused["stale"] != 1 || st.Received["row_change"] != 1 {
		t.Fatalf("restarted unit: refused %v, received %v", st.Refused, st.Received)
	}
	// Replay state is forgotten once time alone refuses what it would.
	clk.add(61 * time.Second)
	s2.Age()
	s2.mu.Lock()
	n := len(s2.senders)
	s2.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d senders' replay state kept past twice the freshness window", n)
	}
}

// TestWriteSeeds keeps testdata/fuzz/FuzzReceive in step with the seeds.
func TestWriteSeeds(t *testing.T) {
	if os.Getenv("TETHER_WRITE_SEEDS") == "" {
		t.Skip("set TETHER_WRITE_SEEDS=1 to rewrite testdata/fuzz/FuzzReceive")
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzReceive")
	os.RemoveAll(dir)
	os.MkdirAll(dir, 0o755)
	for i, b := range fuzzSeeds(t) {
		body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", b)
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("seed-%d", i)), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// fuzzTime is the fuzz seeds' send time and the fuzzed servers' clock.
var fuzzTime = time.Unix(1_700_000_000, 0)

// fuzzSeeds are frames of every kind from host 7, signed with its key
// at fuzzTime, and the same unsigned.
func fuzzSeeds(t testing.TB) [][]byte {
	codec, _ := pb.NewCodec()
	key := hostKey(t, 7, "10.0.0.0/8")
	member := hostKey(t, 8, "10.0.8.0/24")
	r := testRow("10.0.0.1:80", pb.Health_HEALTH_HEALTHY, 10)
	at := uint64(fuzzTime.UnixMilli())
	mhb := beat(8, 1).GetHeartbeat()
	mhb.Leader, mhb.VouchMs = 7, 5000
	mb, err := codec.Encode(&pb.Envelope{Body: &pb.Envelope_Heartbeat{Heartbeat: mhb}},
		&pb.Header{Host: 8, Sender: 8, Seq: 1, Time: at, Grant: member.Grant}, member.Key, false)
	if err != nil {
		t.Fatal(err)
	}
	mb = bytes.Clone(mb)
	own := beat(7, 100, r).GetHeartbeat()
	own.Members = []uint32{8}
	var out [][]byte
	for i, env := range []*pb.Envelope{
		beat(7, 100, r), change(7, 100, add(r)),
		{Body: &pb.Envelope_Goodbye{Goodbye: &pb.Goodbye{Host: 7}}},
		{Body: &pb.Envelope_SendSnapshot{SendSnapshot: &pb.SendSnapshot{Host: 7, Chunks: []uint32{pb.ChunkOf(r.App)}, Rows: []*pb.Row{r}}}},
		{Body: &pb.Envelope_GetSnapshot{GetSnapshot: &pb.GetSnapshot{Unit: 3}}},
		{Body: &pb.Envelope_Postulate{Postulate: &pb.PostulateState{Host: 7, App: r.App, State: pb.State_STATE_DRAINING}}},
		{Body: &pb.Envelope_PostulateWrong{PostulateWrong: &pb.PostulateWrong{Unit: 3, Host: 7, App: r.App, Missing: true}}},
		{Body: &pb.Envelope_Aggregate{Aggregate: &pb.Aggregate{Leader: 7, Own: own, Frames: [][]byte{mb}}}},
	} {
		hdr := &pb.Header{Host: 7, Sender: 7, Seq: uint64(i + 1), Time: at, Grant: key.Grant}
		for _, k := range [][]byte{key.Key, nil} {
			b, err := codec.Encode(env, hdr, k, false)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, bytes.Clone(b))
		}
	}
	return out
}

// FuzzReceive: no datagram panics the server or breaks the cache's
// invariants, with a master secret or without; seeds cover every
// message kind.
func FuzzReceive(f *testing.F) {
	for _, b := range fuzzSeeds(f) {
		f.Add(b)
	}
	clk := &clock{t: fuzzTime}
	var servers []*Server
	for _, master := range [][]byte{testMaster, nil} {
		s, err := New(Options{Unit: 9, Master: master, Log: zerolog.Nop(), now: clk.now})
		if err != nil {
			f.Fatal(err)
		}
		servers = append(servers, s)
	}
	in, _ := pb.NewCodec()
	src := netip.MustParseAddrPort("127.0.0.1:9")
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, s := range servers {
			s.Receive(in, b, src)
			s.Age()
			s.Read(func(c *Cache) { checkInvariants(t, c) })
		}
	})
}

// BenchmarkReceiveHeartbeat: what authentication and replay protection
// add to a unit's work per datagram (a heartbeat of one row), against
// the same without a master secret.
func BenchmarkReceiveHeartbeat(b *testing.B) {
	for _, keyed := range []bool{false, true} {
		b.Run(fmt.Sprintf("keyed=%v", keyed), func(b *testing.B) {
			clk := &clock{t: fuzzTime}
			var master []byte
			var key *pb.HostKey
			if keyed {
				master, key = testMaster, hostKey(b, 7, "10.0.0.0/24")
			}
			s, err := New(Options{Unit: 9, Master: master, Log: zerolog.Nop(), now: clk.now})
			if err != nil {
				b.Fatal(err)
			}
			codec, _ := pb.NewCodec()
			in, _ := pb.NewCodec()
			env := beat(7, 100, testRow("10.0.0.1:80", pb.Health_HEALTH_HEALTHY, 10))
			hdr := &pb.Header{Host: 7, Sender: 7, Time: uint64(fuzzTime.UnixMilli())}
			var k []byte
			if key != nil {
				hdr.Grant, k = key.Grant, key.Key
			}
			frames := make([][]byte, b.N)
			for i := range frames {
				hdr.Seq = uint64(i + 1)
				f, _ := codec.Encode(env, hdr, k, false)
				frames[i] = bytes.Clone(f)
			}
			src := netip.MustParseAddrPort("127.0.0.1:9")
			b.ResetTimer()
			for i := range b.N {
				s.Receive(in, frames[i], src)
			}
			b.StopTimer()
			if st := s.Stats(); len(st.Refused) != 0 {
				b.Fatalf("refused %v", st.Refused)
			}
		})
	}
}
