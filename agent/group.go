package agent

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"math"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"

	pb "github.com/tetherlb/tether/api/healthpb"
)

// group aggregates heartbeats among the hosts of a group (design S1,
// FIG. 16). Membership and failure detection come from
// hashicorp/memberlist (SWIM gossip). The leader is the live member with
// the lowest host ID: every member computes it from its own view, so
// there is no election protocol to get wrong, and while views disagree
// two members may both act as leader, which only means the units hear
// some heartbeats twice. Members send their heartbeats to the leader; the
// leader sends one consolidated heartbeat per unit (aggregate mode) or
// only hellos and heartbeats marked forwarded, vouching for the rest by
// listing them (membership mode). Row changes, snapshots and goodbyes
// always go directly between host and unit.
//
// A leader speaks only for itself: it relays its members' heartbeats as
// the frames they signed (it holds no key but its own, so it cannot
// change them), and a unit lets it vouch for a member only while that
// member's own latest heartbeat names it as its leader.
type group struct {
	a  *Agent
	ml *memberlist.Memberlist

	stop, done chan struct{}
	logs       *io.PipeWriter

	mu      sync.Mutex
	members map[uint32]*member // live members other than this host
}

type member struct {
	addr netip.AddrPort // its agent's UDP address
	// last is its latest heartbeat frame, as it signed it, not relayed
	// yet (aggregate mode): a frame relayed twice is a replay to units.
	last   []byte
	lastAt time.Time
	// hello: it joined and its first heartbeat has not been forwarded
	// yet; forward: a heartbeat frame the leader passes on at its next
	// beat (membership mode).
	hello   bool
	forward []byte
}

// startGroup joins the group.
func startGroup(a *Agent) (*group, error) {
	g := &group{a: a, members: map[uint32]*member{}}
	bind, _ := netip.ParseAddrPort(a.cfg.Group.Bind)
	mc := memberlist.DefaultLANConfig()
	mc.Name = fmt.Sprintf("host-%d", a.host)
	mc.BindAddr, mc.BindPort = bind.Addr().String(), int(bind.Port())
	mc.AdvertiseAddr, mc.AdvertisePort = mc.BindAddr, mc.BindPort
	mc.Delegate = (*groupDelegate)(g)
	mc.Events = (*groupEvents)(g)
	g.logs = logWriter(a)
	mc.LogOutput = g.logs
	if a.groupKey != nil {
		// Gossip is encrypted and authenticated with a key derived from
		// the group's secret: a stranger can neither join nor read it.
		k := sha256.Sum256(append([]byte("tether-agent group "), a.groupKey...))
		mc.SecretKey = k[:]
	}
	ml, err := memberlist.Create(mc)
	if err != nil {
		return nil, fmt.Errorf("group.bind: %q: %w", a.cfg.Group.Bind, err)
	}
	g.ml = ml
	g.stop = make(chan struct{})
	g.done = make(chan struct{})
	go g.keepJoining()
	a.log.Info().Str("bind", a.cfg.Group.Bind).Str("mode", a.cfg.Group.Mode).Msg("group started")
	return g, nil
}

// keepJoining joins the configured members, and again whenever this host
// finds itself alone: hosts start in any order, and a host that came up
// before the others (or was cut off from all of them) must not stay a
// group of one.
func (g *group) keepJoining() {
	defer close(g.done)
	join := g.a.cfg.Group.Join
	wait := 200 * time.Millisecond
	warned := false
	for {
		if len(join) > 0 && g.ml.NumMembers() <= 1 {
			if _, err := g.ml.Join(join); err != nil {
				if !warned {
					g.a.log.Warn().Err(err).Strs("join", join).Msg("group: no member reachable yet; retrying")
					warned = true
				}
				wait = min(wait*2, 5*time.Second)
			} else {
				wait, warned = 200*time.Millisecond, false
			}
		}
		select {
		case <-g.stop:
			return
		case <-time.After(wait):
		}
	}
}

func (g *group) leave() {
	close(g.stop)
	<-g.done
	g.ml.Leave(time.Second)
	g.ml.Shutdown()
	g.logs.Close()
}

// Leader returns the group's leader as this host sees it.
func (g *group) Leader() uint32 {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.leaderLocked()
}

func (g *group) leaderLocked() uint32 {
	l := g.a.host
	for id := range g.members {
		l = min(l, id)
	}
	return l
}

// Members returns the live members other than this host, sorted.
func (g *group) Members() []uint32 {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.memberIDs()
}

func (g *group) memberIDs() []uint32 {
	out := make([]uint32, 0, len(g.members))
	for id := range g.members {
		out = append(out, id)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// route sends this host's heartbeat the group's way: to the leader, or,
// as the leader, to the units with the members' heartbeats. It returns
// false when the heartbeat should go to the units directly.
func (g *group) route(hb *pb.Heartbeat) bool {
	cfg := &g.a.cfg.Group
	g.mu.Lock()
	leader := g.leaderLocked()
	if leader != g.a.host {
		m := g.members[leader]
		g.mu.Unlock()
		if cfg.Mode == ModeMembership && g.a.beats%uint64(cfg.ForwardEvery) == 1 {
			hb.Forwarded = true
		}
		// This host's consent that the leader vouch for it, until three
		// forwarded heartbeats in a row are lost.
		hb.Leader = leader
		hb.VouchMs = uint32(min(3*int64(cfg.ForwardEvery)*int64(hb.GetIntervalMs()), math.MaxUint32))
		g.a.send(&pb.Envelope{Body: &pb.Envelope_Heartbeat{Heartbeat: hb}}, false, m.addr)
		return true
	}
	agg := &pb.Aggregate{Leader: g.a.host, Own: hb}
	now := time.Now()
	if cfg.Mode == ModeMembership {
		hb.Members = g.memberIDs()
	}
	for _, id := range g.memberIDs() {
		m := g.members[id]
		switch {
		case cfg.Mode == ModeAggregate && m.last != nil && now.Sub(m.lastAt) < 3*g.a.cfg.Heartbeat.Interval:
			agg.Frames = append(agg.Frames, m.last)
			m.last = nil
		case cfg.Mode == ModeMembership && m.forward != nil:
			agg.Frames = append(agg.Frames, m.forward)
			m.forward = nil
		}
	}
	g.mu.Unlock()
	g.a.toUnits(&pb.Envelope{Body: &pb.Envelope_Aggregate{Aggregate: agg}}, cfg.Compress)
	return true
}

// memberBeat takes a member's heartbeat frame at the leader; hb is what
// the frame says, unchecked, used only to choose what to relay.
func (g *group) memberBeat(hb *pb.Heartbeat, frame []byte, src netip.AddrPort) {
	g.mu.Lock()
	defer g.mu.Unlock()
	m := g.members[hb.GetHost()]
	if m == nil || m.addr.Addr() != src.Addr() {
		return // not a member this host knows: not ours to relay
	}
	frame = bytes.Clone(frame)
	m.last, m.lastAt = frame, time.Now()
	if m.hello || hb.GetForwarded() {
		m.forward, m.hello = frame, false
	}
}

// groupDelegate publishes this agent's UDP address in its node meta.
type groupDelegate group

func (d *groupDelegate) NodeMeta(int) []byte {
	return []byte(fmt.Sprintf("%d %s", d.a.host, d.a.Addr()))
}
func (d *groupDelegate) NotifyMsg([]byte)                {}
func (d *groupDelegate) GetBroadcasts(int, int) [][]byte { return nil }
func (d *groupDelegate) LocalState(bool) []byte          { return nil }
func (d *groupDelegate) MergeRemoteState([]byte, bool)   {}

// parseMeta reads a node's meta: "<host id> <address:port>".
func parseMeta(b []byte) (uint32, netip.AddrPort, bool) {
	id, addr, ok := strings.Cut(string(b), " ")
	n, err := strconv.ParseUint(id, 10, 32)
	ap, err2 := netip.ParseAddrPort(addr)
	if !ok || err != nil || err2 != nil || n == 0 {
		return 0, netip.AddrPort{}, false
	}
	return uint32(n), ap, true
}

// groupEvents tracks membership.
type groupEvents group

func (e *groupEvents) NotifyJoin(n *memberlist.Node) {
	id, addr, ok := parseMeta(n.Meta)
	if !ok || id == e.a.host {
		return
	}
	if !addr.Addr().IsValid() || addr.Addr().IsUnspecified() {
		addr = netip.AddrPortFrom(netip.AddrFrom16([16]byte(n.Addr.To16())).Unmap(), addr.Port())
	}
	e.mu.Lock()
	e.members[id] = &member{addr: addr, hello: true}
	e.mu.Unlock()
	e.a.log.Info().Uint32("host", id).Str("address", addr.String()).Msg("group: member joined")
}

func (e *groupEvents) NotifyLeave(n *memberlist.Node) {
	id, _, ok := parseMeta(n.Meta)
	if !ok || id == e.a.host {
		return
	}
	// No goodbye on its behalf: a leader speaks only for itself. A
	// member that stops cleanly says goodbye itself; one that died ages
	// out at the units (its consent to be vouched for runs out).
	e.mu.Lock()
	delete(e.members, id)
	e.mu.Unlock()
	e.a.log.Info().Uint32("host", id).Msg("group: member left")
}

func (e *groupEvents) NotifyUpdate(n *memberlist.Node) { e.NotifyJoin(n) }

// logWriter turns memberlist's log lines into debug records until it is
// closed.
func logWriter(a *Agent) *io.PipeWriter {
	r, w := io.Pipe()
	go func() {
		s := bufio.NewScanner(r)
		for s.Scan() {
			a.log.Debug().Str("part", "memberlist").Msg(s.Text())
		}
	}()
	return w
}
