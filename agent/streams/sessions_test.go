package streams

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tetherlb/tether/agent/sessions"
	pb "github.com/tetherlb/tether/api/hostpb"
	"github.com/tetherlb/tether/ctlplane/hosts"
	"github.com/tetherlb/tether/internal/mtls"
)

// TestSessionBoundsAgree: the table and the wire bound sessions alike,
// so the agent never holds a session the stream refuses.
func TestSessionBoundsAgree(t *testing.T) {
	if sessions.MaxKey != pb.MaxSessionKey || sessions.MaxApplication != pb.MaxApplication || sessions.MaxIdleTimeout != pb.MaxIdleTimeout {
		t.Fatal("agent/sessions and api/hostpb bound sessions differently")
	}
	if sessions.DefaultMax > pb.MaxHostSessions {
		t.Fatal("the table's default exceeds what a unit takes from a host")
	}
	vip4, vip6 := netip.MustParseAddrPort("10.0.0.1:443"), netip.MustParseAddrPort("[2001:db8::1]:443")
	for _, s := range []sessions.Session{
		sessions.TCP(netip.MustParseAddrPort("[::ffff:192.0.2.1]:1"), netip.MustParseAddrPort("[::ffff:10.0.0.1]:443"), "a"),
		sessions.TCP(netip.MustParseAddrPort("[2001:db8::2]:65535"), vip6, ""),
		{Kind: sessions.KindClientIP, Client: netip.MustParseAddr("192.0.2.1"), IdleTimeoutMS: 1},
		{Kind: sessions.KindClientIP, Client: netip.MustParseAddr("2001:db8::3"), VIP: vip6, IdleTimeoutMS: uint32(sessions.MaxIdleTimeout / time.Millisecond)},
		{Kind: sessions.KindAppKey, Key: make([]byte, sessions.MaxKey), VIP: vip4, Application: "web"},
	} {
		if err := s.Validate(); err != nil {
			t.Fatalf("%v: %v", s, err)
		}
		if err := pb.ValidSession(ToPB(s)); err != nil {
			t.Errorf("%v: valid in the table, refused on the wire: %v", s, err)
		}
	}
}

// held is what one unit holds of host 7's sessions, as the atom manager
// would keep it from OnSessions.
type held struct {
	mu      sync.Mutex
	set     map[string]*pb.Session
	resyncs int
	changed chan struct{}
}

func newHeld() *held { return &held{set: map[string]*pb.Session{}, changed: make(chan struct{}, 1)} }

func (h *held) apply(host uint32, b hosts.SessionBatch) {
	h.mu.Lock()
	if b.Resync {
		h.set = map[string]*pb.Session{}
		h.resyncs++
	}
	for _, s := range b.Down {
		delete(h.set, pb.SessionID(s))
	}
	for _, s := range b.Up {
		h.set[pb.SessionID(s)] = s
	}
	h.mu.Unlock()
	poke(h.changed)
}

// ports are the client ports of the TCP sessions held.
func (h *held) ports() map[uint32]bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := map[uint32]bool{}
	for _, s := range h.set {
		out[s.GetClientPort()] = true
	}
	return out
}

func (h *held) state() (int, int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.set), h.resyncs
}

// until waits for cond, checking it after each batch the unit takes.
func (h *held) until(ctx context.Context, t *testing.T, what string, cond func() bool) {
	t.Helper()
	for !cond() {
		select {
		case <-ctx.Done():
			n, r := h.state()
			t.Fatalf("timed out waiting for %s (the unit holds %d sessions after %d resyncs)", what, n, r)
		case <-h.changed:
		}
	}
}

func hasPorts(h *held, ports ...uint32) func() bool {
	return func() bool {
		got := h.ports()
		if len(got) != len(ports) {
			return false
		}
		for _, p := range ports {
			if !got[p] {
				return false
			}
		}
		return true
	}
}

// sessionUnit runs a unit's stream server whose sessions go to h; stop
// ends it.
func sessionUnit(t *testing.T, files mtls.Files, name, addr string, h *held) (*hosts.Server, func()) {
	t.Helper()
	cfg, err := mtls.Server(files, name)
	if err != nil {
		t.Fatal(err)
	}
	var srv *hosts.Server
	// A port just freed by a stopped server can take a moment to be
	// free again.
	for deadline := time.Now().Add(5 * time.Second); ; {
		srv, err = hosts.New(hosts.Options{Listen: addr, TLS: cfg, Unit: name, Log: zerolog.Nop(), OnSessions: h.apply})
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	srv.SetReady()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { srv.Run(ctx); close(done) }()
	var once sync.Once
	stop := func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	return srv, stop
}

func tcpSession(port uint16) sessions.Session {
	return sessions.TCP(netip.AddrPortFrom(netip.MustParseAddr("192.0.2.7"), port), netip.MustParseAddrPort("10.0.0.100:443"), "web")
}

// TestSessionFailover: two units; the first holds the host's sessions
// and follows its changes while the second is told it holds none; when
// the first stops, the second gets the whole table, changes included;
// when the first returns it is the primary again, resynced whole, and
// the second lets the sessions go.
func TestSessionFailover(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dir := t.TempDir()
	ca, _, err := mtls.OpenCA(dir, "test")
	if err != nil {
		t.Fatal(err)
	}
	lo := []netip.Addr{netip.MustParseAddr("127.0.0.1")}
	fa, err := ca.IssueUnit(dir, "unit-a", lo)
	if err != nil {
		t.Fatal(err)
	}
	fb, err := ca.IssueUnit(dir, "unit-b", lo)
	if err != nil {
		t.Fatal(err)
	}
	hf, err := ca.IssueHost(dir, 7)
	if err != nil {
		t.Fatal(err)
	}
	ha, hb := newHeld(), newHeld()
	sa, stopA := sessionUnit(t, fa, "unit-a", "127.0.0.1:0", ha)
	sb, _ := sessionUnit(t, fb, "unit-b", "127.0.0.1:0", hb)
	addrA := sa.Addr().String()

	table := sessions.New(sessions.Options{})
	for p := range uint16(3) {
		if _, err := table.Establish(tcpSession(p + 1)); err != nil {
			t.Fatal(err)
		}
	}
	ccfg, err := mtls.Client(hf, 7)
	if err != nil {
		t.Fatal(err)
	}
	st, err := New(Options{Host: 7, TLS: ccfg, Sessions: table, Log: zerolog.New(zerolog.NewTestWriter(t)),
		MinBackoff: 10 * time.Millisecond, MaxBackoff: 100 * time.Millisecond,
		Units: []Unit{{Name: "unit-a", Address: addrA}, {Name: "unit-b", Address: sb.Addr().String()}}})
	if err != nil {
		t.Fatal(err)
	}
	actx, acancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { st.Run(actx); close(done) }()
	defer func() { acancel(); <-done }()

	ha.until(ctx, t, "unit-a to hold the table", hasPorts(ha, 1, 2, 3))
	hb.until(ctx, t, "unit-b's empty resync", func() bool { n, r := hb.state(); return r >= 1 && n == 0 })

	// Changes go to the primary alone.
	if _, err := table.Establish(tcpSession(4)); err != nil {
		t.Fatal(err)
	}
	if err := table.Terminate(tcpSession(1)); err != nil {
		t.Fatal(err)
	}
	ha.until(ctx, t, "unit-a to follow the changes", hasPorts(ha, 2, 3, 4))
	if _, r := ha.state(); r != 1 {
		t.Fatalf("unit-a resynced %d times for changes, want once", r)
	}

	// The primary stops: the other unit gets everything.
	stopA()
	hb.until(ctx, t, "unit-b to hold the table after unit-a stopped", hasPorts(hb, 2, 3, 4))
	if _, err := table.Establish(tcpSession(5)); err != nil {
		t.Fatal(err)
	}
	hb.until(ctx, t, "unit-b to follow the changes", hasPorts(hb, 2, 3, 4, 5))

	// The first unit returns (a new boot, on its old address): it is the
	// primary again, and the second lets go.
	ha2 := newHeld()
	sessionUnit(t, fa, "unit-a", addrA, ha2)
	ha2.until(ctx, t, "the returned unit-a to hold the table", hasPorts(ha2, 2, 3, 4, 5))
	hb.until(ctx, t, "unit-b to let go", func() bool { n, _ := hb.state(); return n == 0 })

	roles := map[string]string{}
	for _, s := range st.Status() {
		roles[s.Unit] = s.Sessions
	}
	if roles["unit-a"] != "primary" || roles["unit-b"] != "standby" {
		t.Fatalf("roles %v", roles)
	}
	if v := hostView(sb, 7); v.SessionsRefused != 0 || v.SessionResyncs < 3 {
		t.Fatalf("unit-b's counters %+v", v)
	}
}

// TestSessionsLargeTable: a table larger than one batch goes as a
// series of batches and arrives whole.
func TestSessionsLargeTable(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dir := t.TempDir()
	ca, _, err := mtls.OpenCA(dir, "test")
	if err != nil {
		t.Fatal(err)
	}
	fa, err := ca.IssueUnit(dir, "unit-a", []netip.Addr{netip.MustParseAddr("127.0.0.1")})
	if err != nil {
		t.Fatal(err)
	}
	hf, err := ca.IssueHost(dir, 7)
	if err != nil {
		t.Fatal(err)
	}
	h := newHeld()
	sa, _ := sessionUnit(t, fa, "unit-a", "127.0.0.1:0", h)
	table := sessions.New(sessions.Options{})
	const n = 3*pb.MaxSessionBatch + 17
	for i := range n {
		s := sessions.Session{Kind: sessions.KindAppKey, Key: fmt.Appendf(nil, "cookie-%d", i), VIP: netip.MustParseAddrPort("10.0.0.100:443")}
		if _, err := table.Establish(s); err != nil {
			t.Fatal(err)
		}
	}
	ccfg, err := mtls.Client(hf, 7)
	if err != nil {
		t.Fatal(err)
	}
	st, err := New(Options{Host: 7, TLS: ccfg, Sessions: table, Log: zerolog.Nop(), Units: []Unit{{Name: "unit-a", Address: sa.Addr().String()}}})
	if err != nil {
		t.Fatal(err)
	}
	actx, acancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { st.Run(actx); close(done) }()
	defer func() { acancel(); <-done }()
	h.until(ctx, t, "the whole table", func() bool { got, r := h.state(); return got == n && r == 1 })
	if v := hostView(sa, 7); v.SessionResyncs != 1 || v.SessionsUp != n {
		t.Fatalf("counters %+v", v)
	}
}

// FuzzSessionAgreement: any session the agent's table accepts from an
// application's JSON is one the stream carries and a unit accepts, and
// the table's identity and the wire's agree.
func FuzzSessionAgreement(f *testing.F) {
	for _, seed := range []string{
		`{"kind":"tcp","client":"192.0.2.7","client_port":40000,"vip":"10.0.0.100:443","application":"web"}`,
		`{"kind":"tcp","client":"::ffff:192.0.2.7","client_port":1,"vip":"[::ffff:10.0.0.1]:80"}`,
		`{"kind":"client_ip","client":"2001:db8::7","vip":"[2001:db8::1]:443","idle_timeout_ms":60000}`,
		`{"kind":"client_ip","client":"192.0.2.7","idle_timeout_ms":604800000}`,
		`{"kind":"app_key","key":"dXNlcj1qb2U=","vip":"10.0.0.100:443"}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var s sessions.Session
		if json.Unmarshal(b, &s) != nil {
			return
		}
		s = s.Canonical()
		if s.Validate() != nil {
			return
		}
		w := ToPB(s)
		if err := pb.ValidSession(w); err != nil {
			t.Fatalf("%v: the table accepts it, the wire refuses it: %v", s, err)
		}
		// Whatever only describes a session leaves its identity alone on
		// both sides.
		other := s
		other.Application = "other"
		if pb.SessionID(ToPB(other)) != pb.SessionID(w) {
			t.Fatalf("%v: the application changed the wire identity", s)
		}
	})
}
