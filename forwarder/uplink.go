package forwarder

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tetherlb/tether/api/unit"
	"github.com/tetherlb/tether/config"
	"github.com/tetherlb/tether/dataplane"
	"github.com/tetherlb/tether/dataplane/channel"
)

// The uplink: the forwarder's end of the channel to the control process.
// The forwarder works alone when no control process is connected: punt
// VIPs fall back to Maglev and nothing is reported. It keeps dialling the
// control socket, so a control process that restarts finds it again;
// then workers punt and report, and the control process re-reads the
// flows with a flows call.

const (
	redialEvery  = 300 * time.Millisecond
	collectEvery = 10 * time.Millisecond
)

// UplinkStats count the uplink's work.
type UplinkStats struct {
	Connected bool   `json:"connected"`
	Connects  uint64 `json:"connects"`
	// Punts and Events count what the uplink collected and sent; the
	// workers send most themselves (dataplane.Stats: PuntsSentDirect,
	// EventsSentDirect).
	Punts       uint64 `json:"punts"`
	Events      uint64 `json:"events"`
	EventsLost  uint64 `json:"events_lost"`
	Routes      uint64 `json:"routes"`
	RouteErrors uint64 `json:"route_errors"`
	// AnswersLate counts the acceptor's answers that found no frame
	// waiting (it waited its time out, or the worker restarted).
	AnswersLate uint64 `json:"answers_late"`
	// SYNKeys counts the sets of l7 SYN cookie keys given to the
	// workers.
	SYNKeys     uint64 `json:"syn_keys"`
	BadMessages uint64 `json:"bad_messages"`
}

type uplink struct {
	f     *Forwarder
	path  string
	bell  chan struct{}
	steer *dataplane.Steerer
	seq   atomic.Uint32
	mu    sync.Mutex
	stats UplinkStats
	// heldKeys is the payload of the last SYN keys message the workers
	// took (CallSYNKeys). Guarded by mu.
	heldKeys []byte
	// busy is set while the send loop holds flow events it has taken
	// from a worker and not sent yet: workers must not send theirs
	// directly meanwhile, or they would overtake them.
	busy atomic.Bool
}

// directSender is a worker's way to send its flow events itself (see
// dataplane.DirectSender), on the connection the uplink serves.
type directSender struct {
	send func([]byte) bool
	seq  *atomic.Uint32
}

func (d *directSender) TrySend(msg []byte) bool { return d.send(msg) }
func (d *directSender) Seq() uint32             { return d.seq.Add(1) }

// setDirect gives the workers a direct sender on conn, or takes it away
// (nil): always before conn closes, so that no worker sends on a
// descriptor that may be another file's by then.
func (l *uplink) setDirect(ctx context.Context, conn *channel.Conn) {
	var d dataplane.DirectSender
	if conn != nil {
		l.busy.Store(false) // a send loop that failed may have left it set
		send, err := conn.TrySender()
		if err != nil {
			l.f.log.Warn().Err(err).Msg("workers cannot send flow events themselves; the uplink sends them")
			return
		}
		d = &directSender{send: send, seq: &l.seq}
	}
	for _, w := range l.f.workers {
		_ = w.Do(ctx, func(p *dataplane.Pipeline) { p.SetDirect(d, &l.busy) })
	}
}

// ConnectControl makes the forwarder connect to the control process's
// socket at path when it runs. Call it before Run.
func (f *Forwarder) ConnectControl(path string) {
	l := &uplink{f: f, path: path, bell: make(chan struct{}, 1), steer: dataplane.NewSteerer(len(f.workers))}
	for _, w := range f.workers {
		w.Pipeline().EnableOutbox(l.bell)
		w.Pipeline().SetControlConnected(false)
	}
	f.uplink = l
}

// UplinkStats returns the uplink's counters.
func (f *Forwarder) UplinkStats() UplinkStats {
	if f.uplink == nil {
		return UplinkStats{}
	}
	f.uplink.mu.Lock()
	defer f.uplink.mu.Unlock()
	return f.uplink.stats
}

func (l *uplink) count(fn func(s *UplinkStats)) {
	l.mu.Lock()
	fn(&l.stats)
	l.mu.Unlock()
}

// run dials and serves until ctx ends.
func (l *uplink) run(ctx context.Context) {
	for ctx.Err() == nil {
		conn, err := channel.Dial(l.path)
		if err == nil {
			l.count(func(s *UplinkStats) { s.Connected, s.Connects = true, s.Connects+1 })
			l.f.log.Info().Str("socket", l.path).Msg("control connected")
			err = l.serve(ctx, conn)
			conn.Close()
			l.count(func(s *UplinkStats) { s.Connected = false })
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

func (l *uplink) setConnected(ctx context.Context, up bool) {
	for _, w := range l.f.workers {
		_ = w.Do(ctx, func(p *dataplane.Pipeline) { p.SetControlConnected(up) })
	}
}

func (l *uplink) serve(ctx context.Context, conn *channel.Conn) error {
	// Workers punt from here on; what they punt before the send loop
	// starts waits in their outboxes. Connecting them before the hello
	// goes out means a control process that has the hello can count on
	// punts.
	l.setConnected(ctx, true)
	hello := channel.Hello{Role: channel.RoleForwarder, PID: uint32(os.Getpid()), Workers: uint8(len(l.f.workers)),
		Generation: l.f.generation(), Name: l.f.unitName()}
	if err := conn.Send(channel.AppendHello(nil, l.seq.Add(1), &hello)); err != nil {
		return err
	}
	// The workers' direct senders go before the connection closes
	// (the caller closes it after serve returns): with a context of
	// their own, since ctx may be ending.
	l.setDirect(ctx, conn)
	defer func() {
		stop, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		l.setDirect(stop, nil)
	}()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	calls := make(chan callMsg, maxQueuedCalls)
	callsDone := make(chan struct{})
	go func() { l.callLoop(ctx, conn, calls); close(callsDone) }()
	defer func() { <-callsDone }()
	sendErr := make(chan error, 1)
	go func() { sendErr <- l.sendLoop(ctx, conn) }()
	recvErr := make(chan error, 1)
	go func() { recvErr <- l.recvLoop(ctx, conn, calls) }()
	select {
	case err := <-sendErr:
		conn.Close()
		<-recvErr
		cancel()
		return err
	case err := <-recvErr:
		cancel()
		<-sendErr
		return err
	}
}

// callMsg is a call the receive loop has assembled.
type callMsg struct {
	seq    uint32
	method string
	body   []byte
}

// maxQueuedCalls bounds the calls waiting for the call loop; more are
// refused at once ("busy") rather than queued without end.
const maxQueuedCalls = 64

// callLoop answers calls one at a time, apart from the receive loop: a
// long call (a flow dump of a large table) must not hold up the routes
// and barriers behind it, which punted packets are waiting for.
func (l *uplink) callLoop(ctx context.Context, conn *channel.Conn, calls <-chan callMsg) {
	for {
		select {
		case <-ctx.Done():
			return
		case c := <-calls:
			out, callErr := l.call(ctx, c.method, c.body)
			text := ""
			if callErr != nil {
				text = callErr.Error()
			}
			for _, m := range channel.AppendReturns(nil, c.seq, text, out) {
				if err := conn.Send(m); err != nil {
					return
				}
			}
		}
	}
}

// sendLoop collects the workers' outboxes when they ring (or every
// collectEvery, for removals found by aging) and sends them.
func (l *uplink) sendLoop(ctx context.Context, conn *channel.Conn) error {
	tick := time.NewTicker(collectEvery)
	defer tick.Stop()
	var events []channel.FlowEvent
	var msgs [][]byte
	gens := make([]uint64, len(l.f.workers))
	waiting := make([]bool, len(l.f.workers))
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-l.bell:
		case <-tick.C:
		}
		events, msgs = events[:0], msgs[:0]
		var lost uint64
		for i, w := range l.f.workers {
			_ = w.Do(ctx, func(p *dataplane.Pipeline) {
				defer func() { gens[i], waiting[i] = p.TakeSendWait() }()
				p.TakeOutbox(func(evs []channel.FlowEvent, punts []channel.Punt, n uint64) {
					if len(evs) > 0 || len(punts) > 0 {
						l.busy.Store(true) // until they are sent
					}
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
		if lost > 0 {
			// The inventory is no longer exact: have it read again.
			msgs = append(msgs, channel.AppendLost(nil, l.seq.Add(1), lost))
		}
		punts, losts := 0, 0
		for _, m := range msgs {
			switch channel.Type(m[2]) {
			case channel.TPunt:
				punts++
			case channel.TLost:
				losts++
			}
			if err := conn.Send(m); err != nil {
				return err
			}
		}
		l.busy.Store(false)
		// The flows' events are out: their first packets may follow.
		for i, w := range l.f.workers {
			if waiting[i] {
				g := gens[i]
				if err := w.Post(ctx, func(p *dataplane.Pipeline) { p.EventsSent(g) }); err != nil {
					return err
				}
			}
		}
		if len(msgs) > 0 || lost > 0 {
			l.count(func(s *UplinkStats) {
				s.Punts += uint64(punts)
				s.Events += uint64(len(msgs) - punts - losts)
				s.EventsLost += lost
			})
		}
	}
}

func (l *uplink) recvLoop(ctx context.Context, conn *channel.Conn, calls chan<- callMsg) error {
	var asm channel.Assembler
	for ctx.Err() == nil {
		msg, err := conn.Recv()
		if err != nil {
			return err
		}
		h, p, err := channel.ParseHeader(msg)
		if err == nil {
			err = l.handle(ctx, conn, &asm, calls, h, p)
		}
		if err != nil {
			// A malformed message is counted and logged; the link stays.
			l.count(func(s *UplinkStats) { s.BadMessages++ })
			l.f.log.Warn().Err(err).Msg("control message refused")
		}
	}
	return ctx.Err()
}

func (l *uplink) handle(ctx context.Context, conn *channel.Conn, asm *channel.Assembler, calls chan<- callMsg, h channel.Header, p []byte) error {
	switch h.Type {
	case channel.TRoute:
		r, err := channel.DecodeRoute(p)
		if err != nil {
			return err
		}
		return l.route(ctx, &r)
	case channel.TAnswer:
		a, err := channel.DecodeAnswer(p)
		if err != nil {
			return err
		}
		return l.answer(ctx, &a)
	case channel.TSYNKeys:
		keys, err := channel.DecodeSYNKeys(p)
		if err != nil {
			return err
		}
		if err := l.synKeys(ctx, keys); err != nil {
			return err
		}
		l.mu.Lock()
		l.heldKeys = append(l.heldKeys[:0], p...)
		l.mu.Unlock()
		return nil
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
		select {
		case calls <- callMsg{seq: h.Seq, method: c.Method, body: body}:
			return nil
		default:
			text := fmt.Sprintf("forwarder busy: %d calls waiting", maxQueuedCalls)
			for _, m := range channel.AppendReturns(nil, h.Seq, text, nil) {
				if err := conn.Send(m); err != nil {
					return err
				}
			}
			return nil
		}
	case channel.THello:
		_, err := channel.DecodeHello(p)
		return err
	}
	return fmt.Errorf("unexpected %s message", h.Type)
}

func (l *uplink) route(ctx context.Context, r *channel.Route) error {
	w := l.f.workers[l.routeWorker(r)]
	route := *r
	return w.Post(ctx, func(p *dataplane.Pipeline) { _ = l.applyRoute(p, w, &route) })
}

// routeWorker is the index of the worker that applies r.
func (l *uplink) routeWorker(r *channel.Route) int {
	if wi := int(r.Worker); wi < len(l.f.workers) {
		return wi
	}
	return l.steer.KeyWorker(l.f.currentSnapshot(), &r.Key)
}

// applyRoute applies r on w's own thread.
func (l *uplink) applyRoute(p *dataplane.Pipeline, w *dataplane.Worker, r *channel.Route) error {
	var err error
	switch r.Op {
	case channel.RouteAdd:
		err = p.AddRoute(r, w.Now())
	case channel.RouteRelease:
		p.ReleaseHeld(&r.Key)
	case channel.RouteRefuse:
		p.RefuseRoute(&r.Key, w.Now())
	default:
		p.DeleteRoute(&r.Key)
	}
	l.count(func(s *UplinkStats) {
		s.Routes++
		if err != nil {
			s.RouteErrors++
		}
	})
	if err != nil {
		l.f.log.Warn().Err(err).Msg("route refused")
	}
	return err
}

// answer sends the acceptor's packet in place of the frame its punt
// held, on the worker that holds it, after the route that came with it
// (on its own worker first when that is another).
func (l *uplink) answer(ctx context.Context, a *channel.Answer) error {
	if int(a.Worker) >= len(l.f.workers) {
		return fmt.Errorf("answer for worker %d of %d", a.Worker, len(l.f.workers))
	}
	route, withRoute := a.Route, a.Route.Op != 0
	if withRoute && l.routeWorker(&route) != int(a.Worker) {
		if err := l.route(ctx, &route); err != nil {
			return err
		}
		withRoute = false
	}
	w := l.f.workers[a.Worker]
	id, pkt := a.ID, append([]byte(nil), a.Packet...) // a aliases the receive buffer
	// A route without a packet: the frame goes on along the route, when
	// the route is this worker's (a frame of another worker's flow
	// would only come back here).
	forward := a.Route.Op == channel.RouteAdd && len(pkt) == 0 && withRoute
	return w.Post(ctx, func(p *dataplane.Pipeline) {
		if withRoute && l.applyRoute(p, w, &route) != nil {
			forward = false // the frame would come back without a route: it is dropped
		}
		var answered bool
		if forward {
			answered = p.Forward(id)
		} else {
			answered = p.Answer(id, pkt)
		}
		if !answered {
			l.count(func(s *UplinkStats) { s.AnswersLate++ })
		}
	})
}

// synKeys gives every worker its own copy of the l7 VIPs' SYN keys: the
// ciphers are made here, so that the workers only swap a map.
func (l *uplink) synKeys(ctx context.Context, keys []channel.SYNKey) error {
	for _, w := range l.f.workers {
		k, err := dataplane.NewSYNKeys(keys)
		if err != nil {
			return err
		}
		if err := w.Post(ctx, func(p *dataplane.Pipeline) { p.SetSYNKeys(k) }); err != nil {
			return err
		}
	}
	l.count(func(s *UplinkStats) { s.SYNKeys++ })
	return nil
}

func (l *uplink) call(ctx context.Context, method string, body []byte) ([]byte, error) {
	switch method {
	case unit.CallReport:
		s, err := l.f.Summary(ctx)
		if err != nil {
			return nil, err
		}
		return json.Marshal(s.Report())
	case unit.CallFlows:
		var req unit.FlowsRequest
		if err := json.Unmarshal(body, &req); err != nil {
			return nil, fmt.Errorf("flows: %w", err)
		}
		return l.f.flows(ctx, req)
	case unit.CallReload:
		c, err := config.Decode(body)
		if err != nil {
			return nil, fmt.Errorf("reload: %w", err)
		}
		reply, err := l.f.Reload(ctx, c)
		if err != nil {
			return nil, err
		}
		return json.Marshal(reply)
	case unit.CallExplain:
		var req unit.ExplainRequest
		if err := json.Unmarshal(body, &req); err != nil {
			return nil, fmt.Errorf("explain: %w", err)
		}
		return l.f.explain(ctx, req)
	case unit.CallSYNKeys:
		l.mu.Lock()
		defer l.mu.Unlock()
		return json.Marshal(unit.SYNKeysReply{Keys: l.heldKeys})
	}
	return nil, fmt.Errorf("unknown call %q", method)
}

// flows dumps the workers' flows as a FlowsReply.
func (f *Forwarder) flows(ctx context.Context, req unit.FlowsRequest) ([]byte, error) {
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
	if limit <= 0 || limit > unit.MaxFlowPage {
		limit = unit.MaxFlowPage
	}
	if req.Cursor != nil {
		reply, err := f.walkFlows(ctx, filter, limit, *req.Cursor)
		if err != nil {
			return nil, err
		}
		return json.Marshal(reply)
	}
	var reply unit.FlowsReply
	skip := req.Offset
	for _, w := range f.workers {
		d := dataplane.FlowDump{Filter: filter, Skip: skip, Limit: limit - len(reply.Flows)}
		if err := f.dump(ctx, w, &d); err != nil {
			return nil, err
		}
		reply.Flows = append(reply.Flows, d.Records...)
		reply.Matched += d.Matched
		skip = max(0, skip-d.Matched)
	}
	return json.Marshal(reply)
}

// walkFlows returns one page of a walk through the workers' flows from
// cursor c (unit.FlowsRequest.Cursor).
func (f *Forwarder) walkFlows(ctx context.Context, filter dataplane.FlowFilter, limit int, c unit.FlowCursor) (unit.FlowsReply, error) {
	var reply unit.FlowsReply
	if c.Worker < 0 || c.Worker >= len(f.workers) || c.Slot < 0 {
		return reply, fmt.Errorf("flows: cursor %+v: no such worker or slot", c)
	}
	for wi := c.Worker; wi < len(f.workers); wi++ {
		if len(reply.Flows) >= limit {
			reply.Next = &unit.FlowCursor{Worker: wi}
			return reply, nil
		}
		w := f.workers[wi]
		d := dataplane.FlowDump{Filter: filter, Limit: limit - len(reply.Flows), Walk: true}
		if wi == c.Worker {
			d.Resume(c.V6, c.Slot)
		}
		for !d.Done() && !d.Full() {
			if err := w.Do(ctx, func(p *dataplane.Pipeline) { p.DumpStep(w.Now(), &d) }); err != nil {
				return reply, err
			}
		}
		reply.Flows = append(reply.Flows, d.Records...)
		reply.Matched += d.Matched
		if !d.Done() {
			v6, slot := d.Position()
			reply.Next = &unit.FlowCursor{Worker: wi, V6: v6, Slot: slot}
			return reply, nil
		}
	}
	return reply, nil
}

// explain answers CallExplain: the flow the workers hold for the request's
// tuple, if any, and what the running snapshot says.
func (f *Forwarder) explain(ctx context.Context, req unit.ExplainRequest) ([]byte, error) {
	if req.Proto != 6 && req.Proto != 17 {
		return nil, fmt.Errorf("explain: protocol %d: want 6 (tcp) or 17 (udp)", req.Proto)
	}
	if !req.Src.IsValid() || !req.Dst.IsValid() {
		return nil, errors.New("explain: src and dst must be address:port")
	}
	filter := dataplane.FlowFilter{VIP: req.Dst, Client: req.Src.Addr(), Backend: -1}
	var existing *unit.FlowRecord
	for _, w := range f.workers {
		d := dataplane.FlowDump{Filter: filter, Limit: unit.MaxFlowPage}
		if err := f.dump(ctx, w, &d); err != nil {
			return nil, err
		}
		for i := range d.Records {
			if d.Records[i].Key.SrcPort == req.Src.Port() && d.Records[i].Key.Proto == req.Proto {
				existing = &d.Records[i]
			}
		}
	}
	return json.Marshal(f.currentSnapshot().Explain(req, existing))
}

// unitName is the running configuration's unit.name.
func (f *Forwarder) unitName() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.cfg.Unit.Name
}

// dump walks worker w's flows for d, one bounded step per command, so
// the worker forwards between steps however large its table.
func (f *Forwarder) dump(ctx context.Context, w *dataplane.Worker, d *dataplane.FlowDump) error {
	for !d.Done() {
		if err := w.Do(ctx, func(p *dataplane.Pipeline) { p.DumpStep(w.Now(), d) }); err != nil {
			return err
		}
	}
	return nil
}
