package dataplane

// Stats are a worker's counters. The worker increments plain fields; a
// reader gets a copy through Pipeline.Stats from the worker's goroutine
// (the worker publishes copies for other goroutines) and adds workers up
// with Add.
type Stats struct {
	RxPackets, RxBytes uint64
	TxPackets, TxBytes uint64
	NewFlows           uint64
	Reopened           uint64 // closed flows whose tuple a new connection reused, decided afresh
	EchoReplies        uint64 // ICMP echo requests to a VIP answered
	ICMPForwarded      uint64 // ICMP errors sent along their flow
	TooBigAnswered     uint64 // packets too big for an ipip tunnel answered with ICMP (sent instead of dropped)
	TooBigFragmented   uint64 // packets too big for an ipip tunnel sent as fragments of their outer header (split.go)
	TooBigFragments    uint64 // the frames those packets left in (in TxPackets)
	HalfOpenReclaimed  uint64 // SNAT ports taken back from handshakes that never completed
	ResetsSent         uint64 // segments of connections the unit does not know (nat; refused mid-flow punts), answered with a reset
	Recovered          uint64 // half-NAT flows made again from a backend's reply the unit had no flow for
	ChecksumsFinished  uint64 // partial transport checksums completed in software (see offload)
	EventsSentDirect   uint64 // flow events the worker sent itself (see DirectSender)
	PuntsSentDirect    uint64 // punts the worker sent itself (see DirectSender)
	FragmentsHeld      uint64 // fragments held until their first fragment came
	Punted             uint64 // packets held for the control process to decide
	PuntedMidFlow      uint64 // of Punted: TCP segments without SYN of connections a cluster unit had no flow for
	MidFlowRefused     uint64 // held mid-flow segments the control process had no route for (RouteRefuse)
	HeldForHost        uint64 // packets of tunnel flows held until their host holds the mapping
	ToAcceptor         uint64 // packets of l7 VIPs handed to the acceptor
	AcceptorAnswers    uint64 // the acceptor's answers sent
	AcceptorSYNs       uint64 // l7 VIPs' SYNs the worker answered itself, with the acceptor's cookie
	AcceptorACKs       uint64 // l7 VIPs' handshake ACKs the worker took itself (a cookie of its keys, no data)
	Drops              [numDrops]uint64
	Passes             [numPasses]uint64
	// Backends is indexed by backend ID (see Snapshot). A VIP's counters
	// are the sums of its backends' (VIPTotals), which saves the worker
	// two counters per packet.
	Backends []BackendStats
}

// VIPStats count a VIP's traffic toward its backends.
type VIPStats struct {
	Packets, Bytes uint64
	NewFlows       uint64
}

// BackendStats count a backend's traffic in both directions.
type BackendStats struct {
	Packets, Bytes           uint64 // toward the backend
	ReplyPackets, ReplyBytes uint64 // from the backend, through the unit
	NewFlows                 uint64
}

// Forwarded returns the number of packets sent: TxPackets counts frames,
// and a packet sent in fragments (split.go) leaves in several.
func (s *Stats) Forwarded() uint64 { return s.TxPackets - (s.TooBigFragments - s.TooBigFragmented) }

// Dropped returns the number of frames dropped for any reason.
func (s *Stats) Dropped() uint64 {
	var n uint64
	for _, d := range s.Drops {
		n += d
	}
	return n
}

// Passed returns the number of frames passed to the host.
func (s *Stats) Passed() uint64 {
	var n uint64
	for _, p := range s.Passes {
		n += p
	}
	return n
}

// Add adds o's counters to s.
func (s *Stats) Add(o *Stats) {
	s.RxPackets += o.RxPackets
	s.RxBytes += o.RxBytes
	s.TxPackets += o.TxPackets
	s.TxBytes += o.TxBytes
	s.NewFlows += o.NewFlows
	s.Reopened += o.Reopened
	s.EchoReplies += o.EchoReplies
	s.ICMPForwarded += o.ICMPForwarded
	s.TooBigAnswered += o.TooBigAnswered
	s.TooBigFragmented += o.TooBigFragmented
	s.TooBigFragments += o.TooBigFragments
	s.HalfOpenReclaimed += o.HalfOpenReclaimed
	s.ResetsSent += o.ResetsSent
	s.Recovered += o.Recovered
	s.ChecksumsFinished += o.ChecksumsFinished
	s.EventsSentDirect += o.EventsSentDirect
	s.PuntsSentDirect += o.PuntsSentDirect
	s.FragmentsHeld += o.FragmentsHeld
	s.Punted += o.Punted
	s.PuntedMidFlow += o.PuntedMidFlow
	s.MidFlowRefused += o.MidFlowRefused
	s.HeldForHost += o.HeldForHost
	s.ToAcceptor += o.ToAcceptor
	s.AcceptorAnswers += o.AcceptorAnswers
	s.AcceptorSYNs += o.AcceptorSYNs
	s.AcceptorACKs += o.AcceptorACKs
	for i := range s.Drops {
		s.Drops[i] += o.Drops[i]
	}
	for i := range s.Passes {
		s.Passes[i] += o.Passes[i]
	}
	s.Backends = grow(s.Backends, len(o.Backends))
	for i := range o.Backends {
		b, w := &s.Backends[i], &o.Backends[i]
		b.Packets += w.Packets
		b.Bytes += w.Bytes
		b.ReplyPackets += w.ReplyPackets
		b.ReplyBytes += w.ReplyBytes
		b.NewFlows += w.NewFlows
	}
}

// Clone returns a deep copy.
func (s *Stats) Clone() Stats {
	c := *s
	c.Backends = append([]BackendStats(nil), s.Backends...)
	return c
}

// VIPTotals sums the backend counters of each VIP of snap, indexed by VIP
// ID.
func (s *Stats) VIPTotals(snap *Snapshot) []VIPStats {
	v := make([]VIPStats, len(snap.VIPs))
	for i := range snap.Backends {
		b := &snap.Backends[i]
		if !b.known || i >= len(s.Backends) || int(b.VIP) >= len(v) {
			continue
		}
		bs := &s.Backends[i]
		v[b.VIP].Packets += bs.Packets
		v[b.VIP].Bytes += bs.Bytes
		v[b.VIP].NewFlows += bs.NewFlows
	}
	return v
}

func grow[T any](s []T, n int) []T {
	if len(s) >= n {
		return s
	}
	return append(s, make([]T, n-len(s))...)
}
