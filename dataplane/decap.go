package dataplane

import (
	"github.com/tetherlb/tether/nic"
	"github.com/tetherlb/tether/tables/encap"
)

// Decap is the host side of the flow-ID tunnel (seed S1 §9.4): it reads
// the 32-bit flow ID from the ports of a tunneled TCP or UDP packet, looks
// up the original 5-tuple in t and restores addresses and ports, with
// checksums updated incrementally, so that the host's stack sees the
// packet the client sent. It reports false, leaving the frame unchanged,
// when the frame is not a well-formed TCP or UDP packet or carries an ID
// t does not hold. The host agent uses it; so do the tests, to check that
// every tunneled packet restores exactly.
func Decap(f *nic.Frame, link nic.LinkType, t *encap.Table) bool {
	var pk packet
	pk.frame = f
	parse(&pk, link)
	if pk.kind != kindFlow || pk.frag != fragNone {
		return false
	}
	tu := t.Get(uint32(pk.sport)<<16 | uint32(pk.dport))
	if tu == nil || tu.V6 != pk.v6 || tu.Proto != pk.proto {
		return false
	}
	rewrite(&pk, tu.Src[:], tu.SrcPort, tu.Dst[:], tu.DstPort, true, true, false)
	return true
}
