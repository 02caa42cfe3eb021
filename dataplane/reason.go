package dataplane

// Drop names why a frame was dropped. Every drop is counted under one.
type Drop uint8

const (
	dropNone Drop = iota
	// Malformed frames.
	DropFrameTooShort     // shorter than its link header
	DropVLANTooDeep       // more than two VLAN tags
	DropIPv4Truncated     // frame ends inside the IPv4 header
	DropIPv4BadHeader     // version or header length wrong
	DropIPv4BadLength     // total length shorter than the header or longer than the frame
	DropIPv4BadChecksum   // header checksum wrong
	DropIPv4BadOptions    // an option's length below two or past the header
	DropIPv6Truncated     // frame ends inside the IPv6 header
	DropIPv6BadHeader     // version field not 6
	DropIPv6BadLength     // payload length longer than the frame, or a jumbogram
	DropIPv6BadExtHeaders // extension headers truncated, too many, a repeated fragment header, or Hop-by-Hop not first
	DropL4Truncated       // TCP/UDP header missing or cut short
	DropTCPBadOffset      // TCP data offset below 5 words or past the segment
	DropUDPBadLength      // UDP length field inconsistent with the datagram
	DropBadFragment       // fragment past 64 KiB, DF with MF, a more-fragments payload not a multiple of 8, or a first fragment without the whole L4 header
	DropFragmentOverlap   // a fragment overlapping one already seen of its datagram (RFC 5722)
	DropICMPTruncated     // ICMP message or its quoted packet cut short
	DropICMPBadChecksum   // ICMP error whose checksum is wrong: rewriting would make it right
	DropICMPBadQuote      // ICMP error quoting an ICMP error or a non-first fragment, which no error may
	DropTCPBadOptions     // a SYN to an ipip VIP whose options are malformed, so its MSS cannot be clamped
	DropBadOffload        // offload metadata (a virtio-net header's checksum place or segment size) that does not fit the packet
	// Hostile input.
	DropSourceRouted // IPv4 source route, IPv6 routing header with segments left (or type 0)
	DropBadSource    // a new flow from a source that is never legitimate, or from its own destination
	DropTCPBadFlags  // a new flow's TCP flags are a combination no stack sends
	DropTCPNotSYN    // a TCP segment that cannot open the new flow it would make (no SYN, to a nat VIP; or SYN+ACK)
	DropTTLExceeded  // TTL or hop limit of 1 or 0: the unit is a router hop
	// Policy and state.
	DropICMPNoFlow      // ICMP error quoting a flow Tether does not know
	DropNoFlow          // reply to a SNAT address without a flow
	DropNoBackend       // VIP has no backend that takes new flows
	DropBackendInactive // flow's backend is inactive
	DropFlowTableFull   // nothing evictable: the new flow could not be recorded
	DropSNATExhausted   // no free SNAT port for the backend
	DropFlowConflict    // the reply key of a new half-NAT flow is taken by another flow
	DropFlowIDExhausted // no free tunnel flow ID
	DropFragmentTimeout // a fragment's first fragment never came
	DropFragmentOverflow
	DropTooBig       // larger than the path MTU after encapsulation
	DropNoNeighbor   // next hop's MAC unknown and no gateway configured
	DropNoHeadroom   // frame buffer has no room for the encapsulation header
	DropPuntOverflow // too many packets already wait for the control process
	DropPuntTimeout  // the control process did not answer a punt in time
	// DropMappingTimeout: a tunnel flow's host did not confirm its
	// mapping in time (the packet waited for it).
	DropMappingTimeout
	// DropNoAcceptor: a packet for an l7 VIP's acceptor while no
	// control process is connected (the acceptor lives there).
	DropNoAcceptor
	// DropAcceptorUnfit: a packet for an l7 VIP's acceptor that it does
	// not take: with IPv4 options or IPv6 extension headers, a
	// fragment, a segmentation-offload super-packet or one too long for
	// a punt (the client retransmits the segments singly); also a held
	// frame whose answer from the acceptor is of the other IP version.
	DropAcceptorUnfit
	// DropTCPBadChecksum: a TCP segment for the acceptor whose checksum
	// is wrong (the acceptor answers only what a stack would accept).
	DropTCPBadChecksum
	// DropNoRoute: a mid-connection segment held for the control
	// process (a mid-flow punt) that it knows no route for
	// (RouteRefuse), and that could not be answered with a reset (a
	// reset itself, a fragment, a bad checksum, or the answer rate
	// spent). Those answered leave as resets (resets_sent).
	DropNoRoute
	// DropACKSuperseded: a pure ACK held for the control process (a
	// mid-flow punt) that a later pure ACK of the same connection
	// replaced while both waited: ACKs are cumulative, so the later one
	// says all the earlier did, and a download's stream of ACKs does not
	// fill the held packets while its route is looked up.
	DropACKSuperseded
	// DropHeldPerFlow: a segment of a connection that already has as
	// many packets held for the control process as one may (a moved
	// connection's burst while its route is looked up). The sender
	// retransmits it once the route is in; the held packets stay free
	// for other connections' first segments.
	DropHeldPerFlow
	// DropNoBuffer: a packet too big for an ipip tunnel, to be sent in
	// fragments, when the port had no free buffer for them (or the
	// batch's share of fragments was spent).
	DropNoBuffer
	numDrops
)

// Reasons for frames lost before the pipeline, which only the report
// names (the pipeline never sees those frames).
const (
	// DropKernelQueueFull: the kernel's queue for the port was full (an
	// AF_XDP socket's receive or fill ring, a TUN device's queue).
	DropKernelQueueFull = "kernel_queue_full"
	// DropPortQueueFull: the port had no free buffer, or a worker's
	// queue from the dispatcher was full.
	DropPortQueueFull = "port_queue_full"
	// DropHandOffLost: a frame on its way to the worker that owns its
	// flow (several device queues) found the ring full or did not fit.
	DropHandOffLost = "handoff_lost"
)

var dropNames = [numDrops]string{
	dropNone:              "none",
	DropFrameTooShort:     "frame_too_short",
	DropVLANTooDeep:       "vlan_too_deep",
	DropIPv4Truncated:     "ipv4_truncated",
	DropIPv4BadHeader:     "ipv4_bad_header",
	DropIPv4BadLength:     "ipv4_bad_length",
	DropIPv4BadChecksum:   "ipv4_bad_checksum",
	DropIPv4BadOptions:    "ipv4_bad_options",
	DropIPv6Truncated:     "ipv6_truncated",
	DropIPv6BadHeader:     "ipv6_bad_header",
	DropIPv6BadLength:     "ipv6_bad_length",
	DropIPv6BadExtHeaders: "ipv6_bad_ext_headers",
	DropL4Truncated:       "l4_truncated",
	DropTCPBadOffset:      "tcp_bad_offset",
	DropUDPBadLength:      "udp_bad_length",
	DropBadFragment:       "bad_fragment",
	DropFragmentOverlap:   "fragment_overlap",
	DropICMPTruncated:     "icmp_truncated",
	DropICMPBadChecksum:   "icmp_bad_checksum",
	DropICMPBadQuote:      "icmp_bad_quote",
	DropTCPBadOptions:     "tcp_bad_options",
	DropSourceRouted:      "source_routed",
	DropBadSource:         "bad_source",
	DropTCPBadFlags:       "tcp_bad_flags",
	DropTCPNotSYN:         "tcp_not_syn",
	DropTTLExceeded:       "ttl_exceeded",
	DropICMPNoFlow:        "icmp_no_flow",
	DropNoFlow:            "no_flow",
	DropNoBackend:         "no_backend",
	DropBackendInactive:   "backend_inactive",
	DropFlowTableFull:     "flow_table_full",
	DropSNATExhausted:     "snat_exhausted",
	DropFlowConflict:      "flow_conflict",
	DropFlowIDExhausted:   "flow_id_exhausted",
	DropFragmentTimeout:   "fragment_timeout",
	DropFragmentOverflow:  "fragment_overflow",
	DropTooBig:            "too_big",
	DropNoNeighbor:        "no_neighbor",
	DropNoHeadroom:        "no_headroom",
	DropPuntOverflow:      "punt_overflow",
	DropPuntTimeout:       "punt_timeout",
	DropMappingTimeout:    "mapping_timeout",
	DropBadOffload:        "bad_offload",
	DropNoAcceptor:        "no_acceptor",
	DropAcceptorUnfit:     "acceptor_unfit",
	DropTCPBadChecksum:    "tcp_bad_checksum",
	DropNoRoute:           "no_route",
	DropACKSuperseded:     "ack_superseded",
	DropHeldPerFlow:       "held_per_flow",
	DropNoBuffer:          "no_buffer",
}

// String returns the reason's name as counters and logs show it.
func (d Drop) String() string {
	if d < numDrops {
		return dropNames[d]
	}
	return "unknown"
}

// Drops lists every drop reason, in counter order.
func Drops() []Drop {
	d := make([]Drop, 0, numDrops-1)
	for r := dropNone + 1; r < numDrops; r++ {
		d = append(d, r)
	}
	return d
}

// Pass names why a frame was handed to the host instead of forwarded.
type Pass uint8

const (
	passNone     Pass = iota
	PassNotIP         // ARP, LLDP and other non-IP frames
	PassNotVIP        // IP traffic for an address or port Tether does not serve
	PassProtocol      // a protocol other than TCP, UDP or ICMP to a VIP address
	PassICMP          // ICMP that is neither an echo to a VIP nor an error about a flow
	numPasses
)

var passNames = [numPasses]string{
	passNone:     "none",
	PassNotIP:    "not_ip",
	PassNotVIP:   "not_vip",
	PassProtocol: "other_protocol",
	PassICMP:     "icmp",
}

// String returns the reason's name.
func (p Pass) String() string {
	if p < numPasses {
		return passNames[p]
	}
	return "unknown"
}

// Passes lists every pass reason, in counter order.
func Passes() []Pass {
	p := make([]Pass, 0, numPasses-1)
	for r := passNone + 1; r < numPasses; r++ {
		p = append(p, r)
	}
	return p
}
