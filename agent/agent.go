package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/tetherlb/tether/agent/migrate"
	"github.com/tetherlb/tether/agent/sessions"
	"github.com/tetherlb/tether/agent/streams"
	pb "github.com/tetherlb/tether/api/healthpb"
	"github.com/tetherlb/tether/internal/probe"
)

// Agent is a running host agent.
type Agent struct {
	cfg   *Config
	log   zerolog.Logger
	host  uint32
	table *Table
	conn  *net.UDPConn
	// key is this host's key (nil: unauthenticated); groupKey the
	// group's gossip secret.
	key      *pb.HostKey
	groupKey []byte
	frames   *pb.Sequencer // the frames' sequence numbers

	sendMu sync.Mutex
	out    *pb.Codec

	mu     sync.Mutex
	checks map[string]*probe.Monitor // by application name
	loads  map[string]*LoadView      // load commands' state, by application name
	shakes map[string]*handshake     // directive handshakes in progress, by name
	wrongs map[uint64]map[uint32]bool
	group  *group
	stats  Stats
	// units' replay windows, by unit ID; the receive loop's alone.
	windows map[uint32]*unitWindow

	seq   atomic.Uint64
	beats uint64 // heartbeats sent; the heartbeat loop's alone

	// streams are the host streams to the units (issue 13;
	// streamconfig.go), nil when none is configured.
	streams atomic.Pointer[streams.Streams]
	// tunnel is the host side of the tunnels (issue 13;
	// tunnelconfig.go), nil when none is configured.
	tunnel atomic.Pointer[Tunnel]
	// migrator takes the units' migrated connections (issue 14;
	// migrationconfig.go), nil when migration is off.
	migrator atomic.Pointer[migrate.Migrator]
	// sessions is the host's session table (issue 15; sessions.go).
	sessions *sessions.Table
}

// Stats counts what the agent sent and received.
type Stats struct {
	Sent     map[string]uint64 `json:"sent"`     // by message kind
	Received map[string]uint64 `json:"received"` // by message kind
	Refused  map[string]uint64 `json:"refused"`  // by reason
}

// New prepares an agent: it reads its keys and opens the UDP socket.
func New(cfg *Config, log zerolog.Logger) (*Agent, error) {
	key, err := readHostKey(cfg)
	if err != nil {
		return nil, err
	}
	var groupKey []byte
	if cfg.Group.KeyFile != "" {
		b, err := os.ReadFile(cfg.Group.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("group.key_file: %q: %w", cfg.Group.KeyFile, err)
		}
		if groupKey = []byte(strings.TrimSpace(string(b))); len(groupKey) < 16 {
			return nil, fmt.Errorf("group.key_file: %q: the secret must be at least 16 bytes", cfg.Group.KeyFile)
		}
	}
	out, err := pb.NewCodec()
	if err != nil {
		return nil, err
	}
	laddr, _ := netip.ParseAddrPort(cfg.Host.Listen)
	conn, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(laddr))
	if err != nil {
		return nil, fmt.Errorf("host.listen: %q: %w", cfg.Host.Listen, err)
	}
	a := &Agent{cfg: cfg, log: log, host: uint32(cfg.Host.ID), table: NewTable(uint64(time.Now().UnixNano())),
		conn: conn, key: key, groupKey: groupKey, frames: pb.NewSequencer(time.Now()), out: out,
		checks: map[string]*probe.Monitor{}, loads: map[string]*LoadView{}, shakes: map[string]*handshake{},
		wrongs: map[uint64]map[uint32]bool{}, windows: map[uint32]*unitWindow{},
		stats:    Stats{Sent: map[string]uint64{}, Received: map[string]uint64{}, Refused: map[string]uint64{}},
		sessions: sessions.New(sessions.Options{Max: cfg.Sessions.Max})}
	for i := range cfg.Apps {
		app := &cfg.Apps[i]
		st, _ := pb.ParseState(app.State)
		r := &pb.Row{App: app.AppID(), Health: pb.Health_HEALTH_HEALTHY, Capacity: uint32(app.Capacity), Target: st, Current: st}
		if app.Check != nil {
			r.Health = pb.Health_HEALTH_UNKNOWN // until the first check says
		}
		if err := a.table.Add(app.Name, r); err != nil {
			conn.Close()
			return nil, fmt.Errorf("applications[%d]: %w", i, err)
		}
	}
	return a, nil
}

// readHostKey reads auth.key_file and checks that it is this host's and
// grants every configured application's endpoint: a mismatch found here
// names the key to fix, where the units would only count refusals.
func readHostKey(cfg *Config) (*pb.HostKey, error) {
	path := cfg.Auth.KeyFile
	if path == "" {
		return nil, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("auth.key_file: %q: %w", path, err)
	}
	k, err := pb.ParseHostKey(b)
	if err != nil {
		return nil, fmt.Errorf("auth.key_file: %q: %w", path, err)
	}
	if k.Host != uint32(cfg.Host.ID) {
		return nil, fmt.Errorf("auth.key_file: %q: the key of host %d, but host.id is %d", path, k.Host, cfg.Host.ID)
	}
	for i, app := range cfg.Apps {
		if !k.Grant.Allows(app.Endpoint) {
			return nil, fmt.Errorf("applications[%d].endpoint: %q: outside the endpoints host %d's key grants (%s): units would refuse its rows; make a key that grants it (tetherd health-key --endpoints)",
				i, app.Endpoint, k.Host, k.Grant)
		}
	}
	return k, nil
}

// unitWindow is one unit's replay state at this host.
type unitWindow struct {
	win  pb.Window
	last time.Time
}

// Table returns the agent's table.
func (a *Agent) Table() *Table { return a.table }

// Addr returns the agent's UDP address.
func (a *Agent) Addr() netip.AddrPort { return a.conn.LocalAddr().(*net.UDPAddr).AddrPort() }

// Run runs the agent until ctx ends, then says goodbye to the units.
func (a *Agent) Run(ctx context.Context) error {
	defer a.conn.Close()
	in, err := pb.NewCodec()
	if err != nil {
		return err
	}
	if a.cfg.Group.Bind != "" {
		g, err := startGroup(a)
		if err != nil {
			return err
		}
		a.mu.Lock()
		a.group = g
		a.mu.Unlock()
		defer g.leave()
	}
	var wg sync.WaitGroup
	run := func(f func()) {
		wg.Add(1)
		go func() { defer wg.Done(); f() }()
	}
	for i := range a.cfg.Apps {
		app := &a.cfg.Apps[i]
		if app.Check != nil {
			c, err := probe.New(app.CheckSpec(), a.onCheck(app.Name))
			if err != nil {
				return fmt.Errorf("applications[%d].check: %w", i, err)
			}
			a.mu.Lock()
			a.checks[app.Name] = c
			a.mu.Unlock()
			run(func() { c.Run(ctx) })
		}
		if len(app.LoadCommand) > 0 {
			run(func() { a.measureLoad(ctx, app) })
		}
	}
	run(func() { a.sendChanges(ctx) })
	run(func() { a.sessions.Run(ctx) }) // client-IP sessions' idle timeouts
	run(func() { a.heartbeats(ctx) })
	go func() { <-ctx.Done(); a.conn.SetReadDeadline(time.Now()) }()
	a.log.Info().Uint32("host", a.host).Str("listen", a.Addr().String()).Int("applications", len(a.cfg.Apps)).
		Interface("units", a.cfg.Units).Bool("authenticated", a.key != nil).Msg("agent running")
	buf := make([]byte, pb.MaxDatagram+1)
	for ctx.Err() == nil {
		n, src, err := a.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				break
			}
			continue
		}
		a.receive(in, buf[:n], netip.AddrPortFrom(src.Addr().Unmap(), src.Port()))
	}
	wg.Wait()
	// A clean shutdown clears this host from every cache at once
	// instead of after missed heartbeats.
	a.toUnits(&pb.Envelope{Body: &pb.Envelope_Goodbye{Goodbye: &pb.Goodbye{Host: a.host}}}, false)
	a.log.Info().Msg("agent stopped: goodbye sent")
	return nil
}

// onCheck turns a check's verdict into the row's health.
func (a *Agent) onCheck(name string) func(probe.Health, probe.Result) {
	return func(h probe.Health, r probe.Result) {
		health := pb.Health_HEALTH_UNKNOWN
		switch h {
		case probe.Healthy:
			health = pb.Health_HEALTH_HEALTHY
		case probe.Failing:
			health = pb.Health_HEALTH_FAILING
		}
		if changed, err := a.table.Update(name, func(row *pb.Row) { row.Health = health }); err == nil && changed {
			a.log.Info().Str("application", name).Str("health", h.String()).Str("detail", r.Detail).Msg("health changed")
		}
	}
}

// frame encodes env as this host's next frame, signed with its key.
// Callers hold sendMu; the result is valid until the next call.
func (a *Agent) frame(env *pb.Envelope, compress bool) ([]byte, error) {
	now := time.Now()
	h := &pb.Header{Host: a.host, Sender: a.host, Seq: a.frames.Next(now), Time: uint64(now.UnixMilli())}
	var key []byte
	if a.key != nil {
		h.Grant, key = a.key.Grant, a.key.Key
	}
	return a.out.Encode(env, h, key, compress)
}

// send encodes env and sends it to dsts: one frame, one sequence
// number, however many units hear it.
func (a *Agent) send(env *pb.Envelope, compress bool, dsts ...netip.AddrPort) {
	a.sendMu.Lock()
	b, err := a.frame(env, compress)
	if err == nil {
		for _, dst := range dsts {
			if _, werr := a.conn.WriteToUDPAddrPort(b, dst); werr != nil {
				a.log.Debug().Err(werr).Str("to", dst.String()).Str("kind", pb.Kind(env)).Msg("send")
			}
		}
	}
	a.sendMu.Unlock()
	kind := pb.Kind(env)
	a.mu.Lock()
	a.stats.Sent[kind] += uint64(len(dsts))
	a.mu.Unlock()
	if err != nil {
		a.log.Warn().Err(err).Str("kind", kind).Msg("encode")
	}
}

// toUnits sends env to every unit.
func (a *Agent) toUnits(env *pb.Envelope, compress bool) {
	a.send(env, compress, a.cfg.units...)
}

// sendChanges pushes the table's changes as they happen: event-driven,
// several operations per row change when they queue up.
func (a *Agent) sendChanges(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-a.table.Changed():
		}
		for {
			ops, gen := a.table.TakePending(changeBatch)
			if len(ops) == 0 {
				break
			}
			a.toUnits(&pb.Envelope{Body: &pb.Envelope_RowChange{RowChange: &pb.RowChange{Host: a.host, Generation: gen, Ops: ops}}}, true)
		}
	}
}

// changeBatch bounds the operations of one row change so it fits a
// datagram.
const changeBatch = 256

// heartbeats sends a heartbeat every interval: to the units, to the
// group's leader, or as the leader on the group's behalf.
func (a *Agent) heartbeats(ctx context.Context) {
	t := time.NewTicker(a.cfg.Heartbeat.Interval)
	defer t.Stop()
	for {
		hb := a.heartbeat()
		a.mu.Lock()
		g := a.group
		a.mu.Unlock()
		if g == nil || !g.route(hb) {
			a.toUnits(&pb.Envelope{Body: &pb.Envelope_Heartbeat{Heartbeat: hb}}, false)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// heartbeat builds this host's next heartbeat.
func (a *Agent) heartbeat() *pb.Heartbeat {
	gen, chunks := a.table.Integrity()
	hb := &pb.Heartbeat{Host: a.host, Generation: gen, Chunks: chunks, IntervalMs: uint32(a.cfg.Heartbeat.Interval / time.Millisecond)}
	// The name in the first few heartbeats (one may be lost) and every
	// NameEvery-th after.
	if a.beats < 3 || a.beats%uint64(a.cfg.Heartbeat.NameEvery) == 0 {
		hb.Name, hb.Port = a.cfg.Host.Name, uint32(a.Addr().Port())
	}
	a.beats++
	return hb
}

// receive handles one datagram: a unit's (authenticated with this
// host's key, fresh, not a replay) or, at a group leader, a member's
// heartbeat to relay.
func (a *Agent) receive(in *pb.Codec, b []byte, src netip.AddrPort) {
	hdr, err := in.Header(b)
	if err == nil && !hdr.FromUnit {
		a.fromMember(in, b, src)
		return
	}
	env, err := a.open(in, b)
	if err != nil {
		a.refuse(pb.Reason(err), src, err)
		return
	}
	switch env.GetBody().(type) {
	case *pb.Envelope_GetSnapshot, *pb.Envelope_PostulateWrong:
		// Only units may ask: a snapshot answer is much larger than the
		// request, and answering anyone would make the agent an
		// amplifier for spoofed requests.
		if !a.isUnit(src.Addr()) {
			a.refuse("not_a_unit", src, fmt.Errorf("%s from %s", pb.Kind(env), src))
			return
		}
	}
	a.mu.Lock()
	a.stats.Received[pb.Kind(env)]++
	a.mu.Unlock()
	switch m := env.GetBody().(type) {
	case *pb.Envelope_GetSnapshot:
		a.answerSnapshot(src, m.GetSnapshot.GetChunks())
	case *pb.Envelope_PostulateWrong:
		a.postulateWrong(src, m.PostulateWrong)
	}
}

// open decodes and checks a unit's frame, and moves that unit's replay
// window.
func (a *Agent) open(in *pb.Codec, b []byte) (*pb.Envelope, error) {
	var keys pb.Keys
	if a.key != nil {
		keys = func(h *pb.Header) []byte {
			if h.Host != a.host {
				return nil
			}
			return a.key.Key
		}
	}
	env, h, err := in.Decode(b, keys)
	if err != nil {
		return nil, err
	}
	if err := pb.Validate(env); err != nil {
		return nil, err
	}
	if err := pb.CheckFromUnit(env, h, a.host); err != nil {
		return nil, err
	}
	now := time.Now()
	if err := pb.Fresh(h, now, a.cfg.Auth.Freshness); err != nil {
		return nil, err
	}
	for id, w := range a.windows {
		if now.Sub(w.last) > 2*a.cfg.Auth.Freshness {
			delete(a.windows, id) // its frames are refused by their time now
		}
	}
	w := a.windows[h.Sender]
	if w == nil {
		w = &unitWindow{}
		a.windows[h.Sender] = w
	}
	if !w.win.Admit(h.Seq) {
		return nil, fmt.Errorf("%w: unit %d, sequence %d", pb.ErrReplay, h.Sender, h.Seq)
	}
	w.last = now
	return env, nil
}

// fromMember takes a group member's heartbeat frame at the leader. The
// leader cannot check it (it holds only its own key) and does not need
// to: it relays the frame unchanged and the units check it.
func (a *Agent) fromMember(in *pb.Codec, b []byte, src netip.AddrPort) {
	a.mu.Lock()
	g := a.group
	a.mu.Unlock()
	if g == nil {
		a.refuse("direction", src, fmt.Errorf("%w: a host's frame at a host outside a group", pb.ErrDirection))
		return
	}
	env, h, err := in.Peek(b)
	if err != nil {
		a.refuse(pb.Reason(err), src, err)
		return
	}
	hb := env.GetHeartbeat()
	if hb == nil || hb.GetHost() != h.Host || pb.Validate(env) != nil {
		a.refuse("direction", src, fmt.Errorf("%w: %s of host %d from a member", pb.ErrDirection, pb.Kind(env), h.Host))
		return
	}
	a.mu.Lock()
	a.stats.Received["member_heartbeat"]++
	a.mu.Unlock()
	g.memberBeat(hb, b, src)
}

// refuse counts a refused datagram by reason.
func (a *Agent) refuse(why string, src netip.AddrPort, err error) {
	a.mu.Lock()
	a.stats.Refused[why]++
	n := a.stats.Refused[why]
	a.mu.Unlock()
	if n == 1 || n%1000 == 0 {
		a.log.Warn().Err(err).Str("from", src.String()).Uint64("count", n).Msg("message refused")
	}
}

// isUnit reports whether addr is one of the configured units' addresses
// (any port: a unit may answer from another socket than it listens on).
func (a *Agent) isUnit(addr netip.Addr) bool {
	for _, u := range a.cfg.units {
		if u.Addr().Unmap() == addr.Unmap() {
			return true
		}
	}
	return false
}

// answerSnapshot sends the requested chunks, whole chunks per message.
func (a *Agent) answerSnapshot(dst netip.AddrPort, chunks []uint32) {
	gen, chunks, rows := a.table.Chunks(chunks)
	byChunk := map[uint32][]*pb.Row{}
	for _, r := range rows {
		c := pb.ChunkOf(r.GetApp())
		byChunk[c] = append(byChunk[c], r)
	}
	msg := &pb.SendSnapshot{Host: a.host, Generation: gen}
	flush := func() {
		if len(msg.Chunks) > 0 {
			a.send(&pb.Envelope{Body: &pb.Envelope_SendSnapshot{SendSnapshot: msg}}, true, dst)
		}
		msg = &pb.SendSnapshot{Host: a.host, Generation: gen}
	}
	for _, c := range chunks {
		if len(msg.Rows)+len(byChunk[c]) > snapshotRows {
			flush()
		}
		msg.Chunks = append(msg.Chunks, c)
		msg.Rows = append(msg.Rows, byChunk[c]...)
	}
	flush()
}

// snapshotRows bounds the rows of one snapshot message (a chunk larger
// than this still goes whole, compressed).
const snapshotRows = 512

// Set changes an application's health, load, capacity or directive
// (nil fields stay). A new directive starts the handshake that confirms
// the units follow it.
func (a *Agent) Set(ctx context.Context, name string, health *pb.Health, load, capacity *uint32, state *pb.State) error {
	if _, ok := a.table.Row(name); !ok {
		return fmt.Errorf("no application %q", name)
	}
	var startShake bool
	_, err := a.table.Update(name, func(r *pb.Row) {
		if health != nil {
			r.Health = *health
		}
		if load != nil {
			r.Load = *load
		}
		if capacity != nil {
			r.Capacity = *capacity
		}
		if state != nil && r.Target != *state {
			r.Target = *state
			startShake = true
		}
	})
	if err != nil {
		return err
	}
	if startShake {
		a.startHandshake(ctx, name, *state)
	}
	return nil
}

// measureLoad runs an application's load command every interval and
// reports the load when it moved by at least the configured step.
func (a *Agent) measureLoad(ctx context.Context, app *App) {
	spec := probe.Spec{Type: probe.TypeExec, Command: app.LoadCommand, Interval: app.LoadInterval, Timeout: min(app.LoadInterval, 5*time.Second)}.Defaults()
	t := time.NewTicker(app.LoadInterval)
	defer t.Stop()
	st := &LoadView{}
	a.mu.Lock()
	a.loads[app.Name] = st
	a.mu.Unlock()
	for {
		out, err := runCommand(ctx, spec.Command, spec.Timeout)
		load, ok := parseLoad(out)
		switch {
		case err != nil:
			a.log.Warn().Err(err).Str("application", app.Name).Msg("load command failed")
		case !ok:
			a.log.Warn().Str("application", app.Name).Str("output", out).Msg("load command printed no percentage")
		default:
			a.reportLoad(app.Name, load)
		}
		// Counted after the row took (or, by hysteresis, ignored) the
		// measurement, so whoever sees the count sees its effect.
		a.mu.Lock()
		if err == nil && ok {
			st.Measured, st.Measurements = load, st.Measurements+1
		} else {
			st.Failures++
		}
		a.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// reportLoad applies a measured load with hysteresis: small moves are
// not worth a message to every unit.
func (a *Agent) reportLoad(name string, load uint32) {
	step := uint32(a.cfg.Load.Step)
	a.table.Update(name, func(r *pb.Row) {
		if d := int64(load) - int64(r.Load); d >= int64(step) || -d >= int64(step) || (load == 0 || load == 100) && load != r.Load {
			r.Load = load
		}
	})
}
