package syncookie

import (
	"encoding/binary"
	"slices"

	"github.com/tetherlb/tether/dataplane/header"
)

// Opts are the TCP options of a segment Build makes.
type Opts struct {
	SYN          bool
	MSS          uint16
	WS           bool
	WScale       uint8
	SACK         bool
	TS           bool
	TSVal, TSEcr uint32
}

// MaxOptions is the most option bytes Build writes: MSS 4,
// SACK-permitted and timestamps 12, window scale 4.
const MaxOptions = 20

// Build appends to out[:0] the segment from the VIP to the client of t,
// an IPv4 or IPv6 packet by t's family, with full checksums. Options follow Linux's layout, so that every one
// sits on its natural alignment. It allocates only when out is too
// short.
func Build(out []byte, t *Tuple, seq, ack uint32, flags uint8, wnd uint16, o *Opts, payload []byte) []byte {
	optLen := 0
	if o.SYN {
		optLen += 4 // MSS
		switch {
		case o.TS:
			optLen += 12 // (SACK-permitted or NOP NOP) and timestamps
		case o.SACK:
			optLen += 4
		}
		if o.WS {
			optLen += 4
		}
	} else if o.TS {
		optLen += 12
	}
	tcpLen := header.TCPMinSize + optLen + len(payload)
	ipLen := header.IPv4MinSize
	if !t.Client.Is4() {
		ipLen = header.IPv6Size
	}
	n := ipLen + tcpLen
	b := slices.Grow(out[:0], n)[:n]
	var src, dst []byte
	if ipLen == header.IPv4MinSize {
		header.EncodeIPv4(b, &header.IPv4Fields{
			TotalLength: uint16(n),
			FlagsOffset: header.IPv4FlagDF,
			TTL:         64,
			Protocol:    header.IPProtoTCP,
			Src:         t.VIP.As4(),
			Dst:         t.Client.As4(),
		})
		ip := header.IPv4(b)
		src, dst = ip.Src(), ip.Dst()
	} else {
		header.EncodeIPv6(b, &header.IPv6Fields{
			PayloadLength: uint16(tcpLen),
			NextHeader:    header.IPProtoTCP,
			HopLimit:      64,
			Src:           t.VIP.As16(),
			Dst:           t.Client.As16(),
		})
		ip := header.IPv6(b)
		src, dst = ip.Src(), ip.Dst()
	}
	s := b[ipLen:]
	binary.BigEndian.PutUint16(s[0:], t.VIPPort)
	binary.BigEndian.PutUint16(s[2:], t.ClientPort)
	binary.BigEndian.PutUint32(s[4:], seq)
	binary.BigEndian.PutUint32(s[8:], ack)
	s[12] = byte((header.TCPMinSize+optLen)/4) << 4
	s[13] = flags
	binary.BigEndian.PutUint16(s[14:], wnd)
	binary.BigEndian.PutUint32(s[16:], 0) // checksum, urgent pointer
	p := s[header.TCPMinSize:]
	if o.SYN {
		p[0], p[1] = header.TCPOptMSS, 4
		binary.BigEndian.PutUint16(p[2:], o.MSS)
		p = p[4:]
		if !o.TS && o.SACK {
			p[0], p[1], p[2], p[3] = header.TCPOptNOP, header.TCPOptNOP, header.TCPOptSACKPermitted, 2
			p = p[4:]
		}
	}
	if o.TS {
		if o.SYN && o.SACK {
			p[0], p[1] = header.TCPOptSACKPermitted, 2
		} else {
			p[0], p[1] = header.TCPOptNOP, header.TCPOptNOP
		}
		p[2], p[3] = header.TCPOptTimestamps, 10
		binary.BigEndian.PutUint32(p[4:], o.TSVal)
		binary.BigEndian.PutUint32(p[8:], o.TSEcr)
		p = p[12:]
	}
	if o.SYN && o.WS {
		p[0], p[1], p[2], p[3] = header.TCPOptNOP, header.TCPOptWindowScale, 3, o.WScale
		p = p[4:]
	}
	copy(p, payload)
	sum := header.PseudoHeaderSum(header.IPProtoTCP, src, dst, uint32(tcpLen))
	header.TCP(s).SetChecksum(header.Checksum(s, sum))
	return b
}
