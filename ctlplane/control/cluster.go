package control

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/tetherlb/tether/api/unit"
	"github.com/tetherlb/tether/config"
	"github.com/tetherlb/tether/ctlplane/atoms"
	"github.com/tetherlb/tether/ctlplane/cluster"
	"github.com/tetherlb/tether/internal/mtls"
)

// clusterPart is the unit's membership and atom manager while Run runs
// (nil pointers without a cluster section).
type clusterPart struct {
	key                  []byte
	serverTLS, clientTLS *tls.Config
	member               atomic.Pointer[cluster.Node]
	atoms                atomic.Pointer[atoms.Manager]
}

// prepareCluster reads the cluster key and the unit's certificate when
// the file has a cluster section, so that a key of the wrong length or
// mode, or a certificate that does not name the unit, stops the start
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
	srv, cli, err := mtls.Units(mtls.Files{CA: cl.TLS.CA, Cert: cl.TLS.Cert, Key: cl.TLS.Key}, c.file.Unit.Name)
	if err != nil {
		return fmt.Errorf("cluster.tls: %w", err)
	}
	c.cl.key, c.cl.serverTLS, c.cl.clientTLS = key, srv, cli
	return nil
}

// startCluster makes the unit a member of its cluster (issue 15) and
// starts its portion of the atom manager, and returns what stops both;
// without a cluster section it does nothing. Like the listeners, both
// are fixed at start (see clusterChange).
func (c *Control) startCluster() (stop func(), err error) {
	file := c.fileLocked() // a reload may have replaced it since New
	cl := file.Cluster
	if cl == nil {
		return func() {}, nil
	}
	l, err := net.Listen("tcp", cl.Listen)
	if err != nil {
		return nil, fmt.Errorf("cluster.listen: %w", err)
	}
	port := uint16(l.Addr().(*net.TCPAddr).Port)
	var sources []netip.Addr
	for _, a := range []netip.Addr{file.Unit.Addr4(), file.Unit.Addr6()} {
		if a.IsValid() {
			sources = append(sources, a)
		}
	}
	// Membership changes reach the atom manager through one goroutine:
	// OnChange runs under memberlist's locks and must not block.
	changed := make(chan struct{}, 1)
	n, err := cluster.Start(cluster.Options{Name: file.Unit.Name, Bind: cl.Bind, Advertise: cl.Advertise, Peers: cl.Peers,
		Key: c.cl.key, TunnelSources: sources, AtomsPort: port, ProbeInterval: cl.ProbeInterval, ProbeTimeout: cl.ProbeTimeout,
		SuspicionMult: cl.SuspicionMult, GossipInterval: cl.GossipInterval,
		OnChange: func(unit.Member) {
			select {
			case changed <- struct{}{}:
			default:
			}
		},
		Log: c.log.With().Str("part", "cluster").Logger()})
	if err != nil {
		l.Close()
		return nil, fmt.Errorf("cluster.bind: %w", err)
	}
	mgr, err := atoms.New(atoms.Options{Self: atoms.Member{Name: file.Unit.Name, Boot: n.Boot()}, Level: cl.Level,
		ZombieTime: cl.ZombieTime, PullWait: cl.PullWait, ServerTLS: c.cl.serverTLS, ClientTLS: c.cl.clientTLS,
		Log: c.log.With().Str("part", "atoms").Logger()})
	if err != nil {
		l.Close()
		_ = n.Stop()
		return nil, fmt.Errorf("cluster: %w", err)
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		if err := mgr.Serve(l); err != nil {
			c.log.Error().Err(err).Msg("atoms: serve")
		}
	}()
	done := make(chan struct{})
	go func() {
		defer wg.Done()
		for {
			mgr.SetMembers(liveMembers(n.View()))
			select {
			case <-done:
				return
			case <-changed:
			}
		}
	}()
	c.cl.member.Store(n)
	c.cl.atoms.Store(mgr)
	return func() {
		// Leave first: the others stop routing atoms here before the
		// streams close.
		if err := n.Stop(); err != nil {
			c.log.Warn().Err(err).Msg("cluster: leave")
		}
		close(done)
		mgr.Close()
		wg.Wait()
	}, nil
}

// liveMembers are the members the atom manager works with: alive and
// suspect ones (a suspect is still a member until declared dead).
func liveMembers(v unit.MembersView) []atoms.Member {
	var out []atoms.Member
	for _, m := range v.Members {
		if (m.State == unit.MemberAlive || m.State == unit.MemberSuspect) && m.Atoms != "" {
			out = append(out, atoms.Member{Name: m.Name, Boot: m.Boot, Addr: m.Atoms})
		}
	}
	return out
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
	case old.Listen != new.Listen:
		return "cluster.listen"
	case old.TLS != new.TLS:
		return "cluster.tls"
	case old.Level != new.Level:
		return "cluster.replication"
	case old.ZombieTime != new.ZombieTime:
		return "cluster.zombie_time"
	case old.PullWait != new.PullWait:
		return "cluster.pull_wait"
	}
	return "cluster.peers"
}

// Members reports the cluster as this unit sees it (not enabled without
// a cluster section).
func (c *Control) Members(context.Context) unit.MembersView {
	n := c.cl.member.Load()
	if n == nil {
		return unit.MembersView{Members: []unit.Member{}, Refused: map[string]uint64{}}
	}
	return n.View()
}

// Atoms reports the atom manager and a page of this unit's portion (not
// enabled without a cluster section).
func (c *Control) Atoms(_ context.Context, req unit.AtomsRequest) unit.AtomsView {
	mgr := c.cl.atoms.Load()
	if mgr == nil {
		return unit.AtomsView{Peers: []unit.AtomPeer{}, Refused: map[string]uint64{}}
	}
	limit := req.Limit
	if limit <= 0 || limit > unit.MaxAtomsPage {
		limit = unit.DefaultAtomsPage
	}
	return mgr.View(req.Prefix, req.Host, limit)
}
