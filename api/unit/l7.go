package unit

// L7View is the l7 VIPs' acceptors and the connections they migrated,
// as `tetherctl l7` shows them.
type L7View struct {
	Stats L7Stats `json:"stats"`
	// Live counts migrated connections the unit has not heard the end
	// of.
	Live int `json:"live"`
	// VIPs are the acceptors, one per l7 VIP.
	VIPs []L7Acceptor `json:"vips"`
}

// L7Stats counts what became of the connections the acceptors took.
type L7Stats struct {
	// Migrated: sent to a host; Uploaded: the host acknowledged it (the
	// connection is in its kernel); UploadFailed: the host reported
	// that it failed, in the upload or in the hand-off to the
	// application after it (which counts in Uploaded too), and the
	// client is reset; UploadTimeouts: the host never acknowledged it;
	// Ended: it closed on its host; AgedOut: the forwarder aged its
	// flow out before the host said it ended (idle past the flow
	// timeout, or the notice was lost with the host's stream), and the
	// unit forgot it.
	Migrated       uint64 `json:"migrated"`
	Uploaded       uint64 `json:"uploaded"`
	UploadFailed   uint64 `json:"upload_failed"`
	UploadTimeouts uint64 `json:"upload_timeouts"`
	Ended          uint64 `json:"ended"`
	AgedOut        uint64 `json:"aged_out"`
	// Proxied counts the connections sent to a request router (they
	// count in Migrated too); NoRouter those answered 503 because no
	// router could take them.
	Proxied  uint64 `json:"proxied"`
	NoRouter uint64 `json:"no_router"`
	// NotListening counts the connections sent to a host (or router)
	// that said nothing there listens for the VIP (hostpb.Listeners),
	// because no host or router that listens could take them: the host
	// may have started listening since it said so; if not, the
	// connection fails (UploadFailed).
	NotListening uint64 `json:"not_listening"`
	// Answered by the acceptor itself: NoHost (503: no host takes the
	// request), HostDown (503: the chosen host's stream is down),
	// RouteFailed (503: the forwarder did not take the route),
	// BadRequests (400).
	NoHost      uint64 `json:"no_host"`
	HostDown    uint64 `json:"host_down"`
	RouteFailed uint64 `json:"route_failed"`
	BadRequests uint64 `json:"bad_requests"`
	// Refused counts packets for a VIP with no acceptor (a reload in
	// between); UnknownAnswers hosts' answers about no migration the
	// unit knows.
	Refused        uint64 `json:"refused"`
	UnknownAnswers uint64 `json:"unknown_answers"`
	// SYNKeysSent counts the sets of SYN cookie keys sent to the
	// forwarder, whose workers answer the l7 VIPs' SYNs with them.
	SYNKeysSent uint64 `json:"syn_keys_sent"`
	// SYNKeysAdopted counts the VIPs whose acceptors took the keys an
	// adopted forwarder held from the previous control process, so that
	// the handshakes made with them are taken, not reset.
	SYNKeysAdopted uint64 `json:"syn_keys_adopted"`
	// MovedIn counts the segments of connections another unit of the
	// cluster migrated that arrived here (the router moved the client's
	// packets) and went on to their hosts along the connection's route
	// atom, each making the connection's flow here.
	MovedIn uint64 `json:"moved_in"`
	// ByRule counts the connections each rule (or "default") decided.
	ByRule map[string]uint64 `json:"by_rule,omitempty"`
}

// L7Acceptor is one l7 VIP's acceptor.
type L7Acceptor struct {
	VIP string `json:"vip"`
	// Conns and Bytes are the connections the acceptor holds state for
	// and the request bytes it holds; MaxBytes bounds Bytes.
	Conns    int `json:"conns"`
	Bytes    int `json:"bytes"`
	MaxBytes int `json:"max_bytes"`
	// Counters are the acceptor's, by name.
	Counters map[string]uint64 `json:"counters"`
}
