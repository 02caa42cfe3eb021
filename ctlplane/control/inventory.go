package control

import (
	"sync"

	"github.com/tetherlb/tether/api/unit"
	"github.com/tetherlb/tether/dataplane/channel"
)

// inventory is the control process's record of every connection the
// forwarder holds (the connection inventory of seed S1, FIG. 28), kept
// from flow events and re-read from the forwarder when this process
// starts. It is what puts flows back into a restarted forwarder.
type inventory struct {
	mu    sync.Mutex
	flows map[unit.FlowKey]channel.FlowEvent
}

func newInventory() inventory { return inventory{flows: map[unit.FlowKey]channel.FlowEvent{}} }

func (v *inventory) opened(e channel.FlowEvent) {
	v.mu.Lock()
	v.flows[e.Key] = e
	v.mu.Unlock()
}

func (v *inventory) apply(events []channel.FlowEvent) {
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, e := range events {
		switch e.Kind {
		case channel.FlowOpened:
			v.flows[e.Key] = e
		case channel.FlowClosed:
			// Closing: keep the entry (and its action) until it is removed.
			if old, ok := v.flows[e.Key]; ok {
				old.Kind = channel.FlowClosed
				v.flows[e.Key] = old
			}
		case channel.FlowExpired:
			delete(v.flows, e.Key)
		}
	}
}

func (v *inventory) all() []channel.FlowEvent {
	v.mu.Lock()
	defer v.mu.Unlock()
	out := make([]channel.FlowEvent, 0, len(v.flows))
	for _, e := range v.flows {
		out = append(out, e)
	}
	return out
}

// perBackend counts connections by forwarder backend ID.
func (v *inventory) perBackend() map[uint32]int {
	v.mu.Lock()
	defer v.mu.Unlock()
	out := map[uint32]int{}
	for _, e := range v.flows {
		out[e.Action.Backend]++
	}
	return out
}

func (v *inventory) len() int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return len(v.flows)
}
