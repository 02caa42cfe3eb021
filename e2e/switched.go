package e2e

import "fmt"

// NewSwitchedLB builds the topology for an AF_XDP unit, which sends and
// receives on one interface: the unit, the backends and a router share a
// bridge; the client sits behind the router.
//
//	client 10.0.1.2 ── 10.0.1.1 router 10.0.0.254 ─┐
//	                               unit 10.0.0.1 ──┤ bridge (10.0.0.0/24)
//	                       backend x 10.0.0.1x ────┘
//
// The router sends the VIP range to the unit; backends use the unit as
// their gateway, so half-NAT replies pass it. Senders have checksum and
// segmentation offload turned off: a veth hands locally generated packets
// on with a partial checksum (and as 64 KiB super-packets), which AF_XDP
// passes through unchanged and a real NIC would never deliver.
func NewSwitchedLB(tag string, backends int) (*LB, error) {
	return NewSwitchedLBWith(tag, backends, SwitchedOptions{})
}

// SwitchedOptions varies the switched topology for a benchmark that runs
// other load balancers on it too.
type SwitchedOptions struct {
	// Driver is the forwarder port the unit is configured for: "afxdp"
	// (the default, on the unit's veth u0) or "tun" (a TUN device
	// tether0, with u0 left to the kernel).
	Driver string
	// KeepOffloads leaves every interface at the kernel's defaults
	// instead of turning the senders' offloads off: what a kernel or
	// proxy peer is measured with. SenderOffloadsOff applies the AF_XDP
	// setting afterwards.
	KeepOffloads bool
	// UnitQueues gives the unit's veth, and its peer on the bridge, that
	// many RX and TX queues (forwarder.port.queues); 0: one.
	UnitQueues int
}

// NewSwitchedLBWith is NewSwitchedLB with options.
func NewSwitchedLBWith(tag string, backends int, o SwitchedOptions) (*LB, error) {
	n, err := New(tag)
	if err != nil {
		return nil, err
	}
	lb := &LB{Net: n, Driver: "afxdp", UnitIf: switchedUnitIf, UnitIP: "10.0.0.1"}
	switch o.Driver {
	case "", "afxdp":
	case "tun":
		lb.Driver, lb.UnitIf = "tun", "tether0"
	default:
		n.Close()
		return nil, fmt.Errorf("e2e: switched topology: unknown driver %q", o.Driver)
	}
	err = lb.buildSwitched(backends, o.UnitQueues)
	if err == nil && !o.KeepOffloads {
		_, err = lb.SenderOffloadsOff()
	}
	if err != nil {
		n.Close()
		return nil, err
	}
	return lb, nil
}

// switchedUnitIf is the unit's veth on the bridge.
const switchedUnitIf = "u0"

// SenderOffloadsOff turns TX checksum offload, TSO and GSO off on the
// interfaces that send toward the unit in the switched topology (the
// client's and every backend's veth), as NewSwitchedLB does, and returns
// what it changed, for a report.
func (lb *LB) SenderOffloadsOff() ([]string, error) {
	type end struct{ ns, ifc, label string }
	ends := []end{{lb.Client, "c0", "client c0"}}
	for i, ns := range lb.Backends {
		ends = append(ends, end{ns, "e0", fmt.Sprintf("backend b%d e0", i)})
	}
	var changed []string
	for _, e := range ends {
		if err := lb.Run(e.ns, "ethtool", "-K", e.ifc, "tx", "off", "tso", "off", "gso", "off"); err != nil {
			return changed, err
		}
		changed = append(changed, e.label)
	}
	return changed, nil
}

func (lb *LB) buildSwitched(backends, unitQueues int) error {
	sw, err := lb.NS("s")
	if err != nil {
		return err
	}
	lb.Switch = sw
	if err := lb.Run(sw, "ip", "link", "add", "br0", "type", "bridge"); err != nil {
		return err
	}
	// The switch forwards frames and does nothing else, as a switch
	// does. Where br_netfilter is loaded (by anything on the machine),
	// every bridged frame would otherwise cross this namespace's
	// iptables hooks, a cost charged to whichever core sends the frame
	// (the unit's, for what it forwards). -e: without the module these
	// keys do not exist, and there is nothing to turn off.
	if err := lb.Run(sw, "sysctl", "-qew", "net.bridge.bridge-nf-call-iptables=0",
		"net.bridge.bridge-nf-call-ip6tables=0", "net.bridge.bridge-nf-call-arptables=0"); err != nil {
		return err
	}
	if err := lb.Run(sw, "ip", "link", "set", "br0", "up"); err != nil {
		return err
	}
	port := 0
	attach := func(ns, ifc string, addrs []string, queues int) error {
		port++
		sp := fmt.Sprintf("p%d", port)
		if err := lb.VethQueues(ns, ifc, addrs, sw, sp, nil, queues); err != nil {
			return err
		}
		return lb.Run(sw, "ip", "link", "set", sp, "master", "br0")
	}
	router, err := lb.NS("r")
	if err != nil {
		return err
	}
	lb.Router = router
	if lb.PinDir, err = lb.BPFDir(); err != nil {
		return err
	}
	if lb.Client, err = lb.NS("c"); err != nil {
		return err
	}
	if lb.Unit, err = lb.NS("u"); err != nil {
		return err
	}
	// No ICMP redirects: the router sends replies to a nat unit's SNAT
	// address back out of the port they came in on (backends and units
	// share the bridge), and a redirect would have the backends send
	// them to that unit directly, past the router's later changes (a
	// dead unit's SNAT addresses moved to a survivor), as a routing
	// protocol's router does not.
	if err := lb.Sysctl(router, "net.ipv4.ip_forward=1", "net.ipv4.conf.all.send_redirects=0", "net.ipv4.conf.default.send_redirects=0"); err != nil {
		return err
	}
	if err := lb.Sysctl(lb.Unit, "net.ipv4.ip_forward=1", "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0"); err != nil {
		return err
	}
	if err := attach(router, "r0", []string{"10.0.0.254/24"}, 0); err != nil {
		return err
	}
	if err := attach(lb.Unit, switchedUnitIf, []string{lb.UnitIP + "/24"}, unitQueues); err != nil {
		return err
	}
	if err := lb.Veth(lb.Client, "c0", []string{ClientAddr + "/24"}, router, "rc0", []string{"10.0.1.1/24"}); err != nil {
		return err
	}
	steps := [][]string{
		{lb.Client, "ip", "route", "add", "default", "via", "10.0.1.1"},
		{router, "ip", "route", "add", VIPRange, "via", lb.UnitIP},
		{router, "ip", "route", "add", "198.51.100.0/24", "via", lb.UnitIP},
		{lb.Unit, "ip", "route", "add", "default", "via", "10.0.0.254"},
	}
	for _, s := range steps {
		if err := lb.Run(s[0], s[1:]...); err != nil {
			return err
		}
	}
	for i := range backends {
		ns, err := lb.NS(fmt.Sprintf("b%d", i))
		if err != nil {
			return err
		}
		ip := fmt.Sprintf("10.0.0.%d", 10+i)
		lb.Backends = append(lb.Backends, ns)
		lb.backendIPs = append(lb.backendIPs, ip)
		if err := lb.Sysctl(ns, "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0"); err != nil {
			return err
		}
		if err := attach(ns, "e0", []string{ip + "/24"}, 0); err != nil {
			return err
		}
		if err := lb.Run(ns, "ip", "route", "add", "default", "via", lb.UnitIP); err != nil {
			return err
		}
	}
	return nil
}

// AddUnit attaches another unit to the switched topology's bridge, as
// several units sharing VIPs are: a namespace whose interface u<i> has
// 10.0.0.<1+i> (i from 1; the first unit is lb.Unit on u0 at
// 10.0.0.1), forwarding, and the router as its gateway. Each unit's
// interface has its own name, so that the forwarders' XDP pins in
// lb.PinDir do not collide.
func (lb *LB) AddUnit(i int) (ns, ifc, ip string, err error) {
	if lb.Switch == "" || i < 1 {
		return "", "", "", fmt.Errorf("e2e: AddUnit(%d) needs the switched topology and i ≥ 1", i)
	}
	if ns, err = lb.NS(fmt.Sprintf("u%d", i+1)); err != nil {
		return "", "", "", err
	}
	ifc, ip = fmt.Sprintf("u%d", i), fmt.Sprintf("10.0.0.%d", 1+i)
	if err := lb.Sysctl(ns, "net.ipv4.ip_forward=1", "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0"); err != nil {
		return "", "", "", err
	}
	sp := fmt.Sprintf("pu%d", i)
	if err := lb.Veth(ns, ifc, []string{ip + "/24"}, lb.Switch, sp, nil); err != nil {
		return "", "", "", err
	}
	if err := lb.Run(lb.Switch, "ip", "link", "set", sp, "master", "br0"); err != nil {
		return "", "", "", err
	}
	if err := lb.Run(ns, "ip", "route", "add", "default", "via", "10.0.0.254"); err != nil {
		return "", "", "", err
	}
	return ns, ifc, ip, nil
}

// RouteSNAT has the router send replies to a nat SNAT address to the
// unit at unitIP: each unit's own addresses to it, and a dead unit's to
// the survivor that takes its connections over. Like SpreadVIPs, the
// router's view of the units is set here alone.
func (lb *LB) RouteSNAT(addr, unitIP string) error {
	return lb.Run(lb.Router, "ip", "route", "replace", addr+"/32", "via", unitIP)
}

// SpreadVIPs has the router send the VIP range to every unit in units
// (their addresses on the bridge) over equal-cost paths, hashing each
// flow's addresses, protocol and ports, as an ECMP router in front of
// several units does: a connection stays on one unit while the set of
// paths holds. The router's view of the units is set here alone, so that
// a routing protocol can take its place.
//
// The hash is the custom policy (3) over the header's five fields
// (0x37), not policy 1: policy 1 takes a packet's precomputed L4 hash
// when it has one, and a packet from a socket in another namespace
// arrives over the veth with the socket's transmit hash, which Linux
// changes on every SYN retransmission and retransmission timeout. The
// router would then move a connection between units whenever the client
// retransmits, which no router that sees only the wire does.
func (lb *LB) SpreadVIPs(units []string) error {
	if err := lb.Sysctl(lb.Router, "net.ipv4.fib_multipath_hash_policy=3", "net.ipv4.fib_multipath_hash_fields=0x0037"); err != nil {
		return err
	}
	args := []string{"ip", "route", "replace", VIPRange}
	for _, u := range units {
		args = append(args, "nexthop", "via", u)
	}
	return lb.Run(lb.Router, args...)
}
