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

// DumpFlows appends to dst the client-direction flows that match f,
// skipping the first skip matches and stopping at limit records. It
// returns the records and the number of matches seen (to page on). Call
// it through Worker.Do.
func (p *Pipeline) DumpFlows(now flow.Tick, f FlowFilter, skip, limit int, dst []unit.FlowRecord) ([]unit.FlowRecord, int) {
	seen := 0
	add := func(k unit.FlowKey, m *flow.Meta, a, b []byte) bool {
		if m.Flags&unit.FlowReply != 0 || !f.match(&k, m) {
			return true
		}
		seen++
		if seen <= skip {
			return true
		}
		if len(dst) >= limit {
			return false
		}
		r := unit.FlowRecord{Worker: p.cfg.Worker, Key: k, IdleMS: now.Since(m.LastSeen)}
		actionOf(&r.Action, m, a, b)
		dst = append(dst, r)
		return true
	}
	p.flows.ForEach4(func(k *flow.Key4, v *flow.Value4) bool {
		ck := unit.FlowKey{SrcPort: k.SrcPort, DstPort: k.DstPort, Proto: k.Proto}
		copy(ck.Src[:], k.Src[:])
		copy(ck.Dst[:], k.Dst[:])
		return add(ck, &v.Meta, v.A[:], v.B[:])
	})
	p.flows.ForEach6(func(k *flow.Key6, v *flow.Value6) bool {
		return add(unit.FlowKey{V6: true, Src: k.Src, Dst: k.Dst, SrcPort: k.SrcPort, DstPort: k.DstPort, Proto: k.Proto}, &v.Meta, v.A[:], v.B[:])
	})
	return dst, seen
}

// SetControlConnected switches between asking the control process
// (punts, flow events) and deciding alone while it is away.
func (p *Pipeline) SetControlConnected(up bool) {
	if p.out.bell == nil {
		return
	}
	p.out.enabled = up
	if !up {
		// Nobody will answer: the held packets go through the pipeline
		// again with the next batch and are decided by Maglev.
		p.out.events, p.out.punts = p.out.events[:0], p.out.punts[:0]
		p.flows.TakeRemovals(func([]flow.Removed4, []flow.Removed6, uint64) {})
		for i := range p.held {
			p.deferred = append(p.deferred, p.held[i].frame)
		}
		p.held = p.held[:0]
	}
}
