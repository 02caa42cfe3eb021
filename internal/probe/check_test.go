package probe

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// bound is how long a test waits for something that should happen in
// milliseconds: generous, so that a loaded machine does not fail it.
const bound = 5 * time.Second

func TestDefaults(t *testing.T) {
	got := Spec{Type: TypeHTTP, Target: "127.0.0.1:80"}.Defaults()
	want := Spec{Type: TypeHTTP, Target: "127.0.0.1:80", Path: "/", Expect: 200,
		Interval: 250 * time.Millisecond, Timeout: 200 * time.Millisecond, Rise: 2, Fall: 2}
	if !equalSpec(got, want) {
		t.Errorf("http defaults: got %+v, want %+v", got, want)
	}
	// Set fields stay; path and expect are http's only.
	got = Spec{Type: TypeTCP, Target: "a:1", Interval: time.Second, Timeout: 300 * time.Millisecond, Rise: 5, Fall: 7}.Defaults()
	want = Spec{Type: TypeTCP, Target: "a:1", Interval: time.Second, Timeout: 300 * time.Millisecond, Rise: 5, Fall: 7}
	if !equalSpec(got, want) {
		t.Errorf("tcp: got %+v, want %+v", got, want)
	}
	// A short interval alone is valid: the default timeout shrinks to it.
	got = Spec{Type: TypeTCP, Target: "a:1", Interval: 20 * time.Millisecond}.Defaults()
	if got.Timeout != 20*time.Millisecond {
		t.Errorf("timeout with a 20ms interval: %s", got.Timeout)
	}
	if err := got.Validate(); err != nil {
		t.Error(err)
	}
}

func equalSpec(a, b Spec) bool {
	return a.Type == b.Type && a.Target == b.Target && a.Path == b.Path && a.Host == b.Host && a.Expect == b.Expect &&
		strings.Join(a.Command, "\x00") == strings.Join(b.Command, "\x00") && len(a.Command) == len(b.Command) &&
		a.Interval == b.Interval && a.Timeout == b.Timeout && a.Rise == b.Rise && a.Fall == b.Fall
}

func TestValidate(t *testing.T) {
	valid := []Spec{
		{Type: TypeTCP, Target: "127.0.0.1:80"},
		{Type: TypeTCP, Target: "[::1]:65535"},
		{Type: TypeTCP, Target: "[fe80::1%eth0]:80"},
		{Type: TypeTCP, Target: "db-1.example.com:5432"},
		{Type: TypeTCP, Target: "localhost:1"},
		{Type: TypeHTTP, Target: "app.internal.:8080", Path: "/healthz?full=1", Host: "app.example.com", Expect: 204},
		{Type: TypeHTTP, Target: "[fe80::1%lo]:80", Host: "[::1]:80"},
		{Type: TypeExec, Command: []string{"true"}},
		{Type: TypeExec, Target: "ignored", Command: []string{"/bin/sh", "-c", "exit 0"}},
		{Type: TypeTCP, Target: "a:1", Interval: 10 * time.Millisecond, Timeout: 10 * time.Millisecond, Rise: 100, Fall: 1},
		{Type: TypeTCP, Target: "a:1", Interval: time.Hour, Timeout: time.Hour, Rise: 1, Fall: 100},
	}
	for _, s := range valid {
		if err := s.Defaults().Validate(); err != nil {
			t.Errorf("%+v: %v", s, err)
		}
	}

	tcp := func(f func(*Spec)) Spec {
		s := Spec{Type: TypeTCP, Target: "127.0.0.1:80"}
		f(&s)
		return s
	}
	http := func(f func(*Spec)) Spec {
		s := Spec{Type: TypeHTTP, Target: "127.0.0.1:80"}
		f(&s)
		return s
	}
	cases := []struct {
		name  string
		spec  Spec
		field string
	}{
		{"no type", Spec{Target: "a:1"}, "type"},
		{"unknown type", Spec{Type: "icmp", Target: "a:1"}, "type"},
		{"type case", Spec{Type: "TCP", Target: "a:1"}, "type"},
		{"tcp no target", tcp(func(s *Spec) { s.Target = "" }), "target"},
		{"tcp no port", tcp(func(s *Spec) { s.Target = "10.0.0.1" }), "target"},
		{"tcp empty port", tcp(func(s *Spec) { s.Target = "10.0.0.1:" }), "target"},
		{"tcp port 0", tcp(func(s *Spec) { s.Target = "10.0.0.1:0" }), "target"},
		{"tcp port 65536", tcp(func(s *Spec) { s.Target = "10.0.0.1:65536" }), "target"},
		{"tcp port name", tcp(func(s *Spec) { s.Target = "10.0.0.1:http" }), "target"},
		{"tcp port sign", tcp(func(s *Spec) { s.Target = "10.0.0.1:+80" }), "target"},
		{"tcp port negative", tcp(func(s *Spec) { s.Target = "10.0.0.1:-1" }), "target"},
		{"tcp no host", tcp(func(s *Spec) { s.Target = ":80" }), "target"},
		{"tcp bare ipv6", tcp(func(s *Spec) { s.Target = "::1:80" }), "target"},
		{"tcp bracketed name", tcp(func(s *Spec) { s.Target = "[db]:80" }), "target"},
		{"tcp bad ipv4", tcp(func(s *Spec) { s.Target = "10.0.0.256:80" }), "target"},
		{"tcp slash in host", tcp(func(s *Spec) { s.Target = "a/b:80" }), "target"},
		{"tcp space in host", tcp(func(s *Spec) { s.Target = "a b:80" }), "target"},
		{"tcp empty label", tcp(func(s *Spec) { s.Target = "a..b:80" }), "target"},
		{"tcp url", tcp(func(s *Spec) { s.Target = "http://a:80" }), "target"},
		{"http no target", http(func(s *Spec) { s.Target = "" }), "target"},
		{"http bad port", http(func(s *Spec) { s.Target = "a:99999" }), "target"},
		{"exec no command", Spec{Type: TypeExec}, "command"},
		{"exec empty argv0", Spec{Type: TypeExec, Command: []string{"", "x"}}, "command"},
		{"exec nul", Spec{Type: TypeExec, Command: []string{"sh", "-c", "a\x00b"}}, "command"},
		{"path relative", http(func(s *Spec) { s.Path = "healthz" }), "path"},
		{"path url", http(func(s *Spec) { s.Path = "http://x/" }), "path"},
		{"path bad escape", http(func(s *Spec) { s.Path = "/%zz" }), "path"},
		{"path control", http(func(s *Spec) { s.Path = "/a\nb" }), "path"},
		{"host header space", http(func(s *Spec) { s.Host = "a b" }), "host"},
		{"host header crlf", http(func(s *Spec) { s.Host = "a\r\nX-Evil: 1" }), "host"},
		{"expect 99", http(func(s *Spec) { s.Expect = 99 }), "expect"},
		{"expect 600", http(func(s *Spec) { s.Expect = 600 }), "expect"},
		{"expect negative", http(func(s *Spec) { s.Expect = -200 }), "expect"},
		{"interval short", tcp(func(s *Spec) { s.Interval, s.Timeout = 9*time.Millisecond, time.Millisecond }), "interval"},
		{"interval negative", tcp(func(s *Spec) { s.Interval = -time.Second }), "interval"},
		{"interval long", tcp(func(s *Spec) { s.Interval = time.Hour + time.Second }), "interval"},
		{"timeout negative", tcp(func(s *Spec) { s.Timeout = -time.Second }), "timeout"},
		{"timeout over interval", tcp(func(s *Spec) { s.Interval, s.Timeout = time.Second, 5*time.Second }), "timeout"},
		{"timeout default over interval", tcp(func(s *Spec) { s.Interval, s.Timeout = 100*time.Millisecond, 101*time.Millisecond }), "timeout"},
		{"rise negative", tcp(func(s *Spec) { s.Rise = -1 }), "rise"},
		{"rise 101", tcp(func(s *Spec) { s.Rise = 101 }), "rise"},
		{"fall negative", tcp(func(s *Spec) { s.Fall = -1 }), "fall"},
		{"fall 101", tcp(func(s *Spec) { s.Fall = 101 }), "fall"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := c.spec.Defaults().Validate()
			if err == nil {
				t.Fatalf("%+v: accepted", c.spec)
			}
			if !strings.HasPrefix(err.Error(), "check."+c.field+": ") {
				t.Fatalf("got %q, want it about check.%s", err, c.field)
			}
		})
	}

	// The documented form, exactly.
	err := tcp(func(s *Spec) { s.Interval, s.Timeout = time.Second, 5*time.Second }).Validate()
	if want := `check.timeout: "5s": must not exceed check.interval (1s)`; err == nil || err.Error() != want {
		t.Errorf("got %v, want %s", err, want)
	}
	// Zero values are errors: Validate expects Defaults to have run.
	if err := (Spec{Type: TypeTCP, Target: "a:1"}).Validate(); err == nil {
		t.Error("a spec without defaults passed")
	}
}

func TestHealthString(t *testing.T) {
	for h, want := range map[Health]string{Unknown: "unknown", Healthy: "healthy", Failing: "failing", Health(7): "health(7)"} {
		if h.String() != want {
			t.Errorf("%d: %q, want %q", int(h), h.String(), want)
		}
	}
}

// listen returns a loopback listener accepting and closing connections.
func listen(t *testing.T) net.Listener {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lis.Close() })
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	return lis
}

// closedPort returns a loopback address nothing listens on.
func closedPort(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	return addr
}

// hostPort is a test server's address as a check target.
func hostPort(srv *httptest.Server) string { return strings.TrimPrefix(srv.URL, "http://") }

func TestOnce(t *testing.T) {
	open := listen(t).Addr().String()
	closed := closedPort(t)
	// stop ends the slow handler when the test ends, so the server can
	// close; until then it answers nothing, so only the probe's own
	// timeout can end a probe of it.
	stop := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/ok":
		case "/down":
			w.WriteHeader(http.StatusServiceUnavailable)
		case "/slow":
			select {
			case <-r.Context().Done():
			case <-stop:
			}
		case "/moved":
			http.Redirect(w, r, "/ok", http.StatusFound)
		case "/big":
			// Far more than a probe reads: it must still answer.
			chunk := make([]byte, 32<<10)
			for range 64 {
				if _, err := w.Write(chunk); err != nil {
					return
				}
			}
		case "/host":
			if r.Host != "app.example.com" {
				w.WriteHeader(http.StatusMisdirectedRequest)
			}
		case "/query":
			if r.URL.RawQuery != "full=1" {
				w.WriteHeader(http.StatusBadRequest)
			}
		case "/conn":
			// A probe is one request on one fresh connection.
			if !r.Close || r.Header.Get("Connection") != "close" {
				w.WriteHeader(http.StatusBadRequest)
			}
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(stop) })
	web := hostPort(srv)
	dir := t.TempDir()

	cases := []struct {
		name   string
		spec   Spec
		ok     bool
		detail string // a substring of Detail
	}{
		{"tcp open", Spec{Type: TypeTCP, Target: open}, true, "ok"},
		{"tcp refused", Spec{Type: TypeTCP, Target: closed}, false, "connect: connection refused"},
		{"http 200", Spec{Type: TypeHTTP, Target: web, Path: "/ok"}, true, "ok"},
		{"http 503", Spec{Type: TypeHTTP, Target: web, Path: "/down"}, false, "status 503, want 200"},
		{"http expect 503", Spec{Type: TypeHTTP, Target: web, Path: "/down", Expect: 503}, true, "ok"},
		{"http 404", Spec{Type: TypeHTTP, Target: web, Path: "/nothing"}, false, "status 404, want 200"},
		{"http redirect not followed", Spec{Type: TypeHTTP, Target: web, Path: "/moved"}, false, "status 302, want 200"},
		{"http redirect expected", Spec{Type: TypeHTTP, Target: web, Path: "/moved", Expect: 302}, true, "ok"},
		{"http big body", Spec{Type: TypeHTTP, Target: web, Path: "/big"}, true, "ok"},
		{"http host header", Spec{Type: TypeHTTP, Target: web, Path: "/host", Host: "app.example.com"}, true, "ok"},
		{"http host default", Spec{Type: TypeHTTP, Target: web, Path: "/host"}, false, "status 421"},
		{"http query", Spec{Type: TypeHTTP, Target: web, Path: "/query?full=1"}, true, "ok"},
		{"http connection close", Spec{Type: TypeHTTP, Target: web, Path: "/conn"}, true, "ok"},
		{"http refused", Spec{Type: TypeHTTP, Target: closed}, false, "connect: connection refused"},
		{"http not http", Spec{Type: TypeHTTP, Target: open}, false, ""}, // EOF or reset
		{"http timeout", Spec{Type: TypeHTTP, Target: web, Path: "/slow", Timeout: 100 * time.Millisecond}, false, "timeout after 100ms"},
		{"exec true", Spec{Type: TypeExec, Command: []string{"true"}}, true, "ok"},
		{"exec false", Spec{Type: TypeExec, Command: []string{"false"}}, false, "exit status 1"},
		{"exec output", Spec{Type: TypeExec, Command: []string{"sh", "-c", "echo; echo '  not ready  '; echo more; exit 3"}}, false, "exit status 3: not ready"},
		{"exec stderr", Spec{Type: TypeExec, Command: []string{"sh", "-c", "echo oops >&2; exit 2"}}, false, "exit status 2: oops"},
		{"exec missing", Spec{Type: TypeExec, Command: []string{filepath.Join(dir, "missing")}}, false, "no such file"},
		{"exec not in path", Spec{Type: TypeExec, Command: []string{"tether-no-such-command"}}, false, "not found"},
		{"exec stdin is not inherited", Spec{Type: TypeExec, Command: []string{"sh", "-c", "read x; exit 4"}}, false, "exit status 4"},
		{"exec timeout", Spec{Type: TypeExec, Command: []string{"sh", "-c", "sleep 3600"}, Timeout: 100 * time.Millisecond}, false, "timeout after 100ms"},
		{"exec timeout with children", Spec{Type: TypeExec, Command: []string{"sh", "-c", "sleep 3600 & sleep 3600; wait"}, Timeout: 100 * time.Millisecond}, false, "timeout after 100ms"},
		{"invalid spec", Spec{Type: TypeExec}, false, "check.command"},
		{"zero spec", Spec{}, false, "check.type"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := c.spec
			if s.Timeout == 0 {
				// Ample for a loaded machine: these cases are not about
				// timeouts.
				s.Interval, s.Timeout = 2*time.Second, 2*time.Second
			}
			// What a timeout case probes (a sleep of an hour, a handler
			// that never answers) does not end by itself: only the
			// probe's timeout ends the probe, and a probe that waited for
			// it would not return at all. The wait is bounded only so
			// that such a failure does not hang the test.
			start := time.Now()
			done := make(chan Result, 1)
			go func() { done <- Once(context.Background(), s) }()
			var r Result
			select {
			case r = <-done:
			case <-time.After(s.Timeout + bound):
				t.Fatalf("the probe did not return: want it ended by its %s timeout", s.Timeout)
			}
			took := time.Since(start)
			if r.OK != c.ok || !strings.Contains(r.Detail, c.detail) {
				t.Errorf("got ok %v %q, want %v and %q", r.OK, r.Detail, c.ok, c.detail)
			}
			// Latency is measured inside the call: a relation between
			// two clocks, not a bound on either.
			if r.At.IsZero() || r.At.Before(start) || r.Latency < 0 || r.Latency > took {
				t.Errorf("got at %v, latency %s, want a start after %v and a latency within the call's %s", r.At, r.Latency, start, took)
			}
		})
	}
}

func TestOnceContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	r := Once(ctx, Spec{Type: TypeExec, Command: []string{"sleep", "5"}})
	if r.OK || strings.Contains(r.Detail, "timeout") {
		t.Errorf("cancelled: %+v", r)
	}
}

// TestHTTPTransport: the transport is the probe's own, with no proxy and
// no keep-alive (a proxy from the environment cannot be shown to be
// ignored end to end: net/http never proxies loopback targets).
func TestHTTPTransport(t *testing.T) {
	p := newProber(Spec{Type: TypeHTTP, Target: "127.0.0.1:80"}.Defaults())
	tr, ok := p.client.Transport.(*http.Transport)
	if !ok {
		t.Fatalf("transport %T", p.client.Transport)
	}
	if tr.Proxy != nil || !tr.DisableKeepAlives {
		t.Errorf("proxy %v, keep-alives disabled %v", tr.Proxy != nil, tr.DisableKeepAlives)
	}
	if tr == http.DefaultTransport {
		t.Error("shared default transport")
	}
	if p.url != "http://127.0.0.1:80/" {
		t.Errorf("url %q", p.url)
	}
	q := newProber(Spec{Type: TypeHTTP, Target: "[fe80::1%lo]:80", Path: "/a b"}.Defaults())
	if q.url != "http://[fe80::1%25lo]:80/a%20b" {
		t.Errorf("url %q", q.url)
	}
}

// alive reports whether pid is a process that has not exited (a zombie
// waiting for a reaper counts as exited: in a container the reaper may
// never come).
func alive(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

// readPID reads the pid a shell wrote to file; the shell has ended, so
// the file is complete or will never be. A shell killed before it wrote
// (on a machine too loaded to start it within the timeout) leaves
// nothing to verify.
func readPID(t *testing.T, file string) int {
	t.Helper()
	b, err := os.ReadFile(file)
	pid, perr := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || perr != nil || pid <= 0 {
		t.Skipf("the script wrote no pid (%v, %q): killed before it started its child", err, b)
	}
	return pid
}

func waitGone(t *testing.T, pid int) {
	t.Helper()
	for deadline := time.Now().Add(bound); alive(pid); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("process %d outlived its probe", pid)
		}
	}
}

// TestExecKillsGroup: a timed-out script's children die with it.
func TestExecKillsGroup(t *testing.T) {
	file := filepath.Join(t.TempDir(), "pid")
	r := Once(context.Background(), Spec{Type: TypeExec, Interval: time.Second, Timeout: time.Second,
		Command: []string{"sh", "-c", `sleep 30 & echo $! > "$1"; wait`, "sh", file}})
	if r.OK || !strings.Contains(r.Detail, "timeout") {
		t.Fatalf("%+v", r)
	}
	waitGone(t, readPID(t, file))
}

// TestExecStraggler: a script that exits but leaves a background child
// holding its output pipe still ends its probe; the script's exit status
// is the verdict (the child is not waited for), and the child is killed
// with the probe. The child would sleep for an hour and the probe's
// timeout is as long, so a probe that waited for the child, or for its
// own timeout, would not return at all: the wait for it is bounded only
// so that such a failure does not hang the test, and no clock is read.
func TestExecStraggler(t *testing.T) {
	cases := []struct {
		name   string
		exit   int
		ok     bool
		detail string
	}{
		{"exits 0", 0, true, "ok"},
		{"exits 3", 3, false, "exit status 3: started"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "pid")
			// The pid is written before anything is printed, so once the
			// probe has returned the file is complete.
			script := `sleep 3600 & echo $! > "$1"; echo started; exit ` + strconv.Itoa(c.exit)
			done := make(chan Result, 1)
			go func() {
				done <- Once(context.Background(), Spec{Type: TypeExec, Interval: time.Hour, Timeout: time.Hour,
					Command: []string{"sh", "-c", script, "sh", file}})
			}()
			var r Result
			select {
			case r = <-done:
			case <-time.After(bound):
				// Free the probe, and the machine, before failing.
				if pid := straggler(t, file); pid > 0 {
					syscall.Kill(pid, syscall.SIGKILL)
				}
				t.Fatal("the probe did not return while the straggler held its output: want it to return when the script exits")
			}
			if r.OK != c.ok || !strings.Contains(r.Detail, c.detail) {
				t.Errorf("got ok %v %q, want %v and %q: the script's exit status decides", r.OK, r.Detail, c.ok, c.detail)
			}
			pid := straggler(t, file)
			if pid <= 0 {
				t.Fatalf("the script wrote no pid to %s", file)
			}
			waitGone(t, pid)
		})
	}
}

// straggler reads the pid of the child a script wrote to file, or 0.
func straggler(t *testing.T, file string) int {
	t.Helper()
	b, _ := os.ReadFile(file)
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid
}

// TestExecOutputCapped: a chatty failing command neither blocks on a
// full pipe nor floods the detail.
func TestExecOutputCapped(t *testing.T) {
	r := Once(context.Background(), Spec{Type: TypeExec, Interval: 2 * time.Second, Timeout: 2 * time.Second,
		Command: []string{"sh", "-c", `i=0; while [ $i -lt 2000 ]; do printf 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx'; i=$((i+1)); done; printf '\001\n'; exit 5`}})
	if r.OK || !strings.HasPrefix(r.Detail, "exit status 5: xxx") || len(r.Detail) > 300 {
		t.Fatalf("%d bytes: %.80q", len(r.Detail), r.Detail)
	}
	c := &capped{max: 4}
	if n, err := c.Write([]byte("abcdef")); n != 6 || err != nil || string(c.buf) != "abcd" {
		t.Errorf("capped: %d %v %q", n, err, c.buf)
	}
	if got := firstLine([]byte("\n \x01bad\xffline\r\nnext")); got != "?bad?line" {
		t.Errorf("firstLine: %q", got)
	}
}

// TestRecord drives the rise and fall logic with results alone.
func TestRecord(t *testing.T) {
	cases := []struct {
		name       string
		rise, fall int
		results    string // o: success, x: failure
		health     string // after each result: u, h, f
	}{
		{"first ok decides", 3, 3, "o", "h"},
		{"first failure decides", 3, 3, "x", "f"},
		{"fall", 2, 2, "oxx", "hhf"},
		{"rise", 3, 2, "xooo", "fffh"},
		{"flap ignored", 2, 2, "oxoxoxo", "hhhhhhh"},
		{"streak restarts", 2, 3, "oxxoxxx", "hhhhhhf"},
		{"rise restarts", 3, 1, "xooxooo", "ffffffh"},
		{"rise 1 fall 1", 1, 1, "oxoxx", "hfhff"},
		{"fall then rise", 2, 2, "ooxxxoo", "hhhfffh"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ch, err := New(Spec{Type: TypeTCP, Target: "127.0.0.1:1", Rise: c.rise, Fall: c.fall}, nil)
			if err != nil {
				t.Fatal(err)
			}
			prev := Unknown
			for i, o := range c.results {
				at := time.Unix(int64(i+1), 0)
				h, changed := ch.record(Result{OK: o == 'o', At: at})
				if got := h.String()[:1]; got != c.health[i:i+1] {
					t.Fatalf("after %q: %v, want %s", c.results[:i+1], h, c.health[i:i+1])
				}
				if changed != (h != prev) {
					t.Fatalf("after %q: changed %v from %v to %v", c.results[:i+1], changed, prev, h)
				}
				if changed && !ch.Status().Since.Equal(at) {
					t.Fatalf("since %v, want %v", ch.Status().Since, at)
				}
				prev = h
			}
			st := ch.Status()
			if st.Checks != uint64(len(c.results)) || st.Failures != uint64(strings.Count(c.results, "x")) {
				t.Fatalf("checks %d failures %d", st.Checks, st.Failures)
			}
		})
	}
}

// flipServer is an HTTP server answering 200 or 503 as the test says,
// keeping a log of its answers.
type flipServer struct {
	*httptest.Server
	mu   sync.Mutex
	down bool
	log  []bool // true: answered 200
}

func newFlipServer(t *testing.T) *flipServer {
	f := &flipServer{}
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		down := f.down
		f.log = append(f.log, !down)
		f.mu.Unlock()
		if down {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	t.Cleanup(f.Close)
	return f
}

func (f *flipServer) set(down bool) {
	f.mu.Lock()
	f.down = down
	f.mu.Unlock()
}

// answers returns the number of answers, the 503s among them, and the
// length of the final run of identical answers.
func (f *flipServer) answers() (n, failed, run int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, ok := range f.log {
		if !ok {
			failed++
		}
		if i > 0 && ok == f.log[i-1] {
			run++
		} else {
			run = 1
		}
	}
	return len(f.log), failed, run
}

type change struct {
	health Health
	result Result
	status Status // the checker's, as onChange saw it
	first  bool   // the checker's first change, from Unknown
	run    int    // the server's final run of identical answers at the change
	exact  bool   // whether the server's log matches the checker's since the last change
}

// TestRiseFall runs a checker against a server whose answer the test
// flips, and checks each change of health against the server's log: the
// change must come exactly when the run of new answers reaches rise or
// fall.
func TestRiseFall(t *testing.T) {
	const rise, fall = 3, 2
	srv := newFlipServer(t)
	changes := make(chan change, 10)
	var c *Monitor
	// How far the checker's counts are ahead of the server's at the last
	// change; only onChange, never concurrently, touches them.
	var checksAhead, failuresAhead uint64
	first := true
	c, err := New(Spec{Type: TypeHTTP, Target: hostPort(srv.Server), Interval: 20 * time.Millisecond, Rise: rise, Fall: fall},
		func(h Health, r Result) {
			// Runs before the next probe starts, so the log is complete.
			n, failed, run := srv.answers()
			st := c.Status()
			// A probe that timed out on a loaded machine is a failure the
			// server did not (or not yet) answer as one: if that happened
			// since the last change, the run is not comparable.
			exact := st.Checks-uint64(n) == checksAhead && st.Failures-uint64(failed) == failuresAhead
			checksAhead, failuresAhead = st.Checks-uint64(n), st.Failures-uint64(failed)
			changes <- change{h, r, st, first, run, exact}
			first = false
		})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); c.Run(ctx) }()
	defer func() {
		cancel()
		select {
		case <-done:
		case <-time.After(bound):
			t.Error("Run did not return")
		}
	}()

	// next waits for the change to want, which must come when the run of
	// answers reaches need (1 for the first change: the first result
	// decides). Changes caused by probes timing out on a loaded machine
	// are skipped: they are real failures, just not the server's.
	next := func(want Health, need int) {
		t.Helper()
		for {
			var ch change
			select {
			case ch = <-changes:
			case <-time.After(bound):
				t.Fatalf("no change to %v", want)
			}
			if st := ch.status; st.Health != ch.health || st.Last != ch.result || !st.Since.Equal(ch.result.At) {
				t.Fatalf("status %+v at the change to %v", st, ch.health)
			}
			if !ch.exact {
				t.Logf("change to %v (%s) after a probe failed without the server failing it (timeout?): run not compared",
					ch.health, ch.result.Detail)
				if ch.health != want {
					continue
				}
				return
			}
			if ch.health != want {
				t.Fatalf("changed to %v (%s), want %v", ch.health, ch.result.Detail, want)
			}
			if ch.first {
				need = 1
			}
			if ch.run != need {
				t.Fatalf("changed to %v after %d answers, want %d", want, ch.run, need)
			}
			return
		}
	}
	next(Healthy, rise) // 1 if it is the first change
	srv.set(true)
	next(Failing, fall)
	srv.set(false)
	next(Healthy, rise)
	srv.set(true)
	next(Failing, fall)

	st := c.Status()
	if st.Checks < 1+fall+rise+fall || st.Failures < 2*fall {
		t.Errorf("status %+v", st)
	}
}

// TestFirstResultFailing: a target down from the start is failing after
// one probe, however large fall is.
func TestFirstResultFailing(t *testing.T) {
	changes := make(chan Health, 10)
	c, err := New(Spec{Type: TypeTCP, Target: closedPort(t), Interval: 20 * time.Millisecond, Fall: 100},
		func(h Health, _ Result) { changes <- h })
	if err != nil {
		t.Fatal(err)
	}
	if st := c.Status(); st.Health != Unknown || st.Checks != 0 {
		t.Fatalf("before running: %+v", st)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); c.Run(ctx) }()
	select {
	case h := <-changes:
		if h != Failing {
			t.Errorf("first change to %v", h)
		}
	case <-time.After(bound):
		t.Error("no change")
	}
	cancel()
	<-done
	if st := c.Status(); st.Health != Failing || st.Checks < 1 || st.Last.OK {
		t.Errorf("status %+v", st)
	}
}

// TestRunStops: Run returns soon after its context ends, for every type,
// even mid-probe, and leaves no goroutine behind; Status may be read
// concurrently all along.
func TestRunStops(t *testing.T) {
	srv := newFlipServer(t)
	arrived := make(chan struct{}, 100)
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		<-r.Context().Done()
	}))
	t.Cleanup(slow.Close)
	open := listen(t).Addr().String()
	started := filepath.Join(t.TempDir(), "started")
	cases := []struct {
		name string
		spec Spec
		// busy reports whether the checker is inside its (slow) first
		// probe; nil: wait for two probes instead.
		busy func() bool
	}{
		{"tcp", Spec{Type: TypeTCP, Target: open}, nil},
		{"http", Spec{Type: TypeHTTP, Target: hostPort(srv.Server)}, nil},
		{"exec", Spec{Type: TypeExec, Command: []string{"true"}}, nil},
		{"http mid-probe", Spec{Type: TypeHTTP, Target: hostPort(slow), Timeout: time.Minute},
			func() bool {
				select {
				case <-arrived:
					return true
				default:
					return false
				}
			}},
		{"exec mid-probe", Spec{Type: TypeExec, Timeout: time.Minute,
			Command: []string{"sh", "-c", `: > "$1"; sleep 60 & sleep 60`, "sh", started}},
			func() bool { _, err := os.Stat(started); return err == nil }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := tc.spec
			s.Interval = max(s.Timeout, 20*time.Millisecond)
			before := runtime.NumGoroutine()
			c, err := New(s, nil)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { defer close(done); c.Run(ctx) }()
			var readers sync.WaitGroup
			var stopRead atomic.Bool
			for range 4 {
				readers.Go(func() {
					for !stopRead.Load() {
						_ = c.Status()
						runtime.Gosched()
					}
				})
			}
			ready := tc.busy
			if ready == nil {
				ready = func() bool { return c.Status().Checks >= 2 }
			}
			for deadline := time.Now().Add(bound); !ready(); time.Sleep(5 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatal("not probing")
				}
			}
			stopRead.Store(true)
			readers.Wait()
			cancel()
			select {
			case <-done:
			case <-time.After(bound):
				t.Fatal("Run did not return")
			}
			checks := c.Status().Checks
			if tc.busy != nil && checks != 0 {
				t.Errorf("got %+v, want no checks: a probe cut short by the end of Run counted", c.Status())
			}
			// Once every goroutine the checker started has ended, nothing
			// can probe any more: a count that moved since Run returned
			// was moved by something Run left behind.
			waitGoroutines(t, before)
			if got := c.Status().Checks; got != checks {
				t.Errorf("got %d checks, want %d: probing went on after Run returned", got, checks)
			}
		})
	}
}

// waitGoroutines waits for the goroutine count to drop back to n:
// connection goroutines end a moment after their connection closes.
func waitGoroutines(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(bound)
	for runtime.NumGoroutine() > n {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines, want %d:\n%s", runtime.NumGoroutine(), n, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestRunCancelledContext(t *testing.T) {
	c, err := New(Spec{Type: TypeExec, Command: []string{"true"}}, func(Health, Result) { t.Error("onChange called") })
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	c.Run(ctx)
	if st := c.Status(); st.Checks != 0 || st.Health != Unknown {
		t.Errorf("status %+v", st)
	}
}

// TestRunOnce: a second Run while one is active returns at once (two
// loops would overlap probes), and Run can be started again later.
func TestRunOnce(t *testing.T) {
	changes := make(chan Health, 10)
	c, err := New(Spec{Type: TypeExec, Command: []string{"true"}, Interval: 20 * time.Millisecond},
		func(h Health, _ Result) { changes <- h })
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); c.Run(ctx) }()
	select {
	case <-changes:
	case <-time.After(bound):
		t.Fatal("no change")
	}
	second := make(chan struct{})
	go func() { defer close(second); c.Run(context.Background()) }()
	select {
	case <-second:
	case <-time.After(bound):
		t.Fatal("a concurrent Run did not return")
	}
	cancel()
	<-done

	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	checks := c.Status().Checks
	again := make(chan struct{})
	go func() { defer close(again); c.Run(ctx) }()
	for deadline := time.Now().Add(bound); c.Status().Checks == checks; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("a restarted Run did not probe")
		}
	}
	cancel()
	<-again
}

func TestNew(t *testing.T) {
	if _, err := New(Spec{Type: TypeTCP, Target: "nohost"}, nil); err == nil || !strings.HasPrefix(err.Error(), "check.target: ") {
		t.Errorf("got %v", err)
	}
	c, err := New(Spec{Type: TypeHTTP, Target: "127.0.0.1:80"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if s := c.Spec(); s.Path != "/" || s.Expect != 200 || s.Interval != DefaultInterval {
		t.Errorf("spec without defaults: %+v", s)
	}
	if st := c.Status(); st.Health != Unknown || st.Since.IsZero() {
		t.Errorf("new status %+v", st)
	}
}

// TestDescribe: errors are trimmed to their cause.
func TestDescribe(t *testing.T) {
	dial := &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
	if got := describe(dial); got != "connect: connection refused" {
		t.Errorf("%q", got)
	}
	dns := &net.OpError{Op: "dial", Net: "tcp", Err: &net.DNSError{Err: "no such host", Name: "x.invalid"}}
	if got := describe(dns); got != "dial: lookup x.invalid: no such host" {
		t.Errorf("%q", got)
	}
	if got := describe(errors.New("status 503, want 200")); got != "status 503, want 200" {
		t.Errorf("%q", got)
	}
}

// TestNoPanic: odd input is an error or a failed result, never a panic.
func TestNoPanic(t *testing.T) {
	var nilCtx context.Context
	if r := Once(nilCtx, Spec{Type: TypeTCP, Target: closedPort(t)}); r.OK {
		t.Errorf("nil context: %+v", r)
	}
	specs := []Spec{
		{},
		{Type: TypeExec},
		{Type: TypeExec, Command: []string{}},
		{Type: TypeExec, Command: []string{"true"}, Timeout: -1},
		{Type: TypeExec, Command: []string{"true"}, Interval: -1, Timeout: -1, Rise: -1, Fall: -1},
		{Type: TypeHTTP, Target: "[::1%]:80"},
		{Type: TypeHTTP, Target: "127.0.0.1:1", Path: "/\x00"},
		{Type: TypeTCP, Target: "[fe80::1%nosuchif]:80", Interval: time.Second, Timeout: time.Second},
		{Type: TypeHTTP, Target: "[fe80::1%nosuchif]:80", Interval: time.Second, Timeout: time.Second},
		{Type: TypeTCP, Target: strings.Repeat("a", 300) + ":1"},
		{Type: "\xff", Target: "\x00"},
	}
	for _, s := range specs {
		r := Once(context.Background(), s)
		if r.OK || r.Detail == "" {
			t.Errorf("%+v: %+v", s, r)
		}
		if c, err := New(s, nil); err == nil {
			ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
			c.Run(ctx)
			cancel()
		}
	}
	var zero Monitor
	zero.Run(context.Background())
	if st := zero.Status(); st.Health != Unknown || zero.Spec().Type != "" {
		t.Errorf("zero checker: %+v", st)
	}
	c, err := New(Spec{Type: TypeExec, Command: []string{"true"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	c.Run(nilCtx)
}
