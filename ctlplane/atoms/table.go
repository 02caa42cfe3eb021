package atoms

import (
	"container/heap"
	"time"

	"github.com/tetherlb/tether/api/atompb"
)

// Atom is one entry of the distributed table, as callers see it.
type Atom struct {
	// Key is the session identifier (atompb.KindRoute or KindSession
	// first).
	Key string
	// Host is the address of the host that holds the session.
	Host string
	// Data is the rest of what the key maps to (opaque here).
	Data []byte
	// Adder and AdderBoot name the unit that added it, in its life
	// then.
	Adder     string
	AdderBoot uint64
	// Stamp orders versions of the key: the larger is the later.
	Stamp uint64
	// Timeout is how long the atom lives once its adder is gone.
	Timeout time.Duration
	// Zombie marks a deleted atom kept for the dead time.
	Zombie bool
	// Cached marks a copy learnt by a query, kept briefly.
	Cached bool
	// Expires is when this unit drops it (zero: not while its adder
	// lives).
	Expires time.Time
}

// adder is an atom's adder, interned: many atoms share one.
type adder struct {
	name string
	boot uint64
}

// entry is an atom in this unit's portion. The key is the map's.
type entry struct {
	host    string // interned
	data    []byte
	adder   *adder
	stamp   uint64
	timeout uint32 // milliseconds
	zombie  bool
	cached  bool
	// orphan: the adder was gone when this unit last looked, and the
	// entry expires (unless it is a zombie or cached, which expire
	// anyway).
	orphan  bool
	expires int64 // unix nanoseconds; 0: never
}

// table is a unit's portion: the atoms, their interned hosts and adders,
// and the expiry queue. The Manager's mutex guards it.
type table struct {
	atoms   map[string]entry
	hosts   map[string]string
	adders  map[adder]*adder
	expiry  expiryHeap
	zombies int
	max     int
}

func newTable(max int) *table {
	return &table{atoms: map[string]entry{}, hosts: map[string]string{}, adders: map[adder]*adder{}, max: max}
}

func (t *table) intern(host string, a adder) (string, *adder) {
	h, ok := t.hosts[host]
	if !ok {
		h = host
		t.hosts[h] = h
	}
	p, ok := t.adders[a]
	if !ok {
		p = &adder{a.name, a.boot}
		t.adders[a] = p
	}
	return h, p
}

// outcome is what applying an atom did.
type outcome uint8

const (
	stored  outcome = iota + 1 // new key, or a later version
	same                       // this version was held already
	stale                      // a later version is held: refused
	full                       // the portion is full: refused
	deleted                    // a version turned zombie
	unknown                    // a delete of a key not held
)

// later reports whether version (stamp, adder) comes after the entry's.
func later(stamp uint64, adder string, e *entry) bool {
	return stamp > e.stamp || stamp == e.stamp && adder > e.adder.name
}

// put applies an atom received whole (a local add, a replica, a query's
// answer). A zombie copy of the held version turns it into a zombie.
func (t *table) put(a *atompb.Atom, cached bool, expires int64) outcome {
	old, held := t.atoms[a.GetKey()]
	switch {
	case held && old.stamp == a.GetStamp() && old.adder.name == a.GetAdder():
		if a.GetZombie() && !old.zombie {
			old.zombie, old.cached = true, false
			old.expires = expires
			t.atoms[a.GetKey()] = old
			t.zombies++
			return deleted
		}
		if old.cached && !cached {
			// A replica of what this unit had only as a cache: keep it.
			old.cached, old.expires = false, 0
			t.atoms[a.GetKey()] = old
		}
		return same
	case held && !later(a.GetStamp(), a.GetAdder(), &old):
		return stale
	case !held && len(t.atoms) >= t.max:
		return full
	}
	if held && !old.cached && cached {
		// A later version learnt by a query: this unit holds the key by
		// placement, so the copy stays a replica.
		cached, expires = false, 0
	}
	host, ad := t.intern(a.GetHost(), adder{a.GetAdder(), a.GetAdderBoot()})
	e := entry{host: host, data: append([]byte(nil), a.GetData()...), adder: ad, stamp: a.GetStamp(),
		timeout: a.GetTimeoutMs(), zombie: a.GetZombie(), cached: cached, expires: expires}
	if held && old.zombie {
		t.zombies--
	}
	if e.zombie {
		t.zombies++
	}
	t.atoms[a.GetKey()] = e
	if expires != 0 {
		heap.Push(&t.expiry, expiring{at: expires, key: a.GetKey(), stamp: e.stamp})
	}
	return stored
}

// del turns the version (stamp, adder) of key, or an earlier one, into
// a zombie that expires at expires.
func (t *table) del(key string, stamp uint64, adderName string, expires int64) outcome {
	e, held := t.atoms[key]
	switch {
	case !held:
		return unknown
	case later(e.stamp, e.adder.name, &entry{stamp: stamp, adder: &adder{name: adderName}}):
		return stale // a later version than the one deleted
	case e.zombie:
		return same
	}
	e.zombie, e.cached, e.expires = true, false, expires
	t.atoms[key] = e
	t.zombies++
	heap.Push(&t.expiry, expiring{at: expires, key: key, stamp: e.stamp})
	return deleted
}

// setExpiry gives the entry of key an expiry time (0: none), queuing it.
func (t *table) setExpiry(key string, e entry, at int64) {
	e.expires = at
	t.atoms[key] = e
	if at != 0 {
		heap.Push(&t.expiry, expiring{at: at, key: key, stamp: e.stamp})
	}
}

// expire drops the entries whose time has come, and returns how many.
func (t *table) expire(now int64) int {
	n := 0
	for len(t.expiry) > 0 && t.expiry[0].at <= now {
		x := heap.Pop(&t.expiry).(expiring)
		e, ok := t.atoms[x.key]
		if !ok || e.stamp != x.stamp || e.expires == 0 || e.expires > now {
			continue // replaced, or given a new time since
		}
		if e.zombie {
			t.zombies--
		}
		delete(t.atoms, x.key)
		n++
	}
	if len(t.expiry) == 0 && cap(t.expiry) > 1024 {
		t.expiry = nil
	}
	return n
}

// atom returns the entry of key as an Atom.
func (e *entry) atom(key string) Atom {
	a := Atom{Key: key, Host: e.host, Data: append([]byte(nil), e.data...), Adder: e.adder.name, AdderBoot: e.adder.boot,
		Stamp: e.stamp, Timeout: time.Duration(e.timeout) * time.Millisecond, Zombie: e.zombie, Cached: e.cached}
	if e.expires != 0 {
		a.Expires = time.Unix(0, e.expires)
	}
	return a
}

// wire returns the entry of key as the stream carries it.
func (e *entry) wire(key string) *atompb.Atom {
	return &atompb.Atom{Key: key, Host: e.host, Data: e.data, Adder: e.adder.name, AdderBoot: e.adder.boot,
		Stamp: e.stamp, TimeoutMs: e.timeout, Zombie: e.zombie}
}

// expiring is a queued expiry: the entry of key, in its version stamp.
type expiring struct {
	at    int64
	key   string
	stamp uint64
}

// expiryHeap orders expiries, soonest first (container/heap).
type expiryHeap []expiring

func (h expiryHeap) Len() int           { return len(h) }
func (h expiryHeap) Less(i, j int) bool { return h[i].at < h[j].at }
func (h expiryHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *expiryHeap) Push(x any)        { *h = append(*h, x.(expiring)) }
func (h *expiryHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}
