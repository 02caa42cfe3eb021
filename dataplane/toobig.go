package dataplane

import (
	"encoding/binary"

	"github.com/tetherlb/tether/dataplane/header"
	"github.com/tetherlb/tether/nic"
	"github.com/tetherlb/tether/tables/flow"
)

// A packet too big for an ipip tunnel is answered as a router on the
// path answers it: ICMP "fragmentation needed" (IPv4 with DF set) or
// ICMPv6 "packet too big", carrying the MTU the client must use, so that
// path MTU discovery shrinks the connection's packets instead of losing
// them. The unit does not fragment: an IPv4 packet without DF that does
// not fit is dropped as too_big. Answers are rate-limited per worker, as
// a kernel limits its ICMP errors, so that a flood of large packets from
// forged sources costs the unit at most tooBigRate small replies a
// second.

const (
	tooBigRate  = 1000 // answers a second, per worker
	tooBigBurst = 100
	// What an answer quotes of the packet: all of it that fits in the
	// minimum datagram each family guarantees (RFC 1812 §4.3.2.3: 576
	// bytes; RFC 4443 §3.2: 1280).
	tooBigMax4 = 576
	tooBigMax6 = 1280
)

// tooBigAllowed spends one of the worker's answer tokens, refilled with
// the flow clock.
func (p *Pipeline) tooBigAllowed(now flow.Tick) bool {
	if el := uint64(now - p.tooBigAt); el > 0 {
		p.tooBigTokens = min(tooBigBurst, p.tooBigTokens+el*tooBigRate/1000)
		p.tooBigAt = now
	}
	if p.tooBigTokens == 0 {
		return false
	}
	p.tooBigTokens--
	return true
}

// answerTooBig turns pk, which does not fit a path whose MTU for it is
// mtu, into the ICMP error for its sender, in place. It reports false,
// changing nothing, when the packet is not to be answered (IPv4 without
// DF, no headroom for the error's headers, the rate limit spent).
func (p *Pipeline) answerTooBig(pk *packet, mtu int, now flow.Tick) bool {
	hdr, most := header.IPv4MinSize+header.ICMPHeaderSize, tooBigMax4
	if pk.v6 {
		hdr, most = header.IPv6Size+header.ICMPHeaderSize, tooBigMax6
		mtu = max(mtu, 1280) // no IPv6 path is narrower
	} else if !header.IPv4(pk.b[pk.l3:]).DontFragment() {
		return false
	}
	if pk.frame.Off < hdr || !p.tooBigAllowed(now) {
		return false
	}
	quote := min(pk.end-pk.l3, most-hdr)
	b, _ := pk.frame.Prepend(hdr)
	copy(b[:pk.l3], b[hdr:hdr+pk.l3]) // the link header moves to the front
	in := b[pk.l3+hdr:]               // the packet, now the quote
	end := pk.l3 + hdr + quote
	msg := b[pk.l3+hdr-header.ICMPHeaderSize : end]
	if pk.v6 {
		f := header.IPv6Fields{PayloadLength: uint16(len(msg)), NextHeader: header.IPProtoICMPv6, HopLimit: 64,
			Src: [16]byte(in[24:40]), Dst: [16]byte(in[8:24])}
		header.EncodeIPv6(b[pk.l3:], &f)
		msg[0], msg[1] = header.ICMPv6PacketTooBig, 0
		binary.BigEndian.PutUint32(msg[4:], uint32(mtu))
		ip := header.IPv6(b[pk.l3:])
		msg[2], msg[3] = 0, 0
		header.ICMP(msg).SetChecksum(header.Checksum(msg, header.PseudoHeaderSum(header.IPProtoICMPv6, ip.Src(), ip.Dst(), uint32(len(msg)))))
	} else {
		p.ipID += uint32(p.cfg.Workers)
		f := header.IPv4Fields{TotalLength: uint16(hdr + quote), ID: uint16(p.ipID), TTL: 64, Protocol: header.IPProtoICMP,
			Src: [4]byte(in[16:20]), Dst: [4]byte(in[12:16])}
		header.EncodeIPv4(b[pk.l3:], &f)
		msg[0], msg[1] = header.ICMPv4DestUnreach, header.ICMPv4CodeFragNeeded
		binary.BigEndian.PutUint32(msg[4:], uint32(mtu)&0xffff)
		msg[2], msg[3] = 0, 0
		header.ICMP(msg).SetChecksum(header.Checksum(msg, 0))
	}
	pk.frame.Len = end
	pk.b, pk.end, pk.l4 = b[:end], end, 0
	if p.cfg.Link == nic.LinkEthernet {
		// Back the way it came: to the MAC that sent it, from ours.
		eth := header.Ethernet(pk.b)
		d, s := eth.Dst(), eth.Src()
		eth.SetDst(s)
		eth.SetSrc(d)
	}
	pk.kind = kindTX
	p.stats.TooBigAnswered++
	return true
}
