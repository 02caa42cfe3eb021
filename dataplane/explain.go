package dataplane

import (
	"fmt"
	"net/netip"

	"github.com/tetherlb/tether/api/unit"
	"github.com/tetherlb/tether/dataplane/header"
)

// IDs returns the IDs of the snapshot's live VIPs and backends by name,
// which the control process names them by in routes (api/unit
// ReloadReply).
func (s *Snapshot) IDs() unit.ReloadReply {
	r := unit.ReloadReply{Generation: s.Generation, VIPs: map[string]uint32{}, Backends: map[unit.BackendKey]uint32{}}
	for _, v := range s.VIPs {
		if v == nil || v.Removed {
			continue
		}
		r.VIPs[v.Name] = v.ID
		for _, bid := range v.Backends {
			r.Backends[unit.BackendKey{VIP: v.Name, Backend: s.Backends[bid].Name}] = bid
		}
	}
	for i := range s.Backends {
		b := &s.Backends[i]
		if b.State != unit.StateRemoved || !b.known || int(b.VIP) >= len(s.VIPs) || s.VIPs[b.VIP] == nil || s.VIPs[b.VIP].Removed {
			continue
		}
		if r.Retired == nil {
			r.Retired = map[unit.BackendKey]uint32{}
		}
		r.Retired[unit.BackendKey{VIP: s.VIPs[b.VIP].Name, Backend: b.Name}] = b.ID
	}
	return r
}

// Explain says which backend a flow from req.Src to req.Dst gets and
// why: existing, the flow the forwarder holds for it (nil if none), and
// otherwise the VIP's Maglev slot.
func (s *Snapshot) Explain(req unit.ExplainRequest, existing *unit.FlowRecord) unit.Explanation {
	src, dst := req.Src, req.Dst
	if src.Addr().Unmap().Is4() != dst.Addr().Unmap().Is4() {
		return unit.Explanation{Reason: fmt.Sprintf("%s and %s are of different address families: no packet goes from one to the other", src, dst)}
	}
	v := s.LookupVIP(dst.Addr(), dst.Port(), req.Proto)
	if v == nil {
		return unit.Explanation{Reason: fmt.Sprintf("%s is no VIP: the forwarder passes such packets to the host", dst)}
	}
	e := unit.Explanation{VIP: v.Name, Mode: v.Mode}
	if existing != nil {
		a := &existing.Action
		e.Backend = s.backendOf(a.Backend).Name
		e.Existing = true
		e.Reason = "an existing flow: its packets keep going where the first one went"
		e.Rewritten = rewritten(a.Mode, src, dst, a, src.Addr().Is4())
		return e
	}
	if v.Mode == unit.ModeL7 {
		e.Reason = "a new connection of an l7 VIP: the control process's acceptor takes it, reads its first request, " +
			"and the rules choose its host (tetherctl l7); the connection then migrates there and its packets are tunnelled"
		return e
	}
	bid, ok := v.Choose(src, req.Proto)
	if !ok {
		e.Reason = "the VIP has no backend that takes new flows (all draining, inactive or weight 0): the packet is dropped as no_backend"
		return e
	}
	b := &s.Backends[bid]
	e.Backend = b.Name
	e.Slot = v.Slot(src, req.Proto)
	e.Reason = fmt.Sprintf("a new flow: Maglev slot %d of %d belongs to %s", e.Slot, v.Maglev.Size(), b.Name)
	if v.Punt {
		e.Reason += "; the VIP punts new flows to the control process, which takes this choice unless an allotment decides"
	}
	if s.shareFlows && req.Proto == header.IPProtoTCP && v.Mode != unit.ModeHalfNAT {
		e.Reason += "; in this cluster unit, a segment without SYN of a connection it has no flow for is held and punted " +
			"to the control process instead (mid_flow), which routes it or refuses it with a reset"
	}
	switch v.Mode {
	case unit.ModeNAT:
		e.Rewritten = fmt.Sprintf("<SNAT address>:<SNAT port> > %s", netip.AddrPortFrom(b.Addr, b.Port))
	case unit.ModeHalfNAT:
		e.Rewritten = fmt.Sprintf("%s > %s", src, netip.AddrPortFrom(b.Addr, b.Port))
	case unit.ModeTunnel:
		e.Rewritten = fmt.Sprintf("<unit address> > %s, both ports replaced by the flow ID", b.Addr)
	case unit.ModeIPIP:
		e.Rewritten = fmt.Sprintf("outer <unit address> > %s around %s > %s", b.Addr, src, dst)
	}
	return e
}

// rewritten describes how an existing flow's packets leave the unit.
func rewritten(m unit.Mode, src, dst netip.AddrPort, a *unit.Action, v4 bool) string {
	addr := func(x *[16]byte) netip.Addr {
		if v4 {
			return netip.AddrFrom4([4]byte(x[:4]))
		}
		return netip.AddrFrom16(*x)
	}
	switch m {
	case unit.ModeNAT, unit.ModeHalfNAT:
		return fmt.Sprintf("%s > %s", netip.AddrPortFrom(addr(&a.B), a.PortB), netip.AddrPortFrom(addr(&a.A), a.PortA))
	case unit.ModeTunnel:
		return fmt.Sprintf("<unit address> > %s, ports replaced by flow ID %d", addr(&a.A), uint32(a.B[0])<<24|uint32(a.B[1])<<16|uint32(a.B[2])<<8|uint32(a.B[3]))
	case unit.ModeIPIP:
		return fmt.Sprintf("outer <unit address> > %s around %s > %s", addr(&a.A), src, dst)
	}
	return ""
}
