package control

import (
	"context"
	"fmt"
	"hash/fnv"
	"maps"
	"os"
	"slices"
	"strings"
	"time"

	pb "github.com/tetherlb/tether/api/healthpb"
	"github.com/tetherlb/tether/api/unit"
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

// readMaster reads the secret hosts' keys are derived from.
func readMaster(path string) ([]byte, error) {
	if path == "" {
		return nil, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("health.auth.master_key_file: %q: %w", path, err)
	}
	key := []byte(strings.TrimSpace(string(b)))
	if len(key) < pb.MinMasterSize {
		return nil, fmt.Errorf("health.auth.master_key_file: %q: the secret must be at least %d bytes", path, pb.MinMasterSize)
	}
	return key, nil
}

// startHealth opens the health listener and starts the probes. Both are
// fixed at start: changing health.listen or the key takes a restart.
func (c *Control) startHealth() error {
	master, err := readMaster(c.file.Health.Auth.MasterKeyFile)
	if err != nil {
		return err
	}
	c.changed = make(chan struct{}, 1)
	srv, err := health.New(health.Options{
		Listen:    c.file.Health.Listen,
		Unit:      unitID(c.file),
		Master:    master,
		Freshness: c.file.Health.Auth.Freshness,
		Missed:    c.file.Health.Missed,
		OnChange:  c.healthChanged,
		Log:       c.log.With().Str("part", "health").Logger(),
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
	cfg := c.file
	c.mu.Unlock()
	c.probes.Start(ctx, cfg)
	if addr := c.hl.Addr(); addr.IsValid() {
		c.log.Info().Str("listen", addr.String()).Uint32("unit_id", unitID(cfg)).Bool("authenticated", cfg.Health.Auth.MasterKeyFile != "").Msg("health listener running")
		if cfg.Health.Auth.MasterKeyFile == "" {
			c.log.Warn().Msg("health: no health.auth.master_key_file: datagrams are not authenticated, and anyone who reaches the listener can speak for any host")
		}
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

// evaluate runs the cache's verdict over cfg and the operators' states;
// callers hold c.mu.
func (c *Control) evaluate(cfg *config.Config, opStates map[unit.BackendKey]unit.State) health.Evaluation {
	grace := time.Since(c.started) < cfg.Health.StartupGrace
	var ev health.Evaluation
	c.hl.Read(func(cache *health.Cache) {
		ev = health.Evaluate(cache, cfg, opStates, grace, cfg.Health.Allotment.Tokens, cfg.Health.Allotment.Duration, time.Now())
	})
	return ev
}

// refresh re-evaluates the cache and, when the states or weights the
// forwarder runs would change, applies the result.
func (c *Control) refresh(ctx context.Context) error {
	c.applyMu.Lock()
	defer c.applyMu.Unlock()
	c.mu.Lock()
	file, raw, states := c.file, c.raw, maps.Clone(c.states)
	ev := c.evaluate(file, states)
	same := sameOverrides(&ev, &c.eval)
	if same {
		c.eval = ev // fresh allotments and views; the forwarder's tables stay
	}
	c.mu.Unlock()
	if same {
		return nil
	}
	for _, bv := range ev.Backends {
		if bv.State != 0 {
			c.log.Info().Str("vip", bv.VIP).Str("backend", bv.Backend).Stringer("state", bv.State).Str("why", bv.Reason).Msg("health verdict")
		}
	}
	return c.applyLocked(ctx, file, raw, states, &ev)
}

// sameOverrides reports whether two verdicts give the forwarder the same
// states and weights.
func sameOverrides(a, b *health.Evaluation) bool {
	if !maps.Equal(a.States, b.States) || len(a.Allotments) != len(b.Allotments) {
		return false
	}
	for vip, x := range a.Allotments {
		y := b.Allotments[vip]
		if y == nil || !slices.Equal(x.Keys, y.Keys) || !slices.Equal(x.Weights, y.Weights) {
			return false
		}
	}
	return true
}

// Health reports the consolidated cache, the verdict on every backend
// and the allotments.
func (c *Control) Health(context.Context) unit.HealthView {
	c.mu.Lock()
	defer c.mu.Unlock()
	v := unit.HealthView{Unit: unitID(c.file), Stats: c.hl.Stats(), Backends: c.eval.Backends,
		Grace: time.Since(c.started) < c.file.Health.StartupGrace, Allot: map[string]unit.AllotView{}}
	if a := c.hl.Addr(); a.IsValid() {
		v.Listen = a.String()
	}
	now := time.Now()
	c.hl.Read(func(cache *health.Cache) {
		for _, id := range cache.HostIDs() {
			h := cache.Host(id)
			hv := unit.HostView{ID: id, Name: h.Name, Leader: h.Leader, Generation: h.Generation, Interval: h.Interval.String(),
				LastHeard: now.Sub(h.LastHeard).Round(time.Millisecond).String()}
			if id == health.ProbeHost {
				hv.Name, hv.Interval, hv.LastHeard = "(this unit's probes)", "-", "-"
			}
			if h.Source.IsValid() {
				hv.Address = h.Source.String()
			}
			for _, r := range h.Sorted() {
				hv.Rows = append(hv.Rows, pb.View(r))
			}
			v.Hosts = append(v.Hosts, hv)
		}
	})
	for vip, a := range c.eval.Allotments {
		av := unit.AllotView{Percent: map[string]float64{}, Tokens: map[string]int{}, Total: a.Total, Expires: a.Expires.Sub(now).Round(time.Millisecond).String()}
		for i, k := range a.Keys {
			av.Percent[k.Backend] = a.Percent[i]
			av.Tokens[k.Backend] = a.Tokens[i]
		}
		v.Allot[vip] = av
	}
	return v
}
