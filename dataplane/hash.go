package dataplane

import (
	"encoding/binary"

	"github.com/tetherlb/tether/internal/mix"
	"github.com/tetherlb/tether/tables/flow"
)

// The flow hash that picks a backend is a contract between units and
// between versions: units behind one ECMP router must send a flow to the
// same backend (Maglev §3.4), including while a cluster is upgraded, so
// this function never changes casually. It is separate from the flow
// table's hash, which is seeded per worker and free to change. It mixes
// the tuple's words with the MurmurHash3 64-bit finalizer.

// ports packs the non-address part of a tuple.
func ports(sport, dport uint16, proto uint8) uint64 {
	return uint64(sport)<<32 | uint64(dport)<<16 | uint64(proto)
}

func maglevHash4(k *flow.Key4) uint64 {
	a := uint64(binary.BigEndian.Uint32(k.Src[:]))<<32 | uint64(binary.BigEndian.Uint32(k.Dst[:]))
	return mix.Fmix64(mix.Fmix64(a) ^ ports(k.SrcPort, k.DstPort, k.Proto))
}

func maglevHash6(k *flow.Key6) uint64 {
	h := mix.Fmix64(binary.BigEndian.Uint64(k.Src[0:]))
	h = mix.Fmix64(h ^ binary.BigEndian.Uint64(k.Src[8:]))
	h = mix.Fmix64(h ^ binary.BigEndian.Uint64(k.Dst[0:]))
	h = mix.Fmix64(h ^ binary.BigEndian.Uint64(k.Dst[8:]))
	return mix.Fmix64(h ^ ports(k.SrcPort, k.DstPort, k.Proto))
}
