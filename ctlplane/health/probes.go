package health

import (
	"context"
	"net/netip"
	"sync"

	"github.com/rs/zerolog"

	pb "github.com/tetherlb/tether/api/healthpb"
	"github.com/tetherlb/tether/config"
	"github.com/tetherlb/tether/internal/probe"
)

// Probes runs this unit's own checks against the backends of VIPs whose
// health source is probe: the proxy of design S1 (FIG. 17A) for hosts
// without an agent. Results become rows of the ProbeHost pseudo-host,
// which every decision reads like any host's rows. Every unit probes for
// itself, so a unit's failure takes none of the others' knowledge with
// it.
type Probes struct {
	srv *Server
	log zerolog.Logger

	mu      sync.Mutex
	base    context.Context          // bounds every probe's life; set by Start
	running map[string]*backendProbe // by "vip/backend"
}

type backendProbe struct {
	spec   probe.Spec
	row    *pb.Row
	cancel context.CancelFunc
	done   chan struct{}
}

// NewProbes returns an idle prober feeding srv.
func NewProbes(srv *Server, log zerolog.Logger) *Probes {
	return &Probes{srv: srv, log: log, running: map[string]*backendProbe{}}
}

// Start sets the context that bounds every probe, then Syncs cfg. Probes
// must not live by the context of whatever request changed the
// configuration.
func (p *Probes) Start(ctx context.Context, cfg *config.Config) {
	p.mu.Lock()
	p.base = ctx
	p.mu.Unlock()
	p.Sync(cfg)
}

// Sync makes the running probes match cfg: new backends get a probe,
// removed ones lose theirs (and their rows), changed ones restart. Before
// Start it does nothing.
func (p *Probes) Sync(cfg *config.Config) {
	want := map[string]*backendProbe{}
	for i := range cfg.VIPs {
		v := &cfg.VIPs[i]
		if v.Health.Source != config.SourceProbe {
			continue
		}
		vip := netip.AddrPortFrom(v.Addr(), uint16(v.Port)).String()
		for j := range v.Backends {
			b := &v.Backends[j]
			ep := netip.AddrPortFrom(b.Addr(), uint16(b.Port))
			target := ep
			if v.Health.Check.Port != 0 {
				target = netip.AddrPortFrom(b.Addr(), uint16(v.Health.Check.Port))
			}
			want[v.Name+"/"+b.Name] = &backendProbe{
				spec: v.Health.Check.Spec(target.String()),
				row: &pb.Row{App: &pb.AppID{Proto: v.Protocol, Vip: vip, Endpoint: ep.String()},
					Capacity: probeCapacity, Target: pb.State_STATE_ACTIVE, Current: pb.State_STATE_ACTIVE},
			}
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.base == nil {
		return
	}
	for key, old := range p.running {
		if w, ok := want[key]; ok && sameSpec(w.spec, old.spec) && pb.Key(w.row.GetApp()) == pb.Key(old.row.GetApp()) {
			delete(want, key)
			continue
		}
		old.cancel()
		<-old.done
		p.srv.SetProbeRow(old.row, true)
		delete(p.running, key)
	}
	for key, pr := range want {
		c, err := probe.New(pr.spec, p.onChange(key, pr))
		if err != nil {
			// The configuration's checks passed, so this is a bug.
			p.log.Error().Err(err).Str("backend", key).Msg("probe not started")
			continue
		}
		pctx, cancel := context.WithCancel(p.base)
		pr.cancel, pr.done = cancel, make(chan struct{})
		p.running[key] = pr
		go func() { defer close(pr.done); c.Run(pctx) }()
	}
}

// probeCapacity is the capacity probe rows report: all alike, so that
// the operator's weights alone divide the load.
const probeCapacity = 50

func (p *Probes) onChange(key string, pr *backendProbe) func(probe.Health, probe.Result) {
	return func(h probe.Health, r probe.Result) {
		row := &pb.Row{App: pr.row.GetApp(), Capacity: pr.row.GetCapacity(), Target: pr.row.GetTarget(), Current: pr.row.GetCurrent()}
		switch h {
		case probe.Healthy:
			row.Health = pb.Health_HEALTH_HEALTHY
		case probe.Failing:
			row.Health = pb.Health_HEALTH_FAILING
		}
		p.log.Info().Str("backend", key).Str("health", h.String()).Str("detail", r.Detail).Msg("probe")
		p.srv.SetProbeRow(row, false)
	}
}

func sameSpec(a, b probe.Spec) bool {
	return a.Type == b.Type && a.Target == b.Target && a.Path == b.Path && a.Expect == b.Expect &&
		a.Interval == b.Interval && a.Timeout == b.Timeout && a.Rise == b.Rise && a.Fall == b.Fall &&
		a.Host == b.Host
}
