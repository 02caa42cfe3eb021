package unit

// Report is the forwarder's counters for machines: what the admin API
// returns and the metrics are made of, with names beside IDs.
type Report struct {
	Generation uint64 `json:"generation"`
	RxPackets  uint64 `json:"rx_packets"`
	RxBytes    uint64 `json:"rx_bytes"`
	TxPackets  uint64 `json:"tx_packets"`
	TxBytes    uint64 `json:"tx_bytes"`
	NewFlows   uint64 `json:"new_flows"`
	Reopened   uint64 `json:"reopened"`
	// HalfOpenReclaimed counts SNAT ports taken back from handshakes that
	// never completed (a SYN flood from forged sources, say).
	HalfOpenReclaimed uint64 `json:"half_open_reclaimed"`
	// ResetsSent counts segments of connections the unit did not know,
	// answered with a reset: nat connections after a restart of the
	// whole unit, and in a cluster the segments the control process
	// knew no route for (MidFlowRefused).
	ResetsSent uint64 `json:"resets_sent"`
	// Recovered counts half-NAT flows made again from a backend's reply
	// the unit had no flow for (after a restart of the whole unit).
	Recovered uint64 `json:"recovered"`
	// ChecksumsFinished counts partial transport checksums the forwarder
	// completed itself (see nic.Offload).
	ChecksumsFinished uint64 `json:"checksums_finished"`
	// TooBigAnswered counts packets too big for an ipip tunnel answered
	// with ICMP (fragmentation needed, packet too big); TooBigFragmented
	// those sent as fragments of their outer header instead (IPv4
	// without DF, IPv6 of at most 1280 bytes).
	TooBigAnswered   uint64 `json:"too_big_answered"`
	TooBigFragmented uint64 `json:"too_big_fragmented"`
	Punted           uint64 `json:"punted"`
	// PuntsSentDirect and EventsSentDirect count the punts and flow
	// events the workers sent the control process themselves; the rest
	// went through the forwarder's uplink (a full socket, or a worker
	// past its budget of direct sends).
	PuntsSentDirect  uint64 `json:"punts_sent_direct"`
	EventsSentDirect uint64 `json:"events_sent_direct"`
	// PuntedMidFlow counts, of Punted, the TCP segments without SYN a
	// unit of a cluster had no flow for (a connection another unit may
	// carry), held for the control process's route; MidFlowRefused
	// those the control process knew no route for, answered with a
	// reset or dropped (no_route).
	PuntedMidFlow  uint64 `json:"punted_mid_flow"`
	MidFlowRefused uint64 `json:"mid_flow_refused"`
	HeldForHost    uint64 `json:"held_for_host"`
	// ToAcceptor counts packets of l7 VIPs handed to the acceptor, and
	// AcceptorAnswers the acceptor's packets sent in their place;
	// SYNAnswers the l7 VIPs' SYNs the workers answered themselves, with
	// the acceptor's cookie, and HandshakeACKs the handshakes' last
	// segments they took themselves (a valid cookie and no data: the
	// acceptor makes the connection of its first data segment); neither
	// counts in ToAcceptor.
	ToAcceptor      uint64 `json:"to_acceptor"`
	AcceptorAnswers uint64 `json:"acceptor_answers"`
	SYNAnswers      uint64 `json:"syn_answers"`
	HandshakeACKs   uint64 `json:"handshake_acks"`
	Flows           int    `json:"flows"` // client-direction and reply entries
	// PortDropped counts frames lost before any worker saw them: the
	// kernel's drops at the port (AF_XDP rings, a TUN device's queue)
	// and the port's own (no free buffer, a worker's queue full). No drop
	// reason counts them.
	PortDropped PortDrops         `json:"port_dropped"`
	Drops       map[string]uint64 `json:"drops"`
	Passes      map[string]uint64 `json:"passes"`
	VIPs        []VIPReport       `json:"vips"`
	Backends    []BackendReport   `json:"backends"`
	Table       TableReport       `json:"flow_table"`
	// Workers has each worker's share when there are several.
	Workers []WorkerReport `json:"workers,omitempty"`
}

// WorkerReport is one worker's share of the traffic.
type WorkerReport struct {
	Worker    int    `json:"worker"`
	RxPackets uint64 `json:"rx_packets"` // processed by this worker, its own and those handed to it
	NewFlows  uint64 `json:"new_flows"`
	Flows     int    `json:"flows"`
	// HandedOut counts frames this worker's device queue received for
	// a flow another worker owns, handed to that worker; HandedIn those
	// other workers handed to this one (forwarder.port.queues > 1).
	HandedOut uint64 `json:"handed_out"`
	HandedIn  uint64 `json:"handed_in"`
}

// PortDrops are the frames lost on the way to the workers.
type PortDrops struct {
	Kernel uint64 `json:"kernel"` // AF_XDP ring full or fill ring empty; TUN queue full
	Port   uint64 `json:"port"`   // no free buffer; a worker's queue full (one device queue spread over workers)
	// HandOff counts frames lost on their way from the worker whose
	// device queue received them to the worker that owns their flow:
	// its hand-off ring was full, or the frame was longer than the
	// interface's MTU allows (several device queues).
	HandOff uint64 `json:"handoff"`
}

// VIPReport is one VIP.
type VIPReport struct {
	ID       uint32 `json:"id"`
	Name     string `json:"name"`
	Address  string `json:"address"`
	Port     uint16 `json:"port"`
	Protocol string `json:"protocol"`
	Mode     Mode   `json:"mode"`
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
	State        State  `json:"state"`
	Packets      uint64 `json:"packets"`
	Bytes        uint64 `json:"bytes"`
	ReplyPackets uint64 `json:"reply_packets"`
	ReplyBytes   uint64 `json:"reply_bytes"`
	NewFlows     uint64 `json:"new_flows"`
}

// Key returns the backend's key.
func (b *BackendReport) Key() BackendKey { return BackendKey{VIP: b.VIP, Backend: b.Name} }

// TableReport is the flow table's own counters.
type TableReport struct {
	Inserted uint64 `json:"inserted"`
	Expired  uint64 `json:"expired"`
	Evicted  uint64 `json:"evicted"`
	Full     uint64 `json:"full"`
}
