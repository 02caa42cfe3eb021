package header

import (
	"bytes"
	"encoding/binary"
	"net"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

func buildTCP4(t *testing.T, opts []layers.TCPOption) []byte {
	t.Helper()
	ip := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: layers.IPProtocolTCP, Id: 77,
		SrcIP: net.IP{10, 0, 0, 1}, DstIP: net.IP{10, 0, 0, 2}, Flags: layers.IPv4DontFragment}
	tcp := &layers.TCP{SrcPort: 1000, DstPort: 80, SYN: true, Window: 1000, Options: opts}
	if err := tcp.SetNetworkLayerForChecksum(ip); err != nil {
		t.Fatal(err)
	}
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ip, tcp); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func tcpValid(p []byte) bool {
	ip := IPv4(p)
	seg := p[ip.HeaderLength():ip.TotalLength()]
	return Checksum(seg, PseudoHeaderSum(IPProtoTCP, ip.Src(), ip.Dst(), uint32(len(seg)))) == 0
}

func TestIPv4Accessors(t *testing.T) {
	p := buildTCP4(t, nil)
	ip := IPv4(p)
	if ip.Version() != 4 || ip.HeaderLength() != 20 || ip.TotalLength() != 40 || ip.ID() != 77 ||
		!ip.DontFragment() || ip.MoreFragments() || ip.IsFragment() || ip.TTL() != 64 || ip.Protocol() != 6 {
		t.Fatalf("accessors disagree with the packet: % x", p[:20])
	}
	if len(ip.Payload()) != 20 {
		t.Fatalf("payload %d bytes, want 20", len(ip.Payload()))
	}
	ip.SetSrc([]byte{192, 168, 0, 1})
	ip.SetDst([]byte{192, 168, 0, 2})
	ip.SetID(0xbeef)
	ip.SetTotalLength(40)
	if got, want := ip.Checksum(), ip.CalculateChecksum(); got != want {
		t.Fatalf("after setters checksum = %#04x, full recompute %#04x", got, want)
	}
}

func TestEncodeRoundTrip(t *testing.T) {
	b := make([]byte, IPv4MinSize)
	EncodeIPv4(b, &IPv4Fields{TOS: 0x10, TotalLength: 20, ID: 5, FlagsOffset: IPv4FlagDF, TTL: 9, Protocol: 4, Src: [4]byte{1, 2, 3, 4}, Dst: [4]byte{5, 6, 7, 8}})
	pkt := gopacket.NewPacket(b, layers.LayerTypeIPv4, gopacket.Default)
	ip, ok := pkt.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	if !ok || ip.TTL != 9 || ip.Id != 5 || !ip.SrcIP.Equal(net.IP{1, 2, 3, 4}) || ip.Flags != layers.IPv4DontFragment || ip.TOS != 0x10 {
		t.Fatalf("gopacket reads %+v", ip)
	}
	if Checksum(b, 0) != 0 {
		t.Fatal("encoded IPv4 header checksum is wrong")
	}
	b6 := make([]byte, IPv6Size)
	EncodeIPv6(b6, &IPv6Fields{TrafficClass: 0xb8, FlowLabel: 0x12345, PayloadLength: 0, NextHeader: 41, HopLimit: 3, Src: [16]byte{0x20, 0x01}, Dst: [16]byte{15: 1}})
	h := IPv6(b6)
	if h.Version() != 6 || h.TrafficClass() != 0xb8 || h.FlowLabel() != 0x12345 || h.NextHeader() != 41 || h.HopLimit() != 3 || h.Dst()[15] != 1 {
		t.Fatalf("encoded IPv6 header reads back wrong: % x", b6)
	}
	// A fragment header, as gopacket reads it.
	h.SetNextHeader(IPProtoFragment)
	h.SetPayloadLength(IPv6FragmentSize)
	b6 = append(b6, make([]byte, IPv6FragmentSize)...)
	EncodeIPv6Fragment(b6[IPv6Size:], 41, 1232, true, 0xdeadbeef)
	pkt = gopacket.NewPacket(b6, layers.LayerTypeIPv6, gopacket.Default)
	fr, ok := pkt.Layer(layers.LayerTypeIPv6Fragment).(*layers.IPv6Fragment)
	if !ok || fr.NextHeader != 41 || fr.FragmentOffset != 1232/8 || !fr.MoreFragments || fr.Identification != 0xdeadbeef {
		t.Fatalf("gopacket reads the fragment header as %+v", fr)
	}
	if f := IPv6Fragment(b6[IPv6Size:]); f.Offset() != 1232 || !f.More() || f.ID() != 0xdeadbeef || f.NextHeader() != 41 {
		t.Fatalf("the fragment header reads back wrong: % x", b6[IPv6Size:])
	}
}

func TestWalkEthernet(t *testing.T) {
	eth := func(types ...uint16) []byte {
		b := make([]byte, 12)
		for i, ty := range types {
			b = binary.BigEndian.AppendUint16(b, ty)
			if i < len(types)-1 {
				b = append(b, 0, 10) // TCI
			}
		}
		return append(b, 0x45)
	}
	cases := []struct {
		name  string
		frame []byte
		l3    int
		tags  int
		ok    bool
	}{
		{"untagged", eth(EtherTypeIPv4), 14, 0, true},
		{"802.1Q", eth(EtherTypeVLAN, EtherTypeIPv4), 18, 1, true},
		{"QinQ", eth(EtherTypeQinQ, EtherTypeVLAN, EtherTypeIPv6), 22, 2, true},
		{"three tags", eth(EtherTypeQinQ, EtherTypeVLAN, EtherTypeVLAN, EtherTypeIPv4), 0, MaxVLANTags + 1, false},
		{"short", make([]byte, 13), 0, 0, false},
		{"tag cut short", eth(EtherTypeVLAN, EtherTypeIPv4)[:15], 0, 1, false},
	}
	for _, c := range cases {
		l3, _, tags, ok := WalkEthernet(c.frame)
		if ok != c.ok || (ok && l3 != c.l3) || tags != c.tags {
			t.Errorf("%s: WalkEthernet = l3 %d tags %d ok %v, want %d %d %v", c.name, l3, tags, ok, c.l3, c.tags, c.ok)
		}
	}
}

// ipv6With builds an IPv6 header followed by extension headers given as
// (type, length-in-bytes) and then 8 bytes of UDP.
func ipv6With(exts ...[2]int) []byte {
	b := make([]byte, IPv6Size)
	b[0] = 0x60
	next := &b[6]
	for _, e := range exts {
		*next = byte(e[0])
		h := make([]byte, e[1])
		switch e[0] {
		case IPProtoAH:
			h[1] = byte(e[1]/4 - 2)
		case IPProtoFragment:
		default:
			h[1] = byte(e[1]/8 - 1)
		}
		off := len(b)
		b = append(b, h...)
		next = &b[off]
	}
	*next = IPProtoUDP
	return append(b, make([]byte, 8)...)
}

func TestWalkIPv6(t *testing.T) {
	w, ok := WalkIPv6(ipv6With([2]int{IPProtoHopOpts, 8}, [2]int{IPProtoRouting, 24}, [2]int{IPProtoDstOpts, 16}, [2]int{IPProtoAH, 16}, [2]int{IPProtoFragment, 8}))
	if !ok || w.Proto != IPProtoUDP || w.L4Off != 40+8+24+16+16+8 || w.FragOff != 40+8+24+16+16 {
		t.Fatalf("walk = %+v, %v", w, ok)
	}
	var long [][2]int
	for range MaxIPv6ExtHeaders + 1 {
		long = append(long, [2]int{IPProtoDstOpts, 8})
	}
	if _, ok := WalkIPv6(ipv6With(long...)); ok {
		t.Fatal("a chain longer than the bound was accepted")
	}
	if _, ok := WalkIPv6(ipv6With([2]int{IPProtoFragment, 8}, [2]int{IPProtoFragment, 8})); ok {
		t.Fatal("two fragment headers were accepted")
	}
	cut := ipv6With([2]int{IPProtoRouting, 24})
	if _, ok := WalkIPv6(cut[:IPv6Size+16]); ok {
		t.Fatal("a truncated extension header was accepted")
	}
	f := IPv6Fragment([]byte{17, 0, 0x05, 0x39, 0xde, 0xad, 0xbe, 0xef})
	if f.NextHeader() != 17 || f.Offset() != 0x538 || !f.More() || f.ID() != 0xdeadbeef {
		t.Fatalf("fragment header reads next %d offset %#x more %v id %#x", f.NextHeader(), f.Offset(), f.More(), f.ID())
	}
}

func TestTCPOptions(t *testing.T) {
	p := buildTCP4(t, []layers.TCPOption{
		{OptionType: layers.TCPOptionKindMSS, OptionLength: 4, OptionData: []byte{0x05, 0xb4}},
		{OptionType: layers.TCPOptionKindSACKPermitted, OptionLength: 2},
		{OptionType: layers.TCPOptionKindTimestamps, OptionLength: 10, OptionData: []byte{0, 0, 0, 1, 0, 0, 0, 2}},
		{OptionType: layers.TCPOptionKindNop},
		{OptionType: layers.TCPOptionKindWindowScale, OptionLength: 3, OptionData: []byte{7}},
	})
	tcp := TCP(p[20:])
	o, ok := ParseTCPOptions(tcp)
	if !ok || o.MSS != 1460 || !o.SACKPermitted || !o.HasTimestamps || o.TSVal != 1 || o.TSEcr != 2 || !o.HasWS || o.WindowScale != 7 {
		t.Fatalf("options = %+v, %v", o, ok)
	}
	tcp.SetMSS(o.MSSOff, 1400)
	if o2, _ := ParseTCPOptions(tcp); o2.MSS != 1400 {
		t.Fatalf("MSS after SetMSS = %d", o2.MSS)
	}
	if !tcpValid(p) {
		t.Fatal("SetMSS broke the TCP checksum")
	}
	bad := [][]byte{
		{TCPOptMSS},                  // length missing
		{TCPOptMSS, 1, 0, 0},         // length below 2
		{TCPOptMSS, 3, 0, 0},         // MSS must be 4 long
		{TCPOptWindowScale, 2, 0, 0}, // WS must be 3 long
		{TCPOptTimestamps, 10, 0, 0}, // runs past the header
		{TCPOptSACKPermitted, 3, 0, 0},
	}
	for _, opts := range bad {
		h := make([]byte, TCPMinSize+4)
		h[12] = 6 << 4
		copy(h[TCPMinSize:], opts)
		if _, ok := ParseTCPOptions(TCP(h)); ok {
			t.Errorf("options % x were accepted", opts)
		}
	}
	h := make([]byte, TCPMinSize+4)
	h[12] = 6 << 4
	copy(h[TCPMinSize:], []byte{TCPOptNOP, TCPOptEnd, 0xff, 0xff})
	if _, ok := ParseTCPOptions(TCP(h)); !ok {
		t.Error("end-of-options followed by padding was refused")
	}
}

func TestMACString(t *testing.T) {
	if s := (MAC{0x02, 0, 0x5e, 0x10, 0, 0x0a}).String(); s != "02:00:5e:10:00:0a" {
		t.Fatalf("MAC.String = %q", s)
	}
}

// FuzzTCPOptions: no options area makes the parser panic, and an MSS it
// reports lies inside the header.
func FuzzTCPOptions(f *testing.F) {
	f.Add([]byte{2, 4, 5, 0xb4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7})
	f.Add([]byte{})
	f.Add([]byte{2, 0, 1})
	f.Fuzz(func(t *testing.T, opts []byte) {
		opts = opts[:min(len(opts), 40)]
		words := (len(opts) + 3) / 4
		h := make([]byte, TCPMinSize+words*4)
		h[12] = byte(5+words) << 4
		copy(h[TCPMinSize:], opts)
		o, ok := ParseTCPOptions(TCP(h))
		if ok && o.MSSOff != 0 && o.MSSOff+2 > TCP(h).DataOffset() {
			t.Fatalf("MSS at %d outside a %d-byte header", o.MSSOff, TCP(h).DataOffset())
		}
		// Clamping leaves no MSS above the bound when it says the area
		// was readable, and touches nothing when it says it was not.
		before := append([]byte(nil), h...)
		if !ClampMSS(TCP(h), 536) {
			if !bytes.Equal(before, h) {
				t.Fatal("ClampMSS refused the options yet changed them")
			}
			return
		}
		if o, ok := ParseTCPOptions(TCP(h)); ok && o.MSSOff != 0 && o.MSS > 536 {
			t.Fatalf("MSS %d left above 536", o.MSS)
		}
	})
}

func TestClampMSS(t *testing.T) {
	h := make([]byte, TCPMinSize+12)
	h[12] = 8 << 4
	copy(h[TCPMinSize:], []byte{2, 4, 0x05, 0xb4, 1, 1, 2, 4, 0x23, 0x28, 0, 0})
	if !ClampMSS(TCP(h), 1340) || h[22] != 0x05 || h[23] != 0x3c || h[28] != 0x05 || h[29] != 0x3c {
		t.Fatalf("two MSS options after clamping to 1340: % x", h[20:])
	}
	h[25] = 1 // a NOP's neighbour becomes an option of length 1
	copy(h[TCPMinSize+4:], []byte{8, 1})
	if ClampMSS(TCP(h), 536) {
		t.Fatal("a malformed options area was clamped")
	}
}
