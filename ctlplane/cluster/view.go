package cluster

import (
	"fmt"
	"maps"
	"math/bits"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/tetherlb/tether/api/unit"
)

// delegate publishes this unit's metadata; the unit gossips nothing
// else yet (later slices will).
type delegate Node

// NodeMeta implements memberlist.Delegate.NodeMeta.
func (d *delegate) NodeMeta(limit int) []byte {
	b := d.self.encode()
	if len(b) > limit {
		// Cannot happen (metaMax is far under memberlist's limit), but
		// memberlist panics on oversized metadata.
		return nil
	}
	return b
}

// NotifyMsg implements memberlist.Delegate.NotifyMsg. The one message
// is a unit's notice that it is leaving (leave.go).
func (d *delegate) NotifyMsg(b []byte) { (*Node)(d).leaving(b) }

// GetBroadcasts implements memberlist.Delegate.GetBroadcasts.
func (d *delegate) GetBroadcasts(int, int) [][]byte { return nil }

// LocalState implements memberlist.Delegate.LocalState.
func (d *delegate) LocalState(bool) []byte { return nil }

// MergeRemoteState implements memberlist.Delegate.MergeRemoteState.
func (d *delegate) MergeRemoteState([]byte, bool) {}

// events tracks the members (memberlist.EventDelegate) and refuses
// those whose metadata is bad (memberlist.AliveDelegate).
type events Node

var (
	_ memberlist.Delegate      = (*delegate)(nil)
	_ memberlist.EventDelegate = (*events)(nil)
	_ memberlist.AliveDelegate = (*events)(nil)
)

// NotifyAlive implements memberlist.AliveDelegate: an alive message
// whose metadata does not parse is ignored, so its node never becomes a
// member (and one already a member stays as it was until it fails). It
// is asked for every alive message, gossiped or merged at a join, so the
// count is of messages, not of nodes.
func (e *events) NotifyAlive(n *memberlist.Node) error {
	if _, err := parseMeta(n.Meta); err != nil {
		(*Node)(e).refuse(RefusedMeta, fmt.Sprintf("member %q at %s refused: %v", n.Name, n.Address(), err))
		return err
	}
	return nil
}

// NotifyJoin implements memberlist.EventDelegate.NotifyJoin: a node
// joined, or came back after it was declared dead or left.
func (e *events) NotifyJoin(n *memberlist.Node) {
	m, back := e.update(n, unit.MemberAlive, func(ev *unit.MemberEvents) { ev.Joins++ })
	e.log.Info().Str("member", m.Name).Str("address", m.Address).Str("boot", fmt.Sprintf("%016x", m.Boot)).
		Bool("back", back).Msg("cluster member joined")
}

// NotifyLeave implements memberlist.EventDelegate.NotifyLeave: a node
// left gracefully or was declared dead. memberlist's Node does not say
// which (its State is stale there: v0.7.0 keeps the state in a field
// that shadows it), so a unit that leaves says so first (leave.go).
func (e *events) NotifyLeave(n *memberlist.Node) {
	state, count := unit.MemberDead, func(ev *unit.MemberEvents) { ev.Fails++ }
	if (*Node)(e).left(n) {
		state, count = unit.MemberLeft, func(ev *unit.MemberEvents) { ev.Leaves++ }
	}
	m, _ := e.update(n, state, count)
	ev := e.log.Info()
	if state == unit.MemberDead {
		ev = e.log.Warn()
	}
	ev.Str("member", m.Name).Str("address", m.Address).Str("state", state).Msg("cluster member gone")
}

// NotifyUpdate implements memberlist.EventDelegate.NotifyUpdate: a
// node's metadata changed.
func (e *events) NotifyUpdate(n *memberlist.Node) {
	m, _ := e.update(n, unit.MemberAlive, func(ev *unit.MemberEvents) { ev.Updates++ })
	e.log.Info().Str("member", m.Name).Str("boot", fmt.Sprintf("%016x", m.Boot)).Msg("cluster member updated")
}

// update records n in state, counts the event unless n is this unit,
// and calls OnChange. It returns the member and whether it was known.
func (e *events) update(n *memberlist.Node, state string, count func(*unit.MemberEvents)) (unit.Member, bool) {
	self := n.Name == e.opts.Name
	ip, _ := netip.AddrFromSlice(n.Addr)
	e.mu.Lock()
	m, known := e.members[n.Name]
	if !known {
		m = &unit.Member{Name: n.Name, Self: self}
		e.members[n.Name] = m
	}
	if m.State != state {
		m.State, m.Since = state, time.Now()
	}
	if known {
		m.Updates++
	}
	m.Address = netip.AddrPortFrom(ip.Unmap(), n.Port).String()
	if md, err := parseMeta(n.Meta); err == nil {
		m.Boot, m.Protocol, m.TunnelSources = md.boot, md.version, md.sources()
		m.Atoms = netip.AddrPortFrom(ip.Unmap(), md.atoms).String()
	}
	if !self {
		count(&e.events)
	}
	(*Node)(e).forgetDepartedLocked()
	out := *m
	out.TunnelSources = slices.Clone(m.TunnelSources)
	e.mu.Unlock()
	if e.opts.OnChange != nil {
		e.opts.OnChange(out)
	}
	return out, known
}

// forgetDepartedLocked drops the longest-departed members beyond
// maxDeparted; callers hold mu.
func (n *Node) forgetDepartedLocked() {
	if len(n.members) <= maxDeparted {
		return
	}
	var gone []*unit.Member
	for _, m := range n.members {
		if m.State == unit.MemberDead || m.State == unit.MemberLeft {
			gone = append(gone, m)
		}
	}
	slices.SortFunc(gone, func(a, b *unit.Member) int { return a.Since.Compare(b.Since) })
	for _, m := range gone[:max(0, len(n.members)-maxDeparted)] {
		delete(n.members, m.Name)
	}
}

// refuse counts refused traffic, logging the first of each reason and
// then ever more rarely (at counts that are powers of two): a stranger
// may send a lot.
func (n *Node) refuse(reason, msg string) {
	n.mu.Lock()
	n.refused[reason]++
	c := n.refused[reason]
	n.mu.Unlock()
	ev := n.log.Debug()
	if bits.OnesCount64(c) == 1 {
		ev = n.log.Warn()
	}
	ev.Str("reason", reason).Uint64("refused", c).Msg("cluster: " + msg)
}

// View returns the members as this unit sees them, sorted by name.
func (n *Node) View() unit.MembersView {
	// Suspicion raises no event: it is read from memberlist's own list.
	// Whatever takes memberlist's lock (Members, LocalNode) runs before
	// mu is taken: memberlist calls the events delegate holding its
	// lock, and the delegate takes mu.
	suspect := map[string]bool{}
	for _, m := range n.ml.Members() {
		suspect[m.Name] = m.State == memberlist.StateSuspect
	}
	addr := n.Address()
	now := time.Now()
	n.mu.Lock()
	defer n.mu.Unlock()
	v := unit.MembersView{Enabled: true, Name: n.opts.Name, Address: addr, Boot: n.self.boot,
		Members: make([]unit.Member, 0, len(n.members)), Events: n.events, Refused: maps.Clone(n.refused)}
	for _, m := range n.members {
		s, listed := suspect[m.Name]
		switch {
		case !listed:
		case s && m.State == unit.MemberAlive:
			m.State, m.Since = unit.MemberSuspect, now
		case !s && m.State == unit.MemberSuspect:
			m.State, m.Since = unit.MemberAlive, now
		}
		out := *m
		out.TunnelSources = slices.Clone(m.TunnelSources)
		v.Members = append(v.Members, out)
	}
	slices.SortFunc(v.Members, func(a, b unit.Member) int { return strings.Compare(a.Name, b.Name) })
	return v
}
