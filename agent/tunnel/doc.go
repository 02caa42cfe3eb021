// Package tunnel is the host side of Tether's tunnels (seed S1 §9.4): an
// XDP program on the host's interface that takes the packets a unit sends
// to one of the host's tunnel addresses and gives the host's own stack the
// packet the client sent. A flow-ID tunnel packet (its two port fields
// carry the 32-bit flow ID the unit chose) has its addresses and ports
// restored from the mapping (unit, flow ID) → original 5-tuple; an IP-in-IP
// packet loses its outer header, so hosts whose kernel has no ipip module
// can serve ipip VIPs too. Either way the program returns XDP_PASS: the
// kernel then receives a packet from the client to the VIP, which the host
// has bound locally, and the application answers the client directly.
//
// The host tells tunnel packets from its own traffic by their destination
// alone: a tunnel address is used as the backend address of tunnel and
// ipip VIPs and for nothing else, so everything else passes untouched,
// and a packet to a tunnel address that no mapping explains is dropped
// and counted, never delivered to a socket.
//
// The mappings live in a BPF map this package fills (the agent learns them
// from the units); the program, its maps and its link are pinned on a BPF
// filesystem, so the kernel keeps restoring packets while the agent
// restarts, and a restarted agent takes them over.
package tunnel
