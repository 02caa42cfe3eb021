package header

import (
	"encoding/binary"
	"fmt"
)

// Ethernet II header (IEEE 802.3):
//
//	 0                   1
//	 0 1 2 3 4 5 6 7 8 9 0 1 2 3
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|  destination  |   source  |T|   6 + 6 + 2 bytes
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//
// An 802.1Q or 802.1ad tag inserts 4 bytes before the EtherType: the tag
// protocol identifier (which sits where the EtherType would) and the tag
// control information, after which the inner EtherType follows.
type Ethernet []byte

const (
	// EthernetSize is the size of an untagged Ethernet header.
	EthernetSize = 14
	// VLANTagSize is the size of one 802.1Q/802.1ad tag.
	VLANTagSize = 4
	// MaxVLANTags bounds the tag walk: QinQ (two tags) is the deepest
	// stacking Tether accepts.
	MaxVLANTags = 2
)

// EtherType values Tether looks at.
const (
	EtherTypeIPv4   = 0x0800
	EtherTypeARP    = 0x0806
	EtherTypeVLAN   = 0x8100 // 802.1Q customer tag
	EtherTypeQinQ   = 0x88a8 // 802.1ad service tag
	EtherTypeQinQv1 = 0x9100 // pre-standard service tag, still seen in the field
	EtherTypeIPv6   = 0x86dd
)

// MAC is an Ethernet address.
type MAC [6]byte

// String formats the address as aa:bb:cc:dd:ee:ff.
func (m MAC) String() string {
	return fmt.Sprintf("%02x:%02x:%02x:%02x:%02x:%02x", m[0], m[1], m[2], m[3], m[4], m[5])
}

// ParseMAC parses aa:bb:cc:dd:ee:ff (or with dashes).
func ParseMAC(s string) (MAC, error) {
	var m MAC
	if len(s) != 17 {
		return m, fmt.Errorf("mac %q: want 6 hex octets separated by ':' or '-'", s)
	}
	for i := 0; i < 6; i++ {
		if i > 0 && s[i*3-1] != ':' && s[i*3-1] != '-' {
			return m, fmt.Errorf("mac %q: want 6 hex octets separated by ':' or '-'", s)
		}
		hi, ok1 := unhex(s[i*3])
		lo, ok2 := unhex(s[i*3+1])
		if !ok1 || !ok2 {
			return m, fmt.Errorf("mac %q: %q is not a hex octet", s, s[i*3:i*3+2])
		}
		m[i] = hi<<4 | lo
	}
	return m, nil
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// Dst returns the destination address.
func (e Ethernet) Dst() MAC { return MAC(e[0:6]) }

// Src returns the source address.
func (e Ethernet) Src() MAC { return MAC(e[6:12]) }

// SetDst sets the destination address.
func (e Ethernet) SetDst(m MAC) { copy(e[0:6], m[:]) }

// SetSrc sets the source address.
func (e Ethernet) SetSrc(m MAC) { copy(e[6:12], m[:]) }

// Type returns the outer EtherType (a tag protocol identifier when tagged).
func (e Ethernet) Type() uint16 { return binary.BigEndian.Uint16(e[12:]) }

// IsVLANTag reports whether an EtherType value is a tag protocol identifier.
func IsVLANTag(t uint16) bool {
	return t == EtherTypeVLAN || t == EtherTypeQinQ || t == EtherTypeQinQv1
}

// WalkEthernet walks the Ethernet header and up to MaxVLANTags tags. It
// returns the offset of the network header, the inner EtherType and the
// number of tags. ok is false when the frame ends inside the header or
// carries more tags than MaxVLANTags; in the second case tags is
// MaxVLANTags+1.
func WalkEthernet(b []byte) (l3Off int, etherType uint16, tags int, ok bool) {
	if len(b) < EthernetSize {
		return 0, 0, 0, false
	}
	off := 12
	t := binary.BigEndian.Uint16(b[off:])
	for IsVLANTag(t) {
		if tags == MaxVLANTags {
			return 0, 0, tags + 1, false
		}
		tags++
		off += VLANTagSize
		if len(b) < off+2 {
			return 0, 0, tags, false
		}
		t = binary.BigEndian.Uint16(b[off:])
	}
	return off + 2, t, tags, true
}
