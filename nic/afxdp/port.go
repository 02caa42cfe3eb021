package afxdp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/tetherlb/tether/nic"
)

// Config describes the sockets to open.
type Config struct {
	// Interface to bind to.
	Interface string
	// Queues to bind, one socket each (queue 0 .. Queues-1); default 1.
	Queues int
	// Ring is the entries of each of a socket's four rings, rounded up
	// to a power of two; default 2048. Frames per socket in its UMEM;
	// default twice Ring (half lent to the kernel for receiving, half
	// for frames in flight).
	Ring   int
	Frames int
	// Copy forces copy mode; otherwise zero-copy is tried first.
	Copy bool
	// Generic forces generic (SKB) XDP; otherwise native is tried first.
	Generic bool
	// PinDir is where the XDP link is pinned, on a BPF filesystem;
	// default /sys/fs/bpf/tether (mounted if /sys/fs/bpf is not).
	PinDir string
}

// Sizes. A 4 KiB frame leaves room for the kernel's XDP headroom, our own
// encapsulation headroom and a 1500-byte (or jumbo 3 KB) packet.
const (
	frameSize = 4096
	// maxRing bounds Config.Ring (a UMEM of 2 × 65536 frames is 512 MiB).
	maxRing = 1 << 16
	// maxKicks bounds the sendto calls one Transmit makes: in copy mode
	// the kernel sends at most 32 descriptors per call.
	maxKicks = 64
)

// Mode says how a socket is bound.
type Mode string

// Binding modes.
const (
	ModeZeroCopy Mode = "zero-copy"
	ModeCopy     Mode = "copy"
)

// Unit owns the XDP program, its maps and the sockets on one interface.
type Unit struct {
	ifc     *net.Interface
	maps    *maps
	prog    *ebpf.Program
	link    link.Link
	xdpMode string
	sockets []*Port
	// pin is where the link is pinned (bpffs), "" when it is not: a
	// pinned program outlives a forwarder killed without Close, dropping
	// Tether's traffic until the next forwarder takes the link over.
	pin string
	// kept is the link a dead forwarder pinned, until the first Own
	// swaps this program into it (takeOver).
	kept    link.Link
	generic bool
	pinDir  string
	// stopLocal ends followLocal.
	stopLocal func()
}

// Open attaches the redirect program to the interface and opens one
// socket per queue. Close undoes everything.
func Open(c Config) (*Unit, error) {
	ifc, err := net.InterfaceByName(c.Interface)
	if err != nil {
		return nil, fmt.Errorf("afxdp: interface %q: %w (the tun port needs no existing interface)", c.Interface, err)
	}
	if c.Queues <= 0 {
		c.Queues = 1
	}
	if c.Ring <= 0 {
		c.Ring = 2048
	}
	if c.Ring > maxRing {
		return nil, fmt.Errorf("afxdp: ring of %d entries: at most %d", c.Ring, maxRing)
	}
	c.Ring = 1 << bits.Len(uint(c.Ring-1))
	if c.Frames <= 0 {
		c.Frames = 2 * c.Ring
	}
	if c.PinDir == "" {
		c.PinDir = bpffs + "/tether"
	}
	u := &Unit{ifc: ifc, generic: c.Generic, pinDir: c.PinDir}
	if u.maps, err = newMaps(c.Queues); err != nil {
		return nil, explain(err, c.Interface)
	}
	if u.prog, err = loadProgram(u.maps); err != nil {
		u.Close()
		return nil, explain(err, c.Interface)
	}
	if u.stopLocal, err = u.maps.followLocal(); err != nil {
		u.Close()
		return nil, explain(err, c.Interface)
	}
	if err := u.attach(c.Generic); err != nil {
		u.Close()
		return nil, explain(err, c.Interface)
	}
	for q := range c.Queues {
		s, err := openSocket(ifc.Index, q, c.Ring, c.Frames, c.Copy)
		if err != nil {
			u.Close()
			return nil, explain(fmt.Errorf("queue %d: %w", q, err), c.Interface)
		}
		s.name = fmt.Sprintf("%s/%d", ifc.Name, q)
		u.sockets = append(u.sockets, s)
		if err := u.maps.xsks.Put(uint32(q), uint32(s.fd)); err != nil {
			u.Close()
			return nil, explain(fmt.Errorf("register queue %d socket: %w", q, err), c.Interface)
		}
	}
	return u, nil
}

// explain turns the errors an unprivileged or unsupported setup gives
// into one that names the cause and the alternative.
func explain(err error, ifc string) error {
	switch {
	case errors.Is(err, unix.EPERM), errors.Is(err, unix.EACCES):
		return fmt.Errorf("afxdp: %s: permission denied (needs CAP_NET_ADMIN, CAP_BPF and CAP_NET_RAW); the tun port needs only CAP_NET_ADMIN: %w", ifc, err)
	case errors.Is(err, unix.EAFNOSUPPORT):
		return fmt.Errorf("afxdp: %s: the kernel has no AF_XDP sockets (CONFIG_XDP_SOCKETS); use the tun port: %w", ifc, err)
	case errors.Is(err, ebpf.ErrNotSupported):
		return fmt.Errorf("afxdp: %s: the kernel lacks an eBPF feature XDP needs; use the tun port: %w", ifc, err)
	}
	return fmt.Errorf("afxdp: %s: %w", ifc, err)
}

// attach links the program to the interface and pins the link: it takes
// over a link a killed forwarder left pinned, or attaches a new one.
func (u *Unit) attach(generic bool) error {
	// A link pinned by a forwarder that died: its program keeps
	// dropping Tether's traffic until the first Own swaps this one in
	// (takeOver), so that there is no moment where the kernel sees
	// Tether's traffic.
	pin := pinPath(u.pinDir, u.ifc)
	if l, err := link.LoadPinnedLink(pin, nil); err == nil {
		u.kept, u.xdpMode, u.pin = l, "kept", pin
		return nil
	}
	if err := u.attachNew(generic); err != nil {
		return err
	}
	if err := pinLink(u.link, pin); err == nil {
		u.pin = pin
	}
	return nil
}

// takeOver swaps this program into the link a dead forwarder pinned,
// once the program's maps hold what it must catch. Swapped in with empty
// maps it would pass Tether's traffic to the kernel, which forwards
// half-NAT replies untranslated (the clients reset their connections)
// and sends the backends ICMP redirects that route them around the unit
// for minutes.
func (u *Unit) takeOver() error {
	l := u.kept
	if l == nil {
		return nil
	}
	u.kept = nil
	if err := l.Update(u.prog); err == nil {
		u.link = l
		return nil
	}
	_ = l.Unpin()
	l.Close()
	u.pin, u.xdpMode = "", ""
	if err := u.attachNew(u.generic); err != nil {
		return err
	}
	if err := pinLink(u.link, pinPath(u.pinDir, u.ifc)); err == nil {
		u.pin = pinPath(u.pinDir, u.ifc)
	}
	return nil
}

// Pinned reports whether the program's link is pinned, so that it
// outlives this process if it is killed.
func (u *Unit) Pinned() bool { return u.pin != "" }

// bpffs is where Linux mounts the BPF filesystem.
const bpffs = "/sys/fs/bpf"

// pinPath is where an interface's link is pinned: one per interface
// index and name.
func pinPath(dir string, ifc *net.Interface) string {
	return fmt.Sprintf("%s/xdp-%d-%s", dir, ifc.Index, ifc.Name)
}

// pinLink pins l at path. Its directory must be on a BPF filesystem, or
// be made in one: /sys/fs/bpf is mounted if this mount namespace has
// none there (a unit started by ip netns exec gets a sysfs of its own,
// without it; a pin there dies with the unit's processes, see
// config.Port.PinDir).
func pinLink(l link.Link, path string) error {
	dir := filepath.Dir(path)
	if !onBPFFS(dir) && !onBPFFS(filepath.Dir(dir)) {
		if filepath.Dir(dir) != bpffs {
			return fmt.Errorf("%s is not on a BPF filesystem", dir)
		}
		if err := unix.Mount("bpf", bpffs, "bpf", 0, "mode=0700"); err != nil {
			return fmt.Errorf("mount the BPF filesystem on %s: %w", bpffs, err)
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	return l.Pin(path)
}

func onBPFFS(dir string) bool {
	var st unix.Statfs_t
	return unix.Statfs(dir, &st) == nil && st.Type == unix.BPF_FS_MAGIC
}

// attachNew links the program to the interface, natively if the driver
// allows, else generically. A program already attached through netlink
// (which would make the link fail with EBUSY) is removed first: it can
// only be a leftover, since this process is the interface's forwarder.
func (u *Unit) attachNew(generic bool) error {
	modes := []link.XDPAttachFlags{link.XDPDriverMode, link.XDPGenericMode}
	names := []string{"native", "generic"}
	if generic {
		modes, names = modes[1:], names[1:]
	}
	var err error
	for retry := 0; retry < 2; retry++ {
		for i, m := range modes {
			var l link.Link
			l, err = link.AttachXDP(link.XDPOptions{Program: u.prog, Interface: u.ifc.Index, Flags: m})
			if err == nil {
				u.link, u.xdpMode = l, names[i]
				return nil
			}
		}
		if !errors.Is(err, unix.EBUSY) && !errors.Is(err, unix.EEXIST) {
			break
		}
		nl, lerr := netlink.LinkByIndex(u.ifc.Index)
		if lerr != nil {
			break
		}
		_ = netlink.LinkSetXdpFdWithFlags(nl, -1, int(link.XDPGenericMode))
		_ = netlink.LinkSetXdpFdWithFlags(nl, -1, int(link.XDPDriverMode))
	}
	return fmt.Errorf("attach XDP program: %w", err)
}

// Sockets returns the ports, one per queue.
func (u *Unit) Sockets() []*Port { return u.sockets }

// XDPMode says how the program is attached: native or generic.
func (u *Unit) XDPMode() string { return u.xdpMode }

// Own sets what the program redirects: packets to dst addresses, and
// packets from the src endpoints (address, port, protocol). Entries not
// listed are removed. The first Own takes over a link a dead forwarder
// left (see takeOver).
func (u *Unit) Own(dst []netip.Addr, src []Endpoint) error {
	if err := u.maps.own(dst, src); err != nil {
		return err
	}
	return u.takeOver()
}

// own makes the maps hold dst and src, and nothing else.
func (m *maps) own(dst []netip.Addr, src []Endpoint) error {
	want4, want6 := map[[4]byte]bool{}, map[[16]byte]bool{}
	for _, a := range dst {
		if a.Is4() {
			want4[a.As4()] = true
		} else {
			want6[a.As16()] = true
		}
	}
	ws4, ws6 := map[[src4KeySize]byte]bool{}, map[[src6KeySize]byte]bool{}
	for _, e := range src {
		a := e.Addr.Unmap()
		if a.Is4() {
			var k [src4KeySize]byte
			b := a.As4()
			copy(k[:], b[:])
			binary.BigEndian.PutUint16(k[4:], e.Port)
			k[6] = e.Proto
			ws4[k] = true
		} else {
			var k [src6KeySize]byte
			b := a.As16()
			copy(k[:], b[:])
			binary.BigEndian.PutUint16(k[16:], e.Port)
			k[18] = e.Proto
			ws6[k] = true
		}
	}
	if err := syncSet(m.dst4, want4); err != nil {
		return err
	}
	if err := syncSet(m.dst6, want6); err != nil {
		return err
	}
	if err := syncSet(m.src4, ws4); err != nil {
		return err
	}
	return syncSet(m.src6, ws6)
}

// followLocal fills the local maps with the addresses of the unit's
// network namespace (every interface's: a probe may leave from any of
// them), and keeps them so as addresses come and go, until the returned
// stop. The addresses are read whole after each change the kernel
// announces, so a missed or coalesced announcement costs nothing.
func (m *maps) followLocal() (stop func(), err error) {
	// The handle and the subscription are made in the calling thread's
	// namespace, and keep to it whatever thread reads them later.
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("follow the unit's addresses: %w", err)
	}
	ch := make(chan netlink.AddrUpdate, 64)
	done := make(chan struct{})
	// Subscribed first, listed after: a change in between is announced.
	if err := netlink.AddrSubscribeWithOptions(ch, done, netlink.AddrSubscribeOptions{}); err != nil {
		h.Close()
		return nil, fmt.Errorf("follow the unit's addresses: %w", err)
	}
	if err := m.syncLocal(h); err != nil {
		close(done)
		h.Close()
		return nil, err
	}
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		defer h.Close()
		for range ch {
			// Take every announcement waiting, then read once.
			for len(ch) > 0 {
				<-ch
			}
			// A failure here (the maps are full) leaves the earlier
			// set, and the next change tries again.
			_ = m.syncLocal(h)
		}
	}()
	return func() { close(done); <-finished }, nil
}

// syncLocal makes the local maps hold the addresses h's namespace has.
func (m *maps) syncLocal(h *netlink.Handle) error {
	addrs, err := h.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return fmt.Errorf("list the unit's addresses: %w", err)
	}
	want4, want6 := map[[4]byte]bool{}, map[[16]byte]bool{}
	for _, a := range addrs {
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok {
			continue
		}
		if ip = ip.Unmap(); ip.Is4() {
			want4[ip.As4()] = true
		} else {
			want6[ip.As16()] = true
		}
	}
	if len(want4) > maxLocal || len(want6) > maxLocal {
		return fmt.Errorf("more than %d local addresses of a family", maxLocal)
	}
	if err := syncSet(m.local4, want4); err != nil {
		return err
	}
	return syncSet(m.local6, want6)
}

// Endpoint is a transport endpoint whose traffic the program redirects.
type Endpoint struct {
	Addr  netip.Addr
	Port  uint16
	Proto uint8
}

func syncSet[K comparable](m *ebpf.Map, want map[K]bool) error {
	var k K
	var v uint8
	var stale []K
	it := m.Iterate()
	for it.Next(&k, &v) {
		if !want[k] {
			stale = append(stale, k)
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("afxdp: read map: %w", err)
	}
	for _, s := range stale {
		if err := m.Delete(s); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("afxdp: update map: %w", err)
		}
	}
	for w := range want {
		if err := m.Put(w, uint8(1)); err != nil {
			return fmt.Errorf("afxdp: update map: %w", err)
		}
	}
	return nil
}

// Close detaches the program (unpinning it) and closes the sockets.
func (u *Unit) Close() error {
	var errs []error
	if u.stopLocal != nil {
		u.stopLocal()
	}
	if u.kept != nil {
		// Never taken over: a clean stop detaches the dead one's program.
		if err := u.kept.Unpin(); err != nil {
			errs = append(errs, fmt.Errorf("afxdp: unpin %s: %w", u.pin, err))
		}
		u.kept.Close()
	}
	if u.link != nil {
		if u.pin != "" {
			if err := u.link.Unpin(); err != nil {
				errs = append(errs, fmt.Errorf("afxdp: unpin %s: %w", u.pin, err))
			}
		}
		if err := u.link.Close(); err != nil {
			errs = append(errs, fmt.Errorf("afxdp: detach: %w", err))
		}
	}
	for _, s := range u.sockets {
		s.close()
	}
	if u.prog != nil {
		u.prog.Close()
	}
	if u.maps != nil {
		u.maps.close()
	}
	return errors.Join(errs...)
}

// Port is one AF_XDP socket: a nic.Port for one queue.
type Port struct {
	name  string
	fd    int
	umem  []byte
	mode  Mode
	fill  *ring
	comp  *ring
	rx    *ring
	tx    *ring
	free  []uint64 // frame base offsets not lent and not in a ring
	stats nic.Stats
	wake  nic.Wakeup
}

var (
	_ nic.Port      = (*Port)(nil)
	_ nic.Allocator = (*Port)(nil)
)

func openSocket(ifindex, queue, ringEntries, frames int, forceCopy bool) (*Port, error) {
	fd, err := unix.Socket(unix.AF_XDP, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("socket: %w", err)
	}
	p := &Port{fd: fd}
	fail := func(err error) (*Port, error) { p.close(); return nil, err }
	if p.wake, err = nic.NewWakeup(); err != nil {
		return fail(err)
	}
	p.umem, err = unix.Mmap(-1, 0, frames*frameSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_POPULATE)
	if err != nil {
		return fail(fmt.Errorf("allocate UMEM: %w", err))
	}
	reg := unix.XDPUmemReg{
		Addr:     uint64(uintptr(unsafe.Pointer(unsafe.SliceData(p.umem)))),
		Len:      uint64(len(p.umem)),
		Size:     frameSize,
		Headroom: nic.Headroom,
	}
	if err := setsockopt(fd, unix.XDP_UMEM_REG, unsafe.Pointer(&reg), unsafe.Sizeof(reg)); err != nil {
		return fail(fmt.Errorf("register UMEM: %w", err))
	}
	for _, opt := range []int{unix.XDP_UMEM_FILL_RING, unix.XDP_UMEM_COMPLETION_RING, unix.XDP_RX_RING, unix.XDP_TX_RING} {
		if err := unix.SetsockoptInt(fd, unix.SOL_XDP, opt, ringEntries); err != nil {
			return fail(fmt.Errorf("size ring %d: %w", opt, err))
		}
	}
	var off unix.XDPMmapOffsets
	if err := getsockopt(fd, unix.XDP_MMAP_OFFSETS, unsafe.Pointer(&off), unsafe.Sizeof(off)); err != nil {
		return fail(fmt.Errorf("ring offsets: %w", err))
	}
	if p.fill, err = mapRing(fd, off.Fr, unix.XDP_UMEM_PGOFF_FILL_RING, uint32(ringEntries), 8); err != nil {
		return fail(err)
	}
	if p.comp, err = mapRing(fd, off.Cr, unix.XDP_UMEM_PGOFF_COMPLETION_RING, uint32(ringEntries), 8); err != nil {
		return fail(err)
	}
	if p.rx, err = mapRing(fd, off.Rx, unix.XDP_PGOFF_RX_RING, uint32(ringEntries), unsafe.Sizeof(unix.XDPDesc{})); err != nil {
		return fail(err)
	}
	if p.tx, err = mapRing(fd, off.Tx, unix.XDP_PGOFF_TX_RING, uint32(ringEntries), unsafe.Sizeof(unix.XDPDesc{})); err != nil {
		return fail(err)
	}
	for i := frames - 1; i >= 0; i-- {
		p.free = append(p.free, uint64(i*frameSize))
	}
	p.refill()
	// Zero-copy where the driver supports it, copy mode otherwise (veth,
	// most virtual devices: EOPNOTSUPP).
	modes := []struct {
		flags uint16
		mode  Mode
	}{{unix.XDP_ZEROCOPY | unix.XDP_USE_NEED_WAKEUP, ModeZeroCopy}, {unix.XDP_COPY | unix.XDP_USE_NEED_WAKEUP, ModeCopy}}
	if forceCopy {
		modes = modes[1:]
	}
	for _, m := range modes {
		err = unix.Bind(fd, &unix.SockaddrXDP{Flags: m.flags, Ifindex: uint32(ifindex), QueueID: uint32(queue)})
		if err == nil {
			p.mode = m.mode
			return p, nil
		}
	}
	return fail(fmt.Errorf("bind: %w", err))
}

func setsockopt(fd, opt int, val unsafe.Pointer, size uintptr) error {
	_, _, e := unix.Syscall6(unix.SYS_SETSOCKOPT, uintptr(fd), unix.SOL_XDP, uintptr(opt), uintptr(val), size, 0)
	if e != 0 {
		return e
	}
	return nil
}

func getsockopt(fd, opt int, val unsafe.Pointer, size uintptr) error {
	l := uint32(size)
	_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_XDP, uintptr(opt), uintptr(val), uintptr(unsafe.Pointer(&l)), 0)
	if e != 0 {
		return e
	}
	return nil
}

// refill gives free frames to the kernel for receiving, keeping a share
// back for frames in flight.
func (p *Port) refill() {
	n := min(p.fill.free(), uint32(len(p.free)))
	if n == 0 {
		return
	}
	i := p.fill.cached
	for k := range n {
		*p.fill.addr(i + k) = p.free[len(p.free)-1-int(k)]
	}
	p.free = p.free[:len(p.free)-int(n)]
	p.fill.publish(n)
}

// reap takes back frames the kernel has finished transmitting.
func (p *Port) reap() {
	n := p.comp.ready()
	i := p.comp.cached
	for k := range n {
		p.free = append(p.free, *p.comp.addr(i + k)&^(frameSize-1))
	}
	p.comp.release(n)
}

// Mode returns how the socket is bound.
func (p *Port) Mode() Mode { return p.mode }

// Name implements nic.Port.Name.
func (p *Port) Name() string { return p.name }

// LinkType implements nic.Port.LinkType.
func (p *Port) LinkType() nic.LinkType { return nic.LinkEthernet }

// Receive implements nic.Port.Receive.
func (p *Port) Receive(frames []nic.Frame) (int, error) {
	p.reap()
	p.refill()
	n := min(p.rx.ready(), uint32(len(frames)))
	i := p.rx.cached
	for k := range n {
		d := p.rx.xdpDesc(i + k)
		base := d.Addr &^ (frameSize - 1)
		frames[k] = nic.Frame{
			Buf:    p.umem[base : base+frameSize],
			Off:    int(d.Addr - base),
			Len:    int(d.Len),
			Handle: base,
		}
		p.stats.RxFrames++
		p.stats.RxBytes += uint64(d.Len)
	}
	p.rx.release(n)
	return int(n), nil
}

// Transmit implements nic.Port.Transmit.
func (p *Port) Transmit(frames []nic.Frame) (int, error) {
	p.reap()
	n := min(p.tx.free(), uint32(len(frames)))
	i := p.tx.cached
	for k := range n {
		f := &frames[k]
		d := p.tx.xdpDesc(i + k)
		d.Addr, d.Len, d.Options = f.Handle+uint64(f.Off), uint32(f.Len), 0
		p.stats.TxBytes += uint64(f.Len)
	}
	p.stats.TxFrames += uint64(n)
	p.tx.publish(n)
	// No room in the TX ring: those frames are dropped and reused.
	for k := n; k < uint32(len(frames)); k++ {
		p.stats.TxDropped++
		p.free = append(p.free, frames[k].Handle)
	}
	return int(n), p.kick()
}

// kick makes the kernel send what the TX ring holds. In copy mode it
// sends at most 32 descriptors per call and answers EAGAIN while more
// wait, so it is called until the ring is empty or maxKicks is reached
// (the next batch kicks again).
func (p *Port) kick() error {
	for range maxKicks {
		if p.tx.cached == atomic32(p.tx.consumer) {
			return nil
		}
		if p.mode == ModeZeroCopy && !p.tx.needWakeup() {
			return nil
		}
		// A raw system call: it never blocks (MSG_DONTWAIT), and the
		// scheduler must not take the worker's P away while the kernel
		// sends (see nic.RawRead).
		_, _, e := unix.RawSyscall6(unix.SYS_SENDTO, uintptr(p.fd), 0, 0, unix.MSG_DONTWAIT, 0, 0)
		switch e {
		case 0, unix.EAGAIN, unix.EBUSY, unix.ENOBUFS, unix.EINTR:
		case unix.ENETDOWN:
			return fmt.Errorf("afxdp: %s: interface down", p.name)
		default:
			return fmt.Errorf("afxdp: %s: kick: %w", p.name, e)
		}
	}
	return nil
}

// Alloc implements nic.Allocator: a UMEM frame from the free list (after
// taking back what the kernel has finished sending), which Transmit sends
// like a received one. The kernel's fill ring gets at most half of the
// frames (see Config.Frames), so the free list runs dry only when every
// frame is in flight.
func (p *Port) Alloc() (nic.Frame, bool) {
	if len(p.free) == 0 {
		p.reap()
		if len(p.free) == 0 {
			return nic.Frame{}, false
		}
	}
	base := p.free[len(p.free)-1]
	p.free = p.free[:len(p.free)-1]
	return nic.Frame{Buf: p.umem[base : base+frameSize], Off: nic.Headroom, Handle: base}, true
}

// Release implements nic.Port.Release.
func (p *Port) Release(frames []nic.Frame) {
	for i := range frames {
		p.free = append(p.free, frames[i].Handle)
	}
}

// Wait implements nic.Waiter: it finishes pending transmissions and
// blocks in poll(2) until a packet arrives or timeout passes.
func (p *Port) Wait(timeout time.Duration) error {
	if err := p.kick(); err != nil {
		return err
	}
	if err := p.wake.Poll(p.fd, timeout); err != nil {
		return fmt.Errorf("afxdp: %s: poll: %w", p.name, err)
	}
	return nil
}

// Wake implements nic.Waiter.
func (p *Port) Wake() { p.wake.Wake() }

// Stats implements nic.Port.Stats, with the kernel's count of frames it
// dropped at this socket (its XDP statistics: receive ring full, fill
// ring empty, other receive drops).
func (p *Port) Stats() nic.Stats {
	s := p.stats
	s.KernelDropped = p.KernelDropped()
	return s
}

// KernelDropped implements nic.KernelDropper: the frames the kernel
// dropped at this socket (its XDP statistics: receive ring full, fill
// ring empty, other receive drops). A getsockopt, safe from any
// goroutine.
func (p *Port) KernelDropped() uint64 {
	var x unix.XDPStatistics
	if getsockopt(p.fd, unix.XDP_STATISTICS, unsafe.Pointer(&x), unsafe.Sizeof(x)) != nil {
		return 0
	}
	return x.Rx_dropped + x.Rx_ring_full + x.Rx_fill_ring_empty_descs
}

// Close implements nic.Port.Close; the Unit closes its sockets itself.
func (p *Port) Close() error { return nil }

func (p *Port) close() {
	for _, r := range []*ring{p.fill, p.comp, p.rx, p.tx} {
		r.unmap()
	}
	if p.fd > 0 {
		unix.Close(p.fd)
		p.fd = -1
	}
	if p.umem != nil {
		unix.Munmap(p.umem)
		p.umem = nil
	}
	p.wake.Close()
	p.wake = nic.Wakeup{}
}
