package tun

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"time"

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
	// Offload asks the kernel for virtio-net headers: it hands over
	// packets with their transport checksum left partial and TCP
	// super-packets of up to 64 KiB whole (GSO), and takes them back the
	// same way (see nic.Offload).
	Offload bool
}

// Port is a nic.Port on a TUN device.
type Port struct {
	name string
	fd   int
	link netlink.Link
	nic.Buffers
	stats   nic.Stats
	routes  []netlink.Route
	wake    nic.Wakeup
	offload bool
	// seg is where Transmit builds the segments of a super-packet the
	// kernel cannot cut itself (see segment).
	seg []byte
}

var (
	_ nic.Port      = (*Port)(nil)
	_ nic.Allocator = (*Port)(nil)
)

// bufSize holds the largest packet a TUN device hands over (64 KiB) after
// the headroom.
const bufSize = nic.Headroom + 65536

// Open creates the TUN device and brings it up. The device disappears
// when the port is closed (or the process dies).
func Open(c Config) (*Port, error) {
	if c.Name == "" || len(c.Name) >= unix.IFNAMSIZ {
		return nil, fmt.Errorf("tun: device name %q: want 1 to %d characters", c.Name, unix.IFNAMSIZ-1)
	}
	fd, err := create(c.Name, c.Offload)
	if err != nil {
		return nil, err
	}
	wake, err := nic.NewWakeup()
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("tun: %s: %w", c.Name, err)
	}
	p := &Port{name: c.Name, fd: fd, wake: wake, offload: c.Offload}
	fail := func(err error) (*Port, error) {
		unix.Close(fd)
		wake.Close()
		return nil, err
	}
	if p.link, err = netlink.LinkByName(p.name); err != nil {
		return fail(fmt.Errorf("tun: %s: %w", p.name, err))
	}
	if c.MTU > 0 {
		if err := netlink.LinkSetMTU(p.link, c.MTU); err != nil {
			return fail(fmt.Errorf("tun: %s: set MTU %d: %w", p.name, c.MTU, err))
		}
	}
	if c.QueueLength > 0 {
		if err := netlink.LinkSetTxQLen(p.link, c.QueueLength); err != nil {
			return fail(fmt.Errorf("tun: %s: set queue length %d: %w", p.name, c.QueueLength, err))
		}
	}
	if c.Offload {
		// Room in every super-packet for the IP-in-IP header Tether may
		// put in front: the kernel cuts bigger ones before the device.
		if err := netlink.LinkSetGSOMaxSize(p.link, gsoMax); err != nil {
			return fail(fmt.Errorf("tun: %s: set GSO size %d: %w", p.name, gsoMax, err))
		}
	}
	if err := netlink.LinkSetUp(p.link); err != nil {
		return fail(fmt.Errorf("tun: %s: bring up: %w", p.name, err))
	}
	// Tether writes packets into the device whose source is the unit's
	// own address (tunnel and ipip headers) or lies behind another
	// interface (translated client packets): without these the kernel
	// drops them as martians or as failing the reverse-path check.
	for _, s := range []struct{ key, val string }{{"accept_local", "1"}, {"rp_filter", "0"}} {
		path := "/proc/sys/net/ipv4/conf/" + p.name + "/" + s.key
		if err := os.WriteFile(path, []byte(s.val), 0o644); err != nil {
			return fail(fmt.Errorf("tun: %s: set %s: %w", p.name, s.key, err))
		}
	}
	n := c.Buffers
	if n <= 0 {
		n = 256
	}
	p.Buffers = nic.NewBuffers(n, bufSize)
	if c.Offload {
		p.seg = make([]byte, vnetHdrLen+segMax)
	}
	return p, nil
}

// create opens /dev/net/tun and makes the device: IP packets without
// the packet-information prefix and, with offload, behind a virtio-net
// header, with checksum and TCP segmentation offload announced so that
// the kernel keeps super-packets whole.
func create(name string, offload bool) (int, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENODEV) {
			return -1, fmt.Errorf("tun: create %s: /dev/net/tun is missing (load the tun module, or use the afxdp port): %w", name, err)
		}
		if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) {
			return -1, fmt.Errorf("tun: create %s: permission denied (needs CAP_NET_ADMIN): %w", name, err)
		}
		return -1, fmt.Errorf("tun: create %s: %w", name, err)
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("tun: create %s: %w", name, err)
	}
	flags := uint16(unix.IFF_TUN | unix.IFF_NO_PI)
	if offload {
		flags |= unix.IFF_VNET_HDR
	}
	ifr.SetUint16(flags)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		if errors.Is(err, unix.EPERM) {
			return -1, fmt.Errorf("tun: create %s: permission denied (needs CAP_NET_ADMIN): %w", name, err)
		}
		return -1, fmt.Errorf("tun: create %s: %w", name, err)
	}
	if offload {
		if err := unix.IoctlSetPointerInt(fd, unix.TUNSETVNETHDRSZ, vnetHdrLen); err != nil {
			unix.Close(fd)
			return -1, fmt.Errorf("tun: %s: virtio-net header size: %w", name, err)
		}
		if err := unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, unix.TUN_F_CSUM|unix.TUN_F_TSO4|unix.TUN_F_TSO6|unix.TUN_F_TSO_ECN); err != nil {
			unix.Close(fd)
			return -1, fmt.Errorf("tun: %s: checksum and segmentation offload: %w", name, err)
		}
	}
	return fd, nil
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

// Receive implements nic.Port.Receive. With offload, the virtio-net
// header in front of each packet is read into the frame's Offload.
func (p *Port) Receive(frames []nic.Frame) (int, error) {
	n := 0
	hl := p.hdrLen()
	for n < len(frames) {
		f, ok := p.Alloc()
		if !ok {
			break
		}
		m, err := nic.RawRead(p.fd, f.Buf[nic.Headroom-hl:])
		if err != nil || m <= hl {
			p.Put(f.Handle)
			if err == nil || err == unix.EAGAIN || err == unix.EINTR {
				break
			}
			return n, fmt.Errorf("tun: %s: read: %w", p.name, err)
		}
		m -= hl
		f.Len = m
		if hl > 0 {
			f.Offload = readVnetHdr(f.Buf[nic.Headroom-hl : nic.Headroom])
		}
		frames[n] = f
		p.stats.RxFrames++
		p.stats.RxBytes += uint64(m)
		n++
	}
	return n, nil
}

// Transmit implements nic.Port.Transmit: one write per packet, its
// virtio-net header written into the headroom in front of it.
func (p *Port) Transmit(frames []nic.Frame) (int, error) {
	sent := 0
	var first error
	hl := p.hdrLen()
	for i := range frames {
		fr := &frames[i]
		var err error
		switch {
		case hl == 0:
			_, err = nic.RawWrite(p.fd, fr.Data())
		case fr.Offload.GSOSize > 0 && encapsulated(fr.Data()):
			// The kernel cuts TCP super-packets, not IP-in-IP ones.
			err = p.segment(fr)
		case fr.Off < hl:
			err = unix.ENOBUFS
		default:
			writeVnetHdr(fr.Buf[fr.Off-hl:fr.Off], &fr.Offload)
			_, err = nic.RawWrite(p.fd, fr.Buf[fr.Off-hl:fr.Off+fr.Len])
		}
		if err != nil {
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
		p.Put(fr.Handle)
	}
	return sent, first
}

// hdrLen is the length of the virtio-net header in front of each packet.
func (p *Port) hdrLen() int {
	if p.offload {
		return vnetHdrLen
	}
	return 0
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
	if err := unix.Close(p.fd); err != nil {
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
