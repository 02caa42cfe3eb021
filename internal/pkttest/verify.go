package pkttest

import (
	"encoding/binary"
	"fmt"
	"sort"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// sum16 is the RFC 1071 sum written the plainest way.
func sum16(b []byte) uint32 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	return s
}

func fold(s uint32) uint16 {
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return uint16(s)
}

func pseudo(src, dst []byte, proto uint8, n int) uint32 {
	s := sum16(src) + sum16(dst) + uint32(proto) + uint32(n)
	return s
}

// l4OK reports whether a transport segment's checksum is right.
func l4OK(src, dst []byte, proto uint8, seg []byte) bool {
	if proto == 17 && len(src) == 4 && binary.BigEndian.Uint16(seg[6:]) == 0 {
		return true // IPv4 UDP without a checksum
	}
	return fold(pseudo(src, dst, proto, len(seg))+sum16(seg)) == 0xffff
}

// Checker verifies every checksum of a stream of frames, reassembling
// fragmented datagrams to check their transport checksum.
type Checker struct {
	Raw   bool // frames are raw IP, no Ethernet
	frags map[string]*datagram
}

type datagram struct {
	src, dst []byte
	proto    uint8
	pieces   map[int][]byte
	total    int // -1 until the last fragment is seen
}

// Check verifies one frame. Problems name the layer and the values.
func (c *Checker) Check(frame []byte) error {
	first := layers.LayerTypeEthernet
	if c.Raw {
		first = layers.LayerTypeIPv4
		if len(frame) > 0 && frame[0]>>4 == 6 {
			first = layers.LayerTypeIPv6
		}
	}
	pkt := gopacket.NewPacket(frame, first, gopacket.Default)
	if pkt.NetworkLayer() == nil {
		if el := pkt.ErrorLayer(); el != nil {
			return fmt.Errorf("gopacket cannot decode the frame: %v", el.Error())
		}
		return fmt.Errorf("no IP packet in the frame")
	}
	// Failures to decode application payloads (DNS on port 53, say) do
	// not matter here: the checks below stop at the transport layer.
	return c.checkLayers(pkt.Layers())
}

func (c *Checker) checkLayers(ls []gopacket.Layer) error {
	for i, l := range ls {
		switch ip := l.(type) {
		case *layers.IPv4:
			h := ip.Contents
			if fold(sum16(h)) != 0xffff {
				return fmt.Errorf("ipv4 %v > %v: header checksum %#04x is wrong", ip.SrcIP, ip.DstIP, ip.Checksum)
			}
			if ip.Flags&layers.IPv4MoreFragments != 0 || ip.FragOffset != 0 {
				return c.fragment(fmt.Sprintf("4/%v/%v/%d/%d", ip.SrcIP, ip.DstIP, ip.Protocol, ip.Id),
					ip.SrcIP.To4(), ip.DstIP.To4(), uint8(ip.Protocol), int(ip.FragOffset)*8,
					ip.Flags&layers.IPv4MoreFragments != 0, ip.Payload)
			}
			if err := c.transport(ip.SrcIP.To4(), ip.DstIP.To4(), uint8(ip.Protocol), ip.Payload); err != nil {
				return err
			}
			if ip.Protocol == layers.IPProtocolIPv4 || ip.Protocol == layers.IPProtocolIPv6 {
				continue // the inner packet is checked as the next layer
			}
			return nil
		case *layers.IPv6:
			// This header's own fragment header, if any: one after an
			// inner IP header is the inner packet's.
		own:
			for _, next := range ls[i+1:] {
				switch next.(type) {
				case *layers.IPv4, *layers.IPv6:
					break own
				}
				if f, ok := next.(*layers.IPv6Fragment); ok {
					return c.fragment(fmt.Sprintf("6/%v/%v/%d", ip.SrcIP, ip.DstIP, f.Identification),
						ip.SrcIP.To16(), ip.DstIP.To16(), uint8(f.NextHeader), int(f.FragmentOffset)*8, f.MoreFragments, f.Payload)
				}
			}
			payload := ip.Payload
			proto := uint8(ip.NextHeader)
			if ip.NextHeader == layers.IPProtocolIPv6 || ip.NextHeader == layers.IPProtocolIPv4 {
				continue
			}
			if err := c.transport(ip.SrcIP.To16(), ip.DstIP.To16(), proto, payload); err != nil {
				return err
			}
			return nil
		}
	}
	return nil
}

func (c *Checker) transport(src, dst []byte, proto uint8, seg []byte) error {
	switch proto {
	case 6, 17:
		if len(seg) < 8 || !l4OK(src, dst, proto, seg) {
			return fmt.Errorf("%s checksum wrong in %v > %v", protoName(proto), src, dst)
		}
	case 1:
		if fold(sum16(seg)) != 0xffff {
			return fmt.Errorf("icmp checksum wrong in %v > %v", src, dst)
		}
		return quoteOK(seg)
	case 58:
		if fold(pseudo(src, dst, 58, len(seg))+sum16(seg)) != 0xffff {
			return fmt.Errorf("icmpv6 checksum wrong in %v > %v", src, dst)
		}
	}
	return nil
}

// quoteOK checks the IPv4 header an ICMPv4 error quotes, when complete.
func quoteOK(icmp []byte) error {
	if len(icmp) < 8 {
		return nil // no quote
	}
	switch icmp[0] {
	case 3, 4, 5, 11, 12:
	default:
		return nil
	}
	q := icmp[8:]
	if len(q) < 20 || q[0]>>4 != 4 {
		return nil
	}
	hl := int(q[0]&0x0f) * 4
	if len(q) >= hl && fold(sum16(q[:hl])) != 0xffff {
		return fmt.Errorf("quoted ipv4 header checksum wrong")
	}
	return nil
}

func (c *Checker) fragment(key string, src, dst []byte, proto uint8, off int, more bool, data []byte) error {
	if c.frags == nil {
		c.frags = map[string]*datagram{}
	}
	d := c.frags[key]
	if d == nil {
		d = &datagram{src: src, dst: dst, proto: proto, pieces: map[int][]byte{}, total: -1}
		c.frags[key] = d
	}
	d.pieces[off] = append([]byte(nil), data...)
	if !more {
		d.total = off + len(data)
	}
	if d.total < 0 {
		return nil
	}
	offs := make([]int, 0, len(d.pieces))
	for o := range d.pieces {
		offs = append(offs, o)
	}
	sort.Ints(offs)
	var whole []byte
	for _, o := range offs {
		if o != len(whole) {
			return nil // a hole: wait for more
		}
		whole = append(whole, d.pieces[o]...)
	}
	delete(c.frags, key)
	if (d.proto == 4 || d.proto == 41) && len(whole) > 0 {
		// A tunnel's outer packet: check the packet it carries.
		first := layers.LayerTypeIPv4
		if whole[0]>>4 == 6 {
			first = layers.LayerTypeIPv6
		}
		return c.checkLayers(gopacket.NewPacket(whole, first, gopacket.Default).Layers())
	}
	return c.transport(d.src, d.dst, d.proto, whole)
}

// Incomplete returns how many fragmented datagrams are missing pieces.
func (c *Checker) Incomplete() int { return len(c.frags) }

func protoName(p uint8) string {
	switch p {
	case 6:
		return "tcp"
	case 17:
		return "udp"
	}
	return fmt.Sprint(p)
}
