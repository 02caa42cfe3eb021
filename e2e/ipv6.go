package e2e

import "fmt"

// IPv6 addresses of both topologies, added by AddIPv6 beside the IPv4
// ones (documentation and unique-local prefixes; every address without
// duplicate address detection, so it is usable at once).
//
//	TUN:       client fd00:1::2 ── fd00:1::1 unit fd00:1x::1 ── fd00:1x::2 backend x
//	switched:  client fd00:1::2 ── fd00:1::1 router fd00::fe ─┐
//	                                       unit fd00::1 ──────┤ bridge (fd00::/64)
//	                               backend x fd00::1x ────────┘
const (
	ClientAddr6  = "fd00:1::2"
	VIP6Range    = "2001:db8:10::/64"
	SNAT6Range   = "2001:db8:51::/64"
	switchedNet6 = "fd00::"
)

// AddIPv6 gives the topology its IPv6 addresses and routes: the client
// reaches VIP6Range (and, on the switched topology, the router sends
// SNAT6Range) through the unit, whose IPv6 address UnitIP6 returns, and
// the backends route through the unit as they do for IPv4. Backend i's
// address is BackendIP6(i).
func (lb *LB) AddIPv6() error {
	var steps [][]string
	addr := func(ns, ifc, a string) {
		steps = append(steps, []string{ns, "ip", "-6", "addr", "add", a, "dev", ifc, "nodad"})
	}
	route := func(ns string, args ...string) {
		steps = append(steps, append([]string{ns, "ip", "-6", "route", "add"}, args...))
	}
	if err := lb.Sysctl(lb.Unit, "net.ipv6.conf.all.forwarding=1"); err != nil {
		return err
	}
	for _, ns := range lb.Backends {
		// A backend's answers go to its gateway, the unit, and stay
		// there: the redirects a forwarding router may send would take
		// them past it.
		if err := lb.Sysctl(ns, "net.ipv6.conf.all.accept_redirects=0", "net.ipv6.conf.default.accept_redirects=0"); err != nil {
			return err
		}
	}
	if lb.Switch == "" {
		addr(lb.Client, "c0", ClientAddr6+"/64")
		addr(lb.Unit, "u0", "fd00:1::1/64")
		route(lb.Client, VIP6Range, "via", "fd00:1::1")
		for i, ns := range lb.Backends {
			addr(ns, "e0", lb.BackendIP6(i)+"/64")
			addr(lb.Unit, BackendLink(i), fmt.Sprintf("fd00:%d::1/64", 10+i))
			route(ns, "default", "via", fmt.Sprintf("fd00:%d::1", 10+i))
		}
	} else {
		if err := lb.Sysctl(lb.Router, "net.ipv6.conf.all.forwarding=1"); err != nil {
			return err
		}
		addr(lb.Client, "c0", ClientAddr6+"/64")
		addr(lb.Router, "rc0", "fd00:1::1/64")
		addr(lb.Router, "r0", switchedNet6+"fe/64")
		addr(lb.Unit, switchedUnitIf, lb.UnitIP6()+"/64")
		route(lb.Client, "default", "via", "fd00:1::1")
		route(lb.Router, VIP6Range, "via", lb.UnitIP6())
		route(lb.Router, SNAT6Range, "via", lb.UnitIP6())
		route(lb.Unit, "default", "via", switchedNet6+"fe")
		for i, ns := range lb.Backends {
			addr(ns, "e0", lb.BackendIP6(i)+"/64")
			route(ns, "default", "via", lb.UnitIP6())
		}
	}
	for _, s := range steps {
		if err := lb.Run(s[0], s[1:]...); err != nil {
			return err
		}
	}
	return nil
}

// UnitIP6 is the unit's IPv6 address the backends reach it by (after
// AddIPv6).
func (lb *LB) UnitIP6() string {
	if lb.Switch == "" {
		return "fd00:1::1"
	}
	return switchedNet6 + "1"
}

// BackendIP6 is backend i's IPv6 address (after AddIPv6).
func (lb *LB) BackendIP6(i int) string {
	if lb.Switch == "" {
		return fmt.Sprintf("fd00:%d::2", 10+i)
	}
	return fmt.Sprintf("%s%d", switchedNet6, 10+i)
}
