package atoms

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"

	"github.com/tetherlb/tether/api/atompb"
	"github.com/tetherlb/tether/api/unit"
)

// Reconnection pacing: doubling from backoffFirst to backoffMax.
const (
	backoffFirst = 100 * time.Millisecond
	backoffMax   = 5 * time.Second
	// helloTimeout bounds a stream's hello and a peer's first answer.
	helloTimeout = 5 * time.Second
	// lagWindow is how many batches' lags a peer keeps.
	lagWindow = 1024
)

// op is an add or a delete waiting to go to a peer.
type op struct {
	add  bool
	atom *atompb.Atom
	at   time.Time // when it was made, for the lag
}

// call is a query or a pull waiting for its answer.
type call struct {
	p       *peer
	id      uint64
	answers chan<- *atompb.Return // queries: the one answer, or nil if the stream broke
	pull    bool
}

// peer is this unit's stream to another unit: it sends adds, deletes,
// queries and its pull, and takes the answers.
type peer struct {
	m      *Manager
	member Member
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}
	wake   chan struct{}

	mu        sync.Mutex
	queue     []op
	dirty     bool // ops were dropped: send the whole share
	queries   []*atompb.Query
	calls     map[uint64]*call
	nextID    uint64
	inflight  map[uint64]batch
	seq       uint64
	connected bool
	pulled    bool
	sent      uint64
	acked     uint64
	dropped   uint64
	resyncs   uint64
	lags      []time.Duration
	lagNext   int
	lastErr   string
}

// batch is an add or delete message in flight.
type batch struct {
	at time.Time // its oldest op's
	n  int
}

func (m *Manager) startPeer(mem Member) *peer {
	ctx, cancel := context.WithCancel(context.Background())
	p := &peer{m: m, member: mem, ctx: ctx, cancel: cancel, done: make(chan struct{}), wake: make(chan struct{}, 1),
		calls: map[uint64]*call{}, inflight: map[uint64]batch{}}
	go p.run()
	return p
}

// close stops the peer's stream and waits for it.
func (p *peer) close() {
	p.cancel()
	<-p.done
}

func (p *peer) ring() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// enqueue queues an add or delete; callers hold the manager's lock.
func (p *peer) enqueue(o op) {
	p.mu.Lock()
	if len(p.queue) >= p.m.opts.MaxQueue {
		p.dropped++
		p.dirty = true
	} else {
		p.queue = append(p.queue, o)
	}
	p.mu.Unlock()
	p.ring()
}

// maxWaitingQueries bounds the queries that wait for a stream to come
// up.
const maxWaitingQueries = 4096

// query sends a query for key; its answer (or nil if the stream breaks)
// goes to answers. A query to a peer whose stream is not up waits for
// it (up is false); it returns nil when too many wait already.
func (p *peer) query(key string, answers chan<- *atompb.Return) (c *call, up bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.connected && len(p.queries) >= maxWaitingQueries {
		return nil, false
	}
	p.nextID++
	c = &call{p: p, id: p.nextID, answers: answers}
	p.calls[c.id] = c
	p.queries = append(p.queries, &atompb.Query{Id: c.id, Keys: []string{key}})
	p.ring()
	return c, p.connected
}

// forget drops a call whose caller stopped waiting.
func (p *peer) forget(c *call) {
	p.mu.Lock()
	delete(p.calls, c.id)
	p.mu.Unlock()
}

func (p *peer) pulledOK() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.pulled
}

func (p *peer) run() {
	defer close(p.done)
	wait := backoffFirst
	for p.ctx.Err() == nil {
		began := time.Now()
		err := p.session()
		p.mu.Lock()
		p.connected = false
		if err != nil && p.ctx.Err() == nil {
			p.lastErr = err.Error()
		}
		for id, c := range p.calls {
			if !c.pull {
				c.answers <- nil
			}
			delete(p.calls, id)
		}
		p.queries = nil
		p.inflight = map[uint64]batch{}
		p.mu.Unlock()
		if p.ctx.Err() != nil {
			return
		}
		if err != nil {
			p.m.log.Debug().Err(err).Str("peer", p.member.Name).Msg("atom stream down")
		}
		if time.Since(began) > backoffMax {
			wait = backoffFirst
		}
		select {
		case <-p.ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, backoffMax)
	}
}

// session runs one stream until it breaks.
func (p *peer) session() error {
	cfg := p.m.opts.ClientTLS.Clone()
	cfg.ServerName = p.member.Name
	cc, err := grpc.NewClient(p.member.Addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(atompb.MaxMessage), grpc.MaxCallSendMsgSize(atompb.MaxMessage)),
		grpc.WithStaticStreamWindowSize(atompb.Window), grpc.WithStaticConnWindowSize(atompb.Window),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 10 * time.Second, Timeout: 5 * time.Second}))
	if err != nil {
		return fmt.Errorf("dial %s: %w", p.member.Addr, err)
	}
	defer cc.Close()
	ctx, cancel := context.WithCancel(p.ctx)
	defer cancel()
	st, err := atompb.NewAtomsClient(cc).Exchange(ctx)
	if err != nil {
		return fmt.Errorf("stream to %s: %w", p.member.Addr, err)
	}
	send := func(body any) error {
		r := &atompb.Request{Version: atompb.Version}
		switch b := body.(type) {
		case *atompb.Hello:
			r.Body = &atompb.Request_Hello{Hello: b}
		case *atompb.Add:
			r.Body = &atompb.Request_Add{Add: b}
		case *atompb.Delete:
			r.Body = &atompb.Request_Delete{Delete: b}
		case *atompb.Query:
			r.Body = &atompb.Request_Query{Query: b}
		case *atompb.Pull:
			r.Body = &atompb.Request_Pull{Pull: b}
		}
		return st.Send(r)
	}
	if err := send(&atompb.Hello{Unit: p.m.opts.Self.Name, Boot: p.m.opts.Self.Boot}); err != nil {
		return err
	}
	// Until a pull from this life of the peer has completed, every
	// stream starts with one (the peer may have refused the last one:
	// it did not know this unit yet). Once pulled, a new stream starts
	// with this unit's share instead, sent again since the last stream
	// may have lost some.
	p.mu.Lock()
	first := !p.pulled
	p.nextID++
	pullID := p.nextID
	if first {
		p.calls[pullID] = &call{p: p, id: pullID, pull: true}
	}
	p.mu.Unlock()
	if first {
		if err := send(&atompb.Pull{Id: pullID}); err != nil {
			return err
		}
	} else {
		p.mu.Lock()
		p.dirty = true
		p.mu.Unlock()
	}
	p.mu.Lock()
	p.connected = true
	p.lastErr = ""
	p.mu.Unlock()

	recvErr := make(chan error, 1)
	go func() { recvErr <- p.receive(st) }()
	for {
		if err := p.flush(send); err != nil {
			return err
		}
		select {
		case <-p.ctx.Done():
			return nil
		case err := <-recvErr:
			return err
		case <-p.wake:
		}
	}
}

// flush sends what waits: the whole share when ops were dropped (or the
// stream is new), else the queued ops in order, in batches; then
// queries.
func (p *peer) flush(send func(any) error) error {
	for {
		p.m.mu.Lock()
		p.mu.Lock()
		var ops []op
		if p.dirty {
			share := p.m.shareLocked(p.member.Name)
			now := p.m.now()
			p.queue = p.queue[:0]
			p.dirty = false
			p.resyncs++
			for _, a := range share {
				ops = append(ops, op{add: true, atom: a, at: now})
			}
		} else {
			n := min(len(p.queue), 4*atompb.MaxBatch)
			ops = slices.Clone(p.queue[:n])
			p.queue = slices.Delete(p.queue, 0, n)
		}
		queries := p.queries
		p.queries = nil
		p.mu.Unlock()
		p.m.mu.Unlock()
		if len(ops) == 0 && len(queries) == 0 {
			return nil
		}
		for len(ops) > 0 {
			n := 1
			for n < len(ops) && n < atompb.MaxBatch && ops[n].add == ops[0].add {
				n++
			}
			atoms := make([]*atompb.Atom, n)
			for i := range n {
				atoms[i] = ops[i].atom
			}
			p.mu.Lock()
			p.seq++
			seq := p.seq
			p.inflight[seq] = batch{at: ops[0].at, n: n}
			p.sent += uint64(n)
			p.mu.Unlock()
			var err error
			if ops[0].add {
				err = send(&atompb.Add{Seq: seq, Atoms: atoms})
			} else {
				err = send(&atompb.Delete{Seq: seq, Atoms: atoms})
			}
			if err != nil {
				return err
			}
			ops = ops[n:]
		}
		for _, q := range queries {
			if err := send(q); err != nil {
				return err
			}
		}
	}
}

// receive takes the peer's answers until the stream ends.
func (p *peer) receive(st grpc.BidiStreamingClient[atompb.Request, atompb.Reply]) error {
	for {
		r, err := st.Recv()
		if err != nil {
			return err
		}
		if err := atompb.ValidateReply(r); err != nil {
			return fmt.Errorf("from %s: %w", p.member.Name, err)
		}
		switch b := r.GetBody().(type) {
		case *atompb.Reply_Ack:
			p.mu.Lock()
			if bt, ok := p.inflight[b.Ack.GetSeq()]; ok {
				delete(p.inflight, b.Ack.GetSeq())
				p.acked += uint64(bt.n)
				lag := p.m.now().Sub(bt.at)
				if len(p.lags) < lagWindow {
					p.lags = append(p.lags, lag)
				} else {
					p.lags[p.lagNext] = lag
					p.lagNext = (p.lagNext + 1) % lagWindow
				}
			}
			p.mu.Unlock()
		case *atompb.Reply_Return:
			ret := b.Return
			p.mu.Lock()
			c := p.calls[ret.GetId()]
			if c != nil && (!c.pull || ret.GetLast()) {
				delete(p.calls, ret.GetId())
			}
			p.mu.Unlock()
			switch {
			case c == nil:
				// A query its caller stopped waiting for.
			case c.pull:
				p.m.mu.Lock()
				p.m.applyLocked(ret.GetAtoms())
				p.m.mu.Unlock()
				if ret.GetLast() {
					p.mu.Lock()
					p.pulled = true
					p.mu.Unlock()
				}
			default:
				c.answers <- ret
			}
		}
	}
}

// view reports the stream.
func (p *peer) view() unit.AtomPeer {
	p.mu.Lock()
	defer p.mu.Unlock()
	v := unit.AtomPeer{Name: p.member.Name, Address: p.member.Addr, Boot: p.member.Boot, Connected: p.connected,
		Pulled: p.pulled, Queued: len(p.queue), Sent: p.sent, Acked: p.acked, Dropped: p.dropped, Resyncs: p.resyncs,
		Error: p.lastErr}
	if len(p.lags) > 0 {
		l := slices.Clone(p.lags)
		slices.Sort(l)
		ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
		v.LagMedian = ms(l[len(l)/2])
		v.LagP99 = ms(l[min(len(l)-1, len(l)*99/100)])
	}
	return v
}
