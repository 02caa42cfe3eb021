package acceptor

import (
	"encoding/binary"
	"slices"

	"github.com/tetherlb/tether/dataplane/header"
)

// seg is a parsed segment: views into the packet, checked.
type seg struct {
	key     Key
	seq     uint32
	ack     uint32
	flags   uint8
	window  uint16
	opt     header.TCPOptions
	payload []byte
}

// mss is the client's announced MSS, the RFC 9293 default without the
// option.
func (s *seg) mss() uint16 {
	if s.opt.MSSOff == 0 {
		return 536
	}
	return s.opt.MSS
}

// parse checks every length and option of pkt and fills s; it returns
// the counter of the reason to drop it, cNone to go on.
func (s *seg) parse(pkt []byte) counter {
	if len(pkt) < 1 {
		return cMalformedShort
	}
	switch pkt[0] >> 4 {
	case 4:
	case 6:
		return cIPv6
	default:
		return cMalformedIP
	}
	if len(pkt) < header.IPv4MinSize {
		return cMalformedShort
	}
	ip := header.IPv4(pkt)
	hl, tl := ip.HeaderLength(), int(ip.TotalLength())
	if hl < header.IPv4MinSize || tl < hl || tl > len(pkt) {
		return cMalformedIP
	}
	ip = ip[:tl] // a link may pad
	if ip.IsFragment() {
		return cFragment
	}
	if o, ok := header.CheckIPv4Options(ip); !ok {
		return cMalformedIP
	} else if o.SourceRouted {
		return cSourceRouted
	}
	if ip.Protocol() != 6 {
		return cNotTCP
	}
	t := header.TCP(ip[hl:])
	if len(t) < header.TCPMinSize {
		return cMalformedTCP
	}
	if off := t.DataOffset(); off < header.TCPMinSize || off > len(t) {
		return cMalformedTCP
	}
	opt, ok := header.ParseTCPOptions(t)
	if !ok {
		return cMalformedOptions
	}
	copy(s.key.Client[:], ip.Src())
	copy(s.key.VIP[:], ip.Dst())
	s.key.ClientPort, s.key.VIPPort = t.SrcPort(), t.DstPort()
	if s.key.ClientPort == 0 || s.key.VIPPort == 0 {
		return cBadAddress
	}
	// A reply to these would go to no one, or to many.
	if c := s.key.Client; c[0] == 0 || c[0] == 127 || c[0] >= 224 {
		return cBadAddress
	}
	s.seq, s.ack, s.flags, s.window = t.Seq(), t.Ack(), t.Flags(), t.Window()
	s.opt = opt
	s.payload = t[t.DataOffset():]
	f := s.flags
	if f&header.TCPFlagSYN != 0 && f&(header.TCPFlagRST|header.TCPFlagFIN) != 0 ||
		f&header.TCPFlagRST != 0 && f&header.TCPFlagFIN != 0 {
		return cMalformedFlags
	}
	return cNone
}

// replyOpts are the TCP options of a reply.
type replyOpts struct {
	syn          bool
	mss          uint16
	ws           bool
	wscale       uint8
	sack         bool
	ts           bool
	tsVal, tsEcr uint32
}

// MaxReply is the longest reply: IPv4 and TCP headers, the most
// options a reply carries (MSS 4, SACK-permitted and timestamps 12,
// window scale 4) and the longest HTTP answer. An out of this capacity
// is never grown.
const MaxReply = header.IPv4MinSize + header.TCPMinSize + 20 + maxResponse

// build appends to out[:0] the segment from the VIP to the client of k,
// with full checksums. Options follow Linux's layout, so that every
// one sits on its natural alignment.
func build(out []byte, k *Key, seq, ack uint32, flags uint8, wnd uint16, o *replyOpts, payload []byte) []byte {
	optLen := 0
	if o.syn {
		optLen += 4 // MSS
		switch {
		case o.ts:
			optLen += 12 // (SACK-permitted or NOP NOP) and timestamps
		case o.sack:
			optLen += 4
		}
		if o.ws {
			optLen += 4
		}
	} else if o.ts {
		optLen += 12
	}
	tcpLen := header.TCPMinSize + optLen + len(payload)
	n := header.IPv4MinSize + tcpLen
	b := slices.Grow(out[:0], n)[:n]
	header.EncodeIPv4(b, &header.IPv4Fields{
		TotalLength: uint16(n),
		FlagsOffset: header.IPv4FlagDF,
		TTL:         64,
		Protocol:    6,
		Src:         k.VIP,
		Dst:         k.Client,
	})
	t := b[header.IPv4MinSize:]
	binary.BigEndian.PutUint16(t[0:], k.VIPPort)
	binary.BigEndian.PutUint16(t[2:], k.ClientPort)
	binary.BigEndian.PutUint32(t[4:], seq)
	binary.BigEndian.PutUint32(t[8:], ack)
	t[12] = byte((header.TCPMinSize+optLen)/4) << 4
	t[13] = flags
	binary.BigEndian.PutUint16(t[14:], wnd)
	binary.BigEndian.PutUint32(t[16:], 0) // checksum, urgent pointer
	p := t[header.TCPMinSize:]
	if o.syn {
		p[0], p[1] = header.TCPOptMSS, 4
		binary.BigEndian.PutUint16(p[2:], o.mss)
		p = p[4:]
		if !o.ts && o.sack {
			p[0], p[1], p[2], p[3] = header.TCPOptNOP, header.TCPOptNOP, header.TCPOptSACKPermitted, 2
			p = p[4:]
		}
	}
	if o.ts {
		if o.syn && o.sack {
			p[0], p[1] = header.TCPOptSACKPermitted, 2
		} else {
			p[0], p[1] = header.TCPOptNOP, header.TCPOptNOP
		}
		p[2], p[3] = header.TCPOptTimestamps, 10
		binary.BigEndian.PutUint32(p[4:], o.tsVal)
		binary.BigEndian.PutUint32(p[8:], o.tsEcr)
		p = p[12:]
	}
	if o.syn && o.ws {
		p[0], p[1], p[2], p[3] = header.TCPOptNOP, header.TCPOptWindowScale, 3, o.wscale
		p = p[4:]
	}
	copy(p, payload)
	sum := header.PseudoHeaderSum(6, k.VIP[:], k.Client[:], uint32(tcpLen))
	header.TCP(t).SetChecksum(header.Checksum(t, sum))
	return b
}
