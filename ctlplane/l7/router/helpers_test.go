package router

import (
	"context"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// testTimeout bounds every wait of a test, so that a broken router fails
// a test instead of hanging it.
const testTimeout = 10 * time.Second

// startRouter serves cfg on a loopback listener until the test ends and
// returns the router and its address.
func startRouter(t testing.TB, cfg Config) (*Router, string) {
	t.Helper()
	rt, addr, _ := serveRouter(t, cfg)
	return rt, addr
}

// serveRouter is startRouter that also returns stop, which ends Serve and
// returns once Serve has (stop may be called again at the end).
func serveRouter(t testing.TB, cfg Config) (*Router, string, func()) {
	t.Helper()
	rt, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- rt.Serve(ctx, l) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-served:
				if err != nil {
					t.Errorf("Serve: %v", err)
				}
			case <-time.After(testTimeout):
				t.Errorf("Serve did not return after its context ended")
			}
		})
	}
	t.Cleanup(stop)
	return rt, l.Addr().String(), stop
}

// host is a test server standing for one host; it counts the
// connections it accepted.
type host struct {
	*httptest.Server
	accepted atomic.Int64
}

func startHost(t testing.TB, h http.Handler) *host {
	t.Helper()
	hs := &host{Server: httptest.NewUnstartedServer(h)}
	hs.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			hs.accepted.Add(1)
		}
	}
	hs.Start()
	t.Cleanup(hs.Close)
	return hs
}

func (h *host) addrPort() netip.AddrPort {
	return netip.MustParseAddrPort(h.Listener.Addr().String())
}

// to decides every request for one target.
func to(ap netip.AddrPort, rule string) func(*http.Request, func(string) bool) (Target, bool) {
	return func(*http.Request, func(string) bool) (Target, bool) {
		return Target{Addr: ap, Key: "vip/" + rule, Rule: rule}, true
	}
}

// client returns an HTTP client of its own that counts the connections
// it dials; keepAlive false makes every request dial anew.
func client(t testing.TB, keepAlive bool) (*http.Client, *atomic.Int64) {
	t.Helper()
	var dials atomic.Int64
	d := &net.Dialer{}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			dials.Add(1)
			return d.DialContext(ctx, network, addr)
		},
		DisableKeepAlives:  !keepAlive,
		DisableCompression: true,
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: testTimeout}, &dials
}

// get fetches url and returns the status and the body.
func get(t testing.TB, c *http.Client, url string) (int, string) {
	t.Helper()
	res, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("GET %s: body: %v", url, err)
	}
	return res.StatusCode, string(b)
}

// freePort returns a loopback address nothing listens on.
func freePort(t testing.TB) netip.AddrPort {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ap := netip.MustParseAddrPort(l.Addr().String())
	l.Close()
	return ap
}

// rawListener accepts connections and hands them to fn, one goroutine
// each, until the test ends.
func rawListener(t testing.TB, fn func(net.Conn)) netip.AddrPort {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				fn(c)
			}()
		}
	}()
	return netip.MustParseAddrPort(l.Addr().String())
}

// stream is n deterministic pseudo-random bytes.
func stream(seed uint64, n int64) io.Reader {
	var s [32]byte
	s[0] = byte(seed)
	return io.LimitReader(rand.NewChaCha8(s), n)
}

// waitFor polls cond until it holds or the test's bound passes; it is
// for state the router reaches on its own goroutines (a connection's
// slot given back), where there is no event to wait on.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}
