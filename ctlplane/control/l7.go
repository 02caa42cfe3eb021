package control

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/maphash"
	"math"
	mrand "math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/tetherlb/tether/api/healthpb"
	pb "github.com/tetherlb/tether/api/hostpb"
	"github.com/tetherlb/tether/api/unit"
	"github.com/tetherlb/tether/config"
	"github.com/tetherlb/tether/ctlplane/health"
	"github.com/tetherlb/tether/ctlplane/hosts"
	"github.com/tetherlb/tether/ctlplane/l7/acceptor"
	"github.com/tetherlb/tether/ctlplane/l7/request"
	"github.com/tetherlb/tether/ctlplane/l7/rules"
	"github.com/tetherlb/tether/dataplane/channel"
	"github.com/tetherlb/tether/dataplane/syncookie"
	"github.com/tetherlb/tether/tables/encap"
)

// l7Part is the control process's part of the l7 VIPs (seed S1, FIG. 32):
// an acceptor per VIP takes the connections the forwarder hands over
// packet by packet, reads each one's first request, and the rules with
// health and load choose its host; the connection then migrates to the
// host's agent over its stream, and a tunnel route carries the client's
// later packets there.
//
// The order of a migration is what makes it safe:
//  1. The connection gets a flow ID of the control process's own
//     (encap.FirstMigratedID and up, which no worker allocates), and
//     Migrate goes into the host's stream queue with the flow's mapping
//     (hosts.Server.Migrate: the Migrate is a numbered change, seq).
//  2. The route goes to the forwarder, a tunnel flow of that ID that
//     holds the client's packets (FlowHeld), with the acceptor's ACK of
//     the request (the answer to the packet that completed it) in the
//     same message, applied in that order; the acceptor forgets the
//     connection, leaving a tombstone for stray retransmissions.
//  4. The host recreates the connection, then holds the mapping and
//     acknowledges seq: the held packets go (RouteRelease, through
//     tunnels.go's pending acknowledgements), and the migration counts
//     as uploaded. A host that cannot take it says so (MigrateResult).
//
// Five host-stream messages per connection: the Migrate, its Ack, the
// end notice, the mapping's removal once the flow is gone, and its Ack
// (which under load rides on the next Migrate's).
//
// The first request decides the connection's host. A keep-alive
// connection's later requests go to the same host whatever the rules
// say of them (the connection lives in that host's kernel); a VIP that
// needs every request routed needs the request router (not built yet).
type l7Part struct {
	mu   sync.Mutex
	vips map[string]*l7VIP // by VIP name
	// migrations are the connections sent to hosts, by migration ID;
	// byKey finds them from a flow.
	migrations map[uint64]*migration
	byKey      map[unit.FlowKey]uint64
	nextID     uint64
	// nextFlow is the flow ID the last migration got.
	nextFlow uint32
	seed     maphash.Seed
	stats    unit.L7Stats
	buf      []byte
	// keysLink is the forwarder link the last SYN keys went on, and
	// keysSent how many VIPs' they were.
	keysLink *fwdLink
	keysSent int
	// moving holds the connections of other units being looked up, or
	// just routed, until when a segment of theirs that reaches the
	// acceptor is dropped rather than looked up again (unknownSegment).
	moving map[unit.FlowKey]time.Time
}

// movingHold is how long after its route a moved connection's segments
// that reached the acceptor before the route are dropped: they were
// punted before it, and a second route would make a second flow.
const movingHold = time.Second

// l7VIP is one l7 VIP's acceptor and rules, rebuilt when its settings
// change.
type l7VIP struct {
	cfg   config.VIP
	acc   *acceptor.Acceptor
	rules *rules.Set
	// proxyRule: the rules (by name) that send their connections to a
	// request router.
	proxyRule map[string]bool
}

// migration is a connection sent to a host: its route is held until the
// host answers, and removed when the connection ends there.
type migration struct {
	id   uint64
	key  unit.FlowKey
	host uint32
	flow uint32 // its flow ID, which its route and its host's mapping name
	seq  uint64 // the Migrate's, a numbered change of the host's set
	vip  string
	sent time.Time
	// uploaded: the host acknowledged the Migrate.
	uploaded bool
	// ended is when the host said the connection ended (zero while it
	// lives); its route goes endedLinger later.
	ended time.Time
}

// migrateTimeout bounds the wait for a host's acknowledgement of a
// Migrate: past it the route goes and the client's next packet is reset.
const migrateTimeout = 5 * time.Second

// endedLinger is how long the route of a connection that ended on its
// host stays: the host tells the unit when its socket closes, which is
// before the client's last segments (its FIN, the ACK of the host's
// FIN) have crossed; they must still reach the host, or the client
// retransmits into the acceptor's tombstone and the host waits in
// FIN_WAIT2. The forwarder's own aging (tcp_fin, tcp_closed) removes
// most such routes first.
const endedLinger = 5 * time.Second

func newL7Part() *l7Part {
	// Migration IDs start at a random point: a host may still report
	// the end of a connection an earlier control process migrated, and
	// that must not match one of this process's.
	// Flow IDs likewise: the hosts hold an earlier process's mappings
	// until the new one's resync replaces them.
	return &l7Part{vips: map[string]*l7VIP{}, migrations: map[uint64]*migration{}, byKey: map[unit.FlowKey]uint64{},
		seed: maphash.MakeSeed(), buf: make([]byte, 0, channel.MaxAnswer), nextID: mrand.Uint64() >> 1, moving: map[unit.FlowKey]time.Time{},
		nextFlow: encap.FirstMigratedID + mrand.Uint32N(math.MaxUint32-encap.FirstMigratedID)}
}

// syncL7 builds the rules of cfg's l7 VIPs, and their acceptors, keeping
// an acceptor whose limits did not change: its connections in progress
// and its cookie secrets stay, so that a reload (a weight, a rule)
// neither resets handshakes nor refuses their cookies. The
// configuration was checked, so compiling cannot fail but for a bug;
// such a VIP gets no acceptor and its packets go unanswered.
func (c *Control) syncL7(cfg *config.Config) error {
	c.l7part.mu.Lock()
	defer c.l7part.mu.Unlock()
	keep := map[string]*l7VIP{}
	var errs []error
	for i := range cfg.VIPs {
		v := &cfg.VIPs[i]
		if v.ModeValue() != unit.ModeL7 {
			continue
		}
		set, err := rules.Compile(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("vip %s: %w", v.Name, err))
			continue
		}
		proxy := map[string]bool{}
		for _, r := range v.L7.Rules {
			proxy[r.Name] = r.Proxy
		}
		lv := &l7VIP{cfg: *v, rules: set, proxyRule: proxy}
		if old := c.l7part.vips[v.Name]; old != nil && sameLimits(&old.cfg, v) {
			lv.acc = old.acc
		} else {
			limit := v.L7.MaxRequestBytes()
			// The MSS of an Ethernet MTU, less the family's headers: the
			// client sends its request segments to the unit, and the
			// flow-ID tunnel adds nothing on the way to the host.
			mss := 1460
			if v.Addr().Is6() {
				mss = 1440
			}
			if lv.acc, err = acceptor.New(acceptor.Config{
				// A segment of no connection may be of one another
				// unit carried (unknownSegment).
				AskUnknown: true,
				// The units of a cluster make and take the same
				// cookies.
				Shared:         c.cookieSecret(v),
				MSS:            mss,
				MaxRequest:     limit,
				RequestTimeout: v.L7.RequestTimeout,
				Complete:       func(d []byte) (int, int) { return request.Complete(d, limit) },
			}); err != nil {
				errs = append(errs, fmt.Errorf("vip %s: %w", v.Name, err))
				continue
			}
		}
		keep[v.Name] = lv
	}
	c.l7part.vips = keep
	return errors.Join(errs...)
}

// cookieSecret is the secret the units of this unit's cluster share for
// the l7 VIP v's SYN cookies (acceptor.Config.Shared), derived from the
// cluster key under the VIP's address and port; nil outside a cluster.
func (c *Control) cookieSecret(v *config.VIP) []byte {
	if c.cl.key == nil {
		return nil
	}
	m := hmac.New(sha256.New, c.cl.key)
	m.Write([]byte("tether l7 syn cookies " + netip.AddrPortFrom(v.Addr(), uint16(v.Port)).String()))
	return m.Sum(nil)
}

// sameLimits reports whether two l7 VIPs' acceptors would be configured
// alike (the address and port too: an acceptor's connections are the
// VIP's).
func sameLimits(a, b *config.VIP) bool {
	return a.Addr() == b.Addr() && a.Port == b.Port &&
		a.L7.MaxRequestBytes() == b.L7.MaxRequestBytes() && a.L7.RequestTimeout == b.L7.RequestTimeout
}

// acceptPunt hands a packet of an l7 VIP to its acceptor and answers the
// forwarder with the acceptor's packet (or nothing).
func (c *Control) acceptPunt(lk *fwdLink, pu *channel.Punt) {
	c.mu.Lock()
	vipName, known := c.vipNames[pu.VIP]
	c.mu.Unlock()
	l := c.l7part
	l.mu.Lock()
	defer l.mu.Unlock()
	v := l.vips[vipName]
	if !known || v == nil {
		l.stats.Refused++
		_ = c.sendAnswer(lk, pu, nil, nil)
		return
	}
	now := time.Now()
	reply, ev := v.acc.Handle(now, pu.Frame, l.buf[:0])
	if ev.Kind == acceptor.Unknown {
		c.unknownSegment(lk, pu, vipName, v, now)
		return
	}
	if ev.Kind != acceptor.Ready {
		_ = c.sendAnswer(lk, pu, reply, nil)
		return
	}
	m, r, answer := c.migrate(v, pu, &ev, now)
	if m == nil {
		_ = c.sendAnswer(lk, pu, answer, nil)
		return
	}
	// The route and the ACK of the request go in one message, the route
	// first: the flow holds the client's packets before the client can
	// send any after the ACK.
	if err := c.sendAnswer(lk, pu, reply, &r); err != nil {
		// The host may get the connection; the client is reset when
		// its next packet finds no route. The host's mapping goes.
		l.stats.RouteFailed++
		if _, err := c.hosts.Publish(m.host, nil, []uint32{m.flow}); err != nil {
			c.log.Warn().Err(err).Uint32("host", m.host).Msg("remove an unrouted migration's mapping")
		}
		return
	}
	v.acc.Forget(ev.Key, now)
	l.migrations[m.id] = m
	l.byKey[m.key] = m.id
	l.stats.Migrated++
	// Only now, after the route: the host's Ack releases the flow.
	if c.awaitMigration(m.host, m.seq, heldKey{channel.AnyWorker, m.key}, m.id) {
		// The host was quicker than this goroutine.
		m.uploaded = true
		l.stats.Uploaded++
		c.release(lk, []heldKey{{channel.AnyWorker, m.key}})
	}
}

// unknownSegment answers a segment of an l7 VIP that belongs to no
// connection the acceptor knows or made. In a cluster it may be of a
// connection another unit migrated (the router moved the client's
// packets here: that unit died, or the paths changed); the atom manager
// holds its route, as a tunnel flow's, and the segment goes on along it
// to the connection's host, as a tunnel VIP's mid-flow segment does
// (seed S1 FIG. 26 and 28). Otherwise, or when the lookup finds nothing
// for this VIP, the acceptor resets it (bad_cookie). The lookup may ask
// other units, so it runs on a goroutine of its own. Callers hold
// c.l7part.mu.
func (c *Control) unknownSegment(lk *fwdLink, pu *channel.Punt, vipName string, v *l7VIP, now time.Time) {
	l := c.l7part
	if until, ok := l.moving[pu.Key]; ok && now.Before(until) {
		_ = c.sendAnswer(lk, pu, nil, nil) // its first segment's lookup decides
		return
	}
	c.mu.Lock()
	lookup := c.flowLookup
	c.mu.Unlock()
	if lookup != nil && !c.takeLookup() {
		lookup = nil // too many in flight: the reset answers
	}
	if lookup == nil {
		_ = c.sendAnswer(lk, pu, v.acc.Reject(now, pu.Frame, l.buf[:0]), nil)
		return
	}
	if len(l.moving) >= 2*maxLookups {
		for k, until := range l.moving {
			if !now.Before(until) {
				delete(l.moving, k)
			}
		}
	}
	l.moving[pu.Key] = now.Add(flowLookupTimeout + movingHold)
	// pu's frame is the reader's buffer.
	p := channel.Punt{Worker: pu.Worker, ID: pu.ID, VIP: pu.VIP, Key: pu.Key, Frame: bytes.Clone(pu.Frame)}
	go func() {
		defer func() { <-c.lookups }()
		ctx, cancel := context.WithTimeout(context.Background(), flowLookupTimeout)
		found, a, ok, err := lookup(ctx, &p.Key)
		cancel()
		if err == nil && ok && found == vipName {
			r := channel.Route{Op: channel.RouteAdd, Worker: p.Worker, Key: p.Key, Action: a}
			// Under l.mu, as the reset below: a punt read after this
			// answer finds the connection counted and still held.
			l.mu.Lock()
			defer l.mu.Unlock()
			if c.sendAnswer(lk, &p, nil, &r) == nil {
				l.stats.MovedIn++
			}
			l.moving[p.Key] = time.Now().Add(movingHold)
			return
		}
		c.log.Debug().Err(err).Str("vip", vipName).Str("key", routeKey(&p.Key)).Bool("found", ok).Msg("an l7 segment of no connection here")
		l.mu.Lock()
		defer l.mu.Unlock()
		delete(l.moving, p.Key)
		var reply []byte
		if cur := l.vips[vipName]; cur != nil {
			reply = cur.acc.Reject(time.Now(), p.Frame, l.buf[:0])
		}
		_ = c.sendAnswer(lk, &p, reply, nil)
	}()
}

// sendAnswer answers pu with pkt (nothing: the frame is dropped), after
// route r when r is not nil.
func (c *Control) sendAnswer(lk *fwdLink, pu *channel.Punt, pkt []byte, r *channel.Route) error {
	a := channel.Answer{Worker: pu.Worker, ID: pu.ID, Packet: pkt}
	if r != nil {
		a.Route = *r
	}
	err := lk.conn.Send(channel.AppendAnswer(nil, lk.seq.Add(1), &a))
	if err != nil {
		c.log.Debug().Err(err).Msg("acceptor answer")
	}
	return err
}

// migrate decides the host of a connection whose first request is
// complete and sends it there. It returns the migration and the route
// of its flow, which the caller sends to the forwarder before it
// records the migration; or, when nothing can take the connection, no
// migration and the HTTP error to answer the client with. Callers hold
// c.l7part.mu.
func (c *Control) migrate(v *l7VIP, pu *channel.Punt, ev *acceptor.Event, now time.Time) (*migration, channel.Route, []byte) {
	l := c.l7part
	req, err := request.Parse(ev.Data[:ev.HeadLen])
	if err != nil {
		l.stats.BadRequests++
		return nil, channel.Route{}, v.acc.Answer(ev.Key, request.StatusOf(err), now)
	}
	cs := c.candidates(&v.cfg)
	hash := maphash.Comparable(l.seed, ev.Key)
	d := v.decide(&req, &cs, hash)
	choice, ok := d.choice, d.ok
	l.stats.ByRule = countRule(l.stats.ByRule, choice.Rule)
	if d.proxy {
		if !ok {
			l.stats.NoRouter++
			return nil, channel.Route{}, v.acc.Answer(ev.Key, 503, now)
		}
		l.stats.Proxied++
	}
	if d.notListening {
		l.stats.NotListening++
	}
	if !ok {
		l.stats.NoHost++
		return nil, channel.Route{}, v.acc.Answer(ev.Key, 503, now)
	}
	l.nextID++
	id := l.nextID
	host := cs.hostOf[choice.Key]
	mig := &pb.Migrate{Id: id, State: ev.State, Data: ev.Data}
	seq, err := c.migrateTo(host, mig)
	if err != nil {
		l.stats.HostDown++
		return nil, channel.Route{}, v.acc.Answer(ev.Key, 503, now)
	}
	r := channel.Route{Op: channel.RouteAdd, Worker: channel.AnyWorker, Key: pu.Key, Action: unit.Action{Backend: cs.ids[choice.Key]}}
	binary.BigEndian.PutUint32(r.Action.B[:4], mig.GetFlowId())
	m := &migration{id: id, key: pu.Key, host: host, flow: mig.GetFlowId(), seq: seq, vip: v.cfg.Name, sent: now}
	return m, r, nil
}

// decision is where a request's connection goes: choice (when ok), to a
// request router when proxy, and whether the chosen host said nothing
// there listens for the VIP.
type decision struct {
	choice       rules.Choice
	ok, proxy    bool
	notListening bool
}

// decide chooses the host for req among cs, preferring those whose hosts listen for the VIP: the rules choose
// among the listening hosts first; a request router takes the
// connection when the VIP says so, when the deciding rule does, or
// (migrate-or-proxy) when no listening host can; and only when that
// leaves nobody do the hosts that said nothing listens count, as a
// last resort (they may have started listening since), before 503.
func (v *l7VIP) decide(req *request.Request, cs *l7Candidates, hash uint64) decision {
	hosts, routers := cs.hosts, cs.routers
	lh, lr := cs.listening(hosts), cs.listening(routers)
	choice, ok := v.rules.Choose(req, lh, hash)
	handoff := v.cfg.L7.HandoffValue()
	if handoff == config.HandoffProxy || v.proxyRule[choice.Rule] || !ok && handoff == config.HandoffMigrateOrProxy {
		d := decision{proxy: true}
		i := rules.Pick(lr, hash)
		rs := lr
		if i < 0 {
			i, rs, d.notListening = rules.Pick(routers, hash), routers, true
		}
		if i >= 0 {
			d.choice, d.ok = rules.Choice{Index: i, Name: rs[i].Name, Key: rs[i].Key, Rule: choice.Rule}, true
		}
		d.notListening = d.notListening && d.ok
		return d
	}
	if ok {
		return decision{choice: choice, ok: true}
	}
	if len(lh) < len(hosts) {
		if last, ok := v.rules.Choose(req, hosts, hash); ok {
			return decision{choice: last, ok: true, notListening: true}
		}
	}
	return decision{choice: choice}
}

// listening is cands without those whose hosts said nothing listens.
func (cs *l7Candidates) listening(cands []rules.Candidate) []rules.Candidate {
	if len(cs.deaf) == 0 {
		return cands
	}
	out := make([]rules.Candidate, 0, len(cands))
	for _, c := range cands {
		if !cs.deaf[c.Key] {
			out = append(out, c)
		}
	}
	return out
}

// migrateTo sends mig to host with a flow ID of the control process's
// that the host does not hold, and returns the Migrate's seq. Callers
// hold c.l7part.mu.
func (c *Control) migrateTo(host uint32, mig *pb.Migrate) (uint64, error) {
	l := c.l7part
	for range 8 {
		if l.nextFlow++; l.nextFlow < encap.FirstMigratedID {
			l.nextFlow = encap.FirstMigratedID
		}
		mig.FlowId = l.nextFlow
		seq, err := c.hosts.Migrate(host, mig)
		if !errors.Is(err, hosts.ErrFlowIDTaken) {
			return seq, err
		}
	}
	return 0, fmt.Errorf("no free flow ID for host %d", host)
}

func countRule(m map[string]uint64, rule string) map[string]uint64 {
	if m == nil {
		m = map[string]uint64{}
	}
	m[rule]++
	return m
}

// l7Candidates are the hosts an l7 VIP's connections may migrate to
// now: its backends the running configuration lets take new
// connections, whose host has a live stream, with their weights and the
// URL patterns their hosts report; the request routers among them
// apart. ids maps a backend to its forwarder ID, hostOf to its host;
// deaf are those whose hosts said nothing listens for the VIP there
// (hosts.Server.Listening).
type l7Candidates struct {
	hosts, routers []rules.Candidate
	ids, hostOf    map[unit.BackendKey]uint32
	deaf           map[unit.BackendKey]bool
}

// candidates are file's l7Candidates.
func (c *Control) candidates(file *config.VIP) l7Candidates {
	c.mu.Lock()
	var rv *config.VIP
	for i := range c.running.VIPs {
		if c.running.VIPs[i].Name == file.Name {
			rv = &c.running.VIPs[i]
		}
	}
	backendIDs := c.ids.Backends
	c.mu.Unlock()
	var cs l7Candidates
	if rv == nil || c.hosts == nil {
		return cs
	}
	urls := c.urlPatterns(rv)
	vip := netip.AddrPortFrom(rv.Addr(), uint16(rv.Port))
	cs.ids = make(map[unit.BackendKey]uint32, len(rv.Backends))
	cs.hostOf = make(map[unit.BackendKey]uint32, len(rv.Backends))
	for i := range rv.Backends {
		b := &rv.Backends[i]
		key := unit.BackendKey{VIP: rv.Name, Backend: b.Name}
		id, known := backendIDs[key]
		host, up, ok := c.hosts.HostOf(b.Addr())
		if !known || !ok || !up || b.StateValue() != unit.StateActive {
			continue
		}
		cs.ids[key], cs.hostOf[key] = id, host
		if !c.hosts.Listening(host, vip) {
			if cs.deaf == nil {
				cs.deaf = map[unit.BackendKey]bool{}
			}
			cs.deaf[key] = true
		}
		// The hosts report their applications at the VIP's port (the
		// tunnel keeps the client's destination port).
		cand := rules.Candidate{Name: b.Name, Key: key, Weight: uint32(b.WeightValue()),
			URLs: urls[netip.AddrPortFrom(b.Addr(), uint16(rv.Port)).String()]}
		if rv.L7 != nil && rv.L7.IsRouter(b.Name) {
			cs.routers = append(cs.routers, cand)
		} else {
			cs.hosts = append(cs.hosts, cand)
		}
	}
	return cs
}

// urlPatterns are the URL patterns the hosts report for v's endpoints
// (rows of v's application with a url), by endpoint; a failing row's
// pattern does not count.
func (c *Control) urlPatterns(v *config.VIP) map[string][]string {
	vip := netip.AddrPortFrom(v.Addr(), uint16(v.Port)).String()
	out := map[string][]string{}
	c.hl.Read(func(cache *health.Cache) {
		for _, typ := range cache.Types() {
			proto, rest, _ := strings.Cut(typ, " ")
			tv, url, _ := strings.Cut(rest, " ")
			if url == "" || tv != vip || proto != v.Protocol && proto != "http" {
				continue
			}
			for _, e := range cache.OfType(typ) {
				if e.Row.GetHealth() == healthpb.Health_HEALTH_FAILING {
					continue
				}
				ep := e.Row.GetApp().GetEndpoint()
				out[ep] = append(out[ep], e.Row.GetApp().GetUrl())
			}
		}
	})
	return out
}

// migrationsTaken counts the migrations host acknowledged: their
// connections live there.
func (c *Control) migrationsTaken(host uint32, ids []uint64) {
	l := c.l7part
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, id := range ids {
		if m := l.migrations[id]; m != nil && m.host == host && !m.uploaded {
			m.uploaded = true
			l.stats.Uploaded++
		}
	}
}

// onMigrateResult handles a host's report that a migration failed (in
// the upload, or in the hand-off after it was acknowledged): the host
// has reset the client, or the acceptor does; the route goes.
func (c *Control) onMigrateResult(host uint32, r *pb.MigrateResult) {
	l := c.l7part
	l.mu.Lock()
	m := l.migrations[r.GetId()]
	if m == nil || m.host != host {
		l.stats.UnknownAnswers++
		l.mu.Unlock()
		return
	}
	l.stats.UploadFailed++
	owned := l.forget(m)
	if owned {
		l.refuse(m)
	}
	l.mu.Unlock()
	c.log.Warn().Uint32("host", host).Str("vip", m.vip).Str("error", r.GetError()).Msg("a host could not take a migrated connection")
	if owned {
		c.dropRoute(m)
	}
}

// onMigrationEnded removes the route of a migrated connection that ended
// on its host.
func (c *Control) onMigrationEnded(host uint32, e *pb.MigrationEnded) {
	l := c.l7part
	l.mu.Lock()
	m := l.migrations[e.GetId()]
	if m == nil || m.host != host || !sameTuple(&m.key, e.GetTuple()) {
		l.stats.UnknownAnswers++
		l.mu.Unlock()
		return
	}
	if m.ended.IsZero() {
		l.stats.Ended++
		m.ended = time.Now()
	}
	l.mu.Unlock()
}

// migratedFlowsExpired forgets the migrations whose flows the
// forwarder aged out after their hosts took them: without its route
// the connection cannot go on through this unit, and the host's end
// notice may never come (lost with its stream or its agent), while
// nothing else would take such a record out of the table. A migration
// not yet acknowledged is left to migrateTimeout. The expired flow must
// be the migration's own, by its flow ID in the inventory (which the
// events have not changed yet): a client reusing the tuple makes a new
// connection whose migration may already be recorded when the old
// flow's expiry comes.
func (c *Control) migratedFlowsExpired(events []channel.FlowEvent) {
	l := c.l7part
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.byKey) == 0 {
		return
	}
	for i := range events {
		e := &events[i]
		if e.Kind != channel.FlowExpired {
			continue
		}
		id, ok := l.byKey[e.Key]
		if !ok {
			continue
		}
		m := l.migrations[id]
		if m == nil || !m.uploaded {
			continue
		}
		if f, ok := c.inv.get(e.Key); ok && flowID(&f.Action) == m.flow {
			if m.ended.IsZero() {
				l.stats.AgedOut++
			}
			l.forget(m)
		}
	}
}

// refuse has the acceptor reset the client of a migration that failed:
// a host that refused the connection before its socket existed, or
// never answered, has not reset it. Callers hold l.mu.
func (l *l7Part) refuse(m *migration) {
	if v := l.vips[m.vip]; v != nil {
		k := acceptor.Key{Client: m.key.SrcAddr(), VIP: m.key.DstAddr(), ClientPort: m.key.SrcPort, VIPPort: m.key.DstPort}
		v.acc.Refuse(k, time.Now())
	}
}

// sameTuple reports whether a host's tuple names the flow k.
func sameTuple(k *unit.FlowKey, t *pb.Tuple) bool {
	client, _ := netip.AddrFromSlice(t.GetClient())
	vip, _ := netip.AddrFromSlice(t.GetVip())
	return client == k.SrcAddr() && vip == k.DstAddr() &&
		t.GetClientPort() == uint32(k.SrcPort) && t.GetVipPort() == uint32(k.DstPort)
}

// forget drops a migration from the table and reports whether it still
// owned its flow's tuple: a client that reuses the tuple (its port)
// while the route of its ended connection lingers makes a new
// connection, whose migration and route the old one's end must not
// touch. Callers hold l.mu.
func (l *l7Part) forget(m *migration) bool {
	delete(l.migrations, m.id)
	if l.byKey[m.key] != m.id {
		return false
	}
	delete(l.byKey, m.key)
	return true
}

func (c *Control) dropRoute(m *migration) {
	lk, err := c.current()
	if err != nil {
		return
	}
	r := channel.Route{Op: channel.RouteDelete, Worker: channel.AnyWorker, Key: m.key}
	if err := lk.route(&r); err != nil {
		c.log.Debug().Err(err).Msg("remove a migrated connection's route")
	}
}

// runL7 expires the acceptors' state and late migrations about once a
// second until ctx ends.
func (c *Control) runL7(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			c.expireL7(now)
			if lk, err := c.current(); err == nil {
				c.pushSYNKeys(lk, now, false)
			}
		}
	}
}

// pushSYNKeys sends the forwarder the keys its workers answer the l7
// VIPs' SYNs with (channel.SYNKey): always when all is true (a forwarder
// that just connected, a reload that may have replaced acceptors or
// renumbered VIPs), else only when an acceptor's keys rotated. The
// workers hold the current epoch's key and the next one's, so keys sent
// within an epoch of a rotation are never late: about once a second is
// plenty. It sends under l7part.mu, so that sets computed apart never
// cross on the way.
func (c *Control) pushSYNKeys(lk *fwdLink, now time.Time, all bool) {
	l := c.l7part
	l.mu.Lock()
	defer l.mu.Unlock()
	// The IDs are read under l7part.mu (which comes before c.mu, as in
	// migrate), so that the set sent last is of the latest IDs.
	c.mu.Lock()
	ids := c.ids.VIPs
	c.mu.Unlock()
	keys := make([]channel.SYNKey, 0, len(l.vips))
	for name, v := range l.vips {
		k, changed := v.acc.SYNKeys(now)
		all = all || changed
		id, known := ids[name]
		if !known {
			continue
		}
		sk := channel.SYNKey{VIP: id, Addr: v.cfg.Addr(), Port: uint16(v.cfg.Port), Every: uint64(k.Every), Epoch: k.Cur.Epoch,
			Cur: k.Cur.Raw, Next: k.Next.Raw, HasNext: k.Next.Block != nil, TSOffset: k.TSOffset,
			MSS: k.Params.MSS, WScale: k.Params.WScale, Window: k.Params.Window}
		keys = append(keys, sk)
	}
	// A forwarder holds no keys but those sent on its connection: an
	// empty set it would not miss is not sent.
	if !all || len(keys) == 0 && (l.keysLink != lk || l.keysSent == 0) {
		return
	}
	if err := lk.conn.Send(channel.AppendSYNKeys(nil, lk.seq.Add(1), keys)); err != nil {
		c.log.Debug().Err(err).Msg("send SYN keys")
		return
	}
	l.keysLink, l.keysSent = lk, len(keys)
	l.stats.SYNKeysSent++
}

// adoptSYNKeys gives the acceptors the SYN cookie keys a running
// forwarder's workers hold, before this process sends its own: the
// forwarder was adopted, and its keys are the previous control
// process's, with which the workers went on answering SYNs. Without
// them every handshake made before this process connected would be
// reset when its request came (the cookie not this acceptor's). A VIP
// whose acceptor cannot take its keys (the VIP's settings changed, or
// an epoch went by) keeps its own, and those clients are reset.
func (c *Control) adoptSYNKeys(ctx context.Context, lk *fwdLink) {
	c.l7part.mu.Lock()
	none := len(c.l7part.vips) == 0
	c.l7part.mu.Unlock()
	if none || c.cl.key != nil {
		return // in a cluster every process derives the same keys
	}
	var reply unit.SYNKeysReply
	if err := lk.call(ctx, unit.CallSYNKeys, nil, &reply); err != nil {
		c.log.Warn().Err(err).Msg("the forwarder's SYN cookie keys could not be read: handshakes it answered before are reset")
		return
	}
	if len(reply.Keys) == 0 {
		return
	}
	held, err := channel.DecodeSYNKeys(reply.Keys)
	if err != nil {
		c.log.Warn().Err(err).Msg("the forwarder's SYN cookie keys")
		return
	}
	now := time.Now()
	l := c.l7part
	l.mu.Lock()
	defer l.mu.Unlock()
	for name, v := range l.vips {
		for i := range held {
			h := &held[i]
			if h.Addr != v.cfg.Addr() || h.Port != uint16(v.cfg.Port) {
				continue
			}
			err := v.acc.Adopt(acceptorKeys(h), now)
			if err != nil {
				c.log.Warn().Str("vip", name).Err(err).Msg("SYN cookie keys of the previous control process not taken: handshakes it made are reset")
			} else {
				l.stats.SYNKeysAdopted++
				c.log.Info().Str("vip", name).Msg("took the SYN cookie keys of the previous control process")
			}
		}
	}
}

// acceptorKeys are the keys h as an acceptor holds them.
func acceptorKeys(h *channel.SYNKey) acceptor.SYNKeys {
	k := acceptor.SYNKeys{Every: time.Duration(h.Every), TSOffset: h.TSOffset,
		Params: syncookie.Params{MSS: h.MSS, WScale: h.WScale, Window: h.Window}}
	// NewKey fails only for a key of the wrong size, which a decoded
	// one never is; a key it did not make stays none.
	k.Cur, _ = syncookie.NewKey(h.Epoch, h.Cur)
	if h.HasNext {
		k.Next, _ = syncookie.NewKey(h.Epoch+1, h.Next)
	}
	return k
}

// expireL7 drops acceptor state past its time and gives up on hosts that
// never answered a Migrate.
func (c *Control) expireL7(now time.Time) {
	l := c.l7part
	l.mu.Lock()
	for _, v := range l.vips {
		v.acc.Expire(now)
	}
	var late []*migration
	for _, m := range l.migrations {
		switch {
		case !m.ended.IsZero() && now.Sub(m.ended) > endedLinger:
		case !m.uploaded && now.Sub(m.sent) > migrateTimeout:
			l.stats.UploadTimeouts++
		default:
			continue
		}
		late = append(late, m)
	}
	var drop []*migration
	for _, m := range late {
		if !l.forget(m) {
			continue // a newer connection has the flow's tuple, and its route
		}
		if m.ended.IsZero() {
			l.refuse(m)
		}
		drop = append(drop, m)
	}
	l.mu.Unlock()
	for _, m := range drop {
		c.dropRoute(m)
	}
}

// L7 is the l7 view for the admin API.
func (c *Control) L7(context.Context) unit.L7View {
	l := c.l7part
	l.mu.Lock()
	defer l.mu.Unlock()
	v := unit.L7View{Stats: l.stats, VIPs: []unit.L7Acceptor{}}
	for _, m := range l.migrations {
		if m.ended.IsZero() {
			v.Live++
		}
	}
	if l.stats.ByRule != nil {
		v.Stats.ByRule = make(map[string]uint64, len(l.stats.ByRule))
		for k, n := range l.stats.ByRule {
			v.Stats.ByRule[k] = n
		}
	}
	for name, lv := range l.vips {
		s := lv.acc.Stats()
		v.VIPs = append(v.VIPs, unit.L7Acceptor{VIP: name, Conns: s.Conns, Bytes: s.BytesHeld, MaxBytes: lv.acc.Bound(), Counters: s.Counters})
	}
	slices.SortFunc(v.VIPs, func(a, b unit.L7Acceptor) int { return strings.Compare(a.VIP, b.VIP) })
	return v
}
