package e2e

import (
	"encoding/json"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestForwarderKilledUnderLoad: SIGKILL of the forwarder while 200
// checked downloads run through it, in every mode that crosses the unit
// both ways or tunnels, on both ports: the control process starts a new
// forwarder with every connection put back before its first packet (and
// on AF_XDP the pinned program drops, rather than hands the kernel,
// what arrives in between), so no download is reset, stalls or arrives
// damaged.
func TestForwarderKilledUnderLoad(t *testing.T) {
	drivers(t, func(t *testing.T, build func(string, int) *LB) {
		for _, c := range []struct{ mode, extra string }{
			{"nat", "    snat: [198.51.100.1]\n"}, {"halfnat", ""}, {"ipip", ""},
		} {
			t.Run(c.mode, func(t *testing.T) {
				lb := build("k"+c.mode[:1], 2)
				port := 8080
				if c.mode == "ipip" {
					port = 80
				}
				if err := lb.StartBackends(port); err != nil {
					t.Fatal(err)
				}
				if c.mode == "ipip" {
					for i := range 2 {
						if err := lb.StartIPIPDecap(i, "192.0.2.10"); err != nil {
							t.Fatal(err)
						}
					}
				}
				u := startUnit(t, lb, lbConfig(lb, c.mode, []int{1, 1}, port, c.extra))
				const conns, size = 200, 1 << 20
				url := fmt.Sprintf("http://192.0.2.10/bytes?n=%d", size)
				p, err := lb.Start(lb.Client, "200 downloads", RoleCommand("client", url, fmt.Sprint(conns), fmt.Sprint(conns)), Self())
				if err != nil {
					t.Fatal(err)
				}
				servingBackend(t, lb)
				old := u.forwarderPID()
				if err := syscall.Kill(old, syscall.SIGKILL); err != nil {
					t.Fatal(err)
				}
				if err := p.Wait(3 * time.Minute); err != nil {
					t.Fatalf("the downloads: %v\n%s", err, p.Output())
				}
				var r ClientResult
				if err := json.Unmarshal([]byte(lastLine(p.Output())), &r); err != nil {
					t.Fatalf("client result: %v\n%s", err, p.Output())
				}
				if r.Errors > 0 {
					t.Fatalf("%d of %d downloads failed across the forwarder's restart; first: %s\n%s", r.Errors, conns, r.FirstErr, u.proc.Output())
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
// forwarder together under 200 checked downloads, then a restart of the
// unit. Flows are not persisted, so what survives is what the packets
// themselves say: halfnat and ipip connections keep the client's tuple
// and Maglev sends them where they went before, so they continue; a nat
// connection's SNAT port is gone, so both of its ends are reset at once
// (from the VIP and from the SNAT address). Nothing hangs: every
// download either completes intact or fails with a reset, and no backend
// is left holding a connection.
func TestUnitKilledUnderLoad(t *testing.T) {
	drivers(t, func(t *testing.T, build func(string, int) *LB) {
		for _, c := range []struct{ mode, extra string }{
			{"nat", "    snat: [198.51.100.1]\n"}, {"halfnat", ""}, {"ipip", ""},
		} {
			t.Run(c.mode, func(t *testing.T) {
				lb := build("w"+c.mode[:1], 2)
				port := 8080
				if c.mode == "ipip" {
					port = 80
				}
				if err := lb.StartBackends(port); err != nil {
					t.Fatal(err)
				}
				if c.mode == "ipip" {
					for i := range 2 {
						if err := lb.StartIPIPDecap(i, "192.0.2.10"); err != nil {
							t.Fatal(err)
						}
					}
				}
				u := startUnit(t, lb, lbConfig(lb, c.mode, []int{1, 1}, port, c.extra))
				const conns, size = 200, 4 << 20
				url := fmt.Sprintf("http://192.0.2.10/bytes?n=%d", size)
				p, err := lb.Start(lb.Client, "200 downloads", RoleCommand("client", url, fmt.Sprint(conns), fmt.Sprint(conns)), Self())
				if err != nil {
					t.Fatal(err)
				}
				// Every connection is open before the kill: what is
				// tested is what becomes of connections, not of dials.
				allServing(t, lb, conns)
				fwd := u.forwarderPID()
				if err := u.proc.Signal(syscall.SIGKILL); err != nil {
					t.Fatal(err)
				}
				if err := syscall.Kill(fwd, syscall.SIGKILL); err != nil {
					t.Fatal(err)
				}
				u.proc.Wait(5 * time.Second)
				u.start()
				if err := p.Wait(3 * time.Minute); err != nil {
					t.Fatalf("the downloads hung: %v\n%s", err, p.Output())
				}
				var r ClientResult
				if err := json.Unmarshal([]byte(lastLine(p.Output())), &r); err != nil {
					t.Fatalf("client result: %v\n%s", err, p.Output())
				}
				t.Logf("%d of %d downloads failed, %d of them reset", r.Errors, conns, r.Resets)
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
					t.Fatalf("%d of %d %s downloads failed across the unit's restart; first: %s\nstats:\n%s\nbackends' route caches (ICMP redirects): %q", r.Errors, conns, c.mode, r.FirstErr, stats, cache)
				}
				// The backends' ends are closed or reset too.
				deadline := time.Now().Add(30 * time.Second)
				for _, ns := range lb.Backends {
					for {
						out, err := lb.Exec(ns, "ss", "-Htn", "state", "established", "sport", "=", fmt.Sprint(port))
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

// TestControlKilledUnderLoad: SIGKILL of the control process alone under
// 200 checked nat downloads costs nothing: the forwarder forwards on,
// and a new control process adopts it and reads its flows back.
func TestControlKilledUnderLoad(t *testing.T) {
	drivers(t, func(t *testing.T, build func(string, int) *LB) {
		lb := build("kc", 2)
		if err := lb.StartBackends(8080); err != nil {
			t.Fatal(err)
		}
		u := startUnit(t, lb, lbConfig(lb, "nat", []int{1, 1}, 8080, "    snat: [198.51.100.1]\n"))
		const conns, size = 200, 4 << 20
		p, err := lb.Start(lb.Client, "200 downloads", RoleCommand("client", fmt.Sprintf("http://192.0.2.10/bytes?n=%d", size), fmt.Sprint(conns), fmt.Sprint(conns)), Self())
		if err != nil {
			t.Fatal(err)
		}
		allServing(t, lb, conns)
		fwd := u.forwarderPID()
		if err := u.proc.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		u.proc.Wait(5 * time.Second)
		u.start()
		if !strings.Contains(u.proc.Output(), "adopted the running forwarder") || u.forwarderPID() != fwd {
			t.Fatalf("the new control process did not adopt forwarder %d:\n%s", fwd, u.proc.Output())
		}
		if err := p.Wait(3 * time.Minute); err != nil {
			t.Fatalf("the downloads: %v\n%s", err, p.Output())
		}
		var r ClientResult
		if err := json.Unmarshal([]byte(lastLine(p.Output())), &r); err != nil {
			t.Fatalf("client result: %v\n%s", err, p.Output())
		}
		if r.Errors > 0 {
			t.Fatalf("%d of %d downloads failed across the control process's restart; first: %s", r.Errors, conns, r.FirstErr)
		}
	})
}
