package healthpb

import (
	"errors"
	"fmt"
	"net/netip"
)

// Bounds every receiver enforces.
const (
	// MaxOps bounds the operations of one row change and the rows of one
	// snapshot message.
	MaxOps = 2048
	// MaxRows bounds a host's table.
	MaxRows = 8192
	// MaxMembers bounds the heartbeats of a consolidated heartbeat and
	// the members a leader vouches for.
	MaxMembers = 1024
	// MaxNameLen is a DNS name's limit.
	MaxNameLen = 253
	// MaxURLLen bounds a URL pattern.
	MaxURLLen = 256
	// MaxProtoLen bounds an application protocol name.
	MaxProtoLen = 16
	// MinInterval and MaxInterval bound a heartbeat period.
	MinInterval = 10
	MaxInterval = 60000
	// MaxLoad and MaxCapacity are the ranges of Row.load and Row.capacity.
	MaxLoad     = 100
	MaxCapacity = 99
)

// ErrInvalid wraps every validation failure.
var ErrInvalid = errors.New("health: invalid message")

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

// Validate checks everything a receiver relies on: versions, IDs,
// ranges, sizes, addresses and the consistency of snapshots. A message
// that fails must be counted and dropped before it changes any state.
func Validate(env *Envelope) error {
	if env.GetVersion() != Version {
		return fmt.Errorf("%w: envelope version %d", ErrVersion, env.GetVersion())
	}
	switch b := env.GetBody().(type) {
	case *Envelope_Heartbeat:
		return validHeartbeat(b.Heartbeat)
	case *Envelope_Goodbye:
		return validHost(b.Goodbye.GetHost())
	case *Envelope_RowChange:
		return validRowChange(b.RowChange)
	case *Envelope_GetSnapshot:
		if b.GetSnapshot.GetUnit() == 0 {
			return invalid("get_snapshot: unit 0")
		}
		_, err := validChunks(b.GetSnapshot.GetChunks(), true)
		return err
	case *Envelope_SendSnapshot:
		return validSnapshot(b.SendSnapshot)
	case *Envelope_Postulate:
		p := b.Postulate
		if err := validHost(p.GetHost()); err != nil {
			return err
		}
		if err := ValidApp(p.GetApp()); err != nil {
			return err
		}
		return validState("state", p.GetState())
	case *Envelope_PostulateWrong:
		w := b.PostulateWrong
		if w.GetUnit() == 0 {
			return invalid("postulate_wrong: unit 0")
		}
		if err := validHost(w.GetHost()); err != nil {
			return err
		}
		if err := ValidApp(w.GetApp()); err != nil {
			return err
		}
		if w.GetMissing() {
			if w.GetHeld() != State_STATE_UNSPECIFIED {
				return invalid("postulate_wrong: a missing row holds no state")
			}
			return nil
		}
		return validState("held", w.GetHeld())
	case *Envelope_Aggregate:
		return validAggregate(b.Aggregate)
	}
	return invalid("empty envelope")
}

func validHost(h uint32) error {
	if h == 0 {
		return invalid("host 0")
	}
	return nil
}

func validHeartbeat(h *Heartbeat) error {
	if err := validHost(h.GetHost()); err != nil {
		return err
	}
	seen := map[uint32]bool{}
	total := 0
	for _, c := range h.GetChunks() {
		if c.GetChunk() >= NumChunks || seen[c.GetChunk()] {
			return invalid("heartbeat: chunk %d out of range or repeated", c.GetChunk())
		}
		seen[c.GetChunk()] = true
		if c.GetRows() == 0 || c.GetRows() > MaxRows {
			return invalid("heartbeat: chunk %d with %d rows", c.GetChunk(), c.GetRows())
		}
		total += int(c.GetRows())
	}
	if total > MaxRows {
		return invalid("heartbeat: %d rows, at most %d", total, MaxRows)
	}
	if err := validName(h.GetName()); err != nil {
		return err
	}
	if h.GetPort() > 65535 || (h.GetName() != "" && h.GetPort() == 0) {
		return invalid("heartbeat: port %d", h.GetPort())
	}
	if i := h.GetIntervalMs(); i < MinInterval || i > MaxInterval {
		return invalid("heartbeat: interval %d ms outside %d-%d", i, MinInterval, MaxInterval)
	}
	if len(h.GetMembers()) > MaxMembers {
		return invalid("heartbeat: %d members, at most %d", len(h.GetMembers()), MaxMembers)
	}
	for _, m := range h.GetMembers() {
		if m == 0 {
			return invalid("heartbeat: member 0")
		}
	}
	return nil
}

// validName accepts a DNS name or an IP address literal.
func validName(s string) error {
	if len(s) > MaxNameLen {
		return invalid("name of %d bytes", len(s))
	}
	if s == "" {
		return nil
	}
	if _, err := netip.ParseAddr(s); err == nil {
		return nil
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.') {
			return invalid("name %q: not a DNS name or address", s)
		}
	}
	return nil
}

func validRowChange(rc *RowChange) error {
	if err := validHost(rc.GetHost()); err != nil {
		return err
	}
	if n := len(rc.GetOps()); n == 0 || n > MaxOps {
		return invalid("row_change: %d operations, want 1 to %d", n, MaxOps)
	}
	for i, op := range rc.GetOps() {
		switch op.GetOp() {
		case RowOp_OP_ADD, RowOp_OP_UPDATE:
			if err := ValidRow(op.GetRow()); err != nil {
				return fmt.Errorf("row_change op %d: %w", i, err)
			}
		case RowOp_OP_DELETE:
			if err := ValidApp(op.GetRow().GetApp()); err != nil {
				return fmt.Errorf("row_change op %d: %w", i, err)
			}
		default:
			return invalid("row_change op %d: operation %d", i, op.GetOp())
		}
	}
	return nil
}

func validSnapshot(s *SendSnapshot) error {
	if err := validHost(s.GetHost()); err != nil {
		return err
	}
	chunks, err := validChunks(s.GetChunks(), false)
	if err != nil {
		return err
	}
	if len(s.GetRows()) > MaxOps {
		return invalid("send_snapshot: %d rows, at most %d", len(s.GetRows()), MaxOps)
	}
	keys := map[string]bool{}
	for i, r := range s.GetRows() {
		if err := ValidRow(r); err != nil {
			return fmt.Errorf("send_snapshot row %d: %w", i, err)
		}
		if !chunks[ChunkOf(r.GetApp())] {
			return invalid("send_snapshot row %d: chunk %d not listed", i, ChunkOf(r.GetApp()))
		}
		k := Key(r.GetApp())
		if keys[k] {
			return invalid("send_snapshot row %d: %q twice", i, k)
		}
		keys[k] = true
	}
	return nil
}

func validChunks(list []uint32, emptyOK bool) (map[uint32]bool, error) {
	if len(list) == 0 && !emptyOK {
		return nil, invalid("no chunks listed")
	}
	if len(list) > NumChunks {
		return nil, invalid("%d chunks listed", len(list))
	}
	seen := map[uint32]bool{}
	for _, c := range list {
		if c >= NumChunks || seen[c] {
			return nil, invalid("chunk %d out of range or repeated", c)
		}
		seen[c] = true
	}
	return seen, nil
}

func validAggregate(a *Aggregate) error {
	if err := validHost(a.GetLeader()); err != nil {
		return err
	}
	if a.GetOwn() == nil {
		return invalid("aggregate: no heartbeat of the leader's own")
	}
	if err := validHeartbeat(a.GetOwn()); err != nil {
		return fmt.Errorf("aggregate: %w", err)
	}
	if n := len(a.GetFrames()); n > MaxMembers {
		return invalid("aggregate: %d relayed frames, at most %d", n, MaxMembers)
	}
	for i, f := range a.GetFrames() {
		// Each is checked whole (MAC, validity, identity) when it is
		// opened; here only that it could be a frame.
		if len(f) < fixedHeader+1 || len(f) > MaxDatagram {
			return invalid("aggregate frame %d: %d bytes", i, len(f))
		}
	}
	return nil
}

// ValidRow checks a row to add or update.
func ValidRow(r *Row) error {
	if r == nil {
		return invalid("no row")
	}
	if err := ValidApp(r.GetApp()); err != nil {
		return err
	}
	switch r.GetHealth() {
	case Health_HEALTH_UNKNOWN, Health_HEALTH_HEALTHY, Health_HEALTH_FAILING:
	default:
		return invalid("%s: health %d", Key(r.GetApp()), r.GetHealth())
	}
	if r.GetLoad() > MaxLoad {
		return invalid("%s: load %d%%", Key(r.GetApp()), r.GetLoad())
	}
	if r.GetCapacity() > MaxCapacity {
		return invalid("%s: capacity %d, at most %d", Key(r.GetApp()), r.GetCapacity(), MaxCapacity)
	}
	if err := validState("target", r.GetTarget()); err != nil {
		return err
	}
	return validState("current", r.GetCurrent())
}

func validState(what string, s State) error {
	switch s {
	case State_STATE_ACTIVE, State_STATE_DRAINING, State_STATE_INACTIVE:
		return nil
	}
	return invalid("%s state %d", what, s)
}

// ValidApp checks an application identifier: a protocol name, a VIP or
// an endpoint (or both) in canonical address:port form, and an optional
// URL pattern of printable characters without spaces.
func ValidApp(a *AppID) error {
	if a == nil {
		return invalid("no application")
	}
	p := a.GetProto()
	if p == "" || len(p) > MaxProtoLen {
		return invalid("application protocol %q", p)
	}
	for i := 0; i < len(p); i++ {
		if c := p[i]; !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return invalid("application protocol %q", p)
		}
	}
	if a.GetVip() == "" && a.GetEndpoint() == "" {
		return invalid("application has neither a VIP nor an endpoint")
	}
	for _, s := range []string{a.GetVip(), a.GetEndpoint()} {
		if s == "" {
			continue
		}
		ap, err := netip.ParseAddrPort(s)
		if err != nil || ap.String() != s || ap.Port() == 0 || ap.Addr().Zone() != "" {
			return invalid("application address %q: want a canonical address:port", s)
		}
	}
	u := a.GetUrl()
	if len(u) > MaxURLLen {
		return invalid("URL pattern of %d bytes", len(u))
	}
	for i := 0; i < len(u); i++ {
		if u[i] <= ' ' || u[i] >= 0x7f {
			return invalid("URL pattern %q: printable characters without spaces only", u)
		}
	}
	return nil
}
