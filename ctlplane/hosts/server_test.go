package hosts

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/proto"

	"github.com/tetherlb/tether/agent/streams"
	pb "github.com/tetherlb/tether/api/hostpb"
	"github.com/tetherlb/tether/api/unit"
	"github.com/tetherlb/tether/internal/mtls"
)

// pki is a test CA with a unit's and two hosts' certificates, and a
// host certificate from another CA.
type pki struct {
	unit, host7, foreign7 mtls.Files
}

func newPKI(t testing.TB) pki {
	t.Helper()
	dir, other := t.TempDir(), t.TempDir()
	ca, _, err := mtls.OpenCA(dir, "test")
	if err != nil {
		t.Fatal(err)
	}
	var p pki
	if p.unit, err = ca.IssueUnit(dir, "unit-a", []netip.Addr{netip.MustParseAddr("127.0.0.1")}); err != nil {
		t.Fatal(err)
	}
	if p.host7, err = ca.IssueHost(dir, 7, netip.MustParseAddr("10.1.0.7")); err != nil {
		t.Fatal(err)
	}
	oca, _, err := mtls.OpenCA(other, "other")
	if err != nil {
		t.Fatal(err)
	}
	f, err := oca.IssueHost(other, 7)
	if err != nil {
		t.Fatal(err)
	}
	// The foreign host trusts the unit's CA (so the unit's certificate
	// passes) but holds a certificate the unit's CA never signed.
	p.foreign7 = mtls.Files{CA: p.unit.CA, Cert: f.Cert, Key: f.Key}
	return p
}

// startServer runs a unit's stream server on addr until the returned
// stop is called (or the test ends).
func startServer(t *testing.T, p pki, addr string) (*Server, func()) {
	return startServerWith(t, p, addr, nil)
}

// startServerWith is startServer with options of the test's (set adds
// them to the defaults).
func startServerWith(t testing.TB, p pki, addr string, set func(*Options)) (*Server, func()) {
	t.Helper()
	cfg, err := mtls.Server(p.unit, "unit-a")
	if err != nil {
		t.Fatal(err)
	}
	var s *Server
	// The port of a server just stopped can take a moment to be free.
	deadline := time.Now().Add(5 * time.Second)
	for {
		opts := Options{Listen: addr, TLS: cfg, Unit: "unit-a", Log: zerolog.Nop()}
		if set != nil {
			set(&opts)
		}
		s, err = New(opts)
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	s.SetReady()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	var once sync.Once
	stop := func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	return s, stop
}

// startAgent runs an agent's streams with host's certificate, saying
// it is host id, to the server at addr.
func startAgent(t *testing.T, files mtls.Files, certHost, id uint32, addr string) *streams.Streams {
	return startAgentWith(t, files, certHost, id, addr, nil)
}

// startAgentWith is startAgent with options of the test's (set adds them
// to the defaults: a sink, a migrator).
func startAgentWith(t testing.TB, files mtls.Files, certHost, id uint32, addr string, set func(*streams.Options)) *streams.Streams {
	t.Helper()
	cfg, err := mtls.Client(files, certHost)
	if err != nil {
		t.Fatal(err)
	}
	opts := streams.Options{Host: id, Units: []streams.Unit{{Name: "unit-a", Address: addr}}, TLS: cfg,
		MinBackoff: 10 * time.Millisecond, MaxBackoff: 200 * time.Millisecond, Log: zerolog.Nop()}
	if set != nil {
		set(&opts)
	}
	a, err := streams.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { a.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return a
}

// dialAsHost7 connects to s with host 7's certificate, for a test that
// speaks the stream's messages itself; the connection closes with the
// test.
func dialAsHost7(t testing.TB, p pki, s *Server) *grpc.ClientConn {
	t.Helper()
	cfg, err := mtls.Client(p.host7, 7)
	if err != nil {
		t.Fatal(err)
	}
	cfg.ServerName = "unit-a"
	conn, err := grpc.NewClient(s.Addr().String(), grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// waitFor polls cond until it holds, failing the test after 10 s.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func mapping(id uint32, clientPort uint32) *pb.Mapping {
	return &pb.Mapping{FlowId: id, Tuple: &pb.Tuple{Proto: pb.Proto_PROTO_TCP, Client: []byte{192, 0, 2, 1}, ClientPort: clientPort,
		Vip: []byte{10, 0, 0, 100}, VipPort: 80}}
}

func hostView(s *Server, id uint32) (unit.HostStream, bool) {
	for _, h := range s.View().Streams {
		if h.Host == id {
			return h, true
		}
	}
	return unit.HostStream{}, false
}

// sameSet says whether the agent holds exactly want.
func sameSet(got map[uint32]*pb.Tuple, want map[uint32]*pb.Mapping) bool {
	if len(got) != len(want) {
		return false
	}
	for id, m := range want {
		if !proto.Equal(got[id], m.GetTuple()) {
			return false
		}
	}
	return true
}

// TestStreamResync: the agent gets the set the unit holds for it on
// connect (a full resync), then each change in sequence with
// acknowledgements; a stream that drops and comes back to the same unit
// needs no resync; a unit that restarts (a new boot, another set)
// replaces everything the agent held, and the agent reconnects by itself.
func TestStreamResync(t *testing.T) {
	p := newPKI(t)
	s, stop := startServer(t, p, "127.0.0.1:0")
	addr := s.Addr().String()
	want := map[uint32]*pb.Mapping{}
	var add []*pb.Mapping
	for i := range uint32(1500) { // more than one batch
		m := mapping(i*2+1, 10000+i)
		want[m.FlowId] = m
		add = append(add, m)
	}
	for len(add) > 0 {
		n := min(len(add), pb.MaxBatch)
		if _, err := s.Publish(7, add[:n], nil); err != nil {
			t.Fatal(err)
		}
		add = add[n:]
	}
	a := startAgent(t, p.host7, 7, 7, addr)
	waitFor(t, "the agent holds the unit's set", func() bool {
		got, boot := a.Mappings("unit-a")
		return boot == s.Boot() && sameSet(got, want)
	})
	waitFor(t, "the unit sees the resync acknowledged", func() bool {
		h, ok := hostView(s, 7)
		return ok && h.State == unit.StreamUp && h.Acked == 2 && h.Resync == "full"
	})

	// Changes flow in sequence: one removal, one replacement, one new.
	repl := mapping(3, 443)
	if _, err := s.Publish(7, []*pb.Mapping{repl, mapping(4000, 1)}, []uint32{1}); err != nil {
		t.Fatal(err)
	}
	delete(want, 1)
	want[3], want[4000] = repl, mapping(4000, 1)
	waitFor(t, "the change is applied and acknowledged", func() bool {
		got, _ := a.Mappings("unit-a")
		h, _ := hostView(s, 7)
		return sameSet(got, want) && h.Acked == 3
	})

	// The stream drops; the agent comes back holding what it should.
	s.mu.Lock()
	s.hosts[7].cancel(errors.New("test: drop the stream"))
	s.mu.Unlock()
	waitFor(t, "a second stream without resync", func() bool {
		h, _ := hostView(s, 7)
		st := a.Status()[0]
		return h.State == unit.StreamUp && h.Connects == 2 && h.Resync == "none" && st.Connects == 2 && st.LastResync == "none"
	})
	if st := a.Status()[0]; st.Mappings != len(want) || st.State != streams.StateUp {
		t.Errorf("agent after the drop: %+v", st)
	}

	// The unit restarts with another set: the agent's old mappings are
	// void.
	stop()
	waitFor(t, "the agent to notice the unit went away", func() bool { return a.Status()[0].State != streams.StateUp })
	s2, _ := startServer(t, p, addr)
	want2 := map[uint32]*pb.Mapping{9: mapping(9, 9)}
	if _, err := s2.Publish(7, []*pb.Mapping{want2[9]}, nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the agent resyncs with the restarted unit", func() bool {
		got, boot := a.Mappings("unit-a")
		return boot == s2.Boot() && sameSet(got, want2)
	})
	if st := a.Status()[0]; st.State != streams.StateUp || st.LastResync != "full" || st.UnitBoot != s2.Boot() {
		t.Errorf("agent after the unit's restart: %+v", st)
	}
}

// TestIdentityMismatch: an agent whose hello names host 8 over host 7's
// certificate is refused, counted, and never shows as a stream.
func TestIdentityMismatch(t *testing.T) {
	p := newPKI(t)
	s, _ := startServer(t, p, "127.0.0.1:0")
	a := startAgent(t, p.host7, 7, 8, s.Addr().String())
	waitFor(t, "the refusal", func() bool { return s.View().Refused["identity"] >= 1 })
	waitFor(t, "the agent to see why", func() bool {
		return strings.Contains(a.Status()[0].LastError, "hello names host 8, the certificate host 7")
	})
	if v := s.View(); len(v.Streams) != 0 {
		t.Errorf("streams after a refused hello: %+v", v.Streams)
	}
	if st := a.Status()[0]; st.Connects != 0 || st.State == streams.StateUp {
		t.Errorf("agent: %+v", st)
	}
}

// TestWrongCARefused: a host certificate from another CA fails the TLS
// handshake; the unit counts it and the agent never comes up.
func TestWrongCARefused(t *testing.T) {
	p := newPKI(t)
	s, _ := startServer(t, p, "127.0.0.1:0")
	a := startAgent(t, p.foreign7, 7, 7, s.Addr().String())
	waitFor(t, "two refused handshakes (the agent retries)", func() bool { return s.View().Refused["tls"] >= 2 })
	if v := s.View(); len(v.Streams) != 0 {
		t.Errorf("streams after refused handshakes: %+v", v.Streams)
	}
	if st := a.Status()[0]; st.Connects != 0 || st.LastError == "" {
		t.Errorf("agent: %+v", st)
	}
}

// TestInvalidRefused: a hello of another version and one that is not a
// hello are refused with a count and no state change.
func TestInvalidRefused(t *testing.T) {
	p := newPKI(t)
	s, _ := startServer(t, p, "127.0.0.1:0")
	conn := dialAsHost7(t, p, s)
	for _, c := range []struct {
		reason string
		m      *pb.AgentMessage
	}{
		{"version", &pb.AgentMessage{Version: pb.Version + 1, Body: &pb.AgentMessage_Hello{Hello: &pb.AgentHello{Host: 7, Boot: 1}}}},
		{"invalid", &pb.AgentMessage{Version: pb.Version, Body: &pb.AgentMessage_Hello{Hello: &pb.AgentHello{Host: 7}}}},
		{"protocol", &pb.AgentMessage{Version: pb.Version, Body: &pb.AgentMessage_Ack{Ack: &pb.Ack{}}}},
	} {
		st, err := pb.NewHostStreamClient(conn).Connect(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Send(c.m); err != nil {
			t.Fatal(err)
		}
		if _, err := st.Recv(); err == nil {
			t.Errorf("%s: the unit answered", c.reason)
		}
		if n := s.View().Refused[c.reason]; n != 1 {
			t.Errorf("%s: refused %d times, want 1", c.reason, n)
		}
	}
	if v := s.View(); len(v.Streams) != 0 {
		t.Errorf("streams after refused messages: %+v", v.Streams)
	}
}

// TestTunnelAddressesAndAcks: the unit learns a host's tunnel addresses
// from its certificate (not from anything the host says) and reports
// each acknowledgement, so that
// the flows' held packets can go once the host holds their mappings.
func TestTunnelAddressesAndAcks(t *testing.T) {
	p := newPKI(t)
	acks := make(chan uint64, 16)
	s, _ := startServerWith(t, p, "127.0.0.1:0", func(o *Options) {
		o.TunnelSources = []netip.Addr{netip.MustParseAddr("198.51.100.254")}
		o.OnAck = func(host uint32, seq uint64) {
			if host == 7 {
				acks <- seq
			}
		}
	})
	tunnel := netip.MustParseAddr("10.1.0.7")
	if _, _, ok := s.HostOf(tunnel); ok {
		t.Fatal("a tunnel address is known before its host connected")
	}
	a := startAgent(t, p.host7, 7, 7, s.Addr().String())
	waitFor(t, "host 7's stream", func() bool { _, up, ok := s.HostOf(tunnel); return ok && up })
	if id, _, _ := s.HostOf(tunnel); id != 7 {
		t.Fatalf("tunnel address of host %d, want 7", id)
	}
	if _, _, ok := s.HostOf(netip.MustParseAddr("10.1.0.8")); ok {
		t.Fatal("an address no certificate names has a host")
	}
	<-acks // the resync's
	seq, err := s.Publish(7, []*pb.Mapping{mapping(5, 1234)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for got := range acks {
		if got >= seq {
			break
		}
	}
	if m, _ := a.Mappings("unit-a"); len(m) != 1 {
		t.Fatalf("acknowledged, but the agent holds %d mappings", len(m))
	}
	if got := s.Table(7); len(got) != 1 || got[5] == nil {
		t.Errorf("table %v", got)
	}
}

// orderSink records, in order, the batches and migrations the agent's
// stream hands on.
type orderSink struct {
	mu  sync.Mutex
	log []string
}

func (o *orderSink) note(s string) {
	o.mu.Lock()
	o.log = append(o.log, s)
	o.mu.Unlock()
}

func (o *orderSink) seen() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]string(nil), o.log...)
}

func (o *orderSink) Sources(string, []netip.Addr) error         { return nil }
func (o *orderSink) Replace(string, map[uint32]*pb.Tuple) error { return nil }
func (o *orderSink) Apply(_ string, add []*pb.Mapping, _ []uint32) error {
	for _, m := range add {
		o.note(fmt.Sprintf("mapping %d", m.GetFlowId()))
	}
	return nil
}
func (o *orderSink) Take(_ string, m *pb.Migrate, done func(error)) {
	o.note(fmt.Sprintf("migrate %d", m.GetId()))
	if m.GetId() == 13 {
		done(errors.New("no application"))
		return
	}
	done(nil)
}

// TestMigrateInStreamOrder: a Migrate reaches the host between the
// changes published before and after it, and is itself the change that
// maps its flow: the host takes the connection, then the mapping, and
// acknowledges it in sequence; only a failure has a result; the host's
// end notices reach the unit; a host without a stream gets nothing, a
// flow ID the host holds is refused, and a stream that drops and comes
// back needs no resync (both ends hold the same set).
func TestMigrateInStreamOrder(t *testing.T) {
	p := newPKI(t)
	results := make(chan *pb.MigrateResult, 4)
	ended := make(chan *pb.MigrationEnded, 4)
	s, _ := startServerWith(t, p, "127.0.0.1:0", func(o *Options) {
		o.OnMigrateResult = func(host uint32, r *pb.MigrateResult) {
			if host == 7 {
				results <- r
			}
		}
		o.OnMigrationEnded = func(host uint32, e *pb.MigrationEnded) {
			if host == 7 {
				ended <- e
			}
		}
	})
	mig := func(id uint64) *pb.Migrate {
		data := []byte("GET / HTTP/1.1\r\n\r\n")
		return &pb.Migrate{Id: id, FlowId: 1<<31 | uint32(id), Data: data, State: &pb.TCPState{Client: []byte{10, 9, 0, 1}, ClientPort: 4000 + uint32(id),
			Vip: []byte{192, 0, 2, 10}, VipPort: 80, RemoteIsn: 100, LocalIsn: 200, SndNxt: 201, RcvNxt: 101 + uint32(len(data)), Mss: 1460}}
	}
	if _, err := s.Migrate(7, mig(1)); !errors.Is(err, ErrHostDown) {
		t.Fatalf("Migrate to a host never seen: %v, want ErrHostDown", err)
	}
	sink := &orderSink{}
	a := startAgentWith(t, p.host7, 7, 7, s.Addr().String(), func(o *streams.Options) { o.Sink, o.Migrator = sink, sink })
	waitFor(t, "host 7's stream", func() bool { _, up, ok := s.HostOf(netip.MustParseAddr("10.1.0.7")); return ok && up })

	if _, err := s.Publish(7, []*pb.Mapping{mapping(1, 1000)}, nil); err != nil {
		t.Fatal(err)
	}
	if seq, err := s.Migrate(7, mig(12)); err != nil || seq != 2 {
		t.Fatalf("Migrate: seq %d, %v; want seq 2", seq, err)
	}
	if _, err := s.Publish(7, []*pb.Mapping{mapping(2, 1001)}, nil); err != nil {
		t.Fatal(err)
	}
	if seq, err := s.Migrate(7, mig(13)); err != nil || seq != 4 {
		t.Fatalf("Migrate: seq %d, %v; want seq 4", seq, err)
	}
	taken := mig(14)
	taken.FlowId = 1<<31 | 12
	if _, err := s.Migrate(7, taken); !errors.Is(err, ErrFlowIDTaken) {
		t.Fatalf("Migrate of a flow ID the host holds: %v, want ErrFlowIDTaken", err)
	}
	if r := <-results; r.GetId() != 13 || r.GetError() == "" {
		t.Fatalf("result %v, want the failure only", r)
	}
	waitFor(t, "every change acknowledged", func() bool { v, _ := hostView(s, 7); return v.Acked == 4 })
	want := "mapping 1, migrate 12, mapping 2147483660, mapping 2, migrate 13, mapping 2147483661"
	if got := strings.Join(sink.seen(), ", "); got != want {
		t.Fatalf("the host saw %s, want %s", got, want)
	}
	if tb := s.Table(7); len(tb) != 4 || !proto.Equal(tb[1<<31|12], pb.MigrateMapping(mig(12))) {
		t.Fatalf("the unit's table for the host: %v", tb)
	}
	e := &pb.MigrationEnded{Id: 12, Reason: pb.EndReason_END_REASON_CLOSED, Tuple: mappingOfMig(mig(12))}
	if err := a.SendEnded("unit-a", e); err != nil {
		t.Fatal(err)
	}
	if got := <-ended; !proto.Equal(got, e) {
		t.Fatalf("ended %v, want %v", got, e)
	}
	if v, _ := hostView(s, 7); v.Migrations != 2 {
		t.Errorf("view counts %d migrations, want 2", v.Migrations)
	}
	select {
	case r := <-results:
		t.Fatalf("a second result %v", r)
	default:
	}

	s.mu.Lock()
	s.hosts[7].cancel(errors.New("test: drop the stream"))
	s.mu.Unlock()
	waitFor(t, "a second stream without resync", func() bool {
		h, _ := hostView(s, 7)
		return h.State == unit.StreamUp && h.Connects == 2 && h.Resync == "none"
	})
}

func mappingOfMig(m *pb.Migrate) *pb.Tuple {
	st := m.GetState()
	return &pb.Tuple{Proto: pb.Proto_PROTO_TCP, Client: st.GetClient(), ClientPort: st.GetClientPort(), Vip: st.GetVip(), VipPort: st.GetVipPort()}
}

// resyncSink records the sets the agent's stream replaced its own with.
type resyncSink struct {
	orderSink
	sets chan map[uint32]*pb.Tuple
}

func (r *resyncSink) Replace(_ string, table map[uint32]*pb.Tuple) error {
	r.sets <- table
	return nil
}

// TestHostKnownBeforeResync: as a host's stream begins, OnHostKnown runs
// with the host's tunnel addresses known but its stream not yet up, and
// what it publishes for the host arrives in the host's first resync: a
// flow made before the unit knew which host holds its backend's address
// reaches that host without waiting for another change.
func TestHostKnownBeforeResync(t *testing.T) {
	p := newPKI(t)
	tunnel := netip.MustParseAddr("10.1.0.7")
	type seen struct {
		id, host uint32
		up, ok   bool
	}
	known := make(chan seen, 1)
	var s *Server
	s, _ = startServerWith(t, p, "127.0.0.1:0", func(o *Options) {
		o.OnHostKnown = func(host uint32) {
			id, up, ok := s.HostOf(tunnel)
			if _, err := s.Publish(host, []*pb.Mapping{mapping(5, 1234)}, nil); err != nil {
				t.Error(err)
			}
			known <- seen{id, host, up, ok}
		}
	})
	sink := &resyncSink{sets: make(chan map[uint32]*pb.Tuple, 4)}
	startAgentWith(t, p.host7, 7, 7, s.Addr().String(), func(o *streams.Options) { o.Sink = sink })

	if k := <-known; k != (seen{id: 7, host: 7, up: false, ok: true}) {
		t.Fatalf("OnHostKnown saw %+v: want host 7 known by its tunnel address, its stream not yet up", k)
	}
	set := <-sink.sets
	if len(set) != 1 || set[5].GetClientPort() != 1234 {
		t.Fatalf("the first resync holds %v: want the mapping published as the host became known", set)
	}
}

// TestMigrateLostWithStream: a Migrate the host never got (its hello's
// holding, of this unit's boot, stops below the Migrate's seq) fails
// when the host comes back, before anything on the new stream is
// acknowledged, and its mapping stays out of the resync; a Migrate the
// host got and had not acknowledged stays. A restarted agent (a
// holding of no boot) cannot say what it took: its Migrates stay too.
func TestMigrateLostWithStream(t *testing.T) {
	p := newPKI(t)
	events := make(chan string, 16)
	s, _ := startServerWith(t, p, "127.0.0.1:0", func(o *Options) {
		o.OnMigrateResult = func(_ uint32, r *pb.MigrateResult) { events <- fmt.Sprintf("failed %d", r.GetId()) }
		o.OnAck = func(_ uint32, seq uint64) { events <- fmt.Sprintf("ack %d", seq) }
	})
	conn := dialAsHost7(t, p, s)
	mig := func(id uint64) *pb.Migrate {
		data := []byte("GET / HTTP/1.1\r\n\r\n")
		return &pb.Migrate{Id: id, FlowId: 1<<31 | uint32(id), Data: data, State: &pb.TCPState{Client: []byte{10, 9, 0, 1}, ClientPort: 4000 + uint32(id),
			Vip: []byte{192, 0, 2, 10}, VipPort: 80, RemoteIsn: 100, LocalIsn: 200, SndNxt: 201, RcvNxt: 101 + uint32(len(data)), Mss: 1460}}
	}
	// connect says hello as host 7 and reads the resync: the flow IDs
	// it brought and its end.
	connect := func(boot uint64, hd *pb.Holding) (pb.HostStream_ConnectClient, context.CancelFunc, []uint32, *pb.ResyncEnd) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		st, err := pb.NewHostStreamClient(conn).Connect(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Send(&pb.AgentMessage{Version: pb.Version, Body: &pb.AgentMessage_Hello{Hello: &pb.AgentHello{Host: 7, Boot: boot, Holding: hd}}}); err != nil {
			t.Fatal(err)
		}
		var ids []uint32
		for {
			m, err := st.Recv()
			if err != nil {
				t.Fatal(err)
			}
			switch b := m.GetBody().(type) {
			case *pb.UnitMessage_Hello:
				if b.Hello.GetResync() != pb.Resync_RESYNC_FULL {
					t.Fatalf("hello %v, want a full resync", b.Hello)
				}
			case *pb.UnitMessage_Mappings:
				for _, a := range b.Mappings.GetAdd() {
					ids = append(ids, a.GetFlowId())
				}
			case *pb.UnitMessage_ResyncEnd:
				slices.Sort(ids)
				return st, cancel, ids, b.ResyncEnd
			default:
				t.Fatalf("unexpected %T in the resync", b)
			}
		}
	}
	// recvMigrate reads the next message, a Migrate.
	recvMigrate := func(st pb.HostStream_ConnectClient) *pb.Migrate {
		t.Helper()
		m, err := st.Recv()
		if err != nil || m.GetMigrate() == nil {
			t.Fatalf("got %v, %v; want a Migrate", m, err)
		}
		return m.GetMigrate()
	}
	next := func() string {
		t.Helper()
		select {
		case e := <-events:
			return e
		case <-time.After(10 * time.Second):
			t.Fatal("no event within 10 s")
			return ""
		}
	}
	none := func() {
		t.Helper()
		select {
		case e := <-events:
			t.Fatalf("unexpected %s", e)
		default:
		}
	}
	send := func(st pb.HostStream_ConnectClient, m *pb.AgentMessage) {
		t.Helper()
		if err := st.Send(m); err != nil {
			t.Fatal(err)
		}
	}
	ack := func(seq uint64) *pb.AgentMessage {
		return &pb.AgentMessage{Version: pb.Version, Body: &pb.AgentMessage_Ack{Ack: &pb.Ack{Seq: seq}}}
	}
	flow := func(id uint64) uint32 { return 1<<31 | uint32(id) }

	st, cancel, ids, _ := connect(1, nil)
	if len(ids) != 0 {
		t.Fatalf("first resync of %v, want none", ids)
	}
	for id := uint64(1); id <= 3; id++ {
		if _, err := s.Migrate(7, mig(id)); err != nil {
			t.Fatal(err)
		}
	}
	// The host takes the first two, acknowledges the first, and its
	// stream breaks with the third on its way.
	if m := recvMigrate(st); m.GetSeq() != 1 {
		t.Fatalf("first Migrate at seq %d", m.GetSeq())
	}
	send(st, ack(1))
	if e := next(); e != "ack 1" {
		t.Fatalf("event %q, want ack 1", e)
	}
	recvMigrate(st)
	cancel()
	held := pb.MappingSum(pb.MigrateMapping(mig(1))) + pb.MappingSum(pb.MigrateMapping(mig(2)))
	st, cancel, ids, end := connect(1, &pb.Holding{UnitBoot: s.Boot(), Seq: 2, Count: 2, Sum: held})
	if want := []uint32{flow(1), flow(2)}; !slices.Equal(ids, want) || end.GetSeq() != 3 || end.GetCount() != 2 || end.GetSum() != held {
		t.Fatalf("resync of %v ending %v, want flows %v at seq 3", ids, end, want)
	}
	// The failure is heard before the resync's acknowledgement, which
	// covers seq 3.
	if e := next(); e != "failed 3" {
		t.Fatalf("event %q, want failed 3", e)
	}
	send(st, ack(3))
	if e := next(); e != "ack 3" {
		t.Fatalf("event %q, want ack 3", e)
	}
	if v, _ := hostView(s, 7); v.MigrationsLost != 1 || v.Migrations != 3 {
		t.Errorf("view: %d migrations, %d lost; want 3 and 1", v.Migrations, v.MigrationsLost)
	}

	// A restarted agent holds nothing and cannot say what it took.
	if _, err := s.Migrate(7, mig(4)); err != nil {
		t.Fatal(err)
	}
	cancel()
	st, cancel, ids, end = connect(2, nil)
	defer cancel()
	if want := []uint32{flow(1), flow(2), flow(4)}; !slices.Equal(ids, want) || end.GetSeq() != 4 {
		t.Fatalf("resync after a restart of %v ending %v, want flows %v at seq 4", ids, end, want)
	}
	none()

	// A host that reads Migrates and acknowledges none takes no more
	// than maxUnacked, until it acknowledges.
	var seq uint64
	for id := uint64(100); id < 100+maxUnacked; id++ {
		var err error
		if seq, err = s.Migrate(7, mig(id)); err != nil {
			t.Fatalf("Migrate %d: %v", id, err)
		}
		recvMigrate(st)
	}
	if _, err := s.Migrate(7, mig(100+maxUnacked)); !errors.Is(err, ErrHostDown) {
		t.Fatalf("Migrate past maxUnacked: %v, want ErrHostDown", err)
	}
	send(st, ack(seq))
	if e, want := next(), fmt.Sprintf("ack %d", seq); e != want {
		t.Fatalf("event %q, want %s", e, want)
	}
	if _, err := s.Migrate(7, mig(100+maxUnacked)); err != nil {
		t.Fatalf("Migrate after the acknowledgement: %v", err)
	}
}
