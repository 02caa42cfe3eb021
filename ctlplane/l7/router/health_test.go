package router

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// clock is a test's clock for ejections: it moves only when the test
// advances it.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Unix(1_000_000, 0)} }

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// prefer decides every request for the first target avoid does not
// name, and for the first of all when it names every one, as Decide
// should.
func prefer(targets ...func() Target) func(*http.Request, func(string) bool) (Target, bool) {
	return func(_ *http.Request, avoid func(string) bool) (Target, bool) {
		for _, t := range targets {
			if tg := t(); !avoid(tg.Key) {
				return tg, true
			}
		}
		return targets[0](), true
	}
}

// fixed is a target that never moves.
func fixed(ap netip.AddrPort, key string) func() Target {
	return func() Target { return Target{Addr: ap, Key: key, Rule: "r"} }
}

// TestHealth: the ejection state machine on its own, at the times the
// test names.
func TestHealth(t *testing.T) {
	h := newHealth(Config{EjectAfter: 3, EjectFor: 10 * time.Second, MaxEjectFor: 25 * time.Second})
	t0 := time.Unix(1_000_000, 0)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	const k = "vip/a"

	// A success between failures starts the count again.
	h.failure(k, at(0))
	h.failure(k, at(0))
	h.success(k, at(0))
	h.failure(k, at(0))
	if d := h.failure(k, at(0)); d != 0 || h.ejected(k, at(0)) {
		t.Fatalf("ejected after 2 consecutive failures (a success between): %v", d)
	}
	if d := h.failure(k, at(0)); d != 10*time.Second || !h.ejected(k, at(0)) {
		t.Fatalf("third consecutive failure: ejected %v for %v, want for 10s", h.ejected(k, at(0)), d)
	}
	// While ejected, failures and successes change nothing.
	if d := h.failure(k, at(9)); d != 0 {
		t.Errorf("a failure while ejected ejected again, for %v", d)
	}
	if h.success(k, at(9)) {
		t.Error("a success while ejected readmitted the key")
	}
	if !h.ejected(k, at(9)) || h.ejected(k, at(10)) {
		t.Errorf("ejected at 9s %v, at 10s %v; want until 10s", h.ejected(k, at(9)), h.ejected(k, at(10)))
	}
	// On probation one failure ejects for twice as long, up to the cap.
	if d := h.failure(k, at(10)); d != 20*time.Second {
		t.Errorf("failure on probation: ejected for %v, want 20s", d)
	}
	if d := h.failure(k, at(30)); d != 25*time.Second {
		t.Errorf("second failure on probation: ejected for %v, want 25s (the cap)", d)
	}
	if d := h.failure(k, at(55)); d != 25*time.Second {
		t.Errorf("third failure on probation: ejected for %v, want 25s (the cap)", d)
	}
	if n := h.ejections.Load(); n != 4 {
		t.Errorf("ejections %d, want 4", n)
	}
	if got := h.ejectedKeys(at(79)); !slices.Equal(got, []string{k}) {
		t.Errorf("ejectedKeys at 79s = %v, want [%s]", got, k)
	}
	// One success on probation readmits, and the next ejection takes
	// EjectAfter failures again and starts from EjectFor.
	if !h.success(k, at(80)) {
		t.Error("a success on probation did not readmit the key")
	}
	for i := range 2 {
		if d := h.failure(k, at(80)); d != 0 {
			t.Fatalf("failure %d after readmission ejected for %v", i+1, d)
		}
	}
	if d := h.failure(k, at(80)); d != 10*time.Second {
		t.Errorf("ejection after readmission lasts %v, want 10s", d)
	}
	if h.ejected("vip/other", at(80)) || len(h.ejectedKeys(at(90))) != 0 {
		t.Error("a key never seen is ejected, or one is ejected past its period")
	}
}

// TestEjection: a backend that refuses connections is ejected after
// EjectAfter failures and gets no request while ejected; on probation
// one failure ejects it for twice as long and one success readmits it.
func TestEjection(t *testing.T) {
	a := startHost(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("A")) }))
	b := startHost(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("B")) }))
	refused := freePort(t)
	var aAddr atomic.Value // the address of backend vip/a: refused or a's
	aAddr.Store(refused)
	targetA := func() Target { return Target{Addr: aAddr.Load().(netip.AddrPort), Key: "vip/a", Rule: "r"} }
	clk := newClock()
	rt, addr := startRouter(t, Config{
		Decide:     prefer(targetA, fixed(b.addrPort(), "vip/b")),
		EjectAfter: 3, EjectFor: 10 * time.Second, MaxEjectFor: time.Minute,
		now: clk.now,
	})
	c, _ := client(t, true)
	expect := func(step, want string) {
		t.Helper()
		if status, body := get(t, c, "http://"+addr+"/"); status != http.StatusOK || body != want {
			t.Fatalf("%s: %d %q, want 200 %q", step, status, body, want)
		}
	}
	ejected := func(step string, want ...string) {
		t.Helper()
		if got := rt.Stats().Ejected; !slices.Equal(got, want) {
			t.Fatalf("%s: Stats().Ejected = %v, want %v", step, got, want)
		}
	}
	requestsToA := func() uint64 { return rt.Stats().ByBackend["vip/a"].Requests }

	for i := range 3 {
		ejected(fmt.Sprintf("before failure %d", i+1))
		expect("a refuses, b takes the retry", "B")
	}
	ejected("after 3 failures", "vip/a")
	if s := rt.Stats(); s.Ejections != 1 || s.Retries != 3 || s.Errors[ErrDialFailed] != 3 || requestsToA() != 3 {
		t.Fatalf("after 3 failures: Ejections %d Retries %d Errors %v requests to a %d; want 1, 3, dial_failed: 3, 3",
			s.Ejections, s.Retries, s.Errors, requestsToA())
	}
	for range 5 {
		expect("a ejected", "B")
	}
	if s := rt.Stats(); requestsToA() != 3 || s.Retries != 3 {
		t.Fatalf("while ejected: %d requests to a, %d retries; want 3 and 3 (none tried on a)", requestsToA(), s.Retries)
	}

	clk.advance(10 * time.Second) // probation, and a still refuses
	ejected("on probation")
	expect("a fails on probation, b takes the retry", "B")
	ejected("after failing on probation", "vip/a")
	if s := rt.Stats(); requestsToA() != 4 || s.Ejections != 2 {
		t.Fatalf("after failing on probation: %d requests to a, Ejections %d; want 4 and 2", requestsToA(), s.Ejections)
	}

	aAddr.Store(a.addrPort()) // a is back, but its second ejection lasts 20s
	clk.advance(10 * time.Second)
	expect("10s into a 20s ejection", "B")
	if n := requestsToA(); n != 4 {
		t.Fatalf("10s into the second ejection: %d requests to a, want 4", n)
	}
	clk.advance(10 * time.Second)
	expect("a on probation answers", "A")
	ejected("after a success on probation")

	// Readmitted: a fresh start, EjectAfter failures and EjectFor.
	aAddr.Store(refused)
	for range 2 {
		expect("a refuses again", "B")
	}
	ejected("2 failures after readmission")
	expect("a refuses a third time", "B")
	ejected("3 failures after readmission", "vip/a")
	clk.advance(10 * time.Second)
	ejected("EjectFor after the third ejection")
}

// TestEveryBackendEjectedIsStillTried: when Decide has nothing but
// ejected backends it still chooses one, and the router still tries it
// rather than refusing the request itself.
func TestEveryBackendEjectedIsStillTried(t *testing.T) {
	refused := freePort(t)
	rt, addr := startRouter(t, Config{Decide: prefer(fixed(refused, "vip/a")), EjectAfter: 3, now: newClock().now})
	c, _ := client(t, true)
	for i := range 4 {
		if status, _ := get(t, c, "http://"+addr+"/"); status != http.StatusBadGateway {
			t.Fatalf("request %d: status %d, want 502", i+1, status)
		}
	}
	s := rt.Stats()
	if !slices.Equal(s.Ejected, []string{"vip/a"}) || s.Ejections != 1 {
		t.Errorf("Stats() Ejected %v Ejections %d, want [vip/a] and 1", s.Ejected, s.Ejections)
	}
	if s.HostDials != 4 || s.Errors[ErrDialFailed] != 4 || s.Retries != 0 {
		t.Errorf("Stats() HostDials %d Errors %v Retries %d, want 4 dials, dial_failed: 4 and no retry (no other host)",
			s.HostDials, s.Errors, s.Retries)
	}
}

// TestFreshConnectionResetEjects: a host that resets connections dialed
// for a request before answering is ejected too; such a request is not
// retried (it reached the host).
func TestFreshConnectionResetEjects(t *testing.T) {
	resetter := rawListener(t, func(c net.Conn) {
		bufio.NewReader(c).ReadString('\n')
		c.(*net.TCPConn).SetLinger(0)
	})
	b := startHost(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("B")) }))
	rt, addr := startRouter(t, Config{
		Decide:     prefer(fixed(resetter, "vip/a"), fixed(b.addrPort(), "vip/b")),
		EjectAfter: 3, now: newClock().now,
	})
	c, _ := client(t, true)
	for i := range 3 {
		if status, _ := get(t, c, "http://"+addr+"/"); status != http.StatusBadGateway {
			t.Fatalf("request %d: status %d, want 502", i+1, status)
		}
	}
	if status, body := get(t, c, "http://"+addr+"/"); status != http.StatusOK || body != "B" {
		t.Errorf("after 3 resets: %d %q, want 200 B", status, body)
	}
	if s := rt.Stats(); !slices.Equal(s.Ejected, []string{"vip/a"}) || s.Retries != 0 || s.Errors[ErrHostFailed] != 3 {
		t.Errorf("Stats() Ejected %v Retries %d Errors %v, want [vip/a], 0 and host_failed: 3", s.Ejected, s.Retries, s.Errors)
	}
}

// TestRetryOnAnotherHost: a GET whose dial is refused is decided again,
// avoiding the backend that refused, and the client sees the other's
// answer; a POST with a body is not retried.
func TestRetryOnAnotherHost(t *testing.T) {
	refused := freePort(t)
	b := startHost(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("B")) }))
	rt, addr := startRouter(t, Config{Decide: prefer(fixed(refused, "vip/a"), fixed(b.addrPort(), "vip/b")), now: newClock().now})
	c, _ := client(t, true)
	if status, body := get(t, c, "http://"+addr+"/"); status != http.StatusOK || body != "B" {
		t.Errorf("GET: %d %q, want 200 B", status, body)
	}
	s := rt.Stats()
	if s.Retries != 1 || s.Errors[ErrDialFailed] != 1 || s.ByStatus["2xx"] != 1 || s.ByStatus["5xx"] != 0 {
		t.Errorf("after the GET: Retries %d Errors %v ByStatus %v, want 1 retry, dial_failed: 1, one 2xx and no 5xx",
			s.Retries, s.Errors, s.ByStatus)
	}
	if s.ByBackend["vip/a"].Requests != 1 || s.ByBackend["vip/b"].ByStatus["2xx"] != 1 {
		t.Errorf("after the GET: ByBackend %+v, want one request to vip/a, one 2xx from vip/b", s.ByBackend)
	}

	res, err := c.Post("http://"+addr+"/", "text/plain", strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusBadGateway {
		t.Errorf("POST with a body: status %d, want 502 (not retried)", res.StatusCode)
	}
	if n := rt.Stats().Retries; n != 1 {
		t.Errorf("after the POST: Retries %d, want 1", n)
	}
}

// TestRetryHasItsOwnDialTimeout: a retry after a dial that timed out
// gets a whole DialTimeout of its own.
func TestRetryHasItsOwnDialTimeout(t *testing.T) {
	full := fullListener(t)
	b := startHost(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("B")) }))
	rt, addr := startRouter(t, Config{
		Decide:      prefer(fixed(full, "vip/a"), fixed(b.addrPort(), "vip/b")),
		DialTimeout: 200 * time.Millisecond, now: newClock().now,
	})
	c, _ := client(t, true)
	if status, body := get(t, c, "http://"+addr+"/"); status != http.StatusOK || body != "B" {
		t.Errorf("GET: %d %q, want 200 B", status, body)
	}
	if s := rt.Stats(); s.Retries != 1 || s.Errors[ErrDialTimeout] != 1 {
		t.Errorf("Stats() Retries %d Errors %v, want 1 retry after dial_timeout: 1", s.Retries, s.Errors)
	}
}

// TestReusedConnectionResetDoesNotEject: a host that closes a connection
// it kept idle says nothing about whether it takes new ones, so a reset
// on a reused connection is not counted against it.
func TestReusedConnectionResetDoesNotEject(t *testing.T) {
	// Each connection: one request answered, then a reset on the next.
	h := rawListener(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		io.Copy(io.Discard, req.Body)
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		br.ReadString('\n')
		c.(*net.TCPConn).SetLinger(0)
	})
	rt, addr := startRouter(t, Config{Decide: prefer(fixed(h, "vip/a")), EjectAfter: 1, now: newClock().now})
	c, _ := client(t, true)
	// The POST goes over the connection the GET left idle, unless the
	// transport had not put it back yet; then it takes a new one and
	// is answered, and the pair is tried again.
	for range 10 {
		if status, _ := get(t, c, "http://"+addr+"/"); status != http.StatusOK {
			t.Fatalf("GET: status %d, want 200", status)
		}
		reuses := rt.Stats().HostReuses
		// A POST: the transport does not retry it on a new
		// connection by itself, as it would a GET.
		res, err := c.Post("http://"+addr+"/", "text/plain", strings.NewReader("x"))
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if rt.Stats().HostReuses == reuses {
			continue
		}
		if res.StatusCode != http.StatusBadGateway {
			t.Fatalf("POST on a reused connection: status %d, want 502", res.StatusCode)
		}
		if s := rt.Stats(); len(s.Ejected) != 0 || s.Errors[ErrHostFailed] != 1 {
			t.Errorf("Stats() Ejected %v Errors %v, want none ejected and host_failed: 1", s.Ejected, s.Errors)
		}
		return
	}
	t.Skip("no POST went over a reused connection")
}
