package control

import (
	"context"
	"fmt"
	"net/netip"

	"github.com/tetherlb/tether/api/unit"
	"github.com/tetherlb/tether/ctlplane/hosts"
	"github.com/tetherlb/tether/internal/mtls"
)

// startHosts opens the host streams' listener when hosts.listen is set.
// Like the health listener it is fixed at start: changing it takes a
// restart. A TLS file that cannot be read, or a certificate that does
// not name unit.name, stops the start with the key that names it.
func (c *Control) startHosts() error {
	h := c.file.Hosts
	if h.Listen == "" {
		return nil
	}
	cfg, err := mtls.Server(mtls.Files{CA: h.TLS.CA, Cert: h.TLS.Cert, Key: h.TLS.Key}, c.file.Unit.Name)
	if err != nil {
		return fmt.Errorf("hosts.tls.%w", err)
	}
	var sources []netip.Addr
	for _, a := range []string{c.file.Unit.Address4, c.file.Unit.Address6} {
		if ip, err := netip.ParseAddr(a); err == nil {
			sources = append(sources, ip)
		}
	}
	opts := hosts.Options{Listen: h.Listen, TLS: cfg, Unit: c.file.Unit.Name,
		TunnelSources: sources, OnAck: c.onHostAck,
		OnHostKnown: c.hostKnown, OnMigrateResult: c.onMigrateResult, OnMigrationEnded: c.onMigrationEnded, Log: c.log.With().Str("part", "hosts").Logger()}
	if c.file.Cluster != nil {
		// Sessions live in the atom manager: a unit outside a cluster
		// has nowhere to keep them, and its hello says so.
		opts.OnSessions = c.onSessions
	}
	srv, err := hosts.New(opts)
	if err != nil {
		return err
	}
	c.hosts = srv
	return nil
}

// runHosts serves the host streams until ctx ends.
func (c *Control) runHosts(ctx context.Context) {
	if c.hosts == nil {
		return
	}
	c.log.Info().Str("listen", c.hosts.Addr().String()).Msg("host stream listener running")
	if err := c.hosts.Run(ctx); err != nil {
		c.log.Error().Err(err).Msg("host stream listener stopped")
	}
}

// Streams reports the host streams (an empty view without hosts.listen).
func (c *Control) Streams(context.Context) unit.StreamsView {
	if c.hosts == nil {
		return unit.StreamsView{Streams: []unit.HostStream{}, Refused: map[string]uint64{}}
	}
	v := c.hosts.View()
	c.tun.mu.Lock()
	v.Tunnel = c.tun.stats
	c.tun.mu.Unlock()
	return v
}
