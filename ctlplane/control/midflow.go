package control

import (
	"context"
	"time"

	"github.com/tetherlb/tether/api/unit"
	"github.com/tetherlb/tether/dataplane/channel"
)

// A unit of a cluster punts the TCP segments without SYN it has no flow
// for (channel.PuntMidFlow): after another unit failed, the router moved
// the connection here, and only the unit that carried it knows where it
// goes (seed S1 FIG. 28: the classifier queries the distributed atom
// manager and plumbs the route). Until the atom manager exists, the
// answer is the one a unit without a cluster gives such a segment
// itself: Maglev's choice for tunnel and ipip, a reset for nat.

// FlowLookup asks the distributed atom manager which backend carries
// the connection k: the names of its VIP and backend, ok false when no
// unit knows the connection. It is called on the goroutine that reads
// the forwarder's messages, with a context bounded by flowLookupTimeout,
// so it must answer from what the unit holds or give up quickly.
type FlowLookup func(ctx context.Context, k unit.FlowKey) (vip, backend string, ok bool)

// flowLookupTimeout bounds a FlowLookup: well under the forwarder's
// hold of the segment (puntTimeout, a second), so that the answer comes
// while the segment still waits.
const flowLookupTimeout = 200 * time.Millisecond

// midFlow answers a mid-flow punt: with a route to the backend the atom
// manager names (c.flowLookup, once it exists), else as a unit without
// a cluster would have decided (midFlowFallback), else with a refusal.
// A punt of a VIP this process does not know (its IDs are older than
// the forwarder's) gets no answer: the segment waits out its hold, and
// the client's retransmission finds the IDs in step.
func (c *Control) midFlow(lk *fwdLink, pu *channel.Punt) {
	c.mu.Lock()
	vip, known := c.vipNames[pu.VIP]
	mode := c.vipMode(vip)
	lookup := c.flowLookup
	ids := c.ids.Backends
	c.mu.Unlock()
	if !known || mode == 0 {
		c.count(func(s *unit.PuntStats) { s.Refused++ })
		return
	}
	backend, ok := uint32(0), false
	// A nat connection's route is its whole entry (the SNAT port its
	// backend knows), which a backend's name does not give: until the
	// atom manager returns entries, nat connections are refused.
	if lookup != nil && mode != unit.ModeNAT {
		ctx, cancel := context.WithTimeout(context.Background(), flowLookupTimeout)
		v, b, found := lookup(ctx, pu.Key)
		cancel()
		if found && v == vip {
			backend, ok = ids[unit.BackendKey{VIP: v, Backend: b}]
		}
	}
	if !ok {
		backend, ok = midFlowFallback(mode, pu.Choice)
	}
	r := channel.Route{Op: channel.RouteRefuse, Worker: pu.Worker, Key: pu.Key}
	if ok {
		r.Op, r.Action = channel.RouteAdd, unit.Action{Backend: backend}
	}
	if err := lk.route(&r); err != nil {
		return
	}
	c.count(func(s *unit.PuntStats) {
		if ok {
			s.MidFlow++
		} else {
			s.MidFlowRefused++
		}
	})
}

// midFlowFallback is the backend a unit without a cluster sends a
// segment of a connection it has no flow for to: tunnel and ipip make a
// flow by Maglev (choice, the forwarder's), nat cannot (a fresh SNAT
// port is a connection its backend never saw) and resets it. ok is
// false when the segment is to be refused.
func midFlowFallback(mode unit.Mode, choice uint32) (backend uint32, ok bool) {
	if mode == unit.ModeNAT || choice == channel.NoChoice {
		return 0, false
	}
	return choice, true
}

// vipMode returns the mode of the running configuration's VIP name (0
// when it has none). Callers hold mu.
func (c *Control) vipMode(name string) unit.Mode {
	if c.running == nil {
		return 0
	}
	for i := range c.running.VIPs {
		if v := &c.running.VIPs[i]; v.Name == name {
			return v.ModeValue()
		}
	}
	return 0
}
