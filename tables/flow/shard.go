package flow

import (
	"fmt"

	"github.com/tetherlb/tether/api/unit"
)

// Tick is a worker's clock in milliseconds. It wraps after 49 days;
// comparisons use the signed difference, which is right for intervals
// under 24 days, far longer than any timeout, and the aging scan visits
// every entry well within that.
type Tick uint32

// Since returns the milliseconds from t to now, or 0 if t is in the future.
func (now Tick) Since(t Tick) uint32 {
	d := int32(now - t)
	if d < 0 {
		return 0
	}
	return uint32(d)
}

// Meta is the part of an entry's value shared by both families. The table
// reads LastSeen and Flags, and A/B with PortA/PortB to find a peer; Mode
// and Backend belong to the dataplane.
type Meta struct {
	LastSeen     Tick
	Backend      uint32 // dataplane backend ID, for counters and state
	PortA, PortB uint16
	Mode         unit.Mode
	Flags        unit.FlowFlags
}

// Value4 is the value of an IPv4 entry: Meta plus addresses A and B.
type Value4 struct {
	Meta
	A, B [4]byte
}

// Value6 is the value of an IPv6 entry.
type Value6 struct {
	Meta
	A, B [16]byte
}

// Timeouts are idle timeouts in milliseconds by protocol and TCP state. A
// pair's state is the union of both directions' flags and its idle time
// the shorter of the two.
type Timeouts struct {
	TCPSyn         uint32 // only SYNs seen
	TCPEstablished uint32
	TCPFin         uint32 // FIN seen in either direction
	TCPClosed      uint32 // RST seen in either direction
	UDP            uint32
	// UDPUnreplied is the timeout of a translated UDP flow its backend
	// never answered: one-way traffic, or a flood from many sources,
	// would otherwise hold its SNAT port and table slots for the whole
	// UDP timeout.
	UDPUnreplied uint32
	Other        uint32
}

// DefaultTimeouts follow the Linux IPVS defaults where they exist
// (established 15 min, FIN 2 min, close 10 s, UDP 5 min), and conntrack's
// for UDP never answered (30 s).
func DefaultTimeouts() Timeouts {
	return Timeouts{
		TCPSyn:         60_000,
		TCPEstablished: 900_000,
		TCPFin:         120_000,
		TCPClosed:      10_000,
		UDP:            300_000,
		UDPUnreplied:   30_000,
		Other:          60_000,
	}
}

const protoTCP, protoUDP = 6, 17

func (t *Timeouts) of(proto uint8, f unit.FlowFlags) uint32 {
	switch proto {
	case protoTCP:
		switch {
		case f&unit.FlowRST != 0:
			return t.TCPClosed
		case f&unit.FlowFIN != 0:
			return t.TCPFin
		case f&unit.FlowEstablished != 0:
			return t.TCPEstablished
		default:
			return t.TCPSyn
		}
	case protoUDP:
		if Unreplied(f) {
			return t.UDPUnreplied
		}
		return t.UDP
	}
	return t.Other
}

// maxDist bounds a probe sequence. With a random seed and a load factor
// of at most 0.8 the longest Robin Hood run is a few dozen slots; an entry
// that would have to move further is evicted instead.
const maxDist = 255

// evictWindow is how many occupied slots near the new key's home an
// eviction considers, and evictVerify how many of them it checks against
// their peers. Sampling a neighbourhood rather than the whole table keeps
// eviction O(1); it is the trade Redis's approximate LRU makes.
const (
	evictWindow = 16
	evictVerify = 3
)

// evictScore ranks eviction candidates: closed (RST, then FIN) first,
// then half-open, then by idle time.
func evictScore(now, last Tick, f unit.FlowFlags) uint64 {
	score := uint64(now.Since(last))
	switch {
	case f&unit.FlowRST != 0:
		score += 3 << 32
	case f&unit.FlowFIN != 0:
		score += 2 << 32
	case HalfOpen(f), Unreplied(f):
		// A connection that never completed its handshake, or a pair
		// its backend never answered: under a SYN flood or a flood of
		// one-packet UDP flows, where they fill the table, they go
		// before any connection that carries traffic both ways.
		score += 1 << 32
	}
	return score
}

// HalfOpen reports whether a connection's flags (both directions') are
// those of a TCP handshake that never completed: a SYN, and no segment
// since that acknowledged one, closed or reset it.
func HalfOpen(f unit.FlowFlags) bool {
	return f&unit.FlowSYN != 0 && f&(unit.FlowEstablished|unit.FlowFIN|unit.FlowRST) == 0
}

// Unreplied reports whether a reply entry's flags, or a pair's (both
// directions'), say that no packet ever came back through the reply
// entry. Entries without a peer (tunnel, ipip: replies go straight to the
// client) are never unreplied, and neither is a forward entry seen alone.
func Unreplied(f unit.FlowFlags) bool {
	return f&(unit.FlowReply|unit.FlowAnswered) == unit.FlowReply
}

// Config sizes a shard.
type Config struct {
	// MaxFlows bounds the entries of each family (a translated connection
	// takes two).
	MaxFlows int
	Timeouts Timeouts
	// Seed keys the table hash; use a random one in production so that a
	// sender cannot aim many flows at one probe sequence.
	Seed uint64
}

// Shard is one worker's flow table.
type Shard struct {
	v4       *table4
	v6       *table6
	timeouts Timeouts
	cursor4  int
	cursor6  int
	stats    Stats
	log      *Removals
}

// Stats count table events.
type Stats struct {
	Inserted uint64
	Expired  uint64 // removed by idle aging
	Evicted  uint64 // removed to make room
	Deleted  uint64 // removed on request
	Full     uint64 // inserts refused: nothing evictable near the slot
}

// Add adds o's counters to s.
func (s *Stats) Add(o *Stats) {
	s.Inserted += o.Inserted
	s.Expired += o.Expired
	s.Evicted += o.Evicted
	s.Deleted += o.Deleted
	s.Full += o.Full
}

// NewShard allocates a shard. All of its memory is allocated here.
func NewShard(c Config) (*Shard, error) {
	if c.MaxFlows < 2 {
		return nil, fmt.Errorf("flow: max flows %d: need at least 2", c.MaxFlows)
	}
	return &Shard{
		v4:       newTable4(c.MaxFlows, c.Seed),
		v6:       newTable6(c.MaxFlows, c.Seed),
		timeouts: c.Timeouts,
	}, nil
}

// Len returns the number of IPv4 and IPv6 entries.
func (s *Shard) Len() (v4, v6 int) { return s.v4.n, s.v6.n }

// Stats returns the shard's counters.
func (s *Shard) Stats() Stats { return s.stats }

// SetTimeouts changes the idle timeouts (between batches).
func (s *Shard) SetTimeouts(t Timeouts) { s.timeouts = t }

// Bytes returns the memory the shard's slots take, per family.
func (s *Shard) Bytes() (v4, v6 int) {
	return len(s.v4.slots) * SlotBytes4, len(s.v6.slots) * SlotBytes6
}

// Hash4 returns the shard's hash of k, for Lookup4 and Insert4; computing
// it once lets a caller touch the slot early and look up later.
func (s *Shard) Hash4(k *Key4) uint64 { return k.Hash(s.v4.seed) }

// Hash6 is Hash4 for IPv6.
func (s *Shard) Hash6(k *Key6) uint64 { return k.Hash(s.v6.seed) }

// Touch4 starts loading the home slot of hash h; see table4.touch.
func (s *Shard) Touch4(h uint64) uint8 { return s.v4.touch(h) }

// Touch6 is Touch4 for IPv6.
func (s *Shard) Touch6(h uint64) uint8 { return s.v6.touch(h) }

// Lookup4 returns the entry for k, or nil. The pointer is valid until the
// next change to the shard.
func (s *Shard) Lookup4(k *Key4, h uint64) *Value4 { return s.v4.lookup(k, h) }

// Lookup6 is Lookup4 for IPv6.
func (s *Shard) Lookup6(k *Key6, h uint64) *Value6 { return s.v6.lookup(k, h) }

// Insert4 adds an entry for k, which must be absent, making room by
// eviction when the table is full, and returns the stored value (valid
// until the next change). It returns nil when no room could be made.
func (s *Shard) Insert4(k *Key4, h uint64, v *Value4, now Tick) *Value4 {
	return s.v4.insert(&s.stats, k, h, v, now)
}

// Insert6 is Insert4 for IPv6.
func (s *Shard) Insert6(k *Key6, h uint64, v *Value6, now Tick) *Value6 {
	return s.v6.insert(&s.stats, k, h, v, now)
}

// InsertPair4 adds a translated connection: the entry k → v and its peer
// entry (v.A:PortA → v.B:PortB) → peer, marked as a pair. Both keys must
// be absent. It makes room for both first, so neither evicts the other.
// It returns k's stored value, or nil when no room could be made.
func (s *Shard) InsertPair4(k *Key4, h uint64, v, peer *Value4, now Tick) *Value4 {
	return s.v4.insertPair(&s.stats, k, h, v, peer, now)
}

// InsertPair6 is InsertPair4 for IPv6.
func (s *Shard) InsertPair6(k *Key6, h uint64, v, peer *Value6, now Tick) *Value6 {
	return s.v6.insertPair(&s.stats, k, h, v, peer, now)
}

// PeerKey4 returns the key of v's peer (see InsertPair4).
func PeerKey4(k *Key4, v *Value4) Key4 { return v.peerKey(k) }

// PeerKey6 returns the key of v's peer.
func PeerKey6(k *Key6, v *Value6) Key6 { return v.peerKey(k) }

// Delete4 removes k and its peer, and reports whether k was present.
func (s *Shard) Delete4(k *Key4) bool { return s.v4.remove(&s.stats, k) }

// PairState4 returns the state of the connection k's entry belongs to:
// its latest activity and the union of both directions' flags.
func (s *Shard) PairState4(k *Key4, h uint64) (last Tick, flags unit.FlowFlags, ok bool) {
	i := s.v4.lookupIndex(k, h)
	if i < 0 {
		return 0, 0, false
	}
	last, flags = s.v4.pairState(i)
	return last, flags, true
}

// PairState6 is PairState4 for IPv6.
func (s *Shard) PairState6(k *Key6, h uint64) (last Tick, flags unit.FlowFlags, ok bool) {
	i := s.v6.lookupIndex(k, h)
	if i < 0 {
		return 0, 0, false
	}
	last, flags = s.v6.pairState(i)
	return last, flags, true
}

// Delete6 is Delete4 for IPv6.
func (s *Shard) Delete6(k *Key6) bool { return s.v6.remove(&s.stats, k) }

// Expire visits up to budget slots of each family, continuing where the
// last call stopped, and removes connections idle for longer than their
// timeout. Call it between batches with a budget that covers the whole
// table in a fraction of the shortest timeout. It returns the number of
// entries removed.
func (s *Shard) Expire(now Tick, budget int) int {
	return s.v4.expire(&s.stats, &s.timeouts, now, budget, &s.cursor4) +
		s.v6.expire(&s.stats, &s.timeouts, now, budget, &s.cursor6)
}

// ForEach4 calls fn for every IPv4 entry until fn returns false. fn must
// not change the shard.
func (s *Shard) ForEach4(fn func(k *Key4, v *Value4) bool) { s.v4.forEach(fn) }

// ForEach6 is ForEach4 for IPv6.
func (s *Shard) ForEach6(fn func(k *Key6, v *Value6) bool) { s.v6.forEach(fn) }

// ForEach4Home visits the IPv4 entries whose home slot is in [start,
// start+n), for a walk in bounded steps (a worker between batches), and
// returns the home slot to continue from, or -1 when the table is done.
// A walk reports every entry that lives through it exactly once, however
// the table changes between steps (see table4.forEachHome).
func (s *Shard) ForEach4Home(start, n int, fn func(k *Key4, v *Value4)) int {
	return s.v4.forEachHome(start, n, fn)
}

// ForEach6Home is ForEach4Home for IPv6.
func (s *Shard) ForEach6Home(start, n int, fn func(k *Key6, v *Value6)) int {
	return s.v6.forEachHome(start, n, fn)
}

// Clear removes every entry.
func (s *Shard) Clear() {
	clear(s.v4.slots)
	clear(s.v6.slots)
	s.v4.n, s.v6.n = 0, 0
}
