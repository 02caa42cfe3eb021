package dataplane

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/tetherlb/tether/nic"
	"github.com/tetherlb/tether/tables/flow"
)

// Summary is what a worker has done, for people: counters, the snapshot
// that names VIPs and backends, and the state of the flow table.
type Summary struct {
	Stats     Stats
	Port      nic.Stats
	Snapshot  *Snapshot
	FlowTable flow.Stats
	Flows4    int // flow-table entries
	Flows6    int
	// Workers has each worker's share, when the forwarder has several.
	Workers []WorkerSummary
}

// Summary returns the pipeline's summary; port is the port's own stats.
// Call it from the worker's goroutine.
func (p *Pipeline) Summary(port nic.Stats) Summary {
	s := Summary{Stats: p.Stats(), Port: port, Snapshot: p.snap, FlowTable: p.flows.Stats()}
	s.Flows4, s.Flows6 = p.flows.Len()
	return s
}

// WriteTo writes a human-readable account: totals, every VIP and
// backend with packets, bytes and new flows, and every drop and pass
// reason that occurred.
func (r *Summary) WriteTo(w io.Writer) (int64, error) {
	s := &r.Stats
	var b strings.Builder
	fmt.Fprintf(&b, "frames: %d in, %d forwarded", s.RxPackets, s.Forwarded())
	if s.Forwarded() != s.TxPackets {
		fmt.Fprintf(&b, " (in %d frames)", s.TxPackets)
	}
	fmt.Fprintf(&b, ", %d passed to the host, %d dropped", s.Passed(), s.Dropped())
	if r.Port.RxDropped > 0 {
		fmt.Fprintf(&b, ", %d unreadable (oversize, truncated by the capture, or not IP in a capture replayed as raw IP)", r.Port.RxDropped)
	}
	if r.Port.KernelDropped > 0 {
		fmt.Fprintf(&b, ", %d dropped by the kernel before the port read them", r.Port.KernelDropped)
	}
	r.writeHandOff(&b)
	fmt.Fprintf(&b, "\nflows: %d new, %d IPv4 and %d IPv6 table entries at the end (%d expired, %d evicted)\n",
		s.NewFlows, r.Flows4, r.Flows6, r.FlowTable.Expired, r.FlowTable.Evicted)
	if s.EchoReplies+s.ICMPForwarded+s.FragmentsHeld > 0 {
		fmt.Fprintf(&b, "icmp: %d echo replies, %d errors forwarded; fragments held for their first fragment: %d\n",
			s.EchoReplies, s.ICMPForwarded, s.FragmentsHeld)
	}
	if s.TooBigAnswered > 0 {
		fmt.Fprintf(&b, "too big for the tunnel, answered with ICMP: %d\n", s.TooBigAnswered)
	}
	if s.TooBigFragmented > 0 {
		fmt.Fprintf(&b, "too big for the tunnel, sent in fragments: %d (in %d frames)\n", s.TooBigFragmented, s.TooBigFragments)
	}
	if s.ResetsSent > 0 {
		fmt.Fprintf(&b, "segments of unknown nat connections, answered with a reset: %d\n", s.ResetsSent)
	}
	if s.Recovered > 0 {
		fmt.Fprintf(&b, "half-NAT flows made again from a backend's reply: %d\n", s.Recovered)
	}
	tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	vips := s.VIPTotals(r.Snapshot)
	for _, v := range r.Snapshot.VIPs {
		if v == nil {
			continue
		}
		vs := vips[v.ID]
		fmt.Fprintf(tw, "vip %s\t%s\t%s\t%d packets\t%d bytes\t%d new flows\t\n",
			v.Name, serviceString(v), v.Mode, vs.Packets, vs.Bytes, vs.NewFlows)
		for _, id := range v.Backends {
			be := &r.Snapshot.Backends[id]
			bs := BackendStats{}
			if int(id) < len(s.Backends) {
				bs = s.Backends[id]
			}
			fmt.Fprintf(tw, "  backend %s\t%s w%d\t\t%d packets\t%d bytes\t%d new flows\t%d replies\n",
				be.Name, be.State, be.Weight, bs.Packets, bs.Bytes, bs.NewFlows, bs.ReplyPackets)
		}
	}
	if err := tw.Flush(); err != nil {
		return 0, err
	}
	writeCounts(&b, "dropped", Drops(), s.Drops[:])
	writeCounts(&b, "passed", Passes(), s.Passes[:])
	n, err := io.WriteString(w, b.String())
	return int64(n), err
}

func serviceString(v *VIP) string {
	proto := "tcp"
	if v.Proto == 17 {
		proto = "udp"
	}
	host := v.Addr.String()
	if v.Addr.Is6() {
		host = "[" + host + "]"
	}
	return fmt.Sprintf("%s:%d/%s", host, v.Port, proto)
}

func writeCounts[R interface {
	~uint8
	String() string
}](b *strings.Builder, title string, reasons []R, counts []uint64) {
	var lines []string
	for _, r := range reasons {
		if n := counts[r]; n > 0 {
			lines = append(lines, fmt.Sprintf("  %-22s %d", r.String(), n))
		}
	}
	if len(lines) == 0 {
		return
	}
	slices.Sort(lines)
	fmt.Fprintf(b, "%s:\n%s\n", title, strings.Join(lines, "\n"))
}
