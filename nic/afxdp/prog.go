package afxdp

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
)

// The redirect program. In C it would read:
//
//	eth = data; if (eth + 14 > end) pass;
//	l3 = 14, or 18 behind one 802.1Q tag;
//	IPv4 (any header length; TCP/UDP for the source checks):
//	    if (dst4[ip->daddr]) redirect;
//	    if (later fragment) { if (frag4[{saddr, daddr, id, proto}]) redirect; pass; }
//	    if (src4[{saddr, sport, proto}] && !local4[ip->daddr]) { if (MF) frag4[...] = 1; redirect; }
//	    ICMP error quoting TCP/UDP:
//	        if (src4[{quoted daddr, dport, proto}] && !local4[ip->daddr]) redirect;
//	IPv6 (TCP/UDP right after the fixed header, or after a fragment
//	header, for the source checks):
//	    if (dst6[ip6->daddr]) redirect;
//	    if (later fragment) { if (frag6[{saddr, daddr, id}]) redirect; pass; }
//	    if (src6[{saddr, sport, proto}] && !local6[ip6->daddr]) { if (M) frag6[...] = 1; redirect; }
//	    ICMPv6 error quoting TCP/UDP:
//	        if (src6[{quoted daddr, dport, proto}] && !local6[ip6->daddr]) redirect;
//	pass;
//	redirect: return bpf_redirect_map(xsks, ctx->rx_queue_index, XDP_DROP);
//
// Only Tether's traffic is redirected; the unit's own always passes. When
// no socket serves the queue (the forwarder died and its successor has
// not bound yet) Tether's traffic is dropped, not passed: the kernel would
// forward half-NAT backends' replies untranslated and send the backends
// ICMP redirects that make them route around the unit for minutes, where
// a drop costs the connections a retransmission.
//
// What the source checks catch is let go when it is addressed to one of
// the unit's own addresses: a half-NAT backend's answers to the unit
// itself (its health probes, which the backend answers from its service
// port) belong to the unit's kernel, and caught they were dropped as no
// flow of Tether's, failing every probe. The addresses follow the
// kernel's (followLocal). The check comes after a source matched, so
// that the unit's other traffic pays for no lookup but the source's.
//
// An ICMP error about a packet toward a half-NAT backend's service (a
// port unreachable from the backend itself, a too-big from a router on
// the way to it) belongs to that flow too: it is caught by what it
// quotes, the backend's (address, port, protocol) as the destination,
// and the forwarder turns it into the client's error about the VIP.
//
// A half-NAT reply is caught by its source address and port, which only
// a datagram's first fragment carries. So the program remembers, in an
// LRU map, each fragmented datagram whose first fragment it redirected,
// and redirects the datagram's later fragments by (source, destination,
// identification): without that the kernel forwarded them to the client
// untranslated, and the client could never reassemble the reply. A later
// fragment that overtakes its first one is not caught (the pipeline
// would have held it); fragments rarely reorder on the links a unit
// serves, and the datagram is then lost as it was before.

const (
	xdpDrop = 1
	xdpPass = 2

	// xdp_md offsets.
	mdData     = 0
	mdDataEnd  = 4
	mdRxQueue  = 16
	ethHdrLen  = 14
	vlanHdrLen = 4

	// EtherTypes as a little-endian load of their two network-order bytes.
	etIPv4 = 0x0008
	etIPv6 = 0xdd86
	etVLAN = 0x0081
)

// maps are the program's maps. Keys are written by the port in network
// byte order, exactly as they appear in packets.
type maps struct {
	xsks *ebpf.Map // queue index → socket
	dst4 *ebpf.Map // IPv4 address → 1
	dst6 *ebpf.Map // IPv6 address → 1
	src4 *ebpf.Map // {IPv4 address, port, protocol, 0} → 1
	src6 *ebpf.Map // {IPv6 address, port, protocol, 0} → 1
	// The datagrams whose later fragments follow a first fragment the
	// source maps caught: {source, destination, ID, protocol, 0} (IPv4),
	// {source, destination, ID} (IPv6) → 1.
	frag4 *ebpf.Map
	frag6 *ebpf.Map
	// The unit's own addresses → 1.
	local4 *ebpf.Map
	local6 *ebpf.Map
}

const (
	src4KeySize  = 8
	src6KeySize  = 20
	frag4KeySize = 12
	frag6KeySize = 36
	// fragDatagrams bounds the fragmented replies remembered at once;
	// the least recently used goes first (its fragments have long been
	// forwarded).
	fragDatagrams = 4096
	// maxLocal bounds the unit's own addresses of each family.
	maxLocal = 4096
)

func newMaps(queues int) (*maps, error) {
	var m maps
	var err error
	mk := func(spec *ebpf.MapSpec) *ebpf.Map {
		if err != nil {
			return nil
		}
		var mp *ebpf.Map
		mp, err = ebpf.NewMap(spec)
		if err != nil {
			err = fmt.Errorf("create map %s: %w", spec.Name, err)
		}
		return mp
	}
	m.xsks = mk(&ebpf.MapSpec{Name: "tether_xsks", Type: ebpf.XSKMap, KeySize: 4, ValueSize: 4, MaxEntries: uint32(max(queues, 1))})
	m.dst4 = mk(&ebpf.MapSpec{Name: "tether_dst4", Type: ebpf.Hash, KeySize: 4, ValueSize: 1, MaxEntries: 65536})
	m.dst6 = mk(&ebpf.MapSpec{Name: "tether_dst6", Type: ebpf.Hash, KeySize: 16, ValueSize: 1, MaxEntries: 65536})
	m.src4 = mk(&ebpf.MapSpec{Name: "tether_src4", Type: ebpf.Hash, KeySize: src4KeySize, ValueSize: 1, MaxEntries: 65536})
	m.src6 = mk(&ebpf.MapSpec{Name: "tether_src6", Type: ebpf.Hash, KeySize: src6KeySize, ValueSize: 1, MaxEntries: 65536})
	m.frag4 = mk(&ebpf.MapSpec{Name: "tether_frag4", Type: ebpf.LRUHash, KeySize: frag4KeySize, ValueSize: 1, MaxEntries: fragDatagrams})
	m.frag6 = mk(&ebpf.MapSpec{Name: "tether_frag6", Type: ebpf.LRUHash, KeySize: frag6KeySize, ValueSize: 1, MaxEntries: fragDatagrams})
	m.local4 = mk(&ebpf.MapSpec{Name: "tether_local4", Type: ebpf.Hash, KeySize: 4, ValueSize: 1, MaxEntries: maxLocal})
	m.local6 = mk(&ebpf.MapSpec{Name: "tether_local6", Type: ebpf.Hash, KeySize: 16, ValueSize: 1, MaxEntries: maxLocal})
	if err != nil {
		m.close()
		return nil, err
	}
	return &m, nil
}

func (m *maps) close() {
	for _, mp := range []*ebpf.Map{m.xsks, m.dst4, m.dst6, m.src4, m.src6, m.frag4, m.frag6, m.local4, m.local6} {
		if mp != nil {
			mp.Close()
		}
	}
}

// reloadData reloads the packet pointers after a helper call (which
// clobbers R1-R5) into R2 (data) and R3 (data_end).
func reloadData() asm.Instructions {
	return asm.Instructions{
		asm.LoadMem(asm.R2, asm.R6, mdData, asm.Word),
		asm.LoadMem(asm.R3, asm.R6, mdDataEnd, asm.Word),
	}
}

// need jumps to pass unless the packet holds n bytes from data.
func need(n int32) asm.Instructions {
	return asm.Instructions{
		asm.Mov.Reg(asm.R4, asm.R2),
		asm.Add.Imm(asm.R4, n),
		asm.JGT.Reg(asm.R4, asm.R3, "pass"),
	}
}

// lookup jumps to redirect if the key at R10+keyOff is in m.
func lookup(m *ebpf.Map, keyOff int16) asm.Instructions {
	return lookupTo(m, keyOff, "redirect")
}

// lookupTo jumps to label if the key at R10+keyOff is in m.
func lookupTo(m *ebpf.Map, keyOff int16, label string) asm.Instructions {
	return asm.Instructions{
		asm.LoadMapPtr(asm.R1, m.FD()),
		asm.Mov.Reg(asm.R2, asm.R10),
		asm.Add.Imm(asm.R2, int32(keyOff)),
		asm.FnMapLookupElem.Call(),
		asm.JNE.Imm(asm.R0, 0, label),
	}
}

// remember records the datagram whose key is at R10+keyOff in m (value:
// the byte at oneValue), then jumps to redirect.
func remember(m *ebpf.Map, keyOff int16) asm.Instructions {
	return asm.Instructions{
		asm.StoreImm(asm.R10, oneValue, 1, asm.Byte),
		asm.LoadMapPtr(asm.R1, m.FD()),
		asm.Mov.Reg(asm.R2, asm.R10),
		asm.Add.Imm(asm.R2, int32(keyOff)),
		asm.Mov.Reg(asm.R3, asm.R10),
		asm.Add.Imm(asm.R3, oneValue),
		asm.Mov.Imm(asm.R4, 0), // BPF_ANY
		asm.FnMapUpdateElem.Call(),
		asm.Ja.Label("redirect"),
	}
}

// Fragment fields, as a little-endian load of their two network-order
// bytes (as the EtherTypes above): the IPv4 flags-and-offset word's
// offset and MF bits, the IPv6 fragment header's offset and M bits.
const (
	v4Offset = 0xff1f
	v4MF     = 0x0020
	v6Offset = 0xf8ff
	v6M      = 0x0100
)

// Stack slots of the keys. The destination stays put while the source
// checks run: a caught packet is looked up in the local map by it.
const (
	dst4Key  = -4  // 4 bytes
	src4Key  = -16 // 8 bytes
	frag4Key = -32 // 12 bytes
	dst6Key  = -16 // 16 bytes
	src6Key  = -40 // 20 bytes
	frag6Key = -80 // 36 bytes
	oneValue = -88 // the value remember stores
)

// ipv4 checks an IPv4 header at l3. Its length (IHL) may be anything
// from 5 to 15 words: the transport header is found at l3 + R7, and an
// ICMP error's quoted transport header at l3 + R7 + 8 + R8.
func ipv4(m *maps, l3 int16) asm.Instructions {
	label := func(s string) string { return fmt.Sprintf("v4%s%d", s, l3) }
	tcpUDP, later, icmp, quote, quoteKey, match, own := label("src"), label("later"), label("icmp"), label("quote"), label("quotekey"), label("match"), label("own")
	// fragKey puts {source, destination, ID, protocol, 0} at frag4Key.
	fragKey := func() asm.Instructions {
		return asm.Instructions{
			asm.LoadMem(asm.R5, asm.R2, l3+12, asm.Word),
			asm.StoreMem(asm.R10, frag4Key, asm.R5, asm.Word),
			asm.LoadMem(asm.R5, asm.R2, l3+16, asm.Word),
			asm.StoreMem(asm.R10, frag4Key+4, asm.R5, asm.Word),
			asm.LoadMem(asm.R5, asm.R2, l3+4, asm.Half),
			asm.StoreMem(asm.R10, frag4Key+8, asm.R5, asm.Half),
			asm.LoadMem(asm.R5, asm.R2, l3+9, asm.Byte),
			asm.StoreMem(asm.R10, frag4Key+10, asm.R5, asm.Byte),
			asm.StoreImm(asm.R10, frag4Key+11, 0, asm.Byte),
		}
	}
	// headerLen puts the length in bytes of the IPv4 header whose first
	// byte is in R5 into reg, or jumps to pass if it is not IPv4 or
	// shorter than 20 bytes. The verifier then knows reg is 20 to 60.
	headerLen := func(reg asm.Register) asm.Instructions {
		return asm.Instructions{
			asm.Mov.Reg(asm.R4, asm.R5),
			asm.And.Imm(asm.R4, 0xf0),
			asm.JNE.Imm(asm.R4, 0x40, "pass"),
			asm.And.Imm(asm.R5, 0x0f),
			asm.JLT.Imm(asm.R5, 5, "pass"),
			asm.LSh.Imm(asm.R5, 2),
			asm.Mov.Reg(reg, asm.R5),
		}
	}
	var p asm.Instructions
	p = append(p, need(int32(l3)+20)...)
	// Destination.
	p = append(p,
		asm.LoadMem(asm.R5, asm.R2, l3+16, asm.Word),
		asm.StoreMem(asm.R10, dst4Key, asm.R5, asm.Word),
	)
	p = append(p, lookup(m.dst4, dst4Key)...)
	// Source: TCP/UDP, and ICMP errors quoting them.
	p = append(p, reloadData()...)
	p = append(p, need(int32(l3)+20)...)
	p = append(p, asm.LoadMem(asm.R5, asm.R2, l3, asm.Byte))
	p = append(p, headerLen(asm.R7)...)
	p = append(p,
		asm.LoadMem(asm.R4, asm.R2, l3+9, asm.Byte),
		asm.JEq.Imm(asm.R4, 1, icmp),
		asm.JEq.Imm(asm.R4, 6, tcpUDP),
		asm.JNE.Imm(asm.R4, 17, "pass"),
		asm.LoadMem(asm.R5, asm.R2, l3+6, asm.Half).WithSymbol(tcpUDP),
		asm.And.Imm(asm.R5, v4Offset),
		asm.JNE.Imm(asm.R5, 0, later),
		// A whole datagram or a first fragment: {address, port,
		// protocol}, the port at l3 + R7.
		asm.Mov.Reg(asm.R1, asm.R2),
		asm.Add.Reg(asm.R1, asm.R7),
		asm.Mov.Reg(asm.R5, asm.R1),
		asm.Add.Imm(asm.R5, int32(l3)+4),
		asm.JGT.Reg(asm.R5, asm.R3, "pass"),
		asm.LoadMem(asm.R5, asm.R2, l3+12, asm.Word),
		asm.StoreMem(asm.R10, src4Key, asm.R5, asm.Word),
		asm.LoadMem(asm.R5, asm.R1, l3, asm.Half),
		asm.StoreMem(asm.R10, src4Key+4, asm.R5, asm.Half),
		asm.StoreMem(asm.R10, src4Key+6, asm.R4, asm.Byte),
		asm.StoreImm(asm.R10, src4Key+7, 0, asm.Byte),
	)
	p = append(p, lookupTo(m.src4, src4Key, match)...)
	p = append(p, asm.Ja.Label("pass"))
	// Caught, unless addressed to the unit itself; a first fragment's
	// datagram is remembered for the rest.
	l := lookupTo(m.local4, dst4Key, "pass")
	l[0] = l[0].WithSymbol(match)
	p = append(p, l...)
	p = append(p, reloadData()...)
	p = append(p, need(int32(l3)+20)...)
	p = append(p,
		asm.LoadMem(asm.R5, asm.R2, l3+6, asm.Half),
		asm.And.Imm(asm.R5, v4MF),
		asm.JEq.Imm(asm.R5, 0, "redirect"),
	)
	p = append(p, fragKey()...)
	p = append(p, remember(m.frag4, frag4Key)...)
	// A later fragment: caught if its datagram's first fragment was
	// (and so was not the unit's own).
	k := fragKey()
	k[0] = k[0].WithSymbol(later)
	p = append(p, k...)
	p = append(p, lookup(m.frag4, frag4Key)...)
	p = append(p, asm.Ja.Label("pass"))
	// An ICMP error (unreachable, time exceeded, parameter problem) at
	// l3 + R7, quoting an IPv4 header at l3 + R7 + 8 whose datagram's
	// first fragment carried TCP/UDP ports.
	p = append(p,
		asm.Mov.Reg(asm.R1, asm.R2).WithSymbol(icmp),
		asm.Add.Reg(asm.R1, asm.R7),
		asm.Mov.Reg(asm.R5, asm.R1),
		asm.Add.Imm(asm.R5, int32(l3)+8+20),
		asm.JGT.Reg(asm.R5, asm.R3, "pass"),
		asm.LoadMem(asm.R5, asm.R1, l3, asm.Byte),
		asm.JEq.Imm(asm.R5, 3, quote),
		asm.JEq.Imm(asm.R5, 11, quote),
		asm.JNE.Imm(asm.R5, 12, "pass"),
		asm.LoadMem(asm.R5, asm.R1, l3+8, asm.Byte).WithSymbol(quote),
	)
	p = append(p, headerLen(asm.R8)...)
	p = append(p,
		asm.LoadMem(asm.R5, asm.R1, l3+8+6, asm.Half),
		asm.And.Imm(asm.R5, v4Offset),
		asm.JNE.Imm(asm.R5, 0, "pass"),
		asm.LoadMem(asm.R4, asm.R1, l3+8+9, asm.Byte),
		asm.JEq.Imm(asm.R4, 6, quoteKey),
		asm.JNE.Imm(asm.R4, 17, "pass"),
		asm.LoadMem(asm.R5, asm.R1, l3+8+16, asm.Word).WithSymbol(quoteKey),
		asm.StoreMem(asm.R10, src4Key, asm.R5, asm.Word),
		asm.Add.Reg(asm.R1, asm.R8),
		asm.Mov.Reg(asm.R5, asm.R1),
		asm.Add.Imm(asm.R5, int32(l3)+8+4),
		asm.JGT.Reg(asm.R5, asm.R3, "pass"),
		asm.LoadMem(asm.R5, asm.R1, l3+8+2, asm.Half),
		asm.StoreMem(asm.R10, src4Key+4, asm.R5, asm.Half),
		asm.StoreMem(asm.R10, src4Key+6, asm.R4, asm.Byte),
		asm.StoreImm(asm.R10, src4Key+7, 0, asm.Byte),
	)
	p = append(p, lookupTo(m.src4, src4Key, own)...)
	p = append(p, asm.Ja.Label("pass"))
	l = lookupTo(m.local4, dst4Key, "pass")
	l[0] = l[0].WithSymbol(own)
	p = append(p, l...)
	p = append(p, asm.Ja.Label("redirect"))
	return p
}

// ipv6 checks an IPv6 header at l3.
func ipv6(m *maps, l3 int16) asm.Instructions {
	label := func(s string) string { return fmt.Sprintf("v6%s%d", s, l3) }
	tcpUDP, frag, first, later, icmp, quote, own := label("src"), label("frag"), label("first"), label("later"), label("icmp"), label("quote"), label("own")
	// fragKey puts {source, destination, ID} at frag6Key.
	fragKey := func() asm.Instructions {
		return asm.Instructions{
			asm.LoadMem(asm.R5, asm.R2, l3+8, asm.DWord),
			asm.StoreMem(asm.R10, frag6Key, asm.R5, asm.DWord),
			asm.LoadMem(asm.R5, asm.R2, l3+16, asm.DWord),
			asm.StoreMem(asm.R10, frag6Key+8, asm.R5, asm.DWord),
			asm.LoadMem(asm.R5, asm.R2, l3+24, asm.DWord),
			asm.StoreMem(asm.R10, frag6Key+16, asm.R5, asm.DWord),
			asm.LoadMem(asm.R5, asm.R2, l3+32, asm.DWord),
			asm.StoreMem(asm.R10, frag6Key+24, asm.R5, asm.DWord),
			asm.LoadMem(asm.R5, asm.R2, l3+44, asm.Word),
			asm.StoreMem(asm.R10, frag6Key+32, asm.R5, asm.Word),
		}
	}
	// srcKey puts {source, the port at portOff, the protocol in R4, 0} at
	// src6Key and looks it up: R0 is the answer.
	srcKey := func(portOff int16) asm.Instructions {
		return asm.Instructions{
			asm.LoadMem(asm.R5, asm.R2, l3+8, asm.DWord),
			asm.StoreMem(asm.R10, src6Key, asm.R5, asm.DWord),
			asm.LoadMem(asm.R5, asm.R2, l3+16, asm.DWord),
			asm.StoreMem(asm.R10, src6Key+8, asm.R5, asm.DWord),
			asm.LoadMem(asm.R5, asm.R2, portOff, asm.Half),
			asm.StoreMem(asm.R10, src6Key+16, asm.R5, asm.Half),
			asm.StoreMem(asm.R10, src6Key+18, asm.R4, asm.Byte),
			asm.StoreImm(asm.R10, src6Key+19, 0, asm.Byte),
			asm.LoadMapPtr(asm.R1, m.src6.FD()),
			asm.Mov.Reg(asm.R2, asm.R10),
			asm.Add.Imm(asm.R2, src6Key),
			asm.FnMapLookupElem.Call(),
		}
	}
	var p asm.Instructions
	p = append(p, need(int32(l3)+40)...)
	p = append(p,
		asm.LoadMem(asm.R5, asm.R2, l3+24, asm.DWord),
		asm.StoreMem(asm.R10, dst6Key, asm.R5, asm.DWord),
		asm.LoadMem(asm.R5, asm.R2, l3+32, asm.DWord),
		asm.StoreMem(asm.R10, dst6Key+8, asm.R5, asm.DWord),
	)
	p = append(p, lookup(m.dst6, dst6Key)...)
	p = append(p, reloadData()...)
	p = append(p, need(int32(l3)+44)...)
	p = append(p,
		asm.LoadMem(asm.R4, asm.R2, l3+6, asm.Byte),
		asm.JEq.Imm(asm.R4, 44, frag),
		asm.JEq.Imm(asm.R4, 58, icmp),
		asm.JEq.Imm(asm.R4, 6, tcpUDP),
		asm.JNE.Imm(asm.R4, 17, "pass"),
	)
	s := srcKey(l3 + 40)
	s[0] = s[0].WithSymbol(tcpUDP)
	p = append(p, s...)
	p = append(p,
		asm.JNE.Imm(asm.R0, 0, own),
		asm.Ja.Label("pass"),
	)
	// A fragment header: a later fragment, or a first one with TCP/UDP
	// right after it.
	n := need(int32(l3) + 48)
	n[0] = n[0].WithSymbol(frag)
	p = append(p, n...)
	p = append(p,
		asm.LoadMem(asm.R5, asm.R2, l3+42, asm.Half),
		asm.And.Imm(asm.R5, v6Offset),
		asm.JNE.Imm(asm.R5, 0, later),
	)
	p = append(p, need(int32(l3)+52)...)
	p = append(p,
		asm.LoadMem(asm.R4, asm.R2, l3+40, asm.Byte),
		asm.JEq.Imm(asm.R4, 6, first),
		asm.JNE.Imm(asm.R4, 17, "pass"),
	)
	s = srcKey(l3 + 48)
	s[0] = s[0].WithSymbol(first)
	p = append(p, s...)
	p = append(p, asm.JEq.Imm(asm.R0, 0, "pass"))
	// Caught, unless addressed to the unit itself: a first fragment's
	// datagram is remembered for the rest.
	p = append(p, lookupTo(m.local6, dst6Key, "pass")...)
	p = append(p, reloadData()...)
	p = append(p, need(int32(l3)+48)...)
	p = append(p,
		asm.LoadMem(asm.R5, asm.R2, l3+42, asm.Half),
		asm.And.Imm(asm.R5, v6M),
		asm.JEq.Imm(asm.R5, 0, "redirect"),
	)
	p = append(p, fragKey()...)
	p = append(p, remember(m.frag6, frag6Key)...)
	// A later fragment: caught if its datagram's first fragment was
	// (and so was not the unit's own).
	k := fragKey()
	k[0] = k[0].WithSymbol(later)
	p = append(p, k...)
	p = append(p, lookup(m.frag6, frag6Key)...)
	p = append(p, asm.Ja.Label("pass"))
	// An ICMPv6 error (types 1 to 4) quoting an IPv6 header without
	// extension headers and TCP/UDP ports, at l3+48.
	n = need(int32(l3) + 92)
	n[0] = n[0].WithSymbol(icmp)
	p = append(p, n...)
	p = append(p,
		asm.LoadMem(asm.R5, asm.R2, l3+40, asm.Byte),
		asm.JEq.Imm(asm.R5, 0, "pass"),
		asm.JGT.Imm(asm.R5, 4, "pass"),
		asm.LoadMem(asm.R4, asm.R2, l3+54, asm.Byte),
		asm.JEq.Imm(asm.R4, 6, quote),
		asm.JNE.Imm(asm.R4, 17, "pass"),
		asm.LoadMem(asm.R5, asm.R2, l3+72, asm.DWord).WithSymbol(quote),
		asm.StoreMem(asm.R10, src6Key, asm.R5, asm.DWord),
		asm.LoadMem(asm.R5, asm.R2, l3+80, asm.DWord),
		asm.StoreMem(asm.R10, src6Key+8, asm.R5, asm.DWord),
		asm.LoadMem(asm.R5, asm.R2, l3+90, asm.Half),
		asm.StoreMem(asm.R10, src6Key+16, asm.R5, asm.Half),
		asm.StoreMem(asm.R10, src6Key+18, asm.R4, asm.Byte),
		asm.StoreImm(asm.R10, src6Key+19, 0, asm.Byte),
	)
	p = append(p, lookupTo(m.src6, src6Key, own)...)
	p = append(p, asm.Ja.Label("pass"))
	// Caught by source or quote, unless addressed to the unit itself.
	l := lookupTo(m.local6, dst6Key, "pass")
	l[0] = l[0].WithSymbol(own)
	p = append(p, l...)
	p = append(p, asm.Ja.Label("redirect"))
	return p
}

// program assembles the redirect program.
func program(m *maps) asm.Instructions {
	p := asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
	}
	p = append(p, reloadData()...)
	p = append(p, need(ethHdrLen)...)
	p = append(p,
		asm.LoadMem(asm.R5, asm.R2, 12, asm.Half),
		asm.JEq.Imm(asm.R5, etIPv4, "v4"),
		asm.JEq.Imm(asm.R5, etIPv6, "v6"),
		asm.JNE.Imm(asm.R5, etVLAN, "pass"),
	)
	p = append(p, need(ethHdrLen+vlanHdrLen)...)
	p = append(p,
		asm.LoadMem(asm.R5, asm.R2, 16, asm.Half),
		asm.JEq.Imm(asm.R5, etIPv4, "v4tag"),
		asm.JEq.Imm(asm.R5, etIPv6, "v6tag"),
		asm.Ja.Label("pass"),
	)
	block := func(label string, ins asm.Instructions) {
		ins[0] = ins[0].WithSymbol(label)
		p = append(p, ins...)
	}
	block("v4", ipv4(m, ethHdrLen))
	block("v6", ipv6(m, ethHdrLen))
	block("v4tag", ipv4(m, ethHdrLen+vlanHdrLen))
	block("v6tag", ipv6(m, ethHdrLen+vlanHdrLen))
	p = append(p,
		asm.LoadMapPtr(asm.R1, m.xsks.FD()).WithSymbol("redirect"),
		asm.LoadMem(asm.R2, asm.R6, mdRxQueue, asm.Word),
		asm.Mov.Imm(asm.R3, xdpDrop),
		asm.FnRedirectMap.Call(),
		asm.Return(),
		asm.Mov.Imm(asm.R0, xdpPass).WithSymbol("pass"),
		asm.Return(),
	)
	return p
}

func loadProgram(m *maps) (*ebpf.Program, error) {
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:         "tether_xdp",
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
