package tun

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/tetherlb/tether/dataplane/header"
	"github.com/tetherlb/tether/internal/pkttest"
	"github.com/tetherlb/tether/nic"
)

func TestVnetHdrRoundTrip(t *testing.T) {
	for _, o := range []nic.Offload{
		{},
		{Partial: true, CsumStart: 20, CsumOffset: 16},
		{Partial: true, CsumStart: 40, CsumOffset: 16, GSO: nic.GSOTCPv6, GSOSize: 1440},
		{Partial: true, CsumStart: 20, CsumOffset: 16, GSO: nic.GSOTCPv4 | nic.GSOECN, GSOSize: 1448},
	} {
		b := make([]byte, vnetHdrLen)
		writeVnetHdr(b, &o)
		if got := readVnetHdr(b); got != o {
			t.Errorf("%+v came back as %+v", o, got)
		}
	}
}

// ipipSuper builds an IPv4-in-IPv4 TCP super-packet of n payload bytes
// with a partial checksum, as the pipeline leaves one for the port.
func ipipSuper(n int, flags int) ([]byte, nic.Offload) {
	payload := make([]byte, n)
	for i := range payload {
		payload[i] = byte(i * 7)
	}
	inner := pkttest.L3(pkttest.TCP(pkttest.EP("02:00:00:00:00:01", "203.0.113.7:40000"), pkttest.EP("02:00:00:00:00:02", "192.0.2.10:80"),
		flags, 1000, 2000, pkttest.Opts{Payload: payload}))
	outer := make([]byte, header.IPv4MinSize, header.IPv4MinSize+len(inner))
	header.EncodeIPv4(outer, &header.IPv4Fields{TotalLength: uint16(header.IPv4MinSize + len(inner)), ID: 77, TTL: 64,
		Protocol: header.IPProtoIPIP, Src: netip.MustParseAddr("10.0.0.1").As4(), Dst: netip.MustParseAddr("10.0.0.11").As4()})
	b := append(outer, inner...)
	ts := 2 * header.IPv4MinSize
	binary.BigEndian.PutUint16(b[ts+16:], header.Fold(header.PseudoHeaderSum(header.IPProtoTCP, b[32:36], b[36:40], uint32(len(b)-ts))))
	return b, nic.Offload{Partial: true, CsumStart: uint16(ts), CsumOffset: 16, GSO: nic.GSOTCPv4, GSOSize: 1400}
}

// TestCutIPIPSuperPacket: an IP-in-IP super-packet is cut into the
// segments the kernel would have made: every header's length and
// checksum right for its segment, sequence numbers following on, FIN and
// PSH on the last only, and each TCP checksum right once finished.
func TestCutIPIPSuperPacket(t *testing.T) {
	b, o := ipipSuper(5000, pkttest.ACK|pkttest.PSH|pkttest.FIN)
	buf := make([]byte, vnetHdrLen+segMax)
	var sizes []int
	var seqs []uint32
	err := cut(b, &o, buf, func(seg []byte) error {
		vo := readVnetHdr(seg[:vnetHdrLen])
		p := append([]byte(nil), seg[vnetHdrLen:]...)
		if !vo.Partial || vo.CsumStart != 40 || vo.CsumOffset != 16 || vo.GSOSize != 0 {
			t.Fatalf("segment header %+v", vo)
		}
		if header.Checksum(p[:20], 0) != 0 || header.Checksum(p[20:40], 0) != 0 {
			t.Fatal("an IP header checksum is wrong")
		}
		if int(binary.BigEndian.Uint16(p[2:])) != len(p) || int(binary.BigEndian.Uint16(p[22:])) != len(p)-20 {
			t.Fatalf("IP lengths %d, %d for a segment of %d", binary.BigEndian.Uint16(p[2:]), binary.BigEndian.Uint16(p[22:]), len(p))
		}
		binary.BigEndian.PutUint16(p[56:], header.Checksum(p[40:], 0)) // the device finishes it
		if header.Checksum(p[40:], header.PseudoHeaderSum(header.IPProtoTCP, p[32:36], p[36:40], uint32(len(p)-40))) != 0 {
			t.Fatal("the finished TCP checksum is wrong")
		}
		sizes = append(sizes, len(p)-60)
		seqs = append(seqs, binary.BigEndian.Uint32(p[44:]))
		last := len(sizes) == 4
		if fin := p[53]&0x09 != 0; fin != last {
			t.Fatalf("segment %d: flags %#x", len(sizes), p[53])
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(sizes) != 4 || sizes[0] != 1400 || sizes[3] != 800 || seqs[1] != 2400 || seqs[3] != 5200 {
		t.Fatalf("segments of %v payload bytes at %v", sizes, seqs)
	}
	o.CsumStart = 10
	if cut(b, &o, buf, func([]byte) error { t.Fatal("emitted"); return nil }) == nil {
		t.Fatal("a checksum place inside the IP headers was accepted")
	}
}

// FuzzCut: whatever the bytes and the offload say, cut emits nothing
// longer than its buffer and nothing without a whole header chain.
func FuzzCut(f *testing.F) {
	b, o := ipipSuper(3000, pkttest.ACK)
	f.Add(b, o.CsumStart, o.GSOSize)
	buf := make([]byte, vnetHdrLen+segMax)
	f.Fuzz(func(t *testing.T, b []byte, start, size uint16) {
		o := nic.Offload{Partial: true, CsumStart: start, CsumOffset: 16, GSO: nic.GSOTCPv4, GSOSize: size}
		_ = cut(b, &o, buf, func(seg []byte) error {
			if len(seg) > len(buf) || len(seg) < vnetHdrLen+int(start)+header.TCPMinSize {
				t.Fatalf("segment of %d bytes", len(seg))
			}
			return nil
		})
	})
}
