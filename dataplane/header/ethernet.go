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
