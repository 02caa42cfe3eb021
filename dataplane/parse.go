package dataplane

import (
	"encoding/binary"
	"net/netip"

	"github.com/tetherlb/tether/dataplane/header"
	"github.com/tetherlb/tether/nic"
	"github.com/tetherlb/tether/tables/flow"
)

// Fragment positions.
const (
	fragNone  = iota
	fragFirst // offset 0, more to come: carries the L4 header
	fragLater // offset > 0: no L4 header
)

// What the parser found a packet to be, which decides the next step.
const (
	kindDrop  = iota // pk.drop says why
	kindPass         // pk.pass says why
	kindFlow         // TCP or UDP with ports: look up the flow
	kindLater        // a non-first fragment: find its datagram
	kindICMP         // ICMP: echo or error
	kindOther        // another protocol: VIP address decides
)

// packet is what the parser learns about a frame; the worker keeps one
// per batch slot and reuses it.
type packet struct {
	frame    *nic.Frame
	b        []byte // the frame's bytes, trimmed to the end of the IP datagram
	l3       int    // offset of the IP header
	l4       int    // offset of the transport header, 0 when absent
	end      int    // offset of the end of the IP datagram (== len(b))
	v6       bool
	proto    uint8 // upper-layer protocol
	frag     uint8
	fragID   uint32
	fragHdr  int    // offset of the IPv6 fragment header
	fragOff  uint32 // where a fragment's data sits in its datagram, in bytes
	fragLen  uint32 // how much data a fragment carries
	splitMTU uint16 // nonzero: sent in fragments that fit this MTU (split.go)
	// splitBackend and splitBytes are the count deliver leaves to split
	// (a backend's packet and its bytes), made only once the fragments
	// have their buffers; splitBackend is -1 when there is none.
	splitBackend int32
	splitBytes   uint64
	sport        uint16
	dport        uint16
	tcpFlags     uint8
	kind         uint8
	drop         Drop
	pass         Pass
	hash         uint64 // flow-table hash of k4 or k6
	k4           flow.Key4
	k6           flow.Key6
}

func (pk *packet) dropWith(d Drop) { pk.kind, pk.drop = kindDrop, d }
func (pk *packet) passWith(p Pass) { pk.kind, pk.pass = kindPass, p }

// src and dst return the IP addresses as slices of the packet.
func (pk *packet) src() []byte {
	if pk.v6 {
		return pk.b[pk.l3+8 : pk.l3+24]
	}
	return pk.b[pk.l3+12 : pk.l3+16]
}

// srcAddr returns the source address as a netip.Addr (no allocation).
func (pk *packet) srcAddr() netip.Addr {
	if pk.v6 {
		return netip.AddrFrom16([16]byte(pk.src()))
	}
	return netip.AddrFrom4([4]byte(pk.src()))
}

// ttl returns the IPv4 TTL or the IPv6 hop limit.
func (pk *packet) ttl() uint8 {
	if pk.v6 {
		return pk.b[pk.l3+7]
	}
	return pk.b[pk.l3+8]
}

func (pk *packet) dst() []byte {
	if pk.v6 {
		return pk.b[pk.l3+24 : pk.l3+40]
	}
	return pk.b[pk.l3+16 : pk.l3+20]
}

// parse fills pk from its frame and sets pk.kind. Every offset it stores
// has been checked against the frame, so the steps after it may use the
// header package's unchecked accessors within [l3, end).
func parse(pk *packet, link nic.LinkType) {
	b := pk.frame.Data()
	pk.splitMTU, pk.splitBackend = 0, -1
	if link == nic.LinkEthernet {
		if len(b) > header.EthernetSize && b[12] == 0x08 && b[13] == 0x00 && parseFast(pk, b, header.EthernetSize) {
			return
		}
	} else if parseFast(pk, b, 0) {
		return
	}
	pk.b = b
	pk.l4, pk.frag, pk.fragHdr, pk.tcpFlags, pk.sport, pk.dport = 0, fragNone, 0, 0, 0, 0
	parseSlow(pk, link)
}

// parseFast parses the frame nearly every packet is: IPv4 without options
// and unfragmented, carrying a valid TCP or UDP header, at offset l3. It
// does in one function, with one set of bounds checks, what the general
// parser does in several. It reports false when the frame is anything else
// or anything about it is wrong; parseSlow then decides, with a named
// reason. FuzzParse checks that both agree on every frame parseFast takes.
func parseFast(pk *packet, b []byte, l3 int) bool {
	if len(b) < l3+header.IPv4MinSize+header.UDPSize {
		return false
	}
	ip := b[l3 : l3+header.IPv4MinSize]
	tot := int(binary.BigEndian.Uint16(ip[2:]))
	if ip[0] != 0x45 || tot < header.IPv4MinSize+header.UDPSize || l3+tot > len(b) ||
		binary.BigEndian.Uint16(ip[6:])&0x3fff != 0 {
		return false
	}
	// header.IPv4HeaderValid for exactly 20 bytes, written out here
	// because the call is too large to inline.
	if sum := uint64(binary.BigEndian.Uint32(ip[0:])) + uint64(binary.BigEndian.Uint32(ip[4:])) +
		uint64(binary.BigEndian.Uint32(ip[8:])) + uint64(binary.BigEndian.Uint32(ip[12:])) +
		uint64(binary.BigEndian.Uint32(ip[16:])); header.Fold(sum) != 0xffff {
		return false
	}
	seg := b[l3+header.IPv4MinSize : l3+tot]
	proto := ip[9]
	var flags uint8
	switch proto {
	case header.IPProtoTCP:
		if len(seg) < header.TCPMinSize {
			return false
		}
		if do := int(seg[12]>>4) * 4; do < header.TCPMinSize || do > len(seg) {
			return false
		}
		flags = seg[13]
	case header.IPProtoUDP:
		if n := int(binary.BigEndian.Uint16(seg[4:])); n < header.UDPSize || n > len(seg) {
			return false
		}
	default:
		return false
	}
	sport, dport := binary.BigEndian.Uint16(seg[0:]), binary.BigEndian.Uint16(seg[2:])
	pk.b = b[:l3+tot]
	pk.frame.Len = l3 + tot
	pk.l3, pk.l4, pk.end = l3, l3+header.IPv4MinSize, l3+tot
	pk.v6, pk.proto, pk.kind, pk.frag = false, proto, kindFlow, fragNone
	pk.sport, pk.dport, pk.tcpFlags = sport, dport, flags
	pk.k4 = flow.Key4{Src: [4]byte(ip[12:16]), Dst: [4]byte(ip[16:20]), SrcPort: sport, DstPort: dport, Proto: proto}
	return true
}

// parseSlow is the general parser: every link type, VLAN tags, options,
// fragments, IPv6 and its extension headers, ICMP, and every drop reason.
func parseSlow(pk *packet, link nic.LinkType) {
	b := pk.b
	etherType := uint16(0)
	if link == nic.LinkEthernet {
		l3, et, tags, ok := header.WalkEthernet(b)
		if !ok {
			if tags > header.MaxVLANTags {
				pk.dropWith(DropVLANTooDeep)
			} else {
				pk.dropWith(DropFrameTooShort)
			}
			return
		}
		pk.l3, etherType = l3, et
	} else {
		pk.l3 = 0
		if len(b) == 0 {
			pk.dropWith(DropFrameTooShort)
			return
		}
		switch b[0] >> 4 {
		case 4:
			etherType = header.EtherTypeIPv4
		case 6:
			etherType = header.EtherTypeIPv6
		}
	}
	switch etherType {
	case header.EtherTypeIPv4:
		pk.v6 = false
		parseIPv4(pk)
	case header.EtherTypeIPv6:
		pk.v6 = true
		parseIPv6(pk)
	default:
		pk.passWith(PassNotIP)
	}
}

func parseIPv4(pk *packet) {
	b, l3 := pk.b, pk.l3
	if len(b)-l3 < header.IPv4MinSize {
		pk.dropWith(DropIPv4Truncated)
		return
	}
	ip := header.IPv4(b[l3:])
	hl := ip.HeaderLength()
	if ip.Version() != 4 || hl < header.IPv4MinSize {
		pk.dropWith(DropIPv4BadHeader)
		return
	}
	if len(b)-l3 < hl {
		pk.dropWith(DropIPv4Truncated)
		return
	}
	tot := int(ip.TotalLength())
	if tot < hl || l3+tot > len(b) {
		pk.dropWith(DropIPv4BadLength)
		return
	}
	if !header.IPv4HeaderValid(b[l3 : l3+hl]) {
		pk.dropWith(DropIPv4BadChecksum)
		return
	}
	if hl > header.IPv4MinSize {
		// Options are rare; parseFast never takes them.
		o, ok := header.CheckIPv4Options(ip)
		if !ok {
			pk.dropWith(DropIPv4BadOptions)
			return
		}
		if o.SourceRouted {
			pk.dropWith(DropSourceRouted)
			return
		}
	}
	// Trim link-layer padding: the datagram ends where its length says.
	pk.end = l3 + tot
	pk.b = b[:pk.end]
	pk.frame.Len = pk.end
	pk.proto = ip.Protocol()
	l4 := l3 + hl
	if ip.IsFragment() {
		pk.fragID = uint32(ip.ID())
		off := ip.FragmentOffset()
		// A fragment past 64 KiB; one that says both "don't fragment" and
		// "more fragments"; one with more to come whose data is not a
		// whole number of 8-byte units, which the next cannot follow.
		if off+tot-hl > 65535 || ip.MoreFragments() && (ip.DontFragment() || (tot-hl)%8 != 0) {
			pk.dropWith(DropBadFragment)
			return
		}
		pk.fragOff, pk.fragLen = uint32(off), uint32(tot-hl)
		if off > 0 {
			pk.frag = fragLater
			pk.kind = kindLater
			return
		}
		pk.frag = fragFirst
	}
	parseL4(pk, l4)
}

func parseIPv6(pk *packet) {
	b, l3 := pk.b, pk.l3
	if len(b)-l3 < header.IPv6Size {
		pk.dropWith(DropIPv6Truncated)
		return
	}
	ip := header.IPv6(b[l3:])
	if ip.Version() != 6 {
		pk.dropWith(DropIPv6BadHeader)
		return
	}
	plen := int(ip.PayloadLength())
	if plen == 0 || l3+header.IPv6Size+plen > len(b) {
		// A zero payload length announces a jumbogram, which no link
		// Tether serves can carry.
		pk.dropWith(DropIPv6BadLength)
		return
	}
	pk.end = l3 + header.IPv6Size + plen
	pk.b = b[:pk.end]
	pk.frame.Len = pk.end
	w, ok := header.WalkIPv6(pk.b[l3:])
	if !ok {
		pk.dropWith(DropIPv6BadExtHeaders)
		return
	}
	if w.SourceRouted {
		pk.dropWith(DropSourceRouted)
		return
	}
	pk.proto = w.Proto
	if w.FragOff != 0 {
		f := header.IPv6Fragment(pk.b[l3+w.FragOff:])
		off := f.Offset()
		// RFC 6946: an "atomic fragment" (offset 0, no more) is a whole
		// datagram and is processed as one.
		if off != 0 || f.More() {
			pk.fragHdr = l3 + w.FragOff
			pk.fragID = f.ID()
			// Past 64 KiB, or more to come after data that is not a whole
			// number of 8-byte units (RFC 8200 §4.5).
			n := pk.end - (l3 + w.FragOff + header.IPv6FragmentSize)
			if off+n > 65535 || f.More() && n%8 != 0 {
				pk.dropWith(DropBadFragment)
				return
			}
			pk.fragOff, pk.fragLen = uint32(off), uint32(n)
			if off > 0 {
				pk.frag = fragLater
				pk.kind = kindLater
				return
			}
			pk.frag = fragFirst
		}
	}
	parseL4(pk, l3+w.L4Off)
}

// parseL4 reads the transport header at off of an unfragmented datagram
// or a first fragment.
func parseL4(pk *packet, off int) {
	b := pk.b
	avail := len(b) - off
	switch pk.proto {
	case header.IPProtoTCP:
		if avail < header.TCPMinSize {
			pk.dropL4()
			return
		}
		t := header.TCP(b[off:])
		if do := t.DataOffset(); do < header.TCPMinSize || do > avail {
			pk.dropWith(DropTCPBadOffset)
			return
		}
		pk.sport, pk.dport, pk.tcpFlags = t.SrcPort(), t.DstPort(), t.Flags()
	case header.IPProtoUDP:
		if avail < header.UDPSize {
			pk.dropL4()
			return
		}
		u := header.UDP(b[off:])
		if pk.frag == fragNone {
			if n := int(u.Length()); n < header.UDPSize || n > avail {
				pk.dropWith(DropUDPBadLength)
				return
			}
		}
		pk.sport, pk.dport = u.SrcPort(), u.DstPort()
	case header.IPProtoICMP, header.IPProtoICMPv6:
		if (pk.proto == header.IPProtoICMP) == pk.v6 {
			// ICMPv4 over IPv6 or ICMPv6 over IPv4: nothing Tether serves.
			pk.kind, pk.pass = kindOther, PassProtocol
			return
		}
		if pk.frag != fragNone {
			// ICMP messages Tether handles are small; fragmented ones go
			// to the host.
			pk.kind, pk.pass = kindOther, PassICMP
			return
		}
		if avail < header.ICMPHeaderSize {
			pk.dropWith(DropICMPTruncated)
			return
		}
		pk.l4 = off
		pk.kind = kindICMP
		return
	default:
		pk.kind, pk.pass = kindOther, PassProtocol
		return
	}
	pk.l4 = off
	pk.kind = kindFlow
	pk.setKey(pk.sport, pk.dport)
}

// dropL4 drops a packet whose transport header is missing; for a first
// fragment that is a tiny-fragment attack (RFC 1858) and named as such.
func (pk *packet) dropL4() {
	if pk.frag == fragFirst {
		pk.dropWith(DropBadFragment)
	} else {
		pk.dropWith(DropL4Truncated)
	}
}

// setKey fills the flow key from the packet's addresses and the ports.
// The addresses are copied as arrays: a copy() of slices this short costs
// a call to memmove.
func (pk *packet) setKey(sport, dport uint16) {
	b := pk.b[pk.l3:]
	if pk.v6 {
		pk.k6 = flow.Key6{Src: [16]byte(b[8:24]), Dst: [16]byte(b[24:40]), SrcPort: sport, DstPort: dport, Proto: pk.proto}
		return
	}
	pk.k4 = flow.Key4{Src: [4]byte(b[12:16]), Dst: [4]byte(b[16:20]), SrcPort: sport, DstPort: dport, Proto: pk.proto}
}

// addr returns an address slice as a map key.
func addrOf(a []byte) addrKey {
	var k addrKey
	copy(k.a[:], a)
	k.v6 = len(a) == 16
	return k
}

func be16(b []byte) uint16 { return binary.BigEndian.Uint16(b) }
