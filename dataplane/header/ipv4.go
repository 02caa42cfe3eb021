package header

import "encoding/binary"

// IPv4 header (RFC 791 §3.1):
//
//	 0                   1                   2                   3
//	 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|Version|  IHL  |Type of Service|          Total Length         |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|         Identification        |Flags|      Fragment Offset    |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|  Time to Live |    Protocol   |         Header Checksum       |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|                       Source Address                          |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|                    Destination Address                        |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|                    Options                    |    Padding    |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//
// "Internet Header Length is the length of the internet header in 32 bit
// words ... the minimum value for a correct header is 5." The maximum, 15,
// makes a 60-byte header.
type IPv4 []byte

const (
	ipv4VersIHL  = 0
	ipv4TOS      = 1
	ipv4TotalLen = 2
	ipv4ID       = 4
	ipv4FlagsOff = 6
	ipv4TTL      = 8
	ipv4Protocol = 9
	ipv4Checksum = 10
	ipv4Src      = 12
	ipv4Dst      = 16

	// IPv4MinSize is the size of a header without options.
	IPv4MinSize = 20
	// IPv4MaxSize is the size of a header with the most options.
	IPv4MaxSize = 60
	// IPv4AddrSize is the size of an address.
	IPv4AddrSize = 4

	// IPv4FlagDF is "don't fragment", IPv4FlagMF "more fragments", in the
	// 16-bit flags-and-offset word.
	IPv4FlagDF = 0x4000
	IPv4FlagMF = 0x2000
	// ipv4OffsetMask selects the fragment offset, in 8-byte units.
	ipv4OffsetMask = 0x1fff
)

// Version returns the version field (4 for a valid header).
func (h IPv4) Version() uint8 { return h[ipv4VersIHL] >> 4 }

// HeaderLength returns the header length in bytes, from IHL.
func (h IPv4) HeaderLength() int { return int(h[ipv4VersIHL]&0x0f) * 4 }

// TOS returns the type-of-service (DSCP and ECN) byte.
func (h IPv4) TOS() uint8 { return h[ipv4TOS] }

// TotalLength returns the total length of the datagram in bytes.
func (h IPv4) TotalLength() uint16 { return binary.BigEndian.Uint16(h[ipv4TotalLen:]) }

// ID returns the identification field.
func (h IPv4) ID() uint16 { return binary.BigEndian.Uint16(h[ipv4ID:]) }

// FlagsOffset returns the 16-bit flags-and-fragment-offset word.
func (h IPv4) FlagsOffset() uint16 { return binary.BigEndian.Uint16(h[ipv4FlagsOff:]) }

// FragmentOffset returns the fragment offset in bytes.
func (h IPv4) FragmentOffset() int { return int(h.FlagsOffset()&ipv4OffsetMask) * 8 }

// MoreFragments reports whether MF is set.
func (h IPv4) MoreFragments() bool { return h.FlagsOffset()&IPv4FlagMF != 0 }

// DontFragment reports whether DF is set.
func (h IPv4) DontFragment() bool { return h.FlagsOffset()&IPv4FlagDF != 0 }

// IsFragment reports whether the datagram is a fragment: MF set or a
// non-zero offset.
func (h IPv4) IsFragment() bool { return h.FlagsOffset()&(IPv4FlagMF|ipv4OffsetMask) != 0 }

// TTL returns the time to live.
func (h IPv4) TTL() uint8 { return h[ipv4TTL] }

// Protocol returns the protocol of the payload.
func (h IPv4) Protocol() uint8 { return h[ipv4Protocol] }

// Checksum returns the header checksum field.
func (h IPv4) Checksum() uint16 { return binary.BigEndian.Uint16(h[ipv4Checksum:]) }

// Src returns the source address as a slice of the header.
func (h IPv4) Src() []byte { return h[ipv4Src : ipv4Src+4] }

// Dst returns the destination address as a slice of the header.
func (h IPv4) Dst() []byte { return h[ipv4Dst : ipv4Dst+4] }

// Payload returns the bytes after the header up to the total length.
func (h IPv4) Payload() []byte { return h[h.HeaderLength():h.TotalLength()] }

// SetChecksum sets the header checksum field.
func (h IPv4) SetChecksum(c uint16) { binary.BigEndian.PutUint16(h[ipv4Checksum:], c) }

// SetID sets the identification field, updating the header checksum.
func (h IPv4) SetID(id uint16) {
	h.SetChecksum(Update16(h.Checksum(), h.ID(), id))
	binary.BigEndian.PutUint16(h[ipv4ID:], id)
}

// SetSrc sets the source address, updating the header checksum.
func (h IPv4) SetSrc(a []byte) {
	h.SetChecksum(UpdateBytes(h.Checksum(), h[ipv4Src:ipv4Src+4], a))
	copy(h[ipv4Src:ipv4Src+4], a)
}

// SetDst sets the destination address, updating the header checksum.
func (h IPv4) SetDst(a []byte) {
	h.SetChecksum(UpdateBytes(h.Checksum(), h[ipv4Dst:ipv4Dst+4], a))
	copy(h[ipv4Dst:ipv4Dst+4], a)
}

// SetTotalLength sets the total length, updating the header checksum.
func (h IPv4) SetTotalLength(n uint16) {
	h.SetChecksum(Update16(h.Checksum(), h.TotalLength(), n))
	binary.BigEndian.PutUint16(h[ipv4TotalLen:], n)
}

// CalculateChecksum returns the checksum the header should carry.
func (h IPv4) CalculateChecksum() uint16 {
	n := h.HeaderLength()
	s := Sum(h[:ipv4Checksum], 0)
	s = Sum(h[ipv4Checksum+2:n], s)
	return ^Fold(s)
}

// IPv4Fields describes a header to encode with EncodeIPv4 (no options).
type IPv4Fields struct {
	TOS         uint8
	TotalLength uint16
	ID          uint16
	FlagsOffset uint16
	TTL         uint8
	Protocol    uint8
	Src, Dst    [4]byte
}

// EncodeIPv4 writes a 20-byte header with a correct checksum into b,
// which must hold IPv4MinSize bytes.
func EncodeIPv4(b []byte, f *IPv4Fields) {
	h := IPv4(b[:IPv4MinSize])
	h[ipv4VersIHL] = 0x45
	h[ipv4TOS] = f.TOS
	binary.BigEndian.PutUint16(h[ipv4TotalLen:], f.TotalLength)
	binary.BigEndian.PutUint16(h[ipv4ID:], f.ID)
	binary.BigEndian.PutUint16(h[ipv4FlagsOff:], f.FlagsOffset)
	h[ipv4TTL] = f.TTL
	h[ipv4Protocol] = f.Protocol
	copy(h[ipv4Src:], f.Src[:])
	copy(h[ipv4Dst:], f.Dst[:])
	h.SetChecksum(0)
	h.SetChecksum(h.CalculateChecksum())
}

// IPv4 option kinds that matter to a forwarder (RFC 791).
const (
	IPv4OptEnd  = 0   // end of the option list
	IPv4OptNOP  = 1   // padding
	IPv4OptLSRR = 131 // loose source and record route
	IPv4OptSSRR = 137 // strict source and record route
)

// IPv4Options is what CheckIPv4Options finds in a header's options.
type IPv4Options struct {
	// SourceRouted: a loose or strict source route is present. Its
	// destination address is the route's next hop, not the packet's
	// final destination, which the transport checksum covers.
	SourceRouted bool
}

// CheckIPv4Options walks the options of h, a header whose length has
// been checked against the packet. ok is false for a malformed list: an
// option whose length is below two or runs past the header.
func CheckIPv4Options(h IPv4) (o IPv4Options, ok bool) {
	end := h.HeaderLength()
	for i := IPv4MinSize; i < end; {
		switch h[i] {
		case IPv4OptEnd:
			return o, true
		case IPv4OptNOP:
			i++
			continue
		}
		if i+1 >= end {
			return o, false
		}
		n := int(h[i+1])
		if n < 2 || i+n > end {
			return o, false
		}
		if h[i] == IPv4OptLSRR || h[i] == IPv4OptSSRR {
			o.SourceRouted = true
		}
		i += n
	}
	return o, true
}
