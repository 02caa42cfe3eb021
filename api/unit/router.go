package unit

// RouterError names a kind of failure a request router counts
// (ctlplane/l7/router names them).
type RouterError string

// RouterStats is a snapshot of a request router's counters
// (ctlplane/l7/router; `tetherd router` serves it on its admin socket,
// `tetherctl router` shows it). Counters only grow, except
// ActiveClientConns.
type RouterStats struct {
	// ActiveClientConns is the client connections open now.
	ActiveClientConns int64 `json:"active_client_conns"`
	// ClientConns is the client connections accepted, those answered
	// 503 for MaxClientConns included.
	ClientConns uint64 `json:"client_conns"`
	// Requests is the requests read from clients, answered or not.
	Requests uint64 `json:"requests"`
	// ByStatus counts answers by status class: "1xx" … "5xx", the
	// router's own answers included.
	ByStatus map[string]uint64 `json:"by_status"`
	// ByRule counts requests by the rule that decided them; requests
	// no rule took count under "".
	ByRule map[string]RouterCounts `json:"by_rule"`
	// ByBackend counts requests by the backend (a BackendKey's text)
	// they were sent to, a retried request under both; requests no host
	// was found for are not in it.
	ByBackend map[string]RouterCounts `json:"by_backend"`
	// HostDials is the connections dialed to hosts, successful or not;
	// HostReuses the requests sent over a connection opened for an
	// earlier one. Their ratio is the connection aggregation.
	HostDials  uint64 `json:"host_dials"`
	HostReuses uint64 `json:"host_reuses"`
	// Errors counts failures by kind, those of a first attempt that
	// was retried included; kinds that never happened are absent.
	Errors map[RouterError]uint64 `json:"errors"`
	// Retries is the requests sent to a second host after the dial to
	// the first failed.
	Retries uint64 `json:"retries"`
	// Ejected is the backend keys ejected now, sorted; Ejections the
	// ejections so far, re-ejections after probation included.
	Ejected   []string `json:"ejected"`
	Ejections uint64   `json:"ejections"`
}

// RouterCounts is the counters of one rule or one backend.
type RouterCounts struct {
	Requests uint64            `json:"requests"`
	ByStatus map[string]uint64 `json:"by_status"`
}
