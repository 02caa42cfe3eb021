package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tetherlb/tether/api/unit"
	"github.com/tetherlb/tether/config"
	"github.com/tetherlb/tether/dataplane/channel"
)

// fwdLink is the control process's connection to the forwarder, with
// calls matched to their returns by sequence number.
type fwdLink struct {
	conn    *channel.Conn
	hello   channel.Hello
	seq     atomic.Uint32
	mu      sync.Mutex
	pending map[uint32]chan reply
	acks    map[uint32]chan struct{}
	asm     channel.Assembler
	closed  chan struct{}
}

type reply struct {
	body []byte
	err  error
}

func newFwdLink(conn *channel.Conn, hello channel.Hello) *fwdLink {
	return &fwdLink{conn: conn, hello: hello, pending: map[uint32]chan reply{}, acks: map[uint32]chan struct{}{}, closed: make(chan struct{})}
}

// callTimeout bounds how long a call waits for the forwarder.
const callTimeout = 10 * time.Second

// call sends a call and waits for its return; the result is decoded
// into out when out is not nil.
func (l *fwdLink) call(ctx context.Context, method string, in, out any) error {
	body, err := json.Marshal(in)
	if err != nil {
		return err
	}
	return l.callRaw(ctx, method, body, out)
}

// callRaw is call with the request already encoded.
func (l *fwdLink) callRaw(ctx context.Context, method string, body []byte, out any) error {
	seq := l.seq.Add(1)
	ch := make(chan reply, 1)
	l.mu.Lock()
	l.pending[seq] = ch
	l.mu.Unlock()
	defer func() {
		l.mu.Lock()
		delete(l.pending, seq)
		l.mu.Unlock()
	}()
	for _, m := range channel.AppendCalls(nil, seq, method, body) {
		if err := l.conn.Send(m); err != nil {
			return err
		}
	}
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	select {
	case r := <-ch:
		if r.err != nil {
			return r.err
		}
		if out != nil {
			return json.Unmarshal(r.body, out)
		}
		return nil
	case <-l.closed:
		return errors.New("forwarder disconnected")
	case <-ctx.Done():
		return fmt.Errorf("forwarder did not answer %s: %w", method, ctx.Err())
	}
}

// reload has the forwarder run cfg (unit.CallReload) and returns its
// IDs for it.
func (l *fwdLink) reload(ctx context.Context, cfg *config.Config) (unit.ReloadReply, error) {
	body, err := config.Encode(cfg)
	if err != nil {
		return unit.ReloadReply{}, err
	}
	var reply unit.ReloadReply
	err = l.callRaw(ctx, unit.CallReload, body, &reply)
	return reply, err
}

// barrier waits until the forwarder has applied everything sent before.
func (l *fwdLink) barrier(ctx context.Context) error {
	seq := l.seq.Add(1)
	ch := make(chan struct{})
	l.mu.Lock()
	l.acks[seq] = ch
	l.mu.Unlock()
	if err := l.conn.Send(channel.AppendBarrier(nil, seq)); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	select {
	case <-ch:
		return nil
	case <-l.closed:
		return errors.New("forwarder disconnected")
	case <-ctx.Done():
		return ctx.Err()
	}
}

// route sends a route without waiting.
func (l *fwdLink) route(r *channel.Route) error {
	return l.conn.Send(channel.AppendRoute(nil, l.seq.Add(1), r))
}

// returned delivers a return chunk to its call.
func (l *fwdLink) returned(seq uint32, p []byte) error {
	r, err := channel.DecodeReturn(p)
	if err != nil {
		return err
	}
	body, done, err := l.asm.Add(seq, r.Chunk, r.Chunks, r.Body)
	if err != nil || !done {
		return err
	}
	l.mu.Lock()
	ch := l.pending[seq]
	l.mu.Unlock()
	if ch == nil {
		return nil // the caller gave up
	}
	var rerr error
	if r.Err != "" {
		rerr = errors.New(r.Err)
	}
	ch <- reply{body: body, err: rerr}
	return nil
}

func (l *fwdLink) acked(seq uint32) {
	l.mu.Lock()
	ch := l.acks[seq]
	delete(l.acks, seq)
	l.mu.Unlock()
	if ch != nil {
		close(ch)
	}
}
