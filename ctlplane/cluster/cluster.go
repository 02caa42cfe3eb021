package cluster

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log"
	"net/netip"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/rs/zerolog"

	"github.com/tetherlb/tether/api/unit"
)

// Options configure a unit's membership.
type Options struct {
	// Name is the unit's name (unit.name), its node name in the
	// cluster: names are unique among units.
	Name string
	// Bind is the gossip address:port (UDP and TCP); port 0 picks a
	// free one (tests; LocalNode has the port taken).
	Bind string
	// Advertise is the address:port others reach this unit at; "" is
	// the bound one.
	Advertise string
	// Peers are host:port of units to join; Start says how.
	Peers []string
	// Key is the cluster key, KeySize bytes (ReadKey).
	Key []byte
	// TunnelSources are the unit's unit.address4 and unit.address6
	// (invalid ones are skipped), published in its metadata.
	TunnelSources []netip.Addr
	// AtomsPort is the port of the unit's atom stream, published in its
	// metadata: other units dial it at the unit's gossip address.
	AtomsPort uint16
	// The failure detector (see the package doc for the bound they
	// give); zero values take memberlist's LAN defaults.
	ProbeInterval  time.Duration
	ProbeTimeout   time.Duration
	SuspicionMult  int
	GossipInterval time.Duration
	// LeaveTimeout bounds how long Stop waits for the leave to be
	// gossiped; default 2s.
	LeaveTimeout time.Duration
	// OnChange, when set, is called with a member each time its state or
	// metadata changes (a join, a return, a leave, a failure, an update;
	// not suspicion, which memberlist does not report). It is called in
	// order from memberlist's goroutine, while memberlist holds its
	// locks: it must not block nor call back into the Node.
	OnChange func(unit.Member)
	Log      zerolog.Logger
}

// Join retry pacing: doubling from joinFirst to joinMax.
const (
	joinFirst = 200 * time.Millisecond
	joinMax   = 5 * time.Second
)

// maxDeparted bounds the dead and left members the view remembers.
const maxDeparted = 1024

// Node is a unit's membership in the cluster.
type Node struct {
	opts Options
	log  zerolog.Logger
	ml   *memberlist.Memberlist
	self meta

	stop     chan struct{}
	done     chan struct{}
	stopOnce sync.Once

	mu      sync.Mutex
	members map[string]*unit.Member
	events  unit.MemberEvents
	refused map[string]uint64
	// leavers are the boot IDs of members that said they are leaving
	// (leave.go), by name.
	leavers map[string]uint64
	// stopping: this unit is leaving.
	stopping bool
}

// Refusal reasons (unit.MembersView.Refused).
const (
	RefusedDecrypt     = "decrypt"
	RefusedUnencrypted = "unencrypted"
	RefusedMeta        = "meta"
)

// Start starts this unit's node: it binds the gossip port, then joins
// opts.Peers in the background. It keeps trying, with a wait that
// doubles from 200ms to 5s, for as long as it knows no other live
// member, so units may start in any order and a unit cut off from all
// the others joins again once it can reach one.
func Start(opts Options) (*Node, error) {
	if opts.Name == "" {
		return nil, errors.New("cluster: no node name")
	}
	if len(opts.Key) != KeySize {
		return nil, fmt.Errorf("cluster: key of %d bytes, want %d", len(opts.Key), KeySize)
	}
	bind, err := netip.ParseAddrPort(opts.Bind)
	if err != nil {
		return nil, fmt.Errorf("cluster: bind: %w", err)
	}
	n := &Node{opts: opts, log: opts.Log, stop: make(chan struct{}), done: make(chan struct{}),
		members: map[string]*unit.Member{}, refused: map[string]uint64{}, leavers: map[string]uint64{}}
	if opts.AtomsPort == 0 {
		return nil, errors.New("cluster: no atoms port")
	}
	n.self = meta{version: metaVersion, boot: newBootID(), atoms: opts.AtomsPort}
	for _, a := range opts.TunnelSources {
		switch {
		case a.Is4():
			n.self.addr4 = a
		case a.Is6() && !a.Is4In6():
			n.self.addr6 = a
		}
	}
	mc := memberlist.DefaultLANConfig()
	mc.Name = opts.Name
	mc.BindAddr, mc.BindPort = bind.Addr().String(), int(bind.Port())
	mc.AdvertiseAddr, mc.AdvertisePort = "", int(bind.Port())
	if opts.Advertise != "" {
		adv, err := netip.ParseAddrPort(opts.Advertise)
		if err != nil {
			return nil, fmt.Errorf("cluster: advertise: %w", err)
		}
		mc.AdvertiseAddr, mc.AdvertisePort = adv.Addr().String(), int(adv.Port())
	}
	// Encrypted and authenticated both ways, never plain: a node
	// without the key can neither join nor inject state.
	mc.SecretKey = opts.Key
	mc.GossipVerifyIncoming, mc.GossipVerifyOutgoing = true, true
	if opts.ProbeInterval > 0 {
		mc.ProbeInterval = opts.ProbeInterval
	}
	if opts.ProbeTimeout > 0 {
		mc.ProbeTimeout = opts.ProbeTimeout
	}
	if opts.SuspicionMult > 0 {
		mc.SuspicionMult = opts.SuspicionMult
	}
	if opts.GossipInterval > 0 {
		mc.GossipInterval = opts.GossipInterval
	}
	// The full state exchange, which repairs what a lost gossip message
	// left out (a member learnt only through a third), keeps pace with
	// failure detection: memberlist's 30 s at the default 1 s probe.
	mc.PushPullInterval = 30 * mc.ProbeInterval
	mc.Delegate = (*delegate)(n)
	mc.Events = (*events)(n)
	mc.Alive = (*events)(n)
	mc.Logger = log.New((*logWriter)(n), "", 0)
	ml, err := memberlist.Create(mc)
	if err != nil {
		return nil, fmt.Errorf("cluster: start on %s: %w", opts.Bind, err)
	}
	n.ml = ml
	go n.keepJoining()
	n.log.Info().Str("bind", opts.Bind).Str("address", n.Address()).Strs("peers", opts.Peers).
		Str("boot", fmt.Sprintf("%016x", n.self.boot)).Msg("cluster member started")
	return n, nil
}

// newBootID returns a random non-zero ID.
func newBootID() uint64 {
	var b [8]byte
	for {
		rand.Read(b[:])
		if id := binary.BigEndian.Uint64(b[:]); id != 0 {
			return id
		}
	}
}

// Address returns the gossip address:port the unit advertises.
func (n *Node) Address() string {
	ln := n.ml.LocalNode()
	ip, _ := netip.AddrFromSlice(ln.Addr)
	return netip.AddrPortFrom(ip.Unmap(), ln.Port).String()
}

// Boot returns this unit's boot ID.
func (n *Node) Boot() uint64 { return n.self.boot }

// keepJoining joins the peers whenever this unit knows no other live
// member.
func (n *Node) keepJoining() {
	defer close(n.done)
	if len(n.opts.Peers) == 0 {
		return
	}
	wait, warned := joinFirst, false
	for {
		if n.ml.NumMembers() <= 1 {
			joined, err := n.ml.Join(n.opts.Peers)
			switch {
			case n.ml.NumMembers() > 1:
				n.log.Info().Int("contacted", joined).Int("members", n.ml.NumMembers()).Msg("cluster joined")
				wait, warned = joinFirst, false
			default:
				// Joining only ourselves (the peers list this unit too)
				// is no join.
				if !warned {
					n.log.Warn().Err(err).Strs("peers", n.opts.Peers).Msg("cluster: no peer reachable yet; retrying")
					warned = true
				}
				wait = min(wait*2, joinMax)
			}
		}
		select {
		case <-n.stop:
			return
		case <-time.After(wait):
		}
	}
}

// Stop leaves the cluster gracefully, waiting at most the leave timeout
// for the others to hear it, and shuts the node down. It is safe to call
// more than once.
func (n *Node) Stop() error {
	var err error
	n.stopOnce.Do(func() {
		close(n.stop)
		timeout := n.opts.LeaveTimeout
		if timeout <= 0 {
			timeout = 2 * time.Second
		}
		// A join in progress may wait on a silent peer (memberlist's
		// TCP timeout); the shutdown below ends it.
		select {
		case <-n.done:
		case <-time.After(timeout):
		}
		n.announceLeave(timeout)
		if lerr := n.ml.Leave(timeout); lerr != nil {
			err = fmt.Errorf("cluster: leave: %w", lerr)
		}
		if serr := n.ml.Shutdown(); serr != nil && err == nil {
			err = fmt.Errorf("cluster: shut down: %w", serr)
		}
		n.log.Info().Err(err).Msg("cluster member stopped")
	})
	return err
}
