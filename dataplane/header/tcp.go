package header

import "encoding/binary"

// TCP header (RFC 9293 §3.1):
//
//	 0                   1                   2                   3
//	 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|          Source Port          |       Destination Port        |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|                        Sequence Number                        |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|                    Acknowledgment Number                      |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|  Data |       |C|E|U|A|P|R|S|F|                               |
//	| Offset| Rsrvd |W|C|R|C|S|S|Y|I|            Window             |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|           Checksum            |         Urgent Pointer        |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|                           [Options]                           |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
type TCP []byte

const (
	tcpSrcPort  = 0
	tcpDstPort  = 2
	tcpSeq      = 4
	tcpAck      = 8
	tcpDataOff  = 12
	tcpFlags    = 13
	tcpWindow   = 14
	tcpChecksum = 16

	// TCPMinSize is the size of a header without options.
	TCPMinSize = 20
	// TCPMaxSize is the size of a header with the most options.
	TCPMaxSize = 60
)

// TCP flags.
const (
	TCPFlagFIN = 1 << 0
	TCPFlagSYN = 1 << 1
	TCPFlagRST = 1 << 2
	TCPFlagPSH = 1 << 3
	TCPFlagACK = 1 << 4
	TCPFlagURG = 1 << 5
	TCPFlagECE = 1 << 6
	TCPFlagCWR = 1 << 7
)

// SrcPort returns the source port.
func (h TCP) SrcPort() uint16 { return binary.BigEndian.Uint16(h[tcpSrcPort:]) }

// DstPort returns the destination port.
func (h TCP) DstPort() uint16 { return binary.BigEndian.Uint16(h[tcpDstPort:]) }

// Seq returns the sequence number.
func (h TCP) Seq() uint32 { return binary.BigEndian.Uint32(h[tcpSeq:]) }

// Ack returns the acknowledgment number.
func (h TCP) Ack() uint32 { return binary.BigEndian.Uint32(h[tcpAck:]) }

// DataOffset returns the header length in bytes.
func (h TCP) DataOffset() int { return int(h[tcpDataOff]>>4) * 4 }

// Flags returns the flag byte.
func (h TCP) Flags() uint8 { return h[tcpFlags] }

// Window returns the (unscaled) window.
func (h TCP) Window() uint16 { return binary.BigEndian.Uint16(h[tcpWindow:]) }

// Checksum returns the checksum field.
func (h TCP) Checksum() uint16 { return binary.BigEndian.Uint16(h[tcpChecksum:]) }

// SetChecksum sets the checksum field.
func (h TCP) SetChecksum(c uint16) { binary.BigEndian.PutUint16(h[tcpChecksum:], c) }

// SetSrcPort sets the source port, updating the checksum.
func (h TCP) SetSrcPort(p uint16) {
	h.SetChecksum(Update16(h.Checksum(), h.SrcPort(), p))
	binary.BigEndian.PutUint16(h[tcpSrcPort:], p)
}

// SetDstPort sets the destination port, updating the checksum.
func (h TCP) SetDstPort(p uint16) {
	h.SetChecksum(Update16(h.Checksum(), h.DstPort(), p))
	binary.BigEndian.PutUint16(h[tcpDstPort:], p)
}

// Options returns the options area (unchecked: DataOffset must be valid).
func (h TCP) Options() []byte { return h[TCPMinSize:h.DataOffset()] }

// TCP option kinds (RFC 9293 §3.2, RFC 7323, RFC 2018).
const (
	TCPOptEnd           = 0
	TCPOptNOP           = 1
	TCPOptMSS           = 2
	TCPOptWindowScale   = 3
	TCPOptSACKPermitted = 4
	TCPOptSACK          = 5
	TCPOptTimestamps    = 8
)

// TCPOptions holds the options Tether cares about, as parsed from a
// segment. Offsets point into the TCP header so that a value can be
// rewritten in place (MSS clamping).
type TCPOptions struct {
	MSS           uint16
	MSSOff        int // offset of the MSS value in the header, 0 if absent
	WindowScale   uint8
	HasWS         bool
	SACKPermitted bool
	TSVal, TSEcr  uint32
	HasTimestamps bool
}

// ParseTCPOptions parses the options of a header whose DataOffset has been
// validated against the segment. ok is false for a malformed options area:
// an option whose length runs past the header or is shorter than two, or
// one of the known kinds with the wrong length.
func ParseTCPOptions(h TCP) (o TCPOptions, ok bool) {
	end := h.DataOffset()
	for i := TCPMinSize; i < end; {
		kind := h[i]
		switch kind {
		case TCPOptEnd:
			return o, true
		case TCPOptNOP:
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
		switch kind {
		case TCPOptMSS:
			if n != 4 {
				return o, false
			}
			o.MSS, o.MSSOff = binary.BigEndian.Uint16(h[i+2:]), i+2
		case TCPOptWindowScale:
			if n != 3 {
				return o, false
			}
			o.WindowScale, o.HasWS = h[i+2], true
		case TCPOptSACKPermitted:
			if n != 2 {
				return o, false
			}
			o.SACKPermitted = true
		case TCPOptTimestamps:
			if n != 10 {
				return o, false
			}
			o.TSVal, o.TSEcr, o.HasTimestamps = binary.BigEndian.Uint32(h[i+2:]), binary.BigEndian.Uint32(h[i+6:]), true
		}
		i += n
	}
	return o, true
}

// SetMSS rewrites the MSS option value at the offset ParseTCPOptions
// returned, updating the checksum.
func (h TCP) SetMSS(off int, mss uint16) {
	h.SetChecksum(Update16(h.Checksum(), binary.BigEndian.Uint16(h[off:]), mss))
	binary.BigEndian.PutUint16(h[off:], mss)
}

// ClampMSS lowers every MSS option of h above max to max, updating the
// checksum, and reports whether the options area was well formed: a
// malformed one (see ParseTCPOptions) is left as it was, since which of
// its bytes are an MSS cannot be known.
func ClampMSS(h TCP, max uint16) bool {
	end := h.DataOffset()
	// First make sure the whole area is readable, then clamp.
check:
	for i := TCPMinSize; i < end; {
		switch h[i] {
		case TCPOptEnd:
			break check
		case TCPOptNOP:
			i++
			continue
		}
		if i+1 >= end {
			return false
		}
		n := int(h[i+1])
		if n < 2 || i+n > end || h[i] == TCPOptMSS && n != 4 {
			return false
		}
		i += n
	}
	for i := TCPMinSize; i < end; {
		switch h[i] {
		case TCPOptEnd:
			return true
		case TCPOptNOP:
			i++
			continue
		}
		if h[i] == TCPOptMSS && binary.BigEndian.Uint16(h[i+2:]) > max {
			h.SetMSS(i+2, max)
		}
		i += int(h[i+1])
	}
	return true
}
