package health

import (
	"net/netip"
	"sort"
	"time"

	pb "github.com/tetherlb/tether/api/healthpb"
	"github.com/tetherlb/tether/api/unit"
	"github.com/tetherlb/tether/config"
)

// Evaluation is the cache's verdict on every backend of every VIP whose
// health source is not none.
type Evaluation struct {
	Backends []unit.BackendVerdict
	// States are the verdicts that make a backend stricter than its
	// configured and operator's state.
	States map[unit.BackendKey]unit.State
	// Allotments per VIP name: each eligible backend's share of new
	// connections, as a Maglev weight for the forwarder and as tokens
	// for punted decisions.
	Allotments map[string]*Allotment
}

// Apply writes the evaluation into cfg, a copy the caller owns: the
// stricter states, and each allotted backend's weight as its Maglev
// weight. Backends of VIPs without a health source keep their
// configuration.
func (ev *Evaluation) Apply(cfg *config.Config) {
	for i := range cfg.VIPs {
		v := &cfg.VIPs[i]
		a := ev.Allotments[v.Name]
		for j := range v.Backends {
			b := &v.Backends[j]
			key := unit.BackendKey{VIP: v.Name, Backend: b.Name}
			if s, ok := ev.States[key]; ok {
				b.State = s.String()
			}
			if w, ok := a.Weight(key); ok {
				b.Weight = &w
			}
		}
	}
}

// Evaluate applies the cache to cfg. Within grace, a backend no row
// speaks for keeps its configured state (nothing is known yet); after
// it, such a backend takes no new connections. Backends the operator
// set (opStates) keep that state; health can only make them stricter.
func Evaluate(c *Cache, cfg *config.Config, opStates map[unit.BackendKey]unit.State, grace bool, tokens int, d time.Duration, now time.Time) Evaluation {
	ev := Evaluation{States: map[unit.BackendKey]unit.State{}, Allotments: map[string]*Allotment{}}
	for i := range cfg.VIPs {
		v := &cfg.VIPs[i]
		if v.Health.Source == config.SourceNone {
			continue
		}
		rows := rowsByEndpoint(c, v)
		cands := make([]Candidate, len(v.Backends))
		views := make([]unit.BackendVerdict, len(v.Backends))
		for j := range v.Backends {
			b := &v.Backends[j]
			key := unit.BackendKey{VIP: v.Name, Backend: b.Name}
			ep := netip.AddrPortFrom(b.Addr(), uint16(b.Port)).String()
			bv := merge(rows[ep])
			bv.VIP, bv.Backend, bv.Endpoint, bv.Source = v.Name, b.Name, ep, v.Health.Source
			state := b.StateValue()
			if s, ok := opStates[key]; ok {
				state = s
			}
			if override, why := verdict(&bv, grace); override.Stricter(state) {
				bv.State, bv.Reason = override, why
				ev.States[key] = override
				state = override
			}
			cands[j] = Candidate{Key: key, Eligible: state == unit.StateActive && b.WeightValue() > 0,
				Weight: float64(b.WeightValue()), Capacity: bv.Capacity, Load: bv.Load}
			views[j] = bv
		}
		a := NewAllotment(cands, tokens, now, d)
		ev.Allotments[v.Name] = a
		for j := range views {
			views[j].Percent = a.Percent[j]
			views[j].Weight = a.Weights[j]
		}
		ev.Backends = append(ev.Backends, views...)
	}
	return ev
}

// rowsByEndpoint gathers the rows that speak for v's backends, keyed by
// endpoint: rows of v's type (its protocol and address:port) and rows
// that name only an endpoint, from the VIP's source alone — agents' rows
// for source agent, this unit's probes for source probe — so that one
// source's opinion never masks the other's.
func rowsByEndpoint(c *Cache, v *config.VIP) map[string][]Endpoint {
	vip := netip.AddrPortFrom(v.Addr(), uint16(v.Port)).String()
	out := map[string][]Endpoint{}
	probe := v.Health.Source == config.SourceProbe
	for _, typ := range []string{
		pb.TypeKey(&pb.AppID{Proto: v.Protocol, Vip: vip}),
		pb.TypeKey(&pb.AppID{Proto: v.Protocol}),
	} {
		for _, e := range c.OfType(typ) {
			if (e.Host == ProbeHost) != probe {
				continue
			}
			ep := e.Row.GetApp().GetEndpoint()
			out[ep] = append(out[ep], e)
		}
	}
	return out
}

// merge combines the rows that speak for one endpoint: several when a
// pair of proxies (or a VIP row and an endpoint row) report on it. Any
// healthy report makes it healthy (a proxy that cannot reach it is not
// proof that the unit cannot); the strictest directive wins; load and
// capacity are the highest reported.
func merge(rows []Endpoint) unit.BackendVerdict {
	bv := unit.BackendVerdict{Health: "unknown", Directive: unit.StateActive}
	health := pb.Health_HEALTH_UNKNOWN
	for _, e := range rows {
		r := e.Row
		bv.Hosts = append(bv.Hosts, e.Host)
		switch {
		case r.GetHealth() == pb.Health_HEALTH_HEALTHY:
			health = pb.Health_HEALTH_HEALTHY
		case r.GetHealth() == pb.Health_HEALTH_FAILING && health == pb.Health_HEALTH_UNKNOWN:
			health = pb.Health_HEALTH_FAILING
		}
		if d := stateOf(r.GetTarget()); d.Stricter(bv.Directive) {
			bv.Directive = d
		}
		bv.Load = max(bv.Load, r.GetLoad())
		bv.Capacity = max(bv.Capacity, r.GetCapacity())
	}
	sort.Slice(bv.Hosts, func(i, j int) bool { return bv.Hosts[i] < bv.Hosts[j] })
	bv.Health = pb.HealthName(health)
	return bv
}

// verdict is the state the cache imposes on a backend (unset: none),
// and why.
func verdict(bv *unit.BackendVerdict, grace bool) (unit.State, string) {
	switch {
	case bv.Directive == unit.StateInactive:
		return unit.StateInactive, "its host set it inactive"
	case bv.Directive == unit.StateDraining:
		return unit.StateDraining, "its host is draining it"
	case bv.Health == "failing":
		return unit.StateDraining, "failing its health check: no new connections"
	case bv.Health == "unknown" && len(bv.Hosts) == 0 && grace:
		return 0, ""
	case bv.Health == "unknown" && len(bv.Hosts) == 0:
		return unit.StateDraining, "no agent or probe reports on it (host gone or never heard): no new connections"
	case bv.Health == "unknown":
		return unit.StateDraining, "its health is not known yet: no new connections"
	}
	return 0, ""
}

// stateOf is a row's directive as a backend state.
func stateOf(s pb.State) unit.State {
	switch s {
	case pb.State_STATE_DRAINING:
		return unit.StateDraining
	case pb.State_STATE_INACTIVE:
		return unit.StateInactive
	}
	return unit.StateActive
}
