package forwarder

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/tetherlb/tether/internal/cpuset"

	"github.com/rs/zerolog"

	"github.com/tetherlb/tether/api/unit"
	"github.com/tetherlb/tether/config"
	"github.com/tetherlb/tether/dataplane"
	"github.com/tetherlb/tether/dataplane/channel"
	"github.com/tetherlb/tether/nic"
	"github.com/tetherlb/tether/nic/afxdp"
	"github.com/tetherlb/tether/nic/tun"
)

// Forwarder is a running dataplane.
type Forwarder struct {
	log     zerolog.Logger
	cfg     *config.Config
	snap    *dataplane.Snapshot
	ports   []nic.Port // one per worker
	tun     *tun.Port
	routes  []netip.Prefix
	xdp     *afxdp.Unit
	ifindex int              // the AF_XDP interface
	ifmac   net.HardwareAddr // its MAC
	neigh   *dataplane.Neighbors
	workers []*dataplane.Worker
	// dispatch spreads one queue over several workers, when configured.
	dispatch *dataplane.Dispatcher
	// uplink is the channel to the control process, when configured.
	uplink *uplink
	mu     sync.Mutex // serialises changes to cfg, snap and neigh

	// maxFrame is the longest frame the port receives (the AF_XDP
	// interface's MTU and link header), 0 when not known.
	maxFrame int
}

// New opens the port and prepares the workers; Run starts them.
func New(c *config.Config, log zerolog.Logger) (*Forwarder, error) {
	snap, err := dataplane.Build(c, nil)
	if err != nil {
		return nil, err
	}
	f := &Forwarder{log: log, cfg: c, snap: snap}
	switch c.Forwarder.Port.Driver {
	case config.DriverTUN:
		t, err := tun.Open(tun.Config{Name: c.Forwarder.Port.Interface, MTU: c.Forwarder.Port.MTU, QueueLength: c.Forwarder.Port.QueueLength, Offload: c.Forwarder.Port.Offload})
		if err != nil {
			if errors.Is(err, os.ErrPermission) {
				return nil, err // AF_XDP would need more privileges, not fewer
			}
			return nil, fmt.Errorf("%w; the afxdp port is the alternative", err)
		}
		f.ports, f.tun = []nic.Port{t}, t
		if err := f.syncRoutes(c); err != nil {
			f.Close()
			return nil, err
		}
	case config.DriverAFXDP:
		u, err := afxdp.Open(afxdp.Config{Interface: c.Forwarder.Port.Interface, Queues: c.Forwarder.Port.Queues, Ring: c.Forwarder.Port.QueueLength, PinDir: c.Forwarder.Port.PinDir})
		if err != nil {
			return nil, err
		}
		f.xdp = u
		for _, s := range u.Sockets() {
			f.ports = append(f.ports, s)
		}
		ifc, err := net.InterfaceByName(c.Forwarder.Port.Interface)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("afxdp: %w", err)
		}
		f.ifindex, f.ifmac = ifc.Index, ifc.HardwareAddr
		f.maxFrame = ifc.MTU + linkHeader
		if err := f.own(c); err != nil {
			f.Close()
			return nil, err
		}
		if f.neigh, err = kernelNeighbors(f.ifindex, f.ifmac, c); err != nil {
			f.Close()
			return nil, fmt.Errorf("afxdp: read neighbours: %w", err)
		}
		f.snap = snap.WithNeighbors(f.neigh)
		f.warmNeighbors(2 * time.Second)
		log.Info().Str("interface", ifc.Name).Str("xdp", u.XDPMode()).Str("socket", string(u.Sockets()[0].Mode())).
			Int("neighbours", f.neigh.Len()).Msg("afxdp attached")
	default:
		return nil, fmt.Errorf("forwarder.port.driver: %q: unknown", c.Forwarder.Port.Driver)
	}
	if err := f.startWorkers(c); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// NewOnPorts makes a forwarder on ports the caller opened and owns (an
// in-memory port in a benchmark, say): one worker per port, or a
// dispatcher over a single port. Neighbours come from the configuration.
func NewOnPorts(c *config.Config, ports []nic.Port, log zerolog.Logger) (*Forwarder, error) {
	snap, err := dataplane.Build(c, nil)
	if err != nil {
		return nil, err
	}
	f := &Forwarder{log: log, cfg: c, snap: snap, ports: ports}
	if err := f.startWorkers(c); err != nil {
		return nil, err
	}
	return f, nil
}

// linkHeader is the longest link header in front of an MTU-sized
// packet: Ethernet and two VLAN tags.
const linkHeader = 14 + 2*4

// startWorkers makes the workers: one per port, or a dispatcher spreading
// one port over them (the configuration allows nothing else). Workers on
// ports of their own (a device queue each) hand each other the frames
// whose flows the other owns, since the device, not the flow, picks
// the queue (dataplane.ConnectHandOff).
func (f *Forwarder) startWorkers(c *config.Config) error {
	workerPorts := f.ports
	if len(f.ports) != c.Forwarder.Workers {
		if len(f.ports) != 1 {
			return fmt.Errorf("forwarder: %d ports for %d workers", len(f.ports), c.Forwarder.Workers)
		}
		f.dispatch, workerPorts = dataplane.NewDispatcher(f.ports[0], f.snap, c.Forwarder.Workers, c.Forwarder.Batch)
	}
	for i := range c.Forwarder.Workers {
		var seed [8]byte
		if _, err := rand.Read(seed[:]); err != nil {
			return fmt.Errorf("forwarder: seed: %w", err)
		}
		pc := dataplane.ConfigFrom(c, i, workerPorts[i].LinkType(), binary.LittleEndian.Uint64(seed[:]))
		// An AF_XDP socket does not say which checksums a local sender
		// left partial; the pipeline finishes them (see Pipeline.offload).
		pc.GuessPartial = c.Forwarder.Port.Driver == config.DriverAFXDP
		p, err := dataplane.New(pc, f.snap)
		if err != nil {
			return err
		}
		core := -1
		if len(c.Forwarder.Cores) > i {
			core = c.Forwarder.Cores[i]
		}
		f.workers = append(f.workers, dataplane.NewWorker(p, workerPorts[i], c.Forwarder.Batch, core))
	}
	if f.dispatch == nil {
		if err := dataplane.ConnectHandOff(f.workers, f.maxFrame); err != nil {
			return fmt.Errorf("forwarder: %w", err)
		}
	}
	return nil
}

// own tells the XDP program what to redirect: traffic to VIP and SNAT
// addresses, and replies from half-NAT backends' service ports.
func (f *Forwarder) own(c *config.Config) error {
	var dst []netip.Addr
	for _, p := range owned(c) {
		dst = append(dst, p.Addr())
	}
	var src []afxdp.Endpoint
	for i := range c.VIPs {
		v := &c.VIPs[i]
		if v.ModeValue() != unit.ModeHalfNAT {
			continue
		}
		for j := range v.Backends {
			b := &v.Backends[j]
			src = append(src, afxdp.Endpoint{Addr: b.Addr(), Port: uint16(b.Port), Proto: v.ProtoNum()})
		}
	}
	return f.xdp.Own(dst, src)
}

// owned lists the addresses whose traffic the port must receive: every
// VIP and SNAT address (standby ones too: replies to another unit's
// SNAT address come here once this unit took its connections over), as
// host prefixes.
func owned(c *config.Config) []netip.Prefix {
	var ps []netip.Prefix
	add := func(a netip.Addr) {
		p := netip.PrefixFrom(a, a.BitLen())
		if !slices.Contains(ps, p) {
			ps = append(ps, p)
		}
	}
	for i := range c.VIPs {
		add(c.VIPs[i].Addr())
		for _, s := range c.VIPs[i].SNATAddrs() {
			add(s)
		}
		for _, s := range c.VIPs[i].SNATStandbyAddrs() {
			add(s)
		}
	}
	return ps
}

// syncRoutes points the routes of c's addresses into the TUN device and
// removes those no longer owned, then brings the half-NAT return path
// (policy.go) in step with c.
func (f *Forwarder) syncRoutes(c *config.Config) error {
	want := owned(c)
	for _, p := range want {
		if err := f.tun.Route(p); err != nil {
			return err
		}
	}
	for _, p := range f.routes {
		if !slices.Contains(want, p) {
			if err := f.tun.Unroute(p); err != nil {
				f.log.Warn().Err(err).Msg("stale route left in place")
			}
		}
	}
	f.routes = want
	return f.syncReturnPath(c)
}

// Restore puts connections back into the workers' flow tables, each
// into the worker that held it (or the one that owns its key), before
// Run: a forwarder that restarts does not forward a packet before its
// live connections are in place. It returns how many it put back, and
// the first refusal (a backend the configuration no longer has, a full
// table).
func (f *Forwarder) Restore(flows []unit.FlowRecord) (int, error) {
	steer := dataplane.NewSteerer(len(f.workers))
	n := 0
	var first error
	for i := range flows {
		fl := &flows[i]
		wi := fl.Worker
		if wi < 0 || wi >= len(f.workers) {
			wi = steer.KeyWorker(f.snap, &fl.Key)
		}
		w := f.workers[wi]
		r := channel.Route{Op: channel.RouteAdd, Worker: uint8(wi), Key: fl.Key, Action: fl.Action}
		if err := w.Pipeline().AddRoute(&r, w.Now()); err != nil {
			if first == nil {
				first = err
			}
			continue
		}
		n++
	}
	return n, first
}

// Run runs the workers until ctx ends or one fails.
func (f *Forwarder) Run(ctx context.Context) error {
	// Logged before the uplink starts: a reload may replace f.cfg.
	f.log.Info().Str("port", f.ports[0].Name()).Str("driver", f.cfg.Forwarder.Port.Driver).
		Int("workers", len(f.workers)).Bool("software_rss", f.dispatch != nil).Bool("handoff", f.dispatch == nil && len(f.workers) > 1).Int("vips", len(f.cfg.VIPs)).Msg("forwarding")
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make(chan error, len(f.workers)+1)
	if cores := f.cfg.Forwarder.Cores; len(cores) > 0 {
		// The forwarder's own threads (the runtime's, the uplink's,
		// the neighbour watcher's) go elsewhere before the workers pin
		// themselves, so that a worker's core is the worker's alone.
		// Failing that, they share the workers' cores, as before: slower,
		// not wrong.
		//
		// A forwarder started by tetherd run inherits the control
		// process's affinity, which already avoids the workers' cores:
		// the runtime then counts one core and keeps one P, which the
		// spinning worker holds, and the uplink's goroutines (punts,
		// the acceptor's answers, routes) ran only when the worker
		// yielded it (a SYN-ACK took 1-13 ms instead of under one). A P
		// per worker and one for the rest; setting GOMAXPROCS also stops
		// the runtime from lowering it when the threads move.
		if n := len(f.workers) + 1; runtime.GOMAXPROCS(0) < n {
			runtime.GOMAXPROCS(n)
		}
		if left, err := cpuset.Avoid(cores); err != nil {
			f.log.Warn().Err(err).Ints("worker_cores", cores).Msg("other threads may share the workers' cores")
		} else {
			f.log.Info().Ints("worker_cores", cores).Ints("other_threads", left).Msg("cores")
		}
	}
	if f.xdp != nil {
		go f.watchNeighbors(ctx)
	}
	if f.uplink != nil {
		go f.uplink.run(ctx)
	}
	if f.dispatch != nil {
		go func() {
			err := f.dispatch.Run(ctx)
			if err != nil {
				cancel()
			}
			errs <- err
		}()
	}
	for i, w := range f.workers {
		go func() {
			err := w.Run(ctx)
			if err != nil {
				err = fmt.Errorf("worker %d: %w", i, err)
			}
			errs <- err
		}()
	}
	var first error
	n := len(f.workers)
	if f.dispatch != nil {
		n++
	}
	for range n {
		if err := <-errs; err != nil && first == nil {
			first = err
			cancel()
		}
	}
	return first
}

// Reload applies a new configuration without dropping flows: the new
// snapshot keeps IDs and removed backends of the old one, so flows finish.
// Keys that need a restart (port, workers, cores) must not change; a
// configuration that changes them is refused and the running one stays.
// The reply names the generation and the IDs the configuration's VIPs
// and backends have now.
func (f *Forwarder) Reload(ctx context.Context, c *config.Config) (unit.ReloadReply, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	old := &f.cfg.Forwarder
	switch {
	case c.Forwarder.Port != old.Port:
		return unit.ReloadReply{}, errors.New("forwarder.port: changing the port needs a restart")
	case c.Forwarder.Workers != old.Workers || c.Forwarder.Port.Queues != old.Port.Queues:
		return unit.ReloadReply{}, errors.New("forwarder.workers: changing the number of workers needs a restart")
	case !slices.Equal(c.Forwarder.Cores, old.Cores):
		return unit.ReloadReply{}, errors.New("forwarder.cores: changing core pinning needs a restart")
	case c.Forwarder.Flows.Max != old.Flows.Max:
		return unit.ReloadReply{}, errors.New("forwarder.flows.max: resizing the flow table needs a restart")
	}
	snap, err := dataplane.Build(c, f.snap)
	if err != nil {
		return unit.ReloadReply{}, err
	}
	if f.tun != nil {
		if err := f.syncRoutes(c); err != nil {
			return unit.ReloadReply{}, err
		}
	}
	if f.xdp != nil {
		if err := f.own(c); err != nil {
			return unit.ReloadReply{}, err
		}
		n, err := kernelNeighbors(f.ifindex, f.ifmac, c)
		if err != nil {
			return unit.ReloadReply{}, fmt.Errorf("reload: read neighbours: %w", err)
		}
		f.neigh = n
		snap = snap.WithNeighbors(n)
	}
	f.cfg = c
	if err := f.push(ctx, snap); err != nil {
		return unit.ReloadReply{}, err
	}
	f.log.Info().Uint64("generation", snap.Generation).Int("vips", len(c.VIPs)).Msg("configuration reloaded")
	return snap.IDs(), nil
}

// push hands a snapshot to every worker (and the dispatcher, which steers
// by it); the caller holds f.mu.
func (f *Forwarder) push(ctx context.Context, snap *dataplane.Snapshot) error {
	if f.dispatch != nil {
		f.dispatch.SetSnapshot(snap)
	}
	for i, w := range f.workers {
		if err := w.Do(ctx, func(p *dataplane.Pipeline) { p.SetSnapshot(snap) }); err != nil {
			return fmt.Errorf("worker %d: %w", i, err)
		}
	}
	f.snap = snap
	return nil
}

// generation returns the running configuration's generation.
func (f *Forwarder) generation() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.snap.Generation
}

// currentSnapshot returns the snapshot the workers run.
func (f *Forwarder) currentSnapshot() *dataplane.Snapshot {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.snap
}

// Summary collects every worker's counters.
func (f *Forwarder) Summary(ctx context.Context) (dataplane.Summary, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var total dataplane.Summary
	for i, w := range f.workers {
		var s dataplane.Summary
		var ho dataplane.HandOffStats
		if err := w.Do(ctx, func(p *dataplane.Pipeline) { s, ho = p.Summary(nic.Stats{}), w.HandOffStats() }); err != nil {
			return total, fmt.Errorf("summary: worker %d: %w", i, err)
		}
		addWorker(&total, &s, ho, len(f.workers))
	}
	// What never reached a worker: the dispatcher's full queues and the
	// kernel's drops at the port (both safe to read while running).
	if f.dispatch != nil {
		total.Port.RxDropped += f.dispatch.Stats().QueueFull
	}
	for _, p := range f.ports {
		if kd, ok := p.(nic.KernelDropper); ok {
			total.Port.KernelDropped += kd.KernelDropped()
		}
	}
	return total, nil
}

// addWorker adds one worker's summary and hand-off counters to total,
// and its share to total.Workers when there are several.
func addWorker(total, s *dataplane.Summary, ho dataplane.HandOffStats, workers int) {
	total.Stats.Add(&s.Stats)
	total.FlowTable.Add(&s.FlowTable)
	total.Flows4 += s.Flows4
	total.Flows6 += s.Flows6
	total.Snapshot = s.Snapshot
	if workers > 1 {
		total.Workers = append(total.Workers, dataplane.WorkerSummary{
			RxPackets: s.Stats.RxPackets, NewFlows: s.Stats.NewFlows, Flows: s.Flows4 + s.Flows6, HandOff: ho})
	}
}

// StoppedSummary collects counters after Run has returned, from the
// calling goroutine: the workers have stopped, so nothing else touches
// their pipelines.
func (f *Forwarder) StoppedSummary() dataplane.Summary {
	var total dataplane.Summary
	for _, w := range f.workers {
		s := w.Pipeline().Summary(nic.Stats{})
		addWorker(&total, &s, w.HandOffStats(), len(f.workers))
	}
	if f.dispatch != nil {
		total.Port.RxDropped += f.dispatch.Stats().QueueFull
	}
	for _, p := range f.ports {
		total.Port.Add(p.Stats())
	}
	return total
}

// Close releases the port: the TUN device, its routes and the half-NAT
// return path's rules, or the XDP program and the sockets.
func (f *Forwarder) Close() error {
	switch {
	case f.tun != nil:
		return errors.Join(f.clearReturnPath(), f.tun.Close())
	case f.xdp != nil:
		return f.xdp.Close()
	}
	return nil
}
