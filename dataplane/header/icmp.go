package header

import "encoding/binary"

// ICMP (RFC 792) and ICMPv6 (RFC 4443) share the first four bytes: type,
// code and a checksum. Error messages then carry four bytes that depend on
// the type (unused, pointer, next-hop MTU) and quote as much of the
// offending packet as fits: for ICMPv4 at least its IP header and the first
// 8 bytes of its payload, which hold the transport ports.
//
//	 0                   1                   2                   3
//	 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|     Type      |     Code      |          Checksum             |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|              unused / pointer / next-hop MTU                  |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|      Internet Header + 64 bits of Original Data Datagram      |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//
// The ICMPv4 checksum covers the ICMP message only; the ICMPv6 checksum
// also covers the IPv6 pseudo-header.
type ICMP []byte

const (
	icmpType     = 0
	icmpCode     = 1
	icmpChecksum = 2
	icmpRest     = 4

	// ICMPHeaderSize is the size of the header before the quoted packet
	// (for errors) or the identifier and sequence (for echo).
	ICMPHeaderSize = 8
)

// ICMPv4 types.
const (
	ICMPv4EchoReply      = 0
	ICMPv4DestUnreach    = 3
	ICMPv4SourceQuench   = 4
	ICMPv4Redirect       = 5
	ICMPv4Echo           = 8
	ICMPv4TimeExceeded   = 11
	ICMPv4ParamProblem   = 12
	ICMPv4CodeFragNeeded = 4 // with ICMPv4DestUnreach
)

// ICMPv6 types.
const (
	ICMPv6DestUnreach  = 1
	ICMPv6PacketTooBig = 2
	ICMPv6TimeExceeded = 3
	ICMPv6ParamProblem = 4
	ICMPv6EchoRequest  = 128
	ICMPv6EchoReply    = 129
)

// Type returns the message type.
func (h ICMP) Type() uint8 { return h[icmpType] }

// Code returns the message code.
func (h ICMP) Code() uint8 { return h[icmpCode] }

// Checksum returns the checksum field.
func (h ICMP) Checksum() uint16 { return binary.BigEndian.Uint16(h[icmpChecksum:]) }

// SetChecksum sets the checksum field.
func (h ICMP) SetChecksum(c uint16) { binary.BigEndian.PutUint16(h[icmpChecksum:], c) }

// Rest returns the 32-bit type-specific word (MTU for "fragmentation
// needed" and "packet too big").
func (h ICMP) Rest() uint32 { return binary.BigEndian.Uint32(h[icmpRest:]) }

// Quote returns the quoted packet of an error message.
func (h ICMP) Quote() []byte { return h[ICMPHeaderSize:] }

// IsICMPv4Error reports whether an ICMPv4 type is an error that quotes the
// packet that caused it.
func IsICMPv4Error(t uint8) bool {
	switch t {
	case ICMPv4DestUnreach, ICMPv4SourceQuench, ICMPv4Redirect, ICMPv4TimeExceeded, ICMPv4ParamProblem:
		return true
	}
	return false
}

// IsICMPv6Error reports whether an ICMPv6 type is an error message; RFC
// 4443 §2.1 reserves types 0-127 for errors.
func IsICMPv6Error(t uint8) bool { return t < 128 }
