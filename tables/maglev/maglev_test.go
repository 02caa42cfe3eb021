package maglev

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// populateReference is Populate written as plainly as possible, to check
// Populate's fast paths against: Pseudocode 1 with permutation[i][next[i]]
// computed by division each time, and the credit rule visiting every
// backend every round. It trusts its arguments.
func populateReference(offsets, skips, weights []uint32, m uint32) []uint16 {
	var maxW uint64
	for _, w := range weights {
		maxW = max(maxW, uint64(w))
	}
	entry := make([]int, m)
	for i := range entry {
		entry[i] = -1
	}
	next := make([]uint64, len(offsets))
	credit := make([]uint64, len(offsets))
	filled := uint32(0)
	for filled < m {
		for i := range offsets {
			if weights[i] == 0 || filled == m {
				continue
			}
			credit[i] += uint64(weights[i])
			if credit[i] < maxW {
				continue
			}
			credit[i] -= maxW
			perm := func(j uint64) uint64 { return (uint64(offsets[i]) + j*uint64(skips[i])) % uint64(m) }
			for entry[perm(next[i])] >= 0 {
				next[i]++
			}
			entry[perm(next[i])] = i
			next[i]++
			filled++
		}
	}
	out := make([]uint16, m)
	for i, e := range entry {
		out[i] = uint16(e)
	}
	return out
}

// populateRounds and populateHeap run one schedule whatever the weights,
// so that each is checked where Populate would pick the other.
func populateRounds(offsets, skips, weights []uint32, m uint32) []uint16 {
	f := newFiller(offsets, skips, m)
	f.rounds(weights, slices.Max(weights))
	return f.entries
}

func populateHeap(offsets, skips, weights []uint32, m uint32) []uint16 {
	f := newFiller(offsets, skips, m)
	f.heap(weights, slices.Max(weights))
	return f.entries
}

// TestPaperExample reproduces Table 1 of the Maglev paper: three
// backends with the paper's permutations fill a table of 7 entries, and
// removing B1 leaves B0 and B2 with most of their entries. Worked by
// hand with Pseudocode 1: B0, B1, B2 take 3, 0, 4; then 1, 2, 5; then B0
// takes 6. Without B1: B0, B2 take 3, 4; 0, 5; 1, 6; then B0 takes 2.
func TestPaperExample(t *testing.T) {
	offsets := []uint32{3, 0, 3}
	skips := []uint32{4, 2, 1}
	const m = 7
	// The permutation table printed in the paper.
	perms := [][]uint32{{3, 0, 4, 1, 5, 2, 6}, {0, 2, 4, 6, 1, 3, 5}, {3, 4, 5, 6, 0, 1, 2}}
	for i, want := range perms {
		var got []uint32
		for j := range uint32(m) {
			got = append(got, (offsets[i]+j*skips[i])%m)
		}
		if !slices.Equal(got, want) {
			t.Fatalf("permutation of B%d = %v, want %v", i, got, want)
		}
	}
	cases := []struct {
		name    string
		weights []uint32
		want    []uint16
	}{
		{"before", []uint32{1, 1, 1}, []uint16{1, 0, 1, 0, 2, 2, 0}},
		// B1 removed: weight 0 takes no turns, so B0 and B2 populate
		// alone with their unchanged permutations.
		{"B1 removed", []uint32{1, 0, 1}, []uint16{0, 0, 0, 0, 2, 2, 2}},
		// Equal weights other than 1 are the same schedule.
		{"weights 5", []uint32{5, 5, 5}, []uint16{1, 0, 1, 0, 2, 2, 0}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := Populate(offsets, skips, c.weights, m)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, c.want) {
				t.Errorf("Populate = %v, want %v", got, c.want)
			}
			if got := populateReference(offsets, skips, c.weights, m); !slices.Equal(got, c.want) {
				t.Errorf("reference = %v, want %v", got, c.want)
			}
			if got := populateRounds(offsets, skips, c.weights, m); !slices.Equal(got, c.want) {
				t.Errorf("rounds schedule = %v, want %v", got, c.want)
			}
			if got := populateHeap(offsets, skips, c.weights, m); !slices.Equal(got, c.want) {
				t.Errorf("heap schedule = %v, want %v", got, c.want)
			}
		})
	}
}

// TestPopulateMatchesReference checks Populate and both schedules against
// the plain credit loop on random permutations and weights, including
// the skewed weights for which the heap exists.
func TestPopulateMatchesReference(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for iter := range 300 {
		m := []uint32{7, 13, 101, 1009, 4099}[iter%5]
		n := 1 + r.IntN(min(int(m), 40))
		offsets, skips, weights := make([]uint32, n), make([]uint32, n), make([]uint32, n)
		live := 0
		for i := range n {
			offsets[i] = r.Uint32N(m)
			skips[i] = 1 + r.Uint32N(m-1)
			switch iter % 4 {
			case 0: // equal
				weights[i] = 3
			case 1: // small
				weights[i] = r.Uint32N(5)
			case 2: // skewed
				weights[i] = 1 << r.IntN(32)
			default: // anything
				weights[i] = r.Uint32()
			}
			if weights[i] > 0 {
				live++
			}
		}
		if live == 0 {
			weights[0] = 1
		}
		got, err := Populate(offsets, skips, weights, m)
		if err != nil {
			t.Fatal(err)
		}
		want := populateReference(offsets, skips, weights, m)
		if !slices.Equal(got, want) {
			t.Fatalf("m=%d weights %v: Populate differs from the reference", m, weights)
		}
		if got := populateRounds(offsets, skips, weights, m); !slices.Equal(got, want) {
			t.Fatalf("m=%d weights %v: rounds schedule differs from the reference", m, weights)
		}
		if got := populateHeap(offsets, skips, weights, m); !slices.Equal(got, want) {
			t.Fatalf("m=%d weights %v: heap schedule differs from the reference", m, weights)
		}
	}
}

func backends(n int) []Backend {
	b := make([]Backend, n)
	for i := range b {
		b[i] = Backend{Name: fmt.Sprintf("10.0.%d.%d:80", i/250, i%250+1), Weight: 1}
	}
	return b
}

func TestBalance(t *testing.T) {
	for _, n := range []int{3, 10, 100, 650} {
		tb, err := New(backends(n), DefaultSize)
		if err != nil {
			t.Fatal(err)
		}
		avg := float64(DefaultSize) / float64(n)
		busiest, idlest := slices.Max(tb.Counts()), slices.Min(tb.Counts())
		ratio := float64(busiest) / avg
		t.Logf("N=%d: busiest %d entries, idlest %d, average %.1f, busiest/average %.5f", n, busiest, idlest, avg, ratio)
		if ratio > 1.01 {
			t.Errorf("N=%d: busiest backend holds %.2f%% more than the average; want at most 1%%", n, (ratio-1)*100)
		}
		// Every backend takes one turn per round, and every turn fills
		// one entry, so counts differ by at most the last partial round.
		if busiest-idlest > 1 {
			t.Errorf("N=%d: busiest %d, idlest %d: want a difference of at most 1", n, busiest, idlest)
		}
	}
}

// checkFair asserts what the credit schedule guarantees for any weights:
// count_i*w_j + 2*w_j > count_j*w_i for every pair of weighted backends
// (backend j owns at most R*w_j/maxW entries after R rounds, backend i at
// least floor((R-1)*w_i/maxW)); and weight-0 backends own nothing.
func checkFair(t *testing.T, weights, counts []uint32) {
	t.Helper()
	for i, wi := range weights {
		if wi == 0 {
			if counts[i] != 0 {
				t.Fatalf("backend %d has weight 0 and owns %d entries", i, counts[i])
			}
			continue
		}
		for j, wj := range weights {
			if wj == 0 {
				continue
			}
			ci, cj := uint64(counts[i]), uint64(counts[j])
			if ci*uint64(wj)+2*uint64(wj) <= cj*uint64(wi) {
				t.Fatalf("backend %d (weight %d) owns %d entries, backend %d (weight %d) %d: not proportional",
					i, wi, ci, j, wj, cj)
			}
		}
	}
}

func TestWeights(t *testing.T) {
	cases := []struct {
		name    string
		weights []uint32
	}{
		{"1,2,3,4 and a 0", []uint32{1, 2, 3, 4, 0}},
		{"one heavy", []uint32{1, 1, 1, 5}},
		{"zeros among", []uint32{0, 7, 0, 3, 0}},
		{"config maximum", []uint32{65536, 32768, 1000, 1000}},
		{"100 distinct", func() []uint32 {
			w := make([]uint32, 100)
			for i := range w {
				w[i] = uint32(i + 1)
			}
			return w
		}()},
		// Shares of about 1 entry: only the pairwise bound is meaningful.
		{"skewed", []uint32{1 << 31, 1 << 16, 1 << 16, 1}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := make([]Backend, len(c.weights))
			var sum uint64
			for i, w := range c.weights {
				b[i] = Backend{Name: fmt.Sprintf("backend-%d", i), Weight: w}
				sum += uint64(w)
			}
			tb, err := New(b, DefaultSize)
			if err != nil {
				t.Fatal(err)
			}
			counts := tb.Counts()
			checkFair(t, c.weights, counts)
			worst := 0.0
			for i, w := range c.weights {
				want := float64(DefaultSize) * float64(w) / float64(sum)
				if want < 1000 {
					continue // 1% of a few entries is less than one entry
				}
				dev := float64(counts[i])/want - 1
				worst = max(worst, dev, -dev)
				if dev > 0.01 || dev < -0.01 {
					t.Errorf("backend %d (weight %d): %d entries, want %.1f ±1%%", i, w, counts[i], want)
				}
			}
			t.Logf("largest relative deviation from w_i/Σw among shares of 1000+ entries: %.5f", worst)
		})
	}
}

// moved counts the entries of a and b that name different backends;
// index maps an index of b's backends to the same backend's index in a.
func moved(a, b []uint16, index func(uint16) uint16) int {
	n := 0
	for i := range a {
		if a[i] != index(b[i]) {
			n++
		}
	}
	return n
}

// TestDisruption checks the property that matters in production: when a
// backend goes, the flows of the others mostly stay where they are.
// Measured (M = 65537, N = 5 to 100): removing one backend moves its own
// entries plus 0.07% (N = 5) to 0.6% (N = 100) of the others'; adding
// one moves 1/(N+1) plus at most 0.7% of the table. The bounds allow 1%,
// and the test checks that a naive hash % N, which moves about (N-1)/N,
// fails them.
func TestDisruption(t *testing.T) {
	const slack = 0.01
	for _, n := range []int{5, 10, 50, 100} {
		// The same measure applied to entry s -> s % N, removing the
		// last backend, must fail, or the bounds prove nothing.
		naive := func(n int) []uint16 {
			e := make([]uint16, DefaultSize)
			for s := range e {
				e[s] = uint16(s % n)
			}
			return e
		}
		same := func(i uint16) uint16 { return i }
		if naiveMoved := float64(moved(naive(n), naive(n-1), same)-DefaultSize/n) / float64(DefaultSize-DefaultSize/n); naiveMoved <= slack {
			t.Fatalf("N=%d: hash %% N moves %.4f of the other backends' entries, within the bound", n, naiveMoved)
		}
		all := backends(n)
		before, err := New(all, DefaultSize)
		if err != nil {
			t.Fatal(err)
		}
		for _, gone := range []int{0, 1, n / 2, n - 1} {
			rest := slices.Delete(slices.Clone(all), gone, gone+1)
			after, err := New(rest, DefaultSize)
			if err != nil {
				t.Fatal(err)
			}
			// Indexes after `gone` shift down by one in the new table.
			index := func(i uint16) uint16 {
				if int(i) >= gone {
					return i + 1
				}
				return i
			}
			total := moved(before.Entries(), after.Entries(), index)
			owned := int(before.Counts()[gone])
			frac := float64(total) / DefaultSize
			others := float64(total-owned) / float64(DefaultSize-owned)
			t.Logf("N=%3d remove #%-2d: %.4f of the table moved (1/N = %.4f); %.4f of the other backends' entries moved",
				n, gone, frac, 1/float64(n), others)
			if others > slack {
				t.Errorf("N=%d remove #%d: %.4f of the entries of backends that stayed moved; want at most %.2f", n, gone, others, slack)
			}
			if frac > 1/float64(n)+slack {
				t.Errorf("N=%d remove #%d: %.4f of the table moved; want at most 1/N + %.2f", n, gone, frac, slack)
			}
		}
		// Adding one backend (at the end, so indexes are unchanged)
		// moves about 1/(N+1).
		more := append(slices.Clone(all), Backend{Name: "new:80", Weight: 1})
		grown, err := New(more, DefaultSize)
		if err != nil {
			t.Fatal(err)
		}
		frac := float64(moved(before.Entries(), grown.Entries(), same)) / DefaultSize
		t.Logf("N=%3d add one:    %.4f of the table moved (1/(N+1) = %.4f)", n, frac, 1/float64(n+1))
		if frac > 1/float64(n+1)+slack {
			t.Errorf("N=%d: adding one backend moved %.4f of the table; want at most 1/(N+1) + %.2f", n, frac, slack)
		}
	}
}

func checksum(entries []uint16) uint64 {
	h := fnv.New64a()
	binary.Write(h, binary.LittleEndian, entries)
	return h.Sum64()
}

// TestDeterministic pins tables for fixed inputs. Units must build
// identical tables from identical configurations; if a checksum here
// changes, the permutation hashes or the turn order changed, and units
// running different versions would send the same flow to different
// backends. Do not update the constants to make the test pass.
func TestDeterministic(t *testing.T) {
	a, _ := New(backends(3), DefaultSize)
	b, _ := New(backends(3), DefaultSize)
	if !slices.Equal(a.Entries(), b.Entries()) {
		t.Fatal("two builds of the same input differ")
	}
	if got, want := checksum(a.Entries()), uint64(0xe2e4b5df1c3891bf); got != want {
		t.Errorf("equal weights: table checksum = %#x, want %#x", got, want)
	}
	w, err := New([]Backend{{"10.0.0.1:80", 1}, {"10.0.0.2:80", 2}, {"10.0.0.3:80", 3}, {"10.0.0.4:80", 0}}, DefaultSize)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := checksum(w.Entries()), uint64(0x287ed86a7e55721d); got != want {
		t.Errorf("weights 1,2,3,0: table checksum = %#x, want %#x", got, want)
	}
	// The hashes themselves, to tell which part changed.
	for _, c := range []struct {
		name         string
		offset, skip uint32
	}{{"10.0.0.1:80", 56402, 31996}, {"", 40479, 51995}, {"a", 19283, 52483}} {
		if o, s := permutation(c.name, DefaultSize); o != c.offset || s != c.skip {
			t.Errorf("permutation(%q) = (%d, %d), want (%d, %d)", c.name, o, s, c.offset, c.skip)
		}
	}
}

func TestErrors(t *testing.T) {
	many := make([]Backend, MaxBackends+1)
	for i := range many {
		many[i] = Backend{Name: fmt.Sprint(i), Weight: 1}
	}
	cases := []struct {
		name string
		b    []Backend
		m    uint32
		want error
	}{
		{"non-prime size", backends(3), 65536, ErrSize},
		{"size 0", backends(1), 0, ErrSize},
		{"size 1", backends(1), 1, ErrSize},
		{"size above the maximum", backends(3), 16777259, ErrSize},
		{"no backends", nil, 7, ErrNoBackends},
		{"all weights zero", []Backend{{"a", 0}, {"b", 0}}, 7, ErrNoBackends},
		{"duplicate names", []Backend{{"a", 1}, {"b", 1}, {"a", 1}}, 7, ErrDuplicateName},
		{"duplicate weightless names", []Backend{{"a", 1}, {"b", 0}, {"b", 0}}, 7, ErrDuplicateName},
		{"more backends than entries", backends(10), 7, ErrTableTooSmall},
		{"too many backends", many, DefaultSize, ErrTooManyBackends},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tb, err := New(c.b, c.m)
			if !errors.Is(err, c.want) {
				t.Fatalf("New = %v, %v; want an error wrapping %q", tb, err, c.want)
			}
			if !strings.HasPrefix(err.Error(), "maglev: ") {
				t.Errorf("error %q does not start with \"maglev: \"", err)
			}
		})
	}
	// More backends than entries is fine when the extra ones take none.
	if _, err := New([]Backend{{"a", 1}, {"b", 0}, {"c", 0}}, 2); err != nil {
		t.Errorf("3 backends, 1 weighted, M = 2: %v", err)
	}

	pcases := []struct {
		name                    string
		offsets, skips, weights []uint32
		m                       uint32
		want                    error
	}{
		{"lengths differ", []uint32{0, 1}, []uint32{1}, []uint32{1, 1}, 7, ErrPermutation},
		{"offset out of range", []uint32{7}, []uint32{1}, []uint32{1}, 7, ErrPermutation},
		{"skip 0", []uint32{0}, []uint32{0}, []uint32{1}, 7, ErrPermutation},
		{"skip m", []uint32{0}, []uint32{7}, []uint32{1}, 7, ErrPermutation},
		{"non-prime size", []uint32{0}, []uint32{1}, []uint32{1}, 9, ErrSize},
		{"all weights zero", []uint32{0}, []uint32{1}, []uint32{0}, 7, ErrNoBackends},
		{"more weighted backends than entries", []uint32{0, 0, 0}, []uint32{1, 1, 1}, []uint32{1, 1, 1}, 2, ErrTableTooSmall},
		{"too many backends", make([]uint32, MaxBackends+1), make([]uint32, MaxBackends+1), make([]uint32, MaxBackends+1), 7, ErrTooManyBackends},
	}
	for _, c := range pcases {
		t.Run("Populate/"+c.name, func(t *testing.T) {
			if _, err := Populate(c.offsets, c.skips, c.weights, c.m); !errors.Is(err, c.want) {
				t.Fatalf("Populate: %v; want an error wrapping %q", err, c.want)
			}
		})
	}
}

// TestLookupIsModulo checks the fastmod against the plain remainder it
// stands for, for every table size class and the 32-bit edge values.
func TestLookupIsModulo(t *testing.T) {
	hashes := []uint64{0, 1, 0xffffffff, 0xffffffff00000000, ^uint64(0), 0x0123456789abcdef, 0xdeadbeefcafef00d}
	r := rand.New(rand.NewPCG(3, 4))
	for range 200_000 {
		hashes = append(hashes, r.Uint64())
	}
	for _, m := range []uint32{2, 3, 7, 65537, 1048573} {
		tb, err := New(backends(2), m)
		if err != nil {
			t.Fatal(err)
		}
		edges := []uint64{uint64(m - 1), uint64(m), uint64(m + 1), uint64(m) << 32, uint64(2*m - 1)}
		for _, h := range append(edges, hashes...) {
			slot := uint32(h^h>>32) % m
			if got := tb.Slot(h); got != slot {
				t.Fatalf("M=%d: Slot(%#x) = %d, want %d", m, h, got, slot)
			}
			if got, want := tb.Lookup(h), tb.Entries()[slot]; got != want {
				t.Fatalf("M=%d: Lookup(%#x) = %d, want entry %d = %d", m, h, got, slot, want)
			}
		}
	}
	// The largest sizes, where the multiplication has the least room;
	// only the arithmetic matters here, so the entries stay empty.
	for _, m := range []uint32{16777183, 16777213} {
		tb := &Table{entries: make([]uint16, m), fastmod: ^uint64(0)/uint64(m) + 1}
		for _, h := range hashes {
			if got, want := tb.Slot(h), uint32(h^h>>32)%m; got != want {
				t.Fatalf("M=%d: Slot(%#x) = %d, want %d", m, h, got, want)
			}
		}
	}
}

func TestLookupDoesNotAllocate(t *testing.T) {
	tb, _ := New(backends(10), DefaultSize)
	var h uint64
	if a := testing.AllocsPerRun(1000, func() { h += uint64(tb.Lookup(h*0x9e3779b97f4a7c15 + 1)) }); a != 0 {
		t.Fatalf("Lookup allocates %v times", a)
	}
}

// TestReadOnlyViews checks that Counts hands out a copy, so tools cannot
// change a table that workers are reading.
func TestReadOnlyViews(t *testing.T) {
	tb, _ := New(backends(3), 7)
	c := tb.Counts()
	c[0] = 1000
	if tb.Counts()[0] == 1000 {
		t.Fatal("Counts returns the table's own slice")
	}
	if e := tb.Entries(); len(e) != 7 || cap(e) != 7 || tb.Size() != 7 {
		t.Fatalf("Entries has length %d, capacity %d; Size %d; want 7", len(e), cap(e), tb.Size())
	}
}

func FuzzNew(f *testing.F) {
	f.Add([]byte("a\x01b\x02c\x00"), uint16(7))
	f.Add([]byte("10.0.0.1:80\x0310.0.0.2:80\x01"), uint16(1009))
	f.Add([]byte("a\x07b\x01c\x01d\x01"), uint16(1999))
	f.Fuzz(func(t *testing.T, spec []byte, m uint16) {
		// spec is names, each ended by a weight byte below 8; weight
		// byte 7 stands for the largest weight, to reach the skewed
		// schedule.
		var b []Backend
		start := 0
		for i, c := range spec {
			if c < 8 {
				w := uint32(c)
				if c == 7 {
					w = ^uint32(0)
				}
				b = append(b, Backend{Name: string(spec[start:i]), Weight: w})
				start = i + 1
			}
		}
		size := uint32(m % 2000)
		tb, err := New(b, size)
		if err != nil {
			for _, e := range []error{ErrSize, ErrNoBackends, ErrTooManyBackends, ErrDuplicateName, ErrTableTooSmall} {
				if errors.Is(err, e) {
					return
				}
			}
			t.Fatalf("New: unexpected error %v", err)
		}
		if tb.Size() != size || len(tb.Entries()) != int(size) {
			t.Fatalf("size %d, %d entries; want %d", tb.Size(), len(tb.Entries()), size)
		}
		weights := make([]uint32, len(b))
		offsets, skips := make([]uint32, len(b)), make([]uint32, len(b))
		counts := make([]uint32, len(b))
		live := 0
		var maxW uint32
		equal := true
		for i := range b {
			weights[i] = b[i].Weight
			offsets[i], skips[i] = permutation(b[i].Name, size)
			if w := weights[i]; w > 0 {
				if live > 0 && w != maxW {
					equal = false
				}
				live++
				maxW = max(maxW, w)
			}
		}
		for i, e := range tb.Entries() {
			if int(e) >= len(b) || b[e].Weight == 0 {
				t.Fatalf("entry %d names backend %d, which is out of range or weightless", i, e)
			}
			counts[e]++
		}
		if !slices.Equal(counts, tb.Counts()) {
			t.Fatalf("Counts %v, entries give %v", tb.Counts(), counts)
		}
		checkFair(t, weights, counts)
		// The heaviest backend takes a turn in the first round, so owns
		// an entry. With equal weights every backend does (New
		// succeeded, so M >= N), and balance is within one entry; with
		// unequal weights a light backend may get nothing.
		heaviest := slices.Index(weights, maxW)
		if counts[heaviest] == 0 {
			t.Fatalf("the heaviest backend, %d, owns no entry", heaviest)
		}
		if equal {
			lo, hi := ^uint32(0), uint32(0)
			for i, c := range counts {
				if weights[i] > 0 {
					lo, hi = min(lo, c), max(hi, c)
				}
			}
			if lo == 0 || hi-lo > 1 {
				t.Fatalf("equal weights: counts from %d to %d", lo, hi)
			}
		}
		if want := populateReference(offsets, skips, weights, size); !slices.Equal(tb.Entries(), want) {
			t.Fatal("New differs from the reference population")
		}
		again, err := New(b, size)
		if err != nil || !slices.Equal(again.Entries(), tb.Entries()) {
			t.Fatalf("a second build differs (%v)", err)
		}
	})
}

var sink uint64

func BenchmarkLookup(b *testing.B) {
	tb, _ := New(backends(100), DefaultSize)
	var h uint64
	b.ReportAllocs()
	for b.Loop() {
		// Each lookup depends on the last, so the loop measures latency.
		h = h*0x9e3779b97f4a7c15 + uint64(tb.Lookup(h)) + 1
	}
	sink = h
}

func BenchmarkNew(b *testing.B) {
	skewed := backends(1000)
	skewed[0].Weight = 65536
	mixed := backends(1000)
	for i := range mixed {
		mixed[i].Weight = uint32(1 + i%10)
	}
	for _, c := range []struct {
		name string
		b    []Backend
	}{
		{"N=10", backends(10)},
		{"N=1000", backends(1000)},
		{"N=1000/weights_1-10", mixed},
		{"N=1000/one_weight_65536", skewed},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := New(c.b, DefaultSize); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
