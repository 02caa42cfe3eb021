package metrics

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tetherlb/tether/api/unit"
)

// Source gives the numbers: the control process.
type Source interface {
	Report(ctx context.Context) (unit.Report, []int, error)
	Health(ctx context.Context) unit.HealthView
	BGP(ctx context.Context) unit.BGPView
}

type collector struct {
	src                                                                    Source
	up, packets, bytes, drops, passes, flows, newFlows, punted, portDrops  *prometheus.Desc
	events                                                                 *prometheus.Desc
	bePackets, beBytes, beNewFlows, beConns, beWeight, vipPackets, vipNew  *prometheus.Desc
	hosts, beHealthy, beShare, healthIn, healthRefused, snapshots, agedOut *prometheus.Desc
	bgpSession, bgpFlaps, bgpAnnounced, bgpDrained                         *prometheus.Desc
}

func newCollector(src Source) *collector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("tether_"+name, help, labels, nil)
	}
	return &collector{
		src:       src,
		up:        d("forwarder_up", "1 when the forwarder answers the control process."),
		packets:   d("packets_total", "Packets received (rx) and sent (tx) by the forwarder.", "direction"),
		bytes:     d("bytes_total", "Bytes received (rx) and sent (tx) by the forwarder.", "direction"),
		drops:     d("drops_total", "Packets dropped, by reason.", "reason"),
		portDrops: d("port_drops_total", "Packets lost before any worker saw them: by the kernel (AF_XDP rings, TUN queue), the port (no buffer, a worker's queue full) or the hand-off between workers on several device queues (a ring full).", "where"),
		passes:    d("passes_total", "Packets passed to the host, by reason.", "reason"),
		flows:     d("flows", "Flow-table entries (a translated connection takes two)."),
		newFlows:  d("new_flows_total", "Flows created."),
		punted:    d("punted_total", "Packets held for the control process to decide."),
		events: d("flow_events_total", "What the forwarder did besides forwarding: reopened (a closed tuple used again), "+
			"half_open_reclaimed (a SNAT port taken back from a handshake that never completed or an unanswered UDP flow), "+
			"resets_sent (segments of unknown connections answered with a reset), recovered (half-NAT flows made again "+
			"from a backend's reply), checksums_finished (partial checksums completed by the forwarder), too_big_answered and "+
			"too_big_fragmented (packets too big for an ipip tunnel answered with ICMP, or sent as fragments of their outer header), held_for_host "+
			"(packets of new tunnel flows held until their host had the flow's mapping), to_acceptor (packets of l7 VIPs handed to "+
			"the acceptor), acceptor_answers (the acceptor's packets sent in their place), syn_answers (l7 VIPs' SYNs the workers answered "+
			"themselves, with the acceptor's cookie), punted_mid_flow (of punted_total: TCP segments without SYN a unit of a cluster "+
			"had no flow for, held for the control process's route), mid_flow_refused (those the control process knew no route for).", "event"),
		bePackets:  d("backend_packets_total", "Packets to a backend and replies from it through the unit.", "vip", "backend", "direction"),
		beBytes:    d("backend_bytes_total", "Bytes to a backend and replies from it through the unit.", "vip", "backend", "direction"),
		beNewFlows: d("backend_new_flows_total", "Flows sent to a backend.", "vip", "backend"),
		beConns:    d("backend_connections", "Connections to a backend in the control process's inventory.", "vip", "backend"),
		beWeight:   d("backend_weight", "Configured weight of a backend, with its state as a label.", "vip", "backend", "state"),
		vipPackets: d("vip_packets_total", "Packets to a VIP's backends.", "vip"),
		vipNew:     d("vip_new_flows_total", "Flows of a VIP.", "vip"),
		hosts:      d("health_hosts", "Hosts in the health-and-load cache."),
		beHealthy: d("backend_healthy", "1 when the health cache takes the backend as healthy, 0 when failing or unknown; "+
			"the health label says which.", "vip", "backend", "health"),
		beShare:       d("backend_share", "The backend's share of new connections from its VIP's allotment (0-1).", "vip", "backend"),
		healthIn:      d("health_messages_total", "Health-protocol messages received, by kind.", "kind"),
		healthRefused: d("health_refused_total", "Health-protocol datagrams refused, by reason.", "reason"),
		snapshots:     d("health_snapshots_requested_total", "Snapshots requested from hosts whose copy was out of step."),
		agedOut:       d("health_hosts_aged_out_total", "Hosts removed after missing their heartbeats."),
		bgpSession:    d("bgp_session_up", "1 while the BGP session to a router is established (bgp section).", "router"),
		bgpFlaps:      d("bgp_session_flaps_total", "Times the BGP session to a router left established.", "router"),
		bgpAnnounced:  d("bgp_announced", "1 for each prefix announced to the routers (why: \"\", or backup for another unit's SNAT address), 0 for each withheld (why says why).", "prefix", "why"),
		bgpDrained:    d("bgp_drained", "1 while an operator has withdrawn every VIP (tetherctl bgp drain)."),
	}
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.up, c.packets, c.bytes, c.drops, c.passes, c.flows, c.newFlows, c.punted, c.portDrops, c.events,
		c.bePackets, c.beBytes, c.beNewFlows, c.beConns, c.beWeight, c.vipPackets, c.vipNew,
		c.hosts, c.beHealthy, c.beShare, c.healthIn, c.healthRefused, c.snapshots, c.agedOut,
		c.bgpSession, c.bgpFlaps, c.bgpAnnounced, c.bgpDrained} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	// Health lives in the control process: it is there even when the
	// forwarder is not.
	h := c.src.Health(ctx)
	gauge(c.hosts, float64(len(h.Hosts)))
	for _, b := range h.Backends {
		healthy := 0.0
		if b.Health == "healthy" {
			healthy = 1
		}
		gauge(c.beHealthy, healthy, b.VIP, b.Backend, b.Health)
		gauge(c.beShare, b.Percent/100, b.VIP, b.Backend)
	}
	for k, v := range h.Stats.Received {
		counter(c.healthIn, v, k)
	}
	for k, v := range h.Stats.Refused {
		counter(c.healthRefused, v, k)
	}
	counter(c.snapshots, h.Stats.SnapshotsAsked)
	counter(c.agedOut, h.Stats.AgedOut)
	if b := c.src.BGP(ctx); b.Enabled {
		for _, p := range b.Peers {
			up := 0.0
			if p.State == "established" {
				up = 1
			}
			gauge(c.bgpSession, up, p.Address)
			counter(c.bgpFlaps, uint64(p.Flaps), p.Address)
		}
		for _, p := range b.Announced {
			gauge(c.bgpAnnounced, 1, p, "")
		}
		for _, p := range b.Backup {
			gauge(c.bgpAnnounced, 1, p, "backup")
		}
		for a, why := range b.Withheld {
			gauge(c.bgpAnnounced, 0, a, why)
		}
		drained := 0.0
		if b.Drained {
			drained = 1
		}
		gauge(c.bgpDrained, drained)
	}
	rep, conns, err := c.src.Report(ctx)
	if err != nil {
		ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, 0)
		return
	}
	gauge(c.up, 1)
	counter(c.packets, rep.RxPackets, "rx")
	counter(c.packets, rep.TxPackets, "tx")
	counter(c.bytes, rep.RxBytes, "rx")
	counter(c.bytes, rep.TxBytes, "tx")
	for r, n := range rep.Drops {
		counter(c.drops, n, r)
	}
	counter(c.portDrops, rep.PortDropped.Kernel, "kernel")
	counter(c.portDrops, rep.PortDropped.Port, "port")
	counter(c.portDrops, rep.PortDropped.HandOff, "handoff")
	for r, n := range rep.Passes {
		counter(c.passes, n, r)
	}
	gauge(c.flows, float64(rep.Flows))
	counter(c.newFlows, rep.NewFlows)
	counter(c.punted, rep.Punted)
	counter(c.events, rep.Reopened, "reopened")
	counter(c.events, rep.HalfOpenReclaimed, "half_open_reclaimed")
	counter(c.events, rep.ResetsSent, "resets_sent")
	counter(c.events, rep.Recovered, "recovered")
	counter(c.events, rep.ChecksumsFinished, "checksums_finished")
	counter(c.events, rep.TooBigAnswered, "too_big_answered")
	counter(c.events, rep.TooBigFragmented, "too_big_fragmented")
	counter(c.events, rep.HeldForHost, "held_for_host")
	counter(c.events, rep.ToAcceptor, "to_acceptor")
	counter(c.events, rep.AcceptorAnswers, "acceptor_answers")
	counter(c.events, rep.SYNAnswers, "syn_answers")
	counter(c.events, rep.HandshakeACKs, "handshake_acks")
	counter(c.events, rep.PuntedMidFlow, "punted_mid_flow")
	counter(c.events, rep.MidFlowRefused, "mid_flow_refused")
	for i, b := range rep.Backends {
		if b.State == unit.StateRemoved {
			continue
		}
		counter(c.bePackets, b.Packets, b.VIP, b.Name, "to_backend")
		counter(c.bePackets, b.ReplyPackets, b.VIP, b.Name, "reply")
		counter(c.beBytes, b.Bytes, b.VIP, b.Name, "to_backend")
		counter(c.beBytes, b.ReplyBytes, b.VIP, b.Name, "reply")
		counter(c.beNewFlows, b.NewFlows, b.VIP, b.Name)
		gauge(c.beConns, float64(conns[i]), b.VIP, b.Name)
		gauge(c.beWeight, float64(b.Weight), b.VIP, b.Name, b.State.String())
	}
	for _, v := range rep.VIPs {
		if v.Removed {
			continue
		}
		counter(c.vipPackets, v.Packets, v.Name)
		counter(c.vipNew, v.NewFlows, v.Name)
	}
}

// Serve serves /metrics on addr until ctx ends.
func Serve(ctx context.Context, addr string, src Source) error {
	reg := prometheus.NewRegistry()
	if err := reg.Register(newCollector(src)); err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	srv := &http.Server{Addr: addr, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}()
	if err := srv.ListenAndServe(); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
