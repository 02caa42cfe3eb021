package header

import "encoding/binary"

// UDP header (RFC 768):
//
//	 0      7 8     15 16    23 24    31
//	+--------+--------+--------+--------+
//	|     Source      |   Destination   |
//	|      Port       |      Port       |
//	+--------+--------+--------+--------+
//	|     Length      |    Checksum     |
//	+--------+--------+--------+--------+
//
// Over IPv4 a zero checksum means "not computed" and must stay zero; a
// computed zero is sent as 0xffff. Over IPv6 the checksum is mandatory
// (RFC 8200 §8.1).
type UDP []byte

const (
	udpSrcPort  = 0
	udpDstPort  = 2
	udpLength   = 4
	udpChecksum = 6

	// UDPSize is the size of the header.
	UDPSize = 8
)

// SrcPort returns the source port.
func (h UDP) SrcPort() uint16 { return binary.BigEndian.Uint16(h[udpSrcPort:]) }

// DstPort returns the destination port.
func (h UDP) DstPort() uint16 { return binary.BigEndian.Uint16(h[udpDstPort:]) }

// Length returns the length field (header and payload).
func (h UDP) Length() uint16 { return binary.BigEndian.Uint16(h[udpLength:]) }

// Checksum returns the checksum field.
func (h UDP) Checksum() uint16 { return binary.BigEndian.Uint16(h[udpChecksum:]) }

// SetChecksum sets the checksum field.
func (h UDP) SetChecksum(c uint16) { binary.BigEndian.PutUint16(h[udpChecksum:], c) }

// SetSrcPort sets the source port, updating a present checksum.
func (h UDP) SetSrcPort(p uint16) {
	h.adjust(Delta16(h.SrcPort(), p))
	binary.BigEndian.PutUint16(h[udpSrcPort:], p)
}

// SetDstPort sets the destination port, updating a present checksum.
func (h UDP) SetDstPort(p uint16) {
	h.adjust(Delta16(h.DstPort(), p))
	binary.BigEndian.PutUint16(h[udpDstPort:], p)
}

// Adjust applies an unfolded checksum delta (see Delta16, DeltaBytes) to a
// present checksum, keeping an absent (zero) one absent and never turning
// a present one into zero.
func (h UDP) Adjust(delta uint64) { h.adjust(delta) }

func (h UDP) adjust(delta uint64) {
	c := h.Checksum()
	if c == 0 {
		return
	}
	c = Adjust(c, delta)
	if c == 0 {
		c = 0xffff
	}
	h.SetChecksum(c)
}
