package maglev

import (
	"errors"
	"fmt"
	"math/big"
	"math/bits"
)

// DefaultSize is the paper's table size for production: a prime well
// above 100 times any backend count Tether expects per VIP.
const DefaultSize = 65537

// MaxBackends is the most backends a table holds (entries are uint16).
const MaxBackends = 65535

// Backend is one entry the table distributes over.
type Backend struct {
	// Name is the backend's stable identity; it is hashed into the
	// permutation, so the same name gets the same preferences on every
	// unit and after every rebuild.
	Name string
	// Weight is relative; a backend with weight 0 takes no entries.
	Weight uint32
}

// Table is a populated lookup table.
type Table struct {
	entries []uint16
	counts  []uint32
	// fastmod is Lemire's precomputed reciprocal of M: a 64-bit division
	// costs more than the rest of a lookup together.
	fastmod uint64
}

// New populates a table of size m over backends. Entries name indexes
// into backends.
func New(backends []Backend, m uint32) (*Table, error) {
	if len(backends) > MaxBackends {
		return nil, fmt.Errorf("maglev: %d backends: at most %d", len(backends), MaxBackends)
	}
	offsets := make([]uint32, len(backends))
	skips := make([]uint32, len(backends))
	weights := make([]uint32, len(backends))
	seen := make(map[string]bool, len(backends))
	for i, b := range backends {
		if seen[b.Name] {
			return nil, fmt.Errorf("maglev: backend name %q appears twice", b.Name)
		}
		seen[b.Name] = true
		if m > 1 {
			offsets[i] = uint32(hash(b.Name, seedOffset) % uint64(m))
			skips[i] = uint32(hash(b.Name, seedSkip)%uint64(m-1)) + 1
		}
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

// Lookup returns the index of the backend for a flow hash: entry
// (h mod M), where h folds the hash to 32 bits. The modulus is computed
// by multiplication (Lemire, Kaser, Kurz, "Faster remainder by direct
// computation", 2019), exactly equal to h % M.
func (t *Table) Lookup(hash uint64) uint16 { return t.entries[t.Slot(hash)] }

// Slot returns the entry index Lookup reads for hash.
func (t *Table) Slot(hash uint64) uint32 {
	h := uint32(hash ^ hash>>32)
	hi, _ := bits.Mul64(t.fastmod*uint64(h), uint64(len(t.entries)))
	return uint32(hi)
}

// Size returns M.
func (t *Table) Size() uint32 { return uint32(len(t.entries)) }

// Entries returns the table itself; callers must not change it.
func (t *Table) Entries() []uint16 { return t.entries }

// Counts returns how many entries each backend owns; callers must not
// change it.
func (t *Table) Counts() []uint32 { return t.counts }

// Populate is the paper's Pseudocode 1, extended for weights, over
// explicit permutations: backend i prefers entries offsets[i],
// offsets[i]+skips[i], offsets[i]+2*skips[i], ... (mod m). Backends take
// turns; at each turn a backend takes its most preferred entry still
// free. With weights, every round each backend earns its weight in credit
// and takes one turn per maxWeight of credit it has, so with equal
// weights every backend takes exactly one turn per round, as in the
// paper, and in general backend i takes about w_i/Σw of the entries.
func Populate(offsets, skips, weights []uint32, m uint32) ([]uint16, error) {
	n := len(offsets)
	if len(skips) != n || len(weights) != n {
		return nil, errors.New("maglev: offsets, skips and weights differ in length")
	}
	if m < 2 || !big.NewInt(int64(m)).ProbablyPrime(20) {
		return nil, fmt.Errorf("maglev: table size %d is not a prime", m)
	}
	var maxW uint32
	live := 0
	for i, w := range weights {
		if w > 0 {
			live++
			maxW = max(maxW, w)
		}
		if offsets[i] >= m || skips[i] == 0 || skips[i] >= m {
			return nil, fmt.Errorf("maglev: backend %d: offset %d or skip %d out of range for size %d", i, offsets[i], skips[i], m)
		}
	}
	if live == 0 {
		return nil, errors.New("maglev: no backend has a weight above 0")
	}
	if uint32(live) > m {
		return nil, fmt.Errorf("maglev: %d backends do not fit a table of %d entries", live, m)
	}
	const empty = ^uint16(0)
	entry := make([]uint16, m)
	for i := range entry {
		entry[i] = empty
	}
	next := make([]uint64, n)   // how far along its permutation each backend is
	credit := make([]uint64, n) // weighted turns earned
	filled := uint32(0)
	for filled < m {
		for i := 0; i < n && filled < m; i++ {
			if weights[i] == 0 {
				continue
			}
			credit[i] += uint64(weights[i])
			for credit[i] >= uint64(maxW) && filled < m {
				credit[i] -= uint64(maxW)
				// Walk the permutation to the first free entry. The
				// permutation visits every entry because m is prime and
				// 0 < skip < m.
				c := (uint64(offsets[i]) + next[i]*uint64(skips[i])) % uint64(m)
				for entry[c] != empty {
					next[i]++
					c = (uint64(offsets[i]) + next[i]*uint64(skips[i])) % uint64(m)
				}
				entry[c] = uint16(i)
				next[i]++
				filled++
			}
		}
	}
	return entry, nil
}

// The permutation hashes: FNV-1a over the backend's name, started from two
// different seeds, then the MurmurHash3 finalizer so that every input bit
// reaches the low bits the modulus keeps. These are part of the contract
// between units: two units must build identical tables from the same
// configuration, so changing them changes every table in a cluster.
const (
	seedOffset = 0xcbf29ce484222325 // the FNV-1a 64 offset basis
	seedSkip   = 0x84222325cbf29ce4
)

func hash(s string, seed uint64) uint64 {
	h := uint64(seed)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 0x100000001b3
	}
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	h *= 0xc4ceb9fe1a85ec53
	h ^= h >> 33
	return h
}
