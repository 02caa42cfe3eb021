package hostpb

import (
	"encoding/binary"
	"hash/fnv"
)

// MappingSum is one mapping's share of a Holding's sum. Sums add and
// subtract as mappings come and go, so neither side ever walks its whole
// set to keep one, and the order mappings arrived in does not matter.
// m must be valid (ValidTuple).
func MappingSum(m *Mapping) uint64 {
	t := m.GetTuple()
	h := fnv.New64a()
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], m.GetFlowId())
	h.Write(b[:])
	h.Write([]byte{byte(t.GetProto())})
	h.Write(t.GetClient())
	binary.BigEndian.PutUint16(b[:2], uint16(t.GetClientPort()))
	h.Write(b[:2])
	h.Write(t.GetVip())
	binary.BigEndian.PutUint16(b[:2], uint16(t.GetVipPort()))
	h.Write(b[:2])
	// FNV's low bits mix poorly for sums of many similar inputs; a final
	// mix (murmur3's fmix64) spreads every input bit over the word.
	x := h.Sum64()
	x ^= x >> 33
	x *= 0xff51afd7ed558ccd
	x ^= x >> 33
	x *= 0xc4ceb9fe1a85ec53
	x ^= x >> 33
	return x
}

// MigrateMapping is the mapping a valid Migrate adds: its flow ID for
// the tuple of its connection's state. Unit and host both build it here,
// so that their sums agree.
func MigrateMapping(m *Migrate) *Mapping {
	st := m.GetState()
	return &Mapping{FlowId: m.GetFlowId(), Tuple: &Tuple{Proto: Proto_PROTO_TCP,
		Client: st.GetClient(), ClientPort: st.GetClientPort(), Vip: st.GetVip(), VipPort: st.GetVipPort()}}
}
