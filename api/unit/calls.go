package unit

import (
	"encoding/json"
	"net/netip"
)

// The forwarder's calls: cold requests the control process makes over
// the channel (dataplane/channel's call and return messages), each with
// a JSON request and reply.
const (
	// CallReload replaces the forwarder's running configuration. The
	// request is the configuration itself (config.Config as JSON), read
	// and checked once by the control process with every run-time
	// override (operators' states, health verdicts, allotment weights)
	// already applied; the forwarder never re-reads the file for it.
	// The reply is a ReloadReply. A configuration the forwarder cannot
	// run (one that changes a key needing a restart) is refused whole
	// and the running one stays.
	CallReload = "reload"
	// CallReport asks for the counters: no request, a Report reply.
	CallReport = "report"
	// CallFlows asks for a page of flows: a FlowsRequest, a FlowsReply.
	CallFlows = "flows"
	// CallExplain asks what a new or existing flow gets and why: an
	// ExplainRequest, an Explanation.
	CallExplain = "explain"
	// CallSYNKeys asks for the l7 VIPs' SYN cookie keys the workers
	// hold: no request, a SYNKeysReply. A control process that adopts
	// a running forwarder takes them over, so that the handshakes the
	// workers answered with them (while no control process ran, too)
	// are not reset by acceptors holding other keys.
	CallSYNKeys = "syn-keys"
)

// SYNKeysReply answers CallSYNKeys.
type SYNKeysReply struct {
	// Keys is the payload of the last SYN keys message the forwarder
	// took (dataplane/channel's AppendSYNKeys, without its header, read
	// with DecodeSYNKeys); empty when it took none.
	Keys []byte `json:"keys,omitempty"`
}

// ReloadReply answers CallReload: the generation the forwarder now runs
// and the IDs it gave the configuration's VIPs and backends. Punts name
// VIPs and backends by these IDs and routes answer with them, so a
// decision never goes through names.
type ReloadReply struct {
	Generation uint64                `json:"generation"`
	VIPs       map[string]uint32     `json:"vips"`
	Backends   map[BackendKey]uint32 `json:"backends"`
	// Retired are the backends of running VIPs that left the
	// configuration: their flows finish, and a route may still name
	// them (a connection another unit made before the change).
	Retired map[BackendKey]uint32 `json:"retired,omitempty"`
}

// ExplainRequest asks about a flow from Src to Dst.
type ExplainRequest struct {
	Proto uint8          `json:"proto"` // 6 (TCP) or 17 (UDP)
	Src   netip.AddrPort `json:"src"`
	Dst   netip.AddrPort `json:"dst"`
}

// Explanation says what a flow gets, and why.
type Explanation struct {
	VIP       string `json:"vip,omitempty"`
	Mode      Mode   `json:"mode,omitempty"`
	Backend   string `json:"backend,omitempty"`
	Reason    string `json:"reason"`
	Existing  bool   `json:"existing_flow"`
	Slot      uint32 `json:"maglev_slot,omitempty"`
	Rewritten string `json:"rewritten,omitempty"`
}

// ForwarderStart is what a control process hands a forwarder it starts,
// on its standard input (tetherd forwarder --config-stdin): the
// configuration it runs, in CallReload's form (config.Config as JSON),
// and the connections the control process knows, which the forwarder
// puts back before it forwards its first packet, so that a restarted
// forwarder never takes a live connection's segment for a new flow.
type ForwarderStart struct {
	Config json.RawMessage `json:"config"`
	Flows  []FlowRecord    `json:"flows,omitempty"`
}
