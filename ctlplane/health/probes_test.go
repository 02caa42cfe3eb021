package health

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tetherlb/tether/api/unit"
	"github.com/tetherlb/tether/config"
)

// TestProbes: a unit probing backends itself (source probe) fills the
// probe host's rows; a backend whose server goes away turns failing and
// loses its share; removing a backend from the configuration removes its
// row.
func TestProbes(t *testing.T) {
	var lis []net.Listener
	for range 2 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				c.Close()
			}
		}()
		lis = append(lis, l)
	}
	defer lis[0].Close()
	cfgText := func(n int) string {
		s := `
unit: {name: u1}
vips:
  - name: web
    address: 192.0.2.10
    port: 80
    protocol: tcp
    mode: halfnat
    health: {source: probe, check: {type: tcp, interval: 20ms, timeout: 20ms, rise: 1, fall: 2}}
    backends:
`
		for i := range n {
			s += fmt.Sprintf("      - {name: b%d, address: 127.0.0.1, port: %d}\n", i, lis[i].Addr().(*net.TCPAddr).Port)
		}
		return s
	}
	cfg, err := config.Parse([]byte(cfgText(2)))
	if err != nil {
		t.Fatal(err)
	}
	srv, err := New(Options{Unit: 1, Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p := NewProbes(srv, zerolog.Nop())
	p.Start(ctx, cfg)
	eval := func() Evaluation {
		var ev Evaluation
		srv.Read(func(c *Cache) { ev = Evaluate(c, cfg, nil, false, 100, time.Second, time.Now()) })
		return ev
	}
	waitFor := func(what string, cond func(Evaluation) bool) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for !cond(eval()) {
			if time.Now().After(deadline) {
				t.Fatalf("timed out: %s: %+v", what, eval().Backends)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitFor("both healthy", func(ev Evaluation) bool {
		return ev.Backends[0].Health == "healthy" && ev.Backends[1].Health == "healthy" && len(ev.States) == 0
	})
	lis[1].Close()
	waitFor("b1 failing", func(ev Evaluation) bool {
		return ev.States[unit.BackendKey{VIP: "web", Backend: "b1"}] == unit.StateDraining && ev.Backends[0].Percent == 100
	})
	if cfg, err = config.Parse([]byte(cfgText(1))); err != nil {
		t.Fatal(err)
	}
	p.Sync(cfg)
	srv.Read(func(c *Cache) {
		if h := c.Host(ProbeHost); h == nil || len(h.Rows) != 1 {
			t.Fatalf("probe rows after removing b1: %v", h)
		}
	})
}
