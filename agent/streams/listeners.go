package streams

import (
	"context"
	"net/netip"
	"slices"

	pb "github.com/tetherlb/tether/api/hostpb"
)

// ListenerSource is what a host can hand migrated connections to
// (agent/migrate's Migrator).
type ListenerSource interface {
	// Listening is the VIP:ports, sorted, each once; an unspecified
	// address stands for every address at its port.
	Listening() []netip.AddrPort
	// ListeningChanged is signalled after Listening changed.
	ListeningChanged() <-chan struct{}
}

// The host's listeners go to every unit whose hello says it takes them,
// whole: after each hello (the unit may have restarted, or missed a
// change while the stream was down) and after every change. The units
// use them to pass over a host that would only reset the connection (its
// application, or its request router, is not running), so a change must
// reach them soon, and nothing is acknowledged: a message lost with its
// stream is sent again on the next one.

// sendListeners keeps the units told until ctx ends.
func (s *Streams) sendListeners(ctx context.Context) {
	var changed <-chan struct{}
	if s.opts.Listeners != nil {
		changed = s.opts.Listeners.ListeningChanged()
	}
	// sent[i] is the stream generation link i was last told on, and
	// what it was told.
	sent := make([]uint64, len(s.links))
	told := make([][]netip.AddrPort, len(s.links))
	for {
		cur := []netip.AddrPort{}
		if s.opts.Listeners != nil {
			cur = s.opts.Listeners.Listening()
		}
		msg := listenersMessage(cur)
		for i, l := range s.links {
			l.mu.Lock()
			stream, gen, ok := l.stream, l.gen, l.stream != nil && l.takesListeners
			l.mu.Unlock()
			if !ok || sent[i] == gen && slices.Equal(told[i], cur) {
				continue
			}
			if err := l.send(stream, msg); err != nil {
				// The stream is going; the next one is told after its
				// hello.
				l.s.opts.Log.Debug().Str("unit", l.unit.Name).Err(err).Msg("listeners not sent")
				continue
			}
			sent[i], told[i] = gen, cur
			l.set(func(st *Status) { st.ListenersSent++ })
		}
		select {
		case <-ctx.Done():
			return
		case <-s.relinked:
		case <-changed:
		}
	}
}

// listenersMessage is the message that tells a unit eps, each once as
// the stream carries it (IPv4 unmapped, without a zone), or any when
// there are more than one message may name. An endpoint the stream
// cannot carry (port 0; the shims' and the splices' checks keep them
// out) is left out rather than have the unit refuse the message.
func listenersMessage(eps []netip.AddrPort) *pb.AgentMessage {
	l := &pb.Listeners{}
	seen := make(map[netip.AddrPort]bool, len(eps))
	for _, ap := range eps {
		ap = netip.AddrPortFrom(ap.Addr().Unmap().WithZone(""), ap.Port())
		if !ap.Addr().IsValid() || ap.Port() == 0 || seen[ap] {
			continue
		}
		seen[ap] = true
		if len(seen) > pb.MaxListeners {
			l.Endpoints, l.Any = nil, true
			break
		}
		l.Endpoints = append(l.Endpoints, pb.EndpointOf(ap))
	}
	return &pb.AgentMessage{Version: pb.Version, Body: &pb.AgentMessage_Listeners{Listeners: l}}
}
