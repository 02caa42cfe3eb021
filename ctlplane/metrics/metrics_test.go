package metrics

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tetherlb/tether/api/unit"
)

type fake struct {
	rep unit.Report
	err error
}

func (f *fake) Report(context.Context) (unit.Report, []int, error) {
	return f.rep, make([]int, len(f.rep.Backends)), f.err
}

func (f *fake) Health(context.Context) unit.HealthView {
	return unit.HealthView{Hosts: []unit.HostView{{ID: 3}},
		Backends: []unit.BackendVerdict{{VIP: "web", Backend: "b0", Health: "failing", Percent: 25}},
		Stats:    unit.HealthStats{Received: map[string]uint64{"heartbeat": 4}, Refused: map[string]uint64{"invalid": 1}}}
}

func (f *fake) BGP(context.Context) unit.BGPView {
	return unit.BGPView{Enabled: true, Peers: []unit.BGPPeer{{Address: "10.0.0.254", State: "established", Flaps: 2}},
		Announced: []string{"192.0.2.10/32"}, Backup: []string{"198.51.100.12/32"}, Withheld: map[string]string{"192.0.2.11/32": unit.BGPWithheldNoBackend}}
}

func scrape(t *testing.T, src Source) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go Serve(ctx, addr, src)
	var body []byte
	for range 100 {
		resp, err := http.Get("http://" + addr + "/metrics")
		if err == nil {
			body, _ = io.ReadAll(resp.Body)
			resp.Body.Close()
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	return string(body)
}

func TestMetrics(t *testing.T) {
	src := &fake{rep: unit.Report{RxPackets: 10, TxPackets: 9, Recovered: 2, ChecksumsFinished: 8, PortDropped: unit.PortDrops{Kernel: 7, HandOff: 3}, Drops: map[string]uint64{"no_flow": 1, "too_big": 0},
		Backends: []unit.BackendReport{{VIP: "web", Name: "b0", Packets: 5, State: unit.StateActive, Weight: 2}},
		VIPs:     []unit.VIPReport{{Name: "web", Packets: 5}}}}
	out := scrape(t, src)
	for _, want := range []string{
		`tether_forwarder_up 1`,
		`tether_packets_total{direction="rx"} 10`,
		`tether_drops_total{reason="no_flow"} 1`,
		`tether_drops_total{reason="too_big"} 0`,
		`tether_port_drops_total{where="kernel"} 7`,
		`tether_port_drops_total{where="handoff"} 3`,
		`tether_flow_events_total{event="recovered"} 2`,
		`tether_flow_events_total{event="checksums_finished"} 8`,
		`tether_backend_packets_total{backend="b0",direction="to_backend",vip="web"} 5`,
		`tether_backend_weight{backend="b0",state="active",vip="web"} 2`,
		`tether_vip_packets_total{vip="web"} 5`,
		`tether_health_hosts 1`,
		`tether_backend_healthy{backend="b0",health="failing",vip="web"} 0`,
		`tether_backend_share{backend="b0",vip="web"} 0.25`,
		`tether_health_messages_total{kind="heartbeat"} 4`,
		`tether_health_refused_total{reason="invalid"} 1`,
		`tether_bgp_session_up{router="10.0.0.254"} 1`,
		`tether_bgp_session_flaps_total{router="10.0.0.254"} 2`,
		`tether_bgp_announced{prefix="192.0.2.10/32",why=""} 1`,
		`tether_bgp_announced{prefix="192.0.2.11/32",why="no backend takes new connections"} 0`,
		`tether_bgp_announced{prefix="198.51.100.12/32",why="backup"} 1`,
		`tether_bgp_drained 0`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	down := scrape(t, &fake{err: errors.New("no forwarder")})
	if !strings.Contains(down, "tether_forwarder_up 0") || !strings.Contains(down, "tether_health_hosts 1") {
		t.Errorf("a missing forwarder is not reported:\n%s", down)
	}
}
