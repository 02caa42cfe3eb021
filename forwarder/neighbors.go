package forwarder

import (
	"context"
	"net"
	"net/netip"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/tetherlb/tether/config"
	"github.com/tetherlb/tether/dataplane"
	"github.com/tetherlb/tether/dataplane/header"
)

// With AF_XDP the forwarder writes Ethernet frames itself, so it needs
// the next hop's MAC for every packet. It takes them from the kernel's
// neighbour table on the port's interface (the kernel keeps answering and
// sending ARP and neighbour discovery, which the XDP program passes), and
// keeps them current from netlink notifications. A next hop the workers
// found no MAC for is resolved by the kernel on request: a datagram to
// the discard port makes it send ARP or a neighbour solicitation.

// neighborRefresh is how often changes are pushed to the workers and
// missed next hops collected.
const neighborRefresh = 100 * time.Millisecond

// kernelNeighbors reads the neighbour table and default gateways of the
// interface, then applies the configuration's static entries and MACs.
func kernelNeighbors(ifindex int, self net.HardwareAddr, c *config.Config) (*dataplane.Neighbors, error) {
	n := dataplane.NewNeighbors()
	if len(self) == 6 {
		n.SetSelf(header.MAC(self))
	}
	entries, err := netlink.NeighList(ifindex, netlink.FAMILY_ALL)
	if err != nil {
		return nil, err
	}
	known := map[netip.Addr]header.MAC{}
	for _, e := range entries {
		if len(e.HardwareAddr) != 6 || e.State&(netlink.NUD_INCOMPLETE|netlink.NUD_FAILED|netlink.NUD_NOARP) != 0 {
			continue
		}
		a, ok := netip.AddrFromSlice(e.IP)
		if !ok {
			continue
		}
		a = a.Unmap()
		known[a] = header.MAC(e.HardwareAddr)
		n.Add(a, header.MAC(e.HardwareAddr))
	}
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		routes, err := netlink.RouteListFiltered(fam, &netlink.Route{LinkIndex: ifindex}, netlink.RT_FILTER_OIF)
		if err != nil {
			return nil, err
		}
		for _, r := range routes {
			if r.Dst != nil && !isDefault(r.Dst) || r.Gw == nil {
				continue
			}
			if gw, ok := netip.AddrFromSlice(r.Gw); ok {
				if mac, ok := known[gw.Unmap()]; ok {
					if fam == netlink.FAMILY_V4 {
						n.SetGateway(4, mac)
					} else {
						n.SetGateway(6, mac)
					}
				}
			}
		}
	}
	if m, ok := c.L2.Gateway(); ok {
		n.SetGateway(4, m)
		n.SetGateway(6, m)
	}
	if m, ok := c.Unit.HardwareAddr(); ok {
		n.SetSelf(m)
	}
	for i := range c.L2.Neighbors {
		nb := &c.L2.Neighbors[i]
		n.Add(nb.Addr(), nb.HardwareAddr())
	}
	return n, nil
}

func isDefault(n *net.IPNet) bool {
	ones, _ := n.Mask.Size()
	return ones == 0
}

// watchNeighbors keeps the workers' neighbour view current until ctx
// ends.
func (f *Forwarder) watchNeighbors(ctx context.Context) {
	updates := make(chan netlink.NeighUpdate, 64)
	routes := make(chan netlink.RouteUpdate, 64)
	done := make(chan struct{})
	defer close(done)
	if err := netlink.NeighSubscribe(updates, done); err != nil {
		f.log.Warn().Err(err).Msg("neighbour notifications unavailable; polling")
	}
	if err := netlink.RouteSubscribe(routes, done); err != nil {
		f.log.Warn().Err(err).Msg("route notifications unavailable; polling")
	}
	tick := time.NewTicker(neighborRefresh)
	defer tick.Stop()
	dirty, polls := false, 0
	var missed []netip.Addr
	for {
		select {
		case <-ctx.Done():
			return
		case <-updates:
			dirty = true
		case <-routes:
			dirty = true
		case <-tick.C:
			// Poll now and then as well: notifications can be lost when
			// the socket's buffer overflows.
			if polls++; polls%50 == 0 {
				dirty = true
			}
			missed = f.collectMissed(ctx, missed[:0])
			for _, a := range missed {
				resolve(a)
			}
			if dirty {
				dirty = false
				if err := f.refreshNeighbors(ctx); err != nil {
					f.log.Warn().Err(err).Msg("neighbour refresh")
				}
			}
		}
	}
}

// collectMissed gathers the next hops the workers had no MAC for.
func (f *Forwarder) collectMissed(ctx context.Context, dst []netip.Addr) []netip.Addr {
	for _, w := range f.workers {
		_ = w.Do(ctx, func(p *dataplane.Pipeline) { dst = p.TakeMissed(dst) })
	}
	return dst
}

// refreshNeighbors reads the kernel's table and pushes it to the workers.
func (f *Forwarder) refreshNeighbors(ctx context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	n, err := kernelNeighbors(f.ifindex, f.ifmac, f.cfg)
	if err != nil {
		return err
	}
	f.neigh = n
	return f.push(ctx, f.snap.WithNeighbors(n))
}

// resolve asks the kernel to resolve addr's MAC (or its gateway's) by
// sending it a datagram on the discard port.
func resolve(a netip.Addr) {
	a = a.Unmap()
	fam := unix.AF_INET6
	var sa unix.Sockaddr = &unix.SockaddrInet6{Port: 9, Addr: a.As16()}
	if a.Is4() {
		fam = unix.AF_INET
		sa = &unix.SockaddrInet4{Port: 9, Addr: a.As4()}
	}
	fd, err := unix.Socket(fam, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return
	}
	defer unix.Close(fd)
	_ = unix.Sendto(fd, nil, 0, sa)
}

// warmNeighbors asks the kernel to resolve every backend and gateway now,
// and waits up to timeout for the answers, so that the first packets to
// them are not dropped for want of a MAC.
func (f *Forwarder) warmNeighbors(timeout time.Duration) {
	var want []netip.Addr
	for i := range f.cfg.VIPs {
		for j := range f.cfg.VIPs[i].Backends {
			want = append(want, f.cfg.VIPs[i].Backends[j].Addr())
		}
	}
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		routes, _ := netlink.RouteListFiltered(fam, &netlink.Route{LinkIndex: f.ifindex}, netlink.RT_FILTER_OIF)
		for _, r := range routes {
			if gw, ok := netip.AddrFromSlice(r.Gw); ok && r.Gw != nil {
				want = append(want, gw.Unmap())
			}
		}
	}
	for _, a := range want {
		resolve(a)
	}
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		n, err := kernelNeighbors(f.ifindex, f.ifmac, f.cfg)
		if err != nil {
			return
		}
		f.neigh = n
		f.snap = f.snap.WithNeighbors(n)
		if n.Has(want) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	f.log.Warn().Msg("some backends or gateways did not resolve; their first packets will wait for ARP")
}
