package unit

import "net/netip"

// FlowKey is a flow's 5-tuple as the client sent it. IPv4 addresses use
// the first 4 bytes.
type FlowKey struct {
	V6               bool
	Src, Dst         [16]byte
	SrcPort, DstPort uint16
	Proto            uint8
}

// SrcAddr returns the source address.
func (k *FlowKey) SrcAddr() netip.Addr { return k.addr(&k.Src) }

// DstAddr returns the destination address.
func (k *FlowKey) DstAddr() netip.Addr { return k.addr(&k.Dst) }

func (k *FlowKey) addr(a *[16]byte) netip.Addr {
	if k.V6 {
		return netip.AddrFrom16(*a)
	}
	return netip.AddrFrom4([4]byte(a[:4]))
}

// Action is what the forwarder does with a flow: its flow-table entry,
// in a layout independent of the table. A route whose Mode is none names
// only the backend, and the forwarder builds the rest as for a flow it
// decided itself (SNAT port, flow ID): that is how the control process
// answers a punt. An action with a Mode is an entry exactly as it was
// (flow events carry such actions, and routes put them back into a
// restarted forwarder).
type Action struct {
	Mode Mode
	// Backend is the backend's ID in the forwarder's running
	// configuration (ReloadReply.Backends), or ForeignBackend.
	Backend      uint32
	A, B         [16]byte
	PortA, PortB uint16
	Flags        FlowFlags
}

// ForeignBackend is a route's Backend when the backend is not in the
// forwarder's configuration: a connection another unit of the cluster
// made to a backend this unit never had (it left the configuration
// before this unit started). The route names it by address and port:
// Action.A and PortA. Its packets are forwarded and counted nowhere, as
// those of a removed backend.
const ForeignBackend = ^uint32(0)

// FlowsRequest selects flows for CallFlows.
type FlowsRequest struct {
	VIP     string `json:"vip,omitempty"`    // address:port or address
	Backend int64  `json:"backend"`          // ID, or -1 for any
	Client  string `json:"client,omitempty"` // address
	Offset  int    `json:"offset,omitempty"` // matches to skip
	Limit   int    `json:"limit,omitempty"`  // records to return, at most MaxFlowPage
	// Cursor makes the call one page of a walk through every worker's
	// table, starting where the previous page's Next says (the zero
	// cursor starts at the beginning); Offset is then ignored. A walk
	// reports every flow that lives through it exactly once, however
	// the tables change meanwhile, which offsets into separate dumps
	// cannot: the control process reads its inventory this way. A page
	// may hold up to one dump step's records more than Limit.
	Cursor *FlowCursor `json:"cursor,omitempty"`
}

// FlowCursor is where a walk through the forwarder's flows stands: the
// worker, the address family and the home slot of its table to go on
// from.
type FlowCursor struct {
	Worker int  `json:"worker"`
	V6     bool `json:"v6,omitempty"`
	Slot   int  `json:"slot"`
}

// MaxFlowPage bounds one page of a flow dump.
const MaxFlowPage = 10000

// FlowsReply is a page of flows.
type FlowsReply struct {
	Flows []FlowRecord `json:"flows"`
	// Matched counts the matches across all workers; on a walk's page,
	// those of this page's part of the walk.
	Matched int `json:"matched"`
	// Next is where a walk goes on; nil when it is done (or the call
	// was not a walk).
	Next *FlowCursor `json:"next,omitempty"`
}

// FlowRecord is one connection as a flow dump shows it: its key (client
// to VIP), what the forwarder does with it, and how long it has been idle.
type FlowRecord struct {
	Worker int
	Key    FlowKey
	Action Action
	IdleMS uint32
}
