package flow

import "github.com/tetherlb/tether/api/unit"

// The IPv6 table, table6, is generated from this file by gen6.go: Go's
// generics dispatch methods through dictionaries, which makes pointer
// arguments escape and costs an allocation per call on this path.
//
//go:generate go run gen6.go

// table4 is a bounded Robin Hood hash table of IPv4 flows. Each slot
// records its entry's distance from the home slot plus one (0 marks an
// empty slot). A lookup stops as soon as it meets a slot closer to its
// home than the key would be, so a miss costs about as much as a hit even
// at high load; deletion shifts the following run back by one, so there
// are no tombstones and aging never degrades the table.
//
// Pointers returned by lookup are valid until the next insert or delete.
type table4 struct {
	slots []slot4
	n     int // entries in use
	max   int // hard bound on entries
	seed  uint64
	log   *Removals
}

type slot4 struct {
	key  Key4
	dist uint8
	val  Value4
}

func newTable4(max int, seed uint64) *table4 {
	// A load factor of at most 0.8 keeps Robin Hood runs short.
	t := &table4{max: max, seed: seed}
	t.slots = hugeAlloc[slot4](max+max/4+1, t)
	return t
}

// home maps a hash to its home slot by multiply-shift ("fastrange"),
// which needs no power-of-two size and takes the hash's high bits.
func (t *table4) home(h uint64) int {
	return int((h >> 32) * uint64(len(t.slots)) >> 32)
}

// touch loads the home slot of h so that its cache line is on its way
// while the caller works on other packets of the batch.
func (t *table4) touch(h uint64) uint8 { return t.slots[t.home(h)].dist }

func (t *table4) lookupIndex(k *Key4, h uint64) int {
	i, d := t.home(h), uint8(1)
	for {
		s := &t.slots[i]
		if s.dist < d {
			return -1
		}
		if s.dist == d && s.key == *k {
			return i
		}
		if i++; i == len(t.slots) {
			i = 0
		}
		if d++; d == 0 {
			return -1
		}
	}
}

func (t *table4) lookup(k *Key4, h uint64) *Value4 {
	if i := t.lookupIndex(k, h); i >= 0 {
		return &t.slots[i].val
	}
	return nil
}

// place adds k, which must not be present, to a table with room, and
// returns the slot k went to. If Robin Hood displacement would push some
// entry past maxDist, that entry is dropped and returned with lost = true
// so the caller can account for it and remove its peer; if it is k
// itself, at is -1.
func (t *table4) place(k Key4, h uint64, v Value4) (at int, lost bool, lk Key4, lv Value4) {
	t.n++
	at = -1
	i, d := t.home(h), uint8(1)
	for {
		s := &t.slots[i]
		if s.dist == 0 {
			s.key, s.val, s.dist = k, v, d
			if at < 0 {
				at = i
			}
			return at, false, lk, lv
		}
		if s.dist < d {
			// Take from the rich: the resident is closer to its home
			// than we are to ours, so it yields the slot and moves on.
			// The new key stays where it first lands.
			s.key, k = k, s.key
			s.val, v = v, s.val
			s.dist, d = d, s.dist
			if at < 0 {
				at = i
			}
		}
		if i++; i == len(t.slots) {
			i = 0
		}
		if d == maxDist {
			t.n--
			return at, true, k, v
		}
		d++
	}
}

// deleteAt removes the entry in slot i and shifts the run after it back.
func (t *table4) deleteAt(i int) {
	for {
		j := i + 1
		if j == len(t.slots) {
			j = 0
		}
		next := &t.slots[j]
		if next.dist <= 1 {
			t.slots[i] = slot4{}
			break
		}
		t.slots[i] = *next
		t.slots[i].dist--
		i = j
	}
	t.n--
}

func (v *Value4) peerKey(k *Key4) Key4 {
	return Key4{Src: v.A, Dst: v.B, SrcPort: v.PortA, DstPort: v.PortB, Proto: k.Proto}
}

func (t *table4) insert(st *Stats, k *Key4, h uint64, v *Value4, now Tick) *Value4 {
	if t.n >= t.max && !t.evict(st, t.home(h), now) {
		st.Full++
		return nil
	}
	st.Inserted++
	at, lost, lk, lv := t.place(*k, h, *v)
	if lost {
		// Removing the lost entry's peer may shift k: find it again.
		t.dropLost(st, &lk, &lv)
		return t.lookup(k, h)
	}
	return t.valueAt(at)
}

// valueAt returns the value in slot i, or nil for -1.
func (t *table4) valueAt(i int) *Value4 {
	if i < 0 {
		return nil
	}
	return &t.slots[i].val
}

func (t *table4) insertPair(st *Stats, k *Key4, h uint64, v, peer *Value4, now Tick) *Value4 {
	pk := v.peerKey(k)
	ph := pk.Hash(t.seed)
	for t.n+2 > t.max {
		if !t.evict(st, t.home(h), now) && !t.evict(st, t.home(ph), now) {
			st.Full++
			return nil
		}
	}
	v.Flags |= unit.FlowPeer
	peer.Flags |= unit.FlowPeer | unit.FlowReply
	st.Inserted += 2
	// The peer goes in first so that placing k, which may move other
	// entries but never itself, leaves k's slot known.
	if _, lost, lk, lv := t.place(pk, ph, *peer); lost {
		t.dropLost(st, &lk, &lv)
	}
	at, lost, lk, lv := t.place(*k, h, *v)
	if lost {
		t.dropLost(st, &lk, &lv)
		return t.lookup(k, h)
	}
	return t.valueAt(at)
}

// dropLost accounts for an entry pushed out by Robin Hood displacement
// and removes its peer so that no half of a pair is left behind.
func (t *table4) dropLost(st *Stats, k *Key4, v *Value4) {
	st.Evicted++
	t.log.add4(k, v)
	if v.Flags&unit.FlowPeer != 0 {
		pk := v.peerKey(k)
		if i := t.lookupIndex(&pk, pk.Hash(t.seed)); i >= 0 {
			t.log.add4(&t.slots[i].key, &t.slots[i].val)
			t.deleteAt(i)
			st.Evicted++
		}
	}
}

// removeAt removes the entry in slot i and its peer, returning how many
// entries went. The removal log hears of the client-direction entry,
// whichever half slot i holds.
func (t *table4) removeAt(i int) int {
	s := &t.slots[i]
	t.log.add4(&s.key, &s.val)
	if s.val.Flags&unit.FlowPeer == 0 {
		t.deleteAt(i)
		return 1
	}
	pk := s.val.peerKey(&s.key)
	t.deleteAt(i)
	if j := t.lookupIndex(&pk, pk.Hash(t.seed)); j >= 0 {
		t.log.add4(&t.slots[j].key, &t.slots[j].val)
		t.deleteAt(j)
		return 2
	}
	return 1
}

func (t *table4) remove(st *Stats, k *Key4) bool {
	i := t.lookupIndex(k, k.Hash(t.seed))
	if i < 0 {
		return false
	}
	st.Deleted += uint64(t.removeAt(i))
	return true
}

// pairState returns the state of the connection the entry in slot i
// belongs to: its latest activity and the union of both directions' flags.
func (t *table4) pairState(i int) (Tick, unit.FlowFlags) {
	s := &t.slots[i]
	last, flags := s.val.LastSeen, s.val.Flags
	if flags&unit.FlowPeer != 0 {
		pk := s.val.peerKey(&s.key)
		if p := t.lookup(&pk, pk.Hash(t.seed)); p != nil {
			if int32(p.LastSeen-last) > 0 {
				last = p.LastSeen
			}
			flags |= p.Flags
		}
	}
	return last, flags
}

// evict removes a victim near start: among the first evictWindow
// occupied slots, ranked by their own state, the best few are checked
// with their peers (a pair is only as idle as its busier half) and the
// best of those goes: a closed connection (RST, then FIN) first,
// otherwise the longest idle. Peer lookups are random memory accesses,
// so only evictVerify of them are made. It reports whether it removed
// anything.
func (t *table4) evict(st *Stats, start int, now Tick) bool {
	var cand [evictVerify]int
	var score [evictVerify]uint64
	n := 0
	i := start
	for seen, visited := 0, 0; seen < evictWindow && visited < len(t.slots); visited++ {
		if s := &t.slots[i]; s.dist != 0 {
			seen++
			sc := evictScore(now, s.val.LastSeen, s.val.Flags)
			// Keep the evictVerify best by own score, best first.
			j := min(n, evictVerify-1)
			if n < evictVerify || sc > score[j] {
				for j > 0 && sc > score[j-1] {
					cand[j], score[j] = cand[j-1], score[j-1]
					j--
				}
				cand[j], score[j] = i, sc
				n = min(n+1, evictVerify)
			}
		}
		if i++; i == len(t.slots) {
			i = 0
		}
	}
	if n == 0 {
		return false
	}
	best, bestScore := -1, uint64(0)
	for k := range n {
		last, flags := t.pairState(cand[k])
		if sc := evictScore(now, last, flags); best < 0 || sc > bestScore {
			best, bestScore = cand[k], sc
		}
	}
	st.Evicted += uint64(t.removeAt(best))
	return true
}

// expire visits up to budget slots from *cursor and removes connections
// idle past their timeout.
func (t *table4) expire(st *Stats, to *Timeouts, now Tick, budget int, cursor *int) int {
	removed := 0
	if *cursor >= len(t.slots) {
		*cursor = 0
	}
	for ; budget > 0 && t.n > 0; budget-- {
		i := *cursor
		if s := &t.slots[i]; s.dist != 0 {
			last, flags := t.pairState(i)
			if now.Since(last) > to.of(s.key.Proto, flags) {
				n := t.removeAt(i)
				removed += n
				st.Expired += uint64(n)
				// The run after i shifted into i: look at it again.
				continue
			}
		}
		if *cursor++; *cursor == len(t.slots) {
			*cursor = 0
		}
	}
	return removed
}

// forEachHome calls fn for the entries whose home slot is in [start,
// start+n) and returns the home slot to continue from, or -1 after the
// last. fn must not change the table. Between calls the table may
// change, but an entry never changes its home, and the scan of a range
// follows its entries wherever Robin Hood displacement or backward-shift
// deletion put them (never past the first empty slot after the range: no
// entry lies beyond an empty slot from its home). So a walk in steps
// reports every entry that lives through the whole walk exactly once;
// entries added or removed meanwhile may or may not be seen.
func (t *table4) forEachHome(start, n int, fn func(k *Key4, v *Value4)) int {
	size := len(t.slots)
	start = max(start, 0)
	end := min(start+n, size)
	width := end - start
	for i, off := start, 0; off < size; off++ {
		// off is slot i's distance from start; home is off-(dist-1)
		// from start: negative for an earlier range's entry.
		if s := &t.slots[i]; s.dist == 0 {
			if off >= width {
				break // the range's entries end at the first empty slot past it
			}
		} else if home := off - int(s.dist-1); home >= width {
			break // past the range, a later range's entries begin
		} else if home >= 0 {
			fn(&s.key, &s.val)
		}
		if i++; i == size {
			i = 0
		}
	}
	if end == size {
		return -1
	}
	return end
}

// forEach calls fn for every entry until it returns false. fn must not
// change the table.
func (t *table4) forEach(fn func(k *Key4, v *Value4) bool) {
	for i := range t.slots {
		if s := &t.slots[i]; s.dist != 0 && !fn(&s.key, &s.val) {
			return
		}
	}
}
