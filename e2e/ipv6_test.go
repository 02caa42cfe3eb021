package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// vip6 is the IPv6 VIP of the IPv6 system tests, in VIP6Range.
const vip6 = "2001:db8:10::10"

// lbConfig6 is lbConfig for an IPv6 VIP over the backends' IPv6
// addresses (after AddIPv6).
func lbConfig6(lb *LB, mode string, weights []int, port int, extra string) string {
	var b strings.Builder
	fmt.Fprintf(&b, `unit:
  address4: %s
  address6: "%s"
forwarder:
  port: {driver: %s, interface: %s%s}
  flows: {max: 65536}
vips:
  - name: web6
    address: "%s"
    port: 80
    protocol: tcp
    mode: %s
%s    backends:
`, lb.UnitIP, lb.UnitIP6(), lb.Driver, lb.UnitIf, pinDir(lb), vip6, mode, extra)
	for i, w := range weights {
		fmt.Fprintf(&b, "      - {name: b%d, address: \"%s\", port: %d, weight: %d}\n", i, lb.BackendIP6(i), port, w)
	}
	return b.String()
}

// TestModesIPv6: an IPv6 VIP in each mode that carries IPv6 (nat,
// halfnat, ipip: IPv6-in-IPv6; tunnel and l7 are IPv4 only), on both
// ports (and AF_XDP with the senders' offloads on), between real
// kernels: the client's connections spread by the weights, each backend
// sees the client's address where the mode keeps it (the SNAT address
// under nat), and 16 MiB go each way intact.
func TestModesIPv6(t *testing.T) { driversAndOffloads(t, testModesIPv6) }

func testModesIPv6(t *testing.T, build func(string, int) *LB) {
	weights := []int{1, 2, 3}
	const snat6 = "2001:db8:51::1"
	for _, c := range []struct {
		mode, extra, peer string
	}{
		{"nat", "    snat: [\"" + snat6 + "\"]\n", snat6},
		{"halfnat", "", ClientAddr6},
		{"ipip", "", ClientAddr6},
	} {
		t.Run(c.mode, func(t *testing.T) {
			lb := build("6"+c.mode[:1], len(weights))
			if err := lb.AddIPv6(); err != nil {
				t.Fatal(err)
			}
			port := 8080
			if c.mode == "ipip" {
				port = 80 // DSR keeps the client's destination port
			}
			if err := lb.StartServers("httpd", fmt.Sprintf("[::]:%d", port)); err != nil {
				t.Fatal(err)
			}
			if c.mode == "ipip" {
				for i := range weights {
					if err := lb.StartIPIPDecap(i, vip6); err != nil {
						t.Fatal(err)
					}
				}
			}
			startTether(t, lb, lbConfig6(lb, c.mode, weights, port, c.extra))
			url := "http://[" + vip6 + "]/"
			got := strings.Fields(curl(t, lb, url+"?peer"))
			if len(got) != 2 || !strings.HasPrefix(got[0], "b") || got[1] != c.peer {
				t.Fatalf("curl through the IPv6 VIP got %q, want a backend's name and the peer %s", got, c.peer)
			}
			checkWeights(t, client(t, lb, url, 600, 8), weights)
			// Bulk both ways, intact: full-size segments (and, with the
			// senders' offloads on, their partial checksums) in IPv6.
			const size = 16 << 20
			out, err := lb.Exec(lb.Client, "bash", "-c", fmt.Sprintf("curl -sS --max-time 60 '%sbytes?n=%d' | sha256sum", url, size))
			if err != nil || strings.Fields(out)[0] != PayloadSHA256(size) {
				t.Fatalf("16 MiB from the IPv6 VIP: %v: %q", err, out)
			}
			upload := filepath.Join(t.TempDir(), "upload")
			f, err := os.Create(upload)
			if err == nil {
				err = Payload(f, size)
				f.Close()
			}
			if err != nil {
				t.Fatal(err)
			}
			out, err = lb.Exec(lb.Client, "curl", "-sS", "--max-time", "60", "-H", "Expect:", "--data-binary", "@"+upload, url+"upload")
			if want := fmt.Sprintf("%d %s", size, PayloadSHA256(size)); err != nil || strings.TrimSpace(out) != want {
				t.Fatalf("16 MiB to the IPv6 VIP: %v: %q, want %q", err, out, want)
			}
		})
	}
}
