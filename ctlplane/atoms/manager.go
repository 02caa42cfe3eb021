package atoms

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"

	"github.com/tetherlb/tether/api/atompb"
	"github.com/tetherlb/tether/api/unit"
)

// Member is a live unit as the manager needs it.
type Member struct {
	Name string
	// Boot is its boot ID: a new one is a new life, which holds
	// nothing.
	Boot uint64
	// Addr is its atom stream's address:port.
	Addr string
}

// Options configure a Manager.
type Options struct {
	// Self is this unit (Addr unused).
	Self Member
	// Level is the replication level: how many members besides its
	// adder hold an atom (0, 1, 2…), or Full.
	Level int
	// ZombieTime is how long a deleted atom stays as a zombie; default
	// DefaultZombieTime.
	ZombieTime time.Duration
	// CacheTime is how long an atom learnt by a query is kept; default
	// DefaultCacheTime.
	CacheTime time.Duration
	// PullWait bounds how long the manager waits, after it starts, for
	// members it can pull from before it says it is ready without them
	// (a unit alone); and how long a member that does not answer keeps
	// it from being ready. Default DefaultPullWait.
	PullWait time.Duration
	// QueryTimeout bounds each round of a query; default
	// DefaultQueryTimeout.
	QueryTimeout time.Duration
	// MaxAtoms bounds this unit's portion; default DefaultMaxAtoms.
	MaxAtoms int
	// MaxQueue bounds the atoms waiting to be sent to one member; more
	// are dropped and the member is sent its whole share again.
	// Default DefaultMaxQueue.
	MaxQueue int
	// ServerTLS and ClientTLS are the unit's TLS configurations toward
	// other units (internal/mtls.Units).
	ServerTLS, ClientTLS *tls.Config
	Log                  zerolog.Logger
	// Now is the clock (time.Now when nil); tests move it.
	Now func() time.Time
}

// Defaults.
const (
	// DefaultZombieTime is TCP's 2·MSL as Linux counts it (TIME_WAIT is
	// 60 s): a segment of the dead connection can still arrive.
	DefaultZombieTime   = 60 * time.Second
	DefaultCacheTime    = 10 * time.Second
	DefaultPullWait     = 10 * time.Second
	DefaultQueryTimeout = 250 * time.Millisecond
	DefaultMaxAtoms     = 4 << 20
	DefaultMaxQueue     = 1 << 16
)

// Refusal reasons (unit.AtomsView.Refused).
const (
	RefusedIdentity  = "identity"   // no unit certificate, or a hello naming another unit
	RefusedNotMember = "not_member" // a unit that is not a live member (of that boot)
	RefusedInvalid   = "invalid"    // a message that fails validation
)

// ErrClosed is a call on a closed manager.
var ErrClosed = errors.New("atoms: manager closed")

// Manager is this unit's portion of the distributed atom manager.
type Manager struct {
	opts  Options
	log   zerolog.Logger
	now   func() time.Time
	srv   *grpc.Server
	start time.Time

	stop chan struct{}
	wg   sync.WaitGroup

	mu        sync.Mutex
	t         *table
	live      map[string]Member // self included
	names     []string          // live names, sorted
	peers     map[string]*peer  // outbound streams, by name
	inbound   map[string]map[*inStream]struct{}
	lastStamp uint64
	counts    unit.AtomCounts
	refused   map[string]uint64
	closed    bool
	// seen is when a member was first seen live (for readiness).
	seen map[string]time.Time
}

// New makes a manager. Serve answers other units; SetMembers starts the
// streams to them.
func New(opts Options) (*Manager, error) {
	if err := atompb.ValidUnitName(opts.Self.Name); err != nil {
		return nil, fmt.Errorf("atoms: %w", err)
	}
	if opts.Self.Boot == 0 {
		return nil, errors.New("atoms: boot ID 0")
	}
	if opts.Level < Full {
		return nil, fmt.Errorf("atoms: replication level %d", opts.Level)
	}
	if opts.ServerTLS == nil || opts.ClientTLS == nil {
		return nil, errors.New("atoms: no TLS configuration: the atom stream is never plain")
	}
	if opts.ZombieTime <= 0 {
		opts.ZombieTime = DefaultZombieTime
	}
	if opts.CacheTime <= 0 {
		opts.CacheTime = DefaultCacheTime
	}
	if opts.PullWait <= 0 {
		opts.PullWait = DefaultPullWait
	}
	if opts.QueryTimeout <= 0 {
		opts.QueryTimeout = DefaultQueryTimeout
	}
	if opts.MaxAtoms <= 0 {
		opts.MaxAtoms = DefaultMaxAtoms
	}
	if opts.MaxQueue <= 0 {
		opts.MaxQueue = DefaultMaxQueue
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	m := &Manager{opts: opts, log: opts.Log, now: opts.Now, stop: make(chan struct{}),
		t: newTable(opts.MaxAtoms), live: map[string]Member{opts.Self.Name: opts.Self}, names: []string{opts.Self.Name},
		peers: map[string]*peer{}, inbound: map[string]map[*inStream]struct{}{}, refused: map[string]uint64{},
		seen: map[string]time.Time{}}
	m.start = m.now()
	m.srv = grpc.NewServer(grpc.Creds(credentials.NewTLS(opts.ServerTLS)),
		grpc.MaxRecvMsgSize(atompb.MaxMessage), grpc.MaxSendMsgSize(atompb.MaxMessage),
		grpc.StaticStreamWindowSize(atompb.Window), grpc.StaticConnWindowSize(atompb.Window),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 10 * time.Second, Timeout: 5 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}))
	atompb.RegisterAtomsServer(m.srv, &server{m: m})
	m.wg.Add(1)
	go m.expireLoop()
	return m, nil
}

// Serve answers other units on l until Close.
func (m *Manager) Serve(l net.Listener) error {
	err := m.srv.Serve(l)
	if errors.Is(err, grpc.ErrServerStopped) {
		return nil
	}
	return err
}

// Close stops every stream and the server.
func (m *Manager) Close() {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return
	}
	m.closed = true
	peers := m.peers
	m.peers = map[string]*peer{}
	m.mu.Unlock()
	close(m.stop)
	for _, p := range peers {
		p.close()
	}
	m.srv.Stop()
	m.wg.Wait()
}

// expireLoop drops expired atoms, once a second: zombie and orphan
// times are tens of seconds, so a second's slack is noise.
func (m *Manager) expireLoop() {
	defer m.wg.Done()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-m.stop:
			return
		case <-tick.C:
			m.Expire()
		}
	}
}

// Expire drops the atoms whose time has come (the manager calls it every
// second; tests call it after moving the clock).
func (m *Manager) Expire() {
	now := m.now().UnixNano()
	m.mu.Lock()
	m.counts.Expired += uint64(m.t.expire(now))
	m.mu.Unlock()
}

// stamp returns a new version stamp after every one this unit made and
// after, so that a unit taking over a key outranks the version it saw.
func (m *Manager) stampLocked(after uint64) uint64 {
	s := uint64(m.now().UnixNano())
	s = max(s, m.lastStamp+1, after+1)
	m.lastStamp = s
	return s
}

// Add adds an atom with this unit as its adder (AddAtom): it replaces
// any version of the key this unit holds, and goes to the members that
// ought to hold it. after is the stamp of a version the caller saw and
// means to replace (0 when none), so that the new one is later whatever
// the clocks say. It returns the atom as stored.
func (m *Manager) Add(key, host string, data []byte, timeout time.Duration, after uint64) (Atom, error) {
	a := &atompb.Atom{Key: key, Host: host, Data: data, Adder: m.opts.Self.Name, AdderBoot: m.opts.Self.Boot,
		TimeoutMs: uint32(min(max(timeout.Milliseconds(), 1), atompb.MaxTimeout))}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return Atom{}, ErrClosed
	}
	a.Stamp = m.stampLocked(after)
	if err := atompb.ValidateRequest(&atompb.Request{Version: atompb.Version,
		Body: &atompb.Request_Add{Add: &atompb.Add{Atoms: []*atompb.Atom{a}}}}); err != nil {
		return Atom{}, err
	}
	switch m.t.put(a, false, 0) {
	case full:
		m.counts.Full++
		return Atom{}, fmt.Errorf("atoms: portion full (%d atoms)", m.opts.MaxAtoms)
	case stale:
		// Only a later version from another unit with a clock ahead of
		// ours: take one after it.
		e := m.t.atoms[key]
		a.Stamp = m.stampLocked(e.stamp)
		m.t.put(a, false, 0)
	}
	m.counts.Added++
	e := m.t.atoms[key]
	for _, h := range holders(key, a.Adder, true, m.names, m.opts.Level) {
		if p := m.peers[h]; p != nil {
			p.enqueue(op{add: true, atom: e.wire(key), at: m.now()})
		}
	}
	return e.atom(key), nil
}

// Delete deletes the version of key this unit holds (DeleteAtom): it
// becomes a zombie here and at the members that ought to hold it, and
// is dropped after the zombie time. It reports whether there was a live
// version to delete.
func (m *Manager) Delete(key string) bool { return m.delete(key, false) }

// DeleteMine is Delete of a version this unit added (in this life): a
// unit whose route ends deletes the atom only if no other unit has
// added the key since (took the connection over).
func (m *Manager) DeleteMine(key string) bool { return m.delete(key, true) }

func (m *Manager) delete(key string, mine bool) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.t.atoms[key]
	if !ok || e.zombie || m.closed || mine && (e.adder.name != m.opts.Self.Name || e.adder.boot != m.opts.Self.Boot) {
		return false
	}
	if e.cached {
		// A cache is not the atom: drop it here only.
		delete(m.t.atoms, key)
		return false
	}
	m.t.del(key, e.stamp, e.adder.name, m.now().Add(m.opts.ZombieTime).UnixNano())
	m.counts.Deleted++
	d := &atompb.Atom{Key: key, Adder: e.adder.name, Stamp: e.stamp}
	_, adderLive := m.adderLiveLocked(e.adder)
	for _, h := range holders(key, e.adder.name, adderLive, m.names, m.opts.Level) {
		if p := m.peers[h]; p != nil && h != m.opts.Self.Name {
			p.enqueue(op{atom: d, at: m.now()})
		}
	}
	return true
}

// adderLiveLocked reports whether the adder is a live member in the same
// life, and its name.
func (m *Manager) adderLiveLocked(a *adder) (string, bool) {
	mem, ok := m.live[a.name]
	return a.name, ok && mem.Boot == a.boot
}

// Get returns this unit's copy of key, if it holds one.
func (m *Manager) Get(key string) (Atom, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.t.atoms[key]
	if !ok {
		return Atom{}, false
	}
	return e.atom(key), true
}

// Query finds key (QueryAtom): in this unit's portion, else at the
// members that ought to hold it, else at every other member. Of the
// answers, the latest version wins; it is kept here as a cache. A zombie
// is an answer too: the caller decides (late packets of a closed
// session still go to its host). found is false when no member holds
// the key; err is set when the context ended first.
func (m *Manager) Query(ctx context.Context, key string) (a Atom, found bool, err error) {
	if err := atompb.ValidKey(key); err != nil {
		return Atom{}, false, fmt.Errorf("atoms: %w", err)
	}
	m.mu.Lock()
	if e, ok := m.t.atoms[key]; ok {
		m.counts.QueryLocal++
		a := e.atom(key)
		m.mu.Unlock()
		return a, true, nil
	}
	first := queryTargets(key, m.names, m.opts.Self.Name, m.opts.Level)
	var rest []string
	for _, n := range m.names {
		if n != m.opts.Self.Name && !slices.Contains(first, n) {
			rest = append(rest, n)
		}
	}
	peers := func(names []string) []*peer {
		var out []*peer
		for _, n := range names {
			if p := m.peers[n]; p != nil {
				out = append(out, p)
			}
		}
		return out
	}
	rounds := [][]*peer{peers(first), peers(rest)}
	m.mu.Unlock()
	for _, round := range rounds {
		if len(round) == 0 {
			continue
		}
		best, err := m.ask(ctx, round, key)
		if err != nil {
			return Atom{}, false, err
		}
		if best == nil {
			continue
		}
		m.mu.Lock()
		m.counts.QueryRemote++
		exp := m.now().Add(m.opts.CacheTime).UnixNano()
		if best.GetZombie() {
			exp = m.now().Add(m.opts.ZombieTime).UnixNano()
		}
		m.t.put(best, true, exp)
		e, ok := m.t.atoms[key]
		var a Atom
		if ok {
			a = e.atom(key)
		}
		m.mu.Unlock()
		if ok {
			return a, true, nil
		}
		// The portion is full: answer without keeping it.
		return Atom{Key: key, Host: best.GetHost(), Data: best.GetData(), Adder: best.GetAdder(), AdderBoot: best.GetAdderBoot(),
			Stamp: best.GetStamp(), Timeout: time.Duration(best.GetTimeoutMs()) * time.Millisecond, Zombie: best.GetZombie()}, true, nil
	}
	m.mu.Lock()
	m.counts.QueryMisses++
	m.mu.Unlock()
	return Atom{}, false, nil
}

// ask sends one query for key to each of peers and waits for the
// answers: every one, or, once one has the key, those of the peers whose
// streams were up. A peer whose stream is not up yet (a unit just met,
// or one that died and is not yet declared dead) is waited for only a
// short grace once the others have answered without the key, so that a
// dead member does not spend the caller's whole budget (when no stream
// is up at all, the whole query timeout). A peer that is
// down, or slower than the query timeout, counts as not holding the
// key. It returns the latest version found.
func (m *Manager) ask(ctx context.Context, peers []*peer, key string) (*atompb.Atom, error) {
	ctx, cancel := context.WithTimeout(ctx, m.opts.QueryTimeout)
	defer cancel()
	answers := make(chan *atompb.Return, len(peers))
	var calls []*call
	upCalls := 0
	for _, p := range peers {
		if c, up := p.query(key, answers); c != nil {
			calls = append(calls, c)
			if up {
				upCalls++
			}
		}
	}
	defer func() {
		for _, c := range calls {
			c.p.forget(c)
		}
	}()
	var best *atompb.Atom
	var grace <-chan time.Time
	for n := 1; n <= len(calls); n++ {
		if n > upCalls && upCalls > 0 && grace == nil {
			t := time.NewTimer(m.opts.QueryTimeout / 5)
			defer t.Stop()
			grace = t.C
		}
		select {
		case r := <-answers:
			for _, a := range r.GetAtoms() {
				if a.GetKey() == key && (best == nil || a.GetStamp() > best.GetStamp() ||
					a.GetStamp() == best.GetStamp() && a.GetAdder() > best.GetAdder()) {
					best = a
				}
			}
			if best != nil && n >= upCalls {
				return best, nil
			}
		case <-grace:
			return best, nil
		case <-ctx.Done():
			if err := ctx.Err(); best == nil && !errors.Is(err, context.DeadlineExceeded) {
				return nil, err
			}
			return best, nil
		}
	}
	return best, nil
}

// SetMembers tells the manager who is live (self may be included or
// not). Streams start to new members and stop to departed ones; atoms
// whose adder is gone start to expire; every atom this unit holds goes
// to the members that newly ought to hold it, except members seen for
// the first time, which pull.
func (m *Manager) SetMembers(members []Member) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return
	}
	old := m.live
	oldNames := m.names
	live := map[string]Member{m.opts.Self.Name: m.opts.Self}
	for _, mem := range members {
		if mem.Name != m.opts.Self.Name && mem.Name != "" {
			live[mem.Name] = mem
		}
	}
	names := make([]string, 0, len(live))
	for n := range live {
		names = append(names, n)
	}
	sort.Strings(names)
	m.live, m.names = live, names
	now := m.now()
	var stopped []*peer
	defer func() {
		// Wait outside the lock: a stopping peer may be waiting for it.
		m.mu.Unlock()
		for _, p := range stopped {
			<-p.done
		}
		m.mu.Lock()
	}()
	fresh := map[string]bool{} // members in a life this unit had not seen: they pull
	for n, mem := range live {
		if n == m.opts.Self.Name {
			continue
		}
		o, was := old[n]
		p := m.peers[n]
		if was && o.Boot == mem.Boot && o.Addr == mem.Addr && p != nil {
			continue
		}
		fresh[n] = !was || o.Boot != mem.Boot
		if p != nil {
			p.cancel()
			stopped = append(stopped, p)
		}
		m.peers[n] = m.startPeer(mem)
		if _, ok := m.seen[n]; !ok || fresh[n] {
			m.seen[n] = now
		}
	}
	for n, p := range m.peers {
		if _, ok := live[n]; !ok {
			p.cancel()
			stopped = append(stopped, p)
			delete(m.peers, n)
			delete(m.seen, n)
		}
	}
	for n, streams := range m.inbound {
		if mem, ok := live[n]; !ok {
			for s := range streams {
				s.cancel()
			}
		} else {
			for s := range streams {
				if s.boot != mem.Boot {
					s.cancel()
				}
			}
		}
	}
	m.rebalanceLocked(old, oldNames, fresh, now)
}

// rebalanceLocked walks the portion after a membership change: atoms
// whose adder left start to expire (and stop, if it came back in the
// same life), and each goes to members that ought to hold it now and did
// not before, unless they are fresh (they pull).
func (m *Manager) rebalanceLocked(old map[string]Member, oldNames []string, fresh map[string]bool, now time.Time) {
	self := m.opts.Self.Name
	for key, e := range m.t.atoms {
		if e.cached {
			continue
		}
		mem, ok := m.live[e.adder.name]
		adderLive := ok && mem.Boot == e.adder.boot
		om, ook := old[e.adder.name]
		wasLive := ook && om.Boot == e.adder.boot
		switch {
		case !adderLive && !e.orphan:
			e.orphan = true
			at := int64(0)
			if !e.zombie {
				at = now.Add(time.Duration(e.timeout) * time.Millisecond).UnixNano()
			} else {
				at = e.expires
			}
			m.t.setExpiry(key, e, at)
			m.counts.Orphaned++
		case adderLive && e.orphan:
			e.orphan = false
			at := e.expires
			if !e.zombie {
				at = 0
			}
			m.t.setExpiry(key, e, at)
		}
		before := holders(key, e.adder.name, wasLive, oldNames, m.opts.Level)
		var w *atompb.Atom
		for _, h := range holders(key, e.adder.name, adderLive, m.names, m.opts.Level) {
			if h == self || fresh[h] || slices.Contains(before, h) {
				continue
			}
			p := m.peers[h]
			if p == nil {
				continue
			}
			if w == nil {
				w = e.wire(key)
			}
			p.enqueue(op{add: true, atom: w, at: now})
			m.counts.Rereplicated++
		}
	}
}

// shareLocked returns the atoms member name ought to hold (its share of
// this unit's portion): those it is a holder of, and those it added
// (in any life: a restarted unit takes its old atoms back).
func (m *Manager) shareLocked(name string) []*atompb.Atom {
	var out []*atompb.Atom
	for key, e := range m.t.atoms {
		if e.cached {
			continue
		}
		mem, ok := m.live[e.adder.name]
		adderLive := ok && mem.Boot == e.adder.boot
		if e.adder.name == name && !adderLive || slices.Contains(holders(key, e.adder.name, adderLive, m.names, m.opts.Level), name) {
			out = append(out, e.wire(key))
		}
	}
	return out
}

// applyLocked stores atoms received from another unit (a replica, a
// pull's answer) and reports how many were stored.
func (m *Manager) applyLocked(atoms []*atompb.Atom) int {
	n := 0
	now := m.now()
	for _, a := range atoms {
		mem, ok := m.live[a.GetAdder()]
		orphan := !ok || mem.Boot != a.GetAdderBoot()
		exp := int64(0)
		switch {
		case a.GetZombie():
			exp = now.Add(m.opts.ZombieTime).UnixNano()
		case orphan:
			exp = now.Add(time.Duration(a.GetTimeoutMs()) * time.Millisecond).UnixNano()
		}
		switch m.t.put(a, false, exp) {
		case stored, deleted:
			n++
			if e := m.t.atoms[a.GetKey()]; orphan && !e.orphan {
				e.orphan = true
				m.t.atoms[a.GetKey()] = e
			}
		case stale:
			m.counts.Stale++
		case full:
			m.counts.Full++
		}
	}
	m.counts.Received += uint64(n)
	return n
}

// Ready reports whether this unit holds what it ought to: it has
// pulled from every live member, or waited PullWait for one that does
// not answer; and, just started, it has met another member or waited
// PullWait for one.
func (m *Manager) Ready() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.readyLocked(m.now())
}

func (m *Manager) readyLocked(now time.Time) bool {
	if len(m.names) == 1 && now.Sub(m.start) < m.opts.PullWait {
		return false
	}
	for n, p := range m.peers {
		if !p.pulledOK() && now.Sub(m.seen[n]) < m.opts.PullWait {
			return false
		}
	}
	return true
}

// Keys lists the keys of the live atoms this unit added or holds by
// placement (not caches nor zombies) with prefix and host.
func (m *Manager) Keys(prefix, host string) []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []string
	for key, e := range m.t.atoms {
		if !e.cached && !e.zombie && e.host == host && strings.HasPrefix(key, prefix) {
			out = append(out, key)
		}
	}
	return out
}

// Peers reports the streams to the other units, without walking the
// portion.
func (m *Manager) Peers() []unit.AtomPeer {
	m.mu.Lock()
	peers := make([]*peer, 0, len(m.peers))
	for _, p := range m.peers {
		peers = append(peers, p)
	}
	m.mu.Unlock()
	out := make([]unit.AtomPeer, 0, len(peers))
	for _, p := range peers {
		out = append(out, p.view())
	}
	slices.SortFunc(out, func(a, b unit.AtomPeer) int { return compareStrings(a.Name, b.Name) })
	return out
}

// Summary reports readiness, the live members (this unit included) and
// the size of the portion, without walking it.
func (m *Manager) Summary() (ready bool, members, atoms int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.readyLocked(m.now()), len(m.names), len(m.t.atoms)
}

// View reports the manager and a page of its portion: keys with prefix
// (all when ""), of host (any when ""), at most limit of them, in key
// order.
func (m *Manager) View(prefix, host string, limit int) unit.AtomsView {
	now := m.now()
	m.mu.Lock()
	v := unit.AtomsView{Enabled: true, Self: m.opts.Self.Name, Ready: m.readyLocked(now), Level: m.opts.Level,
		Atoms: len(m.t.atoms), Zombies: m.t.zombies, Counts: m.counts, Refused: map[string]uint64{}}
	for k, n := range m.refused {
		v.Refused[k] = n
	}
	var keys []string
	for key, e := range m.t.atoms {
		if e.cached {
			v.Cached++
		}
		if e.orphan {
			v.Orphans++
		}
		if !strings.HasPrefix(key, prefix) || host != "" && e.host != host {
			continue
		}
		v.Matched++
		if limit != 0 {
			keys = append(keys, key)
		}
	}
	slices.Sort(keys)
	if limit >= 0 && len(keys) > limit {
		keys = keys[:limit]
	}
	for _, key := range keys {
		e := m.t.atoms[key]
		v.Page = append(v.Page, atomView(e.atom(key)))
	}
	peers := make([]*peer, 0, len(m.peers))
	for _, p := range m.peers {
		peers = append(peers, p)
	}
	m.mu.Unlock()
	for _, p := range peers {
		v.Peers = append(v.Peers, p.view())
	}
	slices.SortFunc(v.Peers, func(a, b unit.AtomPeer) int { return compareStrings(a.Name, b.Name) })
	return v
}

func atomView(a Atom) unit.AtomView {
	v := unit.AtomView{Key: a.Key, Host: a.Host, Data: a.Data, Adder: a.Adder, Stamp: a.Stamp,
		TimeoutMs: a.Timeout.Milliseconds(), Zombie: a.Zombie, Cached: a.Cached}
	if !a.Expires.IsZero() {
		t := a.Expires
		v.Expires = &t
	}
	return v
}

func (m *Manager) refuse(reason string, err error) {
	m.mu.Lock()
	m.refused[reason]++
	m.mu.Unlock()
	m.log.Warn().Err(err).Str("reason", reason).Msg("atom stream refused")
}
