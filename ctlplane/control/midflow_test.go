package control

import (
	"context"
	"sync"
	"testing"

	"github.com/tetherlb/tether/api/unit"
	"github.com/tetherlb/tether/dataplane/channel"
)

const midFlowConfig = `
unit: {name: u1, address4: 198.51.100.254}
vips:
  - name: tun
    address: 192.0.2.20
    port: 80
    protocol: tcp
    mode: tunnel
    backends: [{name: t0, address: 10.0.2.10}, {name: t1, address: 10.0.2.11}]
  - name: ip
    address: 192.0.2.21
    port: 80
    protocol: tcp
    mode: ipip
    backends: [{name: i0, address: 10.0.3.10}]
  - name: nat
    address: 192.0.2.22
    port: 80
    protocol: tcp
    mode: nat
    snat: [198.51.100.1]
    backends: [{name: n0, address: 10.0.4.10}]
`

var midFlowIDs = unit.ReloadReply{Generation: 3,
	VIPs: map[string]uint32{"tun": 6, "ip": 7, "nat": 8},
	Backends: map[unit.BackendKey]uint32{
		{VIP: "tun", Backend: "t0"}: 60, {VIP: "tun", Backend: "t1"}: 61,
		{VIP: "ip", Backend: "i0"}: 70, {VIP: "nat", Backend: "n0"}: 80,
	}}

// TestMidFlowFallback: without the atom manager, a mid-flow punt gets
// what a unit without a cluster would have done with the segment.
func TestMidFlowFallback(t *testing.T) {
	cases := []struct {
		mode   unit.Mode
		choice uint32
		want   uint32
		ok     bool
	}{
		{unit.ModeTunnel, 5, 5, true},
		{unit.ModeIPIP, 6, 6, true},
		{unit.ModeTunnel, channel.NoChoice, 0, false},
		{unit.ModeIPIP, channel.NoChoice, 0, false},
		{unit.ModeNAT, channel.NoChoice, 0, false},
		{unit.ModeNAT, 5, 0, false}, // a fresh SNAT port cannot carry the connection
	}
	for _, tc := range cases {
		if got, ok := midFlowFallback(tc.mode, tc.choice); got != tc.want || ok != tc.ok {
			t.Errorf("midFlowFallback(%s, %d) = %d, %v; want %d, %v", tc.mode, tc.choice, got, ok, tc.want, tc.ok)
		}
	}
}

// TestMidFlowPunts: the control process answers a forwarder's mid-flow
// punts with a route (tunnel and ipip, Maglev's choice) or a refusal
// (nat, or no backend), counts them, and gives a VIP it does not know
// no answer. A flow lookup, once set, decides before the fallback.
func TestMidFlowPunts(t *testing.T) {
	c, _ := startControl(t, midFlowConfig)
	f := connectFake(t, c, 100, "u1")
	f.expect(channel.THello)
	f.expectReload(midFlowIDs, "")
	seq, _ := f.expectCall(unit.CallFlows)
	f.answer(seq, unit.FlowsReply{}, "")
	waitFor(t, c, "the forwarder's IDs", func(s unit.Status) bool { return s.Generation == midFlowIDs.Generation })

	punt := func(vip, choice uint32, k unit.FlowKey) {
		f.send(channel.AppendPunt(nil, f.next(), &channel.Punt{Worker: 1, Reason: channel.PuntMidFlow, VIP: vip, Choice: choice, Key: k, Frame: []byte{0x45}}))
	}
	route := func(name string) channel.Route {
		t.Helper()
		_, p := f.expect(channel.TRoute)
		r, err := channel.DecodeRoute(p)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return r
	}
	cases := []struct {
		name    string
		vip     uint32
		choice  uint32
		op      uint8
		backend uint32
	}{
		{"tunnel: Maglev's choice", 6, 61, channel.RouteAdd, 61},
		{"ipip: Maglev's choice", 7, 70, channel.RouteAdd, 70},
		{"tunnel without a backend", 6, channel.NoChoice, channel.RouteRefuse, 0},
		{"nat", 8, channel.NoChoice, channel.RouteRefuse, 0},
		{"nat, even with a choice", 8, 80, channel.RouteRefuse, 0},
	}
	for i, tc := range cases {
		k := key(byte(i+1), 41000, 20, 80)
		punt(tc.vip, tc.choice, k)
		r := route(tc.name)
		if r.Op != tc.op || r.Key != k || r.Worker != 1 || r.Action != (unit.Action{Backend: tc.backend}) {
			t.Errorf("%s: route %+v; want op %d to backend %d for the punted key", tc.name, r, tc.op, tc.backend)
		}
	}
	waitFor(t, c, "mid-flow outcomes counted", func(s unit.Status) bool {
		return s.Punts.MidFlow == 2 && s.Punts.MidFlowRefused == 3
	})
	// A VIP this process has no ID for: no answer, counted as refused.
	punt(9, 90, key(50, 41000, 20, 80))
	waitFor(t, c, "an unknown VIP's punt counted", func(s unit.Status) bool { return s.Punts.Refused == 1 })

	// The atom manager's answer comes first: it names t0 where Maglev
	// chose t1, and for nat the whole entry a name cannot give.
	var mu sync.Mutex
	var asked []unit.FlowKey
	natAction := unit.Action{Mode: unit.ModeNAT, Backend: 80, PortA: 80, PortB: 40001, A: [16]byte{10, 0, 4, 10}, B: [16]byte{198, 51, 100, 1}}
	c.mu.Lock()
	c.flowLookup = func(_ context.Context, k *unit.FlowKey) (string, unit.Action, bool, error) {
		mu.Lock()
		asked = append(asked, *k)
		mu.Unlock()
		if k.DstPort == 22 {
			return "nat", natAction, true, nil
		}
		return "tun", unit.Action{Backend: 60}, true, nil
	}
	c.mu.Unlock()
	k := key(60, 41000, 20, 80)
	punt(6, 61, k)
	if r := route("looked up"); r.Op != channel.RouteAdd || r.Action.Backend != 60 {
		t.Errorf("with a lookup: route %+v, want an add to t0 (ID 60)", r)
	}
	nk := key(61, 41000, 22, 22)
	punt(8, channel.NoChoice, nk)
	if r := route("nat with a lookup"); r.Op != channel.RouteAdd || r.Action != natAction {
		t.Errorf("nat with a lookup: route %+v, want the whole entry %+v", r, natAction)
	}
	// The forwarder sends no opening event for an entry given whole: the
	// inventory learns the connection from the route.
	waitFor(t, c, "the nat connection taken over in the inventory", func(s unit.Status) bool { return s.Flows == 1 })
	// A lookup naming another VIP's backend is not taken: the fallback
	// decides; so it does when the lookup finds nothing.
	c.mu.Lock()
	c.flowLookup = func(_ context.Context, k *unit.FlowKey) (string, unit.Action, bool, error) {
		return "ip", unit.Action{Backend: 70}, k.DstPort != 21, nil
	}
	c.mu.Unlock()
	punt(6, 61, key(62, 41000, 20, 80))
	if r := route("lookup of another VIP"); r.Op != channel.RouteAdd || r.Action.Backend != 61 {
		t.Errorf("a lookup naming another VIP: route %+v, want Maglev's choice (ID 61)", r)
	}
	punt(8, channel.NoChoice, key(63, 41000, 21, 80))
	if r := route("nat not found"); r.Op != channel.RouteRefuse {
		t.Errorf("nat, not found: route %+v, want a refusal", r)
	}
	waitFor(t, c, "the atom manager's answers counted", func(s unit.Status) bool { return s.Punts.MidFlowFound == 2 })
	mu.Lock()
	defer mu.Unlock()
	if len(asked) != 2 || asked[0] != k || asked[1] != nk {
		t.Errorf("the lookup was asked for %v, want the tunnel and nat punts' keys", asked)
	}
}
