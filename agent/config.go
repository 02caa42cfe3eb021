package agent

import (
	"fmt"
	"math"
	"net/netip"
	"strings"
	"time"

	"github.com/tetherlb/tether/agent/sessions"
	pb "github.com/tetherlb/tether/api/healthpb"
	"github.com/tetherlb/tether/internal/confcheck"
	"github.com/tetherlb/tether/internal/probe"
)

// Config is a host agent's configuration.
type Config struct {
	Host Host `mapstructure:"host"`
	// Units are the Tether units' health listeners (address:port).
	Units []string `mapstructure:"units"`
	// KeyFile was protocol 1's shared secret; it is refused with a
	// pointer to Auth.
	KeyFile   string    `mapstructure:"key_file"`
	Heartbeat Heartbeat `mapstructure:"heartbeat"`
	Directive Directive `mapstructure:"directive"`
	Load      Load      `mapstructure:"load"`
	API       API       `mapstructure:"api"`
	Group     Group     `mapstructure:"group"`
	Apps      []App     `mapstructure:"applications"`

	// Streams is the agent's end of the host streams to the units
	// (issue 13; streamconfig.go).
	Streams StreamsConfig `mapstructure:"streams"`
	// Auth is this host's identity and how long a unit's datagram
	// counts (issue 13: health protocol security).
	Auth Auth `mapstructure:"auth"`
	// Tunnel is the host side of the tunnels (issue 13;
	// tunnelconfig.go).
	Tunnel TunnelConfig `mapstructure:"tunnel"`
	// Migration is the host side of connection migration (issue 14;
	// migrationconfig.go).
	Migration MigrationConfig `mapstructure:"migration"`
	// Sessions is the host's session table (issue 15; sessions.go).
	Sessions SessionsConfig `mapstructure:"sessions"`

	units []netip.AddrPort
}

// Auth configures the host's identity in the health protocol.
type Auth struct {
	// KeyFile is this host's key, made by `tetherd health-key` from the
	// units' master secret for this host ID and the endpoints it may
	// report on; "" sends and accepts unauthenticated messages.
	KeyFile string `mapstructure:"key_file"`
	// Freshness is how far a unit's datagram's send time may be from
	// this host's clock.
	Freshness time.Duration `mapstructure:"freshness"`
}

// Host identifies this host.
type Host struct {
	// ID is unique among the hosts the units hear from, 1 to 2^32-1.
	ID int `mapstructure:"id"`
	// Name is how units reach this agent: a DNS name or an address.
	// Default: the listen address.
	Name string `mapstructure:"name"`
	// Listen is the agent's UDP address: snapshot requests and
	// postulate answers arrive here, and everything is sent from it.
	Listen string `mapstructure:"listen"`
}

// Heartbeat tunes heartbeats.
type Heartbeat struct {
	Interval time.Duration `mapstructure:"interval"`
	// NameEvery: the host's name goes in every NameEvery-th heartbeat
	// (and in the first few).
	NameEvery int `mapstructure:"name_every"`
}

// Directive tunes the two-phase directive handshake.
type Directive struct {
	// Delay is how long after a directive's row change the agent
	// postulates it.
	Delay time.Duration `mapstructure:"delay"`
	// Window is how long the agent waits for postulate-wrong answers
	// before it concludes (silence) or sends again.
	Window time.Duration `mapstructure:"window"`
}

// Load tunes load reports.
type Load struct {
	// Step is the smallest change of a measured load worth a row change
	// (hysteresis: load is meant to move slowly).
	Step int `mapstructure:"step"`
}

// API is the local API for applications and operators.
type API struct {
	Socket string `mapstructure:"socket"`
	// Group may use the socket besides root.
	Group string `mapstructure:"group"`
}

// Group configures heartbeat aggregation among the hosts of a group.
type Group struct {
	// Bind is the membership protocol's address (TCP and UDP); ""
	// disables aggregation: this agent sends its own heartbeats.
	Bind string `mapstructure:"bind"`
	// Join lists other members' bind addresses.
	Join []string `mapstructure:"join"`
	// Mode is aggregate (the leader sends every member's heartbeat in
	// one message per unit) or membership (the leader sends only
	// hellos, goodbyes and heartbeats members mark forwarded).
	Mode string `mapstructure:"mode"`
	// Compress compresses the leader's consolidated heartbeats.
	Compress bool `mapstructure:"compress"`
	// ForwardEvery: in membership mode, every ForwardEvery-th heartbeat
	// of a member is marked forwarded so units can check its table.
	ForwardEvery int `mapstructure:"forward_every"`
	// KeyFile holds a secret the group's members share (at least 16
	// bytes) that encrypts and authenticates their gossip; required
	// with auth.key_file, since each host's own key is its alone.
	KeyFile string `mapstructure:"key_file"`
}

// Group modes.
const (
	ModeAggregate  = "aggregate"
	ModeMembership = "membership"
)

// App is one application the agent reports on.
type App struct {
	// Name is the application's local name in the agent's API.
	Name     string `mapstructure:"name"`
	Proto    string `mapstructure:"proto"`
	VIP      string `mapstructure:"vip"`
	Endpoint string `mapstructure:"endpoint"`
	URL      string `mapstructure:"url"`
	// Capacity relative to applications of the same type, 0 to 99.
	Capacity int `mapstructure:"capacity"`
	// State is the initial directive: active, draining or inactive.
	State string `mapstructure:"state"`
	// Check is the local health check; without one the application is
	// healthy until it (or an operator) says otherwise through the API.
	Check *CheckConfig `mapstructure:"check"`
	// LoadCommand prints the application's load (a percentage) on its
	// first line; it runs every LoadInterval.
	LoadCommand  []string      `mapstructure:"load_command"`
	LoadInterval time.Duration `mapstructure:"load_interval"`
}

// CheckConfig is a health check in the configuration.
type CheckConfig struct {
	Type string `mapstructure:"type"`
	// Target defaults to the application's endpoint.
	Target   string        `mapstructure:"target"`
	Path     string        `mapstructure:"path"`
	Host     string        `mapstructure:"host"`
	Expect   int           `mapstructure:"expect"`
	Command  []string      `mapstructure:"command"`
	Interval time.Duration `mapstructure:"interval"`
	Timeout  time.Duration `mapstructure:"timeout"`
	Rise     int           `mapstructure:"rise"`
	Fall     int           `mapstructure:"fall"`
}

var defaults = map[string]any{
	"host.id":              0,
	"host.name":            "",
	"host.listen":          "",
	"key_file":             "",
	"auth.key_file":        "",
	"auth.freshness":       30 * time.Second,
	"group.key_file":       "",
	"heartbeat.interval":   500 * time.Millisecond,
	"heartbeat.name_every": 10,
	"directive.delay":      300 * time.Millisecond,
	"directive.window":     300 * time.Millisecond,
	"load.step":            5,
	"api.socket":           "/run/tether-agent/agent.sock",
	"api.group":            "",
	"group.bind":           "",
	"group.mode":           ModeAggregate,
	"group.compress":       true,
	"group.forward_every":  10,
	// The host streams (streamconfig.go).
	"streams.tls.ca":   "",
	"streams.tls.cert": "",
	"streams.tls.key":  "",
	// The tunnel (tunnelconfig.go).
	"tunnel.interface": "",
	"tunnel.pin_dir":   "/sys/fs/bpf/tether-host",
	"tunnel.generic":   false,
	"tunnel.max_flows": 1 << 20,
	// Connection migration (migrationconfig.go).
	"migration.enabled":        false,
	"migration.handoff_socket": "/run/tether-agent/handoff.sock",
	"migration.handoff_group":  "",
	// The session table (sessions.go).
	"sessions.max": sessions.DefaultMax,
}

// ParseConfig reads YAML, applies TETHER_AGENT_* environment overrides
// (TETHER_AGENT_HOST_ID=7) and checks the result; every problem names
// its key, its value and why.
func ParseConfig(b []byte) (*Config, error) {
	var c Config
	if err := confcheck.DecodeYAML(confcheck.NewViper(defaults, "TETHER_AGENT"), b, &c); err != nil {
		return nil, fmt.Errorf("agent config: %w", err)
	}
	if err := c.Check(); err != nil {
		return nil, err
	}
	return &c, nil
}

// problems collects errors in "key: value: reason" form.
type problems = confcheck.Problems

// Check validates c and fills defaults that depend on other keys.
func (c *Config) Check() error {
	var p problems
	if c.Host.ID < 1 || c.Host.ID > math.MaxUint32 {
		p.Add("host.id", c.Host.ID, "must be between 1 and %d, unique among hosts", uint32(math.MaxUint32))
	}
	listen, err := netip.ParseAddrPort(c.Host.Listen)
	if err != nil || listen.Port() == 0 {
		p.Add("host.listen", c.Host.Listen, "want address:port, e.g. 10.0.10.2:7311")
	}
	if c.Host.Name == "" && listen.IsValid() && !listen.Addr().IsUnspecified() {
		c.Host.Name = listen.Addr().String()
	}
	if c.Host.Name == "" {
		p.Add("host.name", c.Host.Name, "required when host.listen binds every address: how units reach this agent")
	} else if len(c.Host.Name) > pb.MaxNameLen {
		p.Add("host.name", c.Host.Name, "longer than a DNS name")
	}
	if len(c.Units) == 0 {
		p.Add("units", "", "list at least one unit's health listener (address:port)")
	}
	c.units = c.units[:0]
	for i, u := range c.Units {
		ap, err := netip.ParseAddrPort(u)
		if err != nil || ap.Port() == 0 {
			p.Add(fmt.Sprintf("units[%d]", i), u, "want address:port, e.g. 10.0.0.1:7310")
			continue
		}
		c.units = append(c.units, ap)
	}
	if i := c.Heartbeat.Interval; i < time.Duration(pb.MinInterval)*time.Millisecond || i > time.Duration(pb.MaxInterval)*time.Millisecond {
		p.Add("heartbeat.interval", i, "must be between %dms and %dms", pb.MinInterval, pb.MaxInterval)
	}
	if c.Heartbeat.NameEvery < 1 || c.Heartbeat.NameEvery > 1000 {
		p.Add("heartbeat.name_every", c.Heartbeat.NameEvery, "must be between 1 and 1000")
	}
	for _, d := range []struct {
		key string
		v   time.Duration
	}{{"directive.delay", c.Directive.Delay}, {"directive.window", c.Directive.Window}} {
		if d.v < 10*time.Millisecond || d.v > time.Minute {
			p.Add(d.key, d.v, "must be between 10ms and 1m")
		}
	}
	if c.Load.Step < 0 || c.Load.Step > 50 {
		p.Add("load.step", c.Load.Step, "must be between 0 and 50 percentage points")
	}
	if !strings.HasPrefix(c.API.Socket, "/") {
		p.Add("api.socket", c.API.Socket, "must be an absolute path")
	}
	c.Group.check(&p)
	c.Streams.check(&p) // the host streams (streamconfig.go)
	if c.KeyFile != "" {
		p.Add("key_file", c.KeyFile, "protocol 2 has no shared key: each host needs its own, made with `tetherd health-key --host %d`, in auth.key_file", c.Host.ID)
	}
	if f := c.Auth.KeyFile; f != "" && !strings.HasPrefix(f, "/") {
		p.Add("auth.key_file", f, "must be an absolute path")
	}
	if c.Auth.Freshness < time.Second || c.Auth.Freshness > 10*time.Minute {
		p.Add("auth.freshness", c.Auth.Freshness, "must be between 1s and 10m")
	}
	if c.Auth.KeyFile != "" && c.Group.Bind != "" && c.Group.KeyFile == "" {
		p.Add("group.key_file", "", "required with auth.key_file: the group's gossip needs a secret its members share")
	}
	// The tunnel (tunnelconfig.go).
	c.Tunnel.check(&p, &c.Streams)
	// Connection migration (migrationconfig.go).
	c.Migration.check(&p, c)
	c.Sessions.check(&p) // the session table (sessions.go)
	names, keys := map[string]int{}, map[string]int{}
	for i := range c.Apps {
		a := &c.Apps[i]
		key := fmt.Sprintf("applications[%d]", i)
		a.check(&p, key)
		if j, dup := names[a.Name]; dup {
			p.Add(key+".name", a.Name, "also the name of applications[%d]", j)
		}
		names[a.Name] = i
		if k := pb.Key(a.AppID()); keys[k] != 0 {
			p.Add(key, a.Name, "same protocol, VIP, endpoint and URL as applications[%d]", keys[k]-1)
		} else {
			keys[k] = i + 1
		}
	}
	if len(c.Apps) > pb.MaxRows {
		p.Add("applications", len(c.Apps), "more than %d applications", pb.MaxRows)
	}
	return p.Err()
}

func (g *Group) check(p *problems) {
	if g.Bind == "" {
		if len(g.Join) > 0 {
			p.Add("group.join", strings.Join(g.Join, ","), "needs group.bind")
		}
		return
	}
	if ap, err := netip.ParseAddrPort(g.Bind); err != nil || ap.Port() == 0 || ap.Addr().IsUnspecified() {
		p.Add("group.bind", g.Bind, "want a specific address:port other members reach, e.g. 10.0.10.2:7946")
	}
	for i, j := range g.Join {
		if ap, err := netip.ParseAddrPort(j); err != nil || ap.Port() == 0 {
			p.Add(fmt.Sprintf("group.join[%d]", i), j, "want address:port")
		}
	}
	if g.Mode != ModeAggregate && g.Mode != ModeMembership {
		p.Add("group.mode", g.Mode, "must be aggregate or membership")
	}
	if g.ForwardEvery < 1 || g.ForwardEvery > 1000 {
		p.Add("group.forward_every", g.ForwardEvery, "must be between 1 and 1000")
	}
}

func (a *App) check(p *problems, key string) {
	if a.Name == "" || len(a.Name) > 64 || strings.ContainsAny(a.Name, "/ \t") {
		p.Add(key+".name", a.Name, "want 1 to 64 characters without slashes or spaces")
	}
	if a.Proto == "" {
		a.Proto = "tcp"
	}
	if a.State == "" {
		a.State = "active"
	}
	if _, ok := pb.ParseState(a.State); !ok {
		p.Add(key+".state", a.State, "must be active, draining or inactive")
	}
	if a.Capacity < 0 || a.Capacity > pb.MaxCapacity {
		p.Add(key+".capacity", a.Capacity, "must be between 0 and %d", pb.MaxCapacity)
	}
	if err := pb.ValidApp(a.AppID()); err != nil {
		p.Add(key, a.Name, "%v", err)
	}
	if a.Check != nil {
		if s := a.CheckSpec(); s.Type == "" {
			p.Add(key+".check.type", "", "must be tcp, http or exec")
		} else if err := s.Validate(); err != nil {
			p.Add(key+".check", a.Check.Type, "%v", err)
		}
	}
	if len(a.LoadCommand) > 0 {
		if a.LoadInterval == 0 {
			a.LoadInterval = 15 * time.Second
		}
		if a.LoadInterval < 100*time.Millisecond || a.LoadInterval > time.Hour {
			p.Add(key+".load_interval", a.LoadInterval, "must be between 100ms and 1h")
		}
	}
}

// AppID is the application's identity in the protocol.
func (a *App) AppID() *pb.AppID {
	return &pb.AppID{Proto: a.Proto, Vip: a.VIP, Endpoint: a.Endpoint, Url: a.URL}
}

// CheckSpec is the application's check with defaults filled; the target
// defaults to the endpoint.
func (a *App) CheckSpec() probe.Spec {
	c := a.Check
	target := c.Target
	if target == "" {
		target = a.Endpoint
	}
	return probe.Spec{Type: c.Type, Target: target, Path: c.Path, Host: c.Host, Expect: c.Expect, Command: c.Command,
		Interval: c.Interval, Timeout: c.Timeout, Rise: c.Rise, Fall: c.Fall}.Defaults()
}
