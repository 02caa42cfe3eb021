package header

import "encoding/binary"

// The Internet checksum (RFC 1071) is the ones' complement of the ones'
// complement sum of the 16-bit big-endian words of the data. Sums here are
// kept unfolded in a uint64 so that many words can be added before the
// carries are folded back in.

// Sum adds the 16-bit big-endian words of b to initial and returns the
// unfolded sum. An odd trailing byte is padded with zero, as RFC 1071
// requires; chain calls only on even-length pieces.
func Sum(b []byte, initial uint64) uint64 {
	s := initial
	for len(b) >= 8 {
		s += uint64(binary.BigEndian.Uint32(b)) + uint64(binary.BigEndian.Uint32(b[4:]))
		b = b[8:]
	}
	if len(b) >= 4 {
		s += uint64(binary.BigEndian.Uint32(b))
		b = b[4:]
	}
	if len(b) >= 2 {
		s += uint64(binary.BigEndian.Uint16(b))
		b = b[2:]
	}
	if len(b) == 1 {
		s += uint64(b[0]) << 8
	}
	return s
}

// Fold folds the carries of an unfolded sum into 16 bits (not complemented).
func Fold(s uint64) uint16 {
	s = (s >> 32) + (s & 0xffffffff)
	s = (s >> 32) + (s & 0xffffffff)
	s = (s >> 16) + (s & 0xffff)
	s = (s >> 16) + (s & 0xffff)
	return uint16(s)
}

// Checksum returns the Internet checksum of b: the value to store in a
// header's checksum field after zeroing it, or 0 when verifying a header
// whose checksum field is included and correct.
func Checksum(b []byte, initial uint64) uint16 {
	return ^Fold(Sum(b, initial))
}

// PseudoHeaderSum returns the unfolded sum of the TCP/UDP/ICMPv6
// pseudo-header: source and destination address (4 or 16 bytes each), the
// protocol and the upper-layer length (RFC 793, RFC 768, RFC 8200 §8.1).
func PseudoHeaderSum(proto uint8, src, dst []byte, length uint32) uint64 {
	s := Sum(src, 0)
	s = Sum(dst, s)
	return s + uint64(proto) + uint64(length>>16) + uint64(length&0xffff)
}

// Update16 returns the checksum check updated for one 16-bit word of the
// covered data changing from old to new, by RFC 1624 equation 3:
// HC' = ~(~HC + ~m + m'). Unlike the RFC 1141 form it never produces
// 0xffff from a correct input, so a correct checksum stays correct.
func Update16(check, old, new uint16) uint16 {
	s := uint64(^check) + uint64(^old) + uint64(new)
	return ^Fold(s)
}

// Update32 is Update16 for a 32-bit field.
func Update32(check uint16, old, new uint32) uint16 {
	s := uint64(^check) + uint64(^uint16(old>>16)) + uint64(^uint16(old)) +
		uint64(uint16(new>>16)) + uint64(uint16(new))
	return ^Fold(s)
}

// UpdateBytes is Update16 for a field of even length, such as an IPv4 or
// IPv6 address. old and new must have the same even length.
func UpdateBytes(check uint16, old, new []byte) uint16 {
	s := uint64(^check)
	for i := 0; i+1 < len(old) && i+1 < len(new); i += 2 {
		s += uint64(^binary.BigEndian.Uint16(old[i:])) + uint64(binary.BigEndian.Uint16(new[i:]))
	}
	return ^Fold(s)
}

// Adjust returns check updated for the covered data's sum growing by delta,
// an unfolded difference (new sum plus the complement of the old sum). It is
// how a change computed once is applied to several checksums, for example
// an address change that both the IP header and the TCP pseudo-header
// cover.
func Adjust(check uint16, delta uint64) uint16 {
	return ^Fold(uint64(^check) + delta)
}

// Delta16 returns the unfolded delta for a 16-bit word changing from old to
// new, for use with Adjust.
func Delta16(old, new uint16) uint64 { return uint64(^old) + uint64(new) }

// Delta32 returns the unfolded delta for a 32-bit field (an IPv4
// address) changing from old to new, for use with Adjust.
func Delta32(old, new uint32) uint64 {
	return uint64(^uint16(old>>16)) + uint64(^uint16(old)) + uint64(uint16(new>>16)) + uint64(uint16(new))
}

// IPv4HeaderValid reports whether the IPv4 header h (its full length,
// options included) carries a correct checksum. The common 20-byte header
// is summed with five loads instead of the general loop.
func IPv4HeaderValid(h []byte) bool {
	if len(h) == IPv4MinSize {
		s := uint64(binary.BigEndian.Uint32(h[0:])) + uint64(binary.BigEndian.Uint32(h[4:])) +
			uint64(binary.BigEndian.Uint32(h[8:])) + uint64(binary.BigEndian.Uint32(h[12:])) +
			uint64(binary.BigEndian.Uint32(h[16:]))
		return Fold(s) == 0xffff
	}
	return Fold(Sum(h, 0)) == 0xffff
}

// DeltaBytes returns the unfolded delta for an even-length field changing
// from old to new, for use with Adjust.
func DeltaBytes(old, new []byte) uint64 {
	var s uint64
	for i := 0; i+1 < len(old) && i+1 < len(new); i += 2 {
		s += uint64(^binary.BigEndian.Uint16(old[i:])) + uint64(binary.BigEndian.Uint16(new[i:]))
	}
	return s
}
