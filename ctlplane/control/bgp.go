package control

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tetherlb/tether/api/unit"
	"github.com/tetherlb/tether/config"
	"github.com/tetherlb/tether/ctlplane/bgp"
)

// bgpPart decides what the unit's BGP speaker announces (DESIGN.md §4
// cluster; announcement says what): VIP addresses and nat VIPs' SNAT
// addresses, by the forwarder's state, the backends', the cluster's
// readiness and an operator's drain. It reacts to their changes through
// kick; a lost forwarder withdraws only after bgp.forwarder_grace, since
// the supervisor restarts a dead one at once.
type bgpPart struct {
	// sp is nil without a bgp section, and until Run starts it.
	sp   atomic.Pointer[bgp.Speaker]
	kick chan struct{}

	mu sync.Mutex
	// fwdUp is whether a forwarder runs the configuration; fwdLost when
	// the last one went (zero while one runs or none ever ran).
	fwdUp   bool
	fwdLost time.Time
	drained bool
	// withheld is the last decision's addresses not announced, and why.
	withheld map[string]string
}

// bgpDrainedFile, in the run directory, keeps an operator's drain across
// a restart of the control process: a unit taken out for maintenance
// stays out until an operator puts it back.
const bgpDrainedFile = "bgp-drained"

// maxBGPPasswordFile bounds a password file's size before its content
// is checked (TCP MD5 keys are at most 80 bytes).
const maxBGPPasswordFile = 4096

// startBGP starts the speaker of the bgp section, if any, and returns
// its stop. The section is fixed at start (Reload refuses changes).
func (c *Control) startBGP(ctx context.Context) (stop func(), err error) {
	file := c.fileLocked()
	b := file.BGP
	if b == nil {
		return func() {}, nil
	}
	_, statErr := os.Stat(filepath.Join(c.opts.RunDir, bgpDrainedFile))
	c.bgp.mu.Lock()
	c.bgp.drained = statErr == nil
	c.bgp.mu.Unlock()
	o := bgp.Options{ASN: b.ASN, RouterID: b.RouterIDAddr(), HoldTime: b.HoldTime,
		NextHop4: file.Unit.Addr4(), NextHop6: file.Unit.Addr6(), Log: c.log}
	for i, p := range b.Peers {
		pw, err := readBGPPassword(p.PasswordFile)
		if err != nil {
			return nil, fmt.Errorf("bgp.peers[%d].password_file: %w", i, err)
		}
		o.Peers = append(o.Peers, bgp.Peer{Addr: p.Addr(), Port: uint16(p.Port), ASN: p.ASN, Password: pw})
	}
	sp, err := bgp.Start(ctx, o)
	if err != nil {
		return nil, err
	}
	c.bgp.sp.Store(sp)
	done := make(chan struct{})
	runCtx, cancel := context.WithCancel(ctx)
	go func() { c.runBGP(runCtx, b.ForwarderGrace); close(done) }()
	c.log.Info().Uint32("asn", b.ASN).Int("peers", len(b.Peers)).Bool("drained", statErr == nil).Msg("bgp speaker running")
	return func() {
		cancel()
		<-done
		// Everything withdrawn and every session closed with a Cease:
		// the routers stop sending at once.
		stopCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		sp.Stop(stopCtx)
		c.log.Info().Msg("bgp routes withdrawn, sessions closed")
	}, nil
}

// readBGPPassword reads a TCP MD5 key: 1 to 80 bytes, without a
// trailing newline.
func readBGPPassword(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxBGPPasswordFile))
	if err != nil {
		return "", fmt.Errorf("read %s: %w", path, err)
	}
	pw := strings.TrimRight(string(b), "\r\n")
	if len(pw) < 1 || len(pw) > 80 {
		return "", fmt.Errorf("%s: the key is %d bytes; want 1 to 80 (TCP MD5)", path, len(pw))
	}
	return pw, nil
}

// runBGP applies the announcement decision whenever something it
// depends on changes, once more when a lost forwarder's grace ends, and
// every readyPoll while the cluster's atom manager is not ready.
func (c *Control) runBGP(ctx context.Context, grace time.Duration) {
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.bgp.kick:
		case <-timer.C:
		}
		c.mu.Lock()
		running := c.running
		c.mu.Unlock()
		ready := true
		if mgr := c.cl.atoms.Load(); mgr != nil {
			ready = mgr.Ready()
		}
		routes, again := c.bgp.decide(running, ready, time.Now(), grace)
		if !ready && (again == 0 || again > readyPoll) {
			again = readyPoll
		}
		if again > 0 {
			timer.Reset(again)
		}
		if err := c.bgp.sp.Load().SetAnnounced(routes); err != nil {
			c.log.Error().Err(err).Msg("bgp announcement")
		}
	}
}

// readyPoll is how often runBGP looks again at a cluster not ready yet
// (it pulls for at most cluster.pull_wait).
const readyPoll = 250 * time.Millisecond

// decide is what to announce at now, and when to decide again (0: only
// when kicked): a forwarder lost less than grace ago still counts as
// running until its grace ends.
func (p *bgpPart) decide(running *config.Config, ready bool, now time.Time, grace time.Duration) ([]bgp.Route, time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	fwdOK, again := p.fwdUp, time.Duration(0)
	if !fwdOK && !p.fwdLost.IsZero() {
		if left := grace - now.Sub(p.fwdLost); left > 0 {
			fwdOK, again = true, left
		}
	}
	routes, withheld := announcement(running, unitState{fwdOK: fwdOK, ready: ready, drained: p.drained})
	p.withheld = withheld
	return routes, again
}

// unitState is what the announcement depends on besides the running
// configuration.
type unitState struct {
	// fwdOK: a forwarder runs the configuration (or is in its grace);
	// ready: the unit is alone or its atom manager pulled its atoms;
	// drained: an operator withdrew the unit.
	fwdOK, ready, drained bool
}

// announcement is what to announce of running's addresses, and why
// each other is withheld, keyed by prefix:
//
//   - a VIP address, when one of its VIPs has a backend that takes new
//     connections and the unit runs, is ready and is not drained;
//   - a nat VIP's own SNAT address, when the unit runs and is ready,
//     drained or not: replies to the connections it has come to it;
//   - a nat VIP's standby SNAT address (another unit's), as a backup
//     route, when the unit runs, is ready and is not drained: the
//     routers send it replies to a dead unit's connections, which this
//     unit continues from the atom manager, and only while no unit
//     announces that address plainly.
func announcement(running *config.Config, st unitState) ([]bgp.Route, map[string]string) {
	serving := map[netip.Addr]bool{}
	own, standby := map[netip.Addr]bool{}, map[netip.Addr]bool{}
	for i := range running.VIPs {
		v := &running.VIPs[i]
		if a := v.Addr(); a.IsValid() && !serving[a] {
			serving[a] = takesNew(v)
		}
		for _, a := range v.SNATAddrs() {
			own[a] = true
		}
		for _, a := range v.SNATStandbyAddrs() {
			standby[a] = true
		}
	}
	var routes []bgp.Route
	withheld := map[string]string{}
	why := func(takes, drains bool) string {
		switch {
		case !st.fwdOK:
			return unit.BGPWithheldForwarder
		case !st.ready:
			return unit.BGPWithheldNotReady
		case drains && st.drained:
			return unit.BGPWithheldDrained
		case !takes:
			return unit.BGPWithheldNoBackend
		}
		return ""
	}
	add := func(a netip.Addr, backup bool, reason string) {
		if reason != "" {
			withheld[netip.PrefixFrom(a, a.BitLen()).String()] = reason
			return
		}
		routes = append(routes, bgp.Route{Addr: a, Backup: backup})
	}
	for a, takes := range serving {
		add(a, false, why(takes, true))
	}
	for a := range own {
		add(a, false, why(true, false))
	}
	for a := range standby {
		if !own[a] {
			add(a, true, why(true, true))
		}
	}
	slices.SortFunc(routes, func(x, y bgp.Route) int { return x.Addr.Compare(y.Addr) })
	return routes, withheld
}

// takesNew reports whether one of v's backends takes new connections in
// the running configuration (operators' states and health applied).
func takesNew(v *config.VIP) bool {
	for _, b := range v.Backends {
		if (b.State == "" || b.State == unit.StateActive.String()) && (b.Weight == nil || *b.Weight > 0) {
			return true
		}
	}
	return false
}

// bgpKick has the announcement decided again.
func (c *Control) bgpKick() {
	select {
	case c.bgp.kick <- struct{}{}:
	default:
	}
}

// bgpForwarder records that a forwarder runs the configuration (up) or
// that the one that did went away.
func (c *Control) bgpForwarder(up bool) {
	c.bgp.mu.Lock()
	if up {
		c.bgp.fwdUp, c.bgp.fwdLost = true, time.Time{}
	} else if c.bgp.fwdUp {
		c.bgp.fwdUp, c.bgp.fwdLost = false, time.Now()
	}
	c.bgp.mu.Unlock()
	c.bgpKick()
}

// SetBGPDrained withdraws every VIP (drained) or announces them again as
// the decision says, and remembers it in the run directory.
func (c *Control) SetBGPDrained(_ context.Context, drained bool) error {
	if c.bgp.sp.Load() == nil {
		return errors.New("the unit has no bgp section: nothing is announced")
	}
	path := filepath.Join(c.opts.RunDir, bgpDrainedFile)
	var err error
	if drained {
		err = os.WriteFile(path, []byte("drained by an operator: tetherctl bgp undrain announces the VIPs again\n"), 0o644)
	} else if err = os.Remove(path); errors.Is(err, os.ErrNotExist) {
		err = nil
	}
	if err != nil {
		return fmt.Errorf("bgp drain: %w", err)
	}
	c.bgp.mu.Lock()
	c.bgp.drained = drained
	c.bgp.mu.Unlock()
	c.log.Info().Bool("drained", drained).Msg("bgp drain set by an operator")
	c.bgpKick()
	return nil
}

// BGP is the speaker's sessions and announcements.
func (c *Control) BGP(ctx context.Context) unit.BGPView {
	sp := c.bgp.sp.Load()
	if sp == nil {
		return unit.BGPView{Peers: []unit.BGPPeer{}, Announced: []string{}, Backup: []string{}, Withheld: map[string]string{}}
	}
	b := c.fileLocked().BGP
	v := unit.BGPView{Enabled: true, ASN: b.ASN, RouterID: b.RouterIDAddr().String(), Peers: sp.Peers(ctx), Announced: []string{}, Backup: []string{}}
	for _, r := range sp.Announced() {
		prefix := netip.PrefixFrom(r.Addr, r.Addr.BitLen()).String()
		if r.Backup {
			v.Backup = append(v.Backup, prefix)
		} else {
			v.Announced = append(v.Announced, prefix)
		}
	}
	c.bgp.mu.Lock()
	v.Drained = c.bgp.drained
	v.Withheld = make(map[string]string, len(c.bgp.withheld))
	for a, why := range c.bgp.withheld {
		v.Withheld[a] = why
	}
	c.bgp.mu.Unlock()
	return v
}
