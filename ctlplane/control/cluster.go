package control

import (
	"context"
	"fmt"
	"net/netip"

	"github.com/tetherlb/tether/api/unit"
	"github.com/tetherlb/tether/config"
	"github.com/tetherlb/tether/ctlplane/cluster"
)

// prepareCluster reads the cluster key when the file has a cluster
// section, so that a key of the wrong length or mode stops the start
// with the key that names it, before anything runs.
func (c *Control) prepareCluster() error {
	cl := c.file.Cluster
	if cl == nil {
		return nil
	}
	key, err := cluster.ReadKey(cl.KeyFile)
	if err != nil {
		return fmt.Errorf("cluster.key_file: %w", err)
	}
	c.clusterKey = key
	return nil
}

// startCluster makes the unit a member of its cluster (issue 15) and
// returns what leaves it; without a cluster section it does nothing.
// Like the listeners, membership is fixed at start (see clusterChange).
func (c *Control) startCluster() (stop func(), err error) {
	file := c.fileLocked() // a reload may have replaced it since New
	cl := file.Cluster
	if cl == nil {
		return func() {}, nil
	}
	var sources []netip.Addr
	for _, a := range []netip.Addr{file.Unit.Addr4(), file.Unit.Addr6()} {
		if a.IsValid() {
			sources = append(sources, a)
		}
	}
	n, err := cluster.Start(cluster.Options{Name: file.Unit.Name, Bind: cl.Bind, Advertise: cl.Advertise, Peers: cl.Peers,
		Key: c.clusterKey, TunnelSources: sources, ProbeInterval: cl.ProbeInterval, ProbeTimeout: cl.ProbeTimeout,
		SuspicionMult: cl.SuspicionMult, GossipInterval: cl.GossipInterval,
		Log: c.log.With().Str("part", "cluster").Logger()})
	if err != nil {
		return nil, fmt.Errorf("cluster.bind: %w", err)
	}
	c.member.Store(n)
	return func() {
		if err := n.Stop(); err != nil {
			c.log.Warn().Err(err).Msg("cluster: leave")
		}
	}, nil
}

// clusterChange names the first key of the cluster section that differs
// between old and new, or returns "".
func clusterChange(old, new *config.Cluster) string {
	switch {
	case old.Equal(new):
		return ""
	case old == nil || new == nil:
		return "cluster"
	case old.Bind != new.Bind:
		return "cluster.bind"
	case old.Advertise != new.Advertise:
		return "cluster.advertise"
	case old.KeyFile != new.KeyFile:
		return "cluster.key_file"
	case old.ProbeInterval != new.ProbeInterval:
		return "cluster.probe_interval"
	case old.ProbeTimeout != new.ProbeTimeout:
		return "cluster.probe_timeout"
	case old.SuspicionMult != new.SuspicionMult:
		return "cluster.suspicion_mult"
	case old.GossipInterval != new.GossipInterval:
		return "cluster.gossip_interval"
	}
	return "cluster.peers"
}

// Members reports the cluster as this unit sees it (not enabled without
// a cluster section).
func (c *Control) Members(context.Context) unit.MembersView {
	n := c.member.Load()
	if n == nil {
		return unit.MembersView{Members: []unit.Member{}, Refused: map[string]uint64{}}
	}
	return n.View()
}
