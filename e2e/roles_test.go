package e2e

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/tetherlb/tether/dataplane/header"
)

// udp4 and udp6 build a UDP packet whose checksum field holds the
// pseudo-header's sum (a partial checksum); flags are IPv4's flags and
// fragment offset.
func udp4(payload []byte, flags uint16) []byte {
	p := make([]byte, 20+8+len(payload))
	p[0], p[8], p[9] = 0x45, 64, header.IPProtoUDP
	binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
	binary.BigEndian.PutUint16(p[6:], flags)
	copy(p[12:], []byte{10, 0, 1, 2})
	copy(p[16:], []byte{192, 0, 2, 10})
	fillUDP(p[20:], p[12:16], p[16:20], payload)
	return p
}

func udp6(payload []byte) []byte {
	p := make([]byte, 40+8+len(payload))
	p[0], p[6], p[7] = 0x60, header.IPProtoUDP, 64
	binary.BigEndian.PutUint16(p[4:], uint16(8+len(payload)))
	p[8], p[9], p[23] = 0xfd, 0x00, 2
	p[24], p[25], p[39] = 0x20, 0x01, 0x10
	fillUDP(p[40:], p[8:24], p[24:40], payload)
	return p
}

func fillUDP(seg, src, dst, payload []byte) {
	binary.BigEndian.PutUint16(seg[0:], 49520)
	binary.BigEndian.PutUint16(seg[2:], 53)
	binary.BigEndian.PutUint16(seg[4:], uint16(len(seg)))
	copy(seg[8:], payload)
	binary.BigEndian.PutUint16(seg[6:], header.Fold(header.PseudoHeaderSum(header.IPProtoUDP, src, dst, uint32(len(seg)))))
}

// TestFinishPartial: the ipipd role completes a partial checksum, sends a
// computed zero as all ones (an IPv6 receiver drops a zero), and leaves a
// fragment alone even when its bytes look partial. Each mistake lost
// every try of one datagram in the UDP system tests, one run in fifty.
func TestFinishPartial(t *testing.T) {
	payload := []byte("echo 1\n0123456789abcdef-") // even: the last two bytes are one word
	t.Run("completes", func(t *testing.T) {
		for _, p := range [][]byte{udp4(payload, 0), udp6(payload)} {
			finishPartial(p)
			l3 := 20
			src, dst := p[12:16], p[16:20]
			if p[0]>>4 == 6 {
				l3, src, dst = 40, p[8:24], p[24:40]
			}
			seg := p[l3:]
			if s := header.Fold(header.Sum(seg, header.PseudoHeaderSum(header.IPProtoUDP, src, dst, uint32(len(seg))))); s != 0xffff {
				t.Errorf("IPv%d: checksum %#04x does not verify (sum %#04x)", p[0]>>4, binary.BigEndian.Uint16(seg[6:]), s)
			}
		}
	})
	t.Run("zero sent as all ones", func(t *testing.T) {
		// Choose the last two bytes so that the whole sums to all
		// ones: the checksum computed is zero.
		p := udp6(payload)
		seg := p[40:]
		last := len(seg) - 2
		binary.BigEndian.PutUint16(seg[last:], 0)
		binary.BigEndian.PutUint16(seg[last:], ^header.Fold(header.Sum(seg, 0)))
		if c := header.Checksum(seg, 0); c != 0 {
			t.Fatalf("test packet's checksum is %#04x, want one computed as zero", c)
		}
		finishPartial(p)
		if c := binary.BigEndian.Uint16(seg[6:]); c != 0xffff {
			t.Errorf("checksum field %#04x, want 0xffff", c)
		}
	})
	t.Run("fragments left alone", func(t *testing.T) {
		for _, flags := range []uint16{0x2000, 0x2000 | 185, 185} { // first, middle, last
			p := udp4(payload, flags)
			before := bytes.Clone(p)
			finishPartial(p)
			if !bytes.Equal(p, before) {
				t.Errorf("fragment (flags and offset %#04x) changed", flags)
			}
		}
	})
}

// TestForgedSYNs: the synflood role's SYNs come from hosts of the forged
// prefix, never its first or last address, in the target's IP version,
// with checksums a receiver accepts; without that the flood tests'
// SYNs would be dropped before the unit and prove nothing.
func TestForgedSYNs(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, c := range []struct{ prefix, target string }{
		{"100.64.0.0/10", "192.0.2.10:80"},
		{"10.9.9.0/30", "192.0.2.10:80"},
		{"fd00:64::/64", "[2001:db8:10::12]:80"},
		{"fd00:64:1:2::/126", "[2001:db8:10::12]:80"},
	} {
		p, dst := netip.MustParsePrefix(c.prefix), netip.MustParseAddrPort(c.target)
		ipLen := header.IPv4MinSize
		if dst.Addr().Is6() {
			ipLen = header.IPv6Size
		}
		seen := map[netip.Addr]bool{}
		for range 2000 {
			src := randomHost(rng, p)
			if !p.Contains(src) || src == p.Masked().Addr() || !p.Contains(src.Next()) {
				t.Fatalf("%s: source %s is not a host of the prefix", c.prefix, src)
			}
			seen[src] = true
			b := make([]byte, ipLen+24)
			buildSYN(b, src, dst, 4242, 7)
			var s, d []byte
			if ipLen == header.IPv4MinSize {
				h := header.IPv4(b)
				if !header.IPv4HeaderValid(b[:header.IPv4MinSize]) || int(h.TotalLength()) != len(b) {
					t.Fatalf("%s: bad IPv4 header % x", c.prefix, b[:20])
				}
				s, d = h.Src(), h.Dst()
			} else {
				h := header.IPv6(b)
				if h.Version() != 6 || int(h.PayloadLength()) != 24 || h.NextHeader() != header.IPProtoTCP {
					t.Fatalf("%s: bad IPv6 header % x", c.prefix, b[:40])
				}
				s, d = h.Src(), h.Dst()
			}
			if !bytes.Equal(s, src.AsSlice()) || !bytes.Equal(d, dst.Addr().AsSlice()) {
				t.Fatalf("%s: addresses %x → %x, want %s → %s", c.prefix, s, d, src, dst.Addr())
			}
			seg := b[ipLen:]
			if sum := header.Checksum(seg, header.PseudoHeaderSum(header.IPProtoTCP, s, d, uint32(len(seg)))); sum != 0 {
				t.Fatalf("%s: TCP checksum does not verify (%#04x)", c.prefix, sum)
			}
			if tcp := header.TCP(seg); tcp.DstPort() != dst.Port() || tcp.Flags() != header.TCPFlagSYN {
				t.Fatalf("%s: not a SYN to port %d: % x", c.prefix, dst.Port(), seg)
			}
		}
		if want := min(2, p.Addr().BitLen()-p.Bits()); len(seen) < want {
			t.Errorf("%s: %d distinct sources in 2000", c.prefix, len(seen))
		}
	}
}
