package control

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/tetherlb/tether/config"
	"github.com/tetherlb/tether/ctlplane/health"
	"github.com/tetherlb/tether/dataplane"
	"github.com/tetherlb/tether/dataplane/channel"
	"github.com/tetherlb/tether/forwarder"
)

// Options configure a control process.
type Options struct {
	// ConfigPath is the configuration file.
	ConfigPath string
	// RunDir holds the channel socket, the admin socket and the
	// forwarder's PID file.
	RunDir string
	// Tetherd is the binary to start the forwarder with; empty means
	// do not start one (a forwarder started by hand connects itself).
	Tetherd string
	Log     zerolog.Logger
}

// Socket names in RunDir.
const (
	ChannelSocket = "forwarder.sock"
	AdminSocket   = "admin.sock"
	PIDFile       = "forwarder.pid"
)

// Control is a running control process.
type Control struct {
	opts    Options
	log     zerolog.Logger
	started time.Time

	mu     sync.Mutex
	cfg    *config.Config
	raw    []byte            // the configuration file as last loaded
	states map[string]string // run-time backend states, "vip/backend" → state
	snap   *dataplane.Snapshot
	link   *link
	fwdPID uint32
	fwdIDs map[string]uint32 // forwarder backend IDs by "vip/backend"
	inv    inventory
	sup    supervisorState
	punts  puntStats

	// applyMu serialises configuration changes (reloads, operator states,
	// health verdicts), so the forwarder gets them in order.
	applyMu sync.Mutex
	hl      *health.Server
	probes  *health.Probes
	changed chan struct{}
	eval    health.Evaluation            // the cache's last verdict, under mu
	allot   map[string]*health.Allotment // per VIP, spent by punted decisions, under mu
}

type puntStats struct {
	Decided   uint64 `json:"decided"`
	NoBackend uint64 `json:"no_backend"`
	Refused   uint64 `json:"refused"`
}

// New loads the configuration; Run starts everything.
func New(opts Options) (*Control, error) {
	raw, err := os.ReadFile(opts.ConfigPath)
	if err != nil {
		return nil, fmt.Errorf("control: %w", err)
	}
	cfg, err := config.LoadFile(opts.ConfigPath)
	if err != nil {
		return nil, err
	}
	c := &Control{opts: opts, log: opts.Log, started: time.Now(), cfg: cfg, raw: raw,
		states: map[string]string{}, inv: newInventory()}
	if err := c.startHealth(); err != nil {
		return nil, err
	}
	c.mu.Lock()
	_, c.snap, err = c.prepare(raw, c.states)
	c.mu.Unlock()
	if err != nil {
		return nil, err
	}
	return c, nil
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
	go c.accept(ctx, l)
	go c.runHealth(ctx)
	done := make(chan struct{})
	if c.opts.Tetherd != "" {
		go func() { c.supervise(ctx); close(done) }()
	} else {
		close(done)
	}
	c.log.Info().Str("config", c.opts.ConfigPath).Str("run_dir", c.opts.RunDir).Msg("control running")
	<-ctx.Done()
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
	msg, err := conn.Recv()
	if err != nil {
		return
	}
	h, p, err := channel.ParseHeader(msg)
	var hello channel.Hello
	if err == nil && h.Type == channel.THello {
		hello, err = channel.DecodeHello(p)
	} else if err == nil {
		err = fmt.Errorf("first message is %s, not hello", h.Type)
	}
	if err == nil && hello.Role != channel.RoleForwarder {
		err = errors.New("peer is not a forwarder")
	}
	if err != nil {
		c.log.Warn().Err(err).Msg("channel peer refused")
		return
	}
	if err := conn.Send(channel.AppendHello(nil, 0, &channel.Hello{Role: channel.RoleControl, PID: uint32(os.Getpid())})); err != nil {
		return
	}
	lk := newLink(conn, hello)
	c.mu.Lock()
	old := c.link
	c.link = lk
	restarted := c.fwdPID != 0 && c.fwdPID != hello.PID
	c.fwdPID = hello.PID
	c.mu.Unlock()
	if old != nil {
		old.conn.Close()
	}
	c.log.Info().Uint32("pid", hello.PID).Uint8("workers", hello.Workers).Bool("restarted", restarted).Msg("forwarder connected")
	go c.catchUp(ctx, lk, restarted)
	c.receive(ctx, lk)
	close(lk.closed)
	c.mu.Lock()
	if c.link == lk {
		c.link = nil
	}
	c.mu.Unlock()
	c.log.Warn().Uint32("pid", hello.PID).Msg("forwarder disconnected")
}

// catchUp brings a newly connected forwarder and this process in step:
// the running configuration and states go to the forwarder; the flows go
// back to a forwarder that restarted, or come from one this process has
// not seen yet (this process restarted).
func (c *Control) catchUp(ctx context.Context, lk *link, restarted bool) {
	if err := c.pushConfig(ctx, lk); err != nil {
		c.log.Error().Err(err).Msg("forwarder refused the running configuration")
	}
	if restarted {
		n, err := c.restoreFlows(ctx, lk)
		if err != nil {
			c.log.Error().Err(err).Msg("restore flows")
		}
		c.log.Info().Int("flows", n).Msg("flows restored into the restarted forwarder")
		return
	}
	n, err := c.readFlows(ctx, lk)
	if err != nil {
		c.log.Error().Err(err).Msg("read flows")
	}
	c.log.Info().Int("flows", n).Msg("connection inventory read from the forwarder")
}

// pushConfig sends the running configuration and states, then learns the
// forwarder's backend IDs.
func (c *Control) pushConfig(ctx context.Context, lk *link) error {
	c.applyMu.Lock()
	defer c.applyMu.Unlock()
	c.mu.Lock()
	req := c.request(c.raw)
	c.mu.Unlock()
	if err := lk.call(ctx, "reload", req, nil); err != nil {
		return err
	}
	return c.learnIDs(ctx, lk)
}

func (c *Control) learnIDs(ctx context.Context, lk *link) error {
	var rep dataplane.Report
	if err := lk.call(ctx, "report", nil, &rep); err != nil {
		return err
	}
	ids := map[string]uint32{}
	for _, b := range rep.Backends {
		if b.State != "removed" {
			ids[b.VIP+"/"+b.Name] = b.ID
		}
	}
	c.mu.Lock()
	c.fwdIDs = ids
	c.mu.Unlock()
	return nil
}

func copyStates(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// readFlows pages through the forwarder's flows into the inventory.
func (c *Control) readFlows(ctx context.Context, lk *link) (int, error) {
	total := 0
	for offset := 0; ; {
		var page forwarder.FlowsReply
		if err := lk.call(ctx, "flows", forwarder.FlowsRequest{Backend: -1, Offset: offset, Limit: forwarder.MaxFlowPage}, &page); err != nil {
			return total, err
		}
		for _, f := range page.Flows {
			c.inv.opened(channel.FlowEvent{Kind: channel.FlowOpened, Worker: uint8(f.Worker), Key: f.Key, Action: f.Action})
		}
		total += len(page.Flows)
		offset += len(page.Flows)
		if len(page.Flows) == 0 || offset >= page.Matched {
			return total, nil
		}
	}
}

// restoreFlows puts every inventoried flow back into the forwarder.
func (c *Control) restoreFlows(ctx context.Context, lk *link) (int, error) {
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
func (c *Control) receive(ctx context.Context, lk *link) {
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
					c.decide(lk, &pu)
				}
			case channel.TFlowEvent:
				if events, err = channel.DecodeFlowEvents(events[:0], p); err == nil {
					c.inv.apply(events)
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

// decide answers a punt: the VIP's Maglev choice among the backends that
// take new flows. (Sessions, affinity and migration will decide here.)
func (c *Control) decide(lk *link, pu *channel.Punt) {
	c.mu.Lock()
	snap, ids := c.snap, c.fwdIDs
	c.mu.Unlock()
	v := snap.LookupVIP(pu.Key.DstAddr(), pu.Key.DstPort, pu.Key.Proto)
	if v == nil {
		c.count(func(s *puntStats) { s.Refused++ })
		return
	}
	key, ok := c.spendToken(v.Name)
	if !ok {
		var bid uint32
		if bid, ok = v.Choose(netip.AddrPortFrom(pu.Key.SrcAddr(), pu.Key.SrcPort), pu.Key.Proto); ok {
			key = v.Name + "/" + snap.Backends[bid].Name
		}
	}
	if !ok {
		c.count(func(s *puntStats) { s.NoBackend++ })
		return
	}
	fid, ok := ids[key]
	if !ok {
		c.count(func(s *puntStats) { s.Refused++ })
		return
	}
	r := channel.Route{Op: channel.RouteAdd, Worker: pu.Worker, Key: pu.Key, Action: channel.Action{Backend: fid}}
	if err := lk.route(&r); err == nil {
		c.count(func(s *puntStats) { s.Decided++ })
	}
}

func (c *Control) count(fn func(*puntStats)) {
	c.mu.Lock()
	fn(&c.punts)
	c.mu.Unlock()
}

// current returns the link to the forwarder, or an error saying why
// there is none.
func (c *Control) current() (*link, error) {
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
	raw, err := os.ReadFile(c.opts.ConfigPath)
	if err != nil {
		return fmt.Errorf("reload: %w", err)
	}
	return c.apply(ctx, raw, nil)
}

// apply makes raw (and states, when not nil) the running configuration.
func (c *Control) apply(ctx context.Context, raw []byte, states map[string]string) error {
	c.applyMu.Lock()
	defer c.applyMu.Unlock()
	if states == nil {
		c.mu.Lock()
		states = copyStates(c.states)
		c.mu.Unlock()
	}
	return c.applyLocked(ctx, raw, states)
}

// applyLocked is apply for callers holding applyMu: it parses raw, adds
// the operator's states and the health cache's verdict, builds the
// tables, and has the forwarder take the same.
func (c *Control) applyLocked(ctx context.Context, raw []byte, states map[string]string) error {
	cfg, err := config.Parse(raw)
	if err != nil {
		return err
	}
	// States named for backends the new file no longer has are dropped.
	for key := range states {
		if !hasBackend(cfg, key) {
			delete(states, key)
		}
	}
	c.mu.Lock()
	prevCfg, prevStates, prevEval, prevAllot := c.cfg, c.states, c.eval, c.allot
	restore := func() {
		c.mu.Lock()
		c.cfg, c.states, c.eval, c.allot = prevCfg, prevStates, prevEval, prevAllot
		c.mu.Unlock()
	}
	c.cfg, c.states = cfg, states
	req, snap, err := c.prepare(raw, states)
	c.mu.Unlock()
	if err != nil {
		restore()
		return err
	}
	if lk, lerr := c.current(); lerr == nil {
		if err := lk.call(ctx, "reload", req, nil); err != nil {
			restore()
			return fmt.Errorf("forwarder refused the configuration: %w", err)
		}
		defer c.learnIDs(ctx, lk)
	}
	c.mu.Lock()
	c.raw, c.snap = raw, snap
	c.mu.Unlock()
	c.probes.Sync(cfg)
	c.log.Info().Uint64("generation", snap.Generation).Msg("configuration applied")
	return nil
}

// prepare evaluates the health cache over c.cfg and builds the tables
// the forwarder will get for raw with the operator's states and the
// verdict's overrides. Callers hold mu; prepare stores the verdict.
func (c *Control) prepare(raw []byte, states map[string]string) (forwarder.ReloadRequest, *dataplane.Snapshot, error) {
	ev := c.evaluate(c.cfg, states)
	c.eval, c.allot = ev, ev.Allotments
	req := c.request(raw)
	cfg, err := config.Parse(raw)
	if err == nil {
		err = forwarder.ApplyOverrides(cfg, req.States, req.Weights)
	}
	if err != nil {
		return req, nil, err
	}
	snap, err := dataplane.Build(cfg, c.snap)
	return req, snap, err
}

// request is the reload request for raw: the operator's states made
// stricter by the last verdict, and the verdict's weights. Callers hold
// mu.
func (c *Control) request(raw []byte) forwarder.ReloadRequest {
	states := copyStates(c.states)
	for k, s := range c.eval.States {
		states[k] = s
	}
	return forwarder.ReloadRequest{Config: string(raw), States: states, Weights: maps.Clone(c.eval.Weights)}
}

// spendToken spends a token of the VIP's allotment, making a new
// allotment when it is spent or stale; false when the VIP has no
// allotment (its health source is none) or no eligible backend.
func (c *Control) spendToken(vip string) (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	a, ok := c.allot[vip]
	if !ok {
		return "", false
	}
	now := time.Now()
	i, ok := a.Take(now)
	if !ok {
		c.allot = c.evaluate(c.cfg, c.states).Allotments
		if a = c.allot[vip]; a == nil {
			return "", false
		}
		if i, ok = a.Take(now); !ok {
			return "", false
		}
	}
	return a.Names[i], true
}

func hasBackend(cfg *config.Config, key string) bool {
	for i := range cfg.VIPs {
		for j := range cfg.VIPs[i].Backends {
			if cfg.VIPs[i].Name+"/"+cfg.VIPs[i].Backends[j].Name == key {
				return true
			}
		}
	}
	return false
}

// SetState sets a backend's run-time state (active, draining, inactive)
// and applies it; "" clears it back to the file's.
func (c *Control) SetState(ctx context.Context, vip, backend, state string) error {
	key := vip + "/" + backend
	c.mu.Lock()
	raw := c.raw
	if !hasBackend(c.cfg, key) {
		c.mu.Unlock()
		return fmt.Errorf("no backend %q in VIP %q", backend, vip)
	}
	states := copyStates(c.states)
	c.mu.Unlock()
	if state == "" {
		delete(states, key)
	} else {
		states[key] = state
	}
	return c.apply(ctx, raw, states)
}

// Validate checks a candidate configuration without applying it.
func Validate(raw []byte) error {
	cfg, err := config.Parse(raw)
	if err != nil {
		return err
	}
	_, err = dataplane.Build(cfg, nil)
	return err
}
