package dataplane

import (
	"bytes"
	"encoding/binary"

	"github.com/tetherlb/tether/api/unit"
	"github.com/tetherlb/tether/dataplane/header"
	"github.com/tetherlb/tether/tables/flow"
)

// icmp handles an ICMP or ICMPv6 message: an echo request to a VIP
// address is answered here; an error that quotes a packet of a known flow
// is sent where that flow goes, translated like the flow (RFC 5508 §4.2 is
// the NAT analogue); everything else goes to the host.
func (p *Pipeline) icmp(pk *packet, now flow.Tick) {
	m := header.ICMP(pk.b[pk.l4:pk.end])
	t := m.Type()
	switch {
	case !pk.v6 && t == header.ICMPv4Echo, pk.v6 && t == header.ICMPv6EchoRequest:
		if p.snap.ping && p.snap.roles[addrOf(pk.dst())]&roleVIP != 0 {
			p.echoReply(pk, m)
			return
		}
	case !pk.v6 && header.IsICMPv4Error(t), pk.v6 && header.IsICMPv6Error(t):
		p.icmpError(pk, m, now)
		return
	}
	pk.passWith(PassICMP)
}

// echoReply turns an echo request into its reply in place and sends it
// back where it came from.
func (p *Pipeline) echoReply(pk *packet, m header.ICMP) {
	var src [16]byte
	n := copy(src[:], pk.src())
	copy(pk.src(), pk.dst())
	copy(pk.dst(), src[:n])
	reply := uint8(header.ICMPv4EchoReply)
	if pk.v6 {
		reply = header.ICMPv6EchoReply
		pk.b[pk.l3+7] = 64 // hop limit; IPv6 has no header checksum
	} else {
		ip := header.IPv4(pk.b[pk.l3:])
		old := be16(pk.b[pk.l3+8:])
		pk.b[pk.l3+8] = 64 // TTL
		ip.SetChecksum(header.Update16(ip.Checksum(), old, be16(pk.b[pk.l3+8:])))
	}
	// Swapping the addresses leaves the ICMPv6 pseudo-header sum as it
	// was; only the type changes.
	old := be16(m[0:])
	m[0] = reply
	m.SetChecksum(header.Update16(m.Checksum(), old, be16(m[0:])))
	p.sendBack(pk)
	p.stats.EchoReplies++
}

// quoted describes the packet an ICMP error quotes.
type quoted struct {
	off, l4 int // offsets in pk.b of the quoted IP and transport headers
	proto   uint8
}

// parseQuote finds the quoted packet's addresses and ports, or says why
// it cannot: the quote is too short to hold them; it quotes what no error
// may quote (an ICMP error: RFC 1122 §3.2.2 forbids errors about errors;
// a non-first fragment, which has no ports); or it quotes a protocol
// without flows here.
func parseQuote(pk *packet) (q quoted, why Drop) {
	q.off = pk.l4 + header.ICMPHeaderSize
	b := pk.b[q.off:pk.end]
	if pk.v6 {
		if len(b) < header.IPv6Size || header.IPv6(b).Version() != 6 {
			return q, DropICMPTruncated
		}
		w, ok := header.WalkIPv6(b)
		if !ok {
			return q, DropICMPTruncated
		}
		if w.FragOff != 0 && header.IPv6Fragment(b[w.FragOff:]).Offset() != 0 {
			return q, DropICMPBadQuote
		}
		q.l4, q.proto = q.off+w.L4Off, w.Proto
	} else {
		if len(b) < header.IPv4MinSize {
			return q, DropICMPTruncated
		}
		ip := header.IPv4(b)
		hl := ip.HeaderLength()
		if ip.Version() != 4 || hl < header.IPv4MinSize || hl > len(b) {
			return q, DropICMPTruncated
		}
		if ip.FragmentOffset() != 0 {
			return q, DropICMPBadQuote
		}
		q.l4, q.proto = q.off+hl, ip.Protocol()
	}
	switch q.proto {
	case header.IPProtoTCP, header.IPProtoUDP:
	case header.IPProtoICMP, header.IPProtoICMPv6:
		if q.l4 < pk.end && (pk.v6 && header.IsICMPv6Error(pk.b[q.l4]) || !pk.v6 && header.IsICMPv4Error(pk.b[q.l4])) {
			return q, DropICMPBadQuote
		}
		return q, DropICMPNoFlow
	default:
		return q, DropICMPNoFlow
	}
	// RFC 792 promises the first 8 bytes of the payload: the ports.
	if pk.end-q.l4 < 8 {
		return q, DropICMPTruncated
	}
	return q, dropNone
}

// icmpChecksumValid reports whether the ICMP message's checksum verifies
// (ICMPv6's covers the pseudo-header).
func icmpChecksumValid(pk *packet) bool {
	m := pk.b[pk.l4:pk.end]
	var s uint64
	if pk.v6 {
		s = header.PseudoHeaderSum(header.IPProtoICMPv6, pk.src(), pk.dst(), uint32(len(m)))
	}
	return header.Checksum(m, s) == 0
}

func (pk *packet) quotedAddrs(q *quoted) (src, dst []byte) {
	if pk.v6 {
		return pk.b[q.off+8 : q.off+24], pk.b[q.off+24 : q.off+40]
	}
	return pk.b[q.off+12 : q.off+16], pk.b[q.off+16 : q.off+20]
}

func (p *Pipeline) icmpError(pk *packet, m header.ICMP, now flow.Tick) {
	q, why := parseQuote(pk)
	if why != dropNone {
		pk.dropWith(why)
		return
	}
	// The checksum is recomputed in full after the rewrite, which would
	// make a corrupted error valid: verify it first.
	if !icmpChecksumValid(pk) {
		pk.dropWith(DropICMPBadChecksum)
		return
	}
	// The quoted packet went out in one direction of a flow; the entry
	// that matters is the one for the opposite direction, keyed by the
	// quoted tuple reversed.
	qsrc, qdst := pk.quotedAddrs(&q)
	qsport, qdport := be16(pk.b[q.l4:]), be16(pk.b[q.l4+2:])
	proto := pk.proto
	pk.proto = q.proto
	if pk.v6 {
		pk.k6 = flow.Key6{Src: [16]byte(qdst), Dst: [16]byte(qsrc), SrcPort: qdport, DstPort: qsport, Proto: q.proto}
		pk.hash = p.flows.Hash6(&pk.k6)
	} else {
		pk.k4 = flow.Key4{Src: [4]byte(qdst), Dst: [4]byte(qsrc), SrcPort: qdport, DstPort: qsport, Proto: q.proto}
		pk.hash = p.flows.Hash4(&pk.k4)
	}
	e, found := p.lookup(pk)
	pk.proto = proto
	if !found {
		pk.dropWith(DropICMPNoFlow)
		return
	}
	be := p.snap.backendOf(e.m.Backend)
	if be.State == unit.StateInactive {
		pk.dropWith(DropBackendInactive)
		return
	}
	if p.snap.hop {
		if pk.ttl() <= 1 {
			pk.dropWith(DropTTLExceeded)
			return
		}
		hop(pk)
	}
	e.m.LastSeen = now
	p.stats.ICMPForwarded++
	switch e.m.Mode {
	case unit.ModeNAT, unit.ModeHalfNAT:
		// The entry rewrites the reversed tuple to (B:PortB → A:PortA),
		// so the quoted packet, seen from the other side, is
		// (A:PortA → B:PortB), and the error goes to A.
		ownErr := bytes.Equal(pk.src(), qdst)
		rewriteQuote(pk, &q, e.a, e.m.PortA, e.b, e.m.PortB)
		var osrc []byte
		if ownErr {
			// The quoted packet's destination itself complained: it
			// must not show through the translation either.
			osrc = e.b
		}
		setOuter(pk, osrc, e.a)
		fixICMPChecksum(pk)
		p.setL2(pk, e.a)
	case unit.ModeTunnel, unit.ModeIPIP:
		// The backend answers clients itself, from the VIP; it needs the
		// error as the client's side sent it, to the VIP: encapsulated,
		// which the host's program unwraps (it takes nothing but flow-ID
		// packets and IP-in-IP from a unit at a tunnel address).
		pk.l4 = 0 // the outer ICMP header is not a flow's transport header
		if p.encapIP(pk, e.a, p.snap.mtuOf(be)) {
			p.setL2(pk, e.a)
		}
	}
}

// rewriteQuote sets the quoted packet's addresses and ports, keeping its
// IPv4 header checksum and, when the quote holds it, its transport
// checksum right.
func rewriteQuote(pk *packet, q *quoted, src []byte, sport uint16, dst []byte, dport uint16) {
	b := pk.b
	qsrc, qdst := pk.quotedAddrs(q)
	delta := header.DeltaBytes(qsrc, src) + header.DeltaBytes(qdst, dst)
	if pk.v6 {
		copy(qsrc, src)
		copy(qdst, dst)
	} else {
		ip := header.IPv4(b[q.off:])
		ip.SetSrc(src[:4])
		ip.SetDst(dst[:4])
	}
	l4 := b[q.l4:pk.end]
	delta += header.Delta16(be16(l4[0:]), sport) + header.Delta16(be16(l4[2:]), dport)
	binary.BigEndian.PutUint16(l4[0:], sport)
	binary.BigEndian.PutUint16(l4[2:], dport)
	switch {
	case q.proto == header.IPProtoTCP && len(l4) >= 18:
		t := header.TCP(l4)
		t.SetChecksum(header.Adjust(t.Checksum(), delta))
	case q.proto == header.IPProtoUDP:
		header.UDP(l4).Adjust(delta)
	}
}

// setOuter sets the outer source (when src is not nil) and destination.
func setOuter(pk *packet, src, dst []byte) {
	if pk.v6 {
		ip := header.IPv6(pk.b[pk.l3:])
		if src != nil {
			ip.SetSrc(src)
		}
		ip.SetDst(dst)
		return
	}
	ip := header.IPv4(pk.b[pk.l3:])
	if src != nil {
		ip.SetSrc(src[:4])
	}
	ip.SetDst(dst[:4])
}

// fixICMPChecksum recomputes the ICMP checksum over the whole message:
// errors are rare and their quoted bytes changed in several places.
func fixICMPChecksum(pk *packet) {
	m := header.ICMP(pk.b[pk.l4:pk.end])
	m.SetChecksum(0)
	var s uint64
	if pk.v6 {
		s = header.PseudoHeaderSum(header.IPProtoICMPv6, pk.src(), pk.dst(), uint32(len(m)))
	}
	m.SetChecksum(header.Checksum(m, s))
}
