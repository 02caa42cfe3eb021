package bgp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	api "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	gbgp "github.com/osrg/gobgp/v4/pkg/packet/bgp"
	"github.com/osrg/gobgp/v4/pkg/server"
	"github.com/rs/zerolog"

	"github.com/tetherlb/tether/api/unit"
)

// Options configure a Speaker.
type Options struct {
	ASN      uint32
	RouterID netip.Addr
	// HoldTime is offered to every router (keepalives every third).
	HoldTime time.Duration
	// NextHop4 and NextHop6 are the unit's addresses: each session's
	// local address, and the next hop of what it announces. A family
	// without one announces nothing (and has no sessions).
	NextHop4, NextHop6 netip.Addr
	Peers              []Peer
	Log                zerolog.Logger
}

// Peer is one router.
type Peer struct {
	Addr netip.Addr
	Port uint16
	ASN  uint32
	// Password is the session's TCP MD5 key.
	Password string
}

// Route is a host route to announce.
type Route struct {
	Addr netip.Addr
	// Backup announces it with the unit's AS prepended BackupPrepend
	// times, so that a router prefers any unit announcing it plainly and
	// takes this one only when none does (a dead unit's SNAT addresses).
	Backup bool
}

// BackupPrepend is how many times a backup route's AS path carries the
// unit's AS more than a plain one's.
const BackupPrepend = 2

// Speaker is a running BGP speaker.
type Speaker struct {
	opts Options
	s    *server.BgpServer

	mu        sync.Mutex
	announced map[netip.Addr]announced
	stopped   bool
}

type announced struct {
	path   *apiutil.Path
	backup bool
}

// connectRetry is how long the speaker waits between dials of a router
// that does not answer.
const connectRetry = 3 * time.Second

// Start starts the speaker and its sessions; nothing is announced until
// SetAnnounced.
func Start(ctx context.Context, o Options) (*Speaker, error) {
	if !o.RouterID.Is4() {
		return nil, fmt.Errorf("bgp: router ID %s: want an IPv4 address", o.RouterID)
	}
	// GoBGP's info and debug are a line per timer and message: its
	// warnings and errors are kept; sessions' ups and downs the caller
	// sees in Peers.
	lvl := &slog.LevelVar{}
	lvl.Set(slog.LevelWarn)
	logger := slog.New(zerolog.NewSlogHandler(o.Log.With().Str("part", "bgp").Logger().Level(zerolog.WarnLevel)))
	s := server.NewBgpServer(server.LoggerOption(logger, lvl))
	go s.Serve()
	sp := &Speaker{opts: o, s: s, announced: map[netip.Addr]announced{}}
	fail := func(err error) (*Speaker, error) {
		s.Stop()
		return nil, err
	}
	err := s.StartBgp(ctx, &api.StartBgpRequest{Global: &api.Global{
		Asn:      o.ASN,
		RouterId: o.RouterID.String(),
		// The unit dials its routers and listens to nobody.
		ListenPort: -1,
	}})
	if err != nil {
		return fail(fmt.Errorf("bgp: start: %w", err))
	}
	// Nothing a router sends is taken: only the unit's own routes enter
	// its table (the global import policy sees those too).
	err = s.AddPolicy(ctx, &api.AddPolicyRequest{Policy: &api.Policy{Name: "tether-own-routes", Statements: []*api.Statement{{
		Name:       "own",
		Conditions: &api.Conditions{RouteType: api.Conditions_ROUTE_TYPE_LOCAL},
		Actions:    &api.Actions{RouteAction: api.RouteAction_ROUTE_ACTION_ACCEPT},
	}}}})
	if err == nil {
		err = s.SetPolicyAssignment(ctx, &api.SetPolicyAssignmentRequest{Assignment: &api.PolicyAssignment{
			Name:          "global",
			Direction:     api.PolicyDirection_POLICY_DIRECTION_IMPORT,
			Policies:      []*api.Policy{{Name: "tether-own-routes"}},
			DefaultAction: api.RouteAction_ROUTE_ACTION_REJECT,
		}})
	}
	if err != nil {
		return fail(fmt.Errorf("bgp: import policy: %w", err))
	}
	hold := uint64(o.HoldTime / time.Second)
	for _, p := range o.Peers {
		local, fam := o.NextHop4, api.Family_AFI_IP
		if p.Addr.Is6() {
			local, fam = o.NextHop6, api.Family_AFI_IP6
		}
		if !local.IsValid() {
			return fail(fmt.Errorf("bgp: router %s: the unit has no address of its family", p.Addr))
		}
		err := s.AddPeer(ctx, &api.AddPeerRequest{Peer: &api.Peer{
			Conf: &api.PeerConf{NeighborAddress: p.Addr.String(), PeerAsn: p.ASN, AuthPassword: p.Password},
			Timers: &api.Timers{Config: &api.TimersConfig{
				ConnectRetry: uint64(connectRetry / time.Second), HoldTime: hold, KeepaliveInterval: max(1, hold/3),
				IdleHoldTimeAfterReset: 1,
			}},
			Transport: &api.Transport{LocalAddress: local.String(), RemotePort: uint32(p.Port)},
			AfiSafis: []*api.AfiSafi{{Config: &api.AfiSafiConfig{
				Family: &api.Family{Afi: fam, Safi: api.Family_SAFI_UNICAST}, Enabled: true,
			}}},
		}})
		if err != nil {
			return fail(fmt.Errorf("bgp: router %s: %w", p.Addr, err))
		}
	}
	return sp, nil
}

// SetAnnounced makes the announced routes exactly routes: new ones are
// announced, gone ones withdrawn, one whose Backup changed announced
// again (which replaces it). An address of a family the unit has no
// next hop for is skipped.
func (sp *Speaker) SetAnnounced(routes []Route) error {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	if sp.stopped {
		return errors.New("bgp: speaker stopped")
	}
	want := map[netip.Addr]bool{}
	for _, r := range routes {
		want[r.Addr.Unmap()] = r.Backup
	}
	var errs []error
	for a, cur := range sp.announced {
		if _, ok := want[a]; ok {
			continue
		}
		if err := sp.s.DeletePath(apiutil.DeletePathRequest{Paths: []*apiutil.Path{cur.path}}); err != nil {
			errs = append(errs, fmt.Errorf("bgp: withdraw %s: %w", a, err))
			continue
		}
		delete(sp.announced, a)
		sp.opts.Log.Info().Str("part", "bgp").Stringer("prefix", a).Msg("withdrawn")
	}
	for a, backup := range want {
		if cur, ok := sp.announced[a]; ok && cur.backup == backup {
			continue
		}
		p, err := sp.path(a, backup)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if p == nil {
			continue
		}
		if _, err := sp.s.AddPath(apiutil.AddPathRequest{Paths: []*apiutil.Path{p}}); err != nil {
			errs = append(errs, fmt.Errorf("bgp: announce %s: %w", a, err))
			continue
		}
		sp.announced[a] = announced{path: p, backup: backup}
		sp.opts.Log.Info().Str("part", "bgp").Stringer("prefix", a).Bool("backup", backup).Msg("announced")
	}
	return errors.Join(errs...)
}

// path is a's host route with the unit's next hop (and, for a backup,
// the unit's AS prepended), or nil when the unit has none of a's family.
func (sp *Speaker) path(a netip.Addr, backup bool) (*apiutil.Path, error) {
	nlri, err := gbgp.NewIPAddrPrefix(netip.PrefixFrom(a, a.BitLen()))
	if err != nil {
		return nil, fmt.Errorf("bgp: %s: %w", a, err)
	}
	attrs := []gbgp.PathAttributeInterface{gbgp.NewPathAttributeOrigin(gbgp.BGP_ORIGIN_ATTR_TYPE_IGP)}
	if backup {
		asns := make([]uint32, BackupPrepend)
		for i := range asns {
			asns[i] = sp.opts.ASN
		}
		attrs = append(attrs, gbgp.NewPathAttributeAsPath([]gbgp.AsPathParamInterface{gbgp.NewAs4PathParam(gbgp.BGP_ASPATH_ATTR_TYPE_SEQ, asns)}))
	}
	if a.Is4() {
		if !sp.opts.NextHop4.IsValid() {
			return nil, nil
		}
		nh, err := gbgp.NewPathAttributeNextHop(sp.opts.NextHop4)
		if err != nil {
			return nil, fmt.Errorf("bgp: next hop %s: %w", sp.opts.NextHop4, err)
		}
		return &apiutil.Path{Family: gbgp.RF_IPv4_UC, Nlri: nlri, Attrs: append(attrs, nh)}, nil
	}
	if !sp.opts.NextHop6.IsValid() {
		return nil, nil
	}
	mp, err := gbgp.NewPathAttributeMpReachNLRI(gbgp.RF_IPv6_UC, []gbgp.PathNLRI{{NLRI: nlri}}, sp.opts.NextHop6)
	if err != nil {
		return nil, fmt.Errorf("bgp: next hop %s: %w", sp.opts.NextHop6, err)
	}
	return &apiutil.Path{Family: gbgp.RF_IPv6_UC, Nlri: nlri, Attrs: append(attrs, mp)}, nil
}

// Announced returns the routes announced, sorted by address.
func (sp *Speaker) Announced() []Route {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	out := make([]Route, 0, len(sp.announced))
	for a, cur := range sp.announced {
		out = append(out, Route{Addr: a, Backup: cur.backup})
	}
	slices.SortFunc(out, func(x, y Route) int { return x.Addr.Compare(y.Addr) })
	return out
}

// Peers returns each router's session, in configuration order.
func (sp *Speaker) Peers(ctx context.Context) []unit.BGPPeer {
	byAddr := map[string]*api.Peer{}
	_ = sp.s.ListPeer(ctx, &api.ListPeerRequest{}, func(p *api.Peer) {
		if p.GetState() != nil {
			byAddr[p.GetState().GetNeighborAddress()] = p
		}
	})
	out := make([]unit.BGPPeer, 0, len(sp.opts.Peers))
	for _, cp := range sp.opts.Peers {
		v := unit.BGPPeer{Address: cp.Addr.String(), ASN: cp.ASN, State: "idle"}
		if p := byAddr[cp.Addr.String()]; p != nil {
			st := p.GetState()
			v.State = sessionState(st.GetSessionState())
			v.Flaps = st.GetFlops()
			v.LastError = st.GetDisconnectMessage()
			if up := p.GetTimers().GetState().GetUptime(); up != nil && v.State == "established" {
				v.Since = up.AsTime()
			}
		}
		out = append(out, v)
	}
	return out
}

func sessionState(s api.PeerState_SessionState) string {
	name := strings.TrimPrefix(s.String(), "SESSION_STATE_")
	if s == api.PeerState_SESSION_STATE_UNSPECIFIED {
		name = "idle"
	}
	return strings.ToLower(name)
}

// Stop withdraws every route, closes every session with a Cease
// NOTIFICATION (so the routers drop the routes at once, not at the end
// of their hold timers) and stops the speaker.
func (sp *Speaker) Stop(ctx context.Context) {
	sp.mu.Lock()
	if sp.stopped {
		sp.mu.Unlock()
		return
	}
	sp.stopped = true
	for a, cur := range sp.announced {
		_ = sp.s.DeletePath(apiutil.DeletePathRequest{Paths: []*apiutil.Path{cur.path}})
		delete(sp.announced, a)
	}
	sp.mu.Unlock()
	for _, p := range sp.opts.Peers {
		_ = sp.s.ShutdownPeer(ctx, &api.ShutdownPeerRequest{Address: p.Addr.String(), Communication: "tether unit stopping"})
	}
	sp.s.Stop()
}
