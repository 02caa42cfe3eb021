// Package replay runs frames from a port through one dataplane worker
// until the port runs dry, the way a worker runs on a live port but
// driven by the frames' own timestamps, and summarises what happened per
// VIP, backend and drop reason. With a capture port it is deterministic:
// the same capture and configuration give the same output, byte for byte,
// which is what the golden tests and `tetherd replay` rely on.
package replay

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/tetherlb/tether/config"
	"github.com/tetherlb/tether/dataplane"
	"github.com/tetherlb/tether/nic"
	"github.com/tetherlb/tether/tables/encap"
	"github.com/tetherlb/tether/tables/flow"
)

// Result is what a replay did.
type Result struct {
	Stats     dataplane.Stats
	Port      nic.Stats
	Snapshot  *dataplane.Snapshot
	FlowTable flow.Stats
	Flows4    int // flow-table entries left at the end
	Flows6    int
	// Tunnel holds the flow-ID mappings the worker made: what the hosts
	// need to restore tunneled packets.
	Tunnel *encap.Table
}

// Run replays every frame port yields through a single worker configured
// by c, transmitting to port what the worker forwards. Fragments still
// held at the end are dropped as if their timeout had passed, so every
// frame is accounted for.
func Run(c *config.Config, port nic.Port) (*Result, error) {
	snap, err := dataplane.Build(c, nil)
	if err != nil {
		return nil, err
	}
	pc := dataplane.ConfigFrom(c, 0, port.LinkType(), 0)
	// One worker, and a fixed table seed, whatever the configuration
	// says: a replay must not depend on how many cores the unit has.
	pc.Workers = 1
	p, err := dataplane.New(pc, snap)
	if err != nil {
		return nil, err
	}
	out := dataplane.NewOutput(&pc)
	frames := make([]nic.Frame, c.Forwarder.Batch)
	var t0 int64
	started := false
	var now flow.Tick
	flush := func() error {
		if len(out.TX) > 0 {
			if _, err := port.Transmit(out.TX); err != nil {
				return err
			}
		}
		port.Release(out.Pass)
		port.Release(out.Drop)
		out.Reset()
		return nil
	}
	for {
		n, rerr := port.Receive(frames)
		if n > 0 {
			if !started {
				t0, started = frames[0].Time, true
			}
			if d := frames[0].Time - t0; d > 0 {
				now = flow.Tick(d / 1e6)
			}
			p.Process(now, frames[:n], out)
			if err := flush(); err != nil {
				return nil, err
			}
		}
		if errors.Is(rerr, io.EOF) {
			break
		}
		if rerr != nil {
			return nil, rerr
		}
	}
	if p.HeldFragments() > 0 {
		p.Process(now+flow.Tick(pc.FragTimeout)+1, nil, out)
		if err := flush(); err != nil {
			return nil, err
		}
	}
	r := &Result{Stats: p.Stats(), Port: port.Stats(), Snapshot: snap, FlowTable: p.Flows().Stats(), Tunnel: p.Tunnel()}
	r.Flows4, r.Flows6 = p.Flows().Len()
	return r, nil
}

// WriteSummary writes a human-readable account of the replay.
func (r *Result) WriteSummary(w io.Writer) error {
	s := &r.Stats
	var b strings.Builder
	fmt.Fprintf(&b, "frames: %d in, %d forwarded, %d passed to the host, %d dropped",
		s.RxPackets, s.TxPackets, s.Passed(), s.Dropped())
	if r.Port.RxDropped > 0 {
		fmt.Fprintf(&b, ", %d unreadable (oversize or truncated by the capture)", r.Port.RxDropped)
	}
	fmt.Fprintf(&b, "\nflows: %d new, %d IPv4 and %d IPv6 table entries at the end (%d expired, %d evicted)\n",
		s.NewFlows, r.Flows4, r.Flows6, r.FlowTable.Expired, r.FlowTable.Evicted)
	if s.EchoReplies+s.ICMPForwarded+s.FragmentsHeld > 0 {
		fmt.Fprintf(&b, "icmp: %d echo replies, %d errors forwarded; fragments held for their first fragment: %d\n",
			s.EchoReplies, s.ICMPForwarded, s.FragmentsHeld)
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
			bs := dataplane.BackendStats{}
			if int(id) < len(s.Backends) {
				bs = s.Backends[id]
			}
			fmt.Fprintf(tw, "  backend %s\t%s w%d\t\t%d packets\t%d bytes\t%d new flows\t%d replies\n",
				be.Name, be.State, be.Weight, bs.Packets, bs.Bytes, bs.NewFlows, bs.ReplyPackets)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	writeCounts(&b, "dropped", dataplane.Drops(), s.Drops[:])
	writeCounts(&b, "passed", dataplane.Passes(), s.Passes[:])
	_, err := io.WriteString(w, b.String())
	return err
}

func serviceString(v *dataplane.VIP) string {
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
