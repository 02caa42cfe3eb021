package e2e

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// lbConfig is a unit on the topology's port with one VIP in the given
// mode and the topology's backends, with weights.
func lbConfig(lb *LB, mode string, weights []int, port int, extra string) string {
	var b strings.Builder
	fmt.Fprintf(&b, `unit:
  address4: %s
forwarder:
  port: {driver: %s, interface: %s%s}
  flows: {max: 65536}
vips:
  - name: web
    address: 192.0.2.10
    port: 80
    protocol: tcp
    mode: %s
%s    backends:
`, lb.UnitIP, lb.Driver, lb.UnitIf, pinDir(lb), mode, extra)
	for i, w := range weights {
		fmt.Fprintf(&b, "      - {name: b%d, address: %s, port: %d, weight: %d}\n", i, lb.BackendIP(i), port, w)
	}
	return b.String()
}

// pinDir is the port setting that pins an AF_XDP unit's XDP link where
// it outlives the unit's processes (see Net.BPFDir).
func pinDir(lb *LB) string {
	if lb.PinDir == "" {
		return ""
	}
	return ", pin_dir: " + lb.PinDir
}

// drivers runs a system test on each port: the TUN topology and the
// switched AF_XDP one.
func drivers(t *testing.T, test func(t *testing.T, build func(tag string, backends int) *LB)) {
	t.Run("tun", func(t *testing.T) {
		test(t, func(tag string, n int) *LB { return newLB(t, "t"+tag, n, NewLB) })
	})
	t.Run("afxdp", func(t *testing.T) {
		test(t, func(tag string, n int) *LB { return newLB(t, "x"+tag, n, NewSwitchedLB) })
	})
}

// driversAndOffloads is drivers plus the AF_XDP topology with every
// sender's checksum and segmentation offload left on, as a host has them:
// the unit gets their partial checksums unannounced and must finish them.
func driversAndOffloads(t *testing.T, test func(t *testing.T, build func(tag string, backends int) *LB)) {
	drivers(t, test)
	t.Run("afxdp-offloads", func(t *testing.T) {
		test(t, func(tag string, n int) *LB {
			return newLB(t, "o"+tag, n, func(tag string, n int) (*LB, error) {
				return NewSwitchedLBWith(tag, n, SwitchedOptions{KeepOffloads: true})
			})
		})
	})
}

func checkWeights(t *testing.T, r ClientResult, weights []int) {
	t.Helper()
	if r.Errors > 0 {
		t.Fatalf("%d requests failed, first: %s", r.Errors, r.FirstErr)
	}
	total, sum := 0, 0
	for _, n := range r.Backends {
		total += n
	}
	for _, w := range weights {
		sum += w
	}
	for i, w := range weights {
		got := r.Backends[fmt.Sprintf("b%d", i)]
		want := float64(total) * float64(w) / float64(sum)
		// Maglev splits flows by hash: with N requests a share deviates
		// by about sqrt(N·p). Five standard deviations: the suite checks
		// some forty splits a run, and at four one run in a few hundred
		// failed by chance (CI, 2026-12-02: 152 of 600 against 200 ± 46);
		// a weight the split ignored still misses by ten or more.
		p := float64(w) / float64(sum)
		if tol := 5 * math.Sqrt(float64(total)*p*(1-p)); math.Abs(float64(got)-want) > tol {
			t.Errorf("backend b%d (weight %d) answered %d of %d, want %.0f ± %.0f", i, w, got, total, want, tol)
		}
	}
	t.Logf("distribution over %d connections: %v", total, r.Backends)
}

func TestModes(t *testing.T) { driversAndOffloads(t, testModes) }

func testModes(t *testing.T, build func(string, int) *LB) {
	weights := []int{1, 2, 3}
	for _, c := range []struct {
		mode  string
		extra string
	}{
		{"nat", "    snat: [198.51.100.1]\n"},
		{"halfnat", ""},
		{"ipip", ""},
	} {
		t.Run(c.mode, func(t *testing.T) {
			lb := build(c.mode[:1], len(weights))
			port := 8080
			if c.mode == "ipip" {
				port = 80 // DSR keeps the client's destination port
			}
			if err := lb.StartBackends(port); err != nil {
				t.Fatal(err)
			}
			if c.mode == "ipip" {
				for i := range weights {
					if err := lb.StartIPIPDecap(i, "192.0.2.10"); err != nil {
						t.Fatal(err)
					}
				}
			}
			td, _ := startTether(t, lb, lbConfig(lb, c.mode, weights, port, c.extra))
			if got := curl(t, lb, "http://192.0.2.10/"); !strings.HasPrefix(got, "b") {
				t.Fatalf("curl through the VIP got %q", got)
			}
			checkWeights(t, client(t, lb, "http://192.0.2.10/", 600, 8), weights)
			if c.mode == "halfnat" && lb.Driver == "tun" {
				checkReturnPath(t, lb, td, len(weights))
			}
		})
	}
}

// TestTransferAndBackendRemoval: a 100 MiB transfer arrives intact;
// removing its backend from the configuration while it runs lets it
// finish, and new connections avoid that backend.
func TestTransferAndBackendRemoval(t *testing.T) {
	driversAndOffloads(t, testTransferAndBackendRemoval)
}

func testTransferAndBackendRemoval(t *testing.T, build func(string, int) *LB) {
	weights := []int{1, 1, 1}
	lb := build("r", len(weights))
	if err := lb.StartBackends(8080); err != nil {
		t.Fatal(err)
	}
	cfg := lbConfig(lb, "nat", weights, 8080, "    snat: [198.51.100.1]\n")
	tetherd, path := startTether(t, lb, cfg)

	// Find the backend serving the transfer, and remove it.
	done := download(lb)
	name := servingBackend(t, lb)
	var kept []string
	for _, line := range strings.Split(cfg, "\n") {
		if !strings.Contains(line, "name: "+name+",") {
			kept = append(kept, line)
		}
	}
	if err := os.WriteFile(path, []byte(strings.Join(kept, "\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := tetherd.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if err := tetherd.WaitFor("configuration reloaded", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	r := client(t, lb, "http://192.0.2.10/", 200, 8)
	if r.Errors > 0 || r.Backends[name] > 0 {
		t.Errorf("after removing %s: %v, %d errors (%s)", name, r.Backends, r.Errors, r.FirstErr)
	}
	if got := checkDownload(t, done); got.Backends[name] != 1 {
		t.Fatalf("transfer answered by %v, expected %s", got.Backends, name)
	}
}

// clientNoFatal is client for use off the test goroutine.
func clientNoFatal(lb *LB, url string) ClientResult {
	out, err := lb.Exec(lb.Client, append([]string{"env"}, append(RoleCommand("client", url, "1", "1"), Self())...)...)
	if err != nil {
		return ClientResult{Errors: 1, FirstErr: err.Error()}
	}
	var r ClientResult
	if err := json.Unmarshal([]byte(lastLine(out)), &r); err != nil {
		return ClientResult{Errors: 1, FirstErr: err.Error()}
	}
	return r
}

// TestSoftwareRSS runs two workers on one queue: the dispatcher must send
// every reply to the worker that owns its flow, in both translated modes.
func TestSoftwareRSS(t *testing.T) {
	drivers(t, func(t *testing.T, build func(string, int) *LB) {
		for _, c := range []struct{ mode, extra string }{{"nat", "    snat: [198.51.100.1]\n"}, {"halfnat", ""}} {
			t.Run(c.mode, func(t *testing.T) {
				weights := []int{1, 1, 1}
				lb := build("w"+c.mode[:1], len(weights))
				if err := lb.StartBackends(8080); err != nil {
					t.Fatal(err)
				}
				cfg := strings.Replace(lbConfig(lb, c.mode, weights, 8080, c.extra), "  flows: {max: 65536}", "  flows: {max: 65536}\n  workers: 2", 1)
				td, _ := startTether(t, lb, cfg)
				if !strings.Contains(td.Output(), "software_rss=true") {
					t.Fatalf("forwarder did not start a dispatcher:\n%s", td.Output())
				}
				checkWeights(t, client(t, lb, "http://192.0.2.10/", 400, 8), weights)
			})
		}
	})
}

// checkReturnPath: the half-NAT replies the test just received came
// through the policy rules the forwarder installs on a TUN port (the
// topology routes nothing into the device itself), one per backend; the
// forwarder removes them when it stops.
func checkReturnPath(t *testing.T, lb *LB, td *Proc, backends int) {
	t.Helper()
	rules := func() string {
		out, err := lb.Exec(lb.Unit, "ip", "rule", "list", "table", "8384")
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(out)
	}
	if out := rules(); strings.Count(out, "ipproto tcp sport 8080 lookup 8384") != backends {
		t.Fatalf("want %d half-NAT return rules, one per backend:\n%s", backends, out)
	}
	td.Stop()
	if out := rules(); out != "" {
		t.Fatalf("rules left after the forwarder stopped:\n%s", out)
	}
}
