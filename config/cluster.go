package config

import (
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
)

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
		c.SuspicionMult == o.SuspicionMult && c.GossipInterval == o.GossipInterval
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
