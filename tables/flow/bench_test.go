package flow

import (
	"fmt"
	"testing"
)

// BenchmarkLookupHit measures an established-flow lookup at two table
// sizes; at 1M flows the table (50 MB) is far larger than the caches, so
// most lookups miss them, as in production.
func BenchmarkLookupHit(b *testing.B) {
	for _, n := range []int{10_000, 1_000_000} {
		b.Run(fmt.Sprintf("flows=%d", n), func(b *testing.B) {
			s := newShard(b, n)
			keys := make([]Key4, n)
			for i := range keys {
				keys[i] = key4(i)
				s.Insert4(&keys[i], s.Hash4(&keys[i]), &Value4{}, 0)
			}
			b.ReportAllocs()
			b.ResetTimer()
			// A stride walk, so consecutive lookups hit unrelated slots.
			j := 0
			for range b.N {
				k := &keys[j]
				if s.Lookup4(k, s.Hash4(k)) == nil {
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
