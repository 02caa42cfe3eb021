package atompb

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// Version is the protocol version every message carries. A receiver
// refuses any other: the stream's meaning changes with it.
const Version = 1

// Bounds every receiver enforces.
const (
	// MaxBatch bounds the atoms of one Add, Delete or Return and the
	// keys of one Query.
	MaxBatch = 1024
	// MaxKey bounds a key: the longest route key (IPv6) is under 100
	// bytes; application session keys may be up to 256 bytes after
	// their prefix.
	MaxKey = 384
	// MaxHost bounds a host's address text.
	MaxHost = 64
	// MaxData bounds an atom's data.
	MaxData = 256
	// MaxUnitName bounds a unit's name (a DNS name's limit).
	MaxUnitName = 253
	// MaxMessage is the largest message either side accepts (gRPC's
	// MaxRecvMsgSize on both ends): a full batch of the largest atoms
	// with protobuf's framing stays under it.
	MaxMessage = 1 << 20
	// Window is the stream's and the connection's HTTP/2 flow-control
	// window on both ends, fixed (as hostpb.Window, for the same
	// reason: gRPC's self-sized window PINGs with nearly every message
	// of a stream of small, sparse ones): four of the largest messages.
	Window = 4 * MaxMessage
	// MaxTimeout bounds an atom's timeout: a day.
	MaxTimeout = 24 * 3600 * 1000
)

// Key kinds: every key starts with one of these.
const (
	KindRoute   = "route/"
	KindSession = "session/"
)

var (
	// ErrInvalid wraps every validation failure.
	ErrInvalid = errors.New("atom stream: invalid message")
	// ErrVersion is a message of another protocol version.
	ErrVersion = errors.New("atom stream: unknown version")
)

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

// ValidateRequest checks everything a unit relies on in a message from
// another unit. A message that fails must be refused before it changes
// any state.
func ValidateRequest(m *Request) error {
	if m.GetVersion() != Version {
		return fmt.Errorf("%w: %d", ErrVersion, m.GetVersion())
	}
	switch b := m.GetBody().(type) {
	case *Request_Hello:
		return validHello(b.Hello)
	case *Request_Add:
		if b.Add == nil {
			return invalid("add: empty")
		}
		return validAtoms("add", b.Add.GetAtoms(), true)
	case *Request_Delete:
		if b.Delete == nil {
			return invalid("delete: empty")
		}
		return validAtoms("delete", b.Delete.GetAtoms(), false)
	case *Request_Query:
		if b.Query == nil {
			return invalid("query: empty")
		}
		return validQuery(b.Query)
	case *Request_Pull:
		if b.Pull == nil {
			return invalid("pull: empty")
		}
		return nil
	default:
		return invalid("request without a body")
	}
}

// ValidateReply checks a message from the unit a stream was dialled to.
func ValidateReply(m *Reply) error {
	if m.GetVersion() != Version {
		return fmt.Errorf("%w: %d", ErrVersion, m.GetVersion())
	}
	switch b := m.GetBody().(type) {
	case *Reply_Ack:
		if b.Ack == nil {
			return invalid("ack: empty")
		}
		return nil
	case *Reply_Return:
		if b.Return == nil {
			return invalid("return: empty")
		}
		return validAtoms("return", b.Return.GetAtoms(), true)
	default:
		return invalid("reply without a body")
	}
}

func validHello(h *Hello) error {
	if h == nil {
		return invalid("hello: empty")
	}
	if err := ValidUnitName(h.GetUnit()); err != nil {
		return invalid("hello: %v", err)
	}
	if h.GetBoot() == 0 {
		return invalid("hello: boot ID 0")
	}
	return nil
}

// ValidUnitName checks a unit's name as it appears on the stream.
func ValidUnitName(s string) error {
	if s == "" || len(s) > MaxUnitName || !printable(s) {
		return fmt.Errorf("unit name %q: want 1 to %d printable characters", s, MaxUnitName)
	}
	return nil
}

func validQuery(q *Query) error {
	if len(q.GetKeys()) == 0 || len(q.GetKeys()) > MaxBatch {
		return invalid("query: %d keys, want 1 to %d", len(q.GetKeys()), MaxBatch)
	}
	for _, k := range q.GetKeys() {
		if err := ValidKey(k); err != nil {
			return invalid("query: %v", err)
		}
	}
	return nil
}

// validAtoms checks a batch: full atoms when whole, or the key, adder
// and stamp a delete names.
func validAtoms(what string, atoms []*Atom, whole bool) error {
	if len(atoms) > MaxBatch {
		return invalid("%s: %d atoms, over %d", what, len(atoms), MaxBatch)
	}
	for i, a := range atoms {
		if a == nil {
			return invalid("%s: atom %d empty", what, i)
		}
		if err := ValidKey(a.GetKey()); err != nil {
			return invalid("%s: atom %d: %v", what, i, err)
		}
		if err := ValidUnitName(a.GetAdder()); err != nil {
			return invalid("%s: atom %d: adder: %v", what, i, err)
		}
		if a.GetStamp() == 0 {
			return invalid("%s: atom %d: stamp 0", what, i)
		}
		if !whole {
			continue
		}
		if h := a.GetHost(); h == "" || len(h) > MaxHost || !printable(h) {
			return invalid("%s: atom %d: host %q", what, i, h)
		}
		if len(a.GetData()) > MaxData {
			return invalid("%s: atom %d: %d bytes of data, over %d", what, i, len(a.GetData()), MaxData)
		}
		if a.GetAdderBoot() == 0 {
			return invalid("%s: atom %d: adder boot 0", what, i)
		}
		if a.GetTimeoutMs() == 0 || a.GetTimeoutMs() > MaxTimeout {
			return invalid("%s: atom %d: timeout %d ms, want 1 to %d", what, i, a.GetTimeoutMs(), MaxTimeout)
		}
	}
	return nil
}

// ValidKey checks a key: a known kind, printable, bounded.
func ValidKey(k string) error {
	switch {
	case len(k) > MaxKey:
		return fmt.Errorf("key of %d bytes, over %d", len(k), MaxKey)
	case !strings.HasPrefix(k, KindRoute) && !strings.HasPrefix(k, KindSession):
		return fmt.Errorf("key %.40q: want %q or %q first", k, KindRoute, KindSession)
	case !printable(k):
		return fmt.Errorf("key %.40q: not printable UTF-8", k)
	}
	return nil
}

// printable reports whether s is valid UTF-8 without control characters.
func printable(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return false
		}
	}
	return true
}
