package unit

import "time"

// AtomsView is the distributed atom manager as this unit sees it (issue
// 15), as the admin API serves it at GET /v1/atoms and `tetherctl atoms`
// shows it: the manager's state, its streams to the other units, and a
// page of its portion.
type AtomsView struct {
	// Enabled is false when the unit is not in a cluster.
	Enabled bool   `json:"enabled"`
	Self    string `json:"self,omitempty"`
	// Ready: the unit holds what it ought to (it pulled from every
	// live member).
	Ready bool `json:"ready"`
	// Level is the replication level (-1: full).
	Level int `json:"level"`
	// Atoms counts this unit's portion, zombies and caches included;
	// Orphans are those whose adder is gone (they expire).
	Atoms   int `json:"atoms"`
	Zombies int `json:"zombies"`
	Cached  int `json:"cached"`
	Orphans int `json:"orphans"`
	// Counts are what the manager did since it started.
	Counts AtomCounts `json:"counts"`
	// Refused counts streams and messages refused, by reason: identity,
	// not_member, invalid.
	Refused map[string]uint64 `json:"refused"`
	// Peers are the streams to the other live units.
	Peers []AtomPeer `json:"peers"`
	// Matched counts the atoms the request selected; Page holds the
	// first of them in key order.
	Matched int        `json:"matched"`
	Page    []AtomView `json:"page,omitempty"`
}

// AtomCounts count the atom manager's work.
type AtomCounts struct {
	Added        uint64 `json:"added"`        // atoms this unit added
	Deleted      uint64 `json:"deleted"`      // atoms this unit deleted
	Received     uint64 `json:"received"`     // replicas stored from others (adds, deletes, pulls)
	Stale        uint64 `json:"stale"`        // received versions older than the one held
	Full         uint64 `json:"full"`         // atoms refused: the portion was full
	Expired      uint64 `json:"expired"`      // zombies, orphans and caches dropped
	Orphaned     uint64 `json:"orphaned"`     // atoms whose adder left
	Rereplicated uint64 `json:"rereplicated"` // copies sent after a membership change
	QueryLocal   uint64 `json:"query_local"`  // queries answered from this unit's portion
	QueryRemote  uint64 `json:"query_remote"` // queries answered by another unit
	QueryMisses  uint64 `json:"query_misses"` // queries no unit could answer
}

// AtomPeer is this unit's stream to another unit.
type AtomPeer struct {
	Name      string `json:"name"`
	Address   string `json:"address"`
	Boot      uint64 `json:"boot"`
	Connected bool   `json:"connected"`
	// Pulled: this unit took its share from the peer.
	Pulled bool `json:"pulled"`
	// Queued atoms wait to be sent; Sent and Acked count atoms (adds
	// and deletes) sent and applied; Dropped ones did not fit the queue
	// (the peer then gets its whole share again: Resyncs).
	Queued  int    `json:"queued"`
	Sent    uint64 `json:"sent"`
	Acked   uint64 `json:"acked"`
	Dropped uint64 `json:"dropped"`
	Resyncs uint64 `json:"resyncs"`
	// LagMedian and LagP99 are the time from an add or delete here to
	// its acknowledgement by the peer, over the last 1024 batches, in
	// milliseconds.
	LagMedian float64 `json:"lag_median_ms"`
	LagP99    float64 `json:"lag_p99_ms"`
	// Error is the stream's last failure.
	Error string `json:"error,omitempty"`
}

// AtomView is one atom.
type AtomView struct {
	Key       string     `json:"key"`
	Host      string     `json:"host"`
	Data      []byte     `json:"data,omitempty"`
	Adder     string     `json:"adder"`
	Stamp     uint64     `json:"stamp"`
	TimeoutMs int64      `json:"timeout_ms"`
	Zombie    bool       `json:"zombie,omitempty"`
	Cached    bool       `json:"cached,omitempty"`
	Expires   *time.Time `json:"expires,omitempty"`
}

// AtomsRequest selects the atoms GET /v1/atoms lists: keys with Prefix,
// of Host (query parameters prefix, host, limit).
type AtomsRequest struct {
	Prefix string `json:"prefix,omitempty"`
	Host   string `json:"host,omitempty"`
	Limit  int    `json:"limit,omitempty"`
}

// Bounds of an atoms page.
const (
	DefaultAtomsPage = 100
	MaxAtomsPage     = 10000
)
