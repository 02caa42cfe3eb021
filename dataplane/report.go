package dataplane

// Report is a Summary for machines: what the admin API returns and the
// metrics are made of, with names instead of indexes.
type Report struct {
	Generation uint64            `json:"generation"`
	RxPackets  uint64            `json:"rx_packets"`
	RxBytes    uint64            `json:"rx_bytes"`
	TxPackets  uint64            `json:"tx_packets"`
	TxBytes    uint64            `json:"tx_bytes"`
	NewFlows   uint64            `json:"new_flows"`
	Reopened   uint64            `json:"reopened"`
	Punted     uint64            `json:"punted"`
	Flows      int               `json:"flows"` // client-direction and reply entries
	Drops      map[string]uint64 `json:"drops"`
	Passes     map[string]uint64 `json:"passes"`
	VIPs       []VIPReport       `json:"vips"`
	Backends   []BackendReport   `json:"backends"`
	Table      TableReport       `json:"flow_table"`
}

// VIPReport is one VIP.
type VIPReport struct {
	ID       uint32 `json:"id"`
	Name     string `json:"name"`
	Address  string `json:"address"`
	Port     uint16 `json:"port"`
	Protocol string `json:"protocol"`
	Mode     string `json:"mode"`
	Punt     bool   `json:"punt,omitempty"`
	Removed  bool   `json:"removed,omitempty"`
	Packets  uint64 `json:"packets"`
	Bytes    uint64 `json:"bytes"`
	NewFlows uint64 `json:"new_flows"`
}

// BackendReport is one backend.
type BackendReport struct {
	ID           uint32 `json:"id"`
	VIP          string `json:"vip"`
	Name         string `json:"name"`
	Address      string `json:"address"`
	Port         uint16 `json:"port"`
	Weight       int    `json:"weight"`
	State        string `json:"state"`
	Packets      uint64 `json:"packets"`
	Bytes        uint64 `json:"bytes"`
	ReplyPackets uint64 `json:"reply_packets"`
	ReplyBytes   uint64 `json:"reply_bytes"`
	NewFlows     uint64 `json:"new_flows"`
}

// TableReport is the flow table's own counters.
type TableReport struct {
	Inserted uint64 `json:"inserted"`
	Expired  uint64 `json:"expired"`
	Evicted  uint64 `json:"evicted"`
	Full     uint64 `json:"full"`
}

// Report turns a summary into a report.
func (r *Summary) Report() Report {
	s := &r.Stats
	rep := Report{
		RxPackets: s.RxPackets, RxBytes: s.RxBytes, TxPackets: s.TxPackets, TxBytes: s.TxBytes,
		NewFlows: s.NewFlows, Reopened: s.Reopened, Punted: s.Punted, Flows: r.Flows4 + r.Flows6,
		Drops: map[string]uint64{}, Passes: map[string]uint64{},
		Table: TableReport{Inserted: r.FlowTable.Inserted, Expired: r.FlowTable.Expired, Evicted: r.FlowTable.Evicted, Full: r.FlowTable.Full},
	}
	for _, d := range Drops() {
		if n := s.Drops[d]; n > 0 {
			rep.Drops[d.String()] = n
		}
	}
	for _, p := range Passes() {
		if n := s.Passes[p]; n > 0 {
			rep.Passes[p.String()] = n
		}
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
		rep.VIPs = append(rep.VIPs, VIPReport{ID: v.ID, Name: v.Name, Address: v.Addr.String(), Port: v.Port, Protocol: proto,
			Mode: v.Mode.String(), Punt: v.Punt, Removed: v.Removed, Packets: t.Packets, Bytes: t.Bytes, NewFlows: t.NewFlows})
	}
	for i := range snap.Backends {
		b := &snap.Backends[i]
		vip := ""
		if int(b.VIP) < len(snap.VIPs) && snap.VIPs[b.VIP] != nil {
			vip = snap.VIPs[b.VIP].Name
		}
		br := BackendReport{ID: b.ID, VIP: vip, Name: b.Name, Address: b.Addr.String(), Port: b.Port, Weight: b.Weight, State: b.State.String()}
		if i < len(s.Backends) {
			bs := &s.Backends[i]
			br.Packets, br.Bytes, br.ReplyPackets, br.ReplyBytes, br.NewFlows = bs.Packets, bs.Bytes, bs.ReplyPackets, bs.ReplyBytes, bs.NewFlows
		}
		rep.Backends = append(rep.Backends, br)
	}
	return rep
}
