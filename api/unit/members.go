package unit

import "time"

// MembersView is the cluster of units as this unit sees it (issue 15),
// as the admin API serves it at GET /v1/members and `tetherctl members`
// shows it.
type MembersView struct {
	// Enabled is false when the unit has no cluster section (then
	// nothing else is set).
	Enabled bool `json:"enabled"`
	// Name is this unit's name, Address its gossip address and Boot
	// its boot ID (random per start).
	Name    string `json:"name,omitempty"`
	Address string `json:"address,omitempty"`
	Boot    uint64 `json:"boot,omitempty"`
	// Members holds every unit seen since this one started, itself
	// included, by name; departed ones stay, as dead or left.
	Members []Member `json:"members"`
	// Events counts membership changes seen.
	Events MemberEvents `json:"events"`
	// Refused counts traffic refused, by reason: decrypt (a message or
	// stream no key of ours decrypts: a stranger or a unit with another
	// key), unencrypted (plain gossip), meta (a member's metadata that
	// is malformed, oversized or of another version: its alive messages
	// are ignored, so it never becomes a member).
	Refused map[string]uint64 `json:"refused"`
}

// Member is one unit of the cluster.
type Member struct {
	Name string `json:"name"`
	// Address is its gossip address:port.
	Address string `json:"address"`
	// State is alive, suspect, dead or left.
	State string `json:"state"`
	// Since is when this unit saw it reach State (suspicion is seen
	// when the view is read: memberlist reports no event for it).
	Since time.Time `json:"since"`
	// Boot is its boot ID; a new one means it restarted.
	Boot uint64 `json:"boot"`
	// TunnelSources are its unit.address4 and unit.address6, the
	// sources of its tunnel packets to hosts.
	TunnelSources []string `json:"tunnel_sources,omitempty"`
	// Atoms is its atom stream's address:port.
	Atoms string `json:"atoms,omitempty"`
	// Protocol is the version of its metadata.
	Protocol uint8 `json:"protocol"`
	// Updates counts the times it came back or changed its metadata
	// (memberlist does not expose its incarnation number).
	Updates uint64 `json:"updates"`
	// Self marks this unit.
	Self bool `json:"self,omitempty"`
}

// Member states.
const (
	MemberAlive   = "alive"
	MemberSuspect = "suspect"
	MemberDead    = "dead"
	MemberLeft    = "left"
)

// MemberEvents count membership changes: members that joined (or came
// back), that left gracefully, that failed (declared dead), and updates
// of a member's metadata.
type MemberEvents struct {
	Joins   uint64 `json:"joins"`
	Leaves  uint64 `json:"leaves"`
	Fails   uint64 `json:"fails"`
	Updates uint64 `json:"updates"`
}
