package control

import (
	"context"
	"fmt"
	"hash/fnv"
	"maps"
	"os"
	"strings"
	"time"

	pb "github.com/tetherlb/tether/api/healthpb"
	"github.com/tetherlb/tether/config"
	"github.com/tetherlb/tether/ctlplane/health"
)

// unitID is this unit's ID in the health protocol: configured, or a hash
// of the unit's name.
func unitID(cfg *config.Config) uint32 {
	if cfg.Health.UnitID != 0 {
		return uint32(cfg.Health.UnitID)
	}
	h := fnv.New32a()
	h.Write([]byte(cfg.Unit.Name))
	return max(h.Sum32(), 1)
}

// readKey reads the protocol's shared secret.
func readKey(path string) ([]byte, error) {
	if path == "" {
		return nil, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("health.key_file: %q: %w", path, err)
	}
	key := []byte(strings.TrimSpace(string(b)))
	if len(key) < 16 {
		return nil, fmt.Errorf("health.key_file: %q: the key must be at least 16 bytes", path)
	}
	return key, nil
}

// startHealth opens the health listener and starts the probes. Both are
// fixed at start: changing health.listen or the key takes a restart.
func (c *Control) startHealth() error {
	key, err := readKey(c.cfg.Health.KeyFile)
	if err != nil {
		return err
	}
	c.changed = make(chan struct{}, 1)
	srv, err := health.New(health.Options{
		Listen:   c.cfg.Health.Listen,
		Unit:     unitID(c.cfg),
		Key:      key,
		Missed:   c.cfg.Health.Missed,
		OnChange: c.healthChanged,
		Log:      c.log.With().Str("part", "health").Logger(),
	})
	if err != nil {
		return err
	}
	c.hl = srv
	c.probes = health.NewProbes(srv, c.log.With().Str("part", "probes").Logger())
	return nil
}

// healthChanged wakes the refresher; it never blocks.
func (c *Control) healthChanged() {
	select {
	case c.changed <- struct{}{}:
	default:
	}
}

// runHealth serves the protocol and keeps the forwarder in step with the
// cache until ctx ends.
func (c *Control) runHealth(ctx context.Context) {
	go func() {
		if err := c.hl.Run(ctx); err != nil {
			c.log.Error().Err(err).Msg("health listener stopped")
		}
	}()
	c.mu.Lock()
	cfg := c.cfg
	c.mu.Unlock()
	c.probes.Start(ctx, cfg)
	if addr := c.hl.Addr(); addr.IsValid() {
		c.log.Info().Str("listen", addr.String()).Uint32("unit_id", unitID(cfg)).Msg("health listener running")
	}
	// The grace period's end changes verdicts even when nothing is heard.
	grace := time.AfterFunc(time.Until(c.started.Add(cfg.Health.StartupGrace)), c.healthChanged)
	defer grace.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.changed:
		}
		// Coalesce a burst (a snapshot, a leader's aggregate) into one
		// table rebuild.
		select {
		case <-ctx.Done():
			return
		case <-time.After(5 * time.Millisecond):
		}
		if err := c.refresh(ctx); err != nil {
			c.log.Error().Err(err).Msg("health: forwarder not updated")
		}
	}
}

// evaluate runs the cache's verdict over cfg; callers hold c.mu.
func (c *Control) evaluate(cfg *config.Config, opStates map[string]string) health.Evaluation {
	grace := time.Since(c.started) < cfg.Health.StartupGrace
	var ev health.Evaluation
	c.hl.Read(func(cache *health.Cache) {
		ev = health.Evaluate(cache, cfg, opStates, grace, cfg.Health.Allotment.Tokens, cfg.Health.Allotment.Duration, time.Now())
	})
	return ev
}

// refresh re-evaluates the cache and, when the forwarder's overrides
// change, pushes them.
func (c *Control) refresh(ctx context.Context) error {
	c.applyMu.Lock()
	defer c.applyMu.Unlock()
	c.mu.Lock()
	raw, states := c.raw, copyStates(c.states)
	cfg := c.cfg
	ev := c.evaluate(cfg, states)
	same := maps.Equal(ev.States, c.eval.States) && maps.Equal(ev.Weights, c.eval.Weights)
	if same {
		c.eval = ev
		c.allot = ev.Allotments
	}
	c.mu.Unlock()
	if same {
		return nil
	}
	for _, bv := range ev.Backends {
		if bv.State != "" {
			c.log.Info().Str("vip", bv.VIP).Str("backend", bv.Backend).Str("state", bv.State).Str("why", bv.Reason).Msg("health verdict")
		}
	}
	return c.applyLocked(ctx, raw, states)
}

// HealthView is the cache as tetherctl shows it.
type HealthView struct {
	Unit     uint32               `json:"unit_id"`
	Listen   string               `json:"listen,omitempty"`
	Hosts    []HostView           `json:"hosts"`
	Backends []health.BackendView `json:"backends"`
	Stats    health.Stats         `json:"stats"`
	Grace    bool                 `json:"startup_grace"`
	Allot    map[string]AllotView `json:"allotments,omitempty"`
}

// HostView is one host of the cache.
type HostView struct {
	ID         uint32    `json:"id"`
	Name       string    `json:"name,omitempty"`
	Address    string    `json:"address,omitempty"`
	Leader     uint32    `json:"leader,omitempty"`
	Generation uint64    `json:"generation"`
	Interval   string    `json:"interval"`
	LastHeard  string    `json:"last_heard"` // ago
	Rows       []RowView `json:"rows"`
}

// RowView is one application row.
type RowView struct {
	Proto    string `json:"proto"`
	VIP      string `json:"vip,omitempty"`
	Endpoint string `json:"endpoint,omitempty"`
	URL      string `json:"url,omitempty"`
	Health   string `json:"health"`
	Load     uint32 `json:"load"`
	Capacity uint32 `json:"capacity"`
	Target   string `json:"target"`
	Current  string `json:"current"`
}

// AllotView is a VIP's current allotment.
type AllotView struct {
	Percent map[string]float64 `json:"percent"`
	Tokens  map[string]int     `json:"tokens_left"`
	Total   int                `json:"tokens"`
	Expires string             `json:"expires_in"`
}

// Health reports the consolidated cache, the verdict on every backend
// and the allotments.
func (c *Control) Health(context.Context) HealthView {
	c.mu.Lock()
	defer c.mu.Unlock()
	v := HealthView{Unit: unitID(c.cfg), Stats: c.hl.Stats(), Backends: c.eval.Backends,
		Grace: time.Since(c.started) < c.cfg.Health.StartupGrace, Allot: map[string]AllotView{}}
	if a := c.hl.Addr(); a.IsValid() {
		v.Listen = a.String()
	}
	now := time.Now()
	c.hl.Read(func(cache *health.Cache) {
		for _, id := range cache.HostIDs() {
			h := cache.Host(id)
			hv := HostView{ID: id, Name: h.Name, Leader: h.Leader, Generation: h.Generation, Interval: h.Interval.String(),
				LastHeard: now.Sub(h.LastHeard).Round(time.Millisecond).String()}
			if id == health.ProbeHost {
				hv.Name, hv.Interval, hv.LastHeard = "(this unit's probes)", "-", "-"
			}
			if h.Source.IsValid() {
				hv.Address = h.Source.String()
			}
			for _, r := range sortedRows(h) {
				hv.Rows = append(hv.Rows, rowView(r))
			}
			v.Hosts = append(v.Hosts, hv)
		}
	})
	for vip, a := range c.allot {
		av := AllotView{Percent: map[string]float64{}, Tokens: map[string]int{}, Total: a.Total, Expires: a.Expires.Sub(now).Round(time.Millisecond).String()}
		for i, n := range a.Names {
			_, b, _ := strings.Cut(n, "/")
			av.Percent[b] = a.Percent[i]
			av.Tokens[b] = a.Tokens[i]
		}
		v.Allot[vip] = av
	}
	return v
}

func sortedRows(h *health.Host) []*pb.Row { return h.Sorted() }

func rowView(r *pb.Row) RowView {
	a := r.GetApp()
	return RowView{Proto: a.GetProto(), VIP: a.GetVip(), Endpoint: a.GetEndpoint(), URL: a.GetUrl(),
		Health: pb.HealthName(r.GetHealth()), Load: r.GetLoad(), Capacity: r.GetCapacity(),
		Target: pb.StateName(r.GetTarget()), Current: pb.StateName(r.GetCurrent())}
}
