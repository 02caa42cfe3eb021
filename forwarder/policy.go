package forwarder

import (
	"cmp"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/tetherlb/tether/api/unit"
	"github.com/tetherlb/tether/config"
	"github.com/tetherlb/tether/nic/tun"
)

// The half-NAT return path of a TUN port.
//
// A half-NAT backend sees the client's own address and replies to it. On
// the unit those replies are ordinary forwarded packets: without help the
// kernel sends them straight on to the client with the backend's address
// as their source, the client's stack finds no connection for them, and
// no connection ever opens. An AF_XDP port's XDP program catches them by
// source (address, port, protocol). A TUN port gets the same match from
// policy routing: one rule per half-NAT backend,
//
//	ip rule add priority 9000 from BACKEND ipproto PROTO sport PORT lookup TABLE
//
// and in TABLE (forwarder.port.table) a default route into the device,
// so that only the backend's service port is taken: its other traffic
// (its own outgoing connections, say) is routed as before. The table is
// the forwarder's alone: a rule that looks it up and is not wanted is
// removed, which also clears what a killed forwarder left behind.

// returnPriority orders the rules among the host's: after the rule that
// looks up the local table (priority 0, or 100 where a CNI plugin has
// moved it), so that a reply addressed to the unit itself (to one of its
// health probes) is still delivered locally, and before the main table's
// (32766).
const returnPriority = 9000

// returnRule is a half-NAT backend's service endpoint, whose packets the
// TUN port must receive.
type returnRule struct {
	addr  netip.Addr
	port  uint16
	proto uint8
}

func (r returnRule) String() string {
	return fmt.Sprintf("%s/%d", netip.AddrPortFrom(r.addr, r.port), r.proto)
}

// returnRules lists the endpoints of c's half-NAT backends, each once,
// in a stable order.
func returnRules(c *config.Config) []returnRule {
	var rs []returnRule
	for i := range c.VIPs {
		v := &c.VIPs[i]
		if v.ModeValue() != unit.ModeHalfNAT {
			continue
		}
		for j := range v.Backends {
			b := &v.Backends[j]
			rs = append(rs, returnRule{addr: b.Addr(), port: uint16(b.Port), proto: v.ProtoNum()})
		}
	}
	slices.SortFunc(rs, func(a, b returnRule) int {
		return cmp.Or(a.addr.Compare(b.addr), cmp.Compare(a.port, b.port), cmp.Compare(a.proto, b.proto))
	})
	return slices.Compact(rs)
}

// syncReturnPath makes the kernel's rules, the table's default routes and
// the fragments' nftables table (fragreturn.go) match c's half-NAT
// backends; the caller holds f.mu or owns f alone. Without nf_tables in
// the kernel the ports' rules still work: only fragmented replies and
// ICMP errors reach the clients untranslated, as before the tables, and
// a warning says so.
func (f *Forwarder) syncReturnPath(c *config.Config) error {
	table, want := c.Forwarder.Port.Table, returnRules(c)
	if err := syncReturn(f.tun.Index(), table, want); err != nil {
		return err
	}
	if table != 0 {
		if err := syncFragReturn(f.tun.Name(), table, want, c.Forwarder.Fragments.Timeout); err != nil {
			f.log.Warn().Err(err).Msg("fragmented half-NAT replies will reach clients untranslated")
		}
	}
	return nil
}

// clearReturnPath removes the rules, routes and table syncReturnPath
// added.
func (f *Forwarder) clearReturnPath() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	table := f.cfg.Forwarder.Port.Table
	if table == 0 {
		return nil
	}
	return errors.Join(syncReturn(f.tun.Index(), table, nil), syncFragReturn(f.tun.Name(), table, nil, 0))
}

// syncReturn installs want in table, toward the device link, and removes
// every other rule that looks table up: with any endpoint of a family,
// that family's rule for what fragreturn.go marks too. Table 0 means the
// operator routes the replies: nothing is touched.
func syncReturn(link, table int, want []returnRule) error {
	if table == 0 {
		return nil
	}
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		var w []returnRule
		for _, r := range want {
			if familyOf(r.addr) == fam {
				w = append(w, r)
			}
		}
		if err := syncFamily(link, table, fam, w); err != nil {
			return fmt.Errorf("half-NAT return path: %w", err)
		}
	}
	return nil
}

func syncFamily(link, table, fam int, want []returnRule) error {
	def := defaultRoute(link, table, fam)
	// A route of another device in the table makes it another unit's
	// (or the operator's): sharing it would send one unit's replies
	// into the other, and the clean-up below would delete the other's
	// rules. With nothing to install there is nothing of ours in it
	// either, so leave it alone.
	routes, err := netlink.RouteListFiltered(fam, &netlink.Route{Table: table}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return fmt.Errorf("list the routes of table %d: %w", table, err)
	}
	for _, r := range routes {
		if r.LinkIndex == link || r.Type == unix.RTN_BLACKHOLE {
			continue // ours: the device's route, or its stand-in
		}
		if len(want) == 0 {
			return nil
		}
		return fmt.Errorf("forwarder.port.table: %q: the table already routes %s via %s, not this unit's device: give each unit on a host a table of its own",
			fmt.Sprint(table), routeDst(r), linkName(r.LinkIndex))
	}
	if len(want) > 0 {
		// The stand-in first: while no forwarder has the device (it was
		// killed, and its route went with it) the backends' replies are
		// dropped, not forwarded untranslated by the main table.
		if err := netlink.RouteReplace(tun.Blackhole(def.Dst, table)); err != nil {
			return fmt.Errorf("blackhole route %s in table %d: %w", routeDst(*def), table, err)
		}
		if err := netlink.RouteReplace(def); err != nil {
			return fmt.Errorf("route %s into the device in table %d: %w", routeDst(*def), table, err)
		}
	}
	have, err := netlink.RuleListFiltered(fam, &netlink.Rule{Table: table}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return fmt.Errorf("list the rules that look up table %d: %w", table, err)
	}
	// The rule for what fragreturn.go marks is wanted with any endpoint,
	// keyed by the zero endpoint, which no real one is.
	var marked returnRule
	if len(want) > 0 {
		want = append(slices.Clone(want), marked)
	}
	present := map[returnRule]bool{}
	for _, r := range have {
		k, ok := ruleKey(r)
		if !ok && isMarkRule(r, table) {
			k, ok = marked, true
		}
		if ok && slices.Contains(want, k) && !present[k] {
			present[k] = true
			continue
		}
		if err := netlink.RuleDel(&r); err != nil && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("remove rule %s: %w", r, err)
		}
	}
	for _, k := range want {
		if present[k] {
			continue
		}
		r := markRule(table, fam)
		if k != marked {
			r = newRule(table, k)
		}
		if err := netlink.RuleAdd(r); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("add rule %s: %w", r, err)
		}
	}
	if len(want) == 0 {
		if err := netlink.RouteDel(def); err != nil && !errors.Is(err, unix.ESRCH) && !errors.Is(err, unix.ENODEV) {
			return fmt.Errorf("remove route %s from table %d: %w", routeDst(*def), table, err)
		}
		if err := netlink.RouteDel(tun.Blackhole(def.Dst, table)); err != nil && !errors.Is(err, unix.ESRCH) {
			return fmt.Errorf("remove blackhole route %s from table %d: %w", routeDst(*def), table, err)
		}
	}
	return nil
}

// newRule is the rule that sends k's packets to table.
func newRule(table int, k returnRule) *netlink.Rule {
	r := netlink.NewRule()
	r.Family = familyOf(k.addr)
	r.Priority = returnPriority
	r.Table = table
	r.Src = &net.IPNet{IP: k.addr.AsSlice(), Mask: net.CIDRMask(k.addr.BitLen(), k.addr.BitLen())}
	r.IPProto = int(k.proto)
	r.Sport = netlink.NewRulePortRange(k.port, k.port)
	return r
}

// markRule is the rule that sends the packets fragreturn.go marks to
// table.
func markRule(table, fam int) *netlink.Rule {
	r := netlink.NewRule()
	r.Family = fam
	r.Priority = returnPriority
	r.Table = table
	r.Mark = fragMark(table)
	r.Mask = new(uint32)
	*r.Mask = 0xffffffff
	return r
}

// isMarkRule reports whether r is a rule markRule made.
func isMarkRule(r netlink.Rule, table int) bool {
	return r.Priority == returnPriority && r.Mark == fragMark(table) && r.Src == nil && r.Dst == nil && r.Sport == nil && r.IPProto == 0 && !r.Invert
}

// ruleKey reads back a rule newRule made; ok is false for any other rule.
func ruleKey(r netlink.Rule) (returnRule, bool) {
	if r.Priority != returnPriority || r.Src == nil || r.Dst != nil || r.Sport == nil || r.Sport.Start != r.Sport.End ||
		r.Dport != nil || r.IPProto <= 0 || r.IPProto > 255 || r.IifName != "" || r.OifName != "" || r.Mark != 0 || r.Invert {
		return returnRule{}, false
	}
	addr, ok := netip.AddrFromSlice(r.Src.IP)
	if ones, bits := r.Src.Mask.Size(); !ok || ones != bits {
		return returnRule{}, false
	}
	return returnRule{addr: addr.Unmap(), port: r.Sport.Start, proto: uint8(r.IPProto)}, true
}

// defaultRoute is the table's route of family fam into the device.
func defaultRoute(link, table, fam int) *netlink.Route {
	bits := 32
	if fam == netlink.FAMILY_V6 {
		bits = 128
	}
	return &netlink.Route{LinkIndex: link, Table: table, Scope: netlink.SCOPE_LINK,
		Dst: &net.IPNet{IP: make(net.IP, bits/8), Mask: net.CIDRMask(0, bits)}}
}

func familyOf(a netip.Addr) int {
	if a.Is4() {
		return netlink.FAMILY_V4
	}
	return netlink.FAMILY_V6
}

func routeDst(r netlink.Route) string {
	if r.Dst == nil {
		return "default"
	}
	return r.Dst.String()
}

func linkName(index int) string {
	if l, err := netlink.LinkByIndex(index); err == nil {
		return l.Attrs().Name
	}
	return fmt.Sprintf("interface %d", index)
}
