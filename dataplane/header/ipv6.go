package header

import "encoding/binary"

// IPv6 header (RFC 8200 §3):
//
//	 0                   1                   2                   3
//	 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|Version| Traffic Class |           Flow Label                  |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|         Payload Length        |  Next Header  |   Hop Limit   |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|                  Source Address (128 bits)                    |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|               Destination Address (128 bits)                  |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//
// IPv6 has no header checksum; the upper layers' pseudo-header covers
// the addresses.
type IPv6 []byte

const (
	ipv6VersTCFlow = 0
	ipv6PayloadLen = 4
	ipv6NextHeader = 6
	ipv6HopLimit   = 7
	ipv6Src        = 8
	ipv6Dst        = 24

	// IPv6Size is the size of the fixed header.
	IPv6Size = 40
	// IPv6AddrSize is the size of an address.
	IPv6AddrSize = 16
	// IPv6FragmentSize is the size of the fragment extension header.
	IPv6FragmentSize = 8
	// IPv6MinMTU is the MTU every IPv6 link has (RFC 8200 §5): no
	// sender shrinks its packets below it.
	IPv6MinMTU = 1280
	// MaxIPv6ExtHeaders bounds the extension-header walk. RFC 8200 §4.1
	// recommends an order with at most one of each header (destination
	// options twice); eight is more than any legitimate packet carries and
	// keeps a crafted chain from costing more than a few loads.
	MaxIPv6ExtHeaders = 8
)

// IPv6 extension header and upper-layer protocol numbers.
const (
	IPProtoHopOpts  = 0
	IPProtoICMP     = 1
	IPProtoIPIP     = 4
	IPProtoTCP      = 6
	IPProtoUDP      = 17
	IPProtoIPv6     = 41
	IPProtoRouting  = 43
	IPProtoFragment = 44
	IPProtoESP      = 50
	IPProtoAH       = 51
	IPProtoICMPv6   = 58
	IPProtoNoNext   = 59
	IPProtoDstOpts  = 60
	IPProtoMobility = 135
	IPProtoHIP      = 139
	IPProtoShim6    = 140
)

// Version returns the version field (6 for a valid header).
func (h IPv6) Version() uint8 { return h[ipv6VersTCFlow] >> 4 }

// TrafficClass returns the traffic class byte.
func (h IPv6) TrafficClass() uint8 {
	return uint8(binary.BigEndian.Uint16(h[ipv6VersTCFlow:]) >> 4)
}

// FlowLabel returns the 20-bit flow label.
func (h IPv6) FlowLabel() uint32 {
	return binary.BigEndian.Uint32(h[ipv6VersTCFlow:]) & 0xfffff
}

// PayloadLength returns the length of everything after the fixed header.
func (h IPv6) PayloadLength() uint16 { return binary.BigEndian.Uint16(h[ipv6PayloadLen:]) }

// NextHeader returns the type of the header after the fixed header.
func (h IPv6) NextHeader() uint8 { return h[ipv6NextHeader] }

// HopLimit returns the hop limit.
func (h IPv6) HopLimit() uint8 { return h[ipv6HopLimit] }

// Src returns the source address as a slice of the header.
func (h IPv6) Src() []byte { return h[ipv6Src : ipv6Src+16] }

// Dst returns the destination address as a slice of the header.
func (h IPv6) Dst() []byte { return h[ipv6Dst : ipv6Dst+16] }

// SetSrc sets the source address. The caller updates upper-layer checksums.
func (h IPv6) SetSrc(a []byte) { copy(h[ipv6Src:ipv6Src+16], a) }

// SetDst sets the destination address. The caller updates upper-layer
// checksums.
func (h IPv6) SetDst(a []byte) { copy(h[ipv6Dst:ipv6Dst+16], a) }

// SetPayloadLength sets the payload length.
func (h IPv6) SetPayloadLength(n uint16) { binary.BigEndian.PutUint16(h[ipv6PayloadLen:], n) }

// SetNextHeader sets the next header field.
func (h IPv6) SetNextHeader(n uint8) { h[ipv6NextHeader] = n }

// IPv6Fields describes a fixed header to encode with EncodeIPv6.
type IPv6Fields struct {
	TrafficClass  uint8
	FlowLabel     uint32
	PayloadLength uint16
	NextHeader    uint8
	HopLimit      uint8
	Src, Dst      [16]byte
}

// EncodeIPv6 writes a fixed header into b, which must hold IPv6Size bytes.
func EncodeIPv6(b []byte, f *IPv6Fields) {
	h := IPv6(b[:IPv6Size])
	binary.BigEndian.PutUint32(h[ipv6VersTCFlow:], 6<<28|uint32(f.TrafficClass)<<20|f.FlowLabel&0xfffff)
	binary.BigEndian.PutUint16(h[ipv6PayloadLen:], f.PayloadLength)
	h[ipv6NextHeader] = f.NextHeader
	h[ipv6HopLimit] = f.HopLimit
	copy(h[ipv6Src:], f.Src[:])
	copy(h[ipv6Dst:], f.Dst[:])
}

// IPv6Walk is the result of walking an IPv6 extension-header chain.
type IPv6Walk struct {
	// Proto is the upper-layer protocol (TCP, UDP, ICMPv6, ...), or the
	// header at which the walk stopped (ESP, no-next-header).
	Proto uint8
	// L4Off is the offset of the upper-layer header from the start of
	// the IPv6 header.
	L4Off int
	// FragOff is the offset of the fragment header, 0 when there is none.
	FragOff int
	// SourceRouted is set when a routing header still has segments to
	// visit (segments left above zero), or is of the deprecated type 0
	// (RFC 5095): the destination address is not the packet's final
	// destination, and the transport checksum's pseudo-header holds
	// another address.
	SourceRouted bool
}

// WalkIPv6 follows the extension headers of the packet b, which starts
// with a fixed IPv6 header of at least IPv6Size bytes and is cut to the
// datagram's length. ok is false when a header runs past the end of b,
// when the chain is longer than MaxIPv6ExtHeaders, when a fragment
// header appears twice, or when a Hop-by-Hop Options header is not the
// first (RFC 8200 §4.1 allows it only right after the IPv6 header).
func WalkIPv6(b []byte) (w IPv6Walk, ok bool) {
	next := b[ipv6NextHeader]
	off := IPv6Size
	for i := 0; ; i++ {
		switch next {
		case IPProtoHopOpts, IPProtoRouting, IPProtoDstOpts, IPProtoMobility, IPProtoHIP, IPProtoShim6:
			// Generic format: next header, length in 8-octet units not
			// counting the first 8 octets.
			if len(b) < off+8 || i == MaxIPv6ExtHeaders || next == IPProtoHopOpts && i > 0 {
				return w, false
			}
			if next == IPProtoRouting {
				// Routing type at +2, segments left at +3.
				w.SourceRouted = w.SourceRouted || b[off+3] > 0 || b[off+2] == 0
			}
			next, off = b[off], off+(int(b[off+1])+1)*8
		case IPProtoAH:
			// RFC 4302 §2.2: length in 4-octet units, minus 2.
			if len(b) < off+8 || i == MaxIPv6ExtHeaders {
				return w, false
			}
			next, off = b[off], off+(int(b[off+1])+2)*4
		case IPProtoFragment:
			if len(b) < off+IPv6FragmentSize || i == MaxIPv6ExtHeaders || w.FragOff != 0 {
				return w, false
			}
			w.FragOff = off
			next, off = b[off], off+IPv6FragmentSize
		default:
			if off > len(b) {
				return w, false
			}
			w.Proto, w.L4Off = next, off
			return w, true
		}
	}
}

// IPv6Fragment is the fragment extension header (RFC 8200 §4.5):
//
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|  Next Header  |   Reserved    |      Fragment Offset    |Res|M|
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|                         Identification                        |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
type IPv6Fragment []byte

// NextHeader returns the header after the fragment header.
func (f IPv6Fragment) NextHeader() uint8 { return f[0] }

// Offset returns the fragment offset in bytes.
func (f IPv6Fragment) Offset() int { return int(binary.BigEndian.Uint16(f[2:]) &^ 7) }

// More reports whether the M (more fragments) flag is set.
func (f IPv6Fragment) More() bool { return f[3]&1 != 0 }

// ID returns the identification.
func (f IPv6Fragment) ID() uint32 { return binary.BigEndian.Uint32(f[4:]) }

// SetID sets the identification.
func (f IPv6Fragment) SetID(id uint32) { binary.BigEndian.PutUint32(f[4:], id) }

// EncodeIPv6Fragment writes a fragment header into b, which must hold
// IPv6FragmentSize bytes: the header next after it, the fragment's
// offset in bytes (a multiple of 8), whether more fragments follow, and
// the datagram's identification.
func EncodeIPv6Fragment(b []byte, next uint8, off int, more bool, id uint32) {
	f := IPv6Fragment(b[:IPv6FragmentSize])
	f[0], f[1] = next, 0
	w := uint16(off) &^ 7
	if more {
		w |= 1
	}
	binary.BigEndian.PutUint16(f[2:], w)
	f.SetID(id)
}
