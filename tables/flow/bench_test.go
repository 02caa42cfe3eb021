package flow

import (
	"fmt"
	"testing"
)

// BenchmarkLookupHit measures an established-flow lookup (hash included)
// at two table sizes, against Go's built-in map as a peer in the same
// run. At 1M flows (50 MB of slots) most lookups miss the caches, as in
// production. Keys are computed, not read from an array, so that the
// benchmark's own memory traffic does not dominate.
func BenchmarkLookupHit(b *testing.B) {
	for _, n := range []int{10_000, 1_000_000} {
		b.Run(fmt.Sprintf("table=flow/flows=%d", n), func(b *testing.B) {
			s := newShard(b, n)
			for i := range n {
				k := key4(i)
				s.Insert4(&k, s.Hash4(&k), &Value4{}, 0)
			}
			b.ReportAllocs()
			b.ResetTimer()
			j := 0
			for range b.N {
				k := key4(j)
				if s.Lookup4(&k, s.Hash4(&k)) == nil {
					b.Fatal("miss")
				}
				if j += 7919; j >= n {
					j -= n
				}
			}
		})
		b.Run(fmt.Sprintf("table=gomap/flows=%d", n), func(b *testing.B) {
			m := make(map[Key4]Value4, n)
			for i := range n {
				m[key4(i)] = Value4{}
			}
			b.ReportAllocs()
			b.ResetTimer()
			j := 0
			for range b.N {
				if _, ok := m[key4(j)]; !ok {
					b.Fatal("miss")
				}
				if j += 7919; j >= n {
					j -= n
				}
			}
		})
	}
}

// BenchmarkInsertDelete measures churn at 80% of the bound.
func BenchmarkInsertDelete(b *testing.B) {
	const n = 1_000_000
	s := newShard(b, n)
	live := n * 8 / 10
	for i := range live {
		k := key4(i)
		s.Insert4(&k, s.Hash4(&k), &Value4{}, 0)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		k := key4(live + i)
		s.Insert4(&k, s.Hash4(&k), &Value4{}, 0)
		old := key4(i)
		s.Delete4(&old)
	}
}

// BenchmarkBytesPerFlow reports the memory per IPv4 flow of a full shard.
func BenchmarkBytesPerFlow(b *testing.B) {
	const n = 1_000_000
	s := newShard(b, n)
	for i := range b.N {
		_ = i
	}
	v4, v6 := s.Bytes()
	b.ReportMetric(float64(v4)/n, "B/flow-v4")
	b.ReportMetric(float64(v6)/n, "B/flow-v6")
}
