package dataplane

import (
	"net/netip"

	"github.com/tetherlb/tether/api/unit"
	"github.com/tetherlb/tether/tables/flow"
)

// FlowFilter selects flows for a dump; zero fields match everything.
type FlowFilter struct {
	VIP     netip.AddrPort // the flow's destination
	Backend int64          // backend ID, or -1
	Client  netip.Addr     // the flow's source
}

func (f *FlowFilter) match(k *unit.FlowKey, m *flow.Meta) bool {
	if f.Backend >= 0 && int64(m.Backend) != f.Backend {
		return false
	}
	if f.VIP.IsValid() && (k.DstAddr() != f.VIP.Addr() || f.VIP.Port() != 0 && k.DstPort != f.VIP.Port()) {
		return false
	}
	if f.Client.IsValid() && k.SrcAddr() != f.Client {
		return false
	}
	return true
}

// FlowDump is a walk through a worker's flows in bounded steps, so that
// an admin's dump never holds a worker for more than DumpStep slots at a
// time: the forwarder takes one step per Worker.Do, and the worker
// forwards between steps. It collects the client-direction flows that
// match Filter, after skipping Skip of them, up to Limit records, and
// counts every match.
type FlowDump struct {
	Filter  FlowFilter
	Skip    int
	Limit   int
	Records []unit.FlowRecord
	Matched int
	// Walk makes the dump one page of a walk (unit.FlowCursor): Skip is
	// ignored and every record of the steps taken is kept, so that the
	// next page, starting at Position, misses nothing; the caller stops
	// stepping once Full.
	Walk bool

	v6   bool
	next int
	done bool
}

// DumpStep is how many table slots one step of a dump visits.
const DumpStep = 16384

// Done reports whether the walk has visited the whole table.
func (d *FlowDump) Done() bool { return d.done }

// Full reports whether a walk's page has its Limit of records.
func (d *FlowDump) Full() bool { return d.Walk && len(d.Records) >= d.Limit }

// Position returns where the dump's next step starts: the address family
// and the home slot.
func (d *FlowDump) Position() (v6 bool, slot int) { return d.v6, d.next }

// Resume makes the dump start where Position said an earlier one stood.
func (d *FlowDump) Resume(v6 bool, slot int) { d.v6, d.next = v6, max(slot, 0) }

// DumpStep visits the next DumpStep slots of the worker's tables for d.
// Call it through Worker.Do until d.Done.
func (p *Pipeline) DumpStep(now flow.Tick, d *FlowDump) {
	if d.done {
		return
	}
	add := func(k unit.FlowKey, m *flow.Meta, a, b []byte) {
		if m.Flags&unit.FlowReply != 0 || !d.Filter.match(&k, m) {
			return
		}
		d.Matched++
		if !d.Walk && (d.Matched <= d.Skip || len(d.Records) >= d.Limit) {
			return
		}
		r := unit.FlowRecord{Worker: p.cfg.Worker, Key: k, IdleMS: now.Since(m.LastSeen)}
		actionOf(&r.Action, m, a, b)
		d.Records = append(d.Records, r)
	}
	if !d.v6 {
		d.next = p.flows.ForEach4Home(d.next, DumpStep, func(k *flow.Key4, v *flow.Value4) {
			ck := unit.FlowKey{SrcPort: k.SrcPort, DstPort: k.DstPort, Proto: k.Proto}
			copy(ck.Src[:], k.Src[:])
			copy(ck.Dst[:], k.Dst[:])
			add(ck, &v.Meta, v.A[:], v.B[:])
		})
		if d.next < 0 {
			d.v6, d.next = true, 0
		}
		return
	}
	d.next = p.flows.ForEach6Home(d.next, DumpStep, func(k *flow.Key6, v *flow.Value6) {
		add(unit.FlowKey{V6: true, Src: k.Src, Dst: k.Dst, SrcPort: k.SrcPort, DstPort: k.DstPort, Proto: k.Proto}, &v.Meta, v.A[:], v.B[:])
	})
	d.done = d.next < 0
}

// SetControlConnected switches between asking the control process
// (punts, flow events) and deciding alone while it is away.
func (p *Pipeline) SetControlConnected(up bool) {
	if p.out.bell == nil {
		return
	}
	p.out.enabled = up
	if !up {
		// The keys were the control process's that left; its successor
		// has its own.
		p.syn.keys = nil
		// Nobody will answer: the held packets go through the pipeline
		// again with the next batch and are decided by Maglev.
		p.out.events, p.out.punts = p.out.events[:0], p.out.punts[:0]
		p.flows.TakeRemovals(func([]flow.Removed4, []flow.Removed6, uint64) {})
		for i := range p.held {
			p.deferred = append(p.deferred, p.held[i].frame)
		}
		p.held = p.held[:0]
		p.releaseSendWait(func(*heldSend) bool { return true })
	}
}
