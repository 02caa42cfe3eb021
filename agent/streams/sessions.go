package streams

import (
	"context"
	"fmt"

	"github.com/tetherlb/tether/agent/sessions"
	pb "github.com/tetherlb/tether/api/hostpb"
)

// The host's sessions go to one unit, its primary: the first unit in
// the configuration whose stream is up and whose hello says it takes
// sessions (a unit of an earlier version would refuse them). Every
// stream to a unit that takes sessions begins with a resync: the whole
// table when the unit is the primary, an empty one when it is not (so a
// unit that was the primary before, or held sessions from an earlier
// boot of this agent, lets them go). After that the primary gets the
// table's changes, in batches, as they happen. When the primary's
// stream goes down, or an earlier unit's stream comes up, the new
// primary gets the whole table and the old one, if its stream is still
// up, an empty resync.
//
// Nothing is acknowledged: a resync on every stream is what makes up
// for whatever a broken stream lost. Changes made while no unit takes
// sessions are in the table and nowhere else, and go with the next
// resync; the table keeps no backlog for them (sessions.Table.Untrack).

// sessionPeer is the sender's view of one link.
type sessionPeer struct {
	// synced is the stream generation the unit was last resynced on, and
	// primary what it was resynced as.
	synced  uint64
	primary bool
}

// poke signals c without blocking (one signal waits at most).
func poke(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// sendSessions keeps the units in step with the session table until ctx
// ends.
func (s *Streams) sendSessions(ctx context.Context) {
	peers := make([]sessionPeer, len(s.links))
	for {
		s.syncSessions(peers)
		select {
		case <-ctx.Done():
			return
		case <-s.linked:
		case <-s.opts.Sessions.Changes():
		}
	}
}

// liveLink is a link's stream as the sender found it.
type liveLink struct {
	stream pb.HostStream_ConnectClient
	gen    uint64
	end    context.CancelCauseFunc
}

func (l *link) live() (liveLink, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return liveLink{l.stream, l.gen, l.end}, l.stream != nil && l.takesSessions
}

// syncSessions does one round: the primary first (a resync if it is new
// to the role or on a new stream, else the pending changes), then the
// other units' empty resyncs.
func (s *Streams) syncSessions(peers []sessionPeer) {
	t := s.opts.Sessions
	// One look at the links for the whole round: a stream that comes up
	// meanwhile is seen, in its role, in the next round.
	lives := make([]liveLink, len(s.links))
	oks := make([]bool, len(s.links))
	primary := -1
	for i, l := range s.links {
		lives[i], oks[i] = l.live()
		if oks[i] && primary < 0 {
			primary = i
		}
	}
	if primary < 0 {
		t.Untrack()
	} else {
		l, p, ll := s.links[primary], &peers[primary], lives[primary]
		if p.synced != ll.gen || !p.primary {
			p.synced = 0
			if err := l.sendResync(ll, t.Resync(), true); err != nil {
				l.endStream(ll, err)
			} else {
				p.synced, p.primary = ll.gen, true
			}
		} else {
			for {
				up, down := t.Drain(pb.MaxSessionBatch)
				if len(up)+len(down) == 0 {
					break
				}
				if err := l.sendChanges(ll, up, down); err != nil {
					// What was drained is lost with the stream; the next
					// one begins with a resync.
					p.synced = 0
					l.endStream(ll, err)
					break
				}
			}
		}
	}
	for i, l := range s.links {
		ll, p := lives[i], &peers[i]
		if i == primary || !oks[i] || (p.synced == ll.gen && !p.primary) {
			continue
		}
		p.synced = 0
		if err := l.sendResync(ll, nil, false); err != nil {
			l.endStream(ll, err)
			continue
		}
		p.synced, p.primary = ll.gen, false
	}
}

// endStream ends the stream a session send failed on, so that it is
// made again (and resynced) rather than half used.
func (l *link) endStream(ll liveLink, err error) {
	l.s.opts.Log.Warn().Str("unit", l.unit.Name).Err(err).Msg("sessions not sent: ending the stream")
	ll.end(fmt.Errorf("sessions: %w", err))
}

// sendResync sends all as a resync series; primary says whether the
// unit is to hold them (otherwise all is empty: the unit holds nothing
// from this host).
func (l *link) sendResync(ll liveLink, all []sessions.Session, primary bool) error {
	count := len(all)
	for first := true; first || len(all) > 0; first = false {
		n := min(len(all), pb.MaxSessionBatch)
		b := &pb.Sessions{Resync: true, ResyncBegin: first, ResyncEnd: n == len(all)}
		if b.ResyncEnd {
			b.Count = uint32(count)
		}
		for _, x := range all[:n] {
			b.Up = append(b.Up, ToPB(x))
		}
		if err := l.send(ll.stream, &pb.AgentMessage{Version: pb.Version, Body: &pb.AgentMessage_Sessions{Sessions: b}}); err != nil {
			return err
		}
		all = all[n:]
	}
	role := "standby"
	if primary {
		role = "primary"
	}
	l.set(func(st *Status) {
		st.Sessions = role
		st.SessionResyncs++
		st.SessionsSent += uint64(count)
	})
	return nil
}

// sendChanges sends one batch of changes to the primary.
func (l *link) sendChanges(ll liveLink, up, down []sessions.Session) error {
	b := &pb.Sessions{}
	for _, x := range up {
		b.Up = append(b.Up, ToPB(x))
	}
	for _, x := range down {
		b.Down = append(b.Down, ToPB(x))
	}
	if err := l.send(ll.stream, &pb.AgentMessage{Version: pb.Version, Body: &pb.AgentMessage_Sessions{Sessions: b}}); err != nil {
		return err
	}
	l.set(func(st *Status) { st.SessionsSent += uint64(len(up) + len(down)) })
	return nil
}

// ToPB is a session as the stream carries it.
func ToPB(s sessions.Session) *pb.Session {
	out := &pb.Session{Application: s.Application, IdleTimeoutMs: s.IdleTimeoutMS}
	switch s.Kind {
	case sessions.KindTCP:
		out.Kind = pb.SessionKind_SESSION_KIND_TCP
	case sessions.KindClientIP:
		out.Kind = pb.SessionKind_SESSION_KIND_CLIENT_IP
	case sessions.KindAppKey:
		out.Kind = pb.SessionKind_SESSION_KIND_APP_KEY
	}
	if s.Client.IsValid() {
		out.Client = s.Client.AsSlice()
	}
	out.ClientPort = uint32(s.ClientPort)
	if s.VIP.IsValid() {
		out.Vip, out.VipPort = s.VIP.Addr().AsSlice(), uint32(s.VIP.Port())
	}
	if len(s.Key) > 0 {
		out.Key = s.Key
	}
	return out
}
