package dataplane

import (
	"encoding/binary"

	"github.com/tetherlb/tether/api/unit"
	"github.com/tetherlb/tether/dataplane/header"
	"github.com/tetherlb/tether/nic"
)

// apply rewrites a packet of a known flow for its mode and sets its next
// hop. pk.l4 is 0 for non-first fragments, which carry no ports.
func (p *Pipeline) apply(pk *packet, e entry) {
	s := p.snap
	be := s.backendOf(e.m.Backend)
	if be.State == unit.StateInactive {
		pk.dropWith(DropBackendInactive)
		return
	}
	if s.hop && pk.ttl() <= 1 {
		pk.dropWith(DropTTLExceeded)
		return
	}
	reply := e.m.Flags&unit.FlowReply != 0
	n := uint64(pk.end - pk.l3)
	switch e.m.Mode {
	case unit.ModeNAT:
		// Both directions: source to B:PortB, destination to A:PortA.
		rewrite(pk, e.b, e.m.PortB, e.a, e.m.PortA, true, true, s.hop)
	case unit.ModeHalfNAT:
		// Toward the backend only the destination changes; replies
		// only change their source back to the VIP.
		rewrite(pk, e.b, e.m.PortB, e.a, e.m.PortA, reply, !reply, s.hop)
	case unit.ModeTunnel:
		if pk.frag != fragNone || pk.l4 != pk.l3+fixedIPHeader(pk.v6) {
			// A fragment has no ports to carry the flow ID (later
			// ones none at all), and the host's program restores
			// the ports only right after a fixed IP header (no IPv4
			// options or IPv6 extension headers): such a packet goes
			// to the same host IP-in-IP, which the host's program
			// unwraps like ipip's, and the host's kernel reassembles
			// the client's datagram.
			if s.hop {
				hop(pk)
			}
			if !p.encapIP(pk, e.a, s.mtuOf(be)) {
				return
			}
			break
		}
		// The 32-bit flow ID takes the place of both ports.
		id := binary.BigEndian.Uint32(e.b)
		rewrite(pk, p.unitAddr(pk.v6), uint16(id>>16), e.a, uint16(id), true, true, s.hop)
	case unit.ModeIPIP:
		if s.hop {
			hop(pk) // the inner packet; its TTL was checked above
		}
		if !p.encapIP(pk, e.a, s.mtuOf(be)) {
			return
		}
	}
	p.deliver(pk, be, e.a, reply, n)
}

// deliver counts a packet of n bytes (its IP datagram as received) that
// is certain to leave, and addresses it to its next hop: every mode sends
// to A, the backend, or the client for replies. Counted here and not
// earlier, the counters are of what was forwarded. A packet to be sent in
// fragments is counted by split, once they have their buffers.
func (p *Pipeline) deliver(pk *packet, be *Backend, a []byte, reply bool, n uint64) {
	if be.known && pk.splitMTU != 0 && !reply {
		pk.splitBackend, pk.splitBytes = int32(be.ID), n
	} else if be.known {
		c := &p.stats.Backends[be.ID]
		if reply {
			c.ReplyPackets++
			c.ReplyBytes += n
		} else {
			c.Packets++
			c.Bytes += n
		}
	}
	if reply || !be.known {
		p.setL2(pk, a)
		return
	}
	if !be.hasMAC && p.cfg.Link == nic.LinkEthernet {
		p.missedHop(a)
	}
	p.setL2MAC(pk, be.mac, be.hasMAC)
}

// hop makes the packet's IP header one router hop older: TTL (hop
// limit) minus one, the IPv4 checksum updated as RFC 1624 allows for
// this one change (the TTL is the high byte of its word, so the sum
// grows by 0x0100, with the end-around carry), as a router's
// ip_decrease_ttl does. The caller has checked the TTL is above 1.
func hop(pk *packet) {
	if pk.v6 {
		pk.b[pk.l3+7]--
		return
	}
	ip := pk.b[pk.l3 : pk.l3+header.IPv4MinSize]
	ip[8]--
	c := uint32(binary.BigEndian.Uint16(ip[10:])) + 0x0100
	c += c >> 16
	binary.BigEndian.PutUint16(ip[10:], uint16(c))
}

// fixedIPHeader is the size of an IP header without IPv4 options or
// IPv6 extension headers.
func fixedIPHeader(v6 bool) int {
	if v6 {
		return header.IPv6Size
	}
	return header.IPv4MinSize
}

func (p *Pipeline) unitAddr(v6 bool) []byte {
	if v6 {
		return p.snap.unit6[:]
	}
	return p.snap.unit4[:]
}

// rewrite sets the packet's source and/or destination address and port,
// and with dec makes it one router hop older (TTL or hop limit minus
// one), updating the IPv4 header checksum and the transport checksum
// incrementally (RFC 1624). The transport checksum covers the addresses
// through the pseudo-header, so it changes even when only addresses do;
// a non-first fragment (pk.l4 == 0) has no transport header to update,
// the first fragment's checksum already covers the whole datagram.
func rewrite(pk *packet, src []byte, sport uint16, dst []byte, dport uint16, setSrc, setDst, dec bool) {
	b := pk.b
	var delta uint64
	if pk.v6 {
		ip := header.IPv6(b[pk.l3:])
		if dec {
			ip[7]-- // hop limit; the caller checked it is above 1
		}
		if setSrc {
			delta += header.DeltaBytes(ip.Src(), src)
			ip.SetSrc(src)
		}
		if setDst {
			delta += header.DeltaBytes(ip.Dst(), dst)
			ip.SetDst(dst)
		}
	} else {
		// Addresses as words: the change is summed once and applied to
		// both the IPv4 header checksum and the transport checksum.
		ip := b[pk.l3 : pk.l3+header.IPv4MinSize]
		if setSrc {
			n := binary.BigEndian.Uint32(src)
			delta += header.Delta32(binary.BigEndian.Uint32(ip[12:]), n)
			binary.BigEndian.PutUint32(ip[12:], n)
		}
		if setDst {
			n := binary.BigEndian.Uint32(dst)
			delta += header.Delta32(binary.BigEndian.Uint32(ip[16:]), n)
			binary.BigEndian.PutUint32(ip[16:], n)
		}
		h := header.IPv4(ip)
		ipDelta := delta
		if dec {
			// One router hop (the caller checked the TTL is above 1):
			// TTL and protocol share a word of the header checksum,
			// which takes this change with the addresses' in one update.
			old := binary.BigEndian.Uint16(ip[8:])
			ip[8]--
			ipDelta += header.Delta16(old, binary.BigEndian.Uint16(ip[8:]))
		}
		h.SetChecksum(header.Adjust(h.Checksum(), ipDelta))
	}
	if pk.l4 == 0 {
		return
	}
	l4 := b[pk.l4 : pk.l4+header.UDPSize]
	if pk.frame.Offload.Partial {
		// The field holds the pseudo-header's sum, which covers the
		// addresses and not the ports: it grows by the addresses'
		// change, and the device sums the ports with the rest.
		c := b[pk.l4+int(pk.frame.Offload.CsumOffset):]
		binary.BigEndian.PutUint16(c, header.Fold(uint64(binary.BigEndian.Uint16(c))+delta))
	}
	if setSrc {
		delta += header.Delta16(binary.BigEndian.Uint16(l4[0:]), sport)
		binary.BigEndian.PutUint16(l4[0:], sport)
	}
	if setDst {
		delta += header.Delta16(binary.BigEndian.Uint16(l4[2:]), dport)
		binary.BigEndian.PutUint16(l4[2:], dport)
	}
	if pk.frame.Offload.Partial {
		return
	}
	switch pk.proto {
	case header.IPProtoTCP:
		t := header.TCP(b[pk.l4:])
		t.SetChecksum(header.Adjust(t.Checksum(), delta))
	case header.IPProtoUDP:
		header.UDP(l4).Adjust(delta)
	}
}

// encapIP wraps the packet in an outer IPv4 or IPv6 header from the unit
// to dst (RFC 2003 IP-in-IP, RFC 2473 IPv6-in-IPv6), for direct server
// return. It clamps every MSS option of TCP SYNs so that the
// encapsulated segments fit mtu (a SYN whose options are malformed
// cannot be clamped and is dropped). A packet that does not fit is marked
// to be sent in fragments where it may be fragmented (see split),
// and otherwise answered with ICMP too-big (see answerTooBig) or dropped.
// It reports false when the packet is not to be sent to dst.
func (p *Pipeline) encapIP(pk *packet, dst []byte, mtu int) bool {
	overhead := header.IPv4MinSize
	if pk.v6 {
		overhead = header.IPv6Size
	}
	inner := pk.end - pk.l3
	// What must fit the path: the packet, or each segment a super-packet
	// will be cut into (its headers and GSOSize of payload).
	seg := inner
	if g := int(pk.frame.Offload.GSOSize); g > 0 && pk.l4 != 0 && pk.proto == header.IPProtoTCP {
		seg = min(inner, pk.l4-pk.l3+header.TCP(pk.b[pk.l4:]).DataOffset()+g)
	}
	if pk.proto == header.IPProtoTCP && pk.l4 != 0 && pk.tcpFlags&synFlag != 0 {
		t := header.TCP(pk.b[pk.l4:])
		// A partial checksum does not cover the options (the device
		// sums them): the clamp must leave it as it is.
		partial, sum := pk.frame.Offload.Partial, t.Checksum()
		if most := mtu - overhead - (pk.l4 - pk.l3) - header.TCPMinSize; most > 0 && !header.ClampMSS(t, uint16(min(most, 0xffff))) {
			pk.dropWith(DropTCPBadOptions)
			return false
		}
		if partial {
			t.SetChecksum(sum)
		}
	}
	if seg+overhead > mtu || inner+overhead > 0xffff {
		if !splittable(pk, inner, overhead, mtu) {
			if !p.answerTooBig(pk, mtu-overhead, p.now) {
				pk.dropWith(DropTooBig)
			}
			return false
		}
		pk.splitMTU = uint16(mtu) // sent in fragments (emit)
	}
	if pk.frame.Off < overhead {
		pk.dropWith(DropNoHeadroom)
		return false
	}
	b, _ := pk.frame.Prepend(overhead)
	// Move the link header in front of the new outer header.
	copy(b[:pk.l3], b[overhead:overhead+pk.l3])
	innerHdr := b[pk.l3+overhead:]
	if pk.v6 {
		in := header.IPv6(innerHdr)
		f := header.IPv6Fields{
			TrafficClass:  in.TrafficClass(),
			FlowLabel:     uint32(pk.hash) & 0xfffff, // entropy for ECMP on the way
			PayloadLength: uint16(inner),
			NextHeader:    header.IPProtoIPv6,
			HopLimit:      64,
			Dst:           [16]byte(dst[:16]),
			Src:           p.snap.unit6,
		}
		header.EncodeIPv6(b[pk.l3:], &f)
	} else {
		in := header.IPv4(innerHdr)
		p.ipID += uint32(p.cfg.Workers)
		f := header.IPv4Fields{
			TOS:         in.TOS(),
			TotalLength: uint16(inner + overhead),
			ID:          uint16(p.ipID),
			FlagsOffset: in.FlagsOffset() & header.IPv4FlagDF, // RFC 2003 §3.1: copy DF
			TTL:         64,
			Protocol:    header.IPProtoIPIP,
			Dst:         [4]byte(dst[:4]),
			Src:         p.snap.unit4,
		}
		header.EncodeIPv4(b[pk.l3:], &f)
	}
	pk.b = b
	pk.end += overhead
	if pk.l4 != 0 {
		pk.l4 += overhead
	}
	return true
}

// setL2 addresses the frame to the next hop's MAC: the neighbour's, or
// the gateway's for destinations not on the link. The source MAC is the
// unit's, or else the address the frame was sent to, which is ours.
func (p *Pipeline) setL2(pk *packet, nextHop []byte) {
	if p.cfg.Link != nic.LinkEthernet {
		pk.kind = kindTX
		return
	}
	mac, ok := p.snap.neigh.lookup(nextHop)
	if !ok {
		p.missedHop(nextHop)
	}
	p.setL2MAC(pk, mac, ok)
}

// setL2MAC is setL2 with the next hop's MAC already resolved.
func (p *Pipeline) setL2MAC(pk *packet, mac header.MAC, ok bool) {
	pk.kind = kindTX
	if p.cfg.Link != nic.LinkEthernet {
		return
	}
	if !ok {
		pk.dropWith(DropNoNeighbor)
		return
	}
	n := p.snap.neigh
	eth := header.Ethernet(pk.b)
	if n.hasSelf {
		eth.SetSrc(n.self)
	} else {
		eth.SetSrc(eth.Dst())
	}
	eth.SetDst(mac)
}
