package config

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Cluster makes the unit a member of a cluster of units (issue 15):
// units gossip with hashicorp/memberlist (SWIM) to learn who is alive,
// encrypted and authenticated with a key every unit of the cluster
// holds. Without the section the unit is alone: no membership, no
// gossip port.
//
// The section is fixed at start: a reload that changes it is refused
// (a restart applies it).
type Cluster struct {
	// Bind is the gossip address (UDP and TCP), "address:port" or an
	// address alone for port DefaultClusterPort. Default
	// 0.0.0.0:7946.
	Bind string `mapstructure:"bind"`
	// Advertise is the address:port other units reach this one at, when
	// it differs from Bind (NAT, or Bind is 0.0.0.0 on a host of many
	// addresses); "" lets memberlist pick the bound address.
	Advertise string `mapstructure:"advertise"`
	// Peers are units to join at start: host:port, or a host alone for
	// port DefaultClusterPort. A unit keeps trying until one answers, so
	// units may start in any order; listing every unit (itself too) is
	// fine.
	Peers []string `mapstructure:"peers"`
	// KeyFile holds the cluster's key: exactly 32 raw bytes (AES-256),
	// e.g. from `head -c 32 /dev/urandom`, readable by the unit's user
	// only. Required: gossip is never plain.
	KeyFile string `mapstructure:"key_file"`
	// ProbeInterval is how often the unit probes one other member;
	// ProbeTimeout how long it waits for the answer before asking
	// others to probe it indirectly (above the network's round trip,
	// and under ProbeInterval).
	ProbeInterval time.Duration `mapstructure:"probe_interval"`
	ProbeTimeout  time.Duration `mapstructure:"probe_timeout"`
	// SuspicionMult scales how long a member that failed a probe stays
	// suspect before it is declared dead: SuspicionMult ×
	// max(1, log10(members)) × ProbeInterval at least (see
	// ctlplane/cluster for the whole bound).
	SuspicionMult int `mapstructure:"suspicion_mult"`
	// GossipInterval is how often the unit gossips what it learnt to a
	// few members.
	GossipInterval time.Duration `mapstructure:"gossip_interval"`

	// Listen is the atom stream's address:port (TCP, mutual TLS): where
	// other units reach this unit's portion of the distributed atom
	// manager. An address alone takes port DefaultAtomsPort; default
	// Bind's address at that port. Other units dial the address they
	// gossip with at this port, which the unit publishes (so port 0,
	// any free port, works too).
	Listen string `mapstructure:"listen"`
	// TLS is the unit's certificate toward other units: it must name
	// unit.name as its one DNS name and allow client authentication
	// (tetherd certs makes such certificates). Default hosts.tls.
	TLS TLS `mapstructure:"tls"`
	// Replication is how many units besides the one that adds an atom
	// hold it: 0, 1, 2… or "full" (every unit). Default 1: a unit's
	// death loses no connection.
	Replication any `mapstructure:"replication"`
	// Level is Replication as a number (-1 for full), set by Check.
	Level int `mapstructure:"-"`
	// ZombieTime is how long a deleted atom still routes late packets to
	// its host; default 60s (TCP's TIME_WAIT).
	ZombieTime time.Duration `mapstructure:"zombie_time"`
	// PullWait bounds how long a starting unit waits for the others
	// before it says it is ready without their atoms; default 10s.
	PullWait time.Duration `mapstructure:"pull_wait"`
}

// Defaults and bounds of the cluster section. The defaults are
// memberlist's LAN configuration's.
const (
	DefaultClusterPort           = 7946
	DefaultClusterBind           = "0.0.0.0:7946"
	DefaultClusterProbeInterval  = time.Second
	DefaultClusterProbeTimeout   = 500 * time.Millisecond
	DefaultClusterSuspicionMult  = 4
	DefaultClusterGossipInterval = 200 * time.Millisecond
	MaxClusterPeers              = 256
	DefaultAtomsPort             = 7947
	DefaultReplication           = 1
	MaxReplication               = 16
	DefaultZombieTime            = 60 * time.Second
	DefaultPullWait              = 10 * time.Second
)

// ReplicationFull is the replication level that puts every atom on
// every unit (Cluster.Level).
const ReplicationFull = -1

func (c *Cluster) check(p *problems) {
	if c.Bind == "" {
		c.Bind = DefaultClusterBind
	}
	if a, err := netip.ParseAddr(c.Bind); err == nil {
		c.Bind = netip.AddrPortFrom(a, DefaultClusterPort).String()
	}
	if ap, err := netip.ParseAddrPort(c.Bind); err != nil || ap.Port() == 0 || ap.Addr().Zone() != "" {
		p.Add("cluster.bind", c.Bind, "want address:port (or an address alone for port %d), e.g. 10.0.0.1:7946 (0.0.0.0 for every address)", DefaultClusterPort)
	}
	if c.Advertise != "" {
		if ap, err := netip.ParseAddrPort(c.Advertise); err != nil || ap.Port() == 0 || ap.Addr().IsUnspecified() {
			p.Add("cluster.advertise", c.Advertise, "want the address:port other units reach this one at, e.g. 10.0.0.1:7946")
		}
	}
	if len(c.Peers) > MaxClusterPeers {
		p.Add("cluster.peers", len(c.Peers), "more than %d peers", MaxClusterPeers)
	}
	for i, peer := range c.Peers {
		norm, ok := clusterPeer(peer)
		if !ok {
			p.Add("cluster.peers["+strconv.Itoa(i)+"]", peer, "want host:port (or a host alone for port %d), e.g. 10.0.0.2:7946 or unit-b.example.net", DefaultClusterPort)
			continue
		}
		c.Peers[i] = norm
	}
	switch {
	case c.KeyFile == "":
		p.Add("cluster.key_file", c.KeyFile, "required: gossip between units is encrypted with a 32-byte key every unit holds (head -c 32 /dev/urandom > FILE; chmod 0600 FILE)")
	case !strings.HasPrefix(c.KeyFile, "/"):
		p.Add("cluster.key_file", c.KeyFile, "must be an absolute path")
	}
	if c.ProbeInterval == 0 {
		c.ProbeInterval = DefaultClusterProbeInterval
	}
	if c.ProbeTimeout == 0 {
		c.ProbeTimeout = DefaultClusterProbeTimeout
	}
	if c.SuspicionMult == 0 {
		c.SuspicionMult = DefaultClusterSuspicionMult
	}
	if c.GossipInterval == 0 {
		c.GossipInterval = DefaultClusterGossipInterval
	}
	if c.ProbeInterval < 100*time.Millisecond || c.ProbeInterval > time.Minute {
		p.Add("cluster.probe_interval", c.ProbeInterval, "must be between 100ms and 1m")
	}
	switch {
	case c.ProbeTimeout < 10*time.Millisecond || c.ProbeTimeout > 30*time.Second:
		p.Add("cluster.probe_timeout", c.ProbeTimeout, "must be between 10ms and 30s")
	case c.ProbeTimeout >= c.ProbeInterval:
		p.Add("cluster.probe_timeout", c.ProbeTimeout, "must be less than cluster.probe_interval (%s): indirect probes run within the same interval", c.ProbeInterval)
	}
	if c.SuspicionMult < 1 || c.SuspicionMult > 20 {
		p.Add("cluster.suspicion_mult", c.SuspicionMult, "must be between 1 and 20")
	}
	if c.GossipInterval < 10*time.Millisecond || c.GossipInterval > 10*time.Second {
		p.Add("cluster.gossip_interval", c.GossipInterval, "must be between 10ms and 10s")
	}
	c.checkAtoms(p)
}

// checkAtoms checks the atom manager's keys (TLS is checked with the
// whole file, since it defaults to hosts.tls).
func (c *Cluster) checkAtoms(p *problems) {
	if c.Listen == "" {
		if ap, err := netip.ParseAddrPort(c.Bind); err == nil {
			c.Listen = netip.AddrPortFrom(ap.Addr(), DefaultAtomsPort).String()
		}
	} else if a, err := netip.ParseAddr(c.Listen); err == nil {
		c.Listen = netip.AddrPortFrom(a, DefaultAtomsPort).String()
	}
	if ap, err := netip.ParseAddrPort(c.Listen); c.Listen != "" && (err != nil || ap.Addr().Zone() != "") {
		p.Add("cluster.listen", c.Listen, "want address:port (or an address alone for port %d), e.g. 10.0.0.1:7947", DefaultAtomsPort)
	} else if bind, err := netip.ParseAddrPort(c.Bind); err == nil && ap == bind && ap.Port() != 0 {
		p.Add("cluster.listen", c.Listen, "is cluster.bind: the atom stream (TCP) needs a port of its own")
	}
	// YAML gives an int, a configuration passed on as JSON a float64,
	// and "full" or a quoted number a string: take them all by text.
	if c.Replication == nil {
		c.Level = DefaultReplication
	} else if r := fmt.Sprint(c.Replication); r == "full" {
		c.Level = ReplicationFull
	} else if n, err := strconv.Atoi(r); err == nil && n >= 0 && n <= MaxReplication {
		c.Level = n
	} else {
		p.Add("cluster.replication", c.Replication, "want 0 to %d, or full", MaxReplication)
	}
	if c.ZombieTime == 0 {
		c.ZombieTime = DefaultZombieTime
	}
	if c.ZombieTime < time.Second || c.ZombieTime > time.Hour {
		p.Add("cluster.zombie_time", c.ZombieTime, "must be between 1s and 1h")
	}
	if c.PullWait == 0 {
		c.PullWait = DefaultPullWait
	}
	if c.PullWait < 100*time.Millisecond || c.PullWait > 10*time.Minute {
		p.Add("cluster.pull_wait", c.PullWait, "must be between 100ms and 10m")
	}
}

// checkTLS defaults the cluster's certificate to the host streams' and
// requires one: units talk over mutual TLS only.
func (c *Cluster) checkTLS(p *problems, hosts TLS) {
	if c.TLS == (TLS{}) {
		c.TLS = hosts
	}
	for _, f := range []struct{ key, v string }{{"cluster.tls.ca", c.TLS.CA}, {"cluster.tls.cert", c.TLS.Cert}, {"cluster.tls.key", c.TLS.Key}} {
		if f.v == "" {
			p.Add(f.key, f.v, "required: units talk over mutual TLS only (the default is hosts.tls; tetherd certs makes a test CA)")
		}
	}
}

// clusterPeer normalises a peer to host:port and says whether it is
// one: an IP address or a DNS name, with a port or without (then
// DefaultClusterPort).
func clusterPeer(s string) (string, bool) {
	if a, err := netip.ParseAddr(s); err == nil && a.Zone() == "" {
		return netip.AddrPortFrom(a, DefaultClusterPort).String(), true
	}
	if isHostName(s) && !strings.Contains(s, ":") {
		return net.JoinHostPort(s, strconv.Itoa(DefaultClusterPort)), true
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return "", false
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 {
		return "", false
	}
	if a, err := netip.ParseAddr(host); err == nil {
		return s, a.Zone() == ""
	}
	return s, len(host) <= 253 && isHostName(host)
}

// Equal reports whether c and o configure the same membership (both may
// be nil), once checked.
func (c *Cluster) Equal(o *Cluster) bool {
	if c == nil || o == nil {
		return c == o
	}
	return c.Bind == o.Bind && c.Advertise == o.Advertise && slices.Equal(c.Peers, o.Peers) && c.KeyFile == o.KeyFile &&
		c.ProbeInterval == o.ProbeInterval && c.ProbeTimeout == o.ProbeTimeout &&
		c.SuspicionMult == o.SuspicionMult && c.GossipInterval == o.GossipInterval &&
		c.Listen == o.Listen && c.TLS == o.TLS && c.Level == o.Level && c.ZombieTime == o.ZombieTime && c.PullWait == o.PullWait
}

// clone returns a deep copy of c (nil for nil).
func (c *Cluster) clone() *Cluster {
	if c == nil {
		return nil
	}
	out := *c
	out.Peers = slices.Clone(c.Peers)
	return &out
}
