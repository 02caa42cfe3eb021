package e2e

import (
	"testing"

	"github.com/tetherlb/tether/api/unit"
)

// TestProbedHalfNAT: the unit's own health probes of half-NAT backends,
// on both ports. A half-NAT backend answers the probe from its service
// port, the very (address, port) whose replies the forwarder takes, so
// on the AF_XDP port the answers were caught, dropped as no flow of
// Tether's, and every backend failed its checks as soon as the forwarder
// attached. A probe must reach the kernel: once b0's application stops
// and the probes find it gone, b1, probed as often, is still healthy and
// takes every connection.
func TestProbedHalfNAT(t *testing.T) {
	drivers(t, func(t *testing.T, build func(string, int) *LB) {
		lb := build("hp", 2)
		if err := lb.StartBackends(8080); err != nil {
			t.Fatal(err)
		}
		u := startUnit(t, lb, lbConfig(lb, "halfnat", []int{1, 1}, 8080,
			"    health: {source: probe, check: {type: http, path: /, interval: 200ms, timeout: 100ms, rise: 1, fall: 2}}\n"))
		if r := client(t, lb, "http://192.0.2.10/", 100, 4); r.Errors > 0 || r.Backends["b0"] == 0 || r.Backends["b1"] == 0 {
			t.Fatalf("through the probed VIP: %v (%d errors: %s)", r.Backends, r.Errors, r.FirstErr)
		}
		for _, p := range lb.procs {
			if p.Name == "httpd b0" {
				p.Stop()
			}
		}
		h := waitHealth(t, lb, u.socket, "the probe finds b0 gone", func(h unit.HealthView) bool {
			return verdict(h, "web", "b0").Health == "failing"
		})
		if b1 := verdict(h, "web", "b1"); b1.State == "draining" || b1.Health != "healthy" {
			t.Fatalf("b1's application runs, and its probes say %+v", b1)
		}
		if r := client(t, lb, "http://192.0.2.10/", 100, 4); r.Errors > 0 || r.Backends["b0"] > 0 || r.Backends["b1"] != 100 {
			t.Fatalf("through the probed VIP without b0: %v (%d errors: %s)", r.Backends, r.Errors, r.FirstErr)
		}
	})
}
