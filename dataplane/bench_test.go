package dataplane

import (
	"encoding/binary"
	"fmt"
	"testing"

	"github.com/tetherlb/tether/dataplane/header"
	"github.com/tetherlb/tether/internal/pkttest"
	"github.com/tetherlb/tether/nic"
)

// The pipeline benchmarks count packets: b.N is packets, so ns/op is
// nanoseconds per packet. Each batch of 32 frames is first rewritten from
// a template (a 54-byte copy and two incremental checksum updates per
// frame, as a NIC's DMA would refill the buffers); BenchmarkFrameRefill
// measures that part alone so it can be subtracted.

const benchBatch = 32

type benchRig struct {
	r        *rig
	template []byte
	frames   []nic.Frame
}

func newBenchRig(b *testing.B, maxFlows int, port uint16, tcpFlags int) *benchRig {
	c := loadConfig(b, maxFlows, "1024-65535")
	c.Forwarder.Flows.Max = maxFlows
	br := &benchRig{r: newRig(b, c), template: pkttest.TCP(cl(1, 1), vip(port), tcpFlags, 1, 1, pkttest.Opts{})}
	for range benchBatch {
		br.frames = append(br.frames, frame(br.template))
	}
	return br
}

// fill rewrites frame k of the batch as a packet of flow i: client
// address 10.(i>>16).(i>>8).i, port 1024 + i%50000.
func (br *benchRig) fill(k, i int) {
	fr := &br.frames[k]
	fr.Off, fr.Len = nic.Headroom, len(br.template)
	b := fr.Buf[nic.Headroom:]
	copy(b, br.template)
	ip := header.IPv4(b[header.EthernetSize:])
	var src [4]byte
	binary.BigEndian.PutUint32(src[:], 0x0a000000|uint32(i))
	ip.SetSrc(src[:])
	header.TCP(b[header.EthernetSize+header.IPv4MinSize:]).SetSrcPort(uint16(i))
}

// run processes batches of flows chosen by next until n packets have gone.
func (br *benchRig) run(n int, next func() int) {
	for done := 0; done < n; done += benchBatch {
		for k := range br.frames {
			br.fill(k, next())
		}
		br.r.out.Reset()
		br.r.p.Process(br.r.now, br.frames, br.r.out)
	}
}

// establish creates flows 0..n-1, each opened by a SYN (a nat flow opens
// with nothing else).
func (br *benchRig) establish(b *testing.B, n int) {
	i := 0
	saved := br.template
	br.template = pkttest.SetTCPFlags(saved, 0x02)
	br.run(n, func() int { i++; return (i - 1) % n })
	br.template = saved
	v4, _ := br.r.p.Flows().Len()
	if v4 < n {
		b.Fatalf("%d flow entries after creating %d flows", v4, n)
	}
}

// strider walks flows 0..n-1 in an order with no locality.
func strider(n int) func() int {
	j := 0
	return func() int {
		j += 7919 // a prime that does not divide n
		if j >= n {
			j %= n
		}
		return j
	}
}

// BenchmarkEstablished measures packets of existing flows (the common
// case) per mode, at 10k flows (the table fits in L2/L3) and 1M flows
// (it does not: every lookup misses the caches).
//
// The halfnat-general row takes the same packets as halfnat through the
// general path only (Config.GeneralOnly): the ratio to its twin is what
// the established IPv4 path (forward4) saves, measured in the same run.
func BenchmarkEstablished(b *testing.B) {
	for _, c := range []struct {
		mode    string
		port    uint16
		flows   int
		general bool
	}{
		{"halfnat", 81, 100, false}, {"halfnat", 81, 10_000, false}, {"halfnat", 81, 1_000_000, false},
		{"halfnat", 81, 10_000, true},
		{"nat", 80, 10_000, false},
		{"tunnel", 82, 10_000, false}, {"tunnel", 82, 1_000_000, false},
		{"ipip", 83, 10_000, false}, {"ipip", 83, 1_000_000, false},
	} {
		mode := c.mode
		if c.general {
			mode += "-general"
		}
		b.Run(fmt.Sprintf("mode=%s/flows=%d", mode, c.flows), func(b *testing.B) {
			// Translated modes hold two entries per flow.
			br := newBenchRig(b, 2*c.flows+1024, c.port, pkttest.ACK)
			if c.general {
				br.r.generalOnly()
			}
			br.establish(b, c.flows)
			next := strider(c.flows)
			b.ReportAllocs()
			b.ResetTimer()
			br.run(b.N, next)
			b.StopTimer()
			if d := br.r.p.stats.Dropped(); d > 0 {
				b.Fatalf("%d packets dropped", d)
			}
		})
	}
}

// BenchmarkNewFlow measures the miss path: VIP lookup, Maglev, SNAT port
// or flow-ID allocation where the mode needs one, and the insert. The
// table is emptied (outside the timer) every 100k flows, so this is the
// cost of a new flow with room in the table and SNAT ports to spare.
func BenchmarkNewFlow(b *testing.B) {
	for _, c := range []struct {
		mode string
		port uint16
	}{{"halfnat", 81}, {"nat", 80}, {"tunnel", 82}, {"ipip", 83}} {
		b.Run("mode="+c.mode, func(b *testing.B) {
			br := newBenchRig(b, 1<<18, c.port, pkttest.SYN)
			i := 0
			b.ReportAllocs()
			b.ResetTimer()
			for done := 0; done < b.N; done += benchBatch {
				if i%100_000 < benchBatch && i > 0 {
					b.StopTimer()
					br.r.p.Flows().Clear()
					b.StartTimer()
				}
				br.run(benchBatch, func() int { i++; return i })
			}
			b.StopTimer()
			if br.r.p.stats.NewFlows != uint64(i) {
				b.Fatalf("%d new flows for %d packets (drops %d)", br.r.p.stats.NewFlows, i, br.r.p.stats.Dropped())
			}
		})
	}
}

// BenchmarkNewFlowFullTable is BenchmarkNewFlow with the table at its
// bound, so every new flow also evicts one: a unit under a SYN flood.
func BenchmarkNewFlowFullTable(b *testing.B) {
	for _, c := range []struct {
		mode string
		port uint16
	}{{"halfnat", 81}, {"ipip", 83}} {
		b.Run("mode="+c.mode, func(b *testing.B) {
			br := newBenchRig(b, 1<<16, c.port, pkttest.SYN)
			i := 0
			br.run(1<<17, func() int { i++; return i }) // fill
			b.ReportAllocs()
			b.ResetTimer()
			br.run(b.N, func() int { i++; return i })
			b.StopTimer()
			if br.r.p.Flows().Stats().Evicted == 0 {
				b.Fatal("nothing evicted")
			}
		})
	}
}

// BenchmarkFrameRefill measures the benchmarks' own per-packet overhead.
func BenchmarkFrameRefill(b *testing.B) {
	br := newBenchRig(b, 1024, 81, pkttest.ACK)
	next := strider(10_000)
	b.ReportAllocs()
	b.ResetTimer()
	for done := 0; done < b.N; done += benchBatch {
		for k := range br.frames {
			br.fill(k, next())
		}
	}
}

// BenchmarkBytesPerFlow reports the flow table's memory per IPv4 flow
// entry at a bound of 1M entries (a halfnat or nat connection takes two
// entries; tunnel and ipip flows one).
func BenchmarkBytesPerFlow(b *testing.B) {
	c := loadConfig(b, 1<<20, "1024-65535")
	r := newRig(b, c)
	for range b.N {
	}
	v4, _ := r.p.Flows().Bytes()
	b.ReportMetric(float64(v4)/float64(c.Forwarder.Flows.Max), "bytes/flow")
}
