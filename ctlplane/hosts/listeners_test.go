package hosts

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/tetherlb/tether/agent/streams"
	pb "github.com/tetherlb/tether/api/hostpb"
)

// listenerSet is a host's listeners the test sets.
type listenerSet struct {
	mu      sync.Mutex
	eps     []netip.AddrPort
	changed chan struct{}
}

func (l *listenerSet) Listening() []netip.AddrPort {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.eps)
}

func (l *listenerSet) ListeningChanged() <-chan struct{} { return l.changed }

func (l *listenerSet) set(eps ...string) {
	l.mu.Lock()
	l.eps = nil
	for _, e := range eps {
		l.eps = append(l.eps, netip.MustParseAddrPort(e))
	}
	l.mu.Unlock()
	l.changed <- struct{}{}
}

// TestListeners: the agent tells the unit what its host listens for
// after its hello and on every change, and the unit answers Listening
// by it: an exact VIP:port, the unspecified address of either family at
// the port, or anything once the host has more listeners than a message
// names; a host that never said listens everywhere.
func TestListeners(t *testing.T) {
	p := newPKI(t)
	s, _ := startServer(t, p, "127.0.0.1:0")
	vip := netip.MustParseAddrPort("192.0.2.10:80")
	if !s.Listening(7, vip) {
		t.Fatal("a host never heard from does not listen")
	}
	src := &listenerSet{changed: make(chan struct{}, 1)}
	src.set("192.0.2.10:80")
	startAgentWith(t, p.host7, 7, 7, s.Addr().String(), func(o *streams.Options) { o.Listeners = src })
	said := func(want ...string) {
		t.Helper()
		waitFor(t, fmt.Sprintf("the host's listeners %.60q", want), func() bool {
			h, ok := hostView(s, 7)
			return ok && h.Listeners != nil && slices.Equal(h.Listeners, want)
		})
	}
	check := func(want map[string]bool) {
		t.Helper()
		for ap, w := range want {
			if got := s.Listening(7, netip.MustParseAddrPort(ap)); got != w {
				t.Errorf("Listening(%s) = %v, want %v", ap, got, w)
			}
		}
	}
	said("192.0.2.10:80")
	check(map[string]bool{"192.0.2.10:80": true, "[::ffff:192.0.2.10]:80": true, "192.0.2.10:81": false, "192.0.2.11:80": false})

	src.set("0.0.0.0:81", "[::]:82", "[2001:db8::1]:443")
	said("0.0.0.0:81", "[2001:db8::1]:443", "[::]:82")
	check(map[string]bool{"192.0.2.10:80": false, "192.0.2.11:81": true, "192.0.2.10:82": true, "[2001:db8::2]:82": true,
		"[2001:db8::1]:443": true, "[2001:db8::2]:443": false})

	src.set()
	said()
	check(map[string]bool{"192.0.2.10:80": false, "192.0.2.11:81": false})

	var many []string
	for i := range pb.MaxListeners + 1 {
		many = append(many, netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 9, byte(i >> 8), byte(i)}), 80).String())
	}
	src.set(many...)
	said("*")
	check(map[string]bool{"192.0.2.10:80": true, "203.0.113.1:9": true})
}

// TestListenersWithoutMigrator: an agent that takes no migrated
// connections tells the unit it listens nowhere.
func TestListenersWithoutMigrator(t *testing.T) {
	p := newPKI(t)
	s, _ := startServer(t, p, "127.0.0.1:0")
	startAgent(t, p.host7, 7, 7, s.Addr().String())
	waitFor(t, "the host to say it listens nowhere", func() bool {
		h, ok := hostView(s, 7)
		return ok && h.Listeners != nil && len(h.Listeners) == 0
	})
	if s.Listening(7, netip.MustParseAddrPort("192.0.2.10:80")) {
		t.Error("a host without a migrator listens")
	}
}

// TestInvalidListenersRefused: a Listeners message that names a port 0
// ends the stream and changes nothing the unit held.
func TestInvalidListenersRefused(t *testing.T) {
	p := newPKI(t)
	s, _ := startServer(t, p, "127.0.0.1:0")
	conn := dialAsHost7(t, p, s)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := pb.NewHostStreamClient(conn).Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	send := func(m *pb.AgentMessage) {
		t.Helper()
		m.Version = pb.Version
		if err := st.Send(m); err != nil {
			t.Fatal(err)
		}
	}
	send(&pb.AgentMessage{Body: &pb.AgentMessage_Hello{Hello: &pb.AgentHello{Host: 7, Boot: 1}}})
	untilResyncEnd(t, st)
	send(&pb.AgentMessage{Body: &pb.AgentMessage_Listeners{Listeners: &pb.Listeners{Endpoints: []*pb.Endpoint{{Address: []byte{192, 0, 2, 10}, Port: 80}}}}})
	send(&pb.AgentMessage{Body: &pb.AgentMessage_Listeners{Listeners: &pb.Listeners{Endpoints: []*pb.Endpoint{{Address: []byte{192, 0, 2, 10}}}}}})
	if _, err := st.Recv(); err == nil {
		t.Fatal("the unit answered after an invalid Listeners")
	}
	if n := s.View().Refused["invalid"]; n != 1 {
		t.Errorf("refused as invalid %d times, want 1", n)
	}
	h, _ := hostView(s, 7)
	if !slices.Equal(h.Listeners, []string{"192.0.2.10:80"}) || s.Listening(7, netip.MustParseAddrPort("192.0.2.10:81")) {
		t.Errorf("after the invalid message the unit holds %q", h.Listeners)
	}
}

// untilResyncEnd reads the unit's first messages on a stream up to the
// end of its resync, checking that its hello takes listeners.
func untilResyncEnd(t *testing.T, st pb.HostStream_ConnectClient) {
	t.Helper()
	for {
		m, err := st.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if h := m.GetHello(); h != nil && !h.GetListeners() {
			t.Fatal("the unit's hello does not say it takes listeners")
		}
		if m.GetResyncEnd() != nil {
			return
		}
	}
}

// TestListenersForgottenWithTheAgent: what a host listens for is its
// agent process's word: a new stream from the same agent keeps it until
// the agent says again, a stream from another agent process (another
// boot: restarted, or downgraded to one that never says) starts from
// "never said", which listens everywhere.
func TestListenersForgottenWithTheAgent(t *testing.T) {
	p := newPKI(t)
	s, _ := startServer(t, p, "127.0.0.1:0")
	conn := dialAsHost7(t, p, s)
	other := netip.MustParseAddrPort("192.0.2.11:80")
	connect := func(boot uint64) (pb.HostStream_ConnectClient, context.CancelFunc) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		st, err := pb.NewHostStreamClient(conn).Connect(ctx)
		if err != nil {
			cancel()
			t.Fatal(err)
		}
		if err := st.Send(&pb.AgentMessage{Version: pb.Version, Body: &pb.AgentMessage_Hello{Hello: &pb.AgentHello{Host: 7, Boot: boot}}}); err != nil {
			cancel()
			t.Fatal(err)
		}
		untilResyncEnd(t, st)
		return st, cancel
	}
	st, cancel := connect(1)
	if err := st.Send(&pb.AgentMessage{Version: pb.Version, Body: &pb.AgentMessage_Listeners{Listeners: &pb.Listeners{
		Endpoints: []*pb.Endpoint{{Address: []byte{192, 0, 2, 10}, Port: 80}}}}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the listeners said", func() bool { return !s.Listening(7, other) })
	cancel()
	// The same agent again: its word stands.
	_, cancel = connect(1)
	if s.Listening(7, other) {
		t.Fatal("the same agent's listeners were forgotten with its stream")
	}
	cancel()
	// Another agent process that says nothing.
	_, cancel = connect(2)
	defer cancel()
	if !s.Listening(7, other) {
		t.Fatal("another agent process inherited the last one's listeners")
	}
	if h, _ := hostView(s, 7); h.Listeners != nil {
		t.Errorf("the host view still shows %q", h.Listeners)
	}
}
