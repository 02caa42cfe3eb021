package health

import (
	"fmt"
	"net/netip"
	"sort"
	"time"

	pb "github.com/tetherlb/tether/api/healthpb"
	"github.com/tetherlb/tether/config"
)

// BackendView is what the cache says about one backend of a VIP, and
// what the unit does about it.
type BackendView struct {
	VIP     string `json:"vip"`
	Backend string `json:"backend"`
	// Endpoint is the backend's address:port, which rows name.
	Endpoint string `json:"endpoint"`
	Source   string `json:"source"`
	// Health is healthy, failing or unknown (no live row says).
	Health string `json:"health"`
	// Directive is the hosts' target state: active, draining, inactive.
	Directive string   `json:"directive"`
	Load      uint32   `json:"load"`
	Capacity  uint32   `json:"capacity"`
	Hosts     []uint32 `json:"hosts,omitempty"`
	// State is what the forwarder is told (empty: the configuration's),
	// and Reason why.
	State  string `json:"state,omitempty"`
	Reason string `json:"reason,omitempty"`
	// Percent of new connections and Weight in the forwarder's Maglev
	// table, from the VIP's allotment.
	Percent float64 `json:"percent"`
	Weight  int     `json:"weight"`
}

// Evaluation is the cache's verdict on every backend of every VIP whose
// health source is not none.
type Evaluation struct {
	Backends []BackendView
	// States and Weights override the configuration for the forwarder,
	// keyed "vip/backend".
	States  map[string]string
	Weights map[string]int
	// Allotments per VIP name, for punted decisions.
	Allotments map[string]*Allotment
}

// weightScale turns allotment shares into Maglev weights: a share of 1
// is this weight, fine enough that a 0.01% share still gets entries.
const weightScale = 10000

// Evaluate applies the cache to cfg. Within grace, a backend no row
// speaks for keeps its configured state (nothing is known yet); after
// it, such a backend takes no new connections. Backends the operator
// set (opStates) keep that state; health can only make them stricter.
func Evaluate(c *Cache, cfg *config.Config, opStates map[string]string, grace bool, tokens int, d time.Duration, now time.Time) Evaluation {
	ev := Evaluation{States: map[string]string{}, Weights: map[string]int{}, Allotments: map[string]*Allotment{}}
	for i := range cfg.VIPs {
		v := &cfg.VIPs[i]
		if v.Health.Source == config.SourceNone {
			continue
		}
		rows := rowsByEndpoint(c, v)
		cands := make([]Candidate, len(v.Backends))
		views := make([]BackendView, len(v.Backends))
		for j := range v.Backends {
			b := &v.Backends[j]
			key := v.Name + "/" + b.Name
			ep := netip.AddrPortFrom(b.Addr(), uint16(b.Port)).String()
			bv := merge(rows[ep])
			bv.VIP, bv.Backend, bv.Endpoint, bv.Source = v.Name, b.Name, ep, v.Health.Source
			state := b.State
			if s, ok := opStates[key]; ok {
				state = s
			}
			override, why := verdict(&bv, grace)
			if stricter(override, state) {
				bv.State, bv.Reason = override, why
				ev.States[key] = override
				state = override
			}
			cands[j] = Candidate{Name: key, Eligible: state == config.StateActive && b.WeightValue() > 0,
				Weight: float64(b.WeightValue()), Capacity: bv.Capacity, Load: bv.Load}
			views[j] = bv
		}
		a := NewAllotment(cands, tokens, now, d)
		ev.Allotments[v.Name] = a
		shares := Shares(cands)
		weights := Apportion(shares, weightScale)
		for j := range views {
			views[j].Percent = a.Percent[j]
			views[j].Weight = weights[j]
			if cands[j].Eligible {
				ev.Weights[cands[j].Name] = weights[j]
			}
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
func merge(rows []Endpoint) BackendView {
	bv := BackendView{Health: "unknown", Directive: config.StateActive}
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
		if d := pb.StateName(r.GetTarget()); stricter(d, bv.Directive) {
			bv.Directive = d
		}
		bv.Load = max(bv.Load, r.GetLoad())
		bv.Capacity = max(bv.Capacity, r.GetCapacity())
	}
	sort.Slice(bv.Hosts, func(i, j int) bool { return bv.Hosts[i] < bv.Hosts[j] })
	bv.Health = pb.HealthName(health)
	return bv
}

// verdict is the state the cache imposes on a backend, and why.
func verdict(bv *BackendView, grace bool) (string, string) {
	switch {
	case bv.Directive == config.StateInactive:
		return config.StateInactive, "its host set it inactive"
	case bv.Directive == config.StateDraining:
		return config.StateDraining, "its host is draining it"
	case bv.Health == "failing":
		return config.StateDraining, "failing its health check: no new connections"
	case bv.Health == "unknown" && len(bv.Hosts) == 0 && grace:
		return "", ""
	case bv.Health == "unknown" && len(bv.Hosts) == 0:
		return config.StateDraining, "no agent or probe reports on it (host gone or never heard): no new connections"
	case bv.Health == "unknown":
		return config.StateDraining, "its health is not known yet: no new connections"
	}
	return "", ""
}

// strictness orders states: inactive > draining > active.
func strictness(s string) int {
	switch s {
	case config.StateInactive:
		return 2
	case config.StateDraining:
		return 1
	}
	return 0
}

func stricter(a, b string) bool { return a != "" && strictness(a) > strictness(b) }

// String renders a view as a line for logs.
func (bv BackendView) String() string {
	return fmt.Sprintf("%s/%s %s %s load %d%% capacity %d: %s", bv.VIP, bv.Backend, bv.Health, bv.Directive, bv.Load, bv.Capacity, bv.Reason)
}
