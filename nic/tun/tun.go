package tun

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"time"

	"github.com/songgao/water"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/tetherlb/tether/nic"
)

// Config describes the device to create.
type Config struct {
	// Name of the device, e.g. "tether0".
	Name string
	// MTU of the device; 0 keeps the kernel's default (1500).
	MTU int
	// Buffers is how many frames the port can lend at once.
	Buffers int
	// QueueLength is the device's txqueuelen: how many packets the
	// kernel queues for the port; 0 keeps the kernel's default (500).
	QueueLength int
}

// Port is a nic.Port on a TUN device.
type Port struct {
	name   string
	ifce   *water.Interface
	file   *os.File // keeps fd open
	fd     int
	link   netlink.Link
	bufs   [][]byte
	free   []uint64
	stats  nic.Stats
	routes []netlink.Route
	wake   nic.Wakeup
}

var _ nic.Port = (*Port)(nil)

// bufSize holds the largest packet a TUN device hands over (64 KiB) after
// the headroom.
const bufSize = nic.Headroom + 65536

// Open creates the TUN device and brings it up. The device disappears
// when the port is closed (or the process dies).
func Open(c Config) (*Port, error) {
	if c.Name == "" || len(c.Name) >= unix.IFNAMSIZ {
		return nil, fmt.Errorf("tun: device name %q: want 1 to %d characters", c.Name, unix.IFNAMSIZ-1)
	}
	ifce, err := water.New(water.Config{DeviceType: water.TUN, PlatformSpecificParams: water.PlatformSpecificParams{Name: c.Name}})
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("tun: create %s: /dev/net/tun is missing (load the tun module, or use the afxdp port): %w", c.Name, err)
		}
		if errors.Is(err, os.ErrPermission) || errors.Is(err, unix.EPERM) {
			return nil, fmt.Errorf("tun: create %s: permission denied (needs CAP_NET_ADMIN): %w", c.Name, err)
		}
		return nil, fmt.Errorf("tun: create %s: %w", c.Name, err)
	}
	wake, err := nic.NewWakeup()
	if err != nil {
		ifce.Close()
		return nil, fmt.Errorf("tun: %s: %w", c.Name, err)
	}
	p := &Port{name: ifce.Name(), ifce: ifce, wake: wake}
	f, ok := ifce.ReadWriteCloser.(*os.File)
	if !ok {
		ifce.Close()
		return nil, fmt.Errorf("tun: %s: the device is not a file", c.Name)
	}
	p.file = f
	rc, err := f.SyscallConn()
	if err == nil {
		err = rc.Control(func(fd uintptr) { p.fd = int(fd) })
	}
	if err != nil {
		ifce.Close()
		return nil, fmt.Errorf("tun: %s: get descriptor: %w", c.Name, err)
	}
	if p.link, err = netlink.LinkByName(p.name); err != nil {
		ifce.Close()
		return nil, fmt.Errorf("tun: %s: %w", p.name, err)
	}
	if c.MTU > 0 {
		if err := netlink.LinkSetMTU(p.link, c.MTU); err != nil {
			ifce.Close()
			return nil, fmt.Errorf("tun: %s: set MTU %d: %w", p.name, c.MTU, err)
		}
	}
	if c.QueueLength > 0 {
		if err := netlink.LinkSetTxQLen(p.link, c.QueueLength); err != nil {
			ifce.Close()
			return nil, fmt.Errorf("tun: %s: set queue length %d: %w", p.name, c.QueueLength, err)
		}
	}
	if err := netlink.LinkSetUp(p.link); err != nil {
		ifce.Close()
		return nil, fmt.Errorf("tun: %s: bring up: %w", p.name, err)
	}
	// Tether writes packets into the device whose source is the unit's
	// own address (tunnel and ipip headers) or lies behind another
	// interface (translated client packets): without these the kernel
	// drops them as martians or as failing the reverse-path check.
	for _, s := range []struct{ key, val string }{{"accept_local", "1"}, {"rp_filter", "0"}} {
		path := "/proc/sys/net/ipv4/conf/" + p.name + "/" + s.key
		if err := os.WriteFile(path, []byte(s.val), 0o644); err != nil {
			ifce.Close()
			return nil, fmt.Errorf("tun: %s: set %s: %w", p.name, s.key, err)
		}
	}
	n := c.Buffers
	if n <= 0 {
		n = 256
	}
	p.bufs = make([][]byte, n)
	for i := range p.bufs {
		p.bufs[i] = make([]byte, bufSize)
		p.free = append(p.free, uint64(i))
	}
	return p, nil
}

// Route sends traffic for prefix into the device: the VIPs and SNAT
// addresses Tether owns. The route goes away with the device; a
// blackhole route for the prefix, of lower preference, stays: when the
// forwarder is killed (and the device with it), the kernel drops the
// prefix's traffic until the next forwarder makes the device again,
// where it would otherwise answer clients "network unreachable" and fail
// their new connections. Close removes it.
func (p *Port) Route(prefix netip.Prefix) error {
	if err := netlink.RouteReplace(Blackhole(ipNet(prefix), 0)); err != nil {
		return fmt.Errorf("tun: %s: blackhole route %s: %w", p.name, prefix, err)
	}
	r := netlink.Route{LinkIndex: p.link.Attrs().Index, Dst: ipNet(prefix), Scope: netlink.SCOPE_LINK}
	if err := netlink.RouteReplace(&r); err != nil {
		return fmt.Errorf("tun: %s: route %s: %w", p.name, prefix, err)
	}
	p.routes = append(p.routes, r)
	return nil
}

// BlackholeMetric is the preference of the routes that stand in for the
// device's while no forwarder has it: below any route the device's own
// (IPv6 routes default to 1024).
const BlackholeMetric = 1 << 20

// Blackhole is the route that drops dst's traffic in table (0: main)
// while no forwarder has the device.
func Blackhole(dst *net.IPNet, table int) *netlink.Route {
	return &netlink.Route{Dst: dst, Type: unix.RTN_BLACKHOLE, Priority: BlackholeMetric, Table: table}
}

// Unroute removes a route Route added, and its blackhole.
func (p *Port) Unroute(prefix netip.Prefix) error {
	r := netlink.Route{LinkIndex: p.link.Attrs().Index, Dst: ipNet(prefix), Scope: netlink.SCOPE_LINK}
	if err := netlink.RouteDel(&r); err != nil {
		return fmt.Errorf("tun: %s: remove route %s: %w", p.name, prefix, err)
	}
	if err := netlink.RouteDel(Blackhole(ipNet(prefix), 0)); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("tun: %s: remove blackhole route %s: %w", p.name, prefix, err)
	}
	return nil
}

// Index returns the device's interface index.
func (p *Port) Index() int { return p.link.Attrs().Index }

// Name implements nic.Port.Name.
func (p *Port) Name() string { return p.name }

// LinkType implements nic.Port.LinkType: TUN frames are IP packets.
func (p *Port) LinkType() nic.LinkType { return nic.LinkIP }

// Receive implements nic.Port.Receive.
func (p *Port) Receive(frames []nic.Frame) (int, error) {
	n := 0
	for n < len(frames) && len(p.free) > 0 {
		h := p.free[len(p.free)-1]
		buf := p.bufs[h]
		m, err := unix.Read(p.fd, buf[nic.Headroom:])
		if err != nil {
			if err == unix.EAGAIN || err == unix.EINTR {
				break
			}
			return n, fmt.Errorf("tun: %s: read: %w", p.name, err)
		}
		if m == 0 {
			break
		}
		p.free = p.free[:len(p.free)-1]
		frames[n] = nic.Frame{Buf: buf, Off: nic.Headroom, Len: m, Handle: h}
		p.stats.RxFrames++
		p.stats.RxBytes += uint64(m)
		n++
	}
	return n, nil
}

// Transmit implements nic.Port.Transmit: one write per packet.
func (p *Port) Transmit(frames []nic.Frame) (int, error) {
	sent := 0
	var first error
	for i := range frames {
		fr := &frames[i]
		if _, err := unix.Write(p.fd, fr.Data()); err != nil {
			// A full device queue (EAGAIN) or a packet the kernel
			// refuses loses that packet, not the batch.
			p.stats.TxDropped++
			if first == nil && err != unix.EAGAIN && err != unix.ENOBUFS {
				first = fmt.Errorf("tun: %s: write: %w", p.name, err)
			}
		} else {
			sent++
			p.stats.TxFrames++
			p.stats.TxBytes += uint64(fr.Len)
		}
		p.free = append(p.free, fr.Handle)
	}
	return sent, first
}

// Release implements nic.Port.Release.
func (p *Port) Release(frames []nic.Frame) {
	for i := range frames {
		p.free = append(p.free, frames[i].Handle)
	}
}

// Wait blocks until the device has a packet, Wake is called, or timeout
// passes.
func (p *Port) Wait(timeout time.Duration) error {
	if err := p.wake.Poll(p.fd, timeout); err != nil {
		return fmt.Errorf("tun: %s: poll: %w", p.name, err)
	}
	return nil
}

// Wake implements nic.Waiter.
func (p *Port) Wake() { p.wake.Wake() }

// Stats implements nic.Port.Stats.
func (p *Port) Stats() nic.Stats {
	s := p.stats
	s.KernelDropped = p.KernelDropped()
	return s
}

// KernelDropped implements nic.KernelDropper: packets the kernel routed
// into the device but dropped because its queue (txqueuelen) was full,
// the device's transmit drops seen from the kernel's side. It asks
// netlink, in the network namespace of the calling thread (sysfs would
// show the one it was mounted in). Safe from any goroutine.
func (p *Port) KernelDropped() uint64 {
	l, err := netlink.LinkByIndex(p.link.Attrs().Index)
	if err != nil || l.Attrs().Statistics == nil {
		return 0
	}
	return l.Attrs().Statistics.TxDropped
}

// Close deletes the device and its routes.
func (p *Port) Close() error {
	// A clean stop: the prefixes are no longer Tether's to drop.
	var errs []error
	for _, r := range p.routes {
		if err := netlink.RouteDel(Blackhole(r.Dst, 0)); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("tun: %s: remove blackhole route %s: %w", p.name, r.Dst, err))
		}
	}
	if err := p.ifce.Close(); err != nil {
		errs = append(errs, fmt.Errorf("tun: %s: close: %w", p.name, err))
	}
	if err := p.wake.Close(); err != nil {
		errs = append(errs, fmt.Errorf("tun: %s: close: %w", p.name, err))
	}
	return errors.Join(errs...)
}

func ipNet(p netip.Prefix) *net.IPNet {
	p = p.Masked()
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// WriteRaw writes one packet outside the batch interface (for tools).
func (p *Port) WriteRaw(pkt []byte) error {
	for {
		_, err := unix.Write(p.fd, pkt)
		if err == unix.EAGAIN {
			if err := p.waitWritable(); err != nil {
				return err
			}
			continue
		}
		if err != nil {
			return fmt.Errorf("tun: %s: write: %w", p.name, err)
		}
		return nil
	}
}

func (p *Port) waitWritable() error {
	fds := []unix.PollFd{{Fd: int32(p.fd), Events: unix.POLLOUT}}
	if _, err := unix.Poll(fds, 1000); err != nil && err != unix.EINTR {
		return fmt.Errorf("tun: %s: poll: %w", p.name, err)
	}
	return nil
}
