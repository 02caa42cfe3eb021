package main

import (
	"net/http/httptest"
	"testing"

	"github.com/tetherlb/tether/config"
)

// TestRouterDecide: the router routes each request by the VIP's rules to
// a backend that is not a router, at its configured address and port,
// and skips backends that take no new connections.
func TestRouterDecide(t *testing.T) {
	cfg, err := config.Parse([]byte(`
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
`))
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
	for path, want := range map[string]string{"/a/x": "10.0.12.2:8080", "/b/y": "10.0.12.2:8081"} {
		tg, ok := decide(httptest.NewRequest("GET", path, nil))
		if !ok || tg.Addr.String() != want || tg.Key != "web/"+path[1:2] {
			t.Errorf("%s: %+v %v, want %s", path, tg, ok, want)
		}
	}
	for range 50 {
		tg, ok := decide(httptest.NewRequest("GET", "/other", nil))
		if !ok || tg.Key == "web/r" || tg.Key == "web/off" {
			t.Fatalf("/other went to %+v (%v): never a router, never a draining backend", tg, ok)
		}
	}
	if tg, ok := decide(httptest.NewRequest("GET", "/off/z", nil)); ok || tg.Rule != "rule-2" {
		t.Errorf("a rule whose only backend drains: %+v %v, want a refusal under its rule", tg, ok)
	}
	if _, err := l7VIPOf(cfg, "nope"); err == nil {
		t.Error("an unknown VIP was accepted")
	}
}
