package main

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"

	"github.com/tetherlb/tether/config"
	"github.com/tetherlb/tether/ctlplane/l7/router"
)

// TestRouterDecide: the router routes each request by the VIP's rules to
// a backend that is not a router, at its configured address and port,
// and skips backends that take no new connections.
func TestRouterDecide(t *testing.T) {
	cfg, decide := routerDecideOf(t, `
unit: {address4: 198.51.100.254}
hosts: {listen: "198.51.100.254:7320", tls: {ca: /c, cert: /c, key: /k}}
vips:
  - name: web
    address: 192.0.2.10
    port: 80
    protocol: tcp
    mode: l7
    l7:
      handoff: migrate-or-proxy
      routers: [r]
      rules:
        - {path_prefix: /a/, backends: [a]}
        - {path_prefix: /b/, backends: [b]}
        - {path_prefix: /off/, backends: [off]}
    backends:
      - {name: r, address: 10.0.11.100}
      - {name: a, address: 10.0.12.2, port: 8080}
      - {name: b, address: 10.0.12.2, port: 8081}
      - {name: off, address: 10.0.12.3, state: draining}
`)
	nothing := func(string) bool { return false }
	for path, want := range map[string]string{"/a/x": "10.0.12.2:8080", "/b/y": "10.0.12.2:8081"} {
		tg, ok := decide(httptest.NewRequest("GET", path, nil), nil)
		if !ok || tg.Addr.String() != want || tg.Key != "web/"+path[1:2] {
			t.Errorf("%s: %+v %v, want %s", path, tg, ok, want)
		}
	}
	for range 50 {
		tg, ok := decide(httptest.NewRequest("GET", "/other", nil), nothing)
		if !ok || tg.Key == "web/r" || tg.Key == "web/off" {
			t.Fatalf("/other went to %+v (%v): never a router, never a draining backend", tg, ok)
		}
	}
	if tg, ok := decide(httptest.NewRequest("GET", "/off/z", nil), nothing); ok || tg.Rule != "rule-2" {
		t.Errorf("a rule whose only backend drains: %+v %v, want a refusal under its rule", tg, ok)
	}
	if _, err := l7VIPOf(cfg, "nope"); err == nil {
		t.Error("an unknown VIP was accepted")
	}
	// The source is of the VIP's family.
	v := &cfg.VIPs[0]
	for text, ok := range map[string]bool{"": true, "10.0.11.50": true, "::ffff:10.0.11.50": true, "2001:db8::50": false, "ten": false} {
		if _, err := routerSource(v, text); (err == nil) != ok {
			t.Errorf("--source %q: %v, want accepted %v", text, err, ok)
		}
	}
}

// TestRouterDecideAvoids: a backend the router avoids gets no request
// while another the rule allows can take it, and the others keep the
// requests they had; when the rule leaves only avoided backends, the
// configured weights decide, and a backend that takes no new
// connections stays out even then.
func TestRouterDecideAvoids(t *testing.T) {
	_, decide := routerDecideOf(t, `
unit: {address4: 198.51.100.254}
hosts: {listen: "198.51.100.254:7320", tls: {ca: /c, cert: /c, key: /k}}
vips:
  - name: web
    address: 192.0.2.10
    port: 80
    protocol: tcp
    mode: l7
    l7:
      handoff: proxy
      routers: [r]
      rules:
        - {path_prefix: /a/, backends: [a]}
        - {path_prefix: /off/, backends: [off]}
    backends:
      - {name: r, address: 10.0.11.100}
      - {name: a, address: 10.0.12.2}
      - {name: b, address: 10.0.12.3}
      - {name: c, address: 10.0.12.4}
      - {name: off, address: 10.0.12.5, state: draining}
`)
	avoiding := func(keys ...string) func(string) bool {
		return func(k string) bool { return slices.Contains(keys, k) }
	}
	req := func(path string, client int) *http.Request {
		r := httptest.NewRequest("GET", path, nil)
		r.RemoteAddr = fmt.Sprintf("192.0.2.%d:%d", 1+client%200, 1024+client)
		return r
	}
	all := avoiding("web/a", "web/b", "web/c", "web/off", "web/r")
	hadA := 0
	for i := range 200 {
		before, ok := decide(req("/other", i), nil)
		if !ok {
			t.Fatalf("client %d: no backend without avoiding any", i)
		}
		if before.Key == "web/a" {
			hadA++
		}
		after, ok := decide(req("/other", i), avoiding("web/a"))
		switch {
		case !ok || after.Key == "web/a":
			t.Errorf("client %d avoiding web/a: %+v %v, want b or c", i, after, ok)
		case before.Key != "web/a" && after.Key != before.Key:
			t.Errorf("client %d: avoiding web/a moved it from %s to %s", i, before.Key, after.Key)
		}
		// Every backend avoided: the configured weights decide, as if
		// none were.
		if fallback, ok := decide(req("/other", i), all); !ok || fallback != before {
			t.Errorf("client %d avoiding all: %+v %v, want %+v as without avoiding", i, fallback, ok, before)
		}
	}
	if hadA == 0 {
		t.Fatal("no client went to web/a to begin with: the test proves nothing")
	}
	// The rule allows only a: avoiding it leaves nothing, so a it is.
	if tg, ok := decide(req("/a/x", 1), avoiding("web/a")); !ok || tg.Key != "web/a" {
		t.Errorf("/a/x avoiding its only backend: %+v %v, want web/a", tg, ok)
	}
	// A draining backend is not revived by the fallback.
	if tg, ok := decide(req("/off/x", 1), all); ok || tg.Rule != "rule-1" {
		t.Errorf("/off/x avoiding all: %+v %v, want a refusal under rule-1", tg, ok)
	}
}

// routerDecideOf is the router's Decide for the VIP "web" of the
// configuration text.
func routerDecideOf(t *testing.T, text string) (*config.Config, func(*http.Request, func(string) bool) (router.Target, bool)) {
	t.Helper()
	cfg, err := config.Parse([]byte(text))
	if err != nil {
		t.Fatal(err)
	}
	v, err := l7VIPOf(cfg, "web")
	if err != nil {
		t.Fatal(err)
	}
	decide, err := routerDecide(v)
	if err != nil {
		t.Fatal(err)
	}
	return cfg, decide
}
