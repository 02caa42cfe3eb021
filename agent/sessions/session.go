package sessions

import (
	"errors"
	"fmt"
	"net/netip"
	"time"
)

// Kind is what identifies a session.
type Kind uint8

// The kinds of session.
const (
	// KindTCP is one TCP connection: Client, ClientPort and VIP.
	KindTCP Kind = iota + 1
	// KindClientIP is every connection of one client address (Client),
	// to one VIP address and port when VIP is set, until it has been
	// idle for IdleTimeout.
	KindClientIP
	// KindAppKey is an application-defined key (Key) scoped to one VIP
	// address and port.
	KindAppKey
)

var kindNames = map[Kind]string{KindTCP: "tcp", KindClientIP: "client_ip", KindAppKey: "app_key"}

// String is the kind's name: tcp, client_ip or app_key.
func (k Kind) String() string {
	if n, ok := kindNames[k]; ok {
		return n
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// MarshalText implements encoding.TextMarshaler.
func (k Kind) MarshalText() ([]byte, error) {
	n, ok := kindNames[k]
	if !ok {
		return nil, fmt.Errorf("session kind %d", uint8(k))
	}
	return []byte(n), nil
}

// UnmarshalText implements encoding.TextUnmarshaler.
func (k *Kind) UnmarshalText(b []byte) error {
	for kk, n := range kindNames {
		if n == string(b) {
			*k = kk
			return nil
		}
	}
	return fmt.Errorf("session kind %q: want tcp, client_ip or app_key", b)
}

// Bounds of a session. api/hostpb carries the same bounds for the wire
// (agent/streams tests that they agree).
const (
	// MaxKey bounds an app_key session's key.
	MaxKey = 256
	// MaxApplication bounds the application's name.
	MaxApplication = 64
	// MaxIdleTimeout bounds a client_ip session's idle timeout.
	MaxIdleTimeout = 7 * 24 * time.Hour
)

// Session is one session as applications report it and the table
// holds it. Its identity is Kind and the fields the kind uses;
// Application and IdleTimeoutMS describe it.
type Session struct {
	Kind Kind `json:"kind"`
	// Client is the client's address (tcp, client_ip).
	Client netip.Addr `json:"client,omitzero"`
	// ClientPort is the client's port (tcp).
	ClientPort uint16 `json:"client_port,omitempty"`
	// VIP is the address and port the client reached (tcp, app_key;
	// client_ip when the session is scoped to one VIP).
	VIP netip.AddrPort `json:"vip,omitzero"`
	// Key is the application's key, 1 to MaxKey bytes (app_key).
	Key []byte `json:"key,omitempty"`
	// Application names the application, at most MaxApplication
	// printable ASCII bytes; optional.
	Application string `json:"application,omitempty"`
	// IdleTimeoutMS is how long a client_ip session lives without being
	// established again, 1 ms to MaxIdleTimeout.
	IdleTimeoutMS uint32 `json:"idle_timeout_ms,omitempty"`
}

// ErrInvalid wraps every reason a session is refused as malformed.
var ErrInvalid = errors.New("invalid session")

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

// IdleTimeout is IdleTimeoutMS as a duration.
func (s Session) IdleTimeout() time.Duration {
	return time.Duration(s.IdleTimeoutMS) * time.Millisecond
}

// Canonical is s with IPv4-mapped IPv6 addresses made IPv4, so that one
// connection has one identity however the application's socket
// reported it.
func (s Session) Canonical() Session {
	s.Client = s.Client.Unmap()
	if s.VIP.IsValid() {
		s.VIP = netip.AddrPortFrom(s.VIP.Addr().Unmap(), s.VIP.Port())
	}
	return s
}

// ValidIdentity checks the fields that identify s: what a terminate
// needs. The addresses must be canonical (Canonical).
func (s Session) ValidIdentity() error {
	for _, a := range []netip.Addr{s.Client, s.VIP.Addr()} {
		if a.Zone() != "" {
			return invalid("%v: address %v has a zone", s.Kind, a)
		}
		if a.Is4In6() {
			return invalid("%v: address %v is IPv4-mapped", s.Kind, a)
		}
	}
	vipSet := s.VIP.IsValid() || s.VIP.Port() != 0
	switch s.Kind {
	case KindTCP:
		if !s.Client.IsValid() || !s.VIP.IsValid() || s.Client.Is4() != s.VIP.Addr().Is4() {
			return invalid("tcp: want the client's and the VIP's addresses, of one family")
		}
		if s.ClientPort == 0 || s.VIP.Port() == 0 {
			return invalid("tcp: want the client's port and the VIP's port")
		}
		if len(s.Key) > 0 {
			return invalid("tcp: a key belongs to app_key sessions")
		}
	case KindClientIP:
		if !s.Client.IsValid() {
			return invalid("client_ip: want the client's address")
		}
		if s.ClientPort != 0 || len(s.Key) > 0 {
			return invalid("client_ip: no client port or key")
		}
		if vipSet && (!s.VIP.IsValid() || s.VIP.Port() == 0 || s.VIP.Addr().Is4() != s.Client.Is4()) {
			return invalid("client_ip: a scope is the VIP's address and port, of the client's family")
		}
	case KindAppKey:
		if len(s.Key) == 0 || len(s.Key) > MaxKey {
			return invalid("app_key: key of %d bytes, want 1 to %d", len(s.Key), MaxKey)
		}
		if !s.VIP.IsValid() || s.VIP.Port() == 0 {
			return invalid("app_key: want the VIP's address and port")
		}
		if s.Client.IsValid() || s.ClientPort != 0 {
			return invalid("app_key: no client address or port")
		}
	default:
		return invalid("kind %d", uint8(s.Kind))
	}
	return nil
}

// Validate checks all of s: its identity, and what describes it.
func (s Session) Validate() error {
	if err := s.ValidIdentity(); err != nil {
		return err
	}
	if len(s.Application) > MaxApplication {
		return invalid("application name of %d bytes, at most %d", len(s.Application), MaxApplication)
	}
	for i := 0; i < len(s.Application); i++ {
		if c := s.Application[i]; c < ' ' || c > '~' {
			return invalid("application name: byte %#x", c)
		}
	}
	if s.Kind == KindClientIP {
		if s.IdleTimeoutMS == 0 || s.IdleTimeout() > MaxIdleTimeout {
			return invalid("client_ip: idle timeout %d ms, want 1 ms to %v", s.IdleTimeoutMS, MaxIdleTimeout)
		}
	} else if s.IdleTimeoutMS != 0 {
		return invalid("%v: an idle timeout belongs to client_ip sessions", s.Kind)
	}
	return nil
}

// String is the session's identity for people and logs.
func (s Session) String() string {
	switch s.Kind {
	case KindTCP:
		return fmt.Sprintf("tcp %v → %v", netip.AddrPortFrom(s.Client, s.ClientPort), s.VIP)
	case KindClientIP:
		if s.VIP.IsValid() {
			return fmt.Sprintf("client_ip %v → %v", s.Client, s.VIP)
		}
		return fmt.Sprintf("client_ip %v", s.Client)
	case KindAppKey:
		return fmt.Sprintf("app_key %q @ %v", s.Key, s.VIP)
	}
	return s.Kind.String()
}

// TCP is the session of a TCP connection the application accepted, from
// its addresses: remote is the client, local the VIP the client reached
// (a tunnelled or migrated connection's local address is the VIP).
func TCP(remote, local netip.AddrPort, application string) Session {
	return Session{Kind: KindTCP, Client: remote.Addr(), ClientPort: remote.Port(), VIP: local, Application: application}.Canonical()
}

// id is a session's identity as a map key.
type id struct {
	kind   Kind
	client netip.Addr
	port   uint16
	vip    netip.AddrPort
	key    string
}

func (s Session) id() id {
	return id{kind: s.Kind, client: s.Client, port: s.ClientPort, vip: s.VIP, key: string(s.Key)}
}

// compare orders identities for listing: by kind, VIP, client, port, key.
func (a id) compare(b id) int {
	if a.kind != b.kind {
		return int(a.kind) - int(b.kind)
	}
	if c := a.vip.Compare(b.vip); c != 0 {
		return c
	}
	if c := a.client.Compare(b.client); c != 0 {
		return c
	}
	if a.port != b.port {
		return int(a.port) - int(b.port)
	}
	switch {
	case a.key < b.key:
		return -1
	case a.key > b.key:
		return 1
	}
	return 0
}
