package channel

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/tetherlb/tether/api/unit"
)

// Version is the protocol version; a peer with another version is
// refused at hello. 2: punts carry the forwarder's Maglev choice.
// 3: punts carry an ID; answers (l7 VIPs' acceptor).
// 4: SYN keys (the workers answer l7 VIPs' SYNs).
// 5: mid-flow punts (PuntMidFlow) and refusals (RouteRefuse); punt
// reasons are checked.
// 6: an answer may carry a route, applied before its packet goes.
const Version = 6

// MaxMessage bounds a message, header included.
const MaxMessage = 64 << 10

// HeaderSize is the size of the header.
const HeaderSize = 8

const magic = 'T'

// Type identifies a message.
type Type uint8

// Message types.
const (
	THello     Type = 1  // both ways: who I am
	TPunt      Type = 2  // forwarder → control: a packet for control to decide
	TRoute     Type = 3  // control → forwarder: add or delete a flow
	TFlowEvent Type = 4  // forwarder → control: a flow opened, closed or expired
	TBarrier   Type = 5  // control → forwarder: answer once everything before is applied
	TAck       Type = 6  // forwarder → control: the barrier's answer
	TCall      Type = 7  // control → forwarder: a cold request with a JSON body
	TReturn    Type = 8  // forwarder → control: its answer
	TLost      Type = 9  // forwarder → control: flow events lost; the inventory must be read again
	TAnswer    Type = 10 // control → forwarder: the packet to send in place of a punted one
	TSYNKeys   Type = 11 // control → forwarder: the l7 VIPs' SYN cookie keys, for the workers
)

func (t Type) String() string {
	switch t {
	case THello:
		return "hello"
	case TPunt:
		return "punt"
	case TRoute:
		return "route"
	case TFlowEvent:
		return "flow-event"
	case TBarrier:
		return "barrier"
	case TAck:
		return "ack"
	case TCall:
		return "call"
	case TReturn:
		return "return"
	case TLost:
		return "lost"
	case TAnswer:
		return "answer"
	case TSYNKeys:
		return "syn-keys"
	}
	return fmt.Sprintf("type-%d", uint8(t))
}

// Errors of Decode.
var (
	ErrShort   = errors.New("channel: message too short")
	ErrMagic   = errors.New("channel: not a channel message")
	ErrVersion = errors.New("channel: unsupported version")
	ErrLength  = errors.New("channel: length field out of range")
	ErrValue   = errors.New("channel: field value out of range")
)

// Header is a message's header.
type Header struct {
	Type  Type
	Flags uint8
	Seq   uint32
}

// AppendHeader appends a header to b.
func AppendHeader(b []byte, h Header) []byte {
	b = append(b, magic, Version, byte(h.Type), h.Flags)
	return binary.BigEndian.AppendUint32(b, h.Seq)
}

// ParseHeader splits a message into its header and payload.
func ParseHeader(msg []byte) (Header, []byte, error) {
	if len(msg) < HeaderSize {
		return Header{}, nil, ErrShort
	}
	if msg[0] != magic {
		return Header{}, nil, ErrMagic
	}
	if msg[1] != Version {
		return Header{}, nil, fmt.Errorf("%w %d (want %d)", ErrVersion, msg[1], Version)
	}
	if len(msg) > MaxMessage {
		return Header{}, nil, ErrLength
	}
	return Header{Type: Type(msg[2]), Flags: msg[3], Seq: binary.BigEndian.Uint32(msg[4:])}, msg[HeaderSize:], nil
}

// reader reads fixed fields with bounds checks; the first failure sticks.
type reader struct {
	b   []byte
	err error
}

func (r *reader) take(n int) []byte {
	if r.err != nil {
		return nil
	}
	if n < 0 || len(r.b) < n {
		r.err = ErrShort
		return nil
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

func (r *reader) u8() uint8 {
	if v := r.take(1); v != nil {
		return v[0]
	}
	return 0
}

func (r *reader) u16() uint16 {
	if v := r.take(2); v != nil {
		return binary.BigEndian.Uint16(v)
	}
	return 0
}

func (r *reader) u32() uint32 {
	if v := r.take(4); v != nil {
		return binary.BigEndian.Uint32(v)
	}
	return 0
}

func (r *reader) u64() uint64 {
	if v := r.take(8); v != nil {
		return binary.BigEndian.Uint64(v)
	}
	return 0
}

func (r *reader) addr16() [16]byte {
	var a [16]byte
	copy(a[:], r.take(16))
	return a
}

// bytes16 reads a u16 length and that many bytes.
func (r *reader) bytes16() []byte {
	return r.take(int(r.u16()))
}

func (r *reader) done() error {
	if r.err == nil && len(r.b) != 0 {
		return fmt.Errorf("%w: %d trailing bytes", ErrLength, len(r.b))
	}
	return r.err
}

// KeySize is the encoded size of a unit.FlowKey.
const KeySize = 1 + 16 + 16 + 2 + 2 + 1

func appendKey(b []byte, k *unit.FlowKey) []byte {
	v := byte(4)
	if k.V6 {
		v = 6
	}
	b = append(b, v)
	b = append(b, k.Src[:]...)
	b = append(b, k.Dst[:]...)
	b = binary.BigEndian.AppendUint16(b, k.SrcPort)
	b = binary.BigEndian.AppendUint16(b, k.DstPort)
	return append(b, k.Proto)
}

func (r *reader) key() unit.FlowKey {
	var k unit.FlowKey
	switch r.u8() {
	case 4:
	case 6:
		k.V6 = true
	default:
		if r.err == nil {
			r.err = fmt.Errorf("%w: address family", ErrValue)
		}
	}
	k.Src, k.Dst = r.addr16(), r.addr16()
	k.SrcPort, k.DstPort, k.Proto = r.u16(), r.u16(), r.u8()
	return k
}
