package forwarder

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tetherlb/tether/config"
	"github.com/tetherlb/tether/dataplane"
	"github.com/tetherlb/tether/dataplane/channel"
)

// The forwarder's end of the control channel. The forwarder works alone
// when no control process is connected: punt VIPs fall back to Maglev
// and nothing is reported. It keeps dialling the control socket, so a
// control process that restarts finds it again; then workers punt and
// report, and the control process re-reads the flows with a "flows" call.

const (
	redialEvery  = 300 * time.Millisecond
	collectEvery = 10 * time.Millisecond
)

// ControlStats count the link's work.
type ControlStats struct {
	Connected   bool   `json:"connected"`
	Connects    uint64 `json:"connects"`
	Punts       uint64 `json:"punts"`
	Events      uint64 `json:"events"`
	EventsLost  uint64 `json:"events_lost"`
	Routes      uint64 `json:"routes"`
	RouteErrors uint64 `json:"route_errors"`
	BadMessages uint64 `json:"bad_messages"`
}

type controlLink struct {
	f     *Forwarder
	path  string
	bell  chan struct{}
	steer *dataplane.Steerer
	seq   atomic.Uint32
	mu    sync.Mutex
	stats ControlStats
}

// EnableControl makes the forwarder connect to the control process's
// socket at path when it runs. Call it before Run.
func (f *Forwarder) EnableControl(path string) {
	l := &controlLink{f: f, path: path, bell: make(chan struct{}, 1), steer: dataplane.NewSteerer(len(f.workers))}
	for _, w := range f.workers {
		w.Pipeline().EnableControl(l.bell)
		w.Pipeline().SetControlConnected(false)
	}
	f.control = l
}

// ControlStats returns the link's counters.
func (f *Forwarder) ControlStats() ControlStats {
	if f.control == nil {
		return ControlStats{}
	}
	f.control.mu.Lock()
	defer f.control.mu.Unlock()
	return f.control.stats
}

func (l *controlLink) count(fn func(s *ControlStats)) {
	l.mu.Lock()
	fn(&l.stats)
	l.mu.Unlock()
}

// run dials and serves until ctx ends.
func (l *controlLink) run(ctx context.Context) {
	for ctx.Err() == nil {
		conn, err := channel.Dial(l.path)
		if err == nil {
			l.count(func(s *ControlStats) { s.Connected, s.Connects = true, s.Connects+1 })
			l.f.log.Info().Str("socket", l.path).Msg("control connected")
			err = l.serve(ctx, conn)
			conn.Close()
			l.count(func(s *ControlStats) { s.Connected = false })
			l.setConnected(ctx, false)
			if ctx.Err() == nil {
				l.f.log.Warn().Err(err).Msg("control disconnected; forwarding alone")
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(redialEvery):
		}
	}
}

func (l *controlLink) setConnected(ctx context.Context, up bool) {
	for _, w := range l.f.workers {
		_ = w.Do(ctx, func(p *dataplane.Pipeline) { p.SetControlConnected(up) })
	}
}

func (l *controlLink) serve(ctx context.Context, conn *channel.Conn) error {
	hello := channel.Hello{Role: channel.RoleForwarder, PID: uint32(os.Getpid()), Workers: uint8(len(l.f.workers)),
		Generation: l.f.generation(), Name: l.f.cfg.Unit.Name}
	if err := conn.Send(channel.AppendHello(nil, l.seq.Add(1), &hello)); err != nil {
		return err
	}
	l.setConnected(ctx, true)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sendErr := make(chan error, 1)
	go func() { sendErr <- l.sendLoop(ctx, conn) }()
	recvErr := make(chan error, 1)
	go func() { recvErr <- l.recvLoop(ctx, conn) }()
	select {
	case err := <-sendErr:
		conn.Close()
		<-recvErr
		return err
	case err := <-recvErr:
		cancel()
		<-sendErr
		return err
	}
}

// sendLoop collects the workers' outboxes when they ring (or every
// collectEvery, for removals found by aging) and sends them.
func (l *controlLink) sendLoop(ctx context.Context, conn *channel.Conn) error {
	tick := time.NewTicker(collectEvery)
	defer tick.Stop()
	var events []channel.FlowEvent
	var msgs [][]byte
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-l.bell:
		case <-tick.C:
		}
		events, msgs = events[:0], msgs[:0]
		var lost uint64
		for _, w := range l.f.workers {
			_ = w.Do(ctx, func(p *dataplane.Pipeline) {
				p.TakeOutbox(func(evs []channel.FlowEvent, punts []channel.Punt, n uint64) {
					events = append(events, evs...)
					lost += n
					for i := range punts {
						msgs = append(msgs, channel.AppendPunt(nil, l.seq.Add(1), &punts[i]))
					}
				})
			})
		}
		for len(events) > 0 {
			n := min(len(events), channel.MaxFlowEvents)
			msgs = append(msgs, channel.AppendFlowEvents(nil, l.seq.Add(1), events[:n]))
			events = events[n:]
		}
		punts := 0
		for _, m := range msgs {
			if m[2] == byte(channel.TPunt) {
				punts++
			}
			if err := conn.Send(m); err != nil {
				return err
			}
		}
		if len(msgs) > 0 || lost > 0 {
			l.count(func(s *ControlStats) {
				s.Punts += uint64(punts)
				s.Events += uint64(len(msgs) - punts)
				s.EventsLost += lost
			})
		}
	}
}

func (l *controlLink) recvLoop(ctx context.Context, conn *channel.Conn) error {
	var asm channel.Assembler
	for ctx.Err() == nil {
		msg, err := conn.Recv()
		if err != nil {
			return err
		}
		h, p, err := channel.ParseHeader(msg)
		if err == nil {
			err = l.handle(ctx, conn, &asm, h, p)
		}
		if err != nil {
			// A malformed message is counted and logged; the link stays.
			l.count(func(s *ControlStats) { s.BadMessages++ })
			l.f.log.Warn().Err(err).Msg("control message refused")
		}
	}
	return ctx.Err()
}

func (l *controlLink) handle(ctx context.Context, conn *channel.Conn, asm *channel.Assembler, h channel.Header, p []byte) error {
	switch h.Type {
	case channel.TRoute:
		r, err := channel.DecodeRoute(p)
		if err != nil {
			return err
		}
		return l.route(ctx, &r)
	case channel.TBarrier:
		// Every worker runs its commands in order: once each has run
		// this no-op, every earlier route is applied.
		for _, w := range l.f.workers {
			if err := w.Do(ctx, func(*dataplane.Pipeline) {}); err != nil {
				return err
			}
		}
		return conn.Send(channel.AppendAck(nil, h.Seq))
	case channel.TCall:
		c, err := channel.DecodeCall(p)
		if err != nil {
			return err
		}
		body, done, err := asm.Add(h.Seq, c.Chunk, c.Chunks, c.Body)
		if err != nil || !done {
			return err
		}
		out, callErr := l.call(ctx, c.Method, body)
		text := ""
		if callErr != nil {
			text = callErr.Error()
		}
		for _, m := range channel.AppendReturns(nil, h.Seq, text, out) {
			if err := conn.Send(m); err != nil {
				return err
			}
		}
		return nil
	case channel.THello:
		_, err := channel.DecodeHello(p)
		return err
	}
	return fmt.Errorf("unexpected %s message", h.Type)
}

func (l *controlLink) route(ctx context.Context, r *channel.Route) error {
	wi := int(r.Worker)
	if wi >= len(l.f.workers) {
		wi = l.steer.KeyWorker(l.f.currentSnapshot(), &r.Key)
	}
	w := l.f.workers[wi]
	route := *r
	return w.Post(ctx, func(p *dataplane.Pipeline) {
		var err error
		if route.Op == channel.RouteAdd {
			err = p.AddRoute(&route, w.Now())
		} else {
			p.DeleteRoute(&route.Key)
		}
		l.count(func(s *ControlStats) {
			s.Routes++
			if err != nil {
				s.RouteErrors++
			}
		})
		if err != nil {
			l.f.log.Warn().Err(err).Msg("route refused")
		}
	})
}

// ReloadRequest is the body of the "reload" call: the configuration file
// and what the control process overrides in it at run time, keyed
// "vip/backend": backend states (an operator's drain or disable, a
// host's directive, a failing health check) and weights (allotments from
// the hosts' health and load).
type ReloadRequest struct {
	Config  string            `json:"config"`
	States  map[string]string `json:"states,omitempty"`
	Weights map[string]int    `json:"weights,omitempty"`
}

// ApplyOverrides sets backend states and weights of c; every key must
// name a backend of c, and the result must pass the configuration's
// checks.
func ApplyOverrides(c *config.Config, states map[string]string, weights map[string]int) error {
	index := map[string]*config.Backend{}
	for i := range c.VIPs {
		for j := range c.VIPs[i].Backends {
			index[c.VIPs[i].Name+"/"+c.VIPs[i].Backends[j].Name] = &c.VIPs[i].Backends[j]
		}
	}
	for key, state := range states {
		b := index[key]
		if b == nil {
			return fmt.Errorf("states: %q is no backend of the configuration", key)
		}
		b.State = state
	}
	for key, w := range weights {
		b := index[key]
		if b == nil {
			return fmt.Errorf("weights: %q is no backend of the configuration", key)
		}
		b.Weight = &w
	}
	return c.Check()
}

// FlowsRequest selects flows for the "flows" call.
type FlowsRequest struct {
	VIP     string `json:"vip,omitempty"`    // address:port or address
	Backend int64  `json:"backend"`          // ID, or -1
	Client  string `json:"client,omitempty"` // address
	Offset  int    `json:"offset,omitempty"` // matches to skip
	Limit   int    `json:"limit,omitempty"`  // records to return, at most MaxFlowPage
}

// MaxFlowPage bounds one page of a flow dump.
const MaxFlowPage = 10000

// FlowsReply is a page of flows.
type FlowsReply struct {
	Flows   []dataplane.FlowRecord `json:"flows"`
	Matched int                    `json:"matched"` // matches across all workers
}

func (l *controlLink) call(ctx context.Context, method string, body []byte) ([]byte, error) {
	switch method {
	case "report":
		s, err := l.f.Summary(ctx)
		if err != nil {
			return nil, err
		}
		return json.Marshal(s.Report())
	case "flows":
		var req FlowsRequest
		if err := json.Unmarshal(body, &req); err != nil {
			return nil, fmt.Errorf("flows: %w", err)
		}
		return l.f.flows(ctx, req)
	case "reload":
		var req ReloadRequest
		if err := json.Unmarshal(body, &req); err != nil {
			return nil, fmt.Errorf("reload: %w", err)
		}
		c, err := config.Parse([]byte(req.Config))
		if err != nil {
			return nil, err
		}
		if err := ApplyOverrides(c, req.States, req.Weights); err != nil {
			return nil, err
		}
		return nil, l.f.Reload(ctx, c)
	}
	return nil, fmt.Errorf("unknown call %q", method)
}

// flows dumps the workers' flows as a FlowsReply.
func (f *Forwarder) flows(ctx context.Context, req FlowsRequest) ([]byte, error) {
	filter := dataplane.FlowFilter{Backend: req.Backend}
	if req.VIP != "" {
		if ap, err := netip.ParseAddrPort(req.VIP); err == nil {
			filter.VIP = ap
		} else if a, err := netip.ParseAddr(req.VIP); err == nil {
			filter.VIP = netip.AddrPortFrom(a, 0)
		} else {
			return nil, fmt.Errorf("flows: vip %q: want address or address:port", req.VIP)
		}
	}
	if req.Client != "" {
		a, err := netip.ParseAddr(req.Client)
		if err != nil {
			return nil, fmt.Errorf("flows: client %q: not an address", req.Client)
		}
		filter.Client = a
	}
	limit := req.Limit
	if limit <= 0 || limit > MaxFlowPage {
		limit = MaxFlowPage
	}
	var reply FlowsReply
	skip := req.Offset
	for _, w := range f.workers {
		err := w.Do(ctx, func(p *dataplane.Pipeline) {
			var n int
			reply.Flows, n = p.DumpFlows(w.Now(), filter, skip, limit, reply.Flows)
			skip = max(0, skip-n)
			reply.Matched += n
		})
		if err != nil {
			return nil, err
		}
	}
	return json.Marshal(reply)
}
