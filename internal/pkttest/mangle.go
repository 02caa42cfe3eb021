package pkttest

import (
	"encoding/binary"
)

// Functions that bend a well-formed frame (Ethernet, no VLAN tags) into
// the shapes a hostile or broken sender produces: options, extension
// headers, flag bytes no builder makes. Each keeps the lengths and the
// checksums the change touches right unless its name says otherwise,
// so that the one thing wrong is the thing a test means.

const ethSize = 14

// WithIPv4Options inserts raw option bytes after the IPv4 header of an
// Ethernet frame, padded with end-of-list bytes to a multiple of four,
// and fixes the header length, total length and header checksum.
func WithIPv4Options(frame, opts []byte) []byte {
	pad := (4 - len(opts)%4) % 4
	o := append(append([]byte(nil), opts...), make([]byte, pad)...)
	hl := int(frame[ethSize]&0x0f) * 4
	out := append(append(append([]byte(nil), frame[:ethSize+hl]...), o...), frame[ethSize+hl:]...)
	ip := out[ethSize:]
	ip[0] = 0x40 | byte((hl+len(o))/4)
	binary.BigEndian.PutUint16(ip[2:], binary.BigEndian.Uint16(ip[2:])+uint16(len(o)))
	FixIPv4Checksum(ip)
	return out
}

// InsertIPv6Header inserts an extension header right after the fixed
// IPv6 header of an Ethernet frame: hdr's first byte becomes the next
// header the packet had, the packet's next header becomes proto, and the
// payload length grows by len(hdr). Transport checksums do not cover
// extension headers, so they stay right.
func InsertIPv6Header(frame []byte, proto uint8, hdr []byte) []byte {
	out := append(append(append([]byte(nil), frame[:ethSize+40]...), hdr...), frame[ethSize+40:]...)
	ip := out[ethSize:]
	out[ethSize+40] = ip[6]
	ip[6] = proto
	binary.BigEndian.PutUint16(ip[4:], binary.BigEndian.Uint16(ip[4:])+uint16(len(hdr)))
	return out
}

// SetTCPFlags sets the flag byte of an Ethernet frame's TCP segment
// (FIN 0x01, SYN 0x02, RST 0x04, PSH 0x08, ACK 0x10, URG 0x20) and
// recomputes the segment's checksum.
func SetTCPFlags(frame []byte, flags uint8) []byte {
	out := append([]byte(nil), frame...)
	ip, l4 := ipAndL4(out)
	l4[13] = flags
	fixL4(ip, l4, 6)
	return out
}

// SetTCPOptions replaces the options of an Ethernet frame's TCP segment
// with raw bytes (padded with end-of-list to a multiple of four), fixing
// the data offset, the IP lengths and both checksums.
func SetTCPOptions(frame, opts []byte) []byte {
	pad := (4 - len(opts)%4) % 4
	o := append(append([]byte(nil), opts...), make([]byte, pad)...)
	ip, l4 := ipAndL4(frame)
	do := int(l4[12]>>4) * 4
	// Offsets from the IP packet, not the frame's end: a short frame
	// carries Ethernet padding after it, which is dropped here.
	start, end := ethSize+len(ip)-len(l4), ethSize+len(ip)
	out := append(append(append([]byte(nil), frame[:start+20]...), o...), frame[start+do:end]...)
	grow := 20 + len(o) - do
	ip = out[ethSize:]
	if ip[0]>>4 == 4 {
		binary.BigEndian.PutUint16(ip[2:], uint16(int(binary.BigEndian.Uint16(ip[2:]))+grow))
		FixIPv4Checksum(ip)
	} else {
		binary.BigEndian.PutUint16(ip[4:], uint16(int(binary.BigEndian.Uint16(ip[4:]))+grow))
	}
	ip, l4 = ipAndL4(out)
	l4[12] = byte((20+len(o))/4) << 4
	fixL4(ip, l4, 6)
	return out
}

// CorruptL4Checksum flips a bit of the transport (or ICMP) checksum.
func CorruptL4Checksum(frame []byte) []byte {
	out := append([]byte(nil), frame...)
	ip, l4 := ipAndL4(out)
	switch proto(ip) {
	case 6:
		l4[16] ^= 0x01
	case 17:
		l4[6] ^= 0x01
	default: // ICMP, ICMPv6
		l4[2] ^= 0x01
	}
	return out
}

// SetIPv4 changes an Ethernet frame's IPv4 header through fn (which may
// touch any field but the length) and fixes the header checksum; the
// transport checksum is recomputed too, since fn may change addresses.
func SetIPv4(frame []byte, fn func(ip []byte)) []byte {
	out := append([]byte(nil), frame...)
	ip := out[ethSize:]
	// Only a whole datagram's transport checksum can be recomputed: a
	// fragment holds part of the segment it covers.
	whole := binary.BigEndian.Uint16(ip[6:])&0x3fff == 0
	fn(ip)
	FixIPv4Checksum(ip)
	hl := int(ip[0]&0x0f) * 4
	if n := int(binary.BigEndian.Uint16(ip[2:])); whole && (ip[9] == 6 && n >= hl+20 || ip[9] == 17 && n >= hl+8) && n <= len(ip) {
		fixL4(ip, ip[hl:n], ip[9])
	}
	return out
}

// SetIPv6 changes an Ethernet frame's fixed IPv6 header through fn and
// recomputes the transport checksum (fn may change addresses).
func SetIPv6(frame []byte, fn func(ip []byte)) []byte {
	out := append([]byte(nil), frame...)
	ip, l4 := ipAndL4(out) // before fn, which may break the version
	fn(ip)
	if p := ip[6]; p == 6 || p == 17 || p == 58 {
		fixL4With(ip[8:24], ip[24:40], l4, p)
	}
	return out
}

// ipAndL4 returns the IP header and the transport segment of a frame
// without extension headers.
func ipAndL4(frame []byte) (ip, l4 []byte) {
	ip = frame[ethSize:]
	if ip[0]>>4 == 6 {
		n := 40 + int(binary.BigEndian.Uint16(ip[4:]))
		return ip[:n], ip[40:n]
	}
	hl := int(ip[0]&0x0f) * 4
	n := int(binary.BigEndian.Uint16(ip[2:]))
	return ip[:n], ip[hl:n]
}

func proto(ip []byte) uint8 {
	if ip[0]>>4 == 6 {
		return ip[6]
	}
	return ip[9]
}

// fixL4 recomputes a TCP, UDP or ICMPv6 checksum (ICMPv4 has no
// pseudo-header and is not handled here).
func fixL4(ip, l4 []byte, p uint8) {
	if ip[0]>>4 == 6 {
		fixL4With(ip[8:24], ip[24:40], l4, p)
	} else {
		fixL4With(ip[12:16], ip[16:20], l4, p)
	}
}

func fixL4With(src, dst, l4 []byte, p uint8) {
	off := map[uint8]int{6: 16, 17: 6, 58: 2}[p]
	l4[off], l4[off+1] = 0, 0
	c := ^fold(pseudo(src, dst, p, len(l4)) + sum16(l4))
	if p == 17 && c == 0 {
		c = 0xffff
	}
	binary.BigEndian.PutUint16(l4[off:], c)
}
