package agent

import (
	"context"
	"net/netip"
	"time"

	"google.golang.org/protobuf/proto"

	pb "github.com/tetherlb/tether/api/healthpb"
)

// handshake is a directive change in progress: the agent has set the
// target state and sent the row change; it now postulates the state
// until no unit disagrees, then records it as the current state (design
// S1, §7.3: the host decides the target, the units' caches decide what is
// current).
type handshake struct {
	state  pb.State
	cancel context.CancelFunc
	rounds int
	done   bool
}

// maxWindow caps the growing wait between postulate rounds.
const maxWindow = 5 * time.Second

// startHandshake begins (or restarts, for a newer directive) the
// handshake for an application.
func (a *Agent) startHandshake(ctx context.Context, name string, state pb.State) {
	hctx, cancel := context.WithCancel(context.Background())
	h := &handshake{state: state, cancel: cancel}
	a.mu.Lock()
	if old := a.shakes[name]; old != nil {
		old.cancel()
	}
	a.shakes[name] = h
	a.mu.Unlock()
	go func() {
		// The handshake outlives the API request that started it, but
		// not the agent.
		select {
		case <-ctx.Done():
		case <-hctx.Done():
		}
		cancel()
	}()
	go a.runHandshake(hctx, name, h)
}

func (a *Agent) runHandshake(ctx context.Context, name string, h *handshake) {
	wait := func(d time.Duration) bool {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
			return true
		}
	}
	if !wait(a.cfg.Directive.Delay) {
		return
	}
	window := a.cfg.Directive.Window
	for {
		row, ok := a.table.Row(name)
		if !ok || row.GetTarget() != h.state {
			return // removed, or superseded
		}
		seq := a.seq.Add(1)
		a.mu.Lock()
		a.wrongs[seq] = map[uint32]bool{}
		h.rounds++
		a.mu.Unlock()
		a.toUnits(&pb.Envelope{Body: &pb.Envelope_Postulate{Postulate: &pb.PostulateState{
			Host: a.host, App: row.GetApp(), State: h.state, Seq: seq}}}, false)
		if !wait(window) {
			return
		}
		a.mu.Lock()
		wrong := len(a.wrongs[seq])
		delete(a.wrongs, seq)
		a.mu.Unlock()
		if wrong == 0 {
			break
		}
		// A unit that disagrees missed the row change: send it again
		// (to everyone: cheaper than tracking which unit is which),
		// then postulate once more after a longer wait.
		a.log.Info().Str("application", name).Int("units_wrong", wrong).Msg("directive not yet followed: resending")
		a.toUnits(&pb.Envelope{Body: &pb.Envelope_RowChange{RowChange: &pb.RowChange{Host: a.host,
			Ops: []*pb.RowOp{{Op: pb.RowOp_OP_UPDATE, Row: proto.Clone(row).(*pb.Row)}}}}}, false)
		window = min(window*2, maxWindow)
	}
	changed, err := a.table.Update(name, func(r *pb.Row) {
		if r.Target == h.state {
			r.Current = h.state
		}
	})
	a.mu.Lock()
	h.done = true
	a.mu.Unlock()
	if err == nil && changed {
		a.log.Info().Str("application", name).Str("state", pb.StateName(h.state)).Int("rounds", h.rounds).Msg("directive confirmed: units follow it")
	}
}

// postulateWrong records a unit's disagreement with a postulate.
func (a *Agent) postulateWrong(src netip.AddrPort, w *pb.PostulateWrong) {
	if w.GetHost() != a.host {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if set := a.wrongs[w.GetSeq()]; set != nil {
		set[w.GetUnit()] = true
	}
}
