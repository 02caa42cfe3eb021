package e2e

import (
	"fmt"
	"strings"
	"time"
)

// LB is the standard topology: a client namespace, the unit, and N
// backends, each on its own veth link to the unit, with the unit routing
// between them.
//
//	client 10.0.1.2 ── 10.0.1.1 unit 10.0.1x.1 ── 10.0.1x.2 backend x
//
// The client reaches the VIP range 192.0.2.0/24 through the unit;
// backends use the unit as their default gateway.
type LB struct {
	*Net
	Client   string
	Unit     string
	Backends []string
	// Driver is the forwarder port the topology is built for: tun, or
	// afxdp on the unit's interface UnitIf.
	Driver string
	UnitIf string
	// UnitIP is the unit's address backends reach it by.
	UnitIP string
	// Router is the namespace that routes between the client and the
	// unit: the unit itself on the TUN topology.
	Router string
	// PinDir is forwarder.port.pin_dir for an AF_XDP unit (see
	// Net.BPFDir); "" on the TUN topology.
	PinDir string
	// Switch is the switched topology's bridge namespace ("" on the
	// TUN topology).
	Switch     string
	backendIPs []string
}

// BackendIP returns backend i's address.
func (lb *LB) BackendIP(i int) string { return lb.backendIPs[i] }

// Addresses of the LB topology.
const (
	ClientAddr = "10.0.1.2"
	UnitAddr   = "10.0.1.1"
	VIPRange   = "192.0.2.0/24"
)

// backendAddr returns backend i's address in the TUN topology.
func backendAddr(i int) string { return fmt.Sprintf("10.0.%d.2", 10+i) }

// BackendLink returns the unit's interface toward backend i.
func BackendLink(i int) string { return fmt.Sprintf("ub%d", i) }

// NewLB builds the topology. Close removes it.
func NewLB(tag string, backends int) (*LB, error) {
	n, err := New(tag)
	if err != nil {
		return nil, err
	}
	lb := &LB{Net: n, Driver: "tun", UnitIf: "tether0", UnitIP: UnitAddr}
	if err := lb.build(backends); err != nil {
		n.Close()
		return nil, err
	}
	return lb, nil
}

func (lb *LB) build(backends int) error {
	var err error
	if lb.Client, err = lb.NS("c"); err != nil {
		return err
	}
	if lb.Unit, err = lb.NS("u"); err != nil {
		return err
	}
	lb.Router = lb.Unit
	// The unit forwards, and must accept packets whose source lies
	// behind another interface: Tether writes translated packets into its
	// TUN device with the client's address as source.
	if err := lb.Sysctl(lb.Unit, "net.ipv4.ip_forward=1", "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0"); err != nil {
		return err
	}
	if err := lb.Veth(lb.Client, "c0", []string{ClientAddr + "/24"}, lb.Unit, "u0", []string{UnitAddr + "/24"}); err != nil {
		return err
	}
	if err := lb.Run(lb.Client, "ip", "route", "add", VIPRange, "via", UnitAddr); err != nil {
		return err
	}
	for i := range backends {
		ns, err := lb.NS(fmt.Sprintf("b%d", i))
		if err != nil {
			return err
		}
		lb.Backends = append(lb.Backends, ns)
		lb.backendIPs = append(lb.backendIPs, backendAddr(i))
		if err := lb.Sysctl(ns, "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0"); err != nil {
			return err
		}
		gw := fmt.Sprintf("10.0.%d.1", 10+i)
		if err := lb.Veth(ns, "e0", []string{backendAddr(i) + "/24"}, lb.Unit, BackendLink(i), []string{gw + "/24"}); err != nil {
			return err
		}
		if err := lb.Run(ns, "ip", "route", "add", "default", "via", gw); err != nil {
			return err
		}
	}
	return nil
}

// StartBackends starts the HTTP server role in every backend, named
// b0, b1, ..., listening on port.
func (lb *LB) StartBackends(port int) error {
	return lb.StartServers("httpd", fmt.Sprintf("0.0.0.0:%d", port))
}

// StartServers starts a server role (httpd, udpecho) in every backend,
// named b0, b1, ..., listening on listen, and waits until each is ready.
func (lb *LB) StartServers(role, listen string) error {
	for i, ns := range lb.Backends {
		name := fmt.Sprintf("b%d", i)
		p, err := lb.Start(ns, role+" "+name, RoleCommand(role, name, listen), Self())
		if err != nil {
			return err
		}
		if err := p.WaitFor(Ready, 10*time.Second); err != nil {
			return err
		}
	}
	return nil
}

// StartIPIPDecap makes backend i accept IP-in-IP for vip: the decapsulator
// role writes inner packets to a TUN device, and the VIP is a local
// address so the backend answers from it directly (DSR).
func (lb *LB) StartIPIPDecap(i int, vip string) error {
	ns := lb.Backends[i]
	prefix := vip + "/32"
	if strings.Contains(vip, ":") {
		prefix = vip + "/128"
	}
	if err := lb.Run(ns, "ip", "addr", "add", prefix, "dev", "lo"); err != nil {
		return err
	}
	p, err := lb.Start(ns, fmt.Sprintf("ipipd b%d", i), RoleCommand("ipipd", "dec0"), Self())
	if err != nil {
		return err
	}
	if err := p.WaitFor(Ready, 10*time.Second); err != nil {
		return err
	}
	return lb.Sysctl(ns, "net.ipv4.conf.dec0.rp_filter=0")
}

// StartHTTP starts one more HTTP server role in backend i, on port.
func (lb *LB) StartHTTP(i, port int) error {
	p, err := lb.Start(lb.Backends[i], fmt.Sprintf("httpd b%d:%d", i, port), RoleCommand("httpd", fmt.Sprintf("b%d", i), fmt.Sprintf("0.0.0.0:%d", port)), Self())
	if err != nil {
		return err
	}
	return p.WaitFor(Ready, 10*time.Second)
}
