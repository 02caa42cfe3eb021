package tunnel

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"golang.org/x/sys/unix"
)

// The decapsulation program. In C it would read:
//
//	eth = data; ip = eth + 14; need the Ethernet and IP headers;
//	if (eth->proto == IPv6) goto v6;
//	if (eth->proto != IPv4 || !addrs4[ip->daddr]) pass;   // not ours
//	// From here the packet is to a tunnel address: restored or dropped.
//	if (ip->ihl != 5 || fragment && ip->proto != IPIP) drop;
//	if (!units4[ip->saddr]) drop;                            // unknown_unit
//	if (fragment) pass;               // IP-in-IP: the kernel reassembles
//	if (ip->proto == IPIP) { inner IPv4 follows: move the Ethernet
//	    header 20 bytes on, bpf_xdp_adjust_head(+20); pass; }
//	if (ip->proto != TCP && ip->proto != UDP) drop;
//	m = flows4[{ip->saddr, the 4 port bytes}];               // the flow ID
//	if (!m || m->proto != ip->proto) drop;                   // unknown_flow
//	addresses and ports = m's, IPv4 and TCP/UDP checksums updated
//	incrementally (RFC 1624); pass;
//
//	v6: if (!addrs6[ip6->daddr]) pass;
//	if (version != 6) drop;
//	if (next header is a fragment header) {
//	    if (its next header != IPv6) drop; fragment = 1; }
//	if (!units6[ip6->saddr]) drop;                           // unknown_unit
//	if (fragment) pass;          // IPv6-in-IPv6: the kernel reassembles
//	if (next header == IPv6) { move the Ethernet header 40 bytes on,
//	    bpf_xdp_adjust_head(+40); pass; }
//	if (next header != TCP && != UDP) drop;   // extension headers too
//	m = flows6[{ip6->saddr, the 4 port bytes}]; as for IPv4, without an
//	IP header checksum;
//
// A unit sends IP-in-IP whatever the host cannot restore from fixed
// offsets (fragments, IPv4 options, IPv6 extension headers: see
// dataplane.apply), so a flow-ID packet always has its transport header
// right after a fixed IP header. Every drop and every restored packet is
// counted in a per-CPU array. VLAN-tagged frames pass untouched.

const (
	xdpDrop = 1
	xdpPass = 2

	mdData    = 0
	mdDataEnd = 4

	etIPv4 = 0x0008 // 0x0800 as a little-endian load
	etIPv6 = 0xdd86 // 0x86dd

	// Offsets from the frame's start: Ethernet, then IPv4 without
	// options, then the transport header.
	offEtherType = 12
	offIP        = 14
	offFrag      = offIP + 6
	offProto     = offIP + 9
	offIPSum     = offIP + 10
	offSrc       = offIP + 12
	offDst       = offIP + 16
	offL4        = offIP + 20
	offUDPSum    = offL4 + 6
	offTCPSum    = offL4 + 16

	// The same for IPv6, whose header has no checksum.
	offNext6   = offIP + 6
	offSrc6    = offIP + 8
	offDst6    = offIP + 24
	offL46     = offIP + 40
	offUDPSum6 = offL46 + 6
	offTCPSum6 = offL46 + 16

	protoIPIP = 4
	protoTCP  = 6
	protoUDP  = 17
	protoIPv6 = 41
	protoFrag = 44 // the IPv6 fragment header
)

// Counters, as indices of the counters map.
const (
	ctrDecapsulated = iota // flow-ID packets restored
	ctrIPIP                // IP-in-IP packets unwrapped
	ctrUnknownFlow         // to a tunnel address, no mapping for the flow ID
	ctrUnknownUnit         // to a tunnel address from an address no unit has
	ctrNotTunnel           // to a tunnel address, neither TCP/UDP nor IP-in-IP
	ctrMalformed           // IPv4 options, fragments (but of IP-in-IP), short transport headers
	numCounters
)

// mapping is a flows4 (flows6) value: the original source and
// destination address and ports as they appear in the client's packet,
// and the protocol.
const (
	keySize    = 8  // unit address, the 4 port bytes
	valueSize  = 16 // src 4, dst 4, sport 2, dport 2, proto 1, pad 3
	keySize6   = 20 // unit address, the 4 port bytes
	valueSize6 = 40 // src 16, dst 16, sport 2, dport 2, proto 1, pad 3
)

type maps struct {
	flows4   *ebpf.Map // {unit, flow ID} → mapping
	addrs4   *ebpf.Map // tunnel address → 1
	units4   *ebpf.Map // unit address → 1
	counters *ebpf.Map // per-CPU counters, of both families
	flows6   *ebpf.Map
	addrs6   *ebpf.Map
	units6   *ebpf.Map
}

// specs are the maps' specifications, in all's order.
func specs(maxFlows int) []*ebpf.MapSpec {
	// The mappings' maps are allocated as they fill: preallocated they
	// would take their whole bound at once.
	return []*ebpf.MapSpec{
		{Name: "tether_hflows4", Type: ebpf.Hash, KeySize: keySize, ValueSize: valueSize,
			MaxEntries: uint32(maxFlows), Flags: unix.BPF_F_NO_PREALLOC},
		{Name: "tether_haddrs4", Type: ebpf.Hash, KeySize: 4, ValueSize: 1, MaxEntries: maxAddrs},
		{Name: "tether_hunits4", Type: ebpf.Hash, KeySize: 4, ValueSize: 1, MaxEntries: maxAddrs},
		{Name: "tether_hctrs", Type: ebpf.PerCPUArray, KeySize: 4, ValueSize: 8, MaxEntries: numCounters},
		{Name: "tether_hflows6", Type: ebpf.Hash, KeySize: keySize6, ValueSize: valueSize6,
			MaxEntries: uint32(maxFlows), Flags: unix.BPF_F_NO_PREALLOC},
		{Name: "tether_haddrs6", Type: ebpf.Hash, KeySize: 16, ValueSize: 1, MaxEntries: maxAddrs},
		{Name: "tether_hunits6", Type: ebpf.Hash, KeySize: 16, ValueSize: 1, MaxEntries: maxAddrs},
	}
}

func newMaps(maxFlows int) (*maps, error) {
	var ms []*ebpf.Map
	for _, spec := range specs(maxFlows) {
		mp, err := ebpf.NewMap(spec)
		if err != nil {
			for _, m := range ms {
				m.Close()
			}
			return nil, fmt.Errorf("create map %s: %w", spec.Name, err)
		}
		ms = append(ms, mp)
	}
	return mapsOf(ms), nil
}

// mapsOf names maps given in all's order.
func mapsOf(ms []*ebpf.Map) *maps {
	return &maps{flows4: ms[0], addrs4: ms[1], units4: ms[2], counters: ms[3], flows6: ms[4], addrs6: ms[5], units6: ms[6]}
}

func (m *maps) all() []*ebpf.Map {
	return []*ebpf.Map{m.flows4, m.addrs4, m.units4, m.counters, m.flows6, m.addrs6, m.units6}
}

func (m *maps) close() {
	for _, mp := range m.all() {
		if mp != nil {
			mp.Close()
		}
	}
}

// maxAddrs bounds the tunnel addresses and the units a host knows.
const maxAddrs = 256

// builder assembles the program with fresh labels for its repeated
// blocks.
type builder struct {
	p      asm.Instructions
	m      *maps
	labels int
}

func (b *builder) add(ins ...asm.Instruction) { b.p = append(b.p, ins...) }

// label names the next instruction.
func (b *builder) label(name string, ins asm.Instruction) { b.add(ins.WithSymbol(name)) }

func (b *builder) fresh() string {
	b.labels++
	return fmt.Sprintf("l%d", b.labels)
}

// reload reloads the packet pointers into R2 (data) and R3 (data end):
// a helper call clobbers R1-R5.
func (b *builder) reload() {
	b.add(
		asm.LoadMem(asm.R2, asm.R6, mdData, asm.Word),
		asm.LoadMem(asm.R3, asm.R6, mdDataEnd, asm.Word),
	)
}

// need jumps to to unless the packet holds n bytes.
func (b *builder) need(n int32, to string) {
	b.add(
		asm.Mov.Reg(asm.R4, asm.R2),
		asm.Add.Imm(asm.R4, n),
		asm.JGT.Reg(asm.R4, asm.R3, to),
	)
}

// lookup looks up the key at R10+keyOff in mp, leaving the value pointer
// (or 0) in R0.
func (b *builder) lookup(mp *ebpf.Map, keyOff int16) {
	b.add(
		asm.LoadMapPtr(asm.R1, mp.FD()),
		asm.Mov.Reg(asm.R2, asm.R10),
		asm.Add.Imm(asm.R2, int32(keyOff)),
		asm.FnMapLookupElem.Call(),
	)
}

// countThen adds one to counter c and jumps to then ("pass" or "drop").
func (b *builder) countThen(c int32, then string) {
	b.add(asm.StoreImm(asm.R10, -16, int64(c), asm.Word))
	b.lookup(b.m.counters, -16)
	b.add(
		asm.JEq.Imm(asm.R0, 0, then),
		asm.LoadMem(asm.R1, asm.R0, 0, asm.DWord),
		asm.Add.Imm(asm.R1, 1),
		asm.StoreMem(asm.R0, 0, asm.R1, asm.DWord),
		asm.Ja.Label(then),
	)
}

// dropAs is a block that counts c and drops; it returns its label.
func (b *builder) dropAs(c int32, blocks *[]func()) string {
	l := b.fresh()
	*blocks = append(*blocks, func() {
		b.label(l, asm.Mov.Imm(asm.R0, 0))
		b.countThen(c, "drop")
	})
	return l
}

// addComplement adds the complement of the 16-bit word at off from base
// to R9, and addWord adds the word itself: the two halves of an RFC 1624
// checksum change. Words are loaded in host order; the Internet checksum
// is the same in either byte order (RFC 1071 §2(B)) as long as it is
// stored in the order its words were read.
func (b *builder) addComplement(base asm.Register, off int16) {
	b.add(
		asm.LoadMem(asm.R4, base, off, asm.Half),
		asm.Xor.Imm(asm.R4, 0xffff),
		asm.Add.Reg(asm.R9, asm.R4),
	)
}

func (b *builder) addWord(base asm.Register, off int16) {
	b.add(
		asm.LoadMem(asm.R4, base, off, asm.Half),
		asm.Add.Reg(asm.R9, asm.R4),
	)
}

// fold folds R4 (at most 20 bits) into 16.
func (b *builder) fold() {
	for range 2 {
		b.add(
			asm.Mov.Reg(asm.R5, asm.R4),
			asm.RSh.Imm(asm.R5, 16),
			asm.And.Imm(asm.R4, 0xffff),
			asm.Add.Reg(asm.R4, asm.R5),
		)
	}
}

// adjust updates the checksum at off by the change summed in R9, leaving
// the new checksum in R4 (not stored).
func (b *builder) adjust(off int16) {
	b.add(
		asm.LoadMem(asm.R4, asm.R2, off, asm.Half),
		asm.Xor.Imm(asm.R4, 0xffff),
		asm.Add.Reg(asm.R4, asm.R9),
	)
	b.fold()
	b.add(asm.Xor.Imm(asm.R4, 0xffff))
}

// family is what the program's code for one IP version needs.
type family struct {
	name                   string // label suffix
	src, dst, l4           int16  // offsets of the addresses and the transport header
	udpSum, tcpSum         int16
	addrLen                int16
	flows                  *ebpf.Map
	keyOff                 int16 // where the flows key is built on the stack
	valueProto, valuePorts int16 // offsets in a flows value
}

func program(m *maps) asm.Instructions {
	b := &builder{m: m}
	var blocks []func()
	malformed := b.dropAs(ctrMalformed, &blocks)
	unknownUnit := b.dropAs(ctrUnknownUnit, &blocks)
	unknownFlow := b.dropAs(ctrUnknownFlow, &blocks)
	notTunnel := b.dropAs(ctrNotTunnel, &blocks)
	drops := [3]string{malformed, unknownFlow, notTunnel}
	v4 := family{name: "4", src: offSrc, dst: offDst, l4: offL4, udpSum: offUDPSum, tcpSum: offTCPSum, addrLen: 4,
		flows: m.flows4, keyOff: -8, valueProto: 12, valuePorts: 8}
	v6 := family{name: "6", src: offSrc6, dst: offDst6, l4: offL46, udpSum: offUDPSum6, tcpSum: offTCPSum6, addrLen: 16,
		flows: m.flows6, keyOff: -24, valueProto: 36, valuePorts: 32}

	b.add(asm.Mov.Reg(asm.R6, asm.R1))
	b.reload()
	b.need(offL4, "pass")
	b.add(
		asm.LoadMem(asm.R5, asm.R2, offEtherType, asm.Half),
		asm.JEq.Imm(asm.R5, etIPv6, "v6"),
		asm.JNE.Imm(asm.R5, etIPv4, "pass"),
		asm.LoadMem(asm.R5, asm.R2, offDst, asm.Word),
		asm.StoreMem(asm.R10, -4, asm.R5, asm.Word),
	)
	b.lookup(m.addrs4, -4)
	b.add(asm.JEq.Imm(asm.R0, 0, "pass"))
	// To a tunnel address: restored, or dropped and counted.
	b.reload()
	b.need(offL4, malformed)
	b.add(
		asm.LoadMem(asm.R5, asm.R2, offIP, asm.Byte),
		asm.JNE.Imm(asm.R5, 0x45, malformed),
		asm.LoadMem(asm.R8, asm.R2, offProto, asm.Byte),
		// More-fragments or an offset: 0x3fff of the big-endian field,
		// 0xff3f of its little-endian load. Of tunnel traffic only
		// IP-in-IP may come in fragments (a router on the way cut the
		// outer packet), and only the kernel can reassemble them: R7
		// marks such a fragment for the pass.
		asm.Mov.Imm(asm.R7, 0),
		asm.LoadMem(asm.R5, asm.R2, offFrag, asm.Half),
		asm.And.Imm(asm.R5, 0xff3f),
		asm.JEq.Imm(asm.R5, 0, "whole4"),
		asm.JNE.Imm(asm.R8, protoIPIP, malformed),
		asm.Mov.Imm(asm.R7, 1),
	)
	b.label("whole4", asm.LoadMem(asm.R5, asm.R2, offSrc, asm.Word))
	b.add(asm.StoreMem(asm.R10, -8, asm.R5, asm.Word))
	b.lookup(m.units4, -8)
	b.add(
		asm.JEq.Imm(asm.R0, 0, unknownUnit),
		asm.JNE.Imm(asm.R7, 0, "pass"),
	)
	b.reload()
	b.add(asm.JEq.Imm(asm.R8, protoIPIP, "ipip4"))
	b.restore(v4, drops)
	b.unwrap(v4, 0x40, drops)

	// IPv6: the tunnel address and the unit are 16-byte keys, built on
	// the stack where the flows6 key will start.
	b.label("v6", asm.Mov.Imm(asm.R0, 0))
	b.need(offL46, "pass")
	b.add(
		asm.LoadMem(asm.R5, asm.R2, offDst6, asm.DWord),
		asm.StoreMem(asm.R10, -24, asm.R5, asm.DWord),
		asm.LoadMem(asm.R5, asm.R2, offDst6+8, asm.DWord),
		asm.StoreMem(asm.R10, -16, asm.R5, asm.DWord),
	)
	b.lookup(m.addrs6, -24)
	b.add(asm.JEq.Imm(asm.R0, 0, "pass"))
	b.reload()
	b.need(offL46, malformed)
	b.add(
		asm.LoadMem(asm.R5, asm.R2, offIP, asm.Byte),
		asm.And.Imm(asm.R5, 0xf0),
		asm.JNE.Imm(asm.R5, 0x60, malformed),
		asm.LoadMem(asm.R8, asm.R2, offNext6, asm.Byte),
		// Of tunnel traffic only IPv6-in-IPv6 comes in fragments (the
		// unit cuts the outer packet of one it may not cut otherwise,
		// RFC 2473 §7.1): R7 marks one for the pass.
		asm.Mov.Imm(asm.R7, 0),
		asm.JNE.Imm(asm.R8, protoFrag, "whole6"),
	)
	b.need(offL46+8, malformed)
	b.add(
		asm.LoadMem(asm.R5, asm.R2, offL46, asm.Byte),
		asm.JNE.Imm(asm.R5, protoIPv6, malformed),
		asm.Mov.Imm(asm.R7, 1),
	)
	b.label("whole6", asm.LoadMem(asm.R5, asm.R2, offSrc6, asm.DWord))
	b.add(
		asm.StoreMem(asm.R10, -24, asm.R5, asm.DWord),
		asm.LoadMem(asm.R5, asm.R2, offSrc6+8, asm.DWord),
		asm.StoreMem(asm.R10, -16, asm.R5, asm.DWord),
	)
	b.lookup(m.units6, -24)
	b.add(
		asm.JEq.Imm(asm.R0, 0, unknownUnit),
		asm.JNE.Imm(asm.R7, 0, "pass"),
	)
	b.reload()
	b.add(asm.JEq.Imm(asm.R8, protoIPv6, "ipip6"))
	b.restore(v6, drops)
	b.unwrap(v6, 0x60, drops)

	for _, f := range blocks {
		f()
	}
	b.label("pass", asm.Mov.Imm(asm.R0, xdpPass))
	b.add(asm.Return())
	b.label("drop", asm.Mov.Imm(asm.R0, xdpDrop))
	b.add(asm.Return())
	return b.p
}

// restore is the flow-ID path of family f: R2, R3 hold the packet
// pointers, R8 its protocol, and for IPv6 the unit's address is on the
// stack at f.keyOff already (IPv4 rebuilds it). It ends in "pass" or a
// drop.
func (b *builder) restore(f family, drops [3]string) {
	malformed, unknownFlow, notTunnel := drops[0], drops[1], drops[2]
	l := func(s string) string { return s + f.name }
	b.add(
		asm.JEq.Imm(asm.R8, protoTCP, l("tcp")),
		asm.JNE.Imm(asm.R8, protoUDP, notTunnel),
	)
	b.need(int32(f.udpSum)+2, malformed)
	b.add(asm.Ja.Label(l("flow")))
	b.label(l("tcp"), asm.Mov.Imm(asm.R0, 0))
	b.need(int32(f.tcpSum)+2, malformed)

	// The flow ID: {unit, the 4 port bytes}.
	b.label(l("flow"), asm.Mov.Imm(asm.R0, 0))
	if f.addrLen == 4 {
		b.add(
			asm.LoadMem(asm.R5, asm.R2, f.src, asm.Word),
			asm.StoreMem(asm.R10, f.keyOff, asm.R5, asm.Word),
		)
	}
	b.add(
		asm.LoadMem(asm.R5, asm.R2, f.l4, asm.Word),
		asm.StoreMem(asm.R10, f.keyOff+f.addrLen, asm.R5, asm.Word),
	)
	b.lookup(f.flows, f.keyOff)
	b.add(
		asm.JEq.Imm(asm.R0, 0, unknownFlow),
		asm.Mov.Reg(asm.R7, asm.R0),
		asm.LoadMem(asm.R5, asm.R7, f.valueProto, asm.Byte),
		asm.JNE.Reg(asm.R5, asm.R8, unknownFlow),
	)
	b.reload()
	b.need(int32(f.udpSum)+2, malformed)
	// The addresses' change, for every checksum.
	b.add(asm.Mov.Imm(asm.R9, 0))
	for off := int16(0); off < f.addrLen; off += 2 {
		b.addComplement(asm.R2, f.src+off)
		b.addComplement(asm.R2, f.dst+off)
		b.addWord(asm.R7, off)
		b.addWord(asm.R7, f.addrLen+off)
	}
	if f.addrLen == 4 {
		b.adjust(offIPSum)
		b.add(asm.StoreMem(asm.R2, offIPSum, asm.R4, asm.Half))
	}
	for off := int16(0); off < f.addrLen; off += 4 {
		b.add(
			asm.LoadMem(asm.R4, asm.R7, off, asm.Word),
			asm.StoreMem(asm.R2, f.src+off, asm.R4, asm.Word),
			asm.LoadMem(asm.R4, asm.R7, f.addrLen+off, asm.Word),
			asm.StoreMem(asm.R2, f.dst+off, asm.R4, asm.Word),
		)
	}
	// The ports' change, for the transport checksum alone.
	b.addComplement(asm.R2, f.l4)
	b.addComplement(asm.R2, f.l4+2)
	b.addWord(asm.R7, f.valuePorts)
	b.addWord(asm.R7, f.valuePorts+2)
	b.add(
		asm.LoadMem(asm.R4, asm.R7, f.valuePorts, asm.Word),
		asm.StoreMem(asm.R2, f.l4, asm.R4, asm.Word),
		asm.JEq.Imm(asm.R8, protoUDP, l("udpsum")),
	)
	b.need(int32(f.tcpSum)+2, malformed)
	b.adjust(f.tcpSum)
	b.add(
		asm.StoreMem(asm.R2, f.tcpSum, asm.R4, asm.Half),
		asm.Ja.Label(l("restored")),
	)
	// A UDP checksum of 0 means none (IPv4; IPv6 forbids it, and the
	// stack drops the packet as it came); a computed 0 is sent as 0xffff.
	b.label(l("udpsum"), asm.LoadMem(asm.R4, asm.R2, f.udpSum, asm.Half))
	b.add(asm.JEq.Imm(asm.R4, 0, l("restored")))
	b.adjust(f.udpSum)
	b.add(
		asm.JNE.Imm(asm.R4, 0, l("udpstore")),
		asm.Mov.Imm(asm.R4, 0xffff),
	)
	b.label(l("udpstore"), asm.StoreMem(asm.R2, f.udpSum, asm.R4, asm.Half))
	b.label(l("restored"), asm.Mov.Imm(asm.R0, 0))
	b.countThen(ctrDecapsulated, "pass")
}

// unwrap is the IP-in-IP path of family f (label "ipip4" or "ipip6"): an
// inner packet of the same IP version (version nibble ver) follows the
// outer header; the Ethernet header moves onto the outer header's last
// 14 bytes and the frame starts that much later.
func (b *builder) unwrap(f family, ver int32, drops [3]string) {
	malformed, notTunnel := drops[0], drops[2]
	outer := int32(f.l4 - offIP)
	b.label("ipip"+f.name, asm.Mov.Imm(asm.R0, 0))
	b.need(int32(f.l4)+outer, malformed)
	b.add(
		asm.LoadMem(asm.R5, asm.R2, f.l4, asm.Byte),
		asm.And.Imm(asm.R5, 0xf0),
		asm.JNE.Imm(asm.R5, ver, notTunnel),
		asm.LoadMem(asm.R4, asm.R2, 0, asm.DWord),
		asm.StoreMem(asm.R2, int16(outer), asm.R4, asm.DWord),
		asm.LoadMem(asm.R4, asm.R2, 8, asm.Word),
		asm.StoreMem(asm.R2, int16(outer)+8, asm.R4, asm.Word),
		asm.LoadMem(asm.R4, asm.R2, 12, asm.Half),
		asm.StoreMem(asm.R2, int16(outer)+12, asm.R4, asm.Half),
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.Mov.Imm(asm.R2, outer),
		asm.FnXdpAdjustHead.Call(),
		asm.JNE.Imm(asm.R0, 0, malformed),
	)
	b.countThen(ctrIPIP, "pass")
}

func loadProgram(m *maps) (*ebpf.Program, error) {
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:         "tether_host",
		Type:         ebpf.XDP,
		License:      "MIT",
		Instructions: program(m),
	})
	if err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			return nil, fmt.Errorf("load XDP program: %+v", ve)
		}
		return nil, fmt.Errorf("load XDP program: %w", err)
	}
	return prog, nil
}
