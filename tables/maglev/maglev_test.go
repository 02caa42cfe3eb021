package maglev

import (
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"slices"
	"testing"
)

// TestPaperExample reproduces Table 1 of the Maglev paper: three
// backends with the paper's permutations fill a table of 7 entries, and
// removing B1 leaves B0 and B2 with most of their entries.
func TestPaperExample(t *testing.T) {
	offsets := []uint32{3, 0, 3}
	skips := []uint32{4, 2, 1}
	got, err := Populate(offsets, skips, []uint32{1, 1, 1}, 7)
	if err != nil {
		t.Fatal(err)
	}
	if want := []uint16{1, 0, 1, 0, 2, 2, 0}; !slices.Equal(got, want) {
		t.Fatalf("before: got %v, want %v", got, want)
	}
	// B1 removed: weight 0 takes no turns, so B0 and B2 populate alone
	// with their unchanged permutations.
	got, err = Populate(offsets, skips, []uint32{1, 0, 1}, 7)
	if err != nil {
		t.Fatal(err)
	}
	if want := []uint16{0, 0, 0, 0, 2, 2, 2}; !slices.Equal(got, want) {
		t.Fatalf("after: got %v, want %v", got, want)
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
		busiest := slices.Max(tb.Counts())
		ratio := float64(busiest) / avg
		t.Logf("N=%d: busiest %d entries, average %.1f, ratio %.4f", n, busiest, avg, ratio)
		if ratio > 1.01 {
			t.Errorf("N=%d: busiest backend holds %.2f%% more than the average; want at most 1%%", n, (ratio-1)*100)
		}
	}
}

func TestWeights(t *testing.T) {
	b := []Backend{{"a", 1}, {"b", 2}, {"c", 3}, {"d", 4}, {"z", 0}}
	tb, err := New(b, DefaultSize)
	if err != nil {
		t.Fatal(err)
	}
	c := tb.Counts()
	if c[4] != 0 {
		t.Fatalf("weight-0 backend owns %d entries", c[4])
	}
	for i := 0; i < 4; i++ {
		want := float64(DefaultSize) * float64(b[i].Weight) / 10
		if got := float64(c[i]); got < want*0.99 || got > want*1.01 {
			t.Errorf("backend %s (weight %d): %d entries, want %.0f ±1%%", b[i].Name, b[i].Weight, c[i], want)
		}
	}
}

func changed(a, b []uint16, mapB func(uint16) uint16) int {
	n := 0
	for i := range a {
		if a[i] != mapB(b[i]) {
			n++
		}
	}
	return n
}

// TestDisruption checks the property that matters in production: when a
// backend goes, the flows of the others mostly stay where they are.
func TestDisruption(t *testing.T) {
	for _, n := range []int{5, 10, 50, 100} {
		all := backends(n)
		before, err := New(all, DefaultSize)
		if err != nil {
			t.Fatal(err)
		}
		for _, gone := range []int{0, n / 2, n - 1} {
			rest := slices.Delete(slices.Clone(all), gone, gone+1)
			after, err := New(rest, DefaultSize)
			if err != nil {
				t.Fatal(err)
			}
			// Indexes after `gone` shift down by one in the new table.
			remap := func(i uint16) uint16 {
				if int(i) >= gone {
					return i + 1
				}
				return i
			}
			total := changed(before.Entries(), after.Entries(), remap)
			owned := int(before.Counts()[gone])
			others := total - owned
			frac := float64(total) / float64(DefaultSize)
			t.Logf("N=%d remove #%d: %.4f of entries moved (1/N = %.4f), %d entries of other backends moved",
				n, gone, frac, 1/float64(n), others)
			// Maglev trades a little disruption for balance: besides
			// the removed backend's entries, a small share of the
			// others' moves. A naive hash%N would move ~(N-1)/N.
			if frac > 1.6/float64(n)+0.005 {
				t.Errorf("N=%d: removing one backend moved %.4f of the table; want about 1/N", n, frac)
			}
		}
		// Adding one backend moves about 1/(N+1).
		more := append(slices.Clone(all), Backend{Name: "new:80", Weight: 1})
		grown, err := New(more, DefaultSize)
		if err != nil {
			t.Fatal(err)
		}
		frac := float64(changed(before.Entries(), grown.Entries(), func(i uint16) uint16 { return i })) / DefaultSize
		t.Logf("N=%d add one: %.4f moved (1/(N+1) = %.4f)", n, frac, 1/float64(n+1))
		if frac > 1.6/float64(n+1)+0.005 {
			t.Errorf("N=%d: adding one backend moved %.4f of the table", n, frac)
		}
	}
}

// TestDeterministic pins the table for a fixed input. Units must build
// identical tables from identical configurations; if this checksum
// changes, the permutation hashes changed, and units running different
// versions would send the same flow to different backends.
func TestDeterministic(t *testing.T) {
	a, _ := New(backends(3), DefaultSize)
	b, _ := New(backends(3), DefaultSize)
	if !slices.Equal(a.Entries(), b.Entries()) {
		t.Fatal("two builds of the same input differ")
	}
	h := fnv.New64a()
	binary.Write(h, binary.LittleEndian, a.Entries())
	const want = 0xe2e4b5df1c3891bf
	if got := h.Sum64(); got != want {
		t.Fatalf("table checksum = %#x, want %#x", got, uint64(want))
	}
}

func TestErrors(t *testing.T) {
	cases := []struct {
		name string
		b    []Backend
		m    uint32
	}{
		{"non-prime size", backends(3), 65536},
		{"no backends", nil, 7},
		{"all weights zero", []Backend{{"a", 0}, {"b", 0}}, 7},
		{"duplicate names", []Backend{{"a", 1}, {"a", 1}}, 7},
		{"more backends than entries", backends(10), 7},
	}
	for _, c := range cases {
		if _, err := New(c.b, c.m); err == nil {
			t.Errorf("%s: New succeeded", c.name)
		}
	}
}

func TestLookupIsModulo(t *testing.T) {
	tb, _ := New(backends(10), DefaultSize)
	for i := uint64(0); i < 1_000_000; i++ {
		h := i * 0x9e3779b97f4a7c15
		if got, want := tb.Lookup(h), tb.Entries()[uint32(h^h>>32)%DefaultSize]; got != want {
			t.Fatalf("Lookup(%#x) = %d, want entry %d = %d", h, got, uint32(h^h>>32)%DefaultSize, want)
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

func FuzzNew(f *testing.F) {
	f.Add([]byte("a\x01b\x02c\x00"), uint16(7))
	f.Add([]byte("10.0.0.1:80\x0310.0.0.2:80\x01"), uint16(1009))
	f.Fuzz(func(t *testing.T, spec []byte, m uint16) {
		// spec is names separated by weight bytes.
		var b []Backend
		start := 0
		for i, c := range spec {
			if c < 8 {
				b = append(b, Backend{Name: string(spec[start:i]), Weight: uint32(c)})
				start = i + 1
			}
		}
		tb, err := New(b, uint32(m%2000))
		if err != nil {
			return
		}
		for i, e := range tb.Entries() {
			if int(e) >= len(b) || b[e].Weight == 0 {
				t.Fatalf("entry %d names backend %d, which is out of range or weightless", i, e)
			}
		}
		// With weights a light backend may lose every turn in a tiny
		// table, so only the total is certain.
		var sum uint32
		for _, c := range tb.Counts() {
			sum += c
		}
		if sum != tb.Size() {
			t.Fatalf("counts add up to %d, table has %d entries", sum, tb.Size())
		}
	})
}

var sink uint64

func BenchmarkLookup(b *testing.B) {
	tb, _ := New(backends(100), DefaultSize)
	var h uint64
	b.ReportAllocs()
	for range b.N {
		// Each lookup depends on the last, so the loop measures latency.
		h = h*0x9e3779b97f4a7c15 + uint64(tb.Lookup(h)) + 1
	}
	sink = h
}

func BenchmarkNew(b *testing.B) {
	for _, n := range []int{10, 1000} {
		bs := backends(n)
		b.Run(fmt.Sprintf("N=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for range b.N {
				if _, err := New(bs, DefaultSize); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
