package e2e

import (
	"encoding/json"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The restart tests: 200 concurrent SHA-256-checked downloads through a
// unit, then a SIGKILL of one of its processes or both. Each is paced to
// last 8 s on any machine (restartSize/restartPace), so that all are in
// the middle when the kill comes, however fast the machine moves bytes.
const restartConns, restartSize, restartPace = 200, 1 << 20, 128 << 10

// restartModes are the modes that cross the unit both ways or tunnel.
var restartModes = []struct{ mode, extra string }{
	{"nat", "    snat: [198.51.100.1]\n"}, {"halfnat", ""}, {"ipip", ""},
}

// loadedUnit starts backends for mode (ipip with its decapsulators), a
// unit and the downloads, and returns once every download reached a
// backend: what is tested is what becomes of connections, not of dials.
func loadedUnit(t *testing.T, lb *LB, mode, extra string) (*runningUnit, *Proc) {
	t.Helper()
	port := 8080
	if mode == "ipip" {
		port = 80
	}
	if err := lb.StartBackends(port); err != nil {
		t.Fatal(err)
	}
	if mode == "ipip" {
		for i := range lb.Backends {
			if err := lb.StartIPIPDecap(i, "192.0.2.10"); err != nil {
				t.Fatal(err)
			}
		}
	}
	weights := make([]int, len(lb.Backends))
	for i := range weights {
		weights[i] = 1
	}
	u := startUnit(t, lb, lbConfig(lb, mode, weights, port, extra))
	url := fmt.Sprintf("http://192.0.2.10/bytes?n=%d&pace=%d", restartSize, restartPace)
	p, err := lb.Start(lb.Client, "200 downloads", RoleCommand("client", url, fmt.Sprint(restartConns), fmt.Sprint(restartConns)), Self())
	if err != nil {
		t.Fatal(err)
	}
	allServing(t, lb, restartConns)
	return u, p
}

// downloads waits for the client role and returns its result.
func downloads(t *testing.T, p *Proc) ClientResult {
	t.Helper()
	if err := p.Wait(3 * time.Minute); err != nil {
		t.Fatalf("the downloads hung: %v\n%s", err, p.Output())
	}
	var r ClientResult
	if err := json.Unmarshal([]byte(lastLine(p.Output())), &r); err != nil {
		t.Fatalf("client result: %v\n%s", err, p.Output())
	}
	t.Logf("%d of %d downloads failed, %d of them reset", r.Errors, restartConns, r.Resets)
	return r
}

// TestForwarderKilledUnderLoad: SIGKILL of the forwarder under the
// downloads, in each restart mode, on both ports: the control process
// starts a new forwarder with every connection put back before its first
// packet (and on AF_XDP the pinned program drops, rather than hands the
// kernel, what arrives in between), so no download is reset, stalls or
// arrives damaged.
func TestForwarderKilledUnderLoad(t *testing.T) {
	drivers(t, func(t *testing.T, build func(string, int) *LB) {
		for _, c := range restartModes {
			t.Run(c.mode, func(t *testing.T) {
				lb := build("k"+c.mode[:1], 2)
				u, p := loadedUnit(t, lb, c.mode, c.extra)
				old := u.forwarderPID()
				if err := syscall.Kill(old, syscall.SIGKILL); err != nil {
					t.Fatal(err)
				}
				if r := downloads(t, p); r.Errors > 0 {
					t.Fatalf("%d downloads failed across the forwarder's restart; first: %s\n%s", r.Errors, r.FirstErr, u.proc.Output())
				}
				if pid := u.forwarderPID(); pid == old || pid == 0 {
					t.Fatalf("the forwarder was not restarted (pid %d, was %d)", pid, old)
				}
				if !strings.Contains(u.proc.Output(), "before its first packet") {
					t.Errorf("the new forwarder did not get its flows at start:\n%s", u.proc.Output())
				}
			})
		}
	})
}

// TestUnitKilledUnderLoad: SIGKILL of the control process and the
// forwarder together under the downloads, then a restart of the unit.
// Flows are not persisted, so what survives is what the packets
// themselves say: halfnat and ipip connections keep the client's tuple
// and Maglev sends them where they went before, so they continue; a nat
// connection's SNAT port is gone, so both of its ends are reset at once
// (from the VIP and from the SNAT address). Nothing hangs: every
// download either completes intact or fails with a reset, and no backend
// is left holding a connection.
func TestUnitKilledUnderLoad(t *testing.T) {
	drivers(t, func(t *testing.T, build func(string, int) *LB) {
		for _, c := range restartModes {
			t.Run(c.mode, func(t *testing.T) {
				lb := build("w"+c.mode[:1], 2)
				u, p := loadedUnit(t, lb, c.mode, c.extra)
				fwd := u.forwarderPID()
				if err := u.proc.Signal(syscall.SIGKILL); err != nil {
					t.Fatal(err)
				}
				if err := syscall.Kill(fwd, syscall.SIGKILL); err != nil {
					t.Fatal(err)
				}
				u.proc.Wait(5 * time.Second)
				u.start()
				r := downloads(t, p)
				if c.mode == "nat" {
					if r.Errors != r.Resets {
						t.Fatalf("%d downloads failed otherwise than by a reset; first: %s", r.Errors-r.Resets, r.FirstOther)
					}
				} else if r.Errors > 0 {
					stats, _ := u.ctl("stats")
					var cache []string
					for _, ns := range lb.Backends {
						out, _ := lb.Exec(ns, "ip", "route", "show", "cache")
						cache = append(cache, out)
					}
					t.Fatalf("%d %s downloads failed across the unit's restart; first: %s\nstats:\n%s\nbackends' route caches (ICMP redirects): %q", r.Errors, c.mode, r.FirstErr, stats, cache)
				}
				// The backends' ends are closed or reset too.
				port := "8080"
				if c.mode == "ipip" {
					port = "80"
				}
				deadline := time.Now().Add(30 * time.Second)
				for _, ns := range lb.Backends {
					for {
						out, err := lb.Exec(ns, "ss", "-Htn", "state", "established", "sport", "=", port)
						if err != nil {
							t.Fatal(err)
						}
						if strings.TrimSpace(out) == "" {
							break
						}
						if time.Now().After(deadline) {
							t.Fatalf("backend %s still holds connections nobody will finish:\n%s", ns, out)
						}
						time.Sleep(100 * time.Millisecond)
					}
				}
			})
		}
	})
}

// TestControlKilledUnderLoad: SIGKILL of the control process alone under
// the downloads (nat) costs nothing: the forwarder forwards on, and a new
// control process adopts it and reads its flows back.
func TestControlKilledUnderLoad(t *testing.T) {
	drivers(t, func(t *testing.T, build func(string, int) *LB) {
		lb := build("kc", 2)
		u, p := loadedUnit(t, lb, restartModes[0].mode, restartModes[0].extra)
		fwd := u.forwarderPID()
		if err := u.proc.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		u.proc.Exited(5 * time.Second)
		u.start()
		if !strings.Contains(u.proc.Output(), "adopted the running forwarder") || u.forwarderPID() != fwd {
			t.Fatalf("the new control process did not adopt forwarder %d:\n%s", fwd, u.proc.Output())
		}
		if r := downloads(t, p); r.Errors > 0 {
			t.Fatalf("%d downloads failed across the control process's restart; first: %s", r.Errors, r.FirstErr)
		}
	})
}

// allServing waits until the backends have started serving n requests.
func allServing(t *testing.T, lb *LB, n int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		got := 0
		for _, p := range lb.procs {
			if strings.HasPrefix(p.Name, "httpd ") {
				got += strings.Count(p.Output(), "serving ")
			}
		}
		if got >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d requests reached a backend", got, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
