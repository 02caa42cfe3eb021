package hostpb

import (
	"errors"
	"fmt"
	"net/netip"
	"time"
)

// Version is the protocol version every message carries. A receiver
// refuses any other: the stream's meaning changes with it. Version 2:
// a Migrate carries its flow's mapping and is acknowledged as a batch,
// and only failed migrations have a MigrateResult.
const Version = 2

// Bounds every receiver enforces.
const (
	// MaxBatch bounds the additions and the removals of one Mappings
	// message, so a batch stays well under MaxMessage.
	MaxBatch = 1024
	// MaxMessage is the largest message either side accepts (gRPC's
	// MaxRecvMsgSize on both ends): a full batch of IPv6 mappings with
	// protobuf's framing is about 64 KiB; the rest is headroom.
	MaxMessage = 128 << 10
	// Window is the stream's and the connection's HTTP/2 flow-control
	// window on both ends, fixed. gRPC's default, a window it sizes
	// itself from round trips, measures them with a PING sent with the
	// first DATA frame after the last PING's answer: on a stream of
	// small messages, nearly every message. Each Migrate and each Ack
	// then cost a PING, its answer and a WINDOW_UPDATE besides: records
	// to seal and open and wake-ups on a host's busiest path. A fixed
	// window sends a WINDOW_UPDATE per quarter window received (here,
	// thousands of Migrates) and bounds what a stream buffers.
	Window = 1 << 20
	// MaxListeners bounds the endpoints of one Listeners message; a
	// host with more says any.
	MaxListeners = 1024
	// MaxUnitName bounds a unit's name (a DNS name's limit, since the
	// unit's certificate carries it as one).
	MaxUnitName = 253
)

var (
	// ErrInvalid wraps every validation failure.
	ErrInvalid = errors.New("host stream: invalid message")
	// ErrVersion is a message of another protocol version.
	ErrVersion = errors.New("host stream: unknown version")
)

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

// ValidateAgent checks everything a unit relies on in a message from an
// agent. A message that fails must be counted and refused before it
// changes any state.
func ValidateAgent(m *AgentMessage) error {
	if m.GetVersion() != Version {
		return fmt.Errorf("%w: %d", ErrVersion, m.GetVersion())
	}
	switch b := m.GetBody().(type) {
	case *AgentMessage_Hello:
		return validAgentHello(b.Hello)
	case *AgentMessage_Ack:
		if b.Ack == nil {
			return invalid("ack: empty")
		}
		return nil
	case *AgentMessage_MigrateResult:
		return validMigrateResult(b.MigrateResult)
	case *AgentMessage_MigrationEnded:
		return validMigrationEnded(b.MigrationEnded)
	case *AgentMessage_Sessions:
		return validSessions(b.Sessions)
	case *AgentMessage_Listeners:
		return validListeners(b.Listeners)
	default:
		return invalid("agent message without a body")
	}
}

// ValidateUnit checks everything an agent relies on in a message from a
// unit, as ValidateAgent does for the other direction.
func ValidateUnit(m *UnitMessage) error {
	if m.GetVersion() != Version {
		return fmt.Errorf("%w: %d", ErrVersion, m.GetVersion())
	}
	switch b := m.GetBody().(type) {
	case *UnitMessage_Hello:
		return validUnitHello(b.Hello)
	case *UnitMessage_Mappings:
		return validMappings(b.Mappings)
	case *UnitMessage_ResyncEnd:
		if b.ResyncEnd == nil {
			return invalid("resync_end: empty")
		}
		return nil
	case *UnitMessage_Migrate:
		return validMigrate(b.Migrate)
	default:
		return invalid("unit message without a body")
	}
}

func validAgentHello(h *AgentHello) error {
	if h == nil {
		return invalid("hello: empty")
	}
	if h.GetHost() == 0 {
		return invalid("hello: host 0")
	}
	if h.GetBoot() == 0 {
		return invalid("hello: boot 0")
	}
	if hd := h.GetHolding(); hd != nil && hd.GetUnitBoot() == 0 {
		return invalid("hello: holding of unit boot 0")
	}
	return nil
}

func validUnitHello(h *UnitHello) error {
	if h == nil {
		return invalid("hello: empty")
	}
	if err := ValidUnitName(h.GetUnit()); err != nil {
		return err
	}
	if h.GetBoot() == 0 {
		return invalid("hello: boot 0")
	}
	if h.GetHost() == 0 {
		return invalid("hello: host 0")
	}
	if r := h.GetResync(); r != Resync_RESYNC_NONE && r != Resync_RESYNC_FULL {
		return invalid("hello: resync %d", int32(r))
	}
	if len(h.GetTunnelSources()) > MaxTunnelSources {
		return invalid("hello: %d tunnel sources, at most %d", len(h.GetTunnelSources()), MaxTunnelSources)
	}
	for _, a := range h.GetTunnelSources() {
		if len(a) != 4 && len(a) != 16 {
			return invalid("hello: a tunnel source of %d bytes", len(a))
		}
	}
	return nil
}

// MaxTunnelSources bounds the addresses a unit's hello names (one per
// family is what a unit has).
const MaxTunnelSources = 8

// ValidUnitName checks a unit's name as the stream carries it: 1 to
// MaxUnitName printable ASCII characters without spaces.
func ValidUnitName(name string) error {
	if name == "" || len(name) > MaxUnitName {
		return invalid("unit name of %d bytes", len(name))
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; c <= ' ' || c > '~' {
			return invalid("unit name %q: byte %#x", name, c)
		}
	}
	return nil
}

func validMappings(m *Mappings) error {
	if m == nil {
		return invalid("mappings: empty")
	}
	if m.GetSeq() == 0 {
		return invalid("mappings: seq 0")
	}
	if len(m.GetAdd()) > MaxBatch || len(m.GetRemove()) > MaxBatch {
		return invalid("mappings: %d additions, %d removals, more than %d", len(m.GetAdd()), len(m.GetRemove()), MaxBatch)
	}
	// A flow ID appears once among the additions and once among the
	// removals: twice would make the batch's meaning depend on order.
	seen := make(map[uint32]bool, len(m.GetAdd()))
	for i, a := range m.GetAdd() {
		if a == nil {
			return invalid("mappings: add[%d] empty", i)
		}
		if seen[a.GetFlowId()] {
			return invalid("mappings: flow ID %d added twice", a.GetFlowId())
		}
		seen[a.GetFlowId()] = true
		if err := ValidTuple(a.GetTuple()); err != nil {
			return fmt.Errorf("mappings: add[%d]: %w", i, err)
		}
	}
	clear(seen)
	for _, id := range m.GetRemove() {
		if seen[id] {
			return invalid("mappings: flow ID %d removed twice", id)
		}
		seen[id] = true
	}
	return nil
}

// ValidTuple checks a tuple: TCP or UDP, two addresses of one family,
// ports 1 to 65535.
func ValidTuple(t *Tuple) error {
	if t == nil {
		return invalid("tuple: empty")
	}
	if p := t.GetProto(); p != Proto_PROTO_TCP && p != Proto_PROTO_UDP {
		return invalid("tuple: protocol %d", int32(p))
	}
	c, v := len(t.GetClient()), len(t.GetVip())
	if (c != 4 && c != 16) || c != v {
		return invalid("tuple: addresses of %d and %d bytes", c, v)
	}
	for _, p := range []uint32{t.GetClientPort(), t.GetVipPort()} {
		if p == 0 || p > 65535 {
			return invalid("tuple: port %d", p)
		}
	}
	return nil
}

// MaxMigrateData bounds the acknowledged bytes a Migrate carries: the
// acceptor's receive window, which is all it can have acknowledged.
const MaxMigrateData = 64 << 10

// MaxMigrateError bounds a MigrateResult's error text.
const MaxMigrateError = 256

func validMigrate(m *Migrate) error {
	if m == nil {
		return invalid("migrate: empty")
	}
	if m.GetId() == 0 {
		return invalid("migrate: id 0")
	}
	if m.GetFlowId() == 0 || m.GetSeq() == 0 {
		return invalid("migrate: flow ID %d at seq %d, want neither 0", m.GetFlowId(), m.GetSeq())
	}
	if len(m.GetData()) > MaxMigrateData {
		return invalid("migrate: %d bytes of data, at most %d", len(m.GetData()), MaxMigrateData)
	}
	s := m.GetState()
	if s == nil {
		return invalid("migrate: no state")
	}
	if err := validMigrateAddrs(s.GetClient(), s.GetVip()); err != nil {
		return err
	}
	for _, p := range []uint32{s.GetClientPort(), s.GetVipPort()} {
		if p == 0 || p > 65535 {
			return invalid("migrate: port %d", p)
		}
	}
	// The sequence numbers must agree with the data: the receive queue
	// starts after the client's SYN and ends at rcv_nxt.
	if s.GetRcvNxt() != s.GetRemoteIsn()+1+uint32(len(m.GetData())) {
		return invalid("migrate: rcv_nxt %d is not remote_isn %d + 1 + %d bytes", s.GetRcvNxt(), s.GetRemoteIsn(), len(m.GetData()))
	}
	if s.GetSndNxt() != s.GetLocalIsn()+1 {
		return invalid("migrate: snd_nxt %d is not local_isn %d + 1", s.GetSndNxt(), s.GetLocalIsn())
	}
	if s.GetMss() < 64 || s.GetMss() > 65535 {
		return invalid("migrate: mss %d", s.GetMss())
	}
	if s.GetSndWscale() > 14 || s.GetRcvWscale() > 14 {
		return invalid("migrate: window scale %d/%d, at most 14", s.GetSndWscale(), s.GetRcvWscale())
	}
	if !s.GetWindowScaling() && (s.GetSndWscale() != 0 || s.GetRcvWscale() != 0) {
		return invalid("migrate: window scale without window scaling")
	}
	if s.GetSndWnd() > 65535<<s.GetSndWscale() || s.GetRcvWnd() > 65535<<s.GetRcvWscale() {
		return invalid("migrate: window %d/%d beyond what the scale allows", s.GetSndWnd(), s.GetRcvWnd())
	}
	return nil
}

// validMigrateAddrs checks a Migrate's client and VIP: two addresses of
// one family, as a tuple's (ValidTuple), and besides, for IPv6, ones the
// host can bind and connect a socket to as they are. An IPv4-mapped
// address is refused rather than read as IPv4: an IPv4 connection's
// addresses are 4 bytes, and one connection has one form (the flow's
// mapping, which the Migrate carries, is matched byte for byte). A
// link-local address needs the zone the message cannot carry;
// unspecified and multicast addresses are no connection's ends.
func validMigrateAddrs(client, vip []byte) error {
	c, v := len(client), len(vip)
	if (c != 4 && c != 16) || c != v {
		return invalid("migrate: addresses of %d and %d bytes, want 4 (IPv4) or 16 (IPv6), both of one family", c, v)
	}
	if c == 4 {
		return nil
	}
	for _, a := range []struct {
		name string
		ip   netip.Addr
	}{{"client", netip.AddrFrom16([16]byte(client))}, {"vip", netip.AddrFrom16([16]byte(vip))}} {
		switch {
		case a.ip.Is4In6():
			return invalid("migrate: %s %v is IPv4-mapped: an IPv4 connection's addresses are 4 bytes", a.name, a.ip)
		case a.ip.IsUnspecified() || a.ip.IsMulticast():
			return invalid("migrate: %s %v is not a unicast address", a.name, a.ip)
		case a.ip.IsLinkLocalUnicast():
			return invalid("migrate: %s %v is link-local: the message carries no zone to bind or connect it in", a.name, a.ip)
		}
	}
	return nil
}

func validMigrateResult(r *MigrateResult) error {
	if r == nil {
		return invalid("migrate_result: empty")
	}
	if r.GetId() == 0 {
		return invalid("migrate_result: id 0")
	}
	if len(r.GetError()) > MaxMigrateError {
		return invalid("migrate_result: error of %d bytes", len(r.GetError()))
	}
	return nil
}

func validMigrationEnded(e *MigrationEnded) error {
	if e == nil {
		return invalid("migration_ended: empty")
	}
	if e.GetId() == 0 {
		return invalid("migration_ended: id 0")
	}
	if r := e.GetReason(); r != EndReason_END_REASON_CLOSED && r != EndReason_END_REASON_HANDOFF_FAILED {
		return invalid("migration_ended: reason %d", int32(r))
	}
	return ValidTuple(e.GetTuple())
}

// Bounds of the sessions (see host.proto's Sessions).
const (
	// MaxSessionBatch bounds the sessions (up and down together) of one
	// Sessions message, so that the largest batch stays under
	// MaxMessage (TestSessionBatchFitsMessage).
	MaxSessionBatch = 256
	// MaxHostSessions bounds the sessions one host may hold, whatever
	// an agent's configuration allows: a resync series longer than
	// this is refused.
	MaxHostSessions = 1 << 20
	// MaxSessionKey bounds an APP_KEY session's key.
	MaxSessionKey = 256
	// MaxApplication bounds a session's application name.
	MaxApplication = 64
	// MaxIdleTimeout bounds a CLIENT_IP session's idle timeout.
	MaxIdleTimeout = 7 * 24 * time.Hour
)

func validListeners(l *Listeners) error {
	if l == nil {
		return invalid("listeners: empty")
	}
	eps := l.GetEndpoints()
	switch {
	case len(eps) > MaxListeners:
		return invalid("listeners: %d endpoints, at most %d", len(eps), MaxListeners)
	case l.GetAny() && len(eps) > 0:
		return invalid("listeners: any with %d endpoints", len(eps))
	}
	seen := make(map[netip.AddrPort]bool, len(eps))
	for i, e := range eps {
		ap, err := e.AddrPort()
		if err != nil {
			return invalid("listeners: endpoint %d: %v", i, err)
		}
		if seen[ap] {
			return invalid("listeners: endpoint %d: %v twice", i, ap)
		}
		seen[ap] = true
	}
	return nil
}

// AddrPort is e as an address and port; an error when its address is not
// 4 or 16 bytes or its port is 0 or above 65535.
func (e *Endpoint) AddrPort() (netip.AddrPort, error) {
	a, ok := netip.AddrFromSlice(e.GetAddress())
	switch {
	case !ok:
		return netip.AddrPort{}, fmt.Errorf("address of %d bytes, want 4 or 16", len(e.GetAddress()))
	case e.GetPort() == 0 || e.GetPort() > 65535:
		return netip.AddrPort{}, fmt.Errorf("port %d, want 1 to 65535", e.GetPort())
	}
	return netip.AddrPortFrom(a, uint16(e.GetPort())), nil
}

// EndpointOf is ap as an Endpoint (an IPv4-mapped address as IPv4).
func EndpointOf(ap netip.AddrPort) *Endpoint {
	return &Endpoint{Address: ap.Addr().Unmap().AsSlice(), Port: uint32(ap.Port())}
}

func validSessions(b *Sessions) error {
	if b == nil {
		return invalid("sessions: empty")
	}
	if n := len(b.GetUp()) + len(b.GetDown()); n > MaxSessionBatch {
		return invalid("sessions: %d sessions in one batch, at most %d", n, MaxSessionBatch)
	}
	if !b.GetResync() && (b.GetResyncBegin() || b.GetResyncEnd()) {
		return invalid("sessions: resync_begin or resync_end without resync")
	}
	if b.GetResync() && len(b.GetDown()) > 0 {
		return invalid("sessions: a resync carries %d sessions down, want up only", len(b.GetDown()))
	}
	if !b.GetResyncEnd() && b.GetCount() != 0 {
		return invalid("sessions: count %d without resync_end", b.GetCount())
	}
	if b.GetCount() > MaxHostSessions {
		return invalid("sessions: count %d, at most %d", b.GetCount(), MaxHostSessions)
	}
	if b.GetResyncBegin() && b.GetResyncEnd() && int(b.GetCount()) != len(b.GetUp()) {
		return invalid("sessions: a one-batch resync of %d sessions says count %d", len(b.GetUp()), b.GetCount())
	}
	// A session appears once in a batch: twice would make the batch's
	// meaning depend on the order of up and down.
	seen := make(map[string]bool, len(b.GetUp())+len(b.GetDown()))
	for _, list := range []struct {
		name string
		ss   []*Session
	}{{"up", b.GetUp()}, {"down", b.GetDown()}} {
		for i, s := range list.ss {
			if err := ValidSession(s); err != nil {
				return fmt.Errorf("sessions: %s[%d]: %w", list.name, i, err)
			}
			id := SessionID(s)
			if seen[id] {
				return invalid("sessions: %s[%d] appears twice in the batch", list.name, i)
			}
			seen[id] = true
		}
	}
	return nil
}

// ValidSession checks one session: its kind, the fields the kind uses
// (and no others), their lengths and ranges.
func ValidSession(s *Session) error {
	if s == nil {
		return invalid("session: empty")
	}
	if len(s.GetApplication()) > MaxApplication {
		return invalid("session: application name of %d bytes, at most %d", len(s.GetApplication()), MaxApplication)
	}
	for i := 0; i < len(s.GetApplication()); i++ {
		if c := s.GetApplication()[i]; c < ' ' || c > '~' {
			return invalid("session: application name: byte %#x", c)
		}
	}
	c, v := len(s.GetClient()), len(s.GetVip())
	validAddr := func(n int) bool { return n == 4 || n == 16 }
	validPort := func(p uint32) bool { return p > 0 && p <= 65535 }
	switch s.GetKind() {
	case SessionKind_SESSION_KIND_TCP:
		if !validAddr(c) || c != v {
			return invalid("session: tcp: addresses of %d and %d bytes", c, v)
		}
		if !validPort(s.GetClientPort()) || !validPort(s.GetVipPort()) {
			return invalid("session: tcp: ports %d and %d", s.GetClientPort(), s.GetVipPort())
		}
		if len(s.GetKey()) > 0 || s.GetIdleTimeoutMs() != 0 {
			return invalid("session: tcp: with a key or an idle timeout")
		}
	case SessionKind_SESSION_KIND_CLIENT_IP:
		if !validAddr(c) {
			return invalid("session: client_ip: client address of %d bytes", c)
		}
		if s.GetClientPort() != 0 || len(s.GetKey()) > 0 {
			return invalid("session: client_ip: with a client port or a key")
		}
		if v != 0 || s.GetVipPort() != 0 {
			if v != c || !validPort(s.GetVipPort()) {
				return invalid("session: client_ip: scope of %d bytes port %d, want the client's family and a port", v, s.GetVipPort())
			}
		}
		if t := s.GetIdleTimeoutMs(); t == 0 || time.Duration(t)*time.Millisecond > MaxIdleTimeout {
			return invalid("session: client_ip: idle timeout %d ms, want 1 ms to %v", t, MaxIdleTimeout)
		}
	case SessionKind_SESSION_KIND_APP_KEY:
		if k := len(s.GetKey()); k == 0 || k > MaxSessionKey {
			return invalid("session: app_key: key of %d bytes, want 1 to %d", k, MaxSessionKey)
		}
		if !validAddr(v) || !validPort(s.GetVipPort()) {
			return invalid("session: app_key: VIP of %d bytes port %d", v, s.GetVipPort())
		}
		if c != 0 || s.GetClientPort() != 0 || s.GetIdleTimeoutMs() != 0 {
			return invalid("session: app_key: with a client or an idle timeout")
		}
	default:
		return invalid("session: kind %d", int32(s.GetKind()))
	}
	return nil
}

// SessionID is a valid session's identity as a map key: its kind and
// the fields the kind uses, length-prefixed so that no two identities
// share an encoding. Application and idle timeout are not part of it.
func SessionID(s *Session) string {
	b := make([]byte, 0, 8+len(s.GetClient())+len(s.GetVip())+len(s.GetKey()))
	b = append(b, byte(s.GetKind()), byte(len(s.GetClient())))
	b = append(b, s.GetClient()...)
	b = append(b, byte(s.GetClientPort()>>8), byte(s.GetClientPort()), byte(len(s.GetVip())))
	b = append(b, s.GetVip()...)
	b = append(b, byte(s.GetVipPort()>>8), byte(s.GetVipPort()))
	b = append(b, s.GetKey()...)
	return string(b)
}
