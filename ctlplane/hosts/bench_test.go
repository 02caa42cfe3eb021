package hosts

import (
	"fmt"
	"net/netip"
	"syscall"
	"testing"

	"github.com/tetherlb/tether/agent/streams"
	pb "github.com/tetherlb/tether/api/hostpb"
)

// benchSink takes every migration at once and applies nothing: the
// benchmark measures the stream, not the host's kernel.
type benchSink struct{}

func (benchSink) Sources(string, []netip.Addr) error             { return nil }
func (benchSink) Replace(string, map[uint32]*pb.Tuple) error     { return nil }
func (benchSink) Apply(string, []*pb.Mapping, []uint32) error    { return nil }
func (benchSink) Take(_ string, _ *pb.Migrate, done func(error)) { done(nil) }

func cpuTime() int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}

// BenchmarkMigrationMessages is the host stream's share of a migrated
// connection, over mutual TLS on loopback with the unit's server and the
// agent's streams in this process: the messages one connection costs
// (five since the Migrate carries the flow's mapping; under load the
// removal's acknowledgement rides on the next Migrate's, and the end
// notice goes in the same write), each waited for as the control
// process waits for it: the Migrate and its acknowledgement, the end
// notice (by the next round's acknowledgement), the mapping's removal. in-flight
// connections go through these steps side by side, as under load, where
// the stream's writers can put several messages in one write.
// cpu-µs/op is this process's CPU time (both ends, kernel included) per
// connection: what per-connection messages cost.
func BenchmarkMigrationMessages(b *testing.B) {
	for _, inFlight := range []int{1, 16} {
		b.Run(fmt.Sprintf("in-flight=%d", inFlight), func(b *testing.B) {
			p := newPKI(b)
			ended := make(chan struct{}, 1024)
			acks := make(chan uint64, 1024)
			s, _ := startServerWith(b, p, "127.0.0.1:0", func(o *Options) {
				o.OnMigrateResult = func(_ uint32, r *pb.MigrateResult) { b.Errorf("migration %d failed: %s", r.GetId(), r.GetError()) }
				o.OnMigrationEnded = func(uint32, *pb.MigrationEnded) { ended <- struct{}{} }
				o.OnAck = func(_ uint32, seq uint64) { acks <- seq }
			})
			a := startAgentWith(b, p.host7, 7, 7, s.Addr().String(), func(o *streams.Options) { o.Sink, o.Migrator = benchSink{}, benchSink{} })
			waitFor(b, "host 7's stream", func() bool { _, up, ok := s.HostOf(netip.MustParseAddr("10.1.0.7")); return ok && up })
			data := []byte("GET / HTTP/1.1\r\nHost: vip\r\n\r\n")
			st := &pb.TCPState{Client: []byte{10, 9, 0, 1}, Vip: []byte{192, 0, 2, 10}, VipPort: 80,
				RemoteIsn: 100, LocalIsn: 200, SndNxt: 201, RcvNxt: 101 + uint32(len(data)), Mss: 1460}
			id := uint64(0)
			publish := func(add []*pb.Mapping, remove []uint32) {
				if _, err := s.Publish(7, add, remove); err != nil {
					b.Fatal(err)
				}
			}
			// waitAck waits for the acknowledgement of the changes up
			// to seq (acknowledgements are cumulative).
			waitAck := func(seq uint64) {
				for <-acks < seq {
				}
			}
			// endsDue counts the end notices sent and not yet heard:
			// they ride on the next round's acknowledgement.
			endsDue := 0
			round := func(n int) {
				base := id
				var last uint64
				for i := range n {
					st.ClientPort = uint32(1024 + (base+uint64(i))%60000)
					seq, err := s.Migrate(7, &pb.Migrate{Id: base + uint64(i) + 1, FlowId: uint32(base) + uint32(i) + 1, State: st, Data: data})
					if err != nil {
						b.Fatal(err)
					}
					last = seq
				}
				waitAck(last)
				for ; endsDue > 0; endsDue-- {
					<-ended
				}
				for i := range n {
					e := &pb.MigrationEnded{Id: base + uint64(i) + 1, Reason: pb.EndReason_END_REASON_CLOSED,
						Tuple: &pb.Tuple{Proto: pb.Proto_PROTO_TCP, Client: st.Client, ClientPort: uint32(1024 + (base+uint64(i))%60000), Vip: st.Vip, VipPort: 80}}
					if err := a.SendEnded("unit-a", e); err != nil {
						b.Fatal(err)
					}
				}
				endsDue = n
				// Nothing waits for the removals' acknowledgement: the
				// next round's Migrates' covers it.
				for i := range n {
					publish(nil, []uint32{uint32(base) + uint32(i) + 1})
				}
				id += uint64(n)
			}
			round(inFlight) // the stream's first messages warm its buffers
			b.ResetTimer()
			cpu := cpuTime()
			done := 0
			for done < b.N {
				n := min(inFlight, b.N-done)
				round(n)
				done += n
			}
			b.ReportMetric(float64(cpuTime()-cpu)/1e3/float64(b.N), "cpu-µs/op")
			b.StopTimer()
			for ; endsDue > 0; endsDue-- { // the last round's, alone
				<-ended
			}
		})
	}
}
