package flow

import "encoding/binary"

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

// mix is the 64-bit finalizer of MurmurHash3: it spreads every input bit
// over the output so that fastrange can take the high bits.
func mix(x uint64) uint64 {
	x ^= x >> 33
	x *= 0xff51afd7ed558ccd
	x ^= x >> 33
	x *= 0xc4ceb9fe1a85ec53
	x ^= x >> 33
	return x
}

// Hash returns the table hash of k under seed. A worker seeds its shard
// randomly so that a sender cannot aim many flows at one probe sequence.
func (k *Key4) Hash(seed uint64) uint64 {
	a := uint64(binary.LittleEndian.Uint32(k.Src[:]))<<32 | uint64(binary.LittleEndian.Uint32(k.Dst[:]))
	b := uint64(k.SrcPort)<<32 | uint64(k.DstPort)<<16 | uint64(k.Proto)
	return mix(mix(a^seed) ^ b)
}

// Hash returns the table hash of k under seed.
func (k *Key6) Hash(seed uint64) uint64 {
	s0 := binary.LittleEndian.Uint64(k.Src[0:])
	s1 := binary.LittleEndian.Uint64(k.Src[8:])
	d0 := binary.LittleEndian.Uint64(k.Dst[0:])
	d1 := binary.LittleEndian.Uint64(k.Dst[8:])
	p := uint64(k.SrcPort)<<32 | uint64(k.DstPort)<<16 | uint64(k.Proto)
	h := mix(s0 ^ seed)
	h = mix(h ^ s1)
	h = mix(h ^ d0)
	h = mix(h ^ d1)
	return mix(h ^ p)
}
