package healthpb

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"fmt"

	"github.com/klauspost/compress/zstd"
	"google.golang.org/protobuf/proto"
)

// Version is the protocol version this package speaks, carried in every
// frame header and every Envelope.
const Version = 1

// Frame layout: 'T' 'H', version, flags, then the Envelope (zstd
// compressed when flagCompressed), then, when flagMAC, the first MACSize
// bytes of HMAC-SHA256 over everything before it.
const (
	headerSize     = 4
	flagCompressed = 1 << 0
	flagMAC        = 1 << 1
	knownFlags     = flagCompressed | flagMAC
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
	ErrFlags      = errors.New("health: unknown frame flags")
	ErrOversized  = errors.New("health: message too large")
	ErrMAC        = errors.New("health: authentication failed")
	ErrNoMAC      = errors.New("health: unauthenticated frame where a key is configured")
	ErrCompressed = errors.New("health: bad compressed payload")
	ErrDecode     = errors.New("health: undecodable message")
)

// Codec frames and unframes Envelopes. A zero Codec (no key) neither
// signs nor checks; with a key every frame is signed and every frame
// received must carry a valid signature. A Codec is not safe for
// concurrent use: each goroutine that sends or receives keeps its own.
type Codec struct {
	key []byte
	enc *zstd.Encoder
	dec *zstd.Decoder
	buf []byte
}

// NewCodec returns a codec; key may be nil (no authentication).
func NewCodec(key []byte) (*Codec, error) {
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1), zstd.WithEncoderLevel(zstd.SpeedFastest))
	if err != nil {
		return nil, fmt.Errorf("health: zstd encoder: %w", err)
	}
	dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(MaxMessage), zstd.WithDecoderMaxWindow(MaxMessage))
	if err != nil {
		return nil, fmt.Errorf("health: zstd decoder: %w", err)
	}
	return &Codec{key: bytes.Clone(key), enc: enc, dec: dec}, nil
}

// Encode frames env, compressing it when compress is set and that
// helps. The result is valid until the next call.
func (c *Codec) Encode(env *Envelope, compress bool) ([]byte, error) {
	env.Version = Version
	body, err := proto.MarshalOptions{Deterministic: true}.Marshal(env)
	if err != nil {
		return nil, fmt.Errorf("health: encode %s: %w", Kind(env), err)
	}
	var flags byte
	out := append(c.buf[:0], 'T', 'H', Version, 0)
	if compress && len(body) >= compressAbove {
		if z := c.enc.EncodeAll(body, out); len(z)-headerSize < len(body) {
			out, flags = z, flags|flagCompressed
		}
	}
	if flags&flagCompressed == 0 {
		out = append(out, body...)
	}
	if c.key != nil {
		flags |= flagMAC
		out[3] = flags
		out = append(out, c.mac(out)...)
	}
	out[3] = flags
	c.buf = out
	if len(out) > MaxDatagram {
		return nil, fmt.Errorf("%w: %s is %d bytes framed, at most %d", ErrOversized, Kind(env), len(out), MaxDatagram)
	}
	return out, nil
}

// Decode checks and decodes one datagram. It checks the frame (magic,
// version, flags, size, signature) and decodes the Envelope; callers
// then Validate it.
func (c *Codec) Decode(b []byte) (*Envelope, error) {
	if len(b) > MaxDatagram {
		return nil, fmt.Errorf("%w: %d-byte datagram", ErrOversized, len(b))
	}
	if len(b) < headerSize {
		return nil, ErrShort
	}
	if b[0] != 'T' || b[1] != 'H' {
		return nil, ErrMagic
	}
	if b[2] != Version {
		return nil, fmt.Errorf("%w: %d", ErrVersion, b[2])
	}
	flags := b[3]
	if flags&^knownFlags != 0 {
		return nil, fmt.Errorf("%w: %#x", ErrFlags, flags)
	}
	switch {
	case flags&flagMAC != 0:
		if len(b) < headerSize+MACSize {
			return nil, ErrShort
		}
		n := len(b) - MACSize
		if c.key == nil || !hmac.Equal(c.mac(b[:n]), b[n:]) {
			return nil, ErrMAC
		}
		b = b[:n]
	case c.key != nil:
		return nil, ErrNoMAC
	}
	body := b[headerSize:]
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

func (c *Codec) mac(b []byte) []byte {
	m := hmac.New(sha256.New, c.key)
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
		{ErrShort, "short"}, {ErrMagic, "not_health"}, {ErrVersion, "version"},
		{ErrFlags, "flags"}, {ErrOversized, "oversized"}, {ErrMAC, "authentication"},
		{ErrNoMAC, "unauthenticated"}, {ErrCompressed, "compression"}, {ErrDecode, "undecodable"},
		{ErrInvalid, "invalid"},
	} {
		if errors.Is(err, r.err) {
			return r.name
		}
	}
	return "other"
}
