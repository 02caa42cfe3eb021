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
//	eth = data; ip = eth + 14; need the Ethernet and IPv4 headers;
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
// Every drop and every restored packet is counted in a per-CPU array.
// VLAN tags and IPv6 are not handled: such packets pass untouched, and a
// tunnel address is IPv4.

const (
	xdpDrop = 1
	xdpPass = 2

	mdData    = 0
	mdDataEnd = 4

	etIPv4 = 0x0008 // 0x0800 as a little-endian load

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

	protoIPIP = 4
	protoTCP  = 6
	protoUDP  = 17
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

// mapping is a flows4 value: the original source and destination address
// and ports as they appear in the client's packet, and the protocol.
const (
	keySize   = 8  // unit address, the 4 port bytes
	valueSize = 16 // src 4, dst 4, sport 2, dport 2, proto 1, pad 3
)

type maps struct {
	flows4   *ebpf.Map // {unit, flow ID} → mapping
	addrs4   *ebpf.Map // tunnel address → 1
	units4   *ebpf.Map // unit address → 1
	counters *ebpf.Map // per-CPU counters
}

func newMaps(maxFlows int) (*maps, error) {
	var m maps
	var err error
	mk := func(spec *ebpf.MapSpec) *ebpf.Map {
		if err != nil {
			return nil
		}
		var mp *ebpf.Map
		if mp, err = ebpf.NewMap(spec); err != nil {
			err = fmt.Errorf("create map %s: %w", spec.Name, err)
		}
		return mp
	}
	// The mappings' map is allocated as it fills: preallocated it would
	// take its whole bound at once.
	m.flows4 = mk(&ebpf.MapSpec{Name: "tether_hflows4", Type: ebpf.Hash, KeySize: keySize, ValueSize: valueSize,
		MaxEntries: uint32(maxFlows), Flags: unix.BPF_F_NO_PREALLOC})
	m.addrs4 = mk(&ebpf.MapSpec{Name: "tether_haddrs4", Type: ebpf.Hash, KeySize: 4, ValueSize: 1, MaxEntries: maxAddrs})
	m.units4 = mk(&ebpf.MapSpec{Name: "tether_hunits4", Type: ebpf.Hash, KeySize: 4, ValueSize: 1, MaxEntries: maxAddrs})
	m.counters = mk(&ebpf.MapSpec{Name: "tether_hctrs", Type: ebpf.PerCPUArray, KeySize: 4, ValueSize: 8, MaxEntries: numCounters})
	if err != nil {
		m.close()
		return nil, err
	}
	return &m, nil
}

func (m *maps) all() []*ebpf.Map { return []*ebpf.Map{m.flows4, m.addrs4, m.units4, m.counters} }

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

func program(m *maps) asm.Instructions {
	b := &builder{m: m}
	var blocks []func()
	malformed := b.dropAs(ctrMalformed, &blocks)
	unknownUnit := b.dropAs(ctrUnknownUnit, &blocks)
	unknownFlow := b.dropAs(ctrUnknownFlow, &blocks)
	notTunnel := b.dropAs(ctrNotTunnel, &blocks)

	b.add(asm.Mov.Reg(asm.R6, asm.R1))
	b.reload()
	b.need(offL4, "pass")
	b.add(
		asm.LoadMem(asm.R5, asm.R2, offEtherType, asm.Half),
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
		asm.JEq.Imm(asm.R5, 0, "whole"),
		asm.JNE.Imm(asm.R8, protoIPIP, malformed),
		asm.Mov.Imm(asm.R7, 1),
	)
	b.label("whole", asm.LoadMem(asm.R5, asm.R2, offSrc, asm.Word))
	b.add(asm.StoreMem(asm.R10, -4, asm.R5, asm.Word))
	b.lookup(m.units4, -4)
	b.add(
		asm.JEq.Imm(asm.R0, 0, unknownUnit),
		asm.JNE.Imm(asm.R7, 0, "pass"),
	)
	b.reload()
	b.add(
		asm.JEq.Imm(asm.R8, protoIPIP, "ipip"),
		asm.JEq.Imm(asm.R8, protoTCP, "tcp"),
		asm.JNE.Imm(asm.R8, protoUDP, notTunnel),
	)
	b.need(offUDPSum+2, malformed)
	b.add(asm.Ja.Label("flow"))
	b.label("tcp", asm.Mov.Imm(asm.R0, 0))
	b.need(offTCPSum+2, malformed)

	// The flow ID: {unit, the 4 port bytes}.
	b.label("flow", asm.LoadMem(asm.R5, asm.R2, offSrc, asm.Word))
	b.add(
		asm.StoreMem(asm.R10, -8, asm.R5, asm.Word),
		asm.LoadMem(asm.R5, asm.R2, offL4, asm.Word),
		asm.StoreMem(asm.R10, -4, asm.R5, asm.Word),
	)
	b.lookup(m.flows4, -8)
	b.add(
		asm.JEq.Imm(asm.R0, 0, unknownFlow),
		asm.Mov.Reg(asm.R7, asm.R0),
		asm.LoadMem(asm.R5, asm.R7, 12, asm.Byte),
		asm.JNE.Reg(asm.R5, asm.R8, unknownFlow),
	)
	b.reload()
	b.need(offUDPSum+2, malformed)
	// The addresses' change, for both checksums.
	b.add(asm.Mov.Imm(asm.R9, 0))
	for _, off := range []int16{offSrc, offSrc + 2, offDst, offDst + 2} {
		b.addComplement(asm.R2, off)
	}
	for _, off := range []int16{0, 2, 4, 6} {
		b.addWord(asm.R7, off)
	}
	b.adjust(offIPSum)
	b.add(
		asm.StoreMem(asm.R2, offIPSum, asm.R4, asm.Half),
		asm.LoadMem(asm.R4, asm.R7, 0, asm.Word),
		asm.StoreMem(asm.R2, offSrc, asm.R4, asm.Word),
		asm.LoadMem(asm.R4, asm.R7, 4, asm.Word),
		asm.StoreMem(asm.R2, offDst, asm.R4, asm.Word),
	)
	// The ports' change, for the transport checksum alone.
	b.addComplement(asm.R2, offL4)
	b.addComplement(asm.R2, offL4+2)
	b.addWord(asm.R7, 8)
	b.addWord(asm.R7, 10)
	b.add(
		asm.LoadMem(asm.R4, asm.R7, 8, asm.Word),
		asm.StoreMem(asm.R2, offL4, asm.R4, asm.Word),
		asm.JEq.Imm(asm.R8, protoUDP, "udpsum"),
	)
	b.need(offTCPSum+2, malformed)
	b.adjust(offTCPSum)
	b.add(
		asm.StoreMem(asm.R2, offTCPSum, asm.R4, asm.Half),
		asm.Ja.Label("restored"),
	)
	// A UDP checksum of 0 means none (IPv4); a computed 0 is sent as
	// 0xffff.
	b.label("udpsum", asm.LoadMem(asm.R4, asm.R2, offUDPSum, asm.Half))
	b.add(asm.JEq.Imm(asm.R4, 0, "restored"))
	b.adjust(offUDPSum)
	b.add(
		asm.JNE.Imm(asm.R4, 0, "udpstore"),
		asm.Mov.Imm(asm.R4, 0xffff),
	)
	b.label("udpstore", asm.StoreMem(asm.R2, offUDPSum, asm.R4, asm.Half))
	b.label("restored", asm.Mov.Imm(asm.R0, 0))
	b.countThen(ctrDecapsulated, "pass")

	// IP-in-IP: an inner IPv4 header follows; the Ethernet header moves
	// onto the outer IP header's last 14 bytes and the frame starts 20
	// bytes later.
	b.label("ipip", asm.Mov.Imm(asm.R0, 0))
	b.need(offL4+20, malformed)
	b.add(
		asm.LoadMem(asm.R5, asm.R2, offL4, asm.Byte),
		asm.And.Imm(asm.R5, 0xf0),
		asm.JNE.Imm(asm.R5, 0x40, notTunnel),
		asm.LoadMem(asm.R4, asm.R2, 0, asm.DWord),
		asm.StoreMem(asm.R2, 20, asm.R4, asm.DWord),
		asm.LoadMem(asm.R4, asm.R2, 8, asm.Word),
		asm.StoreMem(asm.R2, 28, asm.R4, asm.Word),
		asm.LoadMem(asm.R4, asm.R2, 12, asm.Half),
		asm.StoreMem(asm.R2, 32, asm.R4, asm.Half),
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.Mov.Imm(asm.R2, 20),
		asm.FnXdpAdjustHead.Call(),
		asm.JNE.Imm(asm.R0, 0, malformed),
	)
	b.countThen(ctrIPIP, "pass")

	for _, f := range blocks {
		f()
	}
	b.label("pass", asm.Mov.Imm(asm.R0, xdpPass))
	b.add(asm.Return())
	b.label("drop", asm.Mov.Imm(asm.R0, xdpDrop))
	b.add(asm.Return())
	return b.p
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
