package dataplane

import (
	"encoding/binary"

	"github.com/tetherlb/tether/dataplane/header"
	"github.com/tetherlb/tether/nic"
	"github.com/tetherlb/tether/tables/flow"
)

// The unit answers for what it cannot forward where a router or a TCP
// stack would: ICMP too-big for a tunnel, and a reset for a segment of
// a nat connection it does not know.
//
// A packet too big for an ipip tunnel is answered as a router on the
// path answers it: ICMP "fragmentation needed" (IPv4 with DF set) or
// ICMPv6 "packet too big", carrying the MTU the client must use, so that
// path MTU discovery shrinks the connection's packets instead of losing
// them. What may be fragmented on the way instead (IPv4 without DF; IPv6
// of at most 1280 bytes) is sent in fragments (split.go). Answers are
// rate-limited per worker, as a kernel limits its ICMP errors, so that a
// flood of large packets from forged sources costs the unit at most
// answerRate small replies a second.

const (
	answerRate  = 1000 // answers (too-big, resets) a second, per worker
	answerBurst = 100
	// What an answer quotes of the packet: all of it that fits in the
	// minimum datagram each family guarantees (RFC 1812 §4.3.2.3: 576
	// bytes; RFC 4443 §3.2: 1280).
	tooBigMax4 = 576
	tooBigMax6 = header.IPv6MinMTU
)

// answerAllowed spends one of the worker's answer tokens (ICMP too-big
// and TCP resets share them), refilled with the flow clock.
func (p *Pipeline) answerAllowed(now flow.Tick) bool {
	if el := uint64(now - p.tooBigAt); el > 0 {
		p.tooBigTokens = min(answerBurst, p.tooBigTokens+el*answerRate/1000)
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
	if pk.proto == header.IPProtoICMP || pk.proto == header.IPProtoICMPv6 {
		// An error is never answered with an error (RFC 1122 §3.2.2,
		// RFC 4443 §2.4(e)); the only ICMP a VIP's flows carry is
		// errors (the unit answers echoes itself).
		return false
	}
	hdr, most := header.IPv4MinSize+header.ICMPHeaderSize, tooBigMax4
	if pk.v6 {
		hdr, most = header.IPv6Size+header.ICMPHeaderSize, tooBigMax6
		mtu = max(mtu, header.IPv6MinMTU) // no IPv6 path is narrower
	} else if !header.IPv4(pk.b[pk.l3:]).DontFragment() {
		return false
	}
	if pk.frame.Off < hdr || !p.answerAllowed(now) {
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
	p.sendBack(pk)
	p.stats.TooBigAnswered++
	return true
}

// sendBack sends pk, turned into an answer, back the way it came: to the
// MAC that sent it, from ours.
func (p *Pipeline) sendBack(pk *packet) {
	pk.frame.Offload = nic.Offload{} // an answer is whole, its checksums done
	if p.cfg.Link == nic.LinkEthernet {
		eth := header.Ethernet(pk.b)
		d, s := eth.Dst(), eth.Src()
		eth.SetDst(s)
		eth.SetSrc(d)
	}
	pk.kind = kindTX
}

// answerRST turns pk, a TCP segment of a nat connection this unit does
// not know (it restarted with nobody to tell it the connection's SNAT
// port), into the reset a TCP stack answers such a segment with (RFC
// 9293 §3.10.7.1), from the address it was sent to, so that the client
// (or the backend) fails at once instead of retransmitting into silence
// for minutes. Like a stack, it answers only a segment whose checksum
// verifies. It reports false, changing nothing, for a fragment, a packet
// with IPv4 options or IPv6 extension headers (kept simple: dropped
// instead), a bad checksum, or when the answer budget is spent.
func (p *Pipeline) answerRST(pk *packet, now flow.Tick) bool {
	ipLen := header.IPv4MinSize
	if pk.v6 {
		ipLen = header.IPv6Size
	}
	if pk.l4 != pk.l3+ipLen || pk.frag != fragNone || !p.answerAllowed(now) {
		return false
	}
	if o := &pk.frame.Offload; o.Partial && !finishChecksum(pk.b, int(o.CsumStart), int(o.CsumOffset)) {
		return false
	}
	if header.Checksum(pk.b[pk.l4:pk.end], header.PseudoHeaderSum(header.IPProtoTCP, pk.src(), pk.dst(), uint32(pk.end-pk.l4))) != 0 {
		return false
	}
	in := header.TCP(pk.b[pk.l4:])
	seq, ack, flags := in.Seq(), in.Ack(), in.Flags()
	segLen := uint32(pk.end - pk.l4 - in.DataOffset())
	if flags&synFlag != 0 {
		segLen++
	}
	if flags&finFlag != 0 {
		segLen++
	}
	sport, dport := in.SrcPort(), in.DstPort()
	end := pk.l4 + header.TCPMinSize
	t := header.TCP(pk.b[pk.l4:end])
	clear(t)
	binary.BigEndian.PutUint16(t[0:], dport)
	binary.BigEndian.PutUint16(t[2:], sport)
	if flags&ackFlag != 0 {
		binary.BigEndian.PutUint32(t[4:], ack)
		t[13] = rstFlag
	} else {
		binary.BigEndian.PutUint32(t[8:], seq+segLen)
		t[13] = rstFlag | ackFlag
	}
	t[12] = 5 << 4
	var src, dst []byte
	if pk.v6 {
		ip := header.IPv6(pk.b[pk.l3:])
		var a [16]byte
		copy(a[:], ip.Src())
		copy(ip[8:24], ip.Dst())
		copy(ip[24:40], a[:])
		binary.BigEndian.PutUint16(ip[4:], header.TCPMinSize)
		ip[7] = 64
		src, dst = ip[8:24], ip[24:40]
	} else {
		p.ipID += uint32(p.cfg.Workers)
		ip := header.IPv4(pk.b[pk.l3:])
		f := header.IPv4Fields{TotalLength: uint16(ipLen + header.TCPMinSize), ID: uint16(p.ipID), TTL: 64,
			Protocol: header.IPProtoTCP, Src: [4]byte(ip.Dst()), Dst: [4]byte(ip.Src())}
		header.EncodeIPv4(pk.b[pk.l3:], &f)
		src, dst = ip[12:16], ip[16:20]
	}
	t.SetChecksum(header.Checksum(t, header.PseudoHeaderSum(header.IPProtoTCP, src, dst, header.TCPMinSize)))
	pk.frame.Len = end
	pk.b, pk.end = pk.b[:end], end
	p.sendBack(pk)
	p.stats.ResetsSent++
	return true
}
