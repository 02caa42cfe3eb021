package e2e

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/tetherlb/tether/api/unit"
)

// queuesDownloads are the checked downloads TestSeveralQueues makes, each
// a connection of its own, queuesSize bytes each, queuesPar at a time,
// from queuesClients client addresses in turn.
const queuesDownloads, queuesSize, queuesPar, queuesClients = 200, 1 << 20, 40, 16

// TestSeveralQueues runs two workers on two AF_XDP queues of a two-queue
// veth: each worker reads its own queue, and the veth, not the flow,
// picks the queue (by a hash of each packet's addresses and ports on the
// bridge's side, so a translated flow's requests and replies land on
// queues independently). Every reply that lands on the queue of the
// worker that does not own its flow must be handed to the owner: 200
// checked downloads through a nat and a halfnat VIP all succeed, no
// packet is dropped for want of a flow, both workers make flows, and
// the report shows hand-offs. The veth's own counters show that both
// queues received.
func TestSeveralQueues(t *testing.T) {
	for _, c := range []struct{ mode, extra string }{{"nat", "    snat: [198.51.100.1]\n"}, {"halfnat", ""}} {
		t.Run(c.mode, func(t *testing.T) {
			lb := newLB(t, "q"+c.mode[:1], 2, func(tag string, n int) (*LB, error) {
				return NewSwitchedLBWith(tag, n, SwitchedOptions{UnitQueues: 2})
			})
			if err := lb.StartBackends(8080); err != nil {
				t.Fatal(err)
			}
			cfg := lbConfig(lb, c.mode, []int{1, 1}, 8080, c.extra)
			cfg = strings.Replace(cfg, "interface: "+lb.UnitIf, "interface: "+lb.UnitIf+", queues: 2", 1)
			cfg = strings.Replace(cfg, "  flows: {max: 65536}", "  flows: {max: 65536}\n  workers: 2", 1)
			u := startUnit(t, lb, cfg)
			if !strings.Contains(u.proc.Output(), "handoff=true") {
				t.Fatalf("the forwarder did not join its workers by the hand-off:\n%s", u.proc.Output())
			}
			// Steering keys a VIP's flows by the client's address: one
			// client address would give every flow to one worker.
			srcs := []string{ClientAddr}
			for i := 3; i < 3+queuesClients-1; i++ {
				a := fmt.Sprintf("10.0.1.%d", i)
				if err := lb.Run(lb.Client, "ip", "addr", "add", a+"/24", "dev", "c0"); err != nil {
					t.Fatal(err)
				}
				srcs = append(srcs, a)
			}
			out, err := lb.Exec(lb.Client, append([]string{"env"}, append(RoleCommand("client",
				fmt.Sprintf("http://192.0.2.10/bytes?n=%d", queuesSize), fmt.Sprint(queuesDownloads), fmt.Sprint(queuesPar), strings.Join(srcs, ",")), Self())...)...)
			if err != nil {
				t.Fatal(err)
			}
			var r ClientResult
			if err := json.Unmarshal([]byte(lastLine(out)), &r); err != nil {
				t.Fatalf("client output %q: %v", out, err)
			}
			if r.Errors > 0 {
				t.Errorf("%d of %d downloads failed (%d reset); first: %s", r.Errors, queuesDownloads, r.Resets, r.FirstErr)
			}
			rep := u.report()
			t.Logf("workers %+v, port drops %+v, drops %v, passes %v, %d new flows, %d recovered, %d resets sent",
				rep.Workers, rep.PortDropped, nonZero(rep.Drops), nonZero(rep.Passes), rep.NewFlows, rep.Recovered, rep.ResetsSent)
			// A reply that misses its flow's worker is dropped (no_flow),
			// answered with a reset (nat), or makes the flow again on
			// the wrong worker (halfnat, recovered).
			if n := rep.Drops["no_flow"]; n > 0 {
				t.Errorf("%d packets dropped as no_flow: replies missed their flow's worker", n)
			}
			if rep.Recovered > 0 || rep.ResetsSent > 0 {
				t.Errorf("%d half-NAT flows made again from a reply, %d resets sent: replies missed their flow's worker", rep.Recovered, rep.ResetsSent)
			}
			if rep.PortDropped.HandOff > 0 {
				t.Errorf("%d frames lost in the hand-off", rep.PortDropped.HandOff)
			}
			if len(rep.Workers) != 2 {
				t.Fatalf("report has %d workers, want 2", len(rep.Workers))
			}
			var handed, taken uint64
			for _, w := range rep.Workers {
				if w.NewFlows == 0 {
					t.Errorf("worker %d made no flows", w.Worker)
				}
				handed, taken = handed+w.HandedOut, taken+w.HandedIn
			}
			if handed == 0 || taken != handed {
				t.Errorf("%d frames handed over, %d taken: want hand-offs, every one taken", handed, taken)
			}
			if txt, err := u.ctl("stats"); err != nil || !strings.Contains(txt, "handed to other workers") {
				t.Errorf("tetherctl stats shows no workers' hand-offs (%v):\n%s", err, txt)
			}
			for q, n := range lb.xdpQueuePackets(t) {
				if n == 0 {
					t.Errorf("queue %d of %s received nothing: the test does not exercise several queues", q, lb.UnitIf)
				}
			}
		})
	}
}

// report reads tetherctl stats as JSON.
func (u *runningUnit) report() unit.Report {
	u.t.Helper()
	out, err := u.ctl("stats", "-o", "json")
	if err != nil {
		u.t.Fatal(err)
	}
	var r unit.Report
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		u.t.Fatalf("stats %q: %v", out, err)
	}
	return r
}

func nonZero(m map[string]uint64) map[string]uint64 {
	nz := map[string]uint64{}
	for k, v := range m {
		if v > 0 {
			nz[k] = v
		}
	}
	return nz
}

// xdpQueuePackets reads the packets the unit's veth ran its XDP program
// on, per receive queue (its ethtool statistics).
func (lb *LB) xdpQueuePackets(t *testing.T) []uint64 {
	t.Helper()
	out, err := lb.Exec(lb.Unit, "ethtool", "-S", lb.UnitIf)
	if err != nil {
		t.Fatal(err)
	}
	var per []uint64
	for _, m := range regexp.MustCompile(`rx_queue_(\d+)_xdp_packets: (\d+)`).FindAllStringSubmatch(out, -1) {
		q, _ := strconv.Atoi(m[1])
		n, _ := strconv.ParseUint(m[2], 10, 64)
		for len(per) <= q {
			per = append(per, 0)
		}
		per[q] = n
	}
	if len(per) < 2 {
		t.Fatalf("%s has %d receive queues with XDP statistics, want 2:\n%s", lb.UnitIf, len(per), out)
	}
	return per
}
