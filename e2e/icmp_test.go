package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tetherlb/tether/agent"
)

// Path MTU discovery through a VIP. The link between the client and the
// host that routes for it (the router on the switched topology, the unit
// itself on the TUN one) is narrowed to narrowMTU at both ends, and the
// client advertises the MSS of a full 1500-byte link, as a client on an
// ordinary LAN with a narrower hop on its way does. The backend's
// full-size segments then cannot cross that hop: the router answers each
// with an ICMP "fragmentation needed" (IPv4) or "packet too big" (IPv6)
// addressed to the source it saw, the VIP, and only if the unit hands that
// error to the backend, translated as the flow is, does the backend's TCP
// lower its segment size. Without it the download stalls: the classic
// PMTU black hole (the kernel's TCP MTU probing is off by default, so
// nothing else gets the transfer going).
//
// Narrowing c0 alone would not do: the client's MSS would follow its own
// link and the backend would never send a segment too big. Narrowing the
// router's end alone would leave a link whose ends disagree, where the
// router's veth drops the client's full-size frames without a word.
const (
	narrowMTU = 1400
	// The client's advertised MSS: a 1500-byte link's, less the IPv4 or
	// IPv6 and TCP headers.
	fullMSS4 = 1500 - 20 - 20
	fullMSS6 = 1500 - 40 - 20
	// pmtuSize is the download: thousands of full-size segments, so a
	// black hole cannot hide in the few small ones before them. (ipip
	// clamps the client's MSS by its outer header, 20 or 40 bytes, and
	// the backend's segments are still larger than narrowMTU.)
	pmtuSize = 8 << 20
)

// narrowClientLink narrows the client's link and has the client advertise
// a full-size MSS toward the VIP (vip, of the family the test uses; after
// AddIPv6 for an IPv6 one). It returns the namespace that routes for the
// client, which is the one to complain about the backend's segments.
func narrowClientLink(lb *LB, vip string) (string, error) {
	routerIf := "u0" // the unit routes for the client on the TUN topology
	if lb.Switch != "" {
		routerIf = "rc0"
	}
	route := []string{lb.Client, "ip", "route", "add", vip + "/32", "via", UnitAddr, "advmss", strconv.Itoa(fullMSS4)}
	if strings.Contains(vip, ":") {
		// fd00:1::1 is the client's gateway on both topologies.
		route = []string{lb.Client, "ip", "-6", "route", "add", vip + "/128", "via", "fd00:1::1", "advmss", strconv.Itoa(fullMSS6)}
	}
	for _, s := range [][]string{
		{lb.Client, "ip", "link", "set", "dev", "c0", "mtu", strconv.Itoa(narrowMTU)},
		{lb.Router, "ip", "link", "set", "dev", routerIf, "mtu", strconv.Itoa(narrowMTU)},
		route,
	} {
		if err := lb.Run(s[0], s[1:]...); err != nil {
			return "", err
		}
	}
	return lb.Router, nil
}

var routeMTU = regexp.MustCompile(`\bmtu (\d+)\b`)

// learnedMTU is the path MTU a namespace's kernel holds for dst (its
// route exception, made by an ICMP too-big error it accepted), 0 when it
// holds none.
func learnedMTU(t *testing.T, lb *LB, ns, dst string) int {
	t.Helper()
	args := []string{"ip", "route", "get", dst}
	if strings.Contains(dst, ":") {
		args = []string{"ip", "-6", "route", "get", dst}
	}
	out, err := lb.Exec(ns, args...)
	if err != nil {
		t.Fatal(err)
	}
	m := routeMTU.FindStringSubmatch(out)
	if m == nil {
		return 0
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// Names nstat gives the too-big errors a host sent and received: for
// IPv4 every "destination unreachable" is counted together (nothing else
// of that type is expected here; the test counts differences).
func tooBigCounters(v6 bool) (out, in string) {
	if v6 {
		return "Icmp6OutPktTooBigs", "Icmp6InPktTooBigs"
	}
	return "IcmpOutDestUnreachs", "IcmpInDestUnreachs"
}

var icmpForwarded = regexp.MustCompile(`icmp: \d+ echo replies, (\d+) errors forwarded`)

// TestPathMTU: a large download through a VIP, whose reply path crosses a
// hop narrower than the backend's link, completes intact in nat and
// halfnat (the unit translates the router's too-big error back to the
// backend) and in ipip (the unit encapsulates it to the backend, as the
// architecture's ICMP paragraph says), for IPv4 and IPv6, on both ports:
// on the switched AF_XDP topology a separate router complains, on the
// TUN one the unit's own kernel does, about a packet the forwarder wrote
// into its device, and the error reaches the forwarder back through that
// device. The test proves discovery happened rather than being skipped:
// the complaining router sent too-big errors, the forwarder forwarded
// errors, the backend received them and its kernel holds the narrow
// MTU for the peer it sends to, which it did not before the download.
// Linux takes a too-big error for TCP only through the socket its quote
// names, with a sequence number in flight, so the learned MTU also says
// that the unit rewrote the quote to the segment the backend sent. A
// tunnel VIP's host, whose agent restores its packets in XDP, gets the
// error IP-in-IP, which its agent unwraps.
func TestPathMTU(t *testing.T) {
	drivers(t, func(t *testing.T, build func(string, int) *LB) {
		for _, v6 := range []bool{false, true} {
			fam := "ipv4"
			if v6 {
				fam = "ipv6"
			}
			t.Run(fam, func(t *testing.T) {
				for _, mode := range []string{"nat", "halfnat", "ipip"} {
					t.Run(mode, func(t *testing.T) { testPathMTU(t, build, mode, v6) })
				}
				t.Run("tunnel", func(t *testing.T) { testPathMTUTunnel(t, build, v6) })
			})
		}
	})
}

func testPathMTU(t *testing.T, build func(string, int) *LB, mode string, v6 bool) {
	tag := "m4" + mode[:1]
	if v6 {
		tag = "m6" + mode[:1]
	}
	lb := build(tag, 1)
	vip, snat, client, listen := "192.0.2.10", "198.51.100.1", ClientAddr, "0.0.0.0"
	if v6 {
		if err := lb.AddIPv6(); err != nil {
			t.Fatal(err)
		}
		vip, snat, client, listen = vip6, "2001:db8:51::1", ClientAddr6, "[::]"
	}
	// The address the backend sends its segments to, for which its
	// kernel keeps what it learns of the path.
	peer, extra := client, ""
	if mode == "nat" {
		peer, extra = snat, fmt.Sprintf("    snat: [%q]\n", snat)
	}
	port := 8080
	if mode == "ipip" {
		port = 80 // DSR keeps the client's destination port
	}
	p, err := lb.Start(lb.Backends[0], "httpd b0", RoleCommand("httpd", "b0", fmt.Sprintf("%s:%d", listen, port)), Self())
	if err != nil {
		t.Fatal(err)
	}
	if err := p.WaitFor(Ready, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if mode == "ipip" {
		if err := lb.StartIPIPDecap(0, vip); err != nil {
			t.Fatal(err)
		}
	}
	cfg := lbConfig(lb, mode, []int{1}, port, extra)
	url := "http://" + vip + "/"
	if v6 {
		cfg = lbConfig6(lb, mode, []int{1}, port, extra)
		url = "http://[" + vip + "]/"
	}
	router, err := narrowClientLink(lb, vip)
	if err != nil {
		t.Fatal(err)
	}
	td, _ := startTether(t, lb, cfg)
	backend := lb.Backends[0]

	// A small answer fits the narrow hop: the VIP works before anything
	// depends on the too-big errors, so a failure below is theirs.
	if got := curl(t, lb, url); got != "b0" {
		t.Fatalf("curl through the VIP got %q", got)
	}
	if mtu := learnedMTU(t, lb, backend, peer); mtu != 0 {
		t.Fatalf("the backend holds MTU %d toward %s before the download", mtu, peer)
	}
	outName, inName := tooBigCounters(v6)
	sent0, got0 := counter(t, lb, router, outName), counter(t, lb, backend, inName)

	// --max-time bounds a stall: intact, this takes well under a second.
	out, dlErr := lb.Exec(lb.Client, "bash", "-c", fmt.Sprintf("set -o pipefail; curl -sS --max-time 20 '%sbytes?n=%d' | sha256sum", url, pmtuSize))
	sent, got := counter(t, lb, router, outName)-sent0, counter(t, lb, backend, inName)-got0
	mtu := learnedMTU(t, lb, backend, peer)
	td.Stop()
	forwarded := 0
	if m := icmpForwarded.FindStringSubmatch(td.Output()); m != nil {
		forwarded, _ = strconv.Atoi(m[1])
	}
	evidence := fmt.Sprintf("router %s sent %d %s; the forwarder forwarded %d ICMP errors; backend received %d %s and holds MTU %d toward %s\nforwarder's account:\n%s",
		router, sent, outName, forwarded, got, inName, mtu, peer, td.Output())

	if dlErr != nil || len(strings.Fields(out)) == 0 || strings.Fields(out)[0] != PayloadSHA256(pmtuSize) {
		t.Fatalf("%d bytes through the VIP across a %d-byte hop: %v: %q\n%s", pmtuSize, narrowMTU, dlErr, out, evidence)
	}
	if sent == 0 || forwarded == 0 || got == 0 || mtu != narrowMTU {
		t.Fatalf("the download completed, but not by path MTU discovery (want too-big errors sent, forwarded and received, and MTU %d learned):\n%s", narrowMTU, evidence)
	}
	t.Logf("router sent %d too-big errors, the forwarder forwarded %d, the backend received %d and holds MTU %d toward %s",
		sent, forwarded, got, mtu, peer)
}

// testPathMTUTunnel is testPathMTU for a tunnel VIP whose one host runs
// an agent: the router's too-big error about the host's direct reply
// reaches the host's stack only because the unit sends it IP-in-IP,
// which the agent's program unwraps (it drops anything else addressed to
// a tunnel address that is not a flow-ID packet).
func testPathMTUTunnel(t *testing.T, build func(string, int) *LB, v6 bool) {
	tag := "m4t"
	if v6 {
		tag = "m6t"
	}
	lb := build(tag, 1)
	vip, client, listen, tun, lo := "192.0.2.10", ClientAddr, "0.0.0.0", tunnelAddr(lb, 0), "/32"
	if v6 {
		if err := lb.AddIPv6(); err != nil {
			t.Fatal(err)
		}
		vip, client, listen, tun, lo = vip6, ClientAddr6, "[::]", tunnelAddr6(lb, 0), "/128"
	}
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	certs := filepath.Join(dir, "certs")
	hostCerts(t, certs, tun)
	backend := lb.Backends[0]
	if err := lb.Run(backend, "ip", "addr", "add", vip+lo, "dev", "lo", "nodad"); err != nil {
		t.Fatal(err)
	}
	p, err := lb.Start(backend, "httpd b0", RoleCommand("httpd", "b0", listen+":80"), Self())
	if err != nil {
		t.Fatal(err)
	}
	if err := p.WaitFor(Ready, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	addr6 := ""
	if v6 {
		addr6 = fmt.Sprintf("  address6: %q\n", lb.UnitIP6())
	}
	u := startUnit(t, lb, fmt.Sprintf(`unit:
  name: tether
  address4: %s
%sforwarder:
  port: {driver: %s, interface: %s%s}
vips:
  - {name: web, address: %q, port: 80, protocol: tcp, mode: tunnel, backends: [{name: b0, address: %q}]}
hosts:
  listen: "0.0.0.0:7320"
  tls: {ca: %s, cert: %s, key: %s}
`, lb.UnitIP, addr6, lb.Driver, lb.UnitIf, pinDir(lb), vip, tun,
		filepath.Join(certs, "ca.crt"), filepath.Join(certs, "unit-tether.crt"), filepath.Join(certs, "unit-tether.key")))
	tunnelAgentAt(t, lb, dir, certs, 0, 1, fmt.Sprintf("%q", tun), "")
	waitStreamsUp(t, u, 1)
	router, err := narrowClientLink(lb, vip)
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + vip + "/"
	if v6 {
		url = "http://[" + vip + "]/"
	}
	if got := curl(t, lb, url); got != "b0" {
		t.Fatalf("curl through the tunnel VIP got %q", got)
	}
	if mtu := learnedMTU(t, lb, backend, client); mtu != 0 {
		t.Fatalf("the host holds MTU %d toward %s before the download", mtu, client)
	}
	hostView := func() agent.TunnelView {
		return agentView[agent.TunnelView](t, lb, 0, filepath.Join(dir, "agent-b0.sock"), "tunnel")
	}
	outName, inName := tooBigCounters(v6)
	sent0, got0, unwrapped0 := counter(t, lb, router, outName), counter(t, lb, backend, inName), hostView().Counters.IPIP

	out, dlErr := lb.Exec(lb.Client, "bash", "-c", fmt.Sprintf("set -o pipefail; curl -sS --max-time 20 '%sbytes?n=%d' | sha256sum", url, pmtuSize))
	hv := hostView()
	sent, got, unwrapped := counter(t, lb, router, outName)-sent0, counter(t, lb, backend, inName)-got0, hv.Counters.IPIP-unwrapped0
	mtu := learnedMTU(t, lb, backend, client)
	evidence := fmt.Sprintf("router %s sent %d %s; the host's agent unwrapped %d IP-in-IP (its counters %+v); the host received %d %s and holds MTU %d toward %s",
		router, sent, outName, unwrapped, hv.Counters, got, inName, mtu, client)
	if dlErr != nil || len(strings.Fields(out)) == 0 || strings.Fields(out)[0] != PayloadSHA256(pmtuSize) {
		t.Fatalf("%d bytes through the tunnel VIP across a %d-byte hop: %v: %q\n%s", pmtuSize, narrowMTU, dlErr, out, evidence)
	}
	if sent == 0 || unwrapped == 0 || got == 0 || mtu != narrowMTU || hv.Counters.NotTunnel != 0 {
		t.Fatalf("the download completed, but not by path MTU discovery through the tunnel:\n%s", evidence)
	}
	t.Logf("%s", evidence)
}
