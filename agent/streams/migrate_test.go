package streams

import (
	"context"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	pb "github.com/tetherlb/tether/api/hostpb"
	"github.com/tetherlb/tether/internal/mtls"
)

// fakeUnit is a unit's end of the stream that says hello with an empty
// full resync, then sends what the test gives it and hands the test
// what the agent sends.
type fakeUnit struct {
	pb.UnimplementedHostStreamServer
	out chan *pb.UnitMessage
	in  chan *pb.AgentMessage
}

func (u *fakeUnit) Connect(s grpc.BidiStreamingServer[pb.AgentMessage, pb.UnitMessage]) error {
	if _, err := s.Recv(); err != nil {
		return err
	}
	for _, m := range []*pb.UnitMessage{
		{Version: pb.Version, Body: &pb.UnitMessage_Hello{Hello: &pb.UnitHello{Unit: "unit-a", Boot: 9, Host: 7, Resync: pb.Resync_RESYNC_FULL}}},
		{Version: pb.Version, Body: &pb.UnitMessage_ResyncEnd{ResyncEnd: &pb.ResyncEnd{}}},
	} {
		if err := s.Send(m); err != nil {
			return err
		}
	}
	errc := make(chan error, 1)
	go func() {
		for {
			m, err := s.Recv()
			if err != nil {
				errc <- err
				return
			}
			u.in <- m
		}
	}()
	for {
		select {
		case m := <-u.out:
			if err := s.Send(m); err != nil {
				return err
			}
		case err := <-errc:
			return err
		}
	}
}

// slowMigrator takes a connection at once (Take returns) and hands it
// off slowly: its result comes when the test lets it, and then the
// migration's end, as a connection closed at once would.
type slowMigrator struct {
	s       *Streams
	taken   chan uint64
	release chan struct{}
	ended   chan error
}

func (m *slowMigrator) Take(unit string, mg *pb.Migrate, done func(*pb.MigrateResult)) {
	m.taken <- mg.GetId()
	go func() {
		<-m.release
		done(&pb.MigrateResult{Id: mg.GetId(), Ok: true, Handoff: pb.Handoff_HANDOFF_LISTENER})
		m.ended <- m.s.SendEnded(unit, &pb.MigrationEnded{Id: mg.GetId(), Reason: pb.EndReason_END_REASON_CLOSED,
			Tuple: &pb.Tuple{Proto: pb.Proto_PROTO_TCP, Client: []byte{192, 0, 2, 1}, ClientPort: 1, Vip: []byte{10, 0, 0, 1}, VipPort: 80}})
	}()
}

// TestMigrateInStreamOrder: a Migrate reaches the Migrator in stream
// order, before the batch after it is applied; the batch's ack does not
// wait for the migration's slow hand-off; the result goes back when the
// hand-off is done, and the end after it.
func TestMigrateInStreamOrder(t *testing.T) {
	dir := t.TempDir()
	ca, _, err := mtls.OpenCA(dir, "test")
	if err != nil {
		t.Fatal(err)
	}
	uf, err := ca.IssueUnit(dir, "unit-a", []netip.Addr{netip.MustParseAddr("127.0.0.1")})
	if err != nil {
		t.Fatal(err)
	}
	hf, err := ca.IssueHost(dir, 7)
	if err != nil {
		t.Fatal(err)
	}
	scfg, err := mtls.Server(uf, "unit-a")
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	unit := &fakeUnit{out: make(chan *pb.UnitMessage, 4), in: make(chan *pb.AgentMessage, 16)}
	gs := grpc.NewServer(grpc.Creds(credentials.NewTLS(scfg)))
	pb.RegisterHostStreamServer(gs, unit)
	go gs.Serve(lis)
	defer gs.Stop()
	ccfg, err := mtls.Client(hf, 7)
	if err != nil {
		t.Fatal(err)
	}
	mig := &slowMigrator{taken: make(chan uint64, 1), release: make(chan struct{}), ended: make(chan error, 1)}
	s, err := New(Options{Host: 7, Units: []Unit{{Name: "unit-a", Address: lis.Addr().String()}}, TLS: ccfg,
		Log: zerolog.Nop(), Migrator: mig})
	if err != nil {
		t.Fatal(err)
	}
	mig.s = s
	if err := s.SendEnded("unit-a", &pb.MigrationEnded{}); err == nil {
		t.Fatal("SendEnded before the stream is up succeeded")
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); s.Run(ctx) }()
	defer func() { cancel(); wg.Wait() }()
	next := func() *pb.AgentMessage {
		t.Helper()
		select {
		case m := <-unit.in:
			return m
		case <-time.After(10 * time.Second):
			t.Fatal("nothing from the agent")
		}
		return nil
	}
	if a := next().GetAck(); a == nil {
		t.Fatal("the resync was not acknowledged first")
	}
	st := &pb.TCPState{Client: []byte{192, 0, 2, 1}, ClientPort: 1, Vip: []byte{10, 0, 0, 1}, VipPort: 80,
		RemoteIsn: 10, LocalIsn: 20, SndNxt: 21, RcvNxt: 11, Mss: 1460}
	unit.out <- &pb.UnitMessage{Version: pb.Version, Body: &pb.UnitMessage_Migrate{Migrate: &pb.Migrate{Id: 5, State: st}}}
	unit.out <- &pb.UnitMessage{Version: pb.Version, Body: &pb.UnitMessage_Mappings{Mappings: &pb.Mappings{Seq: 1, Add: []*pb.Mapping{mapping(1)}}}}
	if id := <-mig.taken; id != 5 {
		t.Fatalf("took migration %d", id)
	}
	// The next batch is applied and acknowledged while the hand-off is
	// still going on.
	if a := next().GetAck(); a.GetSeq() != 1 {
		t.Fatalf("want the batch's ack during the hand-off, got %v", a)
	}
	close(mig.release)
	if r := next().GetMigrateResult(); r == nil || r.GetId() != 5 || !r.GetOk() {
		t.Fatalf("want the result, got %v", r)
	}
	if e := next().GetMigrationEnded(); e.GetId() != 5 {
		t.Fatalf("want the end after the result, got %v", e)
	}
	if err := <-mig.ended; err != nil {
		t.Fatal(err)
	}
	if st := s.Status()[0]; st.Migrations != 1 || st.MigrationsFailed != 0 {
		t.Fatalf("status %+v", st)
	}
}
