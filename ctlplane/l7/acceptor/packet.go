package acceptor

import (
	"github.com/tetherlb/tether/dataplane/header"
	"github.com/tetherlb/tether/dataplane/syncookie"
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
		return syncookie.DefaultMSS
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
type replyOpts = syncookie.Opts

// MaxReply is the longest reply: IPv4 and TCP headers, the most
// options a reply carries and the longest HTTP answer. An out of this
// capacity is never grown.
const MaxReply = header.IPv4MinSize + header.TCPMinSize + syncookie.MaxOptions + maxResponse

// build appends to out[:0] the segment from the VIP to the client of k
// (syncookie.Build).
func build(out []byte, k *Key, seq, ack uint32, flags uint8, wnd uint16, o *replyOpts, payload []byte) []byte {
	return syncookie.Build(out, k.tuple(), seq, ack, flags, wnd, o, payload)
}
