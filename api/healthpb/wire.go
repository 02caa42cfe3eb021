package healthpb

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/klauspost/compress/zstd"
	"google.golang.org/protobuf/proto"
)

// Version is the protocol version this package speaks, carried in every
// frame header and every Envelope. Version 1 authenticated frames with
// one key shared by every host and unit and had no sequence or time, so
// any holder of the key could speak for any host and any captured frame
// could be replayed; it is refused (ErrOldVersion).
const Version = 2

// Frame layout (all integers big-endian):
//
//	 0      2  'T' 'H'
//	 2      1  version (2)
//	 3      1  flags: 1 compressed, 2 MAC, 4 from a unit
//	 4      4  host: the host whose key authenticates the frame (the
//	           sender's own; a unit's frames to a host use that host's)
//	 8      4  sender: the host ID, or the sending unit's ID
//	12      8  sequence number: the sender's, increasing (Sequencer)
//	20      8  time sent, Unix milliseconds
//	28      …  grant: the sender's endpoint grant (a host's frames; a
//	           unit's carry none): count, then family, bits, address
//	 …      …  the Envelope (zstd compressed when flagged)
//	 …     16  when flagged, HMAC-SHA256 under the host's key of
//	           everything before it, truncated
const (
	fixedHeader    = 28
	flagCompressed = 1 << 0
	flagMAC        = 1 << 1
	flagFromUnit   = 1 << 2
	knownFlags     = flagCompressed | flagMAC | flagFromUnit
	// MACSize is the length of the truncated HMAC (128 bits).
	MACSize = 16
	// MaxDatagram bounds a frame: one UDP datagram.
	MaxDatagram = 65507
	// MaxMessage bounds an Envelope after decompression, so a small
	// compressed datagram cannot make a receiver allocate without limit.
	MaxMessage = 1 << 20
	// compressAbove is the encoded size from which Encode compresses when
	// asked to: below it zstd's frame overhead eats the gain.
	compressAbove = 512
)

// Errors a receiver counts by kind.
var (
	ErrShort      = errors.New("health: datagram shorter than a frame header")
	ErrMagic      = errors.New("health: not a health frame")
	ErrVersion    = errors.New("health: unsupported protocol version")
	ErrOldVersion = fmt.Errorf("%w: version 1 (one shared key, no identity, no replay protection): upgrade the sender", ErrVersion)
	ErrFlags      = errors.New("health: unknown frame flags")
	ErrOversized  = errors.New("health: message too large")
	ErrMAC        = errors.New("health: authentication failed")
	ErrNoMAC      = errors.New("health: unauthenticated frame where keys are configured")
	ErrCompressed = errors.New("health: bad compressed payload")
	ErrDecode     = errors.New("health: undecodable message")
)

// Header is a frame's header: who authenticates it, who sent it, and
// its place in the sender's sequence and in time.
type Header struct {
	// FromUnit marks a unit's frame to a host.
	FromUnit bool
	// Host is the host whose key authenticates the frame.
	Host uint32
	// Sender is the host itself, or the unit that sent the frame.
	Sender uint32
	// Seq is the sender's sequence number.
	Seq uint64
	// Time is when it was sent, in Unix milliseconds.
	Time uint64
	// Grant is the sending host's endpoint grant (part of its key).
	Grant Grant
}

// Keys finds the key that authenticates a frame with header h, or nil
// when the receiver holds none for it.
type Keys func(h *Header) []byte

// Codec frames and unframes Envelopes. It holds no keys: a sender passes
// the key that signs each frame, a receiver a Keys that finds the one
// that checks it. A Codec is not safe for concurrent use: each goroutine
// that sends or receives keeps its own.
type Codec struct {
	enc *zstd.Encoder
	dec *zstd.Decoder
	buf []byte
}

// NewCodec returns a codec.
func NewCodec() (*Codec, error) {
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1), zstd.WithEncoderLevel(zstd.SpeedFastest))
	if err != nil {
		return nil, fmt.Errorf("health: zstd encoder: %w", err)
	}
	dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(MaxMessage), zstd.WithDecoderMaxWindow(MaxMessage))
	if err != nil {
		return nil, fmt.Errorf("health: zstd decoder: %w", err)
	}
	return &Codec{enc: enc, dec: dec}, nil
}

// Encode frames env under header h, compressing it when compress is set
// and that helps, and signing it with key (nil: unsigned). The result is
// valid until the next call.
func (c *Codec) Encode(env *Envelope, h *Header, key []byte, compress bool) ([]byte, error) {
	env.Version = Version
	body, err := proto.MarshalOptions{Deterministic: true}.Marshal(env)
	if err != nil {
		return nil, fmt.Errorf("health: encode %s: %w", Kind(env), err)
	}
	if len(h.Grant) > MaxGrant {
		return nil, fmt.Errorf("%w: %d prefixes", ErrGrant, len(h.Grant))
	}
	var flags byte
	if h.FromUnit {
		flags |= flagFromUnit
	}
	out := append(c.buf[:0], 'T', 'H', Version, 0)
	out = binary.BigEndian.AppendUint32(out, h.Host)
	out = binary.BigEndian.AppendUint32(out, h.Sender)
	out = binary.BigEndian.AppendUint64(out, h.Seq)
	out = binary.BigEndian.AppendUint64(out, h.Time)
	out = appendGrant(out, h.Grant)
	if compress && len(body) >= compressAbove {
		n := len(out)
		if z := c.enc.EncodeAll(body, out); len(z)-n < len(body) {
			out, flags = z, flags|flagCompressed
		}
	}
	if flags&flagCompressed == 0 {
		out = append(out, body...)
	}
	if key != nil {
		flags |= flagMAC
		out[3] = flags
		out = append(out, mac(key, out)...)
	}
	out[3] = flags
	c.buf = out
	if len(out) > MaxDatagram {
		return nil, fmt.Errorf("%w: %s is %d bytes framed, at most %d", ErrOversized, Kind(env), len(out), MaxDatagram)
	}
	return out, nil
}

// Decode checks and decodes one datagram: the frame (magic, version,
// flags, size) and its MAC under keys(header), then the Envelope;
// callers then Validate it and check its header (Fresh, a Window, and
// that it speaks only for its host). With keys nil the receiver holds
// no keys: unsigned frames are accepted and signed ones refused.
func (c *Codec) Decode(b []byte, keys Keys) (*Envelope, *Header, error) {
	h, body, err := c.open(b)
	if err != nil {
		return nil, nil, err
	}
	switch {
	case b[3]&flagMAC != 0:
		var key []byte
		if keys != nil {
			key = keys(h)
		}
		n := len(b) - MACSize
		if key == nil || !hmac.Equal(mac(key, b[:n]), b[n:]) {
			return nil, nil, ErrMAC
		}
	case keys != nil:
		return nil, nil, ErrNoMAC
	}
	env, err := c.body(b[3], body)
	if err != nil {
		return nil, nil, err
	}
	return env, h, nil
}

// Header reads a frame's header without checking its MAC, so that a
// receiver can tell which way the frame goes before it decodes it.
func (c *Codec) Header(b []byte) (*Header, error) {
	h, _, err := c.open(b)
	return h, err
}

// Peek decodes a frame without checking its MAC. A group leader uses it
// to see which of its members' frames to relay to the units, which check
// them; nothing it returns may be trusted beyond that choice.
func (c *Codec) Peek(b []byte) (*Envelope, *Header, error) {
	h, body, err := c.open(b)
	if err != nil {
		return nil, nil, err
	}
	env, err := c.body(b[3], body)
	if err != nil {
		return nil, nil, err
	}
	return env, h, nil
}

// open checks the frame and reads its header; body excludes the MAC.
func (c *Codec) open(b []byte) (*Header, []byte, error) {
	if len(b) > MaxDatagram {
		return nil, nil, fmt.Errorf("%w: %d-byte datagram", ErrOversized, len(b))
	}
	if len(b) < 3 {
		return nil, nil, ErrShort
	}
	if b[0] != 'T' || b[1] != 'H' {
		return nil, nil, ErrMagic
	}
	if b[2] == 1 {
		return nil, nil, ErrOldVersion
	}
	if b[2] != Version {
		return nil, nil, fmt.Errorf("%w: %d", ErrVersion, b[2])
	}
	if len(b) < fixedHeader+1 {
		return nil, nil, ErrShort
	}
	flags := b[3]
	if flags&^knownFlags != 0 {
		return nil, nil, fmt.Errorf("%w: %#x", ErrFlags, flags)
	}
	h := &Header{FromUnit: flags&flagFromUnit != 0,
		Host: binary.BigEndian.Uint32(b[4:]), Sender: binary.BigEndian.Uint32(b[8:]),
		Seq: binary.BigEndian.Uint64(b[12:]), Time: binary.BigEndian.Uint64(b[20:])}
	end := len(b)
	if flags&flagMAC != 0 {
		if end -= MACSize; end < fixedHeader+1 {
			return nil, nil, ErrShort
		}
	}
	g, rest, err := readGrant(b[fixedHeader:end])
	if err != nil {
		return nil, nil, err
	}
	h.Grant = g
	return h, rest, nil
}

func (c *Codec) body(flags byte, body []byte) (*Envelope, error) {
	if flags&flagCompressed != 0 {
		var err error
		if body, err = c.dec.DecodeAll(body, nil); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrCompressed, err)
		}
		if len(body) > MaxMessage {
			return nil, fmt.Errorf("%w: %d bytes decompressed", ErrOversized, len(body))
		}
	}
	env := &Envelope{}
	if err := (proto.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(body, env); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrDecode, err)
	}
	return env, nil
}

func mac(key, b []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write(b)
	return m.Sum(nil)[:MACSize]
}

// Kind names an envelope's message for logs and counters.
func Kind(env *Envelope) string {
	switch env.GetBody().(type) {
	case *Envelope_Heartbeat:
		return "heartbeat"
	case *Envelope_Goodbye:
		return "goodbye"
	case *Envelope_RowChange:
		return "row_change"
	case *Envelope_GetSnapshot:
		return "get_snapshot"
	case *Envelope_SendSnapshot:
		return "send_snapshot"
	case *Envelope_Postulate:
		return "postulate"
	case *Envelope_PostulateWrong:
		return "postulate_wrong"
	case *Envelope_Aggregate:
		return "aggregate"
	}
	return "empty"
}

// Reason names the kind of error Decode or Validate returned, for
// counters: "short", "authentication", "invalid", ...
func Reason(err error) string {
	for _, r := range []struct {
		err  error
		name string
	}{
		{ErrShort, "short"}, {ErrMagic, "not_health"}, {ErrOldVersion, "old_version"}, {ErrVersion, "version"},
		{ErrFlags, "flags"}, {ErrOversized, "oversized"}, {ErrMAC, "authentication"},
		{ErrNoMAC, "unauthenticated"}, {ErrCompressed, "compression"}, {ErrDecode, "undecodable"},
		{ErrGrant, "grant"}, {ErrStale, "stale"}, {ErrReplay, "replay"},
		{ErrNotYours, "not_own_host"}, {ErrNotGranted, "endpoint_not_granted"}, {ErrDirection, "direction"},
		{ErrInvalid, "invalid"},
	} {
		if errors.Is(err, r.err) {
			return r.name
		}
	}
	return "other"
}
