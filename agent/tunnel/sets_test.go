package tunnel

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tetherlb/tether/internal/nstest"
	"github.com/tetherlb/tether/tables/encap"
)

// ReplaceUnit makes one unit's set exact and leaves another unit's
// alone; ForgetUnitsBut drops the sets of units that are gone.
func TestReplaceUnitMakesOneUnitsSetExact(t *testing.T) {
	p := newTopo(t)
	h := open(t, p, nstest.BPFFS(t))
	defer h.Remove()
	unit, other := netip.MustParseAddr(unitAddr), netip.MustParseAddr(otherAddr)
	for id := uint32(1); id <= 4; id++ {
		if err := h.Put(unit, id, tuple(protoTCP, clientAddr, vipAddr, uint16(40000+id), 80)); err != nil {
			t.Fatal(err)
		}
	}
	if err := h.Put(other, 2, tuple(protoUDP, clientAddr, vipAddr, 50000, 53)); err != nil {
		t.Fatal(err)
	}
	// 1 stays as it is, 2 changes, 3 and 4 go, 5 is new.
	want := map[uint32]*encap.Tuple{
		1: tuple(protoTCP, clientAddr, vipAddr, 40001, 80),
		2: tuple(protoTCP, clientAddr, vipAddr, 41002, 80),
		5: tuple(protoUDP, clientAddr, vipAddr, 40005, 53),
	}
	added, removed, err := h.ReplaceUnit(unit, want)
	if err != nil || added != 2 || removed != 2 {
		t.Fatalf("ReplaceUnit = %d added, %d removed, %v; want 2, 2, nil", added, removed, err)
	}
	got, err := h.Mappings(unit)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("unit holds %d mappings, want %d: %v", len(got), len(want), got)
	}
	for id, w := range want {
		if got[id] != *w {
			t.Errorf("flow %d: %+v, want %+v", id, got[id], *w)
		}
	}
	if o, _ := h.Mappings(other); len(o) != 1 || o[2].DstPort != 53 {
		t.Errorf("the other unit's set changed: %v", o)
	}
	// A unit's IPv6 address keys its IPv6 flows, in a map of their own:
	// the same IDs under both addresses never meet.
	unit6 := netip.MustParseAddr(unitAddr6)
	want6 := map[uint32]*encap.Tuple{
		1: tuple(protoTCP, clientAddr6, vipAddr6, 40001, 80),
		7: tuple(protoUDP, clientAddr6, vipAddr6, 40007, 53),
	}
	if added, removed, err := h.ReplaceUnit(unit6, want6); err != nil || added != 2 || removed != 0 {
		t.Fatalf("ReplaceUnit(IPv6) = %d added, %d removed, %v; want 2, 0, nil", added, removed, err)
	}
	if got, err := h.Mappings(unit6); err != nil || len(got) != 2 || got[1] != *want6[1] || got[7] != *want6[7] {
		t.Errorf("the IPv6 unit holds %v (%v), want %v", got, err, want6)
	}
	if got, err := h.Mappings(unit); err != nil || len(got) != len(want) || got[1] != *want[1] {
		t.Errorf("the IPv4 set changed with the IPv6 one: %v (%v)", got, err)
	}
	if err := h.Put(unit6, 9, tuple(protoTCP, clientAddr, vipAddr, 1, 2)); err == nil {
		t.Error("an IPv4 mapping was put under an IPv6 unit")
	}

	n, err := h.ForgetUnitsBut([]netip.Addr{unit, unit6})
	if err != nil || n != 1 {
		t.Fatalf("ForgetUnitsBut = %d, %v; want the other unit's 1", n, err)
	}
	if u, _ := h.Mappings(unit6); len(u) != 2 {
		t.Errorf("the kept IPv6 unit's set: %v", u)
	}
	if n, err := h.ForgetUnitsBut([]netip.Addr{unit}); err != nil || n != 2 {
		t.Fatalf("ForgetUnitsBut(IPv4 only) = %d, %v; want the IPv6 unit's 2", n, err)
	}
	if o, _ := h.Mappings(other); len(o) != 0 {
		t.Errorf("the other unit's set outlived it: %v", o)
	}
	if u, _ := h.Mappings(unit); len(u) != 3 {
		t.Errorf("the kept unit's set: %v", u)
	}
}

// An agent that takes the program over with KeepUnits keeps the earlier
// agent's units until it learns them; RemovePinned leaves nothing.
func TestKeepUnitsAndRemovePinned(t *testing.T) {
	p := newTopo(t)
	dir := nstest.BPFFS(t)
	h := open(t, p, dir)
	if h.MaxFlows() != 1<<20 {
		t.Errorf("MaxFlows %d, want the default 1<<20", h.MaxFlows())
	}
	h.Close()
	var h2 *Host
	nstest.In(t, p.h, func() {
		var err error
		h2, err = Open(Config{Interface: "h0", Addresses: []netip.Addr{netip.MustParseAddr(tunnelAddr)}, PinDir: dir, KeepUnits: true})
		if err != nil {
			t.Fatal(err)
		}
	})
	units, err := h2.Units()
	if err != nil || len(units) != 1 || units[0] != netip.MustParseAddr(unitAddr) {
		t.Errorf("units after a takeover with KeepUnits: %v, %v", units, err)
	}
	h2.Close()

	if ok, err := RemovePinned("h0", dir); !ok || err != nil {
		t.Fatalf("RemovePinned = %v, %v", ok, err)
	}
	if m, _ := filepath.Glob(filepath.Join(dir, "v*")); len(m) != 0 {
		t.Errorf("left behind: %v", m)
	}
	if ok, err := RemovePinned("h0", dir); ok || err != nil {
		t.Errorf("RemovePinned again = %v, %v; want nothing to remove", ok, err)
	}
	if ok, err := RemovePinned("h0", filepath.Join(dir, "none")); ok || err != nil {
		t.Errorf("RemovePinned of a directory that does not exist = %v, %v", ok, err)
	}
	// The interface has no XDP program any more.
	out := nstest.Sh(t, "ip", "-n", p.h, "link", "show", "h0")
	if strings.Contains(out, "xdp") {
		t.Errorf("still attached: %s", out)
	}
}

// BenchmarkPut is the cost of one mapping written (one system call),
// what a batch costs per mapping before the agent acknowledges it.
func BenchmarkPut(b *testing.B) {
	h := benchHost(b)
	unit := netip.MustParseAddr(unitAddr)
	tp := tuple(protoTCP, clientAddr, vipAddr, 40000, 80)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := h.Put(unit, uint32(i%65536), tp); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkReplaceUnitUnchanged is a restarted agent's resync of a unit
// whose 65536 mappings the kernel already holds: one walk of the map.
func BenchmarkReplaceUnitUnchanged(b *testing.B) {
	h := benchHost(b)
	unit := netip.MustParseAddr(unitAddr)
	want := map[uint32]*encap.Tuple{}
	for id := uint32(0); id < 65536; id++ {
		want[id] = tuple(protoTCP, clientAddr, vipAddr, uint16(id|1), 80)
	}
	if _, _, err := h.ReplaceUnit(unit, want); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if added, _, err := h.ReplaceUnit(unit, want); err != nil || added != 0 {
			b.Fatal(added, err)
		}
	}
}

func benchHost(b *testing.B) *Host {
	if os.Geteuid() != 0 {
		b.Skip("needs root")
	}
	// The maps alone: no interface is needed to time them.
	m, err := newMaps(1 << 20)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(m.close)
	return &Host{m: m}
}
