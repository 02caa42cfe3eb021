package control

import (
	"context"
	"time"

	"github.com/tetherlb/tether/api/unit"
	"github.com/tetherlb/tether/dataplane/channel"
)

// A unit of a cluster punts the TCP segments without SYN it has no flow
// for (channel.PuntMidFlow): after another unit failed, or the router
// changed its paths, the connection arrives here, and only the unit that
// carried it knows where it goes (seed S1 FIG. 28: the classifier
// queries the distributed atom manager and plumbs the route). The route
// atom answers (routes.go); without one, the answer is the one a unit
// without a cluster gives such a segment itself: Maglev's choice for
// tunnel and ipip, a reset for nat.

// FlowLookup asks the distributed atom manager where the connection k
// goes: the name of its VIP and the action that continues it in this
// unit's forwarder (Control.routeOf). found is false when no unit knows
// the connection.
type FlowLookup func(ctx context.Context, k *unit.FlowKey) (vip string, a unit.Action, found bool, err error)

// flowLookupTimeout bounds a FlowLookup: under the forwarder's hold of
// the segment (puntTimeout, a second), so that the answer comes while
// the segment still waits, and above the atom manager's two query
// rounds (atoms.DefaultQueryTimeout each).
const flowLookupTimeout = 700 * time.Millisecond

// maxLookups bounds the lookups in flight; a punt beyond them is
// answered by the fallback at once.
const maxLookups = 1024

// takeLookup takes one of the maxLookups slots for a lookup in flight,
// which the lookup's goroutine gives back (<-c.lookups); false when
// none is free.
func (c *Control) takeLookup() bool {
	select {
	case c.lookups <- struct{}{}:
		return true
	default:
		return false
	}
}

// midFlow answers a mid-flow punt: with the route the atom manager
// names (c.flowLookup), else as a unit without a cluster would have
// decided (midFlowFallback), else with a refusal. The lookup may ask
// other units, so it runs on a goroutine of its own, not on the one that
// reads the forwarder's messages. A punt of a VIP this process does not
// know (its IDs are older than the forwarder's) gets no answer: the
// segment waits out its hold, and the client's retransmission finds the
// IDs in step.
func (c *Control) midFlow(lk *fwdLink, pu *channel.Punt) {
	if pu.VIP == channel.NoVIP {
		c.midFlowReply(lk, pu)
		return
	}
	c.mu.Lock()
	vip, known := c.vipNames[pu.VIP]
	mode := c.vipMode(vip)
	lookup := c.flowLookup
	c.mu.Unlock()
	if !known || mode == 0 {
		c.count(func(s *unit.PuntStats) { s.Refused++ })
		return
	}
	worker, key, choice := pu.Worker, pu.Key, pu.Choice // pu's frame is the reader's buffer
	if lookup != nil && !c.takeLookup() {
		lookup = nil // too many in flight: the fallback answers
	}
	if lookup == nil {
		c.answerMidFlow(lk, worker, key, vip, mode, choice, "", unit.Action{}, false)
		return
	}
	go func() {
		defer func() { <-c.lookups }()
		ctx, cancel := context.WithTimeout(context.Background(), flowLookupTimeout)
		v, a, found, err := lookup(ctx, &key)
		cancel()
		if err != nil || !found {
			c.log.Debug().Err(err).Str("vip", vip).Str("key", routeKey(&key)).Bool("found", found).Msg("mid-flow lookup")
		}
		c.answerMidFlow(lk, worker, key, vip, mode, choice, v, a, found && err == nil)
	}()
}

// answerMidFlow sends the route for a mid-flow punt: the looked-up
// action when found names the punt's VIP, else the fallback's.
func (c *Control) answerMidFlow(lk *fwdLink, worker uint8, key unit.FlowKey, vip string, mode unit.Mode, choice uint32,
	found string, a unit.Action, ok bool) {
	fromAtom := ok && found == vip
	if !fromAtom {
		var b uint32
		b, ok = midFlowFallback(mode, choice)
		a = unit.Action{Backend: b}
	}
	r := channel.Route{Op: channel.RouteRefuse, Worker: worker, Key: key}
	if ok {
		r.Op, r.Action = channel.RouteAdd, a
	}
	if err := lk.route(&r); err != nil {
		return
	}
	if fromAtom && a.Mode == unit.ModeNAT {
		c.adoptNAT(worker, key, a)
	}
	c.count(func(s *unit.PuntStats) {
		switch {
		case !ok:
			s.MidFlowRefused++
		case fromAtom:
			s.MidFlow++
			s.MidFlowFound++
		default:
			s.MidFlow++
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

// midFlowReply answers a mid-flow punt of a nat reply to a SNAT address
// (a dead unit's, which the router now sends here): the connection is
// looked up by the reply's key, and its whole entry is routed under the
// client's key, which releases the held reply as the entry's peer. No
// atom, or no lookup (a unit outside a cluster never punts these): a
// refusal, which resets the backend's side as a unit that lost the
// connection does.
func (c *Control) midFlowReply(lk *fwdLink, pu *channel.Punt) {
	c.mu.Lock()
	lookup := c.replyLookup
	c.mu.Unlock()
	worker, key := pu.Worker, pu.Key
	refuse := func() {
		r := channel.Route{Op: channel.RouteRefuse, Worker: worker, Key: key}
		if lk.route(&r) == nil {
			c.count(func(s *unit.PuntStats) { s.MidFlowRefused++ })
		}
	}
	if lookup == nil {
		refuse()
		return
	}
	if !c.takeLookup() {
		refuse()
		return
	}
	go func() {
		defer func() { <-c.lookups }()
		ctx, cancel := context.WithTimeout(context.Background(), flowLookupTimeout)
		client, a, found, err := lookup(ctx, &key)
		cancel()
		if err != nil || !found {
			c.log.Debug().Err(err).Str("key", routeKey(&key)).Bool("found", found).Msg("mid-flow reply lookup")
			refuse()
			return
		}
		r := channel.Route{Op: channel.RouteAdd, Worker: worker, Key: client, Action: a}
		if lk.route(&r) == nil {
			c.adoptNAT(worker, client, a)
			c.count(func(s *unit.PuntStats) { s.MidFlow++; s.MidFlowFound++ })
		}
	}()
}

// adoptNAT records a nat connection this unit took over from another
// unit's atom. The forwarder sends no opening event for an entry given
// whole, so the inventory learns it here (a restarted forwarder gets it
// back), and its route atoms are added again with this unit as adder,
// later than the version it continues: the dead unit's versions are
// orphans that expire, and the connection must still be found when the
// router moves it again.
func (c *Control) adoptNAT(worker uint8, key unit.FlowKey, a unit.Action) {
	ev := []channel.FlowEvent{{Kind: channel.FlowOpened, Worker: worker, Key: key, Action: a}}
	c.inv.apply(ev)
	c.shareRoutes(ev)
}

// ReplyLookup finds a nat connection by a reply's key: its key on the
// client's side and its whole entry (Control.replyRouteOf).
type ReplyLookup func(ctx context.Context, reply *unit.FlowKey) (client unit.FlowKey, a unit.Action, found bool, err error)
