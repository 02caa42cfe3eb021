package pkttest

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"sort"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// Endpoint is one side of a flow.
type Endpoint struct {
	MAC  net.HardwareAddr
	Addr netip.Addr
	Port uint16
}

// EP builds an Endpoint from "addr:port" (or "[v6]:port") and a MAC.
func EP(mac, addrPort string) Endpoint {
	ap := netip.MustParseAddrPort(addrPort)
	m, err := net.ParseMAC(mac)
	if err != nil {
		panic(err)
	}
	return Endpoint{MAC: m, Addr: ap.Addr(), Port: ap.Port()}
}

// Opts tune a built packet.
type Opts struct {
	VLANs []uint16 // 802.1Q tags, outermost first
	TTL   uint8    // default 64
	ID    uint16   // IPv4 identification
	NoEth bool     // raw IP, no Ethernet header
	DF    bool
	TOS   uint8
	MSS   uint16 // TCP MSS option when non-zero
	// Timestamps adds a TCP timestamps option alone (no MSS) with
	// TSVal and TSEcr, as a segment after the handshake carries it.
	Timestamps   bool
	TSVal, TSEcr uint32
	Payload      []byte
	// IPOptions are IPv4 options, as their bytes (padded to a multiple
	// of four).
	IPOptions []byte
}

func ipLayers(src, dst Endpoint, proto layers.IPProtocol, o *Opts) []gopacket.SerializableLayer {
	var ls []gopacket.SerializableLayer
	ttl := o.TTL
	if ttl == 0 {
		ttl = 64
	}
	v6 := src.Addr.Is6()
	et := layers.EthernetTypeIPv4
	if v6 {
		et = layers.EthernetTypeIPv6
	}
	if !o.NoEth {
		eth := &layers.Ethernet{SrcMAC: src.MAC, DstMAC: dst.MAC, EthernetType: et}
		if len(o.VLANs) > 0 {
			eth.EthernetType = layers.EthernetTypeDot1Q
		}
		ls = append(ls, eth)
		for i, v := range o.VLANs {
			next := et
			if i+1 < len(o.VLANs) {
				next = layers.EthernetTypeDot1Q
			}
			ls = append(ls, &layers.Dot1Q{VLANIdentifier: v, Type: next})
		}
	}
	if v6 {
		ls = append(ls, &layers.IPv6{Version: 6, TrafficClass: o.TOS, HopLimit: ttl, NextHeader: proto,
			SrcIP: src.Addr.AsSlice(), DstIP: dst.Addr.AsSlice()})
	} else {
		ip := &layers.IPv4{Version: 4, IHL: 5, TOS: o.TOS, TTL: ttl, Protocol: proto, Id: o.ID,
			SrcIP: src.Addr.AsSlice(), DstIP: dst.Addr.AsSlice()}
		if o.DF {
			ip.Flags = layers.IPv4DontFragment
		}
		// gopacket writes the bytes behind the options' end as they
		// are, counted in the header length.
		ip.Padding = o.IPOptions
		ls = append(ls, ip)
	}
	return ls
}

func serialize(ls []gopacket.SerializableLayer) []byte {
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...); err != nil {
		panic(err)
	}
	return append([]byte(nil), buf.Bytes()...)
}

func netLayer(ls []gopacket.SerializableLayer) gopacket.NetworkLayer {
	return ls[len(ls)-1].(gopacket.NetworkLayer)
}

// TCP flag sets.
const (
	SYN = 1 << iota
	ACK
	FIN
	RST
	PSH
)

// TCP builds a TCP segment from src to dst.
func TCP(src, dst Endpoint, flags int, seq, ack uint32, o Opts) []byte {
	ls := ipLayers(src, dst, layers.IPProtocolTCP, &o)
	t := &layers.TCP{SrcPort: layers.TCPPort(src.Port), DstPort: layers.TCPPort(dst.Port), Seq: seq, Ack: ack,
		Window: 64240, SYN: flags&SYN != 0, ACK: flags&ACK != 0, FIN: flags&FIN != 0, RST: flags&RST != 0, PSH: flags&PSH != 0}
	if o.MSS != 0 {
		t.Options = append(t.Options,
			layers.TCPOption{OptionType: layers.TCPOptionKindMSS, OptionLength: 4, OptionData: binary.BigEndian.AppendUint16(nil, o.MSS)},
			layers.TCPOption{OptionType: layers.TCPOptionKindSACKPermitted, OptionLength: 2},
			layers.TCPOption{OptionType: layers.TCPOptionKindTimestamps, OptionLength: 10, OptionData: make([]byte, 8)},
			layers.TCPOption{OptionType: layers.TCPOptionKindNop},
			layers.TCPOption{OptionType: layers.TCPOptionKindWindowScale, OptionLength: 3, OptionData: []byte{7}},
		)
	}
	if o.Timestamps {
		ts := binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, o.TSVal), o.TSEcr)
		t.Options = append(t.Options, layers.TCPOption{OptionType: layers.TCPOptionKindNop}, layers.TCPOption{OptionType: layers.TCPOptionKindNop},
			layers.TCPOption{OptionType: layers.TCPOptionKindTimestamps, OptionLength: 10, OptionData: ts})
	}
	if err := t.SetNetworkLayerForChecksum(netLayer(ls)); err != nil {
		panic(err)
	}
	ls = append(ls, t)
	if o.Payload != nil {
		ls = append(ls, gopacket.Payload(o.Payload))
	}
	return serialize(ls)
}

// UDP builds a UDP datagram from src to dst.
func UDP(src, dst Endpoint, o Opts) []byte {
	ls := ipLayers(src, dst, layers.IPProtocolUDP, &o)
	u := &layers.UDP{SrcPort: layers.UDPPort(src.Port), DstPort: layers.UDPPort(dst.Port)}
	if err := u.SetNetworkLayerForChecksum(netLayer(ls)); err != nil {
		panic(err)
	}
	ls = append(ls, u, gopacket.Payload(o.Payload))
	return serialize(ls)
}

// EchoRequest builds an ICMP or ICMPv6 echo request.
func EchoRequest(src, dst Endpoint, id, seq uint16, o Opts) []byte {
	if src.Addr.Is6() {
		ls := ipLayers(src, dst, layers.IPProtocolICMPv6, &o)
		ic := &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(layers.ICMPv6TypeEchoRequest, 0)}
		if err := ic.SetNetworkLayerForChecksum(netLayer(ls)); err != nil {
			panic(err)
		}
		ls = append(ls, ic, &layers.ICMPv6Echo{Identifier: id, SeqNumber: seq}, gopacket.Payload(o.Payload))
		return serialize(ls)
	}
	ls := ipLayers(src, dst, layers.IPProtocolICMPv4, &o)
	ls = append(ls, &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(layers.ICMPv4TypeEchoRequest, 0), Id: id, Seq: seq},
		gopacket.Payload(o.Payload))
	return serialize(ls)
}

// ICMPError builds an ICMP error from `from` to `to` quoting the IP
// packet quoted (an IP packet without link header), cut to quoteLen bytes
// when quoteLen > 0. typ and code are ICMPv4 or ICMPv6 values by family.
func ICMPError(from, to Endpoint, typ, code uint8, rest uint32, quoted []byte, quoteLen int, o Opts) []byte {
	if quoteLen > 0 && quoteLen < len(quoted) {
		quoted = quoted[:quoteLen]
	}
	body := binary.BigEndian.AppendUint32(nil, rest)
	body = append(body, quoted...)
	if from.Addr.Is6() {
		ls := ipLayers(from, to, layers.IPProtocolICMPv6, &o)
		ic := &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(typ, code)}
		if err := ic.SetNetworkLayerForChecksum(netLayer(ls)); err != nil {
			panic(err)
		}
		ls = append(ls, ic, gopacket.Payload(body))
		return serialize(ls)
	}
	ls := ipLayers(from, to, layers.IPProtocolICMPv4, &o)
	// gopacket's ICMPv4 layer writes id/seq as the rest-of-header word.
	ls = append(ls, &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(typ, code),
		Id: uint16(rest >> 16), Seq: uint16(rest)}, gopacket.Payload(quoted))
	return serialize(ls)
}

// IPIP wraps the IP packet inner (no link header) in an outer IPv4
// header from src to dst (RFC 2003), in an Ethernet frame.
func IPIP(src, dst Endpoint, inner []byte, o Opts) []byte {
	proto := layers.IPProtocolIPv4
	if len(inner) > 0 && inner[0]>>4 == 6 {
		proto = layers.IPProtocolIPv6
	}
	ls := ipLayers(src, dst, proto, &o)
	return serialize(append(ls, gopacket.Payload(inner)))
}

// L3 strips the Ethernet header (and tags) from a frame.
func L3(frame []byte) []byte {
	off := 12
	for {
		t := binary.BigEndian.Uint16(frame[off:])
		if t != 0x8100 && t != 0x88a8 {
			return frame[off+2:]
		}
		off += 4
	}
}

// FragmentIPv4 splits the IPv4 packet inside an Ethernet frame (or a raw
// IP packet when raw) into fragments whose payloads hold at most size
// bytes (rounded down to a multiple of 8).
func FragmentIPv4(frame []byte, size int, raw bool) [][]byte {
	l2 := 0
	if !raw {
		l2 = len(frame) - len(L3(frame))
	}
	ip := frame[l2:]
	hl := int(ip[0]&0x0f) * 4
	payload := ip[hl:binary.BigEndian.Uint16(ip[2:])]
	size &^= 7
	var out [][]byte
	for off := 0; off < len(payload); off += size {
		end := min(off+size, len(payload))
		f := append([]byte(nil), frame[:l2+hl]...)
		f = append(f, payload[off:end]...)
		h := f[l2:]
		binary.BigEndian.PutUint16(h[2:], uint16(hl+end-off))
		fo := binary.BigEndian.Uint16(h[6:])&0x4000 | uint16(off/8)
		if end < len(payload) {
			fo |= 0x2000
		}
		binary.BigEndian.PutUint16(h[6:], fo)
		h[10], h[11] = 0, 0
		binary.BigEndian.PutUint16(h[10:], ^fold(sum16(h[:hl])))
		out = append(out, f)
	}
	return out
}

// FragmentIPv6 splits the IPv6 packet of an Ethernet frame (no extension
// headers) into fragments with a fragment header carrying id.
func FragmentIPv6(frame []byte, size int, id uint32) [][]byte {
	l2 := len(frame) - len(L3(frame))
	ip := frame[l2:]
	next := ip[6]
	payload := ip[40 : 40+int(binary.BigEndian.Uint16(ip[4:]))]
	size &^= 7
	var out [][]byte
	for off := 0; off < len(payload); off += size {
		end := min(off+size, len(payload))
		f := append([]byte(nil), frame[:l2+40]...)
		fh := make([]byte, 8)
		fh[0] = next
		m := uint16(0)
		if end < len(payload) {
			m = 1
		}
		binary.BigEndian.PutUint16(fh[2:], uint16(off)|m)
		binary.BigEndian.PutUint32(fh[4:], id)
		f = append(f, fh...)
		f = append(f, payload[off:end]...)
		h := f[l2:]
		h[6] = 44
		binary.BigEndian.PutUint16(h[4:], uint16(8+end-off))
		out = append(out, f)
	}
	return out
}

// MustMAC parses a MAC address.
func MustMAC(s string) net.HardwareAddr {
	m, err := net.ParseMAC(s)
	if err != nil {
		panic(fmt.Sprintf("pkttest: %v", err))
	}
	return m
}

// FixIPv4Checksum recomputes the header checksum of the IPv4 header ip.
func FixIPv4Checksum(ip []byte) {
	hl := int(ip[0]&0x0f) * 4
	if hl < 20 || hl > len(ip) {
		hl = 20
	}
	ip[10], ip[11] = 0, 0
	binary.BigEndian.PutUint16(ip[10:], ^fold(sum16(ip[:hl])))
}

// ARP builds an ARP request from mac/ip for target.
func ARP(mac string, ip, target netip.Addr) []byte {
	m := MustMAC(mac)
	eth := &layers.Ethernet{SrcMAC: m, DstMAC: net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, EthernetType: layers.EthernetTypeARP}
	arp := &layers.ARP{AddrType: layers.LinkTypeEthernet, Protocol: layers.EthernetTypeIPv4, HwAddressSize: 6, ProtAddressSize: 4,
		Operation: layers.ARPRequest, SourceHwAddress: m, SourceProtAddress: ip.AsSlice(),
		DstHwAddress: make([]byte, 6), DstProtAddress: target.AsSlice()}
	return serialize([]gopacket.SerializableLayer{eth, arp})
}

// Raw builds an IP packet of any protocol with the given payload.
func Raw(src, dst Endpoint, proto uint8, o Opts) []byte {
	ls := ipLayers(src, dst, layers.IPProtocol(proto), &o)
	ls = append(ls, gopacket.Payload(o.Payload))
	return serialize(ls)
}

// IP returns the IP packet of a frame, without link header and without
// the padding short Ethernet frames carry after it.
func IP(frame []byte, raw bool) []byte {
	ip := frame
	if !raw {
		ip = L3(frame)
	}
	if len(ip) >= 20 && ip[0]>>4 == 4 {
		if n := int(binary.BigEndian.Uint16(ip[2:])); n <= len(ip) {
			return ip[:n]
		}
	}
	if len(ip) >= 40 && ip[0]>>4 == 6 {
		if n := 40 + int(binary.BigEndian.Uint16(ip[4:])); n <= len(ip) {
			return ip[:n]
		}
	}
	return ip
}

// Reassemble joins the fragments of one IPv4 or IPv6 datagram (IP
// packets, any order; IPv6 with the fragment header right after the
// fixed one) into the packet they were cut from, as a receiver's
// reassembly makes it. It fails when they are not all of one datagram,
// leave a hole or overlap.
func Reassemble(frags [][]byte) ([]byte, error) {
	if len(frags) == 0 {
		return nil, fmt.Errorf("no fragments")
	}
	type piece struct {
		off  int
		more bool
		data []byte
	}
	var first []byte
	var hdr int
	var id uint64
	pieces := make([]piece, 0, len(frags))
	for i, ip := range frags {
		var pc piece
		var key uint64
		switch {
		case len(ip) >= 20 && ip[0]>>4 == 4:
			hl := int(ip[0]&0x0f) * 4
			fo := binary.BigEndian.Uint16(ip[6:])
			pc = piece{off: int(fo&0x1fff) * 8, more: fo&0x2000 != 0, data: ip[hl:binary.BigEndian.Uint16(ip[2:])]}
			key = uint64(binary.BigEndian.Uint16(ip[4:])) | uint64(ip[9])<<16
			if pc.off == 0 {
				first, hdr = ip, hl
			}
		case len(ip) >= 48 && ip[0]>>4 == 6 && ip[6] == 44:
			fh := ip[40:48]
			w := binary.BigEndian.Uint16(fh[2:])
			pc = piece{off: int(w &^ 7), more: w&1 != 0, data: ip[48 : 40+int(binary.BigEndian.Uint16(ip[4:]))]}
			key = uint64(binary.BigEndian.Uint32(fh[4:])) | uint64(fh[0])<<32 | 1<<40
			if pc.off == 0 {
				first, hdr = ip, 40
			}
		default:
			return nil, fmt.Errorf("packet %d is not an IPv4 packet or an IPv6 fragment", i)
		}
		if i == 0 {
			id = key
		} else if key != id {
			return nil, fmt.Errorf("packet %d is of another datagram", i)
		}
		pieces = append(pieces, pc)
	}
	if first == nil {
		return nil, fmt.Errorf("no first fragment")
	}
	sort.Slice(pieces, func(a, b int) bool { return pieces[a].off < pieces[b].off })
	whole := append([]byte(nil), first[:hdr]...)
	for i, pc := range pieces {
		if pc.off != len(whole)-hdr {
			return nil, fmt.Errorf("fragment at %d: the datagram so far ends at %d", pc.off, len(whole)-hdr)
		}
		if pc.more != (i < len(pieces)-1) {
			return nil, fmt.Errorf("fragment at %d: more-fragments flag %v", pc.off, pc.more)
		}
		whole = append(whole, pc.data...)
	}
	if whole[0]>>4 == 4 {
		binary.BigEndian.PutUint16(whole[2:], uint16(len(whole)))
		binary.BigEndian.PutUint16(whole[6:], binary.BigEndian.Uint16(whole[6:])&0x4000)
		FixIPv4Checksum(whole)
		return whole, nil
	}
	whole[6] = first[40] // the fragment header's next header
	binary.BigEndian.PutUint16(whole[4:], uint16(len(whole)-40))
	return whole, nil
}
