package dataplane

import (
	"encoding/binary"

	"github.com/tetherlb/tether/api/unit"
	"github.com/tetherlb/tether/dataplane/header"
	"github.com/tetherlb/tether/tables/flow"
)

// forward4 is the path of most packets: an IPv4 TCP or UDP packet of an
// established nat, halfnat or tunnel flow (v, its entry), unfragmented,
// with no offload, no SYN, FIN or RST, toward a backend that takes
// packets. It does what flowPacket and apply do for such a packet, with
// the addresses as words and nothing for the cases it leaves alone, so
// that the common packet costs one lookup and one short rewrite. It
// reports false, having changed nothing, for every other packet, which
// flowPacket then decides.
func (p *Pipeline) forward4(pk *packet, v *flow.Value4, now flow.Tick) bool {
	if pk.tcpFlags&(synFlag|finFlag|rstFlag) != 0 || pk.frag != fragNone || pk.l4 != pk.l3+header.IPv4MinSize {
		return false
	}
	if o := &pk.frame.Offload; o.Partial || o.GSOSize != 0 {
		return false
	}
	s := p.snap
	reply := v.Flags&unit.FlowReply != 0
	// What changes, as apply says for each mode.
	src, sport, dport := binary.BigEndian.Uint32(v.B[:]), v.PortB, v.PortA
	setSrc, setDst := true, true
	switch v.Mode {
	case unit.ModeNAT:
	case unit.ModeHalfNAT:
		setSrc, setDst = reply, !reply
	case unit.ModeTunnel:
		if v.Flags&unit.FlowHeld != 0 {
			return false // its packets wait for the host (awaitHost)
		}
		// The flow ID (in B) takes the place of both ports.
		id := src
		src, sport, dport = binary.BigEndian.Uint32(s.unit4[:]), uint16(id>>16), uint16(id)
	default:
		return false
	}
	be := s.backendOf(v.Backend)
	ip := pk.b[pk.l3 : pk.l3+header.IPv4MinSize]
	if be.State == unit.StateInactive || (s.hop && ip[8] <= 1) {
		return false // dropped, with its reason, by apply
	}
	track(&v.Meta, pk.tcpFlags, now)
	// As rewrite: the addresses' change is summed once for both
	// checksums.
	var delta uint64
	if setSrc {
		delta += header.Delta32(binary.BigEndian.Uint32(ip[12:]), src)
		binary.BigEndian.PutUint32(ip[12:], src)
	}
	if setDst {
		n := binary.BigEndian.Uint32(v.A[:])
		delta += header.Delta32(binary.BigEndian.Uint32(ip[16:]), n)
		binary.BigEndian.PutUint32(ip[16:], n)
	}
	ipDelta := delta
	if s.hop {
		// The TTL is the high byte of its word and drops by one, so
		// the word's delta (its complement plus its new value) is
		// always 0xffff - 0x0100.
		ip[8]--
		ipDelta += 0xfeff
	}
	binary.BigEndian.PutUint16(ip[10:], header.Adjust(binary.BigEndian.Uint16(ip[10:]), ipDelta))
	l4 := pk.b[pk.l4 : pk.l4+header.UDPSize]
	if setSrc {
		delta += header.Delta16(binary.BigEndian.Uint16(l4[0:]), sport)
		binary.BigEndian.PutUint16(l4[0:], sport)
	}
	if setDst {
		delta += header.Delta16(binary.BigEndian.Uint16(l4[2:]), dport)
		binary.BigEndian.PutUint16(l4[2:], dport)
	}
	if pk.proto == header.IPProtoTCP {
		t := header.TCP(pk.b[pk.l4:])
		t.SetChecksum(header.Adjust(t.Checksum(), delta))
	} else {
		header.UDP(l4).Adjust(delta)
	}
	p.deliver(pk, be, v.A[:], reply, uint64(pk.end-pk.l3))
	return true
}
