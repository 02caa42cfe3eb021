package encap

import (
	"fmt"
	"net/netip"
)

// Tuple is the original 5-tuple a flow ID stands for. IPv4 addresses
// occupy the first four bytes of Src and Dst.
type Tuple struct {
	Src, Dst         [16]byte
	SrcPort, DstPort uint16
	Proto            uint8
	V6               bool
}

// Client and VIP are the tuple's ends as addresses with ports.
func (t *Tuple) Client() netip.AddrPort { return netip.AddrPortFrom(t.addr(&t.Src), t.SrcPort) }
func (t *Tuple) VIP() netip.AddrPort    { return netip.AddrPortFrom(t.addr(&t.Dst), t.DstPort) }

func (t *Tuple) addr(b *[16]byte) netip.Addr {
	if t.V6 {
		return netip.AddrFrom16(*b)
	}
	return netip.AddrFrom4([4]byte(b[:4]))
}

type slot struct {
	t    Tuple
	used bool
}

// Table is one worker's share of a forwarder's flow IDs.
type Table struct {
	worker, workers uint32
	slots           []slot
	cursor          int
	n               int
}

// FirstMigratedID is the first flow ID no worker allocates: the IDs from
// it up are the control process's, for the connections its acceptor
// migrates to hosts (issue 14), so that the Migrate can carry the flow's
// mapping before the forwarder has the flow. Such a flow has no slot in
// any worker's table; the host holds its mapping from the Migrate.
const FirstMigratedID uint32 = 1 << 31

// MaxCapacity bounds a worker's table (80 MiB of slots).
const MaxCapacity = 1 << 21

// New makes the table of worker (0-based) out of workers, with room for
// capacity simultaneous flows.
func New(worker, workers, capacity int) (*Table, error) {
	if workers < 1 || worker < 0 || worker >= workers {
		return nil, fmt.Errorf("encap: worker %d of %d: out of range", worker, workers)
	}
	if capacity < 1 || capacity > MaxCapacity || uint64(capacity)*uint64(workers) > uint64(FirstMigratedID) {
		return nil, fmt.Errorf("encap: capacity %d with %d workers: want 1 to %d and a product within the workers' flow IDs (below %d)", capacity, workers, MaxCapacity, FirstMigratedID)
	}
	return &Table{worker: uint32(worker), workers: uint32(workers), slots: make([]slot, capacity)}, nil
}

// id and index convert between a flow ID and this table's slot index.
func (t *Table) id(i int) uint32 { return uint32(i)*t.workers + t.worker }

func (t *Table) index(id uint32) (int, bool) {
	if id%t.workers != t.worker {
		return 0, false
	}
	i := int(id / t.workers)
	return i, i < len(t.slots)
}

// probeLimit bounds an allocation's search for a reusable slot.
const probeLimit = 64

// Alloc assigns a flow ID to tuple. Slots are handed out round-robin so
// that an ID is reused as late as possible; an occupied slot is reused
// when stale reports that its flow no longer exists (the flow table is
// the authority on that, so the two cannot disagree for long). It fails
// when probeLimit slots in a row are live.
func (t *Table) Alloc(tuple *Tuple, stale func(id uint32, t *Tuple) bool) (uint32, bool) {
	for range probeLimit {
		i := t.cursor
		if t.cursor++; t.cursor == len(t.slots) {
			t.cursor = 0
		}
		s := &t.slots[i]
		if s.used && !stale(t.id(i), &s.t) {
			continue
		}
		if !s.used {
			t.n++
		}
		s.t, s.used = *tuple, true
		return t.id(i), true
	}
	return 0, false
}

// Put records a mapping made elsewhere (the host side). It reports false
// when id is not one of this table's.
func (t *Table) Put(id uint32, tuple *Tuple) bool {
	i, ok := t.index(id)
	if !ok {
		return false
	}
	if !t.slots[i].used {
		t.n++
	}
	t.slots[i] = slot{t: *tuple, used: true}
	return true
}

// Get returns the tuple of id, or nil.
func (t *Table) Get(id uint32) *Tuple {
	i, ok := t.index(id)
	if !ok || !t.slots[i].used {
		return nil
	}
	return &t.slots[i].t
}

// Free forgets id.
func (t *Table) Free(id uint32) {
	if i, ok := t.index(id); ok && t.slots[i].used {
		t.slots[i] = slot{}
		t.n--
	}
}

// Len returns the number of mappings held.
func (t *Table) Len() int { return t.n }

// ForEach calls fn for every mapping until fn returns false.
func (t *Table) ForEach(fn func(id uint32, t *Tuple) bool) {
	for i := range t.slots {
		if t.slots[i].used && !fn(t.id(i), &t.slots[i].t) {
			return
		}
	}
}
