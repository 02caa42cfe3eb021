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
