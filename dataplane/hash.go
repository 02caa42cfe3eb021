package dataplane

import (
	"encoding/binary"

	"github.com/tetherlb/tether/tables/flow"
)

// The flow hash that picks a backend is a contract between units and
// between versions: units behind one ECMP router must send a flow to the
// same backend (Maglev §3.4), including while a cluster is upgraded, so
// this function never changes casually. It is separate from the flow
// table's hash, which is seeded per worker and free to change. It mixes
// the tuple's words with the MurmurHash3 64-bit finalizer.

func fmix64(x uint64) uint64 {
	x ^= x >> 33
	x *= 0xff51afd7ed558ccd
	x ^= x >> 33
	x *= 0xc4ceb9fe1a85ec53
	x ^= x >> 33
	return x
}

// ports packs the non-address part of a tuple.
func ports(sport, dport uint16, proto uint8) uint64 {
	return uint64(sport)<<32 | uint64(dport)<<16 | uint64(proto)
}

func maglevHash4(k *flow.Key4) uint64 {
	a := uint64(binary.BigEndian.Uint32(k.Src[:]))<<32 | uint64(binary.BigEndian.Uint32(k.Dst[:]))
	return fmix64(fmix64(a) ^ ports(k.SrcPort, k.DstPort, k.Proto))
}

func maglevHash6(k *flow.Key6) uint64 {
	h := fmix64(binary.BigEndian.Uint64(k.Src[0:]))
	h = fmix64(h ^ binary.BigEndian.Uint64(k.Src[8:]))
	h = fmix64(h ^ binary.BigEndian.Uint64(k.Dst[0:]))
	h = fmix64(h ^ binary.BigEndian.Uint64(k.Dst[8:]))
	return fmix64(h ^ ports(k.SrcPort, k.DstPort, k.Proto))
}
