package control

import (
	"bytes"
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tetherlb/tether/api/unit"
	"github.com/tetherlb/tether/config"
	"github.com/tetherlb/tether/ctlplane/atoms"
	"github.com/tetherlb/tether/dataplane/channel"
	"github.com/tetherlb/tether/internal/mtls"
)

func TestRouteData(t *testing.T) {
	for _, d := range []routeData{
		{Mode: unit.ModeTunnel, VIP: "web", Backend: "b0", Port: 80},
		{Mode: unit.ModeIPIP, VIP: "v", Backend: "10.0.0.1:8080", Port: 8080},
		{Mode: unit.ModeNAT, VIP: "web", Backend: "b1", Port: 443, SNAT: netip.MustParseAddrPort("10.9.0.1:40001")},
		{Mode: unit.ModeNAT, VIP: "web6", Backend: "b1", Port: 443, SNAT: netip.MustParseAddrPort("[2001:db8::1]:40001")},
		{Mode: unit.ModeNAT, VIP: "web", Backend: "b1", Port: 443, SNAT: netip.MustParseAddrPort("10.9.0.1:40001"),
			Client: netip.MustParseAddrPort("198.51.100.7:5000"), Service: netip.MustParseAddrPort("192.0.2.10:443")},
	} {
		got, err := decodeRouteData(d.encode())
		if err != nil || got != d {
			t.Errorf("%+v: %+v, %v", d, got, err)
		}
	}
	good := (&routeData{Mode: unit.ModeNAT, VIP: "web", Backend: "b1", Port: 443, SNAT: netip.MustParseAddrPort("10.9.0.1:1")}).encode()
	for name, b := range map[string][]byte{
		"empty":    nil,
		"version":  append([]byte{2}, good[1:]...),
		"mode":     append([]byte{1, byte(unit.ModeHalfNAT)}, good[2:]...),
		"short":    good[:len(good)-1],
		"trailing": append(bytes.Clone(good), 0),
		"no name":  {1, byte(unit.ModeTunnel), 0, 80, 0, 1, 'b'},
		"long":     {1, byte(unit.ModeTunnel), 0, 80, 200, 'v'},
		"tunnel+":  append((&routeData{Mode: unit.ModeTunnel, VIP: "v", Backend: "b"}).encode(), 4),
	} {
		if _, err := decodeRouteData(b); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func FuzzRouteData(f *testing.F) {
	f.Add((&routeData{Mode: unit.ModeTunnel, VIP: "web", Backend: "b0", Port: 80}).encode())
	f.Add((&routeData{Mode: unit.ModeNAT, VIP: "web", Backend: "b1", Port: 443, SNAT: netip.MustParseAddrPort("[2001:db8::1]:4")}).encode())
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := decodeRouteData(b)
		if err != nil {
			return
		}
		if again := d.encode(); !bytes.Equal(again, b) {
			t.Fatalf("%x decoded to %+v, which encodes to %x", b, d, again)
		}
	})
}

// routeUnit is a control process reduced to what route atoms need: its
// forwarder's IDs, its timeouts and its atom manager.
func routeUnit(t *testing.T, ca *mtls.CA, dir, name string, boot uint64, ids unit.ReloadReply) (*Control, atoms.Member) {
	t.Helper()
	f, err := ca.IssueUnit(dir, name, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv, cli, err := mtls.Units(f, name)
	if err != nil {
		t.Fatal(err)
	}
	mgr, err := atoms.New(atoms.Options{Self: atoms.Member{Name: name, Boot: boot}, Level: 1, ServerTLS: srv, ClientTLS: cli,
		PullWait: time.Second, Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = mgr.Serve(l) }()
	t.Cleanup(mgr.Close)
	cfg, err := config.Parse([]byte("unit: {name: " + name + "}\n"))
	if err != nil {
		t.Fatal(err)
	}
	c := &Control{log: zerolog.Nop(), running: cfg, inv: newInventory()}
	c.setIDs(ids)
	c.cl.atoms.Store(mgr)
	return c, atoms.Member{Name: name, Boot: boot, Addr: l.Addr().String()}
}

// TestRouteAtoms: a flow one unit opens becomes a route atom another
// unit finds, and turns into an action in its own forwarder's IDs: a new
// flow to the same backend (tunnel), the same translation (nat), also
// to a backend that left its configuration; a closed flow is still
// found, as a zombie.
func TestRouteAtoms(t *testing.T) {
	dir := t.TempDir()
	ca, _, err := mtls.OpenCA(dir, "test")
	if err != nil {
		t.Fatal(err)
	}
	a, am := routeUnit(t, ca, dir, "unit-a", 1, unit.ReloadReply{Backends: map[unit.BackendKey]uint32{
		{VIP: "web", Backend: "b0"}: 3, {VIP: "web", Backend: "b1"}: 4, {VIP: "db", Backend: "d0"}: 5}})
	b, bm := routeUnit(t, ca, dir, "unit-b", 2, unit.ReloadReply{Backends: map[unit.BackendKey]uint32{
		{VIP: "web", Backend: "b0"}: 10, {VIP: "db", Backend: "d0"}: 12},
		Retired: map[unit.BackendKey]uint32{{VIP: "web", Backend: "b1"}: 11}})
	for _, c := range []*Control{a, b} {
		c.cl.atoms.Load().SetMembers([]atoms.Member{am, bm})
	}
	key := func(port uint16) unit.FlowKey {
		k := unit.FlowKey{Proto: 6, SrcPort: port, DstPort: 80}
		copy(k.Src[:], []byte{198, 51, 100, 7})
		copy(k.Dst[:], []byte{192, 0, 2, 10})
		return k
	}
	tunnel := channel.FlowEvent{Kind: channel.FlowOpened, Key: key(1000), Action: unit.Action{Mode: unit.ModeTunnel, Backend: 4, PortA: 80}}
	copy(tunnel.Action.A[:], []byte{10, 1, 0, 2})
	nat := channel.FlowEvent{Kind: channel.FlowOpened, Key: key(1001), Action: unit.Action{Mode: unit.ModeNAT, Backend: 5, PortA: 5432, PortB: 40007}}
	copy(nat.Action.A[:], []byte{10, 1, 0, 3})
	copy(nat.Action.B[:], []byte{10, 9, 0, 1})
	half := channel.FlowEvent{Kind: channel.FlowOpened, Key: key(1002), Action: unit.Action{Mode: unit.ModeHalfNAT, Backend: 3}}
	a.shareRoutes([]channel.FlowEvent{tunnel, nat, half})

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	vip, got, found, err := b.routeOf(ctx, &tunnel.Key)
	if err != nil || !found || got != (unit.Action{Backend: 11}) || vip != "web" {
		t.Errorf("tunnel flow to a retired backend: %+v, %v, %v", got, found, err)
	}
	vip, got, found, err = b.routeOf(ctx, &nat.Key)
	want := unit.Action{Mode: unit.ModeNAT, Backend: 12, PortA: 5432, PortB: 40007, A: nat.Action.A, B: nat.Action.B}
	if err != nil || !found || got != want || vip != "db" {
		t.Errorf("nat flow: %+v, %v, %v; want %+v", got, found, err, want)
	}
	// The nat connection by its reply: from the backend to the SNAT
	// source, as a unit that takes the dead unit's SNAT address sees it.
	rk := replyKey(&nat.Key, &nat.Action)
	client, ra, found, err := b.replyRouteOf(ctx, &rk)
	if err != nil || !found || client != nat.Key || ra != want {
		t.Errorf("nat reply: %+v %+v, %v, %v; want %+v %+v", client, ra, found, err, nat.Key, want)
	}
	// b takes the connection over: its atoms are b's now, both keys,
	// so that they outlive a's versions (orphans once a is gone).
	b.adoptNAT(1, client, ra)
	for _, k := range []unit.FlowKey{nat.Key, rk} {
		if at, ok := b.cl.atoms.Load().Get(routeKey(&k)); !ok || at.Adder != "unit-b" || at.Cached {
			t.Errorf("%s after b took the connection over: %+v, %v", routeKey(&k), at, ok)
		}
	}
	if _, _, found, err := b.routeOf(ctx, &half.Key); found || err != nil {
		t.Errorf("a halfnat flow was shared: %v, %v", found, err)
	}
	// A unit that never had web/b1 routes to it by address, and adds
	// the flow again under the backend's names once its forwarder made it.
	d, dm := routeUnit(t, ca, dir, "unit-d", 4, unit.ReloadReply{Backends: map[unit.BackendKey]uint32{{VIP: "web", Backend: "b0"}: 20}})
	for _, u := range []*Control{a, b, d} {
		u.cl.atoms.Load().SetMembers([]atoms.Member{am, bm, dm})
	}
	vip, got, found, err = d.routeOf(ctx, &tunnel.Key)
	wantForeign := unit.Action{Backend: unit.ForeignBackend, PortA: 80, A: tunnel.Action.A}
	if err != nil || !found || got != wantForeign || vip != "web" {
		t.Fatalf("a backend unknown here: %+v, %v, %v; want %+v", got, found, err, wantForeign)
	}
	opened := channel.FlowEvent{Kind: channel.FlowOpened, Key: tunnel.Key, Action: unit.Action{Mode: unit.ModeTunnel, Backend: unit.ForeignBackend, PortA: 80, A: tunnel.Action.A}}
	d.shareRoutes([]channel.FlowEvent{opened})
	if at, ok := d.cl.atoms.Load().Get(routeKey(&tunnel.Key)); !ok || at.Adder != "unit-d" || at.Cached {
		t.Fatalf("the foreign flow's atom after d made the flow: %+v, %v", at, ok)
	} else if rd, err := decodeRouteData(at.Data); err != nil || rd.Backend != "b1" || rd.VIP != "web" {
		t.Fatalf("its data: %+v, %v", rd, err)
	}

	// unit-a's flow closing deletes its own version only: unit-d's,
	// later, stays; d's closing makes the zombie.
	closed := tunnel
	closed.Kind = channel.FlowClosed
	a.shareRoutes([]channel.FlowEvent{closed})
	if at, ok := d.cl.atoms.Load().Get(routeKey(&tunnel.Key)); !ok || at.Zombie {
		t.Fatalf("an earlier version's delete killed the later one: %+v, %v", at, ok)
	}
	d.shareRoutes([]channel.FlowEvent{closed})
	if at, ok := d.cl.atoms.Load().Get(routeKey(&tunnel.Key)); !ok || !at.Zombie {
		t.Fatalf("after the flow closed: %+v, %v", at, ok)
	}
	// unit-b cached the live version; a fresh query of a unit that has
	// no copy finds the zombie.
	c, cm := routeUnit(t, ca, dir, "unit-c", 3, b.ids)
	for _, u := range []*Control{a, b, c, d} {
		u.cl.atoms.Load().SetMembers([]atoms.Member{am, bm, cm, dm})
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		at, found, err := c.cl.atoms.Load().Query(ctx, routeKey(&tunnel.Key))
		if err != nil || !found {
			t.Fatalf("the closed flow: %v, %v", found, err)
		}
		if at.Zombie {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the closed flow's atom never turned zombie at the other units: %+v", at)
		}
		c.cl.atoms.Load().Expire()
		time.Sleep(10 * time.Millisecond)
	}
}
