package unit

import "fmt"

// Mode is a VIP's forwarding mode. Its text form is the configuration's
// name for it (vips[].mode).
type Mode uint8

// Forwarding modes. The zero Mode is "none": a route whose action has no
// mode names only a backend (see Action).
const (
	ModeNAT     Mode = iota + 1 // source and destination rewritten
	ModeHalfNAT                 // destination rewritten; replies return through the unit
	ModeTunnel                  // flow-ID tunnel: the ports carry a 32-bit flow ID, zero overhead
	ModeIPIP                    // IP-in-IP to the backend, direct server return
	// ModeL7 is a VIP mode, never a flow's: the unit's acceptor takes
	// the connection, reads the first request and migrates the
	// connection to the host it chooses; the flow then forwards as
	// ModeTunnel.
	ModeL7
)

var modeNames = [...]string{"", "nat", "halfnat", "tunnel", "ipip", "l7"}

// Modes lists the modes in order.
func Modes() []Mode { return []Mode{ModeNAT, ModeHalfNAT, ModeTunnel, ModeIPIP, ModeL7} }

// String returns the mode's configuration name ("" for none).
func (m Mode) String() string {
	if int(m) < len(modeNames) {
		return modeNames[m]
	}
	return fmt.Sprintf("mode-%d", uint8(m))
}

// Valid reports whether m is one of the forwarding modes.
func (m Mode) Valid() bool { return m >= ModeNAT && m <= ModeL7 }

// ParseMode returns the mode a configuration name stands for.
func ParseMode(s string) (Mode, error) {
	for i, n := range modeNames {
		if i > 0 && n == s {
			return Mode(i), nil
		}
	}
	return 0, fmt.Errorf("mode %q: want nat, halfnat, tunnel, ipip or l7", s)
}

// MarshalText writes the mode's name.
func (m Mode) MarshalText() ([]byte, error) { return []byte(m.String()), nil }

// UnmarshalText reads a mode's name; "" is none.
func (m *Mode) UnmarshalText(b []byte) error {
	if len(b) == 0 {
		*m = 0
		return nil
	}
	v, err := ParseMode(string(b))
	if err != nil {
		return err
	}
	*m = v
	return nil
}

// State is a backend's administrative state: what it may do with new and
// existing flows. Its text form is the configuration's name for it
// (vips[].backends[].state).
type State uint8

// Backend states. The zero State is "unset": the configuration's state
// applies (in an override) or active (in the configuration).
const (
	StateActive   State = iota + 1 // takes new flows
	StateDraining                  // keeps its flows, takes no new ones
	StateInactive                  // its flows are dropped
	// StateRemoved marks a backend that left the configuration: its
	// flows finish, as a draining backend's do. Only the forwarder
	// reports it; no configuration or operator sets it.
	StateRemoved
)

var stateNames = [...]string{"", "active", "draining", "inactive", "removed"}

// String returns the state's name ("" for unset).
func (s State) String() string {
	if int(s) < len(stateNames) {
		return stateNames[s]
	}
	return fmt.Sprintf("state-%d", uint8(s))
}

// ParseState returns the state an operator or a configuration names:
// active, draining or inactive.
func ParseState(s string) (State, error) {
	switch s {
	case "active":
		return StateActive, nil
	case "draining":
		return StateDraining, nil
	case "inactive":
		return StateInactive, nil
	}
	return 0, fmt.Errorf("state %q: want active, draining or inactive", s)
}

// Stricter reports whether s keeps more traffic from a backend than t:
// inactive > draining > active (or unset). Health verdicts and operators'
// states combine by taking the stricter.
func (s State) Stricter(t State) bool { return s.strictness() > t.strictness() }

func (s State) strictness() int {
	switch s {
	case StateInactive:
		return 2
	case StateDraining, StateRemoved:
		return 1
	}
	return 0
}

// MarshalText writes the state's name.
func (s State) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText reads a state's name; "" is unset.
func (s *State) UnmarshalText(b []byte) error {
	switch string(b) {
	case "":
		*s = 0
		return nil
	case "removed":
		*s = StateRemoved
		return nil
	}
	v, err := ParseState(string(b))
	if err != nil {
		return err
	}
	*s = v
	return nil
}

// FlowFlags are a flow-table entry's TCP state and pairing. The flow
// table keeps them; flow events carry them, so that a restarted
// forwarder gets its entries back exactly.
type FlowFlags uint8

// Flow flags.
const (
	// FlowSYN: a SYN was seen in this entry's direction.
	FlowSYN FlowFlags = 1 << iota
	// FlowEstablished: a segment without SYN was seen in this direction.
	FlowEstablished
	// FlowFIN: a FIN was seen in this direction.
	FlowFIN
	// FlowRST: a RST was seen in this direction.
	FlowRST
	// FlowPeer: the entry has a peer, keyed (A:PortA → B:PortB).
	FlowPeer
	// FlowReply: the entry is the reply direction of a pair.
	FlowReply
	// FlowAnswered: a packet passed this reply entry, so the backend
	// answered. A pair without it is unreplied, and goes first under
	// pressure (see flow.Unreplied).
	FlowAnswered
	// FlowHeld: a tunnel flow whose host has not yet confirmed that it
	// holds the flow's mapping; its packets wait in the forwarder, which
	// the control process tells when the host has it.
	FlowHeld
)

var flagNames = [...]string{"syn", "est", "fin", "rst", "peer", "reply", "ans", "held"}

// String lists the flags set, comma-separated ("-" for none).
func (f FlowFlags) String() string {
	out := ""
	for i, n := range flagNames {
		if f&(1<<i) != 0 {
			if out != "" {
				out += ","
			}
			out += n
		}
	}
	if out == "" {
		return "-"
	}
	return out
}
