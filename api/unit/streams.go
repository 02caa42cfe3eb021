package unit

import "time"

// StreamsView is the unit's end of the host streams (issue 13), as the
// admin API serves it at GET /v1/streams and `tetherctl streams` shows
// it.
type StreamsView struct {
	// Listen is the stream listener's address; "" when hosts.listen is
	// not configured (then nothing else is set).
	Listen string `json:"listen,omitempty"`
	// Boot is this unit's boot ID: mappings an agent holds from another
	// boot are void.
	Boot uint64 `json:"boot,omitempty"`
	// Streams holds one entry per host that ever connected since the
	// unit started, up or down, by host ID.
	Streams []HostStream `json:"streams"`
	// Refused counts the connections and messages refused, by reason:
	// tls (a handshake failed: another CA, no certificate, not TLS 1.3),
	// identity (the hello named another host than the certificate),
	// invalid (a message failed validation), version, protocol (a valid
	// message out of turn).
	Refused map[string]uint64 `json:"refused"`
	// Tunnel counts the tunnel flows' mappings the unit told hosts about.
	Tunnel TunnelStats `json:"tunnel"`
}

// TunnelStats count what the unit did with its tunnel flows' mappings.
type TunnelStats struct {
	// Published and Removed count mappings sent to hosts, and their
	// removals; Refused those a host could not be sent.
	Published uint64 `json:"published"`
	Removed   uint64 `json:"removed"`
	Refused   uint64 `json:"refused"`
	// Released counts flows whose held packets the forwarder was told to
	// send: after their host's acknowledgement, or at once when the flow
	// has no host (NoHost: no host certificate names its backend address
	// as a tunnel address, or no host's stream has yet) or its host's
	// stream is down (HostDown). NoHost also counts the tunnel flows
	// without a known host that this control process found in the
	// forwarder when it connected (made while no control process was
	// there); their hosts get them when their streams begin.
	Released uint64 `json:"released"`
	NoHost   uint64 `json:"no_host"`
	HostDown uint64 `json:"host_down"`
}

// HostStream is one host's stream to the unit.
type HostStream struct {
	Host uint32 `json:"host"`
	// Address is the agent's address as the stream's TCP connection
	// shows it.
	Address string `json:"address"`
	// State is "up" (hello answered, changes flow) or "down".
	State string `json:"state"`
	// Since is when the stream reached its state.
	Since time.Time `json:"since"`
	// AgentBoot is the agent's boot ID from its last hello.
	AgentBoot uint64 `json:"agent_boot"`
	// Connects counts the streams the host opened.
	Connects uint64 `json:"connects"`
	// Resync is the answer to the last hello: none (the host held what
	// it should) or full.
	Resync string `json:"resync,omitempty"`
	// Seq is the unit's sequence for the host, Acked the last the host
	// acknowledged, Mappings how many flow-ID mappings it should hold.
	Seq      uint64 `json:"seq"`
	Acked    uint64 `json:"acked"`
	Mappings int    `json:"mappings"`
	// MessagesIn and MessagesOut count messages over every stream of
	// the host.
	MessagesIn  uint64 `json:"messages_in"`
	MessagesOut uint64 `json:"messages_out"`
	// Migrations counts connections the unit's acceptor sent the host;
	// MigrationsLost those whose Migrate a stream lost on the way (the
	// host's next hello said it never got them): they failed.
	Migrations     uint64 `json:"migrations,omitempty"`
	MigrationsLost uint64 `json:"migrations_lost,omitempty"`
	// Sessions counts the host's session reports (issue 15): sessions
	// received up and down, resyncs completed (each the host's whole
	// table, or empty when the host reports to another unit), and
	// sessions refused (in invalid or out-of-turn messages, or in a
	// resync that did not add up; each ends the stream).
	SessionsUp      uint64 `json:"sessions_up,omitempty"`
	SessionsDown    uint64 `json:"sessions_down,omitempty"`
	SessionResyncs  uint64 `json:"session_resyncs,omitempty"`
	SessionsRefused uint64 `json:"sessions_refused,omitempty"`
	// Listeners are the VIP:ports whose migrated connections the host
	// says it can hand to an application now (issue 14), "*" for any:
	// null when it never said (the unit then takes it to listen
	// everywhere), [] for none.
	Listeners []string `json:"listeners"`
	// LastError is why the host's last stream ended, if one did (it
	// stays while a newer stream is up).
	LastError string `json:"last_error,omitempty"`
}

// Host stream states.
const (
	StreamUp   = "up"
	StreamDown = "down"
)
