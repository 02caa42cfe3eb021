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

// A migration's pending release goes in sequence order among the
// published batches, whichever was recorded first, so that an
// acknowledgement releases exactly what it covers: the migration's flow
// and the batches up to its seq, and counts the migration taken.
func TestPendingInSequence(t *testing.T) {
	key := func(port uint16) heldKey { return heldKey{key: unit.FlowKey{Proto: 6, SrcPort: port, DstPort: 80}} }
	var p []pendingBatch
	p = addPending(p, pendingBatch{seq: 3, keys: []heldKey{key(3)}})
	p = addPending(p, pendingBatch{seq: 7, keys: []heldKey{key(7)}})
	p = addPending(p, pendingBatch{seq: 5, keys: []heldKey{key(5)}, migration: 99})
	p = addPending(p, pendingBatch{seq: 5, keys: []heldKey{key(55)}})
	var seqs []uint64
	for _, b := range p {
		seqs = append(seqs, b.seq)
	}
	if !slices.Equal(seqs, []uint64{3, 5, 5, 7}) || p[1].migration != 99 {
		t.Fatalf("pending %+v: want seqs 3, 5 (the migration), 5, 7", p)
	}
	keys, migrations, rest := takeAcked(p, 6)
	if len(keys) != 3 || keys[1] != key(5) || !slices.Equal(migrations, []uint64{99}) || len(rest) != 1 || rest[0].seq != 7 {
		t.Fatalf("ack of 6: keys %v, migrations %v, rest %+v", keys, migrations, rest)
	}
	if keys, migrations, rest := takeAcked(rest, 6); len(keys) != 0 || len(migrations) != 0 || len(rest) != 1 {
		t.Fatal("a repeated ack released something")
	}
}
