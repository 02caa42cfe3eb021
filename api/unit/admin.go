package unit

import "time"

// The admin API (ctlplane/admin) serves these as JSON on the unit's
// admin socket; tetherctl and the appliance's init read them.

// Status is the unit's state as tetherctl status shows it.
type Status struct {
	Unit   string `json:"unit"`
	Config string `json:"config"`
	// Generation is the configuration generation the forwarder runs (0
	// while no forwarder is connected).
	Generation uint64          `json:"generation"`
	ControlPID int             `json:"control_pid"`
	Uptime     string          `json:"uptime"`
	Forwarder  ForwarderStatus `json:"forwarder"`
	Punts      PuntStats       `json:"punts"`
	Flows      int             `json:"flows"` // connections in the inventory
	// EventsLost counts the flow events the forwarder could not deliver
	// (each loss makes the control process re-read its flows).
	EventsLost uint64 `json:"events_lost,omitempty"`
	// States are the operators' run-time backend states (tetherctl
	// drain, disable), which override the configuration's.
	States map[BackendKey]State `json:"backend_states,omitempty"`
	// Cluster is the unit's place in its cluster; nil without a cluster
	// section.
	Cluster *ClusterStatus `json:"cluster,omitempty"`
	// Problem is set when the unit is not running a configuration at
	// all: tetherd run --rescue found its file missing or invalid and
	// serves only enough of the API to fix it. It says why.
	Problem string `json:"problem,omitempty"`
}

// ClusterStatus is the unit in its cluster, in short (tetherctl members
// and atoms say more).
type ClusterStatus struct {
	// Ready: the unit holds the atoms it ought to (it pulled them from
	// the other units after it started).
	Ready bool `json:"ready"`
	// Members counts the live units, this one included.
	Members int `json:"members"`
	// Atoms counts this unit's portion of the atom manager.
	Atoms int `json:"atoms"`
}

// ForwarderStatus is the forwarder process as the control process sees it.
type ForwarderStatus struct {
	Connected  bool            `json:"connected"`
	PID        uint32          `json:"pid,omitempty"`
	Workers    uint8           `json:"workers,omitempty"`
	Supervisor SupervisorState `json:"supervisor"`
}

// SupervisorState is what the control process knows of the forwarder
// process it supervises.
type SupervisorState struct {
	PID      int       `json:"pid"`
	Adopted  bool      `json:"adopted"`
	Restarts int       `json:"restarts"`
	LastExit string    `json:"last_exit,omitempty"`
	Since    time.Time `json:"since"`
}

// PuntStats count the control process's decisions on punted flows.
// Refused counts punts of a VIP the control process does not know (of
// either kind), which get no answer.
type PuntStats struct {
	Decided   uint64 `json:"decided"`
	NoBackend uint64 `json:"no_backend"`
	Refused   uint64 `json:"refused"`
	// MidFlow counts mid-flow punts (a cluster unit's segments of
	// connections it had no flow for) answered with a route;
	// MidFlowRefused those answered with a refusal, for which no route
	// was known (the forwarder resets the connection).
	MidFlow        uint64 `json:"mid_flow"`
	MidFlowRefused uint64 `json:"mid_flow_refused"`
	// MidFlowFound counts the mid-flow punts (of MidFlow) whose route
	// came from the atom manager: connections another unit made,
	// continued here.
	MidFlowFound uint64 `json:"mid_flow_found"`
	// SessionRouted counts new flows sent to the host of the client's
	// session (of Decided).
	SessionRouted uint64 `json:"session_routed"`
}

// BackendStatus is one backend as GET /v1/backends shows it: the
// forwarder's counters and the connections the inventory holds.
type BackendStatus struct {
	BackendReport
	Connections int `json:"connections"`
}

// StateChange answers a drain, undrain, disable or enable.
type StateChange struct {
	Backend BackendKey `json:"backend"`
	// State is the operator's state now; unset means the configuration's
	// (and health's) decides again.
	State State `json:"state"`
}

// Reloaded answers POST /v1/config/reload.
type Reloaded struct {
	Generation uint64 `json:"generation"`
}

// Applied answers PUT /v1/config.
type Applied struct {
	// Generation is the running configuration's generation after the
	// reload; 0 when Restarting.
	Generation uint64 `json:"generation"`
	// Path is the configuration file written.
	Path string `json:"path"`
	// Restarting says the unit had no valid configuration (tetherd run
	// --rescue) and now restarts with the file written.
	Restarting bool `json:"restarting,omitempty"`
}

// HealthView is the health-and-load cache as tetherctl health shows it.
type HealthView struct {
	Unit     uint32               `json:"unit_id"`
	Listen   string               `json:"listen,omitempty"`
	Hosts    []HostView           `json:"hosts"`
	Backends []BackendVerdict     `json:"backends"`
	Stats    HealthStats          `json:"stats"`
	Grace    bool                 `json:"startup_grace"`
	Allot    map[string]AllotView `json:"allotments,omitempty"`
}

// HostView is one host of the cache.
type HostView struct {
	ID         uint32    `json:"id"`
	Name       string    `json:"name,omitempty"`
	Address    string    `json:"address,omitempty"`
	Leader     uint32    `json:"leader,omitempty"`
	Generation uint64    `json:"generation"`
	Interval   string    `json:"interval"`
	LastHeard  string    `json:"last_heard"` // ago
	Rows       []RowView `json:"rows"`
}

// RowView is one application row.
type RowView struct {
	Proto    string `json:"proto"`
	VIP      string `json:"vip,omitempty"`
	Endpoint string `json:"endpoint,omitempty"`
	URL      string `json:"url,omitempty"`
	Health   string `json:"health"`
	Load     uint32 `json:"load"`
	Capacity uint32 `json:"capacity"`
	Target   string `json:"target"`
	Current  string `json:"current"`
}

// AllotView is a VIP's current allotment, by backend name.
type AllotView struct {
	Percent map[string]float64 `json:"percent"`
	Tokens  map[string]int     `json:"tokens_left"`
	Total   int                `json:"tokens"`
	Expires string             `json:"expires_in"`
}

// BackendVerdict is what the health cache says about one backend of a
// VIP, and what the unit does about it.
type BackendVerdict struct {
	VIP     string `json:"vip"`
	Backend string `json:"backend"`
	// Endpoint is the backend's address:port, which rows name.
	Endpoint string `json:"endpoint"`
	Source   string `json:"source"`
	// Health is healthy, failing or unknown (no live row says).
	Health string `json:"health"`
	// Directive is the hosts' target state.
	Directive State    `json:"directive"`
	Load      uint32   `json:"load"`
	Capacity  uint32   `json:"capacity"`
	Hosts     []uint32 `json:"hosts,omitempty"`
	// State is what the forwarder is told (unset: the configuration's
	// or the operator's), and Reason why.
	State  State  `json:"state,omitempty"`
	Reason string `json:"reason,omitempty"`
	// Percent of new connections and Weight in the forwarder's Maglev
	// table, from the VIP's allotment.
	Percent float64 `json:"percent"`
	Weight  int     `json:"weight"`
}

// Key returns the verdict's backend key.
func (v *BackendVerdict) Key() BackendKey { return BackendKey{VIP: v.VIP, Backend: v.Backend} }

// HealthStats count the health protocol's messages.
type HealthStats struct {
	Received       map[string]uint64 `json:"received"` // by message kind
	Refused        map[string]uint64 `json:"refused"`  // by reason
	SnapshotsAsked uint64            `json:"snapshots_asked"`
	SnapshotsIn    uint64            `json:"snapshots_applied"`
	StaleChanges   uint64            `json:"stale_row_changes"`
	PostulateWrong uint64            `json:"postulate_wrong_sent"`
	AgedOut        uint64            `json:"hosts_aged_out"`
	Goodbyes       uint64            `json:"goodbyes"`
}
