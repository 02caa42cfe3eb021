package dataplane

import (
	"net/netip"
	"testing"
)

// TestDumpInSteps: a dump visits the whole table in bounded steps,
// counts every match whatever its limit, and collects only the page
// asked for.
func TestDumpInSteps(t *testing.T) {
	r := newRig(t, loadConfig(t, 32768, "1024-65535"))
	for i := range 40 {
		r.send(syn(cl(50+i%4, uint16(2000+i)), vip(81)))
	}
	f := FlowFilter{VIP: netip.MustParseAddrPort("192.0.2.1:81"), Backend: -1}
	for _, tc := range []struct{ skip, limit, want int }{{0, 1, 1}, {0, 100, 40}, {35, 100, 5}, {40, 10, 0}} {
		d := FlowDump{Filter: f, Skip: tc.skip, Limit: tc.limit}
		steps := 0
		for !d.Done() {
			r.p.DumpStep(r.now, &d)
			steps++
		}
		if d.Matched != 40 || len(d.Records) != tc.want {
			t.Errorf("skip %d limit %d: %d records of %d matched, want %d of 40", tc.skip, tc.limit, len(d.Records), d.Matched, tc.want)
		}
		if steps < 3 {
			t.Errorf("the dump took %d steps of %d slots: a step must not walk the whole table", steps, DumpStep)
		}
	}
	d := FlowDump{Filter: FlowFilter{Client: netip.MustParseAddr("203.0.113.50"), Backend: -1}, Limit: 100}
	for !d.Done() {
		r.p.DumpStep(r.now, &d)
	}
	if d.Matched != 10 {
		t.Errorf("client filter matched %d, want 10", d.Matched)
	}
}
