package dataplane

import "github.com/tetherlb/tether/api/unit"

// Report turns a summary into the contract's report (api/unit).
func (r *Summary) Report() unit.Report {
	s := &r.Stats
	rep := unit.Report{
		RxPackets: s.RxPackets, RxBytes: s.RxBytes, TxPackets: s.TxPackets, TxBytes: s.TxBytes,
		NewFlows: s.NewFlows, Reopened: s.Reopened, HalfOpenReclaimed: s.HalfOpenReclaimed, ResetsSent: s.ResetsSent, Recovered: s.Recovered, ChecksumsFinished: s.ChecksumsFinished, TooBigAnswered: s.TooBigAnswered, TooBigFragmented: s.TooBigFragmented, Punted: s.Punted, PuntsSentDirect: s.PuntsSentDirect, EventsSentDirect: s.EventsSentDirect, PuntedMidFlow: s.PuntedMidFlow, MidFlowRefused: s.MidFlowRefused, HeldForHost: s.HeldForHost, ToAcceptor: s.ToAcceptor, AcceptorAnswers: s.AcceptorAnswers, SYNAnswers: s.AcceptorSYNs, HandshakeACKs: s.AcceptorACKs, Flows: r.Flows4 + r.Flows6,
		Drops: map[string]uint64{}, Passes: map[string]uint64{},
		PortDropped: unit.PortDrops{Kernel: r.Port.KernelDropped, Port: r.Port.RxDropped},
		Table:       unit.TableReport{Inserted: r.FlowTable.Inserted, Expired: r.FlowTable.Expired, Evicted: r.FlowTable.Evicted, Full: r.FlowTable.Full},
	}
	rep.PortDropped.HandOff, rep.Workers = r.workerReports()
	// Every reason, zero or not, so a reader (the metrics) lists them all
	// without knowing the dataplane's reasons itself.
	for _, d := range Drops() {
		rep.Drops[d.String()] = s.Drops[d]
	}
	// Frames lost before any worker's pipeline saw them are drops too,
	// under reasons of their own (also in PortDropped, by where).
	rep.Drops[DropKernelQueueFull] = rep.PortDropped.Kernel
	rep.Drops[DropPortQueueFull] = rep.PortDropped.Port
	rep.Drops[DropHandOffLost] = rep.PortDropped.HandOff
	for _, p := range Passes() {
		rep.Passes[p.String()] = s.Passes[p]
	}
	snap := r.Snapshot
	if snap == nil {
		return rep
	}
	rep.Generation = snap.Generation
	totals := s.VIPTotals(snap)
	for _, v := range snap.VIPs {
		if v == nil {
			continue
		}
		proto := "tcp"
		if v.Proto == 17 {
			proto = "udp"
		}
		t := totals[v.ID]
		rep.VIPs = append(rep.VIPs, unit.VIPReport{ID: v.ID, Name: v.Name, Address: v.Addr.String(), Port: v.Port, Protocol: proto,
			Mode: v.Mode, Punt: v.Punt, Removed: v.Removed, Packets: t.Packets, Bytes: t.Bytes, NewFlows: t.NewFlows})
	}
	for i := range snap.Backends {
		b := &snap.Backends[i]
		vip := ""
		if int(b.VIP) < len(snap.VIPs) && snap.VIPs[b.VIP] != nil {
			vip = snap.VIPs[b.VIP].Name
		}
		br := unit.BackendReport{ID: b.ID, VIP: vip, Name: b.Name, Address: b.Addr.String(), Port: b.Port, Weight: b.Weight, State: b.State}
		if i < len(s.Backends) {
			bs := &s.Backends[i]
			br.Packets, br.Bytes, br.ReplyPackets, br.ReplyBytes, br.NewFlows = bs.Packets, bs.Bytes, bs.ReplyPackets, bs.ReplyBytes, bs.NewFlows
		}
		rep.Backends = append(rep.Backends, br)
	}
	return rep
}
