package streams

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/proto"

	pb "github.com/tetherlb/tether/api/hostpb"
	"github.com/tetherlb/tether/internal/mtls/mtlstest"
)

// fakeUnit is a unit's end of the stream that says hello with an empty
// full resync (or, once resume holds a seq, with none at that seq), then
// sends what the test gives it and hands the test what the agent sends,
// until the test drops the stream.
type fakeUnit struct {
	pb.UnimplementedHostStreamServer
	out    chan *pb.UnitMessage
	in     chan *pb.AgentMessage
	drop   chan struct{}
	resume atomic.Uint64
	// ended gets how each stream's receiving side ended; stop stops the
	// agent's streams (runFakeUnit's).
	ended chan error
	stop  func()
	// deaf: the unit never ends a stream the agent closed its side of.
	deaf atomic.Bool
	// refuse: the unit ends every stream before its hello; boot is the
	// unit's boot (0: 9), which a test changes to restart it.
	refuse atomic.Bool
	boot   atomic.Uint64
}

func (u *fakeUnit) Connect(s grpc.BidiStreamingServer[pb.AgentMessage, pb.UnitMessage]) error {
	if _, err := s.Recv(); err != nil {
		return err
	}
	if u.refuse.Load() {
		return errors.New("test: refused")
	}
	boot := u.boot.Load()
	if boot == 0 {
		boot = 9
	}
	first := []*pb.UnitMessage{
		{Version: pb.Version, Body: &pb.UnitMessage_Hello{Hello: &pb.UnitHello{Unit: "unit-a", Boot: boot, Host: 7, Resync: pb.Resync_RESYNC_FULL}}},
		{Version: pb.Version, Body: &pb.UnitMessage_ResyncEnd{ResyncEnd: &pb.ResyncEnd{}}},
	}
	if seq := u.resume.Load(); seq != 0 {
		first = first[:1]
		first[0].GetHello().Resync, first[0].GetHello().Seq = pb.Resync_RESYNC_NONE, seq
	}
	for _, m := range first {
		if err := s.Send(m); err != nil {
			return err
		}
	}
	errc := make(chan error, 1)
	go func() {
		for {
			m, err := s.Recv()
			if err != nil {
				select {
				case u.ended <- err:
				default:
				}
				if !errors.Is(err, io.EOF) || !u.deaf.Load() {
					errc <- err
				}
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
		case <-u.drop:
			return errors.New("test: dropped")
		case err := <-errc:
			return err
		case <-s.Context().Done():
			return s.Context().Err()
		}
	}
}

// runFakeUnit starts a fakeUnit and the agent's streams to it, with
// opts' Migrator and Sink, and returns them with a function that waits
// for the agent's next message.
func runFakeUnit(t *testing.T, opts Options) (*fakeUnit, *Streams, func() *pb.AgentMessage) {
	t.Helper()
	dir := t.TempDir()
	scfg, ccfg := mtlstest.UnitAndHost(t, dir, "unit-a", 7)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	unit := &fakeUnit{out: make(chan *pb.UnitMessage, 4), in: make(chan *pb.AgentMessage, 16), drop: make(chan struct{}), ended: make(chan error, 4)}
	gs := grpc.NewServer(grpc.Creds(credentials.NewTLS(scfg)))
	pb.RegisterHostStreamServer(gs, unit)
	go gs.Serve(lis)
	t.Cleanup(gs.Stop)
	opts.Host, opts.Units, opts.TLS, opts.Log = 7, []Unit{{Name: "unit-a", Address: lis.Addr().String()}}, ccfg, zerolog.Nop()
	opts.MinBackoff, opts.MaxBackoff = 10*time.Millisecond, 100*time.Millisecond
	s, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SendEnded("unit-a", &pb.MigrationEnded{}); !errors.Is(err, ErrNoStream) {
		t.Fatalf("SendEnded before the stream is up: %v, want ErrNoStream", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); s.Run(ctx) }()
	unit.stop = func() { cancel(); wg.Wait() }
	t.Cleanup(unit.stop)
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
	return unit, s, next
}

// TestResumeAcknowledges: a stream that comes back without a resync
// (the agent holds the unit's set at its seq) starts with the agent's
// Ack of that seq, since the last one may have been lost with the old
// stream, and the unit holds a new flow's packets, or counts a
// migration as not taken, until that Ack.
func TestResumeAcknowledges(t *testing.T) {
	unit, s, next := runFakeUnit(t, Options{})
	if a := next().GetAck(); a == nil {
		t.Fatal("the resync was not acknowledged first")
	}
	unit.out <- &pb.UnitMessage{Version: pb.Version, Body: &pb.UnitMessage_Mappings{Mappings: &pb.Mappings{Seq: 1, Add: []*pb.Mapping{mapping(1)}}}}
	if a := next().GetAck(); a.GetSeq() != 1 {
		t.Fatalf("got %v, want the ack of seq 1", a)
	}
	unit.resume.Store(1)
	unit.drop <- struct{}{}
	if a := next().GetAck(); a.GetSeq() != 1 {
		t.Fatalf("got %v, want the resumed stream to begin with the ack of seq 1", a)
	}
	if st := s.Status()[0]; st.Connects != 2 || st.LastResync != "none" {
		t.Fatalf("status %+v", st)
	}
}

// slowMigrator takes a connection at once (Take returns) and hands it
// off slowly: its result comes when the test lets it, and then the
// migration's end, as a connection closed at once would. Migration 6
// fails at once, as a failed upload does.
type slowMigrator struct {
	s       *Streams
	taken   chan uint64
	release chan struct{}
	ended   chan error
}

func (m *slowMigrator) Take(unit string, mg *pb.Migrate, done func(error)) {
	m.taken <- mg.GetId()
	if mg.GetId() == 6 {
		done(errors.New("no application"))
		return
	}
	go func() {
		<-m.release
		done(nil)
		m.ended <- m.s.SendEnded(unit, &pb.MigrationEnded{Id: mg.GetId(), Reason: pb.EndReason_END_REASON_CLOSED,
			Tuple: &pb.Tuple{Proto: pb.Proto_PROTO_TCP, Client: []byte{192, 0, 2, 1}, ClientPort: 1, Vip: []byte{10, 0, 0, 1}, VipPort: 80}})
	}()
}

// applySink records the mappings the stream applies.
type applySink struct {
	mu    sync.Mutex
	added []*pb.Mapping
}

func (a *applySink) Sources(string, []netip.Addr) error         { return nil }
func (a *applySink) Replace(string, map[uint32]*pb.Tuple) error { return nil }
func (a *applySink) Apply(_ string, add []*pb.Mapping, _ []uint32) error {
	a.mu.Lock()
	a.added = append(a.added, add...)
	a.mu.Unlock()
	return nil
}

// TestMigrateInStreamOrder: a Migrate is the numbered change of its
// flow's mapping: the Migrator takes it in stream order, then the sink
// gets the mapping and the agent acknowledges the Migrate's seq, without
// waiting for the migration's slow hand-off; a success sends no result,
// a failure its result before the Ack; the end comes after the hand-off;
// a removal is acknowledged; a Migrate out of sequence ends the stream.
func TestMigrateInStreamOrder(t *testing.T) {
	mig := &slowMigrator{taken: make(chan uint64, 4), release: make(chan struct{}), ended: make(chan error, 1)}
	sink := &applySink{}
	unit, s, next := runFakeUnit(t, Options{Migrator: mig, Sink: sink})
	mig.s = s
	if a := next().GetAck(); a == nil {
		t.Fatal("the resync was not acknowledged first")
	}
	st := &pb.TCPState{Client: []byte{192, 0, 2, 1}, ClientPort: 1, Vip: []byte{10, 0, 0, 1}, VipPort: 80,
		RemoteIsn: 10, LocalIsn: 20, SndNxt: 21, RcvNxt: 11, Mss: 1460}
	migrate := func(id uint64, flow uint32, seq uint64) *pb.UnitMessage {
		return &pb.UnitMessage{Version: pb.Version, Body: &pb.UnitMessage_Migrate{Migrate: &pb.Migrate{Id: id, FlowId: flow, Seq: seq, State: st}}}
	}
	unit.out <- migrate(5, 1<<31|5, 1)
	unit.out <- &pb.UnitMessage{Version: pb.Version, Body: &pb.UnitMessage_Mappings{Mappings: &pb.Mappings{Seq: 2, Add: []*pb.Mapping{mapping(1)}}}}
	if id := <-mig.taken; id != 5 {
		t.Fatalf("took migration %d", id)
	}
	// The Migrate and the next batch are applied and acknowledged
	// while the hand-off is still going on.
	for seq := uint64(1); seq <= 2; seq++ {
		if a := next().GetAck(); a.GetSeq() != seq {
			t.Fatalf("want the ack of seq %d during the hand-off, got %v", seq, a)
		}
	}
	unit.out <- migrate(6, 1<<31|6, 3)
	if r := next().GetMigrateResult(); r.GetId() != 6 || r.GetError() != "no application" {
		t.Fatalf("want the failure's result before the ack, got %v", r)
	}
	if a := next().GetAck(); a.GetSeq() != 3 {
		t.Fatalf("want the failed Migrate's seq acknowledged too, got %v", a)
	}
	close(mig.release)
	// Success sends nothing: the end is the next message.
	if e := next().GetMigrationEnded(); e.GetId() != 5 {
		t.Fatalf("want the end after the hand-off, and no result, got %v", e)
	}
	if err := <-mig.ended; err != nil {
		t.Fatal(err)
	}
	sink.mu.Lock()
	added := sink.added
	sink.mu.Unlock()
	want := []*pb.Mapping{pb.MigrateMapping(migrate(5, 1<<31|5, 1).GetMigrate()), mapping(1), pb.MigrateMapping(migrate(6, 1<<31|6, 3).GetMigrate())}
	if len(added) != len(want) {
		t.Fatalf("the sink got %v, want %v", added, want)
	}
	for i := range want {
		if !proto.Equal(added[i], want[i]) {
			t.Fatalf("the sink got %v, want %v", added, want)
		}
	}
	if st := s.Status()[0]; st.Migrations != 2 || st.MigrationsFailed != 1 || st.Seq != 3 || st.Mappings != 3 {
		t.Fatalf("status %+v", st)
	}
	// A batch that only removes is acknowledged on its own when no
	// later change's Ack comes (TestPutOffRidesOnTheAck has it ride).
	unit.out <- &pb.UnitMessage{Version: pb.Version, Body: &pb.UnitMessage_Mappings{Mappings: &pb.Mappings{Seq: 4, Remove: []uint32{1<<31 | 5}}}}
	if a := next().GetAck(); a.GetSeq() != 4 {
		t.Fatalf("want the removal acknowledged on its own, got %v", a)
	}
	unit.out <- migrate(7, 1<<31|7, 6)
	waitFor(t, "the out-of-sequence Migrate refused", func() bool { return s.Status()[0].Refused == 1 })
}

// takeMigrator takes every connection at once.
type takeMigrator struct{}

func (takeMigrator) Take(_ string, _ *pb.Migrate, done func(error)) { done(nil) }

// TestPutOffRidesOnTheAck: a removal's acknowledgement and end notices
// wait for the next change's Ack, the end notices going right after it;
// those put off on a stream that ends are dropped and counted. The put
// off is made longer than the test so that only the Ack can send them.
func TestPutOffRidesOnTheAck(t *testing.T) {
	unit, s, next := runFakeUnit(t, Options{Migrator: takeMigrator{}, Sink: &applySink{}, putOff: time.Hour})
	if a := next().GetAck(); a == nil {
		t.Fatal("the resync was not acknowledged first")
	}
	ended := func(id uint64) *pb.MigrationEnded {
		return &pb.MigrationEnded{Id: id, Reason: pb.EndReason_END_REASON_CLOSED,
			Tuple: &pb.Tuple{Proto: pb.Proto_PROTO_TCP, Client: []byte{192, 0, 2, 1}, ClientPort: 1, Vip: []byte{10, 0, 0, 1}, VipPort: 80}}
	}
	batch := func(seq uint64, add []*pb.Mapping, remove []uint32) *pb.UnitMessage {
		return &pb.UnitMessage{Version: pb.Version, Body: &pb.UnitMessage_Mappings{Mappings: &pb.Mappings{Seq: seq, Add: add, Remove: remove}}}
	}
	unit.out <- batch(1, []*pb.Mapping{mapping(1)}, nil)
	if a := next().GetAck(); a.GetSeq() != 1 {
		t.Fatalf("want the addition acknowledged at once, got %v", a)
	}
	unit.out <- batch(2, nil, []uint32{1})
	waitFor(t, "the removal applied", func() bool { return s.Status()[0].Seq == 2 })
	for _, id := range []uint64{5, 6} {
		if err := s.SendEnded("unit-a", ended(id)); err != nil {
			t.Fatal(err)
		}
	}
	st := &pb.TCPState{Client: []byte{192, 0, 2, 1}, ClientPort: 2, Vip: []byte{10, 0, 0, 1}, VipPort: 80,
		RemoteIsn: 10, LocalIsn: 20, SndNxt: 21, RcvNxt: 11, Mss: 1460}
	unit.out <- &pb.UnitMessage{Version: pb.Version, Body: &pb.UnitMessage_Migrate{Migrate: &pb.Migrate{Id: 9, FlowId: 1<<31 | 9, Seq: 3, State: st}}}
	if a := next().GetAck(); a.GetSeq() != 3 {
		t.Fatalf("want the Migrate's Ack first (covering the removal's), got %v", a)
	}
	for _, id := range []uint64{5, 6} {
		if e := next().GetMigrationEnded(); e.GetId() != id {
			t.Fatalf("want the end of migration %d after the Ack, got %v", id, e)
		}
	}
	// Nothing else was sent: the next message is the next change's Ack.
	unit.out <- batch(4, []*pb.Mapping{mapping(2)}, nil)
	if a := next().GetAck(); a.GetSeq() != 4 {
		t.Fatalf("want the ack of seq 4 next, got %v", a)
	}
	dropped := s.Status()[0].EndedDropped // runFakeUnit's, before the stream
	if err := s.SendEnded("unit-a", ended(7)); err != nil {
		t.Fatal(err)
	}
	unit.resume.Store(4)
	unit.drop <- struct{}{}
	if a := next().GetAck(); a.GetSeq() != 4 {
		t.Fatalf("want the resumed stream to begin with the ack of seq 4, got %v", a)
	}
	// The end put off on the dropped stream goes on the resumed one,
	// with its next Ack.
	unit.out <- batch(5, []*pb.Mapping{mapping(3)}, nil)
	if a := next().GetAck(); a.GetSeq() != 5 {
		t.Fatalf("want the ack of seq 5, got %v", a)
	}
	if e := next().GetMigrationEnded(); e.GetId() != 7 {
		t.Fatalf("want the end of migration 7 put off on the dropped stream, got %v", e)
	}
	if st := s.Status()[0]; st.EndedDropped != dropped || st.EndedWaiting != 0 {
		t.Fatalf("status %+v, want nothing dropped and nothing waiting", st)
	}
}

// TestEndedKeptForTheNextStream: an end notice while the unit's stream
// is down is kept, and sent on the next stream to the same boot of the
// unit, so that the unit removes the ended connection's route; one for
// a unit that restarted meanwhile (whose migrations are gone) is
// dropped and counted.
func TestEndedKeptForTheNextStream(t *testing.T) {
	unit, s, next := runFakeUnit(t, Options{Sink: &applySink{}})
	if a := next().GetAck(); a == nil {
		t.Fatal("the resync was not acknowledged first")
	}
	down := func() {
		t.Helper()
		unit.refuse.Store(true)
		unit.drop <- struct{}{}
		waitFor(t, "the stream down", func() bool { return s.Status()[0].State != StateUp })
	}
	ended := &pb.MigrationEnded{Id: 11, Reason: pb.EndReason_END_REASON_HANDOFF_FAILED,
		Tuple: &pb.Tuple{Proto: pb.Proto_PROTO_TCP, Client: []byte{192, 0, 2, 1}, ClientPort: 1, Vip: []byte{10, 0, 0, 1}, VipPort: 80}}
	down()
	dropped := s.Status()[0].EndedDropped
	if err := s.SendEnded("unit-a", ended); err != nil {
		t.Fatalf("an end notice while the stream is down: %v, want it kept", err)
	}
	if st := s.Status()[0]; st.EndedWaiting != 1 {
		t.Fatalf("status %+v, want one notice waiting", st)
	}
	unit.resume.Store(0) // a full resync, of the same boot
	unit.refuse.Store(false)
	if a := next().GetAck(); a == nil {
		t.Fatal("the new stream's resync was not acknowledged first")
	}
	if e := next().GetMigrationEnded(); !proto.Equal(e, ended) {
		t.Fatalf("got %v, want the kept end notice", e)
	}
	if st := s.Status()[0]; st.EndedWaiting != 0 || st.EndedDropped != dropped {
		t.Fatalf("status %+v, want nothing waiting or dropped", st)
	}

	// The unit restarts while the stream is down: the notice is of its
	// old boot, and goes nowhere.
	down()
	if err := s.SendEnded("unit-a", ended); err != nil {
		t.Fatal(err)
	}
	unit.boot.Store(10)
	unit.refuse.Store(false)
	if a := next().GetAck(); a == nil {
		t.Fatal("the restarted unit's resync was not acknowledged first")
	}
	waitFor(t, "the old boot's notice dropped", func() bool {
		st := s.Status()[0]
		return st.EndedDropped == dropped+1 && st.EndedWaiting == 0
	})
	unit.out <- &pb.UnitMessage{Version: pb.Version, Body: &pb.UnitMessage_Mappings{Mappings: &pb.Mappings{Seq: 1, Add: []*pb.Mapping{mapping(1)}}}}
	if a := next().GetAck(); a.GetSeq() != 1 {
		t.Fatalf("got %v, want the ack of seq 1 and no old end notice", a)
	}
}

// TestShutdownSendsWhatWasPutOff: when the agent stops, what it put off
// on a stream goes first (the owed acknowledgement, then the end
// notices, none dropped), and the agent closes its side, so that the
// unit reads everything and sees the stream end cleanly.
func TestShutdownSendsWhatWasPutOff(t *testing.T) {
	unit, s, next := runFakeUnit(t, Options{Sink: &applySink{}, putOff: time.Hour})
	if a := next().GetAck(); a == nil {
		t.Fatal("the resync was not acknowledged first")
	}
	unit.out <- &pb.UnitMessage{Version: pb.Version, Body: &pb.UnitMessage_Mappings{Mappings: &pb.Mappings{Seq: 1, Add: []*pb.Mapping{mapping(1)}}}}
	if a := next().GetAck(); a.GetSeq() != 1 {
		t.Fatalf("got %v, want the ack of seq 1", a)
	}
	unit.out <- &pb.UnitMessage{Version: pb.Version, Body: &pb.UnitMessage_Mappings{Mappings: &pb.Mappings{Seq: 2, Remove: []uint32{1}}}}
	waitFor(t, "the removal applied", func() bool { return s.Status()[0].Seq == 2 })
	if err := s.SendEnded("unit-a", &pb.MigrationEnded{Id: 5, Reason: pb.EndReason_END_REASON_CLOSED}); err != nil {
		t.Fatal(err)
	}
	dropped := s.Status()[0].EndedDropped // runFakeUnit's, before the stream
	stopped := make(chan struct{})
	go func() { unit.stop(); close(stopped) }()
	if a := next().GetAck(); a.GetSeq() != 2 {
		t.Fatalf("got %v, want the put-off ack of seq 2", a)
	}
	if e := next().GetMigrationEnded(); e.GetId() != 5 {
		t.Fatalf("got %v, want the put-off end of migration 5", e)
	}
	closedAndStopped(t, unit, stopped)
	if st := s.Status()[0]; st.EndedDropped != dropped {
		t.Fatalf("status %+v: end notices dropped at shutdown", st)
	}
}

// TestShutdownBoundedWhenTheUnitNeverEnds: a unit that reads the
// agent's close and never ends the stream (wedged) does not hold the
// agent's shutdown: the stream is cancelled after closeTimeout.
func TestShutdownBoundedWhenTheUnitNeverEnds(t *testing.T) {
	unit, _, next := runFakeUnit(t, Options{})
	unit.deaf.Store(true)
	if a := next().GetAck(); a == nil {
		t.Fatal("the resync was not acknowledged first")
	}
	stopped := make(chan struct{})
	go func() { unit.stop(); close(stopped) }()
	// Keepalive would end the stream after 15 s; closeTimeout is a
	// second.
	closedAndStopped(t, unit, stopped)
}

// closedAndStopped waits for the agent to close its side of the stream
// (the unit reads EOF) and for its streams to stop (stopped closed).
func closedAndStopped(t *testing.T, unit *fakeUnit, stopped <-chan struct{}) {
	t.Helper()
	select {
	case err := <-unit.ended:
		if !errors.Is(err, io.EOF) {
			t.Fatalf("the stream ended with %v, want the agent's close (EOF)", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the agent did not close its side")
	}
	select {
	case <-stopped:
	case <-time.After(10 * time.Second):
		t.Fatal("the agent's streams did not stop")
	}
}
