package control

import (
	"slices"
	"testing"

	pb "github.com/tetherlb/tether/api/hostpb"
	"github.com/tetherlb/tether/api/unit"
)

// A host applies a batch's removals before its additions: a flow that
// began and ended in one round must not be left added, and a flow ID
// that ended and began again (the forwarder reuses an ID only once its
// flow is gone) must end up added.
func TestHostChangeKeepsTheLastWord(t *testing.T) {
	k := unit.FlowKey{Proto: 6, SrcPort: 40000, DstPort: 80}
	k.Src[0], k.Dst[0] = 10, 192
	ch := &hostChange{}
	ch.add = append(ch.add, mappingOf(&k, 5), mappingOf(&k, 6))
	ch.ended(5)
	if len(ch.add) != 1 || ch.add[0].GetFlowId() != 6 || !slices.Equal(ch.remove, []uint32{5}) {
		t.Fatalf("opened then ended: add %v, remove %v; want only 6 added, 5 removed", ids(ch.add), ch.remove)
	}
	ch = &hostChange{}
	ch.ended(7)
	ch.add = append(ch.add, mappingOf(&k, 7))
	if len(ch.add) != 1 || !slices.Equal(ch.remove, []uint32{7}) {
		t.Fatalf("ended then opened: add %v, remove %v; want 7 removed, then added", ids(ch.add), ch.remove)
	}
	if m := mappingOf(&k, 7); pb.ValidateUnit(&pb.UnitMessage{Version: pb.Version, Body: &pb.UnitMessage_Mappings{Mappings: &pb.Mappings{Seq: 1, Add: []*pb.Mapping{m}}}}) != nil {
		t.Fatalf("mappingOf makes an invalid mapping: %v", m)
	}
}

func ids(ms []*pb.Mapping) []uint32 {
	var out []uint32
	for _, m := range ms {
		out = append(out, m.GetFlowId())
	}
	return out
}
