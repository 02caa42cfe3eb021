package dataplane

import (
	"testing"

	"github.com/tetherlb/tether/api/unit"
)

// TestBuildReusesUnchangedMaglev: a rebuild keeps the Maglev table of
// every VIP whose input did not change and builds new tables for the
// others: a changed weight, a drained backend, a new Maglev size.
func TestBuildReusesUnchangedMaglev(t *testing.T) {
	c := manyVIPs(t, 4)
	prev, err := Build(c, nil)
	if err != nil {
		t.Fatal(err)
	}
	two := 2
	c.VIPs[1].Backends[0].Weight = &two                       // b0 had weight 1
	c.VIPs[2].Backends[1].State = unit.StateDraining.String() // leaves the table
	c.VIPs[3].MaglevSize = 251
	next, err := Build(c, prev)
	if err != nil {
		t.Fatal(err)
	}
	for i, wantSame := range []bool{true, false, false, false} {
		same := next.VIPs[i].Maglev == prev.VIPs[i].Maglev
		if same != wantSame {
			t.Errorf("vip %d: table reused %v, want %v", i, same, wantSame)
		}
	}
	if next.VIPs[2].Maglev.Size() != prev.VIPs[2].Maglev.Size() || len(next.VIPs[2].slots) != 2 {
		t.Errorf("vip 2: %d slots after draining one of three backends", len(next.VIPs[2].slots))
	}
	// A reused table answers as a fresh build would.
	fresh, err := Build(c, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range next.VIPs {
		for h := uint64(0); h < 1000; h++ {
			a, _ := next.VIPs[i].pick(h * 0x9e3779b97f4a7c15)
			b, _ := fresh.VIPs[i].pick(h * 0x9e3779b97f4a7c15)
			if next.Backends[a].Name != fresh.Backends[b].Name {
				t.Fatalf("vip %d hash %d: %s after a rebuild, %s fresh", i, h, next.Backends[a].Name, fresh.Backends[b].Name)
			}
		}
	}
	// A VIP removed and added back is built afresh.
	removed := c.Clone()
	removed.VIPs = removed.VIPs[1:]
	mid, err := Build(removed, next)
	if err != nil {
		t.Fatal(err)
	}
	back, err := Build(c, mid)
	if err != nil {
		t.Fatal(err)
	}
	if back.VIPs[0].Maglev == next.VIPs[0].Maglev || back.VIPs[0].Maglev == nil {
		t.Error("a VIP that was removed in between kept its old table")
	}
}

// TestReportListsEveryReason: the report carries every drop and pass
// reason, zero or not, so its readers need not know the dataplane's.
func TestReportListsEveryReason(t *testing.T) {
	var s Summary
	s.Stats.Drops[DropNoBackend] = 3
	s.Port.KernelDropped, s.Port.RxDropped = 5, 6
	s.Stats.PuntsSentDirect, s.Stats.EventsSentDirect = 7, 8
	rep := s.Report()
	if rep.PuntsSentDirect != 7 || rep.EventsSentDirect != 8 {
		t.Fatalf("direct sends reported as %d punts and %d events, want 7 and 8", rep.PuntsSentDirect, rep.EventsSentDirect)
	}
	// The pipeline's reasons and the three of frames it never saw.
	if len(rep.Drops) != len(Drops())+3 || len(rep.Passes) != len(Passes()) {
		t.Fatalf("%d drop and %d pass reasons, want %d and %d", len(rep.Drops), len(rep.Passes), len(Drops())+3, len(Passes()))
	}
	if rep.Drops[DropKernelQueueFull] != 5 || rep.Drops[DropPortQueueFull] != 6 || rep.Drops[DropHandOffLost] != 0 {
		t.Fatalf("frames lost before the pipeline: %v", rep.Drops)
	}
	if rep.Drops[DropNoBackend.String()] != 3 {
		t.Fatalf("no_backend = %d, want 3", rep.Drops[DropNoBackend.String()])
	}
}
