package control

import (
	"sync"

	"github.com/tetherlb/tether/api/unit"
	"github.com/tetherlb/tether/dataplane/channel"
)

// inventory is the control process's record of every connection the
// forwarder holds (the connection inventory of seed S1, FIG. 28), kept
// from flow events and re-read from the forwarder when this process
// starts, or when the forwarder says it lost events. It is what puts
// flows back into a restarted forwarder.
type inventory struct {
	mu    sync.Mutex
	flows map[unit.FlowKey]entryAt
	// gen counts re-reads; an entry remembers the one in which an event
	// or a dump last spoke of it, so that a re-read can sweep the
	// entries it did not see without sweeping those events added while
	// it ran.
	gen uint64
	// removed holds, while a read of the forwarder's flows runs, the
	// keys that removal events took out since it began: a page of the
	// read that saw such a flow alive may arrive after its removal, and
	// must not bring it back.
	removed map[unit.FlowKey]struct{}
}

type entryAt struct {
	channel.FlowEvent
	gen uint64
}

func newInventory() inventory { return inventory{flows: map[unit.FlowKey]entryAt{}} }

// read records a flow a read of the forwarder's flows found.
func (v *inventory) read(e channel.FlowEvent) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if _, gone := v.removed[e.Key]; !gone {
		v.flows[e.Key] = entryAt{e, v.gen}
	}
}

func (v *inventory) apply(events []channel.FlowEvent) {
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, e := range events {
		switch e.Kind {
		case channel.FlowOpened:
			v.flows[e.Key] = entryAt{e, v.gen}
			if v.removed != nil {
				delete(v.removed, e.Key)
			}
		case channel.FlowClosed:
			// Closing: keep the entry (and its action) until it is removed.
			if old, ok := v.flows[e.Key]; ok {
				old.Kind, old.gen = channel.FlowClosed, v.gen
				v.flows[e.Key] = old
			}
		case channel.FlowExpired:
			delete(v.flows, e.Key)
			if v.removed != nil {
				v.removed[e.Key] = struct{}{}
			}
		}
	}
}

// beginReread starts a re-read and returns its generation: entries not
// spoken of since by an event or by the re-read are swept by endReread.
func (v *inventory) beginReread() uint64 {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.gen++
	v.removed = map[unit.FlowKey]struct{}{}
	return v.gen
}

// endReread ends the re-read of generation gen. After a complete one
// (sweep) it removes the entries that neither the re-read nor any event
// since its start spoke of: the forwarder no longer holds them (their
// removal events were lost). An incomplete one sweeps nothing.
func (v *inventory) endReread(gen uint64, sweep bool) int {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.removed = nil
	if !sweep {
		return 0
	}
	swept := 0
	for k, e := range v.flows {
		if e.gen < gen {
			delete(v.flows, k)
			swept++
		}
	}
	return swept
}

// get returns the inventory's entry for k.
func (v *inventory) get(k unit.FlowKey) (channel.FlowEvent, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	e, ok := v.flows[k]
	return e.FlowEvent, ok
}

func (v *inventory) all() []channel.FlowEvent {
	v.mu.Lock()
	defer v.mu.Unlock()
	out := make([]channel.FlowEvent, 0, len(v.flows))
	for _, e := range v.flows {
		out = append(out, e.FlowEvent)
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
