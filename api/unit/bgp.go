package unit

import "time"

// BGPView is the unit's BGP speaker as `tetherctl bgp` shows it: its
// sessions to the routers and the VIPs it announces.
type BGPView struct {
	// Enabled is false when the unit has no bgp section (then nothing
	// else is set).
	Enabled  bool   `json:"enabled"`
	ASN      uint32 `json:"asn,omitempty"`
	RouterID string `json:"router_id,omitempty"`
	// Peers holds one entry per configured router.
	Peers []BGPPeer `json:"peers"`
	// Announced holds the prefixes announced to every established
	// session (VIPs and the unit's own SNAT addresses), sorted; Backup
	// those announced as backups (the AS prepended: other units' SNAT
	// addresses, which the routers send here only when their unit
	// announces them no more); Withheld the prefixes of the addresses
	// the unit has but does not announce, with why (BGPWithheld...).
	Announced []string          `json:"announced"`
	Backup    []string          `json:"backup"`
	Withheld  map[string]string `json:"withheld"`
	// Drained is true while an operator has withdrawn every VIP
	// (`tetherctl bgp drain`).
	Drained bool `json:"drained"`
}

// BGPPeer is one router's session.
type BGPPeer struct {
	Address string `json:"address"`
	ASN     uint32 `json:"asn"`
	// State is the session's state as RFC 4271 names it: idle,
	// connect, active, opensent, openconfirm, established.
	State string `json:"state"`
	// Since is when the session last became established (zero when it
	// is not).
	Since time.Time `json:"since,omitzero"`
	// Flaps counts the times the session left established.
	Flaps uint32 `json:"flaps"`
	// LastError is why the session last went down, as the speaker says.
	LastError string `json:"last_error,omitempty"`
}

// Why a VIP address is not announced (BGPView.Withheld).
const (
	BGPWithheldNoBackend = "no backend takes new connections"
	BGPWithheldForwarder = "no forwarder"
	BGPWithheldDrained   = "the unit is drained"
	BGPWithheldNotReady  = "the cluster's atoms are not pulled yet"
)
