package control

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/tetherlb/tether/api/unit"
	"github.com/tetherlb/tether/config"
	"github.com/tetherlb/tether/ctlplane/health"
	"github.com/tetherlb/tether/ctlplane/hosts"
	"github.com/tetherlb/tether/dataplane/channel"
)

// Options configure a control process.
type Options struct {
	// ConfigPath is the configuration file, which Reload reads again.
	ConfigPath string
	// Config is that file as the caller read and checked it (with
	// config.LoadFile), and Raw its text: the file is read once per
	// change, here by the caller for the first time.
	Config *config.Config
	Raw    []byte
	// RunDir holds the channel socket and the forwarder's PID file.
	RunDir string
	// Tetherd is the binary to start the forwarder with; empty means
	// do not start one (a forwarder started by hand connects itself).
	Tetherd string
	Log     zerolog.Logger
}

// Socket and file names in RunDir.
const (
	ChannelSocket = "forwarder.sock"
	PIDFile       = "forwarder.pid"
)

// Control is a running control process.
type Control struct {
	opts    Options
	log     zerolog.Logger
	started time.Time

	mu sync.Mutex
	// file is the configuration file as last read and checked, raw its
	// text.
	file *config.Config
	raw  []byte
	// states are the operators' run-time backend states.
	states map[unit.BackendKey]unit.State
	// eval is the health cache's last verdict over file and states.
	eval health.Evaluation
	// running is file with states and eval applied: the configuration
	// the forwarder runs (or gets when it connects).
	running *config.Config
	// ids are the forwarder's IDs for running; vipNames inverts ids.VIPs.
	ids      unit.ReloadReply
	vipNames map[uint32]string
	// beNames inverts ids.Backends and ids.Retired.
	beNames map[uint32]unit.BackendKey
	link    *fwdLink
	fwdPID  uint32
	inv     inventory
	sup     unit.SupervisorState
	punts   unit.PuntStats
	// startedWithFlows is the PID of the forwarder this process last
	// started, which got the inventory's flows on its standard input.
	startedWithFlows uint32
	// lost counts the flow events the forwarder reported lost;
	// rereading, rereadAgain (losses not yet re-read) and lastReread
	// pace the re-reads they cause (lastReread only by the one re-read
	// running).
	lost        atomic.Uint64
	rereading   atomic.Bool
	rereadAgain atomic.Bool
	lastReread  time.Time

	// applyMu serialises configuration changes (reloads, operator states,
	// health verdicts, a forwarder's catch-up), so the forwarder gets
	// them in order.
	applyMu sync.Mutex
	hl      *health.Server
	probes  *health.Probes
	changed chan struct{}

	// hosts is the host streams' listener (hosts.go), nil without
	// hosts.listen; tun publishes tunnel flows' mappings over it
	// (tunnels.go).
	hosts *hosts.Server
	tun   tunnels
	// l7part is the l7 VIPs' acceptors and migrations (l7.go).
	l7part *l7Part
	// cl is this unit's membership in its cluster and its portion of
	// the atom manager (cluster.go).
	cl clusterPart
	// bgp is the VIPs' announcement to routers (bgp.go).
	bgp bgpPart
	// flowLookup answers mid-flow punts from the atom manager
	// (midflow.go): routeOf in a cluster, nil outside one. Set before
	// Run (tests set their own); read under mu. lookups bounds the
	// lookups in flight.
	flowLookup  FlowLookup
	replyLookup ReplyLookup
	lookups     chan struct{}
	foreign     foreignRoutes
}

// New prepares a control process for opts.Config; Run starts everything.
func New(opts Options) (*Control, error) {
	if opts.Config == nil {
		return nil, errors.New("control: no configuration")
	}
	c := &Control{opts: opts, log: opts.Log, started: time.Now(), file: opts.Config, raw: opts.Raw,
		states: map[unit.BackendKey]unit.State{}, inv: newInventory(), tun: tunnels{pending: map[uint32][]pendingBatch{}}, l7part: newL7Part(),
		bgp: bgpPart{kick: make(chan struct{}, 1)}}
	if err := c.startHealth(); err != nil {
		return nil, err
	}
	if err := c.startHosts(); err != nil {
		return nil, err
	}
	if err := c.prepareCluster(); err != nil {
		return nil, err
	}
	c.lookups = make(chan struct{}, maxLookups)
	if c.file.Cluster != nil {
		c.flowLookup, c.replyLookup = c.routeOf, c.replyRouteOf
	}
	c.mu.Lock()
	c.eval = c.evaluate(c.file, c.states)
	c.running = effective(c.file, c.states, &c.eval)
	c.mu.Unlock()
	if err := c.syncL7(c.file); err != nil {
		return nil, err
	}
	return c, nil
}

// effective is the configuration the forwarder runs: file with the
// operators' states and the health verdict (stricter states, allotment
// weights) applied, in a copy.
func effective(file *config.Config, states map[unit.BackendKey]unit.State, ev *health.Evaluation) *config.Config {
	eff := file.Clone()
	for i := range eff.VIPs {
		v := &eff.VIPs[i]
		for j := range v.Backends {
			if s, ok := states[unit.BackendKey{VIP: v.Name, Backend: v.Backends[j].Name}]; ok {
				v.Backends[j].State = s.String()
			}
		}
	}
	ev.Apply(eff)
	return eff
}

// Run serves until ctx ends. When it started the forwarder it stops it
// on the way out.
func (c *Control) Run(ctx context.Context) error {
	if err := os.MkdirAll(c.opts.RunDir, 0o750); err != nil {
		return fmt.Errorf("control: %w", err)
	}
	l, err := channel.Listen(filepath.Join(c.opts.RunDir, ChannelSocket))
	if err != nil {
		return err
	}
	defer l.Close()
	leave, err := c.startCluster()
	if err != nil {
		return err
	}
	// On the way out the unit leaves its cluster gracefully (within the
	// leave's timeout), so that the others see it left, not failed.
	defer leave()
	stopBGP, err := c.startBGP(ctx)
	if err != nil {
		return err
	}
	go c.accept(ctx, l)
	go c.runHealth(ctx)
	go c.runL7(ctx)
	hostsDone := make(chan struct{})
	go func() { c.runHosts(ctx); close(hostsDone) }()
	defer func() { <-hostsDone }()
	done := make(chan struct{})
	if c.opts.Tetherd != "" {
		go func() { c.supervise(ctx); close(done) }()
	} else {
		close(done)
	}
	c.log.Info().Str("config", c.opts.ConfigPath).Str("run_dir", c.opts.RunDir).Msg("control running")
	<-ctx.Done()
	// The routers stop sending before the forwarder stops.
	stopBGP()
	<-done
	return nil
}

func (c *Control) accept(ctx context.Context, l *net.UnixListener) {
	go func() { <-ctx.Done(); l.Close() }()
	for {
		conn, err := channel.Accept(l)
		if err != nil {
			if ctx.Err() == nil {
				c.log.Error().Err(err).Msg("channel accept")
			}
			return
		}
		go c.serve(ctx, conn)
	}
}

// serve runs one forwarder connection: hello, catch-up, then messages.
func (c *Control) serve(ctx context.Context, conn *channel.Conn) {
	defer conn.Close()
	hello, err := c.greet(conn)
	if err != nil {
		c.log.Warn().Err(err).Msg("channel peer refused")
		return
	}
	lk := newFwdLink(conn, hello)
	c.mu.Lock()
	old := c.link
	c.link = lk
	restarted := c.fwdPID != 0 && c.fwdPID != hello.PID
	restoredAtStart := restarted && hello.PID == c.startedWithFlows
	c.fwdPID = hello.PID
	c.mu.Unlock()
	if old != nil {
		old.conn.Close()
	}
	c.log.Info().Uint32("pid", hello.PID).Uint8("workers", hello.Workers).Bool("restarted", restarted).Msg("forwarder connected")
	go c.catchUp(ctx, lk, restarted && !restoredAtStart, restoredAtStart)
	c.receive(ctx, lk)
	close(lk.closed)
	c.mu.Lock()
	lost := c.link == lk
	if lost {
		c.link = nil
	}
	c.mu.Unlock()
	if lost {
		c.bgpForwarder(false)
	}
	c.log.Warn().Uint32("pid", hello.PID).Msg("forwarder disconnected")
}

// greet reads the forwarder's hello and answers it. A forwarder of
// another unit (its unit.name differs: two units on one host sharing a
// run directory) is refused, so that one unit never drives another's
// forwarder.
func (c *Control) greet(conn *channel.Conn) (channel.Hello, error) {
	msg, err := conn.Recv()
	if err != nil {
		return channel.Hello{}, err
	}
	h, p, err := channel.ParseHeader(msg)
	if err != nil {
		return channel.Hello{}, err
	}
	if h.Type != channel.THello {
		return channel.Hello{}, fmt.Errorf("first message is %s, not hello", h.Type)
	}
	hello, err := channel.DecodeHello(p)
	if err != nil {
		return channel.Hello{}, err
	}
	if hello.Role != channel.RoleForwarder {
		return channel.Hello{}, errors.New("peer is not a forwarder")
	}
	c.mu.Lock()
	name := c.file.Unit.Name
	c.mu.Unlock()
	if hello.Name != name {
		return channel.Hello{}, fmt.Errorf("the forwarder (pid %d) belongs to unit %q, not %q: give each unit on a host its own admin.run_dir", hello.PID, hello.Name, name)
	}
	return hello, conn.Send(channel.AppendHello(nil, 0, &channel.Hello{Role: channel.RoleControl, PID: uint32(os.Getpid()), Name: name}))
}

// catchUp brings a newly connected forwarder and this process in step:
// the running configuration goes to the forwarder; the flows go back to a
// forwarder that restarted, or come from one this process has not seen
// yet (this process restarted).
func (c *Control) catchUp(ctx context.Context, lk *fwdLink, restarted, restoredAtStart bool) {
	if !restarted && !restoredAtStart {
		// A forwarder this process did not start (it adopted it) holds
		// the last control process's SYN cookie keys.
		c.adoptSYNKeys(ctx, lk)
	}
	if err := c.pushConfig(ctx, lk); err != nil {
		c.log.Error().Err(err).Msg("forwarder refused the running configuration")
	} else {
		// The workers answer the l7 VIPs' SYNs from now on.
		c.pushSYNKeys(lk, time.Now(), true)
		c.bgpForwarder(true)
	}
	if c.hosts != nil {
		// A forwarder this process restarted or put flows back into
		// has nothing the hosts lack.
		defer c.hosts.SetReady()
	}
	if restoredAtStart {
		c.log.Info().Msg("flows restored into the restarted forwarder before its first packet")
		return
	}
	if restarted {
		n, err := c.restoreFlows(ctx, lk)
		if err != nil {
			c.log.Error().Err(err).Msg("restore flows")
		}
		c.log.Info().Int("flows", n).Msg("flows restored into the restarted forwarder")
		return
	}
	n, _, err := c.readFlows(ctx, lk)
	if err != nil {
		c.log.Error().Err(err).Msg("read flows")
	}
	c.log.Info().Int("flows", n).Msg("connection inventory read from the forwarder")
	// The hosts get the mappings of the tunnel flows read, before any
	// host's hello is answered (a resync to an empty set would drop
	// them). A flow the forwarder made before this process connected,
	// toward a host no stream has named yet, counts as a new flow
	// without a host would (no_host); its host gets it in its resync.
	if n := c.syncTunnels(lk, nil); n > 0 {
		c.tun.count(func(s *unit.TunnelStats) { s.NoHost += uint64(n) })
	}
	if c.hosts != nil {
		c.hosts.SetReady()
	}
}

// pushConfig sends the running configuration and learns the forwarder's
// IDs for it.
func (c *Control) pushConfig(ctx context.Context, lk *fwdLink) error {
	c.applyMu.Lock()
	defer c.applyMu.Unlock()
	c.mu.Lock()
	running := c.running
	c.mu.Unlock()
	reply, err := lk.reload(ctx, running)
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.setIDs(reply)
	c.mu.Unlock()
	return nil
}

// setIDs records the forwarder's IDs; callers hold mu.
func (c *Control) setIDs(r unit.ReloadReply) {
	c.ids = r
	c.vipNames = make(map[uint32]string, len(r.VIPs))
	for name, id := range r.VIPs {
		c.vipNames[id] = name
	}
	c.beNames = make(map[uint32]unit.BackendKey, len(r.Backends)+len(r.Retired))
	for k, id := range r.Retired {
		c.beNames[id] = k
	}
	for k, id := range r.Backends {
		c.beNames[id] = k
	}
}

// readFlows reads the forwarder's flows into the inventory, and then
// sweeps the entries that neither the read nor an event since its start
// spoke of. It returns the flows read and the entries swept.
func (c *Control) readFlows(ctx context.Context, lk *fwdLink) (total, swept int, err error) {
	gen := c.inv.beginReread()
	defer func() { swept = c.inv.endReread(gen, err == nil) }()
	// A walk, not offsets: it sees every flow that lives through it
	// exactly once while the tables change under it.
	for cur := &(unit.FlowCursor{}); cur != nil; {
		var page unit.FlowsReply
		if err := lk.call(ctx, unit.CallFlows, unit.FlowsRequest{Backend: -1, Limit: unit.MaxFlowPage, Cursor: cur}, &page); err != nil {
			return total, 0, err
		}
		for _, f := range page.Flows {
			c.inv.read(channel.FlowEvent{Kind: channel.FlowOpened, Worker: uint8(f.Worker), Key: f.Key, Action: f.Action})
		}
		total += len(page.Flows)
		if page.Next != nil && *page.Next == *cur {
			return total, 0, fmt.Errorf("read flows: the forwarder's walk does not advance from %+v", *cur)
		}
		cur = page.Next
	}
	return total, 0, nil
}

// rereadSoon re-reads the forwarder's flows after it lost n flow events,
// sweeping the inventory's entries it no longer holds. Re-reads do not
// overlap, and follow each other at most once a rereadEvery: under a
// flood that loses events all the time, the inventory is at most that
// stale. Events lost while a re-read runs call for another after it.
func (c *Control) rereadSoon(ctx context.Context, lk *fwdLink, n uint64) {
	c.lost.Add(n)
	c.rereadAgain.Store(true)
	if !c.rereading.CompareAndSwap(false, true) {
		return
	}
	go func() {
		defer c.rereading.Store(false)
		for c.rereadAgain.Swap(false) {
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Until(c.lastReread.Add(rereadEvery))):
			}
			n, swept, err := c.readFlows(ctx, lk)
			c.lastReread = time.Now()
			if err != nil {
				c.log.Warn().Err(err).Msg("re-read the forwarder's flows after lost events")
				return
			}
			c.log.Info().Int("flows", n).Int("swept", swept).Uint64("events_lost", c.lost.Load()).Msg("inventory re-read after lost flow events")
			c.syncTunnels(lk, nil)
		}
	}()
}

// rereadEvery bounds how often the inventory is re-read.
const rereadEvery = time.Second

// restoreFlows puts every inventoried flow back into the forwarder.
func (c *Control) restoreFlows(ctx context.Context, lk *fwdLink) (int, error) {
	flows := c.inv.all()
	for i := range flows {
		f := &flows[i]
		r := channel.Route{Op: channel.RouteAdd, Worker: f.Worker, Key: f.Key, Action: f.Action}
		if err := lk.route(&r); err != nil {
			return i, err
		}
	}
	return len(flows), lk.barrier(ctx)
}

// receive handles the forwarder's messages until the connection ends.
func (c *Control) receive(ctx context.Context, lk *fwdLink) {
	var events []channel.FlowEvent
	for ctx.Err() == nil {
		msg, err := lk.conn.Recv()
		if err != nil {
			return
		}
		h, p, err := channel.ParseHeader(msg)
		if err == nil {
			switch h.Type {
			case channel.TPunt:
				var pu channel.Punt
				if pu, err = channel.DecodePunt(p); err == nil {
					switch pu.Reason {
					case channel.PuntAccept:
						c.acceptPunt(lk, &pu)
					case channel.PuntMidFlow:
						c.midFlow(lk, &pu)
					default:
						c.decide(lk, &pu)
					}
				}
			case channel.TFlowEvent:
				if events, err = channel.DecodeFlowEvents(events[:0], p); err == nil {
					c.flowEvents(lk, events)
				}
			case channel.TLost:
				var n uint64
				if n, err = channel.DecodeLost(p); err == nil {
					c.rereadSoon(ctx, lk, n)
				}
			case channel.TReturn:
				err = lk.returned(h.Seq, p)
			case channel.TAck:
				lk.acked(h.Seq)
			default:
				err = fmt.Errorf("unexpected %s message", h.Type)
			}
		}
		if err != nil {
			c.log.Warn().Err(err).Msg("forwarder message refused")
		}
	}
}

// decide answers a punt in seed S1's order (FIG. 26): a client with a
// session goes to the host that holds it, if that host has a backend of
// the VIP that takes new flows (cluster units: the session may have been
// learnt by another unit, so the lookup runs on a goroutine of its
// own); otherwise a VIP whose health source allots new connections
// spends a token of its allotment; otherwise the forwarder's own Maglev
// choice, which came with the punt, stands. Every name is the
// forwarder's ID, from the punt to the route.
func (c *Control) decide(lk *fwdLink, pu *channel.Punt) {
	c.mu.Lock()
	vip, known := c.vipNames[pu.VIP]
	c.mu.Unlock()
	if !known {
		c.count(func(s *unit.PuntStats) { s.Refused++ })
		return
	}
	worker, key, choice := pu.Worker, pu.Key, pu.Choice // pu's frame is the reader's buffer
	if c.cl.atoms.Load() != nil && c.hosts != nil {
		select {
		case c.lookups <- struct{}{}:
			go func() {
				defer func() { <-c.lookups }()
				ctx, cancel := context.WithTimeout(context.Background(), flowLookupTimeout)
				b, ok := c.sessionBackend(ctx, vip, &key)
				cancel()
				if ok {
					c.sendDecision(lk, worker, key, b, true)
					return
				}
				c.decideByLoad(lk, worker, key, vip, choice)
			}()
			return
		default: // too many lookups in flight: no session this time
		}
	}
	c.decideByLoad(lk, worker, key, vip, choice)
}

// decideByLoad is decide without a session: the allotment, or Maglev.
func (c *Control) decideByLoad(lk *fwdLink, worker uint8, key unit.FlowKey, vip string, choice uint32) {
	c.mu.Lock()
	backend, decided := c.spendToken(vip)
	c.mu.Unlock()
	switch {
	case !decided && choice == channel.NoChoice:
		c.count(func(s *unit.PuntStats) { s.NoBackend++ })
		return
	case !decided:
		backend = choice
	}
	c.sendDecision(lk, worker, key, backend, false)
}

// sendDecision routes a punted new flow to backend.
func (c *Control) sendDecision(lk *fwdLink, worker uint8, key unit.FlowKey, backend uint32, session bool) {
	r := channel.Route{Op: channel.RouteAdd, Worker: worker, Key: key, Action: unit.Action{Backend: backend}}
	if err := lk.route(&r); err == nil {
		c.count(func(s *unit.PuntStats) {
			s.Decided++
			if session {
				s.SessionRouted++
			}
		})
	}
}

// spendToken spends a token of the VIP's allotment, making a new
// allotment when it is spent or stale, and returns the backend's
// forwarder ID; false when the VIP has no allotment (its health source
// is none) or no eligible backend. Callers hold mu.
func (c *Control) spendToken(vip string) (uint32, bool) {
	a := c.eval.Allotments[vip]
	if a == nil {
		return 0, false
	}
	now := time.Now()
	i, ok := a.Take(now)
	if !ok {
		// Only the allotments are renewed here: the states and weights
		// the forwarder runs change through refresh, which pushes them.
		c.eval.Allotments = c.evaluate(c.file, c.states).Allotments
		if a = c.eval.Allotments[vip]; a == nil {
			return 0, false
		}
		if i, ok = a.Take(now); !ok {
			return 0, false
		}
	}
	id, ok := c.ids.Backends[a.Keys[i]]
	return id, ok
}

func (c *Control) count(fn func(*unit.PuntStats)) {
	c.mu.Lock()
	fn(&c.punts)
	c.mu.Unlock()
}

// current returns the link to the forwarder, or an error saying why
// there is none.
func (c *Control) current() (*fwdLink, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.link == nil {
		return nil, errors.New("the forwarder is not connected (it is starting, or down: see tetherctl status)")
	}
	return c.link, nil
}

// Reload reads the configuration file again and applies it: to this
// process's decisions and to the forwarder. A file that fails any check
// is refused whole and the running configuration stays.
func (c *Control) Reload(ctx context.Context) error {
	file, raw, err := config.ReadFile(c.opts.ConfigPath)
	if err != nil {
		return err
	}
	c.applyMu.Lock()
	defer c.applyMu.Unlock()
	if name := c.fileLocked().Unit.Name; file.Unit.Name != name {
		return fmt.Errorf("unit.name: %q: a running unit keeps its name (%q); changing it needs a restart", file.Unit.Name, name)
	}
	if key := clusterChange(c.fileLocked().Cluster, file.Cluster); key != "" {
		return fmt.Errorf("%s: a running unit keeps its cluster membership as it started; changing the cluster section needs a restart", key)
	}
	if !c.fileLocked().BGP.Equal(file.BGP) {
		return errors.New("bgp: a running unit keeps its BGP speaker as it started; changing the bgp section needs a restart")
	}
	c.mu.Lock()
	states := maps.Clone(c.states)
	c.mu.Unlock()
	return c.applyLocked(ctx, file, raw, states, nil)
}

func (c *Control) fileLocked() *config.Config {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.file
}

// applyLocked makes file (with raw its text) and states the running
// configuration: it evaluates the health cache over them (unless the
// caller just did: ev) and has the forwarder take the result; only once
// the forwarder accepts (or when none is connected) does this process
// change. Callers hold applyMu.
func (c *Control) applyLocked(ctx context.Context, file *config.Config, raw []byte, states map[unit.BackendKey]unit.State, ev *health.Evaluation) error {
	// States named for backends the new file no longer has are dropped.
	for key := range states {
		if !hasBackend(file, key) {
			delete(states, key)
		}
	}
	if ev == nil {
		c.mu.Lock()
		e := c.evaluate(file, states)
		c.mu.Unlock()
		ev = &e
	}
	running := effective(file, states, ev)
	var reply unit.ReloadReply
	lk, lerr := c.current()
	if lerr == nil {
		var err error
		if reply, err = lk.reload(ctx, running); err != nil {
			return fmt.Errorf("forwarder refused the configuration: %w", err)
		}
	}
	c.mu.Lock()
	c.file, c.raw, c.states, c.eval, c.running = file, raw, states, *ev, running
	if lerr == nil {
		c.setIDs(reply)
	}
	c.mu.Unlock()
	c.probes.Sync(file)
	if err := c.syncL7(file); err != nil {
		c.log.Error().Err(err).Msg("l7 VIPs without an acceptor")
	}
	if lerr == nil {
		// New IDs, or new acceptors: the workers' keys follow.
		c.pushSYNKeys(lk, time.Now(), true)
	}
	c.bgpKick()
	c.log.Info().Uint64("generation", reply.Generation).Msg("configuration applied")
	return nil
}

func hasBackend(cfg *config.Config, key unit.BackendKey) bool {
	for i := range cfg.VIPs {
		if cfg.VIPs[i].Name != key.VIP {
			continue
		}
		for j := range cfg.VIPs[i].Backends {
			if cfg.VIPs[i].Backends[j].Name == key.Backend {
				return true
			}
		}
	}
	return false
}

// SetState sets a backend's run-time state (active, draining, inactive)
// and applies it; the unset state clears it back to the file's.
func (c *Control) SetState(ctx context.Context, key unit.BackendKey, state unit.State) error {
	if state == unit.StateRemoved {
		return errors.New("removed is the forwarder's state for a backend that left the configuration; no operator sets it")
	}
	c.applyMu.Lock()
	defer c.applyMu.Unlock()
	c.mu.Lock()
	file, raw := c.file, c.raw
	states := maps.Clone(c.states)
	c.mu.Unlock()
	if !hasBackend(file, key) {
		return fmt.Errorf("no backend %q in VIP %q", key.Backend, key.VIP)
	}
	if state == 0 {
		delete(states, key)
	} else {
		states[key] = state
	}
	return c.applyLocked(ctx, file, raw, states, nil)
}
