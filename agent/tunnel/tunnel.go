package tunnel

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/tetherlb/tether/tables/encap"
)

// Config says where the host side runs.
type Config struct {
	// Interface is the host's interface toward the units.
	Interface string
	// Addresses are the host's tunnel addresses (IPv4 and IPv6): the
	// backend address of its tunnel and ipip VIPs, used for nothing
	// else. Open adds any that the interface lacks (as /32 or /128), so
	// that the host answers ARP and neighbour solicitations for them.
	Addresses []netip.Addr
	// Units are the addresses units send tunnel packets from (their
	// unit.address4 and address6); packets from any other address are
	// dropped.
	Units []netip.Addr
	// MaxFlows bounds the mappings held; default 1<<20.
	MaxFlows int
	// PinDir is where the program's link and maps are pinned, on a BPF
	// filesystem; default /sys/fs/bpf/tether-host.
	PinDir string
	// Generic forces generic (SKB) XDP; otherwise native is tried first.
	Generic bool
	// KeepUnits, when the program is taken over, leaves the units the
	// earlier agent set instead of Units: an agent learns its units
	// from their hellos, after it opened the program, and packets of
	// live flows must not be dropped as from unknown units meanwhile.
	KeepUnits bool
}

// Host is the decapsulation program attached to one interface, with its
// maps.
type Host struct {
	ifc  *net.Interface
	m    *maps
	prog *ebpf.Program
	link link.Link
	dir  string
	// Mode is how the program is attached ("native", "generic"), or
	// "kept" when it was taken over from an earlier agent.
	Mode string
	// Outdated is why the kernel refused this agent's program in the
	// link an earlier agent left (see takeOver), whose program then
	// still runs; nil when this agent's runs.
	Outdated error
}

// version names the program's layout in the pin directory: an agent
// takes over only a program and maps of its own version.
const version = 1

// bpffs is where Linux mounts the BPF filesystem.
const bpffs = "/sys/fs/bpf"

// Open attaches the program to the interface, or takes over the one an
// earlier agent left pinned there (with its mappings: the kernel went on
// restoring packets meanwhile), and makes its addresses and units those
// of c.
func Open(c Config) (*Host, error) {
	ifc, err := net.InterfaceByName(c.Interface)
	if err != nil {
		return nil, fmt.Errorf("tunnel: interface %q: %w", c.Interface, err)
	}
	for _, a := range append(append([]netip.Addr{}, c.Addresses...), c.Units...) {
		if !a.IsValid() || a.Is4In6() || a.Zone() != "" {
			return nil, fmt.Errorf("tunnel: %v: want an IPv4 or IPv6 address without a zone", a)
		}
	}
	if len(c.Addresses) == 0 {
		return nil, errors.New("tunnel: no tunnel address")
	}
	if c.MaxFlows <= 0 {
		c.MaxFlows = 1 << 20
	}
	if c.PinDir == "" {
		c.PinDir = bpffs + "/tether-host"
	}
	h := &Host{ifc: ifc, dir: filepath.Join(c.PinDir, fmt.Sprintf("v%d-%d-%s", version, ifc.Index, ifc.Name))}
	if !h.takeOver(c) {
		if err := h.attach(c); err != nil {
			h.Close()
			return nil, fmt.Errorf("tunnel: %s: %w", c.Interface, err)
		}
	}
	if err := h.SetAddresses(c.Addresses); err != nil {
		h.Close()
		return nil, err
	}
	if keep := c.KeepUnits && h.Mode == "kept"; !keep {
		if err := h.SetUnits(c.Units); err != nil {
			h.Close()
			return nil, err
		}
	}
	if err := h.addAddresses(c.Addresses); err != nil {
		h.Close()
		return nil, err
	}
	return h, nil
}

// pinNames name the maps' pins, in maps.all's order. The IPv6 maps came
// later (firstIPv6Map on): an agent that takes over the program of an
// agent without them makes and pins them.
var pinNames = []string{"flows4", "addrs4", "units4", "counters", "flows6", "addrs6", "units6"}

const firstIPv6Map = 4

// takeOver opens the link and maps an earlier agent pinned, if all are
// there, and puts this agent's program in the link: the maps (and so
// the mappings) are kept, but the code is this agent's, so that an
// upgraded agent does not go on running the program it replaced. If
// the kernel refuses the update, the earlier program stays (Outdated).
func (h *Host) takeOver(c Config) bool {
	l, err := link.LoadPinnedLink(filepath.Join(h.dir, "link"), nil)
	if err != nil {
		return false
	}
	var ms []*ebpf.Map
	fail := func() bool {
		for _, m := range ms {
			m.Close()
		}
		l.Close()
		return false
	}
	for i, n := range pinNames {
		pin := filepath.Join(h.dir, n)
		mp, err := ebpf.LoadPinnedMap(pin, nil)
		if errors.Is(err, os.ErrNotExist) && i >= firstIPv6Map {
			// Left by an agent without IPv6: the maps it lacks are
			// made, and pinned for the next agent.
			spec := specs(c.MaxFlows)[i]
			if mp, err = ebpf.NewMap(spec); err == nil {
				if err = mp.Pin(pin); err != nil {
					mp.Close()
				}
			}
		}
		if err != nil {
			return fail()
		}
		ms = append(ms, mp)
	}
	h.link, h.Mode = l, "kept"
	h.m = mapsOf(ms)
	prog, err := loadProgram(h.m)
	if err == nil {
		err = l.Update(prog)
	}
	if err != nil {
		if prog != nil {
			prog.Close()
		}
		h.Outdated = err
		return true
	}
	h.prog = prog
	return true
}

// attach makes fresh maps and a fresh program, attaches it and pins
// everything. Whatever an earlier agent left half-pinned goes first.
func (h *Host) attach(c Config) error {
	_ = os.RemoveAll(h.dir)
	var err error
	if h.m, err = newMaps(c.MaxFlows); err != nil {
		return err
	}
	if h.prog, err = loadProgram(h.m); err != nil {
		return err
	}
	modes := []link.XDPAttachFlags{link.XDPDriverMode, link.XDPGenericMode}
	names := []string{"native", "generic"}
	if c.Generic {
		modes, names = modes[1:], names[1:]
	}
	for i, m := range modes {
		if h.link, err = link.AttachXDP(link.XDPOptions{Program: h.prog, Interface: h.ifc.Index, Flags: m}); err == nil {
			h.Mode = names[i]
			break
		}
	}
	if err != nil {
		return fmt.Errorf("attach XDP: %w", err)
	}
	if err := ensureBPFFS(c.PinDir); err != nil {
		return err
	}
	if err := os.MkdirAll(h.dir, 0o700); err != nil {
		return err
	}
	for i, mp := range h.m.all() {
		if err := mp.Pin(filepath.Join(h.dir, pinNames[i])); err != nil {
			return fmt.Errorf("pin map %s: %w", pinNames[i], err)
		}
	}
	if err := h.link.Pin(filepath.Join(h.dir, "link")); err != nil {
		return fmt.Errorf("pin link: %w", err)
	}
	return nil
}

// ensureBPFFS mounts the BPF filesystem on /sys/fs/bpf when dir is to be
// below it and this mount namespace has none there.
func ensureBPFFS(dir string) error {
	for d := dir; d != "/" && d != "."; d = filepath.Dir(d) {
		var st unix.Statfs_t
		if unix.Statfs(d, &st) == nil && st.Type == unix.BPF_FS_MAGIC {
			return nil
		}
	}
	if filepath.Dir(dir) != bpffs && dir != bpffs {
		return fmt.Errorf("%s is not on a BPF filesystem", dir)
	}
	if err := unix.Mount("bpf", bpffs, "bpf", 0, "mode=0700"); err != nil {
		return fmt.Errorf("mount the BPF filesystem on %s: %w", bpffs, err)
	}
	return nil
}

// addAddresses puts each tunnel address on the interface (as /32 or
// /128) unless it is there already, so that the host answers ARP and
// neighbour solicitations for it. An IPv6 one skips duplicate address
// detection: it is the host's by configuration, and usable at once.
func (h *Host) addAddresses(addrs []netip.Addr) error {
	l, err := netlink.LinkByIndex(h.ifc.Index)
	if err != nil {
		return fmt.Errorf("tunnel: %s: %w", h.ifc.Name, err)
	}
	have, err := netlink.AddrList(l, netlink.FAMILY_ALL)
	if err != nil {
		return fmt.Errorf("tunnel: %s: list addresses: %w", h.ifc.Name, err)
	}
next:
	for _, a := range addrs {
		for _, x := range have {
			if ip, ok := netip.AddrFromSlice(x.IP); ok && ip.Unmap() == a {
				continue next
			}
		}
		nl := &netlink.Addr{IPNet: &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(a.BitLen(), a.BitLen())}}
		if a.Is6() {
			nl.Flags = unix.IFA_F_NODAD
		}
		if err := netlink.AddrAdd(l, nl); err != nil {
			return fmt.Errorf("tunnel: %s: add tunnel address %v: %w", h.ifc.Name, a, err)
		}
	}
	return nil
}

// SetAddresses makes addrs the tunnel addresses the program takes.
func (h *Host) SetAddresses(addrs []netip.Addr) error {
	return setBoth(h.m.addrs4, h.m.addrs6, addrs)
}

// SetUnits makes units the addresses tunnel packets may come from.
func (h *Host) SetUnits(units []netip.Addr) error {
	return setBoth(h.m.units4, h.m.units6, units)
}

// setBoth makes the IPv4 keys in m4 and the IPv6 ones in m6 exactly
// addrs.
func setBoth(m4, m6 *ebpf.Map, addrs []netip.Addr) error {
	var a4, a6 []netip.Addr
	for _, a := range addrs {
		if a.Is4() {
			a4 = append(a4, a)
		} else {
			a6 = append(a6, a)
		}
	}
	if err := setKeys(m4, a4); err != nil {
		return err
	}
	return setKeys(m6, a6)
}

// setKeys makes the set of address keys in m exactly want (all of m's
// family).
func setKeys(m *ebpf.Map, want []netip.Addr) error {
	keep := map[netip.Addr]bool{}
	for _, a := range want {
		keep[a] = true
		if err := m.Put(a.AsSlice(), uint8(1)); err != nil {
			return fmt.Errorf("tunnel: add %v: %w", a, err)
		}
	}
	var k []byte
	var v uint8
	var stale []netip.Addr
	it := m.Iterate()
	for it.Next(&k, &v) {
		if a := addrOf(k); !keep[a] {
			stale = append(stale, a)
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("tunnel: list: %w", err)
	}
	for _, a := range stale {
		if err := m.Delete(a.AsSlice()); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("tunnel: remove %v: %w", a, err)
		}
	}
	return nil
}

// addrOf is the address of a 4- or 16-byte key.
func addrOf(b []byte) netip.Addr {
	a, _ := netip.AddrFromSlice(b)
	return a
}

// flowKey is the flows4 (unit IPv4) or flows6 key of (unit, flow ID):
// the ID as it appears in a tunnel packet's port fields, big-endian.
func flowKey(unit netip.Addr, id uint32) []byte {
	a := unit.AsSlice()
	k := make([]byte, len(a)+4)
	copy(k, a)
	binary.BigEndian.PutUint32(k[len(a):], id)
	return k
}

// flowsOf is the map of unit's family.
func (h *Host) flowsOf(unit netip.Addr) *ebpf.Map {
	if unit.Is4() {
		return h.m.flows4
	}
	return h.m.flows6
}

// Put records that flow ID id from unit stands for the connection t,
// which is of the unit address's family: a unit sends a flow-ID packet
// from its address of the client's family.
func (h *Host) Put(unit netip.Addr, id uint32, t *encap.Tuple) error {
	if !unit.IsValid() || unit.Is4() == t.V6 {
		return fmt.Errorf("tunnel: flow %d from %v: a mapping of the unit's family wanted (IPv6 tuple: %v)", id, unit, t.V6)
	}
	if t.Proto != protoTCP && t.Proto != protoUDP {
		return fmt.Errorf("tunnel: flow %d from %v: protocol %d is neither TCP nor UDP", id, unit, t.Proto)
	}
	// As slices: cilium/ebpf takes []byte as it is, where an array
	// value goes through binary.Append's reflection on every call.
	if err := h.flowsOf(unit).Put(flowKey(unit, id), value(t)); err != nil {
		return fmt.Errorf("tunnel: flow %d from %v: %w", id, unit, err)
	}
	return nil
}

// Delete forgets flow ID id from unit; forgetting one not held is no
// error.
func (h *Host) Delete(unit netip.Addr, id uint32) error {
	if !unit.IsValid() {
		return nil
	}
	if err := h.flowsOf(unit).Delete(flowKey(unit, id)); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("tunnel: flow %d from %v: %w", id, unit, err)
	}
	return nil
}

// Get returns the mapping of flow ID id from unit.
func (h *Host) Get(unit netip.Addr, id uint32) (encap.Tuple, bool) {
	if !unit.IsValid() {
		return encap.Tuple{}, false
	}
	v := make([]byte, h.flowsOf(unit).ValueSize())
	if h.flowsOf(unit).Lookup(flowKey(unit, id), v) != nil {
		return encap.Tuple{}, false
	}
	return tupleOf(v), true
}

// Counters are what the program did, summed over CPUs, since it was
// attached.
type Counters struct {
	Decapsulated uint64 // flow-ID packets restored
	IPIP         uint64 // IP-in-IP packets unwrapped
	UnknownFlow  uint64 // dropped: no mapping for the flow ID
	UnknownUnit  uint64 // dropped: from an address no unit has
	NotTunnel    uint64 // dropped: neither TCP/UDP nor IP-in-IP
	Malformed    uint64 // dropped: IPv4 options, fragments (IP-in-IP ones go to the kernel), short headers, a version mismatch
}

// Counters reads the program's counters.
func (h *Host) Counters() (Counters, error) {
	var c Counters
	for i, dst := range []*uint64{&c.Decapsulated, &c.IPIP, &c.UnknownFlow, &c.UnknownUnit, &c.NotTunnel, &c.Malformed} {
		var per []uint64
		if err := h.m.counters.Lookup(uint32(i), &per); err != nil {
			return c, fmt.Errorf("tunnel: counters: %w", err)
		}
		for _, n := range per {
			*dst += n
		}
	}
	return c, nil
}

// Close lets go of the program and its maps. They stay pinned: the
// kernel goes on restoring packets with the mappings it holds until the
// next agent takes them over (or Remove).
func (h *Host) Close() error {
	if h.link != nil {
		h.link.Close()
	}
	if h.prog != nil {
		h.prog.Close()
	}
	if h.m != nil {
		h.m.close()
	}
	return nil
}

// Remove detaches the program and removes its pins and maps: tunnel
// packets then reach the host's stack unrestored (and find no socket).
func (h *Host) Remove() error {
	var err error
	if h.link != nil {
		err = h.link.Unpin()
	}
	h.Close()
	if rerr := os.RemoveAll(h.dir); err == nil {
		err = rerr
	}
	return err
}
