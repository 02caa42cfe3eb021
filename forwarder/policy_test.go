package forwarder

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/tetherlb/tether/config"
)

const policyConfig = `
vips:
  - {name: web, address: 192.0.2.10, port: 80, protocol: tcp, mode: halfnat,
     backends: [{address: 10.0.10.2, port: 8080}, {address: 10.0.11.2, port: 8080}]}
  - {name: dns, address: 192.0.2.11, port: 53, protocol: udp, mode: halfnat, backends: [{address: 10.0.10.2}]}
  - {name: web6, address: "2001:db8::10", port: 80, protocol: tcp, mode: halfnat, backends: [{address: "fd00::2"}]}
  - {name: nat, address: 192.0.2.12, port: 80, protocol: tcp, mode: nat, snat: [198.51.100.1], backends: [{address: 10.0.12.2}]}
`

// inNewNetns moves the test's thread into a network namespace of its
// own, so that the rules and routes it makes touch nothing of the host's
// (or of other tests'). The thread stays locked: it dies with the test's
// goroutine, and the namespace with it.
func inNewNetns(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: a network namespace for policy rules")
	}
	runtime.LockOSThread()
	if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
		t.Skipf("cannot make a network namespace: %v", err)
	}
}

// veth makes a veth pair, up, and returns the first end's index.
func veth(t *testing.T, name, peer string) int {
	t.Helper()
	if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: peer}); err != nil {
		t.Skipf("cannot make a veth pair: %v", err)
	}
	for _, n := range []string{name, peer} {
		l, err := netlink.LinkByName(n)
		if err == nil {
			err = netlink.LinkSetUp(l)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	l, err := netlink.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	return l.Attrs().Index
}

// installed lists the rules that look table up, as "from/port/proto",
// and the table's routes as "dst dev".
func installed(t *testing.T, table int) (rules, routes []string) {
	t.Helper()
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		rs, err := netlink.RuleListFiltered(fam, &netlink.Rule{Table: table}, netlink.RT_FILTER_TABLE)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rs {
			k, ok := ruleKey(r)
			if !ok && isMarkRule(r, table) {
				rules = append(rules, fmt.Sprintf("fwmark %#x/%d", r.Mark, fam))
				continue
			}
			if !ok {
				rules = append(rules, "foreign "+r.String())
				continue
			}
			rules = append(rules, k.String())
		}
		rts, err := netlink.RouteListFiltered(fam, &netlink.Route{Table: table}, netlink.RT_FILTER_TABLE)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rts {
			if r.Type == unix.RTN_BLACKHOLE {
				routes = append(routes, routeDst(r)+" blackhole")
				continue
			}
			routes = append(routes, routeDst(r)+" "+linkName(r.LinkIndex))
		}
	}
	slices.Sort(rules)
	slices.Sort(routes)
	return rules, routes
}

func TestReturnPath(t *testing.T) {
	inNewNetns(t)
	a := veth(t, "ta0", "ta1")
	b := veth(t, "tb0", "tb1")
	c, err := config.Parse([]byte(policyConfig))
	if err != nil {
		t.Fatal(err)
	}
	const table = 8384
	// What a killed forwarder left behind, and an operator's rule in
	// another table, which must stay.
	stale := newRule(table, returnRule{addr: c.VIPs[3].Backends[0].Addr(), port: 80, proto: 6})
	other := netlink.NewRule()
	other.Table, other.Priority = 100, 500
	other.Src = &net.IPNet{IP: net.IPv4(10, 0, 10, 2).To4(), Mask: net.CIDRMask(32, 32)}
	for _, r := range []*netlink.Rule{stale, other} {
		if err := netlink.RuleAdd(r); err != nil {
			t.Fatal(err)
		}
	}

	if err := syncReturn(a, table, returnRules(c)); err != nil {
		t.Fatal(err)
	}
	rules, routes := installed(t, table)
	// And for each family, the rule for what the nftables tables mark
	// (fragreturn.go).
	want := []string{"10.0.10.2:53/17", "10.0.10.2:8080/6", "10.0.11.2:8080/6", "[fd00::2]:80/6", "fwmark 0x7e0020c0/10", "fwmark 0x7e0020c0/2"}
	if !slices.Equal(rules, want) {
		t.Errorf("rules %q, want %q", rules, want)
	}
	// The device's routes, and the blackholes that stand in for them
	// while no forwarder has the device.
	if want := []string{"0.0.0.0/0 blackhole", "0.0.0.0/0 ta0", "::/0 blackhole", "::/0 ta0"}; !slices.Equal(routes, want) {
		t.Errorf("routes %q, want %q", routes, want)
	}
	if rs, _ := netlink.RuleListFiltered(netlink.FAMILY_V4, &netlink.Rule{Table: 100}, netlink.RT_FILTER_TABLE); len(rs) != 1 {
		t.Errorf("the operator's rule in table 100: %v", rs)
	}

	// A reload without one backend and without the IPv6 VIP.
	c.VIPs[0].Backends = c.VIPs[0].Backends[:1]
	c.VIPs = slices.Delete(c.VIPs, 2, 3)
	if err := syncReturn(a, table, returnRules(c)); err != nil {
		t.Fatal(err)
	}
	rules, routes = installed(t, table)
	if want := []string{"10.0.10.2:53/17", "10.0.10.2:8080/6", "fwmark 0x7e0020c0/2"}; !slices.Equal(rules, want) {
		t.Errorf("after the reload: rules %q, want %q", rules, want)
	}
	if want := []string{"0.0.0.0/0 blackhole", "0.0.0.0/0 ta0"}; !slices.Equal(routes, want) {
		t.Errorf("after the reload: routes %q, want %q", routes, want)
	}

	// A second unit given the same table is refused, naming the key,
	// and one with nothing to install leaves the first's rules alone.
	err = syncReturn(b, table, returnRules(c))
	if err == nil || !strings.Contains(err.Error(), `forwarder.port.table: "8384"`) || !strings.Contains(err.Error(), "ta0") {
		t.Errorf("a second unit on the same table: %v", err)
	}
	if err := syncReturn(b, table, nil); err != nil {
		t.Errorf("a second unit without half-NAT: %v", err)
	}
	if rules, _ = installed(t, table); len(rules) != 3 {
		t.Errorf("the first unit's rules after the second's attempts: %q", rules)
	}

	// Stopping removes everything; table 0 touches nothing.
	if err := syncReturn(a, table, nil); err != nil {
		t.Fatal(err)
	}
	if rules, routes = installed(t, table); len(rules)+len(routes) != 0 {
		t.Errorf("after clearing: rules %q, routes %q", rules, routes)
	}
	before, err := netlink.RuleList(netlink.FAMILY_ALL)
	if err != nil {
		t.Fatal(err)
	}
	if err := syncReturn(a, 0, returnRules(c)); err != nil {
		t.Fatal(err)
	}
	if after, _ := netlink.RuleList(netlink.FAMILY_ALL); len(after) != len(before) {
		t.Errorf("table 0 changed the rules from %v to %v", before, after)
	}
}

// TestFragReturnTable: the fragments' nftables table holds every IPv4
// half-NAT endpoint and an empty set for datagrams, is made anew on each
// sync, and goes when no endpoint is left. What its rules catch, the
// system tests show (TestUDPModes, TestUDPPortUnreachable).
func TestFragReturnTable(t *testing.T) {
	inNewNetns(t)
	c, err := config.Parse([]byte(policyConfig))
	if err != nil {
		t.Fatal(err)
	}
	conn, err := nftables.New()
	if err != nil {
		t.Fatal(err)
	}
	endpoints := func(fam nftables.TableFamily) []string {
		t.Helper()
		tabs, err := conn.ListTablesOfFamily(fam)
		if err != nil || len(tabs) == 0 {
			return nil
		}
		sets, err := conn.GetSets(tabs[0])
		if err != nil || len(sets) != 3 || tabs[0].Name != fragTableName("tdev") {
			t.Fatalf("table %s: sets %v, %v; want endpoints, datagrams and icmp_errors", tabs[0].Name, sets, err)
		}
		var eps []string
		for _, s := range sets {
			els, err := conn.GetSetElements(s)
			if err != nil {
				t.Fatal(err)
			}
			switch s.Name {
			case "icmp_errors":
				if len(els) != 3 {
					t.Errorf("set icmp_errors: %d types, want 3", len(els))
				}
			case "datagrams":
				if !s.Dynamic || !s.HasTimeout || len(els) != 0 {
					t.Errorf("set datagrams: dynamic %v, timeout %v, %d elements", s.Dynamic, s.HasTimeout, len(els))
				}
			default:
				for _, e := range els {
					n := len(e.Key) - 8 // the address's length
					a, _ := netip.AddrFromSlice(e.Key[:n])
					eps = append(eps, fmt.Sprintf("%v/%d/%d", a, binary.BigEndian.Uint16(e.Key[n+4:]), e.Key[n]))
				}
			}
		}
		slices.Sort(eps)
		return eps
	}
	if err := syncFragReturn("tdev", 8384, returnRules(c), 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if got, want := endpoints(nftables.TableFamilyIPv4), []string{"10.0.10.2/53/17", "10.0.10.2/8080/6", "10.0.11.2/8080/6"}; !slices.Equal(got, want) {
		t.Errorf("IPv4 endpoints %q, want %q", got, want)
	}
	if got, want := endpoints(nftables.TableFamilyIPv6), []string{"fd00::2/80/6"}; !slices.Equal(got, want) {
		t.Errorf("IPv6 endpoints %q, want %q", got, want)
	}
	// A reload without one backend and without the IPv6 VIP.
	c.VIPs[0].Backends = c.VIPs[0].Backends[:1]
	c.VIPs = slices.Delete(c.VIPs, 2, 3)
	if err := syncFragReturn("tdev", 8384, returnRules(c), 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if got, want := endpoints(nftables.TableFamilyIPv4), []string{"10.0.10.2/53/17", "10.0.10.2/8080/6"}; !slices.Equal(got, want) {
		t.Errorf("after the reload: IPv4 endpoints %q, want %q", got, want)
	}
	if got := endpoints(nftables.TableFamilyIPv6); got != nil {
		t.Errorf("after the reload: IPv6 endpoints %q, want no table", got)
	}
	if err := syncFragReturn("tdev", 8384, nil, 0); err != nil {
		t.Fatal(err)
	}
	if got := endpoints(nftables.TableFamilyIPv4); got != nil {
		t.Errorf("with no endpoint: IPv4 endpoints %q, want no table", got)
	}
}
