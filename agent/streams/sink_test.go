package streams

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	pb "github.com/tetherlb/tether/api/hostpb"
	"github.com/tetherlb/tether/api/unit"
	"github.com/tetherlb/tether/ctlplane/hosts"
	"github.com/tetherlb/tether/internal/mtls/mtlstest"
)

// fakeSink records what reaches it, as a kernel would hold it, and fails
// the calls its fail function picks.
type fakeSink struct {
	mu    sync.Mutex
	calls []string
	table map[uint32]*pb.Tuple
	fail  func(call string) bool
}

func (f *fakeSink) record(call string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, call)
	if f.fail != nil && f.fail(call) {
		return errors.New("the kernel said no")
	}
	return nil
}

func (f *fakeSink) Sources(unit string, addrs []netip.Addr) error {
	return f.record(fmt.Sprintf("sources %s %v", unit, addrs))
}

func (f *fakeSink) Replace(unit string, table map[uint32]*pb.Tuple) error {
	if err := f.record(fmt.Sprintf("replace %s %d", unit, len(table))); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.table = map[uint32]*pb.Tuple{}
	for k, v := range table {
		f.table[k] = v
	}
	return nil
}

func (f *fakeSink) Apply(unit string, add []*pb.Mapping, remove []uint32) error {
	if err := f.record(fmt.Sprintf("apply %s +%d -%d", unit, len(add), len(remove))); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, id := range remove {
		delete(f.table, id)
	}
	for _, m := range add {
		f.table[m.GetFlowId()] = m.GetTuple()
	}
	return nil
}

func (f *fakeSink) snapshot() ([]string, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...), len(f.table)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func mapping(id uint32) *pb.Mapping {
	return &pb.Mapping{FlowId: id, Tuple: &pb.Tuple{Proto: pb.Proto_PROTO_TCP, Client: []byte{192, 0, 2, 1}, ClientPort: 1000 + id,
		Vip: []byte{10, 0, 0, 100}, VipPort: 80}}
}

func hostView(s *hosts.Server, id uint32) unit.HostStream {
	for _, h := range s.View().Streams {
		if h.Host == id {
			return h
		}
	}
	return unit.HostStream{}
}

// TestTheSinkComesBeforeTheAck: a real unit's server and the agent's
// streams with a sink. Every resync and batch reaches the sink before the
// unit sees it acknowledged; a batch the sink refuses is never
// acknowledged, ends the stream, and the next stream resyncs the whole
// set into the sink.
func TestTheSinkComesBeforeTheAck(t *testing.T) {
	dir := t.TempDir()
	scfg, ccfg := mtlstest.UnitAndHost(t, dir, "unit-a", 7)
	srv, err := hosts.New(hosts.Options{Listen: "127.0.0.1:0", TLS: scfg, Unit: "unit-a", Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	wg.Add(1)
	go func() { defer wg.Done(); srv.Run(ctx) }()
	srv.SetReady() // the unit knows its flows: hellos are answered at once
	// Two mappings before the agent comes: they arrive as a resync.
	if _, err := srv.Publish(7, []*pb.Mapping{mapping(1), mapping(2)}, nil); err != nil {
		t.Fatal(err)
	}

	sink := &fakeSink{}
	var refuse sync.Mutex // held while the sink must refuse batches
	failing := false
	sink.fail = func(call string) bool {
		refuse.Lock()
		defer refuse.Unlock()
		return failing && call == "apply unit-a +1 -0"
	}
	s, err := New(Options{Host: 7, Units: []Unit{{Name: "unit-a", Address: srv.Addr().String()}}, TLS: ccfg,
		MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond, Log: zerolog.Nop(), Sink: sink})
	if err != nil {
		t.Fatal(err)
	}
	wg.Add(1)
	go func() { defer wg.Done(); s.Run(ctx) }()

	waitFor(t, "the resync acknowledged", func() bool { return hostView(srv, 7).Acked == 1 })
	calls, n := sink.snapshot()
	if len(calls) != 2 || calls[0] != "sources unit-a []" || calls[1] != "replace unit-a 2" || n != 2 {
		t.Fatalf("sink calls %q, %d held; want the hello's sources, then the resync of 2", calls, n)
	}
	if _, err := srv.Publish(7, []*pb.Mapping{mapping(3), mapping(4)}, []uint32{1}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the batch acknowledged", func() bool { return hostView(srv, 7).Acked == 2 })
	if calls, n := sink.snapshot(); calls[len(calls)-1] != "apply unit-a +2 -1" || n != 3 {
		t.Fatalf("sink calls %q, %d held; want the batch applied", calls, n)
	}

	// The sink refuses the next batch: the unit never sees it
	// acknowledged, the stream ends, and the agent, which now claims
	// nothing, gets the whole set again.
	refuse.Lock()
	failing = true
	refuse.Unlock()
	if _, err := srv.Publish(7, []*pb.Mapping{mapping(5)}, nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the refusal counted", func() bool { return s.Status()[0].SinkFailures >= 1 })
	refuse.Lock()
	failing = false
	refuse.Unlock()
	waitFor(t, "a full resync after the refusal", func() bool {
		calls, _ := sink.snapshot()
		return calls[len(calls)-1] == "replace unit-a 4"
	})
	waitFor(t, "the set acknowledged", func() bool { return hostView(srv, 7).Acked == 3 })
	if _, n := sink.snapshot(); n != 4 {
		t.Errorf("the sink holds %d mappings, want 4", n)
	}
	st := s.Status()[0]
	if st.LastResync != "full" || st.Mappings != 4 || st.Seq != 3 {
		t.Errorf("status after the resync: %+v", st)
	}
	calls, _ = sink.snapshot()
	for i, c := range calls {
		if c == "apply unit-a +1 -0" && i+1 < len(calls) && calls[i+1] != "sources unit-a []" {
			t.Errorf("after the refused batch came %q, want a new hello (calls %q)", calls[i+1], calls)
		}
	}
}
