package sessions

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"
)

// clock is a test clock the table reads; tests move it by hand.
type clock struct{ t time.Time }

func (c *clock) now() time.Time          { return c.t }
func (c *clock) advance(d time.Duration) { c.t = c.t.Add(d) }

func newTable(max int) (*Table, *clock) {
	c := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	return New(Options{Max: max, Now: c.now}), c
}

func tcp(port uint16) Session {
	return TCP(netip.MustParseAddrPort(fmt.Sprintf("192.0.2.7:%d", port)), netip.MustParseAddrPort("10.0.0.100:443"), "web")
}

func clientIP(addr string, timeout time.Duration) Session {
	return Session{Kind: KindClientIP, Client: netip.MustParseAddr(addr), IdleTimeoutMS: uint32(timeout / time.Millisecond)}
}

func appKey(key string) Session {
	return Session{Kind: KindAppKey, Key: []byte(key), VIP: netip.MustParseAddrPort("[2001:db8::1]:443")}
}

func TestEstablishIsIdempotent(t *testing.T) {
	tb, _ := newTable(0)
	for i, want := range []bool{true, false} {
		created, err := tb.Establish(tcp(40000))
		if err != nil || created != want {
			t.Fatalf("establish #%d: created %v, %v; want %v", i, created, err, want)
		}
	}
	if n := tb.Len(); n != 1 {
		t.Fatalf("%d sessions, want 1", n)
	}
	if st := tb.Stats(); st.Established != 1 || st.Refreshed != 1 {
		t.Fatalf("stats %+v", st)
	}
}

// TestCanonical: an IPv4-mapped address is the IPv4 session.
func TestCanonical(t *testing.T) {
	tb, _ := newTable(0)
	if _, err := tb.Establish(tcp(40000)); err != nil {
		t.Fatal(err)
	}
	mapped := Session{Kind: KindTCP, Client: netip.MustParseAddr("::ffff:192.0.2.7"), ClientPort: 40000,
		VIP: netip.MustParseAddrPort("[::ffff:10.0.0.100]:443")}
	if err := tb.Terminate(mapped); err != nil {
		t.Fatalf("terminate by mapped addresses: %v", err)
	}
}

func TestTerminateUnknown(t *testing.T) {
	tb, _ := newTable(0)
	if err := tb.Terminate(tcp(1)); !errors.Is(err, ErrUnknown) {
		t.Fatalf("terminate of an unknown session: %v, want ErrUnknown", err)
	}
	if _, err := tb.Establish(tcp(1)); err != nil {
		t.Fatal(err)
	}
	if err := tb.Terminate(tcp(1)); err != nil {
		t.Fatal(err)
	}
	if err := tb.Terminate(tcp(1)); !errors.Is(err, ErrUnknown) {
		t.Fatalf("second terminate: %v, want ErrUnknown", err)
	}
	if st := tb.Stats(); st.Refused != 2 || st.Terminated != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestFull(t *testing.T) {
	tb, _ := newTable(2)
	for p := uint16(1); p <= 2; p++ {
		if _, err := tb.Establish(tcp(p)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := tb.Establish(tcp(3)); !errors.Is(err, ErrFull) {
		t.Fatalf("third session: %v, want ErrFull", err)
	}
	// A held session is still refreshed when the table is full.
	if _, err := tb.Establish(tcp(2)); err != nil {
		t.Fatalf("refresh in a full table: %v", err)
	}
}

func TestInvalid(t *testing.T) {
	tb, _ := newTable(0)
	v4, v6 := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8::2")
	vip := netip.MustParseAddrPort("10.0.0.1:80")
	for name, s := range map[string]Session{
		"no kind":             {Client: v4},
		"tcp no port":         {Kind: KindTCP, Client: v4, VIP: vip},
		"tcp families":        {Kind: KindTCP, Client: v6, ClientPort: 1, VIP: vip},
		"tcp key":             {Kind: KindTCP, Client: v4, ClientPort: 1, VIP: vip, Key: []byte("k")},
		"tcp timeout":         {Kind: KindTCP, Client: v4, ClientPort: 1, VIP: vip, IdleTimeoutMS: 1},
		"zone":                {Kind: KindTCP, Client: netip.MustParseAddr("fe80::1%eth0"), ClientPort: 1, VIP: netip.MustParseAddrPort("[2001:db8::1]:80")},
		"ip no timeout":       {Kind: KindClientIP, Client: v4},
		"ip timeout too long": {Kind: KindClientIP, Client: v4, IdleTimeoutMS: uint32((MaxIdleTimeout + time.Millisecond) / time.Millisecond)},
		"ip scope family":     {Kind: KindClientIP, Client: v6, VIP: vip, IdleTimeoutMS: 1},
		"ip port":             {Kind: KindClientIP, Client: v4, ClientPort: 3, IdleTimeoutMS: 1},
		"key empty":           {Kind: KindAppKey, VIP: vip},
		"key too long":        {Kind: KindAppKey, VIP: vip, Key: make([]byte, MaxKey+1)},
		"key no vip":          {Kind: KindAppKey, Key: []byte("k")},
		"key client":          {Kind: KindAppKey, VIP: vip, Key: []byte("k"), Client: v4},
		"application":         {Kind: KindAppKey, VIP: vip, Key: []byte("k"), Application: "a\x00"},
	} {
		if _, err := tb.Establish(s); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", name, err)
		}
	}
	if tb.Len() != 0 {
		t.Fatal("an invalid session was held")
	}
}

// TestExpiry: a client_ip session ends once idle for its timeout; an
// establish refreshes it; other kinds never expire.
func TestExpiry(t *testing.T) {
	tb, c := newTable(0)
	a, b := clientIP("192.0.2.1", 10*time.Second), clientIP("192.0.2.2", 30*time.Second)
	for _, s := range []Session{a, b, tcp(1), appKey("k")} {
		if _, err := tb.Establish(s); err != nil {
			t.Fatal(err)
		}
	}
	if at, ok := tb.Next(); !ok || !at.Equal(c.t.Add(10*time.Second)) {
		t.Fatalf("next deadline %v %v", at, ok)
	}
	c.advance(9 * time.Second)
	if n := tb.Expire(); n != 0 {
		t.Fatalf("expired %d before any timeout", n)
	}
	if _, err := tb.Establish(a); err != nil { // refreshed: 10 s from now
		t.Fatal(err)
	}
	c.advance(2 * time.Second) // a's first deadline passed, but it was refreshed
	if n := tb.Expire(); n != 0 {
		t.Fatalf("expired %d: a refreshed session ended at its old deadline", n)
	}
	c.advance(8 * time.Second) // 19 s: a's refreshed deadline
	if n := tb.Expire(); n != 1 {
		t.Fatalf("expired %d at a's deadline, want 1", n)
	}
	if err := tb.Terminate(a); !errors.Is(err, ErrUnknown) {
		t.Fatalf("a still held: %v", err)
	}
	c.advance(11 * time.Second) // 30 s
	if n := tb.Expire(); n != 1 {
		t.Fatalf("expired %d at b's deadline, want 1", n)
	}
	c.advance(24 * time.Hour)
	if n := tb.Expire(); n != 0 || tb.Len() != 2 {
		t.Fatalf("expired %d, %d left: tcp and app_key sessions must not expire", n, tb.Len())
	}
	if st := tb.Stats(); st.Expired != 2 {
		t.Fatalf("stats %+v", st)
	}
}

// TestExpiryHeapBounded: refreshing one session many times does not
// keep a deadline per refresh.
func TestExpiryHeapBounded(t *testing.T) {
	tb, c := newTable(0)
	s := clientIP("192.0.2.1", time.Minute)
	for range 10000 {
		c.advance(time.Millisecond)
		if _, err := tb.Establish(s); err != nil {
			t.Fatal(err)
		}
	}
	tb.mu.Lock()
	n := len(tb.expiry)
	tb.mu.Unlock()
	if n > 2*1+1024+1 {
		t.Fatalf("%d deadlines kept for one session", n)
	}
}

// TestRunExpires: Run ends a session on the real clock, and an earlier
// deadline established while it waits rearms it.
func TestRunExpires(t *testing.T) {
	tb := New(Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	done := make(chan struct{})
	go func() { tb.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	if _, err := tb.Establish(clientIP("192.0.2.1", time.Hour)); err != nil {
		t.Fatal(err)
	}
	if _, err := tb.Establish(clientIP("192.0.2.2", 50*time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	// Tracked, the expiry is a change the sender hears of.
	// (A slow machine may have expired it already: then Len is 1.)
	if got := tb.Resync(); len(got) == 0 {
		t.Fatal("the long session is gone")
	}
	for tb.Len() != 1 {
		select {
		case <-ctx.Done():
			t.Fatal("the short session never expired")
		case <-tb.Changes():
		}
	}
}

func ids(ss []Session) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = s.String()
	}
	slices.Sort(out)
	return out
}

// TestTracking: nothing is pending until a resync; then each session's
// latest change is, once; a session the unit never heard of is not
// taken back.
func TestTracking(t *testing.T) {
	tb, _ := newTable(0)
	must := func(_ bool, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(tb.Establish(tcp(1)))
	if up, down := tb.Drain(100); len(up)+len(down) != 0 {
		t.Fatalf("pending before any resync: %v %v", up, down)
	}
	if got := tb.Resync(); len(got) != 1 {
		t.Fatalf("resync %v", got)
	}
	select {
	case <-tb.Changes():
		t.Fatal("a change signalled with none pending")
	default:
	}
	must(tb.Establish(tcp(2)))
	must(tb.Establish(tcp(2))) // a refresh that changes nothing sends nothing
	must(tb.Establish(tcp(3)))
	if err := tb.Terminate(tcp(3)); err != nil { // never sent: nothing to take back
		t.Fatal(err)
	}
	if err := tb.Terminate(tcp(1)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-tb.Changes():
	default:
		t.Fatal("changes not signalled")
	}
	up, down := tb.Drain(100)
	if !slices.Equal(ids(up), ids([]Session{tcp(2)})) || !slices.Equal(ids(down), ids([]Session{tcp(1)})) {
		t.Fatalf("drained up %v down %v", ids(up), ids(down))
	}
	// Terminated, then established again before the down was sent: the
	// unit still holds the old one, so the new one's end must be sent.
	if err := tb.Terminate(tcp(2)); err != nil {
		t.Fatal(err)
	}
	must(tb.Establish(tcp(2)))
	up, _ = tb.Drain(100)
	if len(up) != 1 {
		t.Fatalf("re-established: up %v", up)
	}
	if err := tb.Terminate(tcp(2)); err != nil {
		t.Fatal(err)
	}
	if _, down := tb.Drain(100); len(down) != 1 {
		t.Fatalf("the end of a re-established session was not sent: %v", down)
	}
	// An application's change of a held session is sent as up.
	s := tcp(4)
	must(tb.Establish(s))
	tb.Drain(100)
	s.Application = "other"
	must(tb.Establish(s))
	if up, _ := tb.Drain(100); len(up) != 1 || up[0].Application != "other" {
		t.Fatalf("changed application: %v", up)
	}
	// Untracked, changes are not kept.
	tb.Untrack()
	must(tb.Establish(tcp(5)))
	if up, down := tb.Drain(100); len(up)+len(down) != 0 {
		t.Fatalf("pending while untracked: %v %v", up, down)
	}
}

func TestDrainBounded(t *testing.T) {
	tb, _ := newTable(0)
	tb.Resync()
	for p := range uint16(10) {
		if _, err := tb.Establish(tcp(p + 1)); err != nil {
			t.Fatal(err)
		}
	}
	<-tb.Changes()
	up, _ := tb.Drain(4)
	if len(up) != 4 {
		t.Fatalf("drained %d, want 4", len(up))
	}
	select {
	case <-tb.Changes():
	default:
		t.Fatal("more remain but no signal")
	}
	rest, _ := tb.Drain(100)
	if len(rest) != 6 {
		t.Fatalf("then %d, want 6", len(rest))
	}
}

func TestList(t *testing.T) {
	tb, _ := newTable(0)
	for p := range uint16(5) {
		if _, err := tb.Establish(tcp(5 - p)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := tb.Establish(clientIP("192.0.2.9", time.Minute)); err != nil {
		t.Fatal(err)
	}
	page, total := tb.List(1, 3)
	if total != 6 || len(page) != 3 {
		t.Fatalf("page of %d, total %d", len(page), total)
	}
	for i, v := range page {
		if v.ClientPort != uint16(i+2) {
			t.Fatalf("page[%d] = %v, want port %d", i, v.Session, i+2)
		}
	}
	last, _ := tb.List(5, 10)
	if len(last) != 1 || last[0].Expires == nil {
		t.Fatalf("last page %+v", last)
	}
	if none, _ := tb.List(100, 10); len(none) != 0 {
		t.Fatalf("past the end: %v", none)
	}
}
