package header

import (
	"encoding/binary"
	"math/rand/v2"
	"strconv"
	"testing"
)

// refChecksum is RFC 1071 written the plainest way, for comparison.
func refChecksum(b []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return ^uint16(s)
}

func TestChecksumMatchesReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 9))
	buf := make([]byte, 2000)
	for i := range 100_000 {
		n := rng.IntN(len(buf))
		for j := range n {
			buf[j] = byte(rng.Uint32())
		}
		if i%10 == 0 { // all-ones data exercises the end-around carry
			for j := range n {
				buf[j] = 0xff
			}
		}
		if got, want := Checksum(buf[:n], 0), refChecksum(buf[:n]); got != want {
			t.Fatalf("Checksum(%d bytes) = %#04x, want %#04x", n, got, want)
		}
	}
}

// TestIncrementalUpdates changes random fields of random buffers and
// checks every incremental form against a full recompute.
func TestIncrementalUpdates(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 1))
	buf := make([]byte, 64)
	for i := range 100_000 {
		for j := range buf {
			buf[j] = byte(rng.Uint32())
		}
		switch i % 50 {
		case 0: // data summing to 0xffff: checksum 0
			clear(buf)
			binary.BigEndian.PutUint16(buf[20:], 0xffff)
		case 1: // all zero: checksum 0xffff
			clear(buf)
		}
		binary.BigEndian.PutUint16(buf[0:], 0)
		binary.BigEndian.PutUint16(buf[0:], refChecksum(buf))
		check := binary.BigEndian.Uint16(buf)
		off := 2 + 2*rng.IntN(7) // a field inside the first 20 bytes
		var got uint16
		switch i % 4 {
		case 0:
			old := binary.BigEndian.Uint16(buf[off:])
			nw := uint16(rng.Uint32())
			binary.BigEndian.PutUint16(buf[off:], nw)
			got = Update16(check, old, nw)
		case 1:
			old := binary.BigEndian.Uint32(buf[off:])
			nw := rng.Uint32()
			binary.BigEndian.PutUint32(buf[off:], nw)
			got = Update32(check, old, nw)
		case 2:
			old := append([]byte(nil), buf[off:off+16]...)
			nw := make([]byte, 16)
			for j := range nw {
				nw[j] = byte(rng.Uint32())
			}
			copy(buf[off:], nw)
			got = UpdateBytes(check, old, nw)
		case 3:
			old := append([]byte(nil), buf[off:off+4]...)
			nw := []byte{byte(rng.Uint32()), 0, 0xff, byte(rng.Uint32())}
			d := DeltaBytes(old, nw) + Delta16(binary.BigEndian.Uint16(buf[40:]), 0x1234)
			copy(buf[off:], nw)
			binary.BigEndian.PutUint16(buf[40:], 0x1234)
			got = Adjust(check, d)
		}
		binary.BigEndian.PutUint16(buf[0:], got)
		// A correct checksum verifies to zero (or its ones'-complement
		// twin 0xffff when the data is all zero).
		if v := Checksum(buf, 0); v != 0 && v != 0xffff {
			t.Fatalf("case %d: after an incremental update the buffer verifies to %#04x", i%4, v)
		}
	}
}

func TestUDPAdjustKeepsAbsentChecksum(t *testing.T) {
	u := UDP(make([]byte, 8))
	u.Adjust(Delta16(1, 2))
	if u.Checksum() != 0 {
		t.Fatalf("absent checksum became %#04x", u.Checksum())
	}
	// A present checksum that would come out as 0 is sent as 0xffff.
	u.SetChecksum(0xfffe)
	u.Adjust(Delta16(0, 1))
	if u.Checksum() == 0 {
		t.Fatal("present checksum became 0, which means absent")
	}
}

func TestPseudoHeaderSum(t *testing.T) {
	// UDP from 10.0.0.1:1 to 10.0.0.2:2, payload "hi", worked out by
	// hand: pseudo-header 0x0a00+0x0001+0x0a00+0x0002+0x0011+0x000a =
	// 0x141e, segment 0x0001+0x0002+0x000a+0x6869 = 0x6876, sum 0x7c94,
	// complement 0x836b.
	src, dst := []byte{10, 0, 0, 1}, []byte{10, 0, 0, 2}
	seg := []byte{0, 1, 0, 2, 0, 10, 0, 0, 'h', 'i'}
	c := Checksum(seg, PseudoHeaderSum(17, src, dst, uint32(len(seg))))
	if c != 0x836b {
		t.Fatalf("checksum = %#04x, want 0x836b", c)
	}
	binary.BigEndian.PutUint16(seg[6:], c)
	if v := Checksum(seg, PseudoHeaderSum(17, src, dst, uint32(len(seg)))); v != 0 {
		t.Fatalf("verifying = %#04x, want 0", v)
	}
}

func BenchmarkChecksum(b *testing.B) {
	for _, n := range []int{64, 1500, 9000} {
		buf := make([]byte, n)
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			b.SetBytes(int64(n))
			var s uint16
			for range b.N {
				s += Checksum(buf, uint64(s))
			}
			sink16 = s
		})
	}
}

func BenchmarkUpdateBytes(b *testing.B) {
	old, nw := []byte{10, 0, 0, 1}, []byte{192, 168, 1, 1}
	var c uint16
	for range b.N {
		c = UpdateBytes(c, old, nw)
	}
	sink16 = c
}

var sink16 uint16
