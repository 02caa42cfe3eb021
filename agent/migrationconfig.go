package agent

import (
	"fmt"
	"net/http"
	"net/netip"
	"strings"

	"github.com/rs/zerolog"

	"github.com/tetherlb/tether/agent/migrate"
	"github.com/tetherlb/tether/agent/streams"
	"github.com/tetherlb/tether/api/hostpb"
	"github.com/tetherlb/tether/internal/localapi"
)

// MigrationConfig is the host side of connection migration (issue 14):
// the units' migrated connections are recreated in this host's kernel
// and handed to the application, through a listener shim (agent/shim)
// that registered on the hand-off socket, or spliced to a local server.
type MigrationConfig struct {
	// Enabled takes migrated connections; off (the default) answers
	// every Migrate not ok, and the unit resets the client.
	Enabled bool `mapstructure:"enabled"`
	// HandoffSocket is where the applications' listener shims connect.
	HandoffSocket string `mapstructure:"handoff_socket"`
	// HandoffGroup may connect besides root (mode 0660); "" leaves the
	// socket to root (0600). Whoever can connect may register for any
	// VIP and receive its clients' connections.
	HandoffGroup string `mapstructure:"handoff_group"`
	// Splice hands the connections to a VIP:port no shim serves to an
	// unmodified local server.
	Splice []SpliceConfig `mapstructure:"splice"`

	splices []migrate.Splice
}

// SpliceConfig is one splice.
type SpliceConfig struct {
	// VIP is the migrated connections' VIP:port, IPv4 or IPv6 (an IPv6
	// VIP as the units migrate to it: no zone, not IPv4-mapped, not
	// link-local).
	VIP string `mapstructure:"vip"`
	// To is the local server, address:port.
	To string `mapstructure:"to"`
	// ProxyProtocol is v2 (the default: a PROXY protocol v2 header
	// naming the client comes first) or none.
	ProxyProtocol string `mapstructure:"proxy_protocol"`
}

// maxSplices bounds migration.splice.
const maxSplices = 256

func (mc *MigrationConfig) check(p *problems, c *Config) {
	mc.splices = mc.splices[:0]
	if !mc.Enabled {
		if len(mc.Splice) > 0 {
			p.Add("migration.splice", len(mc.Splice), "needs migration.enabled: true")
		}
		return
	}
	if len(c.Streams.Units) == 0 {
		p.Add("migration.enabled", true, "needs streams.units: the units send migrated connections over the host streams")
	}
	if s := mc.HandoffSocket; !strings.HasPrefix(s, "/") || len(s) > 107 {
		p.Add("migration.handoff_socket", s, "must be an absolute path of at most 107 bytes (a Unix socket's limit)")
	} else if s == c.API.Socket {
		p.Add("migration.handoff_socket", s, "is also api.socket")
	}
	if g := mc.HandoffGroup; g != "" && (len(g) > 32 || strings.ContainsAny(g, " \t\n:/")) {
		p.Add("migration.handoff_group", g, "want a group name")
	}
	if len(mc.Splice) > maxSplices {
		p.Add("migration.splice", len(mc.Splice), "more than %d splices", maxSplices)
	}
	seen := map[netip.AddrPort]int{}
	for i, s := range mc.Splice {
		key := fmt.Sprintf("migration.splice[%d]", i)
		// A migrated connection's VIP is matched as the unit sends it,
		// which is never IPv4-mapped and has no zone: a splice written so
		// would never match.
		vip, err := netip.ParseAddrPort(s.VIP)
		switch {
		case err != nil || vip.Port() == 0:
			p.Add(key+".vip", s.VIP, "want the VIP's address:port, e.g. 192.0.2.10:80 or [2001:db8::10]:80")
			continue
		case vip.Addr().Is4In6():
			p.Add(key+".vip", s.VIP, "is IPv4-mapped: want the IPv4 address, %v, as a migrated IPv4 connection names it",
				netip.AddrPortFrom(vip.Addr().Unmap(), vip.Port()))
			continue
		case vip.Addr().Zone() != "":
			p.Add(key+".vip", s.VIP, "want the address without a zone: a migrated connection carries none")
			continue
		case vip.Addr().IsUnspecified() || vip.Addr().IsMulticast():
			p.Add(key+".vip", s.VIP, "want the VIP's own address")
			continue
		case vip.Addr().Is6() && vip.Addr().IsLinkLocalUnicast():
			p.Add(key+".vip", s.VIP, "want a global or unique-local address: a link-local VIP needs a zone a migrated connection cannot carry")
			continue
		}
		if j, dup := seen[vip]; dup {
			p.Add(key+".vip", s.VIP, "also migration.splice[%d].vip: one local server per VIP", j)
			continue
		}
		seen[vip] = i
		to, err := netip.ParseAddrPort(s.To)
		if err != nil || to.Port() == 0 || to.Addr().IsUnspecified() || to.Addr().Zone() != "" {
			p.Add(key+".to", s.To, "want the local server's address:port, e.g. 127.0.0.1:8080")
			continue
		}
		pp := s.ProxyProtocol
		if pp == "" {
			pp = "v2"
		}
		if pp != "v2" && pp != "none" {
			p.Add(key+".proxy_protocol", s.ProxyProtocol, "must be v2 or none")
			continue
		}
		mc.splices = append(mc.splices, migrate.Splice{VIP: vip, To: to, ProxyProtocol: pp == "v2"})
	}
}

// NewMigrator opens the hand-off socket when migration is enabled (nil
// otherwise); ended hears of every migrated connection's end.
func (c *Config) NewMigrator(log zerolog.Logger, ended func(unit string, e *hostpb.MigrationEnded)) (*migrate.Migrator, error) {
	mc := c.Migration
	if !mc.Enabled {
		return nil, nil
	}
	m, err := migrate.New(migrate.Config{Socket: mc.HandoffSocket, Group: mc.HandoffGroup, Splices: mc.splices, Ended: ended, Log: log})
	if err != nil {
		return nil, fmt.Errorf("migration.handoff_socket: %q: %w", mc.HandoffSocket, err)
	}
	return m, nil
}

// EndedTo is the Migrator's ended callback that reports to the units
// over s, logging what cannot be sent (the unit then ages the route).
func EndedTo(s *streams.Streams, log zerolog.Logger) func(unit string, e *hostpb.MigrationEnded) {
	return func(unit string, e *hostpb.MigrationEnded) {
		if err := s.SendEnded(unit, e); err != nil {
			log.Debug().Str("unit", unit).Uint64("id", e.GetId()).Err(err).Msg("migration ended: not reported")
		}
	}
}

// AttachMigrator makes m the agent's Migrator, which its API shows at
// GET /v1/migrations.
func (a *Agent) AttachMigrator(m *migrate.Migrator) { a.migrator.Store(m) }

// MigrationsView is GET /v1/migrations.
type MigrationsView struct {
	// Enabled is false when migration.enabled is off.
	Enabled bool `json:"enabled"`
	migrate.Status
}

func (a *Agent) migrationRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/migrations", func(w http.ResponseWriter, r *http.Request) {
		v := MigrationsView{}
		if m := a.migrator.Load(); m != nil {
			v.Enabled, v.Status = true, m.Status()
		}
		localapi.WriteJSON(w, http.StatusOK, v)
	})
}
