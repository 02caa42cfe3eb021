package check

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestValidate(t *testing.T) {
	good := Spec{Type: TypeHTTP, Target: "127.0.0.1:80"}.Defaults()
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		field string
		spec  Spec
	}{
		{"type", Spec{Type: "icmp", Target: "a:1"}},
		{"target", Spec{Type: TypeTCP, Target: "nohost"}},
		{"target", Spec{Type: TypeTCP, Target: "a:0"}},
		{"target", Spec{Type: TypeTCP, Target: ":80"}},
		{"command", Spec{Type: TypeExec}},
		{"path", Spec{Type: TypeHTTP, Target: "a:1", Path: "healthz"}},
		{"expect", Spec{Type: TypeHTTP, Target: "a:1", Expect: 99}},
		{"interval", Spec{Type: TypeTCP, Target: "a:1", Interval: time.Millisecond}},
		{"timeout", Spec{Type: TypeTCP, Target: "a:1", Interval: time.Second, Timeout: 2 * time.Second}},
		{"rise", Spec{Type: TypeTCP, Target: "a:1", Rise: 101}},
		{"fall", Spec{Type: TypeTCP, Target: "a:1", Fall: -1}},
	}
	for _, c := range cases {
		err := c.spec.Defaults().Validate()
		if err == nil || !strings.HasPrefix(err.Error(), "check."+c.field+":") {
			t.Errorf("%s: got %v", c.field, err)
		}
	}
}

func TestProbes(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	closed, _ := net.Listen("tcp", "127.0.0.1:0")
	closedAddr := closed.Addr().String()
	closed.Close()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/ok":
		case "/slow":
			time.Sleep(2 * time.Second)
		case "/moved":
			http.Redirect(w, r, "/ok", http.StatusFound)
		default:
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()
	target := strings.TrimPrefix(srv.URL, "http://")
	cases := []struct {
		name   string
		spec   Spec
		ok     bool
		detail string
	}{
		{"tcp open", Spec{Type: TypeTCP, Target: lis.Addr().String()}, true, "ok"},
		{"tcp refused", Spec{Type: TypeTCP, Target: closedAddr}, false, "connection refused"},
		{"http 200", Spec{Type: TypeHTTP, Target: target, Path: "/ok"}, true, "ok"},
		{"http 503", Spec{Type: TypeHTTP, Target: target, Path: "/down"}, false, "status 503, want 200"},
		{"http expect 503", Spec{Type: TypeHTTP, Target: target, Path: "/down", Expect: 503}, true, "ok"},
		{"http redirect not followed", Spec{Type: TypeHTTP, Target: target, Path: "/moved"}, false, "status 302"},
		{"http timeout", Spec{Type: TypeHTTP, Target: target, Path: "/slow", Timeout: 100 * time.Millisecond}, false, "timeout after 100ms"},
		{"exec true", Spec{Type: TypeExec, Command: []string{"true"}}, true, "ok"},
		{"exec false", Spec{Type: TypeExec, Command: []string{"sh", "-c", "echo not ready; exit 3"}}, false, "exit status 3: not ready"},
		{"exec missing", Spec{Type: TypeExec, Command: []string{"/nonexistent/probe"}}, false, "no such file"},
		{"exec timeout", Spec{Type: TypeExec, Command: []string{"sh", "-c", "sleep 5 & sleep 5"}, Timeout: 100 * time.Millisecond}, false, "timeout after 100ms"},
	}
	for _, c := range cases {
		start := time.Now()
		r := Once(context.Background(), c.spec)
		if r.OK != c.ok || !strings.Contains(r.Detail, c.detail) {
			t.Errorf("%s: ok %v %q, want %v %q", c.name, r.OK, r.Detail, c.ok, c.detail)
		}
		// A timed-out probe must not wait for what it started (bound
		// generous: this asserts "returns", not a duration).
		if time.Since(start) > 3*time.Second {
			t.Errorf("%s: took %s", c.name, time.Since(start))
		}
	}
}

// TestRiseFall drives a checker with a server whose answer the test
// flips, and watches the health changes.
func TestRiseFall(t *testing.T) {
	var healthy atomic.Bool
	healthy.Store(true)
	var probes atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		probes.Add(1)
		if !healthy.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()
	changes := make(chan Health, 10)
	c, err := New(Spec{Type: TypeHTTP, Target: strings.TrimPrefix(srv.URL, "http://"), Interval: 20 * time.Millisecond,
		Timeout: 20 * time.Millisecond, Rise: 3, Fall: 2}, func(h Health, _ Result) { changes <- h })
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()
	next := func() Health {
		select {
		case h := <-changes:
			return h
		case <-time.After(5 * time.Second):
			t.Fatal("no health change")
		}
		return Unknown
	}
	if h := next(); h != Healthy {
		t.Fatalf("first result: %v, want healthy at once", h)
	}
	before := probes.Load()
	healthy.Store(false)
	if h := next(); h != Failing {
		t.Fatalf("got %v, want failing", h)
	}
	if n := probes.Load() - before; n < 2 {
		t.Fatalf("failing after %d probes, fall is 2", n)
	}
	before = probes.Load()
	healthy.Store(true)
	if h := next(); h != Healthy {
		t.Fatalf("got %v, want healthy", h)
	}
	if n := probes.Load() - before; n < 3 {
		t.Fatalf("healthy after %d probes, rise is 3", n)
	}
	st := c.Status()
	if st.Health != Healthy || st.Checks < 6 || st.Failures < 2 {
		t.Fatalf("status %+v", st)
	}
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return")
	}
}

// TestFlapIgnored: one failure among successes does not change health
// when fall is 2.
func TestFlapIgnored(t *testing.T) {
	c, _ := New(Spec{Type: TypeTCP, Target: "127.0.0.1:1", Fall: 2, Rise: 2}, nil)
	ok, bad := Result{OK: true}, Result{}
	for i, r := range []Result{ok, bad, ok, bad, ok} {
		if h, changed := c.record(r); changed && i > 0 {
			t.Fatalf("result %d changed health to %v", i, h)
		}
	}
	if c.Status().Health != Healthy {
		t.Fatal("not healthy")
	}
	c.record(bad)
	if h, changed := c.record(bad); !changed || h != Failing {
		t.Fatal("two failures did not make it failing")
	}
}
