package flow

import (
	"encoding/binary"
	"math/bits"
)

// Key4 identifies an IPv4 flow by its 5-tuple as it appears in a packet.
type Key4 struct {
	Src, Dst         [4]byte
	SrcPort, DstPort uint16
	Proto            uint8
}

// Key6 identifies an IPv6 flow by its 5-tuple as it appears in a packet.
type Key6 struct {
	Src, Dst         [16]byte
	SrcPort, DstPort uint16
	Proto            uint8
}

// foldedMul multiplies two 64-bit words to 128 bits and folds the halves
// together: one multiply mixes every bit of both inputs into the middle
// of the product (the core of wyhash and foldhash).
func foldedMul(a, b uint64) uint64 {
	hi, lo := bits.Mul64(a, b)
	return hi ^ lo
}

// Seed constants from the fractional digits of pi: arbitrary, but fixed
// and free of structure.
const (
	k0 = 0x243f6a8885a308d3
	k1 = 0x13198a2e03707344
	k2 = 0xa4093822299f31d0
	k3 = 0x082efa98ec4e6c89
)

// Hash returns the table hash of k under seed. A worker seeds its shard
// randomly so that a sender who does not know the seed cannot aim many
// flows at one probe sequence; the inputs are XORed with the seed before
// they are multiplied, so collisions depend on it.
func (k *Key4) Hash(seed uint64) uint64 {
	a := uint64(binary.LittleEndian.Uint32(k.Src[:]))<<32 | uint64(binary.LittleEndian.Uint32(k.Dst[:]))
	b := uint64(k.SrcPort)<<32 | uint64(k.DstPort)<<16 | uint64(k.Proto)
	return foldedMul(foldedMul(a^seed^k0, b^k1), seed^k2)
}

// Hash returns the table hash of k under seed.
func (k *Key6) Hash(seed uint64) uint64 {
	s0 := binary.LittleEndian.Uint64(k.Src[0:])
	s1 := binary.LittleEndian.Uint64(k.Src[8:])
	d0 := binary.LittleEndian.Uint64(k.Dst[0:])
	d1 := binary.LittleEndian.Uint64(k.Dst[8:])
	p := uint64(k.SrcPort)<<32 | uint64(k.DstPort)<<16 | uint64(k.Proto)
	h := foldedMul(s0^seed^k0, s1^k1) ^ foldedMul(d0^seed^k2, d1^k3)
	return foldedMul(h^p, seed^k2)
}
