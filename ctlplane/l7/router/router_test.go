package router

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestPerRequestRoutingOnKeepAlive(t *testing.T) {
	a := startHost(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "A") }))
	b := startHost(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "B") }))
	rt, addr := startRouter(t, Config{Decide: func(r *http.Request, _ func(string) bool) (Target, bool) {
		if strings.HasPrefix(r.URL.Path, "/b") {
			return Target{Addr: b.addrPort(), Key: "web/b", Rule: "path-b"}, true
		}
		return Target{Addr: a.addrPort(), Key: "web/a", Rule: "default"}, true
	}})
	c, dials := client(t, true)
	for i, tc := range []struct{ path, want string }{{"/a", "A"}, {"/b", "B"}, {"/a/x", "A"}, {"/b/y", "B"}} {
		status, body := get(t, c, "http://"+addr+tc.path)
		if status != http.StatusOK || body != tc.want {
			t.Errorf("request %d GET %s = %d %q, want 200 %q", i, tc.path, status, body, tc.want)
		}
	}
	if n := dials.Load(); n != 1 {
		t.Errorf("client dialed %d connections, want 1 (all four requests on one keep-alive connection)", n)
	}
	s := rt.Stats()
	if s.ByRule["path-b"].Requests != 2 || s.ByRule["default"].Requests != 2 {
		t.Errorf("Stats().ByRule = %+v, want 2 requests each for path-b and default", s.ByRule)
	}
	if s.ByBackend["web/a"].Requests != 2 || s.ByBackend["web/b"].ByStatus["2xx"] != 2 {
		t.Errorf("Stats().ByBackend = %+v, want 2 requests, 2 2xx each for web/a and web/b", s.ByBackend)
	}
	if s.ByStatus["2xx"] != 4 || s.ByRule["path-b"].ByStatus["2xx"] != 2 {
		t.Errorf("Stats().ByStatus = %v, ByRule[path-b].ByStatus = %v, want 4 and 2 2xx", s.ByStatus, s.ByRule["path-b"].ByStatus)
	}
}

func TestHostConnectionsAreReusedAcrossClients(t *testing.T) {
	const clients, parallel = 60, 4
	h := startHost(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	rt, addr := startRouter(t, Config{Decide: to(h.addrPort(), "r")})
	c, dials := client(t, false) // every request on a new client connection
	var wg sync.WaitGroup
	for range parallel {
		wg.Go(func() {
			for range clients / parallel {
				if status, _ := get(t, c, "http://"+addr+"/"); status != http.StatusOK {
					t.Errorf("status %d, want 200", status)
				}
			}
		})
	}
	wg.Wait()
	if n := dials.Load(); n != clients {
		t.Fatalf("client dialed %d connections, want %d", n, clients)
	}
	// Sequential requests in each of 4 workers need 4 host connections
	// (seen: 3 or 4); a connection the transport has not yet put back
	// when the next request comes can cost another dial now and then,
	// hence the margin.
	t.Logf("host accepted %d connections", h.accepted.Load())
	if n := h.accepted.Load(); n > 2*parallel {
		t.Errorf("host accepted %d connections for %d client connections, want at most %d", n, clients, 2*parallel)
	}
	s := rt.Stats()
	if s.HostDials != uint64(h.accepted.Load()) || s.HostReuses+s.HostDials < clients {
		t.Errorf("Stats() HostDials %d HostReuses %d, want dials = host's %d accepted and dials+reuses >= %d",
			s.HostDials, s.HostReuses, h.accepted.Load(), clients)
	}
	if s.ClientConns != clients {
		t.Errorf("Stats().ClientConns = %d, want %d", s.ClientConns, clients)
	}
}

func TestDedicatedSourceAddress(t *testing.T) {
	h := startHost(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, r.RemoteAddr) }))
	_, addr := startRouter(t, Config{Decide: to(h.addrPort(), "r"), Source: netip.MustParseAddr("127.0.0.2")})
	c, _ := client(t, true)
	status, body := get(t, c, "http://"+addr+"/")
	if status != http.StatusOK {
		t.Fatalf("status %d, want 200", status)
	}
	if ap, err := netip.ParseAddrPort(body); err != nil || ap.Addr() != netip.MustParseAddr("127.0.0.2") {
		t.Errorf("host saw the router at %q, want 127.0.0.2", body)
	}
}

func TestForwardingHeaders(t *testing.T) {
	h := startHost(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for _, k := range []string{"X-Forwarded-For", "Forwarded", "X-Secret", "Via"} {
			fmt.Fprintf(w, "%s=%s\n", k, strings.Join(r.Header.Values(k), ","))
		}
		fmt.Fprintf(w, "Host=%s\n", r.Host)
	}))
	_, addr := startRouter(t, Config{Decide: to(h.addrPort(), "r")})
	req, _ := http.NewRequest("GET", "http://"+addr+"/", nil)
	req.Host = "shop.example"
	req.Header.Set("X-Forwarded-For", "6.6.6.6")    // forged by the client
	req.Header.Set("Forwarded", "for=6.6.6.6")      // forged by the client
	req.Header.Set("Connection", "X-Secret")        // names a hop-by-hop header
	req.Header.Set("X-Secret", "for this hop only") // which must not pass
	c, _ := client(t, true)
	res, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	got := string(b)
	for _, want := range []string{
		"X-Forwarded-For=127.0.0.1\n",
		`Forwarded=for=127.0.0.1;host="shop.example";proto=http` + "\n",
		"X-Secret=\n",
		"Via=1.1 tether\n",
		"Host=shop.example\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("host saw\n%s\nwant a line %q", got, want)
		}
	}
	if v := res.Header.Get("Via"); v != "1.1 tether" {
		t.Errorf("response Via = %q, want 1.1 tether", v)
	}
}

func TestClientSeesWhatFailed(t *testing.T) {
	// resetter reads the request and resets the connection.
	resetter := rawListener(t, func(c net.Conn) {
		bufio.NewReader(c).ReadString('\n')
		c.(*net.TCPConn).SetLinger(0)
	})
	// silent reads the request and never answers, until the test ends.
	stop := make(chan struct{})
	t.Cleanup(func() { close(stop) })
	silent := rawListener(t, func(c net.Conn) {
		bufio.NewReader(c).ReadString('\n')
		<-stop
	})
	refused := freePort(t)
	for _, tc := range []struct {
		name   string
		decide func(*http.Request, func(string) bool) (Target, bool)
		status int
		kind   ErrorKind
	}{
		{"no host", func(*http.Request, func(string) bool) (Target, bool) { return Target{Rule: "none"}, false }, 503, ErrNoTarget},
		{"refused", to(refused, "r"), 502, ErrDialFailed},
		{"reset before response", to(resetter, "r"), 502, ErrHostFailed},
		{"no response header", to(silent, "r"), 504, ErrResponseTimeout},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rt, addr := startRouter(t, Config{Decide: tc.decide, ResponseHeaderTimeout: 200 * time.Millisecond})
			c, _ := client(t, true)
			req, _ := http.NewRequest("POST", "http://"+addr+"/", strings.NewReader("x"))
			res, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
			if res.StatusCode != tc.status {
				t.Errorf("status %d, want %d", res.StatusCode, tc.status)
			}
			s := rt.Stats()
			if s.Errors[tc.kind] != 1 || len(s.Errors) != 1 {
				t.Errorf("Stats().Errors = %v, want only %s: 1", s.Errors, tc.kind)
			}
			if s.ByStatus["5xx"] != 1 {
				t.Errorf("Stats().ByStatus = %v, want 5xx: 1", s.ByStatus)
			}
			if b := s.ByBackend["vip/r"]; tc.kind != ErrNoTarget && b.ByStatus["5xx"] != 1 {
				t.Errorf("Stats().ByBackend[vip/r] = %+v, want 5xx: 1", b)
			}
		})
	}
}

func TestHostBusy(t *testing.T) {
	release := make(chan struct{})
	entered := make(chan struct{}, 1)
	h := startHost(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		entered <- struct{}{}
		<-release
	}))
	let := sync.OnceFunc(func() { close(release) })
	t.Cleanup(let) // before the host's Close waits for the handler
	rt, addr := startRouter(t, Config{Decide: to(h.addrPort(), "r"), MaxConnsPerHost: 1, DialTimeout: 200 * time.Millisecond})
	c, _ := client(t, true)
	first := make(chan int, 1)
	go func() {
		res, err := c.Get("http://" + addr + "/")
		if err != nil {
			first <- 0
			return
		}
		res.Body.Close()
		first <- res.StatusCode
	}()
	<-entered // the host's only connection is busy now
	status, _ := get(t, c, "http://"+addr+"/")
	let()
	if status != http.StatusServiceUnavailable {
		t.Errorf("second request: status %d, want 503", status)
	}
	if st := <-first; st != http.StatusOK {
		t.Errorf("first request: status %d, want 200", st)
	}
	if n := rt.Stats().Errors[ErrHostBusy]; n != 1 {
		t.Errorf("Stats().Errors[host_busy] = %d, want 1", n)
	}
}

// rawRequest sends text on a new connection to addr and returns all the
// router answered until it closed the connection.
func rawRequest(t *testing.T, addr, text string) string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(testTimeout))
	if _, err := io.WriteString(c, text); err != nil {
		t.Fatal(err)
	}
	// A reset after the answer is fine: the router may close with the
	// client's unread bytes in its socket (the standard library does
	// for 431), and the answer has arrived.
	b, err := io.ReadAll(c)
	if err != nil && len(b) == 0 {
		t.Fatalf("reading the answer: %v", err)
	}
	return string(b)
}

func TestHeaderTooLarge(t *testing.T) {
	h := startHost(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	_, addr := startRouter(t, Config{Decide: to(h.addrPort(), "r"), MaxHeaderBytes: 1024})
	// The standard library allows 4 KiB beyond MaxHeaderBytes.
	got := rawRequest(t, addr, "GET / HTTP/1.1\r\nHost: x\r\nX-Big: "+strings.Repeat("a", 16<<10)+"\r\n\r\n")
	if !strings.HasPrefix(got, "HTTP/1.1 431 ") {
		t.Errorf("answer %.60q, want 431", got)
	}
}

func TestHeaderTimeout(t *testing.T) {
	h := startHost(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	rt, addr := startRouter(t, Config{Decide: to(h.addrPort(), "r"), ReadHeaderTimeout: 200 * time.Millisecond})
	got := rawRequest(t, addr, "GET / HTTP/1.1\r\nHost: x\r\n") // and no blank line
	if !strings.HasPrefix(got, "HTTP/1.1 408 ") {
		t.Errorf("answer %.60q, want 408", got)
	}
	// A connection that sends nothing is closed without an answer.
	if got := rawRequest(t, addr, ""); got != "" {
		t.Errorf("answer to nothing %.60q, want none", got)
	}
	if n := rt.Stats().Errors[ErrHeaderTimeout]; n != 1 {
		t.Errorf("Stats().Errors[request_header_timeout] = %d, want 1", n)
	}
}

func TestRequestBodyTimeout(t *testing.T) {
	h := startHost(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.Copy(io.Discard, r.Body) }))
	rt, addr := startRouter(t, Config{Decide: to(h.addrPort(), "r"), RequestBodyTimeout: 200 * time.Millisecond})
	got := rawRequest(t, addr, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly ten b")
	if !strings.HasPrefix(got, "HTTP/1.1 408 ") {
		t.Errorf("answer %.60q, want 408", got)
	}
	if n := rt.Stats().Errors[ErrBodyTimeout]; n != 1 {
		t.Errorf("Stats().Errors[request_body_timeout] = %d, want 1", n)
	}
}

func TestMaxClientConns(t *testing.T) {
	h := startHost(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	rt, addr := startRouter(t, Config{Decide: to(h.addrPort(), "r"), MaxClientConns: 2})
	// Two keep-alive connections, each proven accepted by a request.
	var held []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(testTimeout))
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		res, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil || res.StatusCode != 200 {
			t.Fatalf("held connection: %v %v", res, err)
		}
		res.Body.Close()
		held = append(held, c)
	}
	got := rawRequest(t, addr, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	if !strings.HasPrefix(got, "HTTP/1.1 503 ") {
		t.Errorf("third connection: answer %.60q, want 503", got)
	}
	if s := rt.Stats(); s.Errors[ErrOverLimit] != 1 || s.ActiveClientConns != 2 {
		t.Errorf("Stats() Errors %v ActiveClientConns %d, want client_conns_over_limit: 1 and 2 active", s.Errors, s.ActiveClientConns)
	}
	held[0].Close()
	waitFor(t, "the closed connection's slot", func() bool { return rt.Stats().ActiveClientConns == 1 })
	if got := rawRequest(t, addr, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"); !strings.HasPrefix(got, "HTTP/1.1 200 ") {
		t.Errorf("connection after one closed: answer %.60q, want 200", got)
	}
}

func TestUpgradeIsProxied(t *testing.T) {
	h := startHost(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "echo" {
			http.Error(w, "want Upgrade: echo", 400)
			return
		}
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
		brw.Flush()
		io.Copy(c, brw) // echo until the client closes
	}))
	rt, addr, stop := serveRouter(t, Config{Decide: to(h.addrPort(), "r")})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(testTimeout))
	io.WriteString(c, "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
	br := bufio.NewReader(c)
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("status %d, want 101", res.StatusCode)
	}
	io.WriteString(c, "ping\n")
	if line, err := br.ReadString('\n'); err != nil || line != "ping\n" {
		t.Errorf("echo %q %v, want ping", line, err)
	}
	if n := rt.Stats().ActiveClientConns; n != 1 {
		t.Errorf("Stats().ActiveClientConns = %d with one upgraded connection, want 1", n)
	}
	// The server forgot the connection when it was hijacked; Serve must
	// still close it when it ends.
	stop()
	if b, err := io.ReadAll(br); err != nil || len(b) != 0 {
		t.Errorf("after Serve ended, read %q, %v; want EOF", b, err)
	}
	if n := rt.Stats().ActiveClientConns; n != 0 {
		t.Errorf("Stats().ActiveClientConns = %d after Serve ended, want 0", n)
	}
}

func TestNewChecksConfig(t *testing.T) {
	ok := to(netip.MustParseAddrPort("127.0.0.1:1"), "r")
	for _, cfg := range []Config{
		{},
		{Decide: ok, DialTimeout: -1},
		{Decide: ok, MaxClientConns: -1},
		{Decide: ok, Source: netip.IPv4Unspecified()},
		{Decide: ok, EjectAfter: -1},
		{Decide: ok, EjectFor: -1},
		{Decide: ok, MaxEjectFor: -1},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("New(%+v) = nil error, want one", cfg)
		}
	}
	rt, err := New(Config{Decide: ok})
	if err != nil {
		t.Fatal(err)
	}
	if d := DefaultConfig(); rt.cfg.MaxClientConns != d.MaxClientConns || rt.cfg.ReadHeaderTimeout != d.ReadHeaderTimeout ||
		rt.cfg.EjectAfter != 3 || rt.cfg.EjectFor != 10*time.Second || rt.cfg.MaxEjectFor != 2*time.Minute {
		t.Errorf("zero fields not defaulted: %+v", rt.cfg)
	}
	// A cap below the first ejection is raised to it.
	if rt, err := New(Config{Decide: ok, EjectFor: 5 * time.Minute}); err != nil {
		t.Error(err)
	} else if rt.cfg.MaxEjectFor != 5*time.Minute {
		t.Errorf("EjectFor 5m: MaxEjectFor %v, want 5m", rt.cfg.MaxEjectFor)
	}
}

func TestForwardedFor(t *testing.T) {
	for _, tc := range []struct {
		addr, host, want string
	}{
		{"192.0.2.7", "shop.example", `for=192.0.2.7;host="shop.example";proto=http`},
		{"2001:db8::7", "", `for="[2001:db8::7]";proto=http`}, // RFC 7239 §6: IPv6 quoted, in brackets
	} {
		if got := forwardedFor(netip.MustParseAddr(tc.addr), tc.host); got != tc.want {
			t.Errorf("forwardedFor(%s, %q) = %s, want %s", tc.addr, tc.host, got, tc.want)
		}
	}
}

func TestClientGoneCancelsHostRequest(t *testing.T) {
	entered := make(chan struct{}, 1)
	hostSawCancel := make(chan struct{})
	h := startHost(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		entered <- struct{}{}
		<-r.Context().Done() // the router closed its request to the host
		close(hostSawCancel)
	}))
	rt, addr := startRouter(t, Config{Decide: to(h.addrPort(), "r")})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	<-entered
	c.Close()
	select {
	case <-hostSawCancel:
	case <-time.After(testTimeout):
		t.Fatal("the host's request was not cancelled after the client left")
	}
	waitFor(t, "client_gone counted", func() bool { return rt.Stats().Errors[ErrClientGone] == 1 })
	if s := rt.Stats(); len(s.Errors) != 1 || s.ByStatus["5xx"] != 0 {
		t.Errorf("Stats() Errors %v ByStatus %v, want only client_gone and no answer counted", s.Errors, s.ByStatus)
	}
}

func TestIdleClientConnectionIsClosedSilently(t *testing.T) {
	h := startHost(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	rt, addr := startRouter(t, Config{Decide: to(h.addrPort(), "r"), IdleTimeout: 200 * time.Millisecond})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(testTimeout))
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	br := bufio.NewReader(c)
	res, err := http.ReadResponse(br, nil)
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("first request: %v %v", res, err)
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	// Nothing more from the client: the router closes after IdleTimeout,
	// and writes nothing (an unasked 408 would be taken for the answer
	// to the client's next request).
	if b, err := io.ReadAll(br); err != nil || len(b) != 0 {
		t.Errorf("after the idle timeout read %q, %v; want EOF and nothing", b, err)
	}
	waitFor(t, "the idle connection's slot", func() bool { return rt.Stats().ActiveClientConns == 0 })
}
