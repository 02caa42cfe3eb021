package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tetherlb/tether/agent"
)

// tunnelAddr6 is backend i's IPv6 tunnel address (after AddIPv6), on its
// link to the unit beside its ordinary one.
func tunnelAddr6(lb *LB, i int) string {
	if lb.Driver == "tun" {
		return fmt.Sprintf("fd00:%d::100", 10+i)
	}
	return fmt.Sprintf("fd00::%d", 100+i)
}

// dsrVIP6 is the IPv6 ipip VIP of TestTunnelToHostsIPv6, in VIP6Range.
const dsrVIP6 = "2001:db8:10::11"

// TestTunnelToHostsIPv6: IPv6 VIPs in tunnel and ipip mode carry curl,
// Go HTTP clients and UDP to two hosts whose agents restore the
// flow-ID packets (keyed by the unit's address6) and unwrap the
// IPv6-in-IPv6 in XDP: the connections spread over both hosts, a
// download arrives intact with no reply through the unit, datagrams
// larger than the links (the client's IPv6 fragments, which the unit
// sends IPv6-in-IPv6) arrive intact, and the agents count what they
// restored and unwrapped. On both ports.
func TestTunnelToHostsIPv6(t *testing.T) {
	drivers(t, func(t *testing.T, build func(string, int) *LB) { testTunnelToHostsIPv6(t, build("t6", 2)) })
}

func testTunnelToHostsIPv6(t *testing.T, lb *LB) {
	if err := lb.AddIPv6(); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	certs := filepath.Join(dir, "certs")
	hostCerts(t, certs, tunnelAddr(lb, 0)+","+tunnelAddr6(lb, 0), tunnelAddr(lb, 1)+","+tunnelAddr6(lb, 1))
	for _, ns := range lb.Backends {
		// The VIPs are the hosts' own: they answer the client from them.
		for _, v := range []string{vip6, dsrVIP6} {
			if err := lb.Run(ns, "ip", "-6", "addr", "add", v+"/128", "dev", "lo", "nodad"); err != nil {
				t.Fatal(err)
			}
		}
		if lb.Driver != "tun" {
			// On the switched topology the hosts answer by way of the
			// router, not through the unit's machine at all.
			if err := lb.Run(ns, "ip", "-6", "route", "replace", "default", "via", switchedNet6+"fe"); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := lb.StartServers("httpd", "[::]:80"); err != nil {
		t.Fatal(err)
	}
	if err := lb.StartServers("udpecho", "[::]:53"); err != nil {
		t.Fatal(err)
	}
	// Each VIP has the two hosts as its backends.
	bes := fmt.Sprintf("backends: [{name: b0, address: \"%s\"}, {name: b1, address: \"%s\"}]", tunnelAddr6(lb, 0), tunnelAddr6(lb, 1))
	cfg := fmt.Sprintf(`unit:
  name: tether
  address4: %s
  address6: "%s"
forwarder:
  port: {driver: %s, interface: %s%s}
vips:
  - {name: web6, address: "%s", port: 80, protocol: tcp, mode: tunnel, %s}
  - {name: dns6, address: "%s", port: 53, protocol: udp, mode: tunnel, %s}
  - {name: dsr6, address: "%s", port: 80, protocol: tcp, mode: ipip, %s}
hosts:
  listen: "0.0.0.0:7320"
  tls: {ca: %s, cert: %s, key: %s}
`, lb.UnitIP, lb.UnitIP6(), lb.Driver, lb.UnitIf, pinDir(lb), vip6, bes, vip6, bes, dsrVIP6, bes,
		filepath.Join(certs, "ca.crt"), filepath.Join(certs, "unit-tether.crt"), filepath.Join(certs, "unit-tether.key"))
	u := startUnit(t, lb, cfg)
	for i := range lb.Backends {
		addrs := fmt.Sprintf("%s, \"%s\"", tunnelAddr(lb, i), tunnelAddr6(lb, i))
		tunnelAgentAt(t, lb, dir, certs, i, uint32(i+1), addrs, "")
	}
	waitStreamsUp(t, u, 2)

	url := "http://[" + vip6 + "]/"
	if got := strings.Fields(curl(t, lb, url+"?peer")); len(got) != 2 || !strings.HasPrefix(got[0], "b") || got[1] != ClientAddr6 {
		t.Fatalf("curl through the IPv6 tunnel VIP got %q, want a host's name and the client's address %s", got, ClientAddr6)
	}
	if res := client(t, lb, url, 200, 8); res.Errors != 0 || res.Backends["b0"] == 0 || res.Backends["b1"] == 0 {
		t.Fatalf("200 connections through the IPv6 tunnel: %+v", res)
	}
	const size = 32 << 20
	if r := client(t, lb, fmt.Sprintf("%sbytes?n=%d", url, size), 1, 1); r.Errors != 0 || r.SHA256 != PayloadSHA256(size) {
		t.Fatalf("32 MiB through the IPv6 tunnel: %+v", r)
	}
	dsr := "http://[" + dsrVIP6 + "]/"
	if res := client(t, lb, dsr, 50, 4); res.Errors != 0 || res.Backends["b0"]+res.Backends["b1"] != 50 {
		t.Fatalf("50 connections through the IPv6 ipip VIP: %+v", res)
	}
	// One flow learns the path MTU (the unit answers the client's
	// 1500-byte fragments, which do not fit with the outer header, with
	// packet too big) before the others start: a socket the client's
	// kernel connects while it takes in a packet too big can keep the
	// old MTU (see testUDPModes).
	first := udpClientRun(t, lb, "["+vip6+"]:53", 1, 1, udpLarge, "sum", udpTries)
	checkUDP(t, first, "tunnel", ClientAddr6)
	large := udpClientRun(t, lb, "["+vip6+"]:53", 20, 2, udpLarge, "sum", udpTries)
	t.Logf("large IPv6 datagrams through the agents' hosts: %+v", large)
	checkUDP(t, large, "tunnel", ClientAddr6)

	r := u.report()
	var replies uint64
	for _, b := range r.Backends {
		replies += b.ReplyPackets
	}
	if replies != 0 {
		t.Errorf("the unit forwarded %d reply packets: the hosts answer the clients directly", replies)
	}
	if d := nonZero(r.Drops); len(d) != 0 {
		t.Errorf("drops %v", d)
	}
	var restored, unwrapped uint64
	for i := range lb.Backends {
		v := agentView[agent.TunnelView](t, lb, i, filepath.Join(dir, fmt.Sprintf("agent-b%d.sock", i)), "tunnel")
		c := v.Counters
		if c.UnknownFlow+c.UnknownUnit+c.NotTunnel+c.Malformed != 0 {
			t.Errorf("host %d dropped tunnel packets: %+v", i, c)
		}
		if len(v.ByUnit) != 1 || len(v.ByUnit[0].Sources) != 2 || v.ByUnit[0].NoSource != 0 {
			t.Errorf("host %d's view of the unit: %+v", i, v.ByUnit)
		}
		restored += c.Decapsulated
		unwrapped += c.IPIP
	}
	if restored == 0 || unwrapped == 0 {
		t.Errorf("the hosts restored %d flow-ID packets and unwrapped %d IPv6-in-IPv6: want both", restored, unwrapped)
	}
}
