package dataplane

import (
	"fmt"
	"strings"
	"testing"

	"github.com/tetherlb/tether/config"
)

// manyVIPs is a configuration of n half-NAT VIPs with three backends
// each and the default Maglev size: the shape of a large unit.
func manyVIPs(tb testing.TB, n int) *config.Config {
	tb.Helper()
	var b strings.Builder
	b.WriteString("vips:\n")
	for i := range n {
		fmt.Fprintf(&b, "  - {name: v%d, address: 10.%d.%d.1, port: 80, protocol: tcp, mode: halfnat, backends: [", i, 100+i/250, i%250)
		for j := range 3 {
			fmt.Fprintf(&b, "{name: b%d, address: 10.%d.%d.%d, weight: %d},", j, 200+i/250, i%250, 10+j, j+1)
		}
		b.WriteString("]}\n")
	}
	c, err := config.Parse([]byte(b.String()))
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

// BenchmarkReloadOneOf1000VIPs is what a reload costs the forwarder when
// one VIP of a thousand changes a weight (a health verdict, an operator's
// drain): building the new snapshot from the previous one.
func BenchmarkReloadOneOf1000VIPs(b *testing.B) {
	c := manyVIPs(b, 1000)
	prev, err := Build(c, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		w := 1 + i%2 // alternate, so every build sees a change
		c.VIPs[500].Backends[0].Weight = &w
		next, err := Build(c, prev)
		if err != nil {
			b.Fatal(err)
		}
		prev = next
	}
}
