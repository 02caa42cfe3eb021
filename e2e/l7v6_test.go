package e2e

import (
	"os"
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
	n := hostsIPv6
	u, _ := startHostsUnitOn(t, lb, dir, n, l7Rules, "", func(certs string, i int, id uint32) *Proc {
		return l7Agent(t, lb, dir, n, certs, i, id, socks[i])
	})
	startShimHTTPOn(t, lb, dir, socks[0], n.vipPort())

	checkL7Routing(t, lb, u, n, 32<<20)
	if d := nonZero(u.report().Drops); len(d) != 0 {
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
		if c := a.Counters; a.VIP != "web" || c["accepted"] == 0 || c["ext_headers"]+c["bad_address"]+c["malformed_ip"]+c["bad_cookie"] != 0 {
			t.Errorf("the acceptor of %s: %v", a.VIP, c)
		}
	}
}
