package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tetherlb/tether/api/unit"
)

// l7VIP6 is the IPv6 l7 VIP of TestL7MigrationIPv6, in VIP6Range.
const l7VIP6 = "2001:db8:10::12"

// TestL7MigrationIPv6: an IPv6 l7 VIP, on both ports. The workers
// answer the clients' SYNs, the acceptor reads each first request, the
// rules choose the host, and the connection migrates to the host's
// kernel (TCP_REPAIR over IPv6) and continues through the flow-ID
// tunnel keyed by the unit's address6, the hosts answering directly:
// rules on path, host and cookie, both hand-over paths (b0's Go server
// on the listener shim; nginx on b1 behind the splice, which learns the
// client's IPv6 address from PROXY v2), Go clients spread over both
// hosts, a download intact with no reply through the unit, and every
// connection's end reported.
func TestL7MigrationIPv6(t *testing.T) {
	drivers(t, func(t *testing.T, build func(string, int) *LB) { testL7MigrationIPv6(t, build("l76", 2)) })
}

func testL7MigrationIPv6(t *testing.T, lb *LB) {
	if err := lb.AddIPv6(); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	socks := l7Hosts(t, lb, dir)
	certs := filepath.Join(dir, "certs")
	hostCerts(t, certs, tunnelAddr(lb, 0)+","+tunnelAddr6(lb, 0), tunnelAddr(lb, 1)+","+tunnelAddr6(lb, 1))
	for _, ns := range lb.Backends {
		// The VIP is the hosts' own: the migrated sockets are bound to
		// it, and they answer the client from it.
		if err := lb.Run(ns, "ip", "-6", "addr", "add", l7VIP6+"/128", "dev", "lo", "nodad"); err != nil {
			t.Fatal(err)
		}
		if lb.Driver != "tun" {
			// On the switched topology the hosts answer by way of the
			// router, not through the unit's machine at all.
			if err := lb.Run(ns, "ip", "-6", "route", "replace", "default", "via", switchedNet6+"fe"); err != nil {
				t.Fatal(err)
			}
		}
	}
	cfg := fmt.Sprintf(`unit:
  name: tether
  address4: %s
  address6: "%s"
forwarder:
  port: {driver: %s, interface: %s%s}
  flows: {timeouts: {tcp_fin: 3s, tcp_closed: 3s}}
vips:
  - name: web6
    address: "%s"
    port: 80
    protocol: tcp
    mode: %s
    backends:
      - {name: b0, address: "%s"}
      - {name: b1, address: "%s"}
hosts:
  listen: "0.0.0.0:7320"
  tls: {ca: %s, cert: %s, key: %s}
`, lb.UnitIP, lb.UnitIP6(), lb.Driver, lb.UnitIf, pinDir(lb), l7VIP6, l7Rules, tunnelAddr6(lb, 0), tunnelAddr6(lb, 1),
		filepath.Join(certs, "ca.crt"), filepath.Join(certs, "unit-tether.crt"), filepath.Join(certs, "unit-tether.key"))
	u := startUnit(t, lb, cfg)
	vipPort := "[" + l7VIP6 + "]:80"
	for i := range lb.Backends {
		addrs := fmt.Sprintf("%s, \"%s\"", tunnelAddr(lb, i), tunnelAddr6(lb, i))
		tunnelAgentAt(t, lb, dir, certs, i, uint32(i+1), addrs, l7Migration(i, socks[i], vipPort))
	}
	waitStreamsUp(t, u, 2)
	startShimHTTPOn(t, lb, dir, socks[0], vipPort)

	url := "http://[" + l7VIP6 + "]"
	get := func(args ...string) (string, error) {
		return lb.Exec(lb.Client, append([]string{"curl", "-sS", "--max-time", "20"}, args...)...)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{url + "/b0/x"}, "b0"},
		{[]string{url + "/b1/x"}, "b1 " + ClientAddr6},
		{[]string{"-H", "Host: zero.example", url + "/"}, "b0"},
		{[]string{"--cookie", "backend=b1", url + "/"}, "b1 " + ClientAddr6},
	} {
		out, err := get(c.args...)
		if err != nil || strings.TrimSpace(out) != c.want {
			t.Fatalf("curl %v: %v: got %q, want %q\n%s", c.args, err, out, c.want, jsonText(unitL7(t, u)))
		}
	}
	res := client(t, lb, url+"/", 100, 4)
	b1 := 0
	for name, n := range res.Backends {
		if strings.HasPrefix(name, "b1") {
			b1 += n
		}
	}
	if res.Errors != 0 || res.Backends["b0"] == 0 || b1 == 0 {
		t.Fatalf("100 connections through the IPv6 l7 VIP: %+v", res)
	}

	before := u.report()
	const size = 32 << 20
	out, err := lb.Exec(lb.Client, "bash", "-c",
		fmt.Sprintf("curl -sS --max-time 60 -H 'Host: zero.example' '%s/bytes?n=%d' | sha256sum", url, size))
	if err != nil || strings.Fields(out)[0] != PayloadSHA256(size) {
		t.Fatalf("32 MiB through a migrated IPv6 connection: %v: %q", err, out)
	}
	after := u.report()
	var fwd, replies uint64
	for i, b := range after.Backends {
		fwd += b.Packets - before.Backends[i].Packets
		replies += b.ReplyPackets - before.Backends[i].ReplyPackets
	}
	if fwd == 0 || replies != 0 {
		t.Errorf("the unit forwarded %d packets to the hosts and %d replies: want replies direct from the hosts", fwd, replies)
	}
	if d := nonZero(after.Drops); len(d) != 0 {
		t.Errorf("drops %v", d)
	}

	var v unit.L7View
	eventually(t, "every migrated connection ended", func() bool {
		v = unitL7(t, u)
		return v.Live == 0 && v.Stats.Ended > 0
	}, func() string { return jsonText(v) })
	if v.Stats.UploadFailed != 0 || v.Stats.Migrated == 0 || v.Stats.Uploaded != v.Stats.Migrated {
		t.Errorf("migrations: %s", jsonText(v))
	}
	for _, a := range v.VIPs {
		if c := a.Counters; a.VIP != "web6" || c["accepted"] == 0 || c["ext_headers"]+c["bad_address"]+c["malformed_ip"]+c["bad_cookie"] != 0 {
			t.Errorf("the acceptor of %s: %v", a.VIP, c)
		}
	}
}
