package pcapio

import (
	"encoding/binary"
	"fmt"

	"github.com/gopacket/gopacket/layers"

	"github.com/tetherlb/tether/dataplane/header"
	"github.com/tetherlb/tether/nic"
)

// Captures come in more link types than the pipeline reads (Ethernet,
// raw IP). Linux's cooked headers (SLL, SLL2: what `tcpdump -i any`
// writes) and BSD's loopback header (NULL, LOOP) carry no Ethernet
// addresses, so such captures are replayed as raw IP: the port removes
// the header and delivers the IP packet. A pcapng file may mix link types
// (one per interface): the first interface's decides the port's, and
// every frame is converted to it (a raw IP packet gets an Ethernet
// header without addresses). What cannot be converted (a frame that is
// not IP, in a capture replayed as raw IP: ARP in a cooked capture) is
// not delivered: it is counted as unreadable (RxDropped) and in NotIP.

// ethernetHeader is a made-up Ethernet header for an IP packet from a
// capture without one (a raw IP interface in a pcapng file whose first
// interface is Ethernet): no addresses, the EtherType of the packet.
const ethernetHeader = header.EthernetSize

// portLink is the link type the port delivers for a capture whose
// (first) link type is lt, or an error when the port cannot read lt.
func portLink(lt layers.LinkType) (nic.LinkType, error) {
	switch lt {
	case layers.LinkTypeEthernet:
		return nic.LinkEthernet, nil
	case layers.LinkTypeRaw, layers.LinkTypeIPv4, layers.LinkTypeIPv6,
		layers.LinkTypeLinuxSLL, layers.LinkTypeLinuxSLL2, layers.LinkTypeNull, layers.LinkTypeLoop:
		return nic.LinkIP, nil
	}
	return 0, fmt.Errorf("pcapio: link type %v (%d) not supported: use Ethernet (1), raw IP (101, 228, 229), Linux cooked (113, 276) or BSD loopback (0, 108) captures", lt, int(lt))
}

// outputLink is the link type of the output capture: the input's when
// the port delivers it unchanged, raw IP for the headers it removes.
func outputLink(lt layers.LinkType, link nic.LinkType) layers.LinkType {
	switch {
	case link == nic.LinkEthernet:
		return layers.LinkTypeEthernet
	case lt == layers.LinkTypeRaw || lt == layers.LinkTypeIPv4 || lt == layers.LinkTypeIPv6:
		return lt
	}
	return layers.LinkTypeRaw
}

// ipPacket returns where the IP packet in data, a frame of link type lt,
// starts, and false when the frame is not IP (or too short to say).
func ipPacket(data []byte, lt layers.LinkType) (int, bool) {
	switch lt {
	case layers.LinkTypeRaw, layers.LinkTypeIPv4, layers.LinkTypeIPv6:
		return 0, true
	case layers.LinkTypeEthernet:
		off, et, _, ok := header.WalkEthernet(data)
		return off, ok && isIP(et)
	case layers.LinkTypeLinuxSLL:
		// Packet type, ARPHRD type, address length, 8 address bytes,
		// protocol: 16 bytes.
		if len(data) < 16 {
			return 0, false
		}
		return afterTags(data, 14)
	case layers.LinkTypeLinuxSLL2:
		// Protocol first, then reserved, interface index, ARPHRD type,
		// packet type, address length, 8 address bytes: 20 bytes.
		if len(data) < 20 {
			return 0, false
		}
		if et := binary.BigEndian.Uint16(data); !header.IsVLANTag(et) {
			return 20, isIP(et)
		}
		// Tags follow the header, each with the next protocol last.
		off := 20
		for range header.MaxVLANTags {
			if len(data) < off+header.VLANTagSize {
				return 0, false
			}
			et := binary.BigEndian.Uint16(data[off+2:])
			off += header.VLANTagSize
			if !header.IsVLANTag(et) {
				return off, isIP(et)
			}
		}
		return 0, false
	case layers.LinkTypeNull, layers.LinkTypeLoop:
		// The socket address family, in the capturing host's byte order
		// (NULL) or in network order (LOOP): IPv4 is 2 everywhere, IPv6
		// 10 (Linux), 24 (NetBSD, OpenBSD), 28 (FreeBSD) or 30 (macOS).
		if len(data) < 4 {
			return 0, false
		}
		af := binary.BigEndian.Uint32(data)
		if lt == layers.LinkTypeNull && af > 0xffff {
			af = binary.LittleEndian.Uint32(data)
		}
		switch af {
		case 2, 10, 24, 28, 30:
			return 4, true
		}
		return 0, false
	}
	return 0, false
}

// afterTags finds the IP packet behind the protocol field at off (and
// the VLAN tags it may announce), as in an Ethernet header.
func afterTags(data []byte, off int) (int, bool) {
	// WalkEthernet reads the EtherType at its 12th byte.
	l3, et, _, ok := header.WalkEthernet(data[off-12:])
	return off - 12 + l3, ok && isIP(et)
}

func isIP(et uint16) bool { return et == header.EtherTypeIPv4 || et == header.EtherTypeIPv6 }

// convert writes the frame data (link type lt) into buf as a frame of
// the port's link type and returns its length. notIP says it is not IP
// where the port delivers raw IP; tooLong that it does not fit buf.
func convert(buf, data []byte, lt layers.LinkType, link nic.LinkType) (n int, notIP, tooLong bool) {
	if link == nic.LinkEthernet && lt == layers.LinkTypeEthernet {
		return copyFits(buf, data)
	}
	off, ok := ipPacket(data, lt)
	if !ok {
		return 0, true, false
	}
	ip := data[off:]
	if link != nic.LinkEthernet {
		return copyFits(buf, ip)
	}
	if ethernetHeader+len(ip) > len(buf) {
		return 0, false, true
	}
	clear(buf[:12])
	et := uint16(header.EtherTypeIPv4)
	if len(ip) > 0 && ip[0]>>4 == 6 {
		et = header.EtherTypeIPv6
	}
	binary.BigEndian.PutUint16(buf[12:], et)
	return ethernetHeader + copy(buf[ethernetHeader:], ip), false, false
}

func copyFits(buf, data []byte) (n int, notIP, tooLong bool) {
	if len(data) > len(buf) {
		return 0, false, true
	}
	return copy(buf, data), false, false
}
