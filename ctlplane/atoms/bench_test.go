package atoms

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/tetherlb/tether/api/atompb"
)

func newBenchUnits(b *testing.B, level int) *testUnits { return newTestUnits(b, level) }

func waitBench(b *testing.B, cond func() bool) { waitFor(b, "the benchmark's condition", cond) }

// routeKeyN is a route atom's key, as the control process writes them.
func routeKeyN(i int) string {
	return fmt.Sprintf("route/tcp/10.%d.%d.%d:%d>192.0.2.10:80", i>>24&255, i>>16&255, i>>8&255, 1024+i%60000)
}

// BenchmarkAddReplicated: atoms added at one unit until the other has
// acknowledged every one (level 1, two units on loopback with TLS).
// Reports atoms a second and the add-to-acknowledgement lag.
func BenchmarkAddReplicated(b *testing.B) {
	u := newBenchUnits(b, 1)
	a, c := u.start("unit-a"), u.start("unit-b")
	u.members()
	waitBench(b, func() bool { return a.Ready() && c.Ready() })
	data := []byte{1, 3, 0, 80, 3, 'w', 'e', 'b', 2, 'b', '0'}
	b.ResetTimer()
	start := time.Now()
	for i := range b.N {
		if _, err := a.Add(routeKeyN(i), "10.1.0.1", data, time.Minute, 0); err != nil {
			b.Fatal(err)
		}
	}
	waitBench(b, func() bool {
		p := a.Peers()
		return len(p) == 1 && p[0].Acked == uint64(b.N)
	})
	el := time.Since(start)
	b.StopTimer()
	p := a.Peers()[0]
	b.ReportMetric(float64(b.N)/el.Seconds(), "atoms/s")
	b.ReportMetric(p.LagMedian*1000, "lag-p50-µs")
	b.ReportMetric(p.LagP99*1000, "lag-p99-µs")
}

// BenchmarkAddOne: the lag of one add at a time, the window between a
// flow's route atom being added and its replica holding it, with no
// batching to help: add, then wait for the acknowledgement.
func BenchmarkAddOne(b *testing.B) {
	u := newBenchUnits(b, 1)
	a, c := u.start("unit-a"), u.start("unit-b")
	u.members()
	waitBench(b, func() bool { return a.Ready() && c.Ready() })
	b.ResetTimer()
	for i := range b.N {
		if _, err := a.Add(routeKeyN(i), "10.1.0.1", nil, time.Minute, 0); err != nil {
			b.Fatal(err)
		}
		for {
			p := a.Peers()
			if len(p) == 1 && p[0].Acked == uint64(i+1) {
				break
			}
			runtime.Gosched()
		}
	}
	b.StopTimer()
	p := a.Peers()[0]
	b.ReportMetric(p.LagMedian*1000, "lag-p50-µs")
	b.ReportMetric(p.LagP99*1000, "lag-p99-µs")
}

// BenchmarkQueryRemote: queries for atoms only the other unit holds
// (level 0), one at a time: a query's round trip.
func BenchmarkQueryRemote(b *testing.B) {
	u := newBenchUnits(b, 0)
	a, c := u.start("unit-a"), u.start("unit-b")
	u.members()
	waitBench(b, func() bool { return a.Ready() && c.Ready() })
	for i := range b.N {
		if _, err := a.Add(routeKeyN(i), "10.1.0.1", nil, time.Minute, 0); err != nil {
			b.Fatal(err)
		}
	}
	ctx := context.Background()
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := range b.N {
		t0 := time.Now()
		if _, found, err := c.Query(ctx, routeKeyN(i)); !found || err != nil {
			b.Fatalf("query %d: %v %v", i, found, err)
		}
		lat = append(lat, time.Since(t0))
	}
	b.StopTimer()
	reportLatency(b, lat)
}

func reportLatency(b *testing.B, lat []time.Duration) {
	if len(lat) == 0 {
		return
	}
	s := append([]time.Duration(nil), lat...)
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
	b.ReportMetric(float64(s[len(s)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(s[min(len(s)-1, len(s)*99/100)].Microseconds()), "p99-µs")
}

// BenchmarkPortionBytes: the memory a portion of 1M route atoms takes,
// per atom (keys of the control process's form, one host, 11 bytes of
// data).
func BenchmarkPortionBytes(b *testing.B) {
	const n = 1 << 20
	for range b.N {
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		t := newTable(n)
		data := []byte{1, 3, 0, 80, 3, 'w', 'e', 'b', 2, 'b', '0'}
		for i := range n {
			t.put(&atompb.Atom{Key: routeKeyN(i), Host: "10.1.0.1", Data: data, Adder: "unit-a", AdderBoot: 1,
				Stamp: uint64(i + 1), TimeoutMs: 60000}, false, 0)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/n, "bytes/atom")
		runtime.KeepAlive(t)
	}
}
