package maglev

import (
	"errors"
	"fmt"
	"math/bits"
	"slices"

	"github.com/tetherlb/tether/internal/mix"
)

// DefaultSize is the paper's table size for production: a prime well
// above 100 times any backend count Tether expects per VIP, which keeps
// every backend within about 1% of its share (§3.4).
const DefaultSize = 65537

// MaxSize bounds the table size: a table costs 2 bytes per entry and a
// build touches every entry, so anything larger is a configuration
// mistake rather than a wish for better balance. It also keeps every
// intermediate sum in Populate well inside 32 bits.
const MaxSize = 1 << 24

// MaxBackends is the most backends a table holds: entries are uint16 and
// the value 0xffff marks a free entry while the table is populated.
const MaxBackends = 65535

// The errors New and Populate return wrap one of these, so callers can
// tell a bad size from a bad backend list with errors.Is.
var (
	ErrSize            = errors.New("maglev: bad table size")
	ErrNoBackends      = errors.New("maglev: no backend has a weight above 0")
	ErrTooManyBackends = errors.New("maglev: too many backends")
	ErrDuplicateName   = errors.New("maglev: duplicate backend name")
	ErrTableTooSmall   = errors.New("maglev: table smaller than the number of backends")
	ErrPermutation     = errors.New("maglev: bad permutation parameters")
)

// Backend is one entry the table distributes over.
type Backend struct {
	// Name is the backend's stable identity; it is hashed into the
	// permutation, so the same name gets the same preferences on every
	// unit and after every rebuild, whatever its position in the list.
	Name string
	// Weight is relative; a backend with weight 0 takes no entries.
	Weight uint32
}

// Table is a populated lookup table. It is immutable once New returns,
// so any number of goroutines may call its methods concurrently.
type Table struct {
	entries []uint16
	counts  []uint32
	// fastmod is Lemire's precomputed reciprocal of M: a 64-bit division
	// costs more than the rest of a lookup together.
	fastmod uint64
}

// New populates a table of size m over backends; entries are indexes into
// backends. m must be a prime no larger than MaxSize and at least the
// number of backends with a weight above 0. Backend names must be unique
// (weight-0 backends included: a name is an identity, not a slot).
func New(backends []Backend, m uint32) (*Table, error) {
	if len(backends) > MaxBackends {
		return nil, fmt.Errorf("%w: %d, at most %d", ErrTooManyBackends, len(backends), MaxBackends)
	}
	// The size first: the permutation hashes reduce modulo m and m-1.
	if err := checkSize(m); err != nil {
		return nil, err
	}
	offsets := make([]uint32, len(backends))
	skips := make([]uint32, len(backends))
	weights := make([]uint32, len(backends))
	first := make(map[string]int, len(backends))
	for i, b := range backends {
		if j, dup := first[b.Name]; dup {
			return nil, fmt.Errorf("%w: %q is backend %d and backend %d", ErrDuplicateName, b.Name, j, i)
		}
		first[b.Name] = i
		offsets[i], skips[i] = permutation(b.Name, m)
		weights[i] = b.Weight
	}
	entries, err := Populate(offsets, skips, weights, m)
	if err != nil {
		return nil, err
	}
	t := &Table{entries: entries, counts: make([]uint32, len(backends)), fastmod: ^uint64(0)/uint64(m) + 1}
	for _, e := range entries {
		t.counts[e]++
	}
	return t, nil
}

// Lookup returns the index of the backend for a flow hash in O(1):
// entry[h mod M], where h = uint32(hash ^ hash>>32) folds the 64-bit
// flow hash to 32 bits. The caller's hash must be well mixed in all 64
// bits (dataplane's is). Lookup does not allocate and inlines.
func (t *Table) Lookup(hash uint64) uint16 { return t.entries[t.Slot(hash)] }

// Slot returns the entry index Lookup reads for hash: exactly
// uint32(hash^hash>>32) % M, computed by multiplication (Lemire, Kaser,
// Kurz, "Faster remainder by direct computation", 2019), which is exact
// for every 32-bit dividend and divisor. Folding to 32 bits is what makes
// that method exact; M <= 2^24 so the fold loses nothing that matters.
// The mapping is part of the cross-unit contract (see permutation).
func (t *Table) Slot(hash uint64) uint32 {
	h := uint32(hash ^ hash>>32)
	hi, _ := bits.Mul64(t.fastmod*uint64(h), uint64(len(t.entries)))
	return uint32(hi)
}

// Size returns M.
func (t *Table) Size() uint32 { return uint32(len(t.entries)) }

// Entries returns the table itself, for tests and tools; callers must not
// change it (the table is shared by concurrent readers).
func (t *Table) Entries() []uint16 { return t.entries[:len(t.entries):len(t.entries)] }

// Counts returns how many entries each backend owns, indexed like the
// backends given to New; a copy, for diagnostics.
func (t *Table) Counts() []uint32 { return append([]uint32(nil), t.counts...) }

// Populate is the paper's Pseudocode 1, extended for weights, over
// explicit permutations: backend i prefers entries offsets[i],
// offsets[i]+skips[i], offsets[i]+2*skips[i], ... (mod m). Backends take
// turns; at each turn a backend takes its most preferred entry still
// free, until all m entries are filled. The result names backends by
// their index in the arguments.
//
// Weights change only how often backends take turns ("adjusting the
// relative frequency of the backends' turns", §3.4), by credit: in every
// round each backend, in index order, earns its weight in credit and
// takes a turn when it has maxWeight of credit, paying maxWeight for it.
// So backend i takes its k-th turn in round ceil(k*maxWeight/w_i), and
// within a round turns go in index order. With equal weights every
// backend takes exactly one turn per round: the paper's algorithm,
// unchanged. In general backend i owns about m*w_i/Σw entries: for any
// two backends, count_i*w_j + 2*w_j > count_j*w_i. A backend whose
// weight is tiny next to the others' may own no entry at all when m is
// small; the heaviest always owns at least one.
//
// This turn order is part of the cross-unit contract: units must fill
// identical tables from identical configurations.
//
// m must be a prime (so that every permutation visits every entry) no
// larger than MaxSize, every offset below m, every skip in [1, m-1], at
// least one weight above 0, and at most m backends with a weight above 0.
func Populate(offsets, skips, weights []uint32, m uint32) ([]uint16, error) {
	n := len(offsets)
	if len(skips) != n || len(weights) != n {
		return nil, fmt.Errorf("%w: %d offsets, %d skips and %d weights", ErrPermutation, n, len(skips), len(weights))
	}
	if n > MaxBackends {
		return nil, fmt.Errorf("%w: %d, at most %d", ErrTooManyBackends, n, MaxBackends)
	}
	if err := checkSize(m); err != nil {
		return nil, err
	}
	var maxW uint32
	var sum uint64
	live := 0
	for i, w := range weights {
		if offsets[i] >= m || skips[i] == 0 || skips[i] >= m {
			return nil, fmt.Errorf("%w: backend %d: offset %d or skip %d out of range for size %d", ErrPermutation, i, offsets[i], skips[i], m)
		}
		if w > 0 {
			live++
			maxW = max(maxW, w)
			sum += uint64(w)
		}
	}
	if live == 0 {
		return nil, ErrNoBackends
	}
	if uint32(live) > m {
		return nil, fmt.Errorf("%w: %d backends with a weight above 0, %d entries", ErrTableTooSmall, live, m)
	}
	f := newFiller(offsets, skips, m)
	// Both schedules give the same table; pick the cheaper. After R
	// rounds the backends have taken at least R*sum/maxW - live turns, so
	// the rounds loop makes at most about (m+live)*maxW/sum rounds of
	// live steps each: m steps when weights are equal, but m*live when
	// one backend is much heavier than the rest (seconds, for 1000
	// backends at m = 2^20), where the heap's m*log(live) wins. Measured,
	// a heap turn costs about as much as 40 to 80 steps of the rounds loop.
	const heapCost = 64
	if rounds := (uint64(m) + uint64(live)) * uint64(maxW) / sum; rounds*uint64(live) <= heapCost*uint64(m) {
		f.rounds(weights, maxW)
	} else {
		f.heap(weights, maxW)
	}
	return f.entries, nil
}

// free marks an entry not yet taken; MaxBackends keeps it from being an
// index.
const free = ^uint16(0)

// filler is the state of one population.
type filler struct {
	entries []uint16
	// next[i] is the entry backend i's permutation names next: the
	// paper's permutation[i][next[i]], kept as the entry itself and
	// advanced by skip, so that the permutations are never materialised
	// (M*N of them would be 262 MB for 1000 backends at M = 65537) and no
	// division is needed.
	next  []uint32
	skips []uint32
}

func newFiller(offsets, skips []uint32, m uint32) *filler {
	f := &filler{entries: make([]uint16, m), next: slices.Clone(offsets), skips: skips}
	for i := range f.entries {
		f.entries[i] = free
	}
	return f
}

// take gives backend i its most preferred entry that is still free. Every
// turn fills exactly one entry: m is prime and 0 < skip < m, so a
// permutation visits every entry, and take is called only while one is
// free.
func (f *filler) take(i int) {
	m := uint32(len(f.entries))
	c, s := f.next[i], f.skips[i]
	for f.entries[c] != free {
		if c += s; c >= m {
			c -= m
		}
	}
	f.entries[c] = uint16(i)
	if c += s; c >= m {
		c -= m
	}
	f.next[i] = c
}

// rounds runs the schedule as Populate describes it: round after round,
// each weighted backend in index order earns its weight and takes a turn
// when it has maxW of credit. With equal weights every backend takes a
// turn every round, and this is Pseudocode 1 as printed.
func (f *filler) rounds(weights []uint32, maxW uint32) {
	var live []int
	for i, w := range weights {
		if w > 0 {
			live = append(live, i)
		}
	}
	credit := make([]uint64, len(weights))
	filled := 0
	for {
		for _, i := range live {
			if credit[i] += uint64(weights[i]); credit[i] < uint64(maxW) {
				continue
			}
			credit[i] -= uint64(maxW)
			f.take(i)
			if filled++; filled == len(f.entries) {
				return
			}
		}
	}
}

// heap runs the same schedule with the backends in a min-heap by (round
// of next turn, index): M turns in M*log N steps, whatever the weights.
func (f *filler) heap(weights []uint32, maxW uint32) {
	s := schedule{due: make([]uint64, len(weights)), turns: make([]uint64, len(weights)), weights: weights, maxW: uint64(maxW)}
	for i, w := range weights {
		if w > 0 {
			s.due[i] = s.round(uint64(i), 1)
			s.heap = append(s.heap, uint32(i))
		}
	}
	for j := len(s.heap)/2 - 1; j >= 0; j-- {
		s.down(j)
	}
	for range len(f.entries) {
		i := s.heap[0]
		f.take(int(i))
		s.turns[i]++
		s.due[i] = s.round(uint64(i), s.turns[i]+1)
		s.down(0)
	}
}

// schedule orders weighted turns.
type schedule struct {
	heap    []uint32 // backend indexes, a binary min-heap by (due, index)
	due     []uint64 // the round of each backend's next turn
	turns   []uint64 // turns taken so far
	weights []uint32
	maxW    uint64
}

// round is the round of backend i's k-th turn, ceil(k*maxW/w). k <= M+1
// and maxW < 2^32, so the product fits 64 bits.
func (s *schedule) round(i, k uint64) uint64 {
	w := uint64(s.weights[i])
	return (k*s.maxW + w - 1) / w
}

func (s *schedule) less(a, b uint32) bool {
	return s.due[a] < s.due[b] || s.due[a] == s.due[b] && a < b
}

// down restores the heap order below position j.
func (s *schedule) down(j int) {
	h := s.heap
	for {
		c := 2*j + 1
		if c >= len(h) {
			return
		}
		if c+1 < len(h) && s.less(h[c+1], h[c]) {
			c++
		}
		if !s.less(h[c], h[j]) {
			return
		}
		h[j], h[c] = h[c], h[j]
		j = c
	}
}

// checkSize reports whether m can be a table size: a prime, so that
// every skip in [1, m-1] is coprime with m and each permutation is a
// permutation; and at most MaxSize.
func checkSize(m uint32) error {
	if m > MaxSize {
		return fmt.Errorf("%w: %d is above %d", ErrSize, m, MaxSize)
	}
	if !isPrime(m) {
		return fmt.Errorf("%w: %d is not a prime", ErrSize, m)
	}
	return nil
}

// isPrime is trial division: m <= 2^24 needs at most 4096 divisions,
// nothing next to populating the table.
func isPrime(m uint32) bool {
	if m < 2 {
		return false
	}
	for d := uint32(2); d*d <= m; d++ {
		if m%d == 0 {
			return false
		}
	}
	return true
}

// permutation returns the paper's offset and skip for a backend name in a
// table of size m:
//
//	offset = h(name, 0xcbf29ce484222325) mod m
//	skip   = h(name, 0x84222325cbf29ce4) mod (m-1) + 1
//
// where h(s, seed) is FNV-1a 64 over the bytes of s started from seed
// instead of the offset basis (for each byte b: x ^= b; x *= 0x100000001b3),
// then the MurmurHash3 fmix64 finalizer (x ^= x>>33; x *= 0xff51afd7ed558ccd;
// x ^= x>>33; x *= 0xc4ceb9fe1a85ec53; x ^= x>>33), so that every input
// bit reaches the low bits the modulus keeps. The first seed is the FNV
// offset basis, the second the same rotated by 32 bits.
//
// This is a wire-compatibility contract, not an implementation detail:
// units behind one router must build identical tables from the same
// configuration, so changing it sends existing flows to other backends
// on every unit that upgrades. TestDeterministic pins it.
func permutation(name string, m uint32) (offset, skip uint32) {
	return uint32(hash(name, seedOffset) % uint64(m)), uint32(hash(name, seedSkip)%uint64(m-1)) + 1
}

const (
	seedOffset = 0xcbf29ce484222325
	seedSkip   = 0x84222325cbf29ce4
)

func hash(s string, seed uint64) uint64 {
	h := uint64(seed)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 0x100000001b3
	}
	return mix.Fmix64(h)
}
