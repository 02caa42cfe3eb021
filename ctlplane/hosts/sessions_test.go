package hosts

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc"

	pb "github.com/tetherlb/tether/api/hostpb"
)

// delivered is one OnSessions call.
type delivered struct {
	host  uint32
	batch SessionBatch
}

// sessionServer runs a server whose OnSessions calls arrive on the
// returned channel, and a raw client connection as host 7.
func sessionServer(t *testing.T) (*Server, *grpc.ClientConn, chan delivered) {
	t.Helper()
	p := newPKI(t)
	got := make(chan delivered, 64)
	s, _ := startServerWith(t, p, "127.0.0.1:0", func(o *Options) {
		o.OnSessions = func(host uint32, b SessionBatch) { got <- delivered{host, b} }
	})
	return s, dialAsHost7(t, p, s), got
}

// open starts a stream as host 7 and reads the unit's hello and resync.
func open(ctx context.Context, t *testing.T, conn *grpc.ClientConn) pb.HostStream_ConnectClient {
	t.Helper()
	st, err := pb.NewHostStreamClient(conn).Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&pb.AgentMessage{Version: pb.Version, Body: &pb.AgentMessage_Hello{Hello: &pb.AgentHello{Host: 7, Boot: 1}}}); err != nil {
		t.Fatal(err)
	}
	for {
		m, err := st.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if h := m.GetHello(); h != nil && !h.GetSessions() {
			t.Fatal("a unit with OnSessions says it takes no sessions")
		}
		if m.GetResyncEnd() != nil {
			return st
		}
	}
}

func sendSessions(t *testing.T, st pb.HostStream_ConnectClient, b *pb.Sessions) {
	t.Helper()
	if err := st.Send(&pb.AgentMessage{Version: pb.Version, Body: &pb.AgentMessage_Sessions{Sessions: b}}); err != nil {
		t.Fatal(err)
	}
}

// ended waits for the unit to end the stream.
func ended(t *testing.T, st pb.HostStream_ConnectClient) {
	t.Helper()
	for {
		if _, err := st.Recv(); err != nil {
			return
		}
	}
}

func tcpSession(port uint32) *pb.Session {
	return &pb.Session{Kind: pb.SessionKind_SESSION_KIND_TCP, Client: []byte{192, 0, 2, 7}, ClientPort: port, Vip: []byte{10, 0, 0, 100}, VipPort: 443}
}

func next(ctx context.Context, t *testing.T, got chan delivered) delivered {
	t.Helper()
	select {
	case d := <-got:
		return d
	case <-ctx.Done():
		t.Fatal("timed out waiting for OnSessions")
	}
	return delivered{}
}

// none checks that nothing was delivered. The unit calls OnSessions
// before it reads the next message, so once it has ended the stream
// for a message, everything before that message was delivered.
func none(t *testing.T, got chan delivered, what string) {
	t.Helper()
	select {
	case d := <-got:
		t.Fatalf("%s: delivered %+v", what, d)
	default:
	}
}

// TestSessionsDelivered: a resync series arrives whole at its end, then
// changes arrive in stream order, with the counters counting them.
func TestSessionsDelivered(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s, conn, got := sessionServer(t)
	st := open(ctx, t, conn)
	sendSessions(t, st, &pb.Sessions{Resync: true, ResyncBegin: true, Up: []*pb.Session{tcpSession(1), tcpSession(2)}})
	sendSessions(t, st, &pb.Sessions{Resync: true, ResyncEnd: true, Count: 3, Up: []*pb.Session{tcpSession(3)}})
	d := next(ctx, t, got)
	if d.host != 7 || !d.batch.Resync || len(d.batch.Up) != 3 || len(d.batch.Down) != 0 {
		t.Fatalf("resync delivered as %+v", d)
	}
	for i := range 3 {
		sendSessions(t, st, &pb.Sessions{Up: []*pb.Session{tcpSession(uint32(10 + i))}, Down: []*pb.Session{tcpSession(uint32(1 + i))}})
	}
	for i := range 3 {
		d := next(ctx, t, got)
		if d.batch.Resync || len(d.batch.Up) != 1 || d.batch.Up[0].GetClientPort() != uint32(10+i) || d.batch.Down[0].GetClientPort() != uint32(1+i) {
			t.Fatalf("change %d delivered as %+v", i, d.batch)
		}
	}
	v, _ := hostView(s, 7)
	if v.SessionsUp != 6 || v.SessionsDown != 3 || v.SessionResyncs != 1 || v.SessionsRefused != 0 {
		t.Fatalf("counters %+v", v)
	}
}

// TestSessionsRefused: every malformed or out-of-turn batch ends the
// stream, is counted, and delivers nothing: what the unit holds is
// unchanged.
func TestSessionsRefused(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, conn, got := sessionServer(t)
	bad := tcpSession(5)
	bad.ClientPort = 0
	for _, c := range []struct {
		name    string
		reason  string
		batches []*pb.Sessions
		refused uint64
	}{
		{"changes before a resync", "protocol", []*pb.Sessions{{Up: []*pb.Session{tcpSession(1)}}}, 1},
		{"continuation without a beginning", "protocol", []*pb.Sessions{{Resync: true, ResyncEnd: true, Count: 1, Up: []*pb.Session{tcpSession(1)}}}, 1},
		{"count off", "protocol", []*pb.Sessions{
			{Resync: true, ResyncBegin: true, Up: []*pb.Session{tcpSession(1)}},
			{Resync: true, ResyncEnd: true, Count: 3, Up: []*pb.Session{tcpSession(2)}}}, 2},
		{"twice in a series", "protocol", []*pb.Sessions{
			{Resync: true, ResyncBegin: true, Up: []*pb.Session{tcpSession(1)}},
			{Resync: true, ResyncEnd: true, Count: 2, Up: []*pb.Session{tcpSession(1)}}}, 2},
		{"changes inside a series", "protocol", []*pb.Sessions{
			{Resync: true, ResyncBegin: true, Up: []*pb.Session{tcpSession(1)}},
			{Up: []*pb.Session{tcpSession(2)}}}, 2},
		{"a second beginning", "protocol", []*pb.Sessions{
			{Resync: true, ResyncBegin: true, Up: []*pb.Session{tcpSession(1)}},
			{Resync: true, ResyncBegin: true}}, 1},
		{"a malformed session in a series", "invalid", []*pb.Sessions{
			{Resync: true, ResyncBegin: true, Up: []*pb.Session{tcpSession(1)}},
			{Resync: true, ResyncEnd: true, Count: 2, Up: []*pb.Session{bad}}}, 2},
	} {
		before := s.View()
		v0, _ := hostView(s, 7)
		st := open(ctx, t, conn)
		for _, b := range c.batches {
			sendSessions(t, st, b)
		}
		ended(t, st)
		none(t, got, c.name)
		v, _ := hostView(s, 7)
		if d := v.SessionsRefused - v0.SessionsRefused; d != c.refused {
			t.Errorf("%s: %d sessions refused, want %d", c.name, d, c.refused)
		}
		if v.SessionResyncs != 0 || v.SessionsUp != 0 {
			t.Errorf("%s: counted as received: %+v", c.name, v)
		}
		if n := s.View().Refused[c.reason] - before.Refused[c.reason]; n != 1 {
			t.Errorf("%s: refused as %s %d times, want 1", c.name, c.reason, n)
		}
	}
	// A malformed change after a good resync: the resync stands, the
	// change is not delivered.
	st := open(ctx, t, conn)
	sendSessions(t, st, &pb.Sessions{Resync: true, ResyncBegin: true, ResyncEnd: true, Count: 1, Up: []*pb.Session{tcpSession(1)}})
	if d := next(ctx, t, got); !d.batch.Resync {
		t.Fatalf("resync delivered as %+v", d)
	}
	sendSessions(t, st, &pb.Sessions{Down: []*pb.Session{tcpSession(1)}, Up: []*pb.Session{bad}})
	ended(t, st)
	none(t, got, "a malformed change")
}

// TestSessionSeriesCutShort: a series whose stream ends before its end
// is never delivered, and leaves nothing for the next stream's.
func TestSessionSeriesCutShort(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s, conn, got := sessionServer(t)
	sctx, scancel := context.WithCancel(ctx)
	st := open(sctx, t, conn)
	sendSessions(t, st, &pb.Sessions{Resync: true, ResyncBegin: true, Up: []*pb.Session{tcpSession(1)}})
	// The unit has read the batch once its counter of messages moved.
	waitFor(t, "the first batch read", func() bool { v, _ := hostView(s, 7); return v.MessagesIn >= 1 })
	scancel()
	waitFor(t, "the stream down", func() bool { v, _ := hostView(s, 7); return v.State == "down" })
	st = open(ctx, t, conn)
	sendSessions(t, st, &pb.Sessions{Resync: true, ResyncBegin: true, ResyncEnd: true, Count: 1, Up: []*pb.Session{tcpSession(9)}})
	d := next(ctx, t, got)
	if !d.batch.Resync || len(d.batch.Up) != 1 || d.batch.Up[0].GetClientPort() != 9 {
		t.Fatalf("the next stream's resync delivered as %+v", d.batch)
	}
}
