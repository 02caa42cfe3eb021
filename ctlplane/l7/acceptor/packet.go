package acceptor

import (
	"net/netip"

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
	var t header.TCP
	var r counter
	switch pkt[0] >> 4 {
	case 4:
		t, r = s.parseIPv4(pkt)
	case 6:
		t, r = s.parseIPv6(pkt)
	default:
		return cMalformedIP
	}
	if r != cNone {
		return r
	}
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
	s.key.ClientPort, s.key.VIPPort = t.SrcPort(), t.DstPort()
	if s.key.ClientPort == 0 || s.key.VIPPort == 0 || !syncookie.Replyable(s.key.Client) {
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

// parseIPv4 checks pkt's IPv4 header, takes its addresses into s.key
// and returns its TCP segment.
func (s *seg) parseIPv4(pkt []byte) (header.TCP, counter) {
	if len(pkt) < header.IPv4MinSize {
		return nil, cMalformedShort
	}
	ip := header.IPv4(pkt)
	hl, tl := ip.HeaderLength(), int(ip.TotalLength())
	if hl < header.IPv4MinSize || tl < hl || tl > len(pkt) {
		return nil, cMalformedIP
	}
	ip = ip[:tl] // a link may pad
	if ip.IsFragment() {
		return nil, cFragment
	}
	if o, ok := header.CheckIPv4Options(ip); !ok {
		return nil, cMalformedIP
	} else if o.SourceRouted {
		return nil, cSourceRouted
	}
	if ip.Protocol() != header.IPProtoTCP {
		return nil, cNotTCP
	}
	s.key.Client, s.key.VIP = netip.AddrFrom4([4]byte(ip.Src())), netip.AddrFrom4([4]byte(ip.Dst()))
	return header.TCP(ip[hl:]), cNone
}

// parseIPv6 checks pkt's IPv6 header, takes its addresses into s.key
// and returns its TCP segment. Extension headers are not taken: the
// forwarder does not punt them (a host restores the flow ID from fixed
// offsets, and the migrated connection's later segments would need the
// same headers), and no client stack puts any on a plain TCP segment.
func (s *seg) parseIPv6(pkt []byte) (header.TCP, counter) {
	if len(pkt) < header.IPv6Size {
		return nil, cMalformedShort
	}
	ip := header.IPv6(pkt)
	n := header.IPv6Size + int(ip.PayloadLength())
	if n > len(pkt) {
		return nil, cMalformedIP
	}
	switch ip.NextHeader() {
	case header.IPProtoTCP:
	case header.IPProtoFragment:
		return nil, cFragment
	case header.IPProtoRouting:
		return nil, cSourceRouted
	case header.IPProtoHopOpts, header.IPProtoDstOpts, header.IPProtoAH, header.IPProtoESP,
		header.IPProtoMobility, header.IPProtoHIP, header.IPProtoShim6:
		return nil, cExtHeaders
	default:
		return nil, cNotTCP
	}
	s.key.Client, s.key.VIP = netip.AddrFrom16([16]byte(ip.Src())), netip.AddrFrom16([16]byte(ip.Dst()))
	return header.TCP(pkt[header.IPv6Size:n]), cNone
}

// replyOpts are the TCP options of a reply.
type replyOpts = syncookie.Opts

// MaxReply is the longest reply: IPv6 and TCP headers, the most
// options a reply carries and the longest HTTP answer. An out of this
// capacity is never grown.
const MaxReply = header.IPv6Size + header.TCPMinSize + syncookie.MaxOptions + maxResponse

// build appends to out[:0] the segment from the VIP to the client of k
// (syncookie.Build).
func build(out []byte, k *Key, seq, ack uint32, flags uint8, wnd uint16, o *replyOpts, payload []byte) []byte {
	return syncookie.Build(out, k.tuple(), seq, ack, flags, wnd, o, payload)
}
