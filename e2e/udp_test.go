package e2e

import (
	"encoding/json"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
)

// udpConfig is a unit with two UDP VIPs on port 53 over the topology's
// backends, with weights: dns at 192.0.2.10 and dns6 at vip6 (after
// AddIPv6), each with its own extra settings.
func udpConfig(lb *LB, mode string, weights []int, port int, extra4, extra6 string) string {
	var b strings.Builder
	fmt.Fprintf(&b, `unit:
  address4: %s
  address6: "%s"
forwarder:
  port: {driver: %s, interface: %s%s}
  flows: {max: 65536}
vips:
`, lb.UnitIP, lb.UnitIP6(), lb.Driver, lb.UnitIf, pinDir(lb))
	for _, v := range []struct{ name, addr, extra string }{{"dns", "192.0.2.10", extra4}, {"dns6", vip6, extra6}} {
		fmt.Fprintf(&b, `  - name: %s
    address: "%s"
    port: 53
    protocol: udp
    mode: %s
%s    backends:
`, v.name, v.addr, mode, v.extra)
		for i, w := range weights {
			addr := lb.BackendIP(i)
			if v.name == "dns6" {
				addr = lb.BackendIP6(i)
			}
			fmt.Fprintf(&b, "      - {name: b%d, address: \"%s\", port: %d, weight: %d}\n", i, addr, port, w)
		}
	}
	return b.String()
}

// udpClientRun runs the udpclient role in the client namespace: flows
// of datagrams of size bytes to addr, each datagram sent at most tries
// times.
func udpClientRun(t *testing.T, lb *LB, addr string, flows, datagrams, size int, answer string, tries int) UDPResult {
	t.Helper()
	role := RoleCommand("udpclient", addr, fmt.Sprint(flows), fmt.Sprint(datagrams), fmt.Sprint(size), answer, fmt.Sprint(tries))
	out, err := lb.Exec(lb.Client, append([]string{"env"}, append(role, Self())...)...)
	if err != nil {
		t.Fatal(err)
	}
	var r UDPResult
	if err := json.Unmarshal([]byte(lastLine(out)), &r); err != nil {
		t.Fatalf("udpclient output %q: %v", out, err)
	}
	return r
}

// udpLarge is the size of the datagrams that must travel as fragments:
// larger than the links' 1500-byte MTU, in three fragments each way.
const udpLarge = 4000

// TestUDPModes: UDP VIPs, IPv4 and IPv6, in each mode that carries UDP
// (nat, halfnat, ipip), on both ports (and AF_XDP with the senders'
// offloads on), between real kernels: the client's flows spread by the
// weights, every datagram of a flow reaches the same backend, each
// backend sees the client's address where the mode keeps it (the SNAT
// address under nat), and datagrams larger than the links' MTU, which
// travel as IP fragments, arrive intact each way (through an ipip VIP
// as fragments of the outer header too), except where the documentation
// says they cannot (see the cases below).
func TestUDPModes(t *testing.T) { driversAndOffloads(t, testUDPModes) }

func testUDPModes(t *testing.T, build func(string, int) *LB) {
	weights := []int{1, 2, 3}
	const snat4, snat6 = "198.51.100.1", "2001:db8:51::1"
	for _, c := range []struct {
		mode           string
		extra4, extra6 string
		peer4, peer6   string
	}{
		{"nat", "    snat: [" + snat4 + "]\n", "    snat: [\"" + snat6 + "\"]\n", snat4, snat6},
		{"halfnat", "", "", ClientAddr, ClientAddr6},
		{"ipip", "", "", ClientAddr, ClientAddr6},
	} {
		t.Run(c.mode, func(t *testing.T) {
			lb := build("u"+c.mode[:1], len(weights))
			if err := lb.AddIPv6(); err != nil {
				t.Fatal(err)
			}
			port := 5353
			if c.mode == "ipip" {
				port = 53 // DSR keeps the client's destination port
			}
			if err := lb.StartServers("udpecho", fmt.Sprintf("[::]:%d", port)); err != nil {
				t.Fatal(err)
			}
			if c.mode == "ipip" {
				// One decapsulator serves both families; the IPv6 VIP is
				// a local address too.
				for i := range weights {
					if err := lb.StartIPIPDecap(i, "192.0.2.10"); err != nil {
						t.Fatal(err)
					}
					if err := lb.Run(lb.Backends[i], "ip", "addr", "add", vip6+"/128", "dev", "lo"); err != nil {
						t.Fatal(err)
					}
				}
			}
			td, _ := startTether(t, lb, udpConfig(lb, c.mode, weights, port, c.extra4, c.extra6))
			for _, f := range []struct {
				name, vip, peer string
			}{
				{"ipv4", "192.0.2.10", c.peer4},
				{"ipv6", vip6, c.peer6},
			} {
				t.Run(f.name, func(t *testing.T) {
					addr := net.JoinHostPort(f.vip, "53")
					// Many small flows: the spread, the stickiness and
					// what the backends see.
					r := udpClientRun(t, lb, addr, 300, 3, 100, "echo", udpTries)
					t.Logf("small datagrams: %+v", r)
					checkUDP(t, r, c.mode, f.peer)
					checkWeights(t, ClientResult{Backends: r.Backends, Errors: r.Errors, FirstErr: r.FirstErr}, weights)

					// Fragments toward the backend: a large request
					// with a small answer. Through an ipip VIP each
					// fragment plus the outer header exceeds the link.
					// An IPv4 fragment may be cut further, and the unit
					// sends its pieces each in an outer packet of its
					// own; an IPv6 fragment above 1280 bytes is
					// answered with packet too big instead, which
					// shrinks the client's fragments.
					//
					// One flow learns the path MTU before the others
					// start: a socket the client's kernel connects
					// while it takes in a packet too big can keep the
					// old MTU on its cached route (the route cache says
					// 1460, the socket 1500), and every try then fails
					// with EMSGSIZE, one run in a few hundred.
					r = udpClientRun(t, lb, addr, 1, 1, udpLarge, "sum", udpTries)
					t.Logf("first large request: %+v", r)
					checkUDP(t, r, c.mode, f.peer)
					r = udpClientRun(t, lb, addr, 20, 2, udpLarge, "sum", udpTries)
					t.Logf("large requests: %+v", r)
					checkUDP(t, r, c.mode, f.peer)

					// Fragments both ways: the large payload echoed.
					// Through a TUN port a half-NAT reply's
					// fragments, which carry no port the policy rules
					// read, are marked by the unit's nftables tables.
					r = udpClientRun(t, lb, addr, 20, 2, udpLarge, "echo", udpTries)
					t.Logf("large echoes: %+v", r)
					checkUDP(t, r, c.mode, f.peer)
				})
			}
			if c.mode == "ipip" {
				// The large IPv4 datagrams' fragments went in fragments
				// of the outer header, none dropped; the large IPv6
				// ones were answered with ICMP packet too big (their
				// first tries), which shrank the client's fragments to
				// fit the tunnel.
				td.Stop()
				drops := stoppedDrops(td.Output())
				t.Logf("forwarder's drops: %v", drops)
				if n := drops["too_big"] + drops["no_buffer"]; n != 0 {
					t.Errorf("forwarder counted %d too_big and no_buffer drops, want none:\n%s", n, td.Output())
				}
				for _, line := range []string{"too big for the tunnel, sent in fragments: ", "too big for the tunnel, answered with ICMP: "} {
					if !strings.Contains(td.Output(), line) {
						t.Errorf("forwarder's summary has no %q:\n%s", line, td.Output())
					}
				}
			}
		})
	}
}

// checkUDP: every flow was answered intact by one backend, which saw the
// datagrams come from peer, and from the flow's own port where the mode
// keeps it.
func checkUDP(t *testing.T, r UDPResult, mode, peer string) {
	t.Helper()
	if r.Errors > 0 || r.Switched > 0 {
		t.Errorf("%d flows failed, %d switched backend; first: %s", r.Errors, r.Switched, r.FirstErr)
	}
	if r.Answers == 0 || r.Peers[peer] != r.Answers {
		t.Errorf("backends saw the datagrams come from %v, want all %d from %s", r.Peers, r.Answers, peer)
	}
	if mode != "nat" && r.PortKept != r.Answers {
		t.Errorf("backends saw the flow's own source port in %d of %d answers, want all", r.PortKept, r.Answers)
	}
}

// stoppedDrops reads the drop counters from the summary a stopped
// forwarder printed (the "dropped:" list of dataplane.Summary).
func stoppedDrops(out string) map[string]uint64 {
	drops := map[string]uint64{}
	_, list, ok := strings.Cut(out, "\ndropped:\n")
	if !ok {
		return drops
	}
	for _, line := range strings.Split(list, "\n") {
		f := strings.Fields(line)
		if len(f) != 2 || !strings.HasPrefix(line, "  ") {
			break
		}
		n, err := strconv.ParseUint(f[1], 10, 64)
		if err != nil {
			break
		}
		drops[f[0]] = n
	}
	return drops
}

// TestUDPPortUnreachable: a backend with nothing listening on a UDP
// VIP's port answers with an ICMP port unreachable, which must reach the
// client as an error about the VIP, so that its connected socket is
// refused at once instead of waiting out its timeout: nat relays the
// error from its SNAT address, ipip's backend sends it from the VIP
// itself, and halfnat's is caught by the packet it quotes: by the
// AF_XDP port's program, or on the TUN port by the unit's nftables
// tables.
func TestUDPPortUnreachable(t *testing.T) {
	drivers(t, func(t *testing.T, build func(string, int) *LB) {
		for _, c := range []struct{ mode, extra4, extra6 string }{
			{"nat", "    snat: [198.51.100.1]\n", "    snat: [\"2001:db8:51::1\"]\n"},
			{"halfnat", "", ""},
			{"ipip", "", ""},
		} {
			t.Run(c.mode, func(t *testing.T) {
				lb := build("r"+c.mode[:1], 1)
				if err := lb.AddIPv6(); err != nil {
					t.Fatal(err)
				}
				port := 5353
				if c.mode == "ipip" {
					port = 53
					if err := lb.StartIPIPDecap(0, "192.0.2.10"); err != nil {
						t.Fatal(err)
					}
					if err := lb.Run(lb.Backends[0], "ip", "addr", "add", vip6+"/128", "dev", "lo"); err != nil {
						t.Fatal(err)
					}
				}
				startTether(t, lb, udpConfig(lb, c.mode, []int{1}, port, c.extra4, c.extra6))
				for _, vip := range []string{"192.0.2.10", vip6} {
					r := udpClientRun(t, lb, net.JoinHostPort(vip, "53"), 1, 1, 10, "sum", 1)
					if r.Errors != 1 || !strings.Contains(r.FirstErr, "connection refused") {
						t.Errorf("%s: a datagram to a closed port behind the VIP: %s; want it refused", vip, r.FirstErr)
					}
				}
			})
		}
	})
}
