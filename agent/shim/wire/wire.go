package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
)

// Version is the protocol version every frame carries.
const Version = 1

// Frame types.
const (
	TypeRegister Type = 1
	TypeHandoff  Type = 2
	TypeAck      Type = 3
	TypeClosed   Type = 4
)

// Type is a frame's type.
type Type uint8

func (t Type) String() string {
	switch t {
	case TypeRegister:
		return "register"
	case TypeHandoff:
		return "handoff"
	case TypeAck:
		return "ack"
	case TypeClosed:
		return "closed"
	}
	return fmt.Sprintf("type(%d)", uint8(t))
}

// Bounds.
const (
	// HeaderLen is the frame header: version, type, body length (2).
	HeaderLen = 4
	// MaxAddrs bounds the addresses one Register names: a listener
	// serves one address; a few more leave room for a shim that serves
	// several VIPs through one connection.
	MaxAddrs = 16
	// addrLen is an encoded address: length (4 or 16), 16 address
	// bytes (the unused tail zero), port.
	addrLen = 1 + 16 + 2
	// MaxFrame bounds a whole frame; a reader's buffer of this size
	// (plus one, to see an oversized record) is enough.
	MaxFrame = HeaderLen + 1 + MaxAddrs*addrLen
)

// ErrInvalid wraps every decoding failure.
var ErrInvalid = errors.New("hand-off protocol: invalid frame")

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

// Frame is one decoded frame; which fields mean something depends on
// Type.
type Frame struct {
	Type Type
	// Addrs: Register's addresses (IPv4 or IPv6, port 1 to 65535; an
	// unspecified address serves any VIP on that port).
	Addrs []netip.AddrPort
	// ID names a hand-off (Handoff, Ack, Closed); never 0.
	ID uint64
	// Client and VIP: Handoff's connection, the peer and the local
	// address of the descriptor that comes with it.
	Client, VIP netip.AddrPort
	// Accepted: Ack's answer (false: the shim could not take it).
	Accepted bool
}

// Encode appends f's encoding to b, or fails when f is not valid (what
// Decode would refuse is never sent).
func Encode(b []byte, f *Frame) ([]byte, error) {
	if err := check(f); err != nil {
		return nil, err
	}
	start := len(b)
	b = append(b, Version, byte(f.Type), 0, 0)
	switch f.Type {
	case TypeRegister:
		b = append(b, byte(len(f.Addrs)))
		for _, a := range f.Addrs {
			b = appendAddr(b, a)
		}
	case TypeHandoff:
		b = binary.BigEndian.AppendUint64(b, f.ID)
		b = appendAddr(b, f.Client)
		b = appendAddr(b, f.VIP)
	case TypeAck:
		b = binary.BigEndian.AppendUint64(b, f.ID)
		var ok byte
		if f.Accepted {
			ok = 1
		}
		b = append(b, ok)
	case TypeClosed:
		b = binary.BigEndian.AppendUint64(b, f.ID)
	}
	binary.BigEndian.PutUint16(b[start+2:], uint16(len(b)-start-HeaderLen))
	return b, nil
}

// check is what every frame must satisfy, on both sides.
func check(f *Frame) error {
	switch f.Type {
	case TypeRegister:
		if len(f.Addrs) == 0 || len(f.Addrs) > MaxAddrs {
			return invalid("register of %d addresses, want 1 to %d", len(f.Addrs), MaxAddrs)
		}
		for _, a := range f.Addrs {
			if err := checkAddr(a); err != nil {
				return err
			}
		}
	case TypeHandoff:
		if f.ID == 0 {
			return invalid("handoff id 0")
		}
		if err := checkAddr(f.Client); err != nil {
			return err
		}
		if err := checkAddr(f.VIP); err != nil {
			return err
		}
		if f.Client.Addr().IsUnspecified() || f.VIP.Addr().IsUnspecified() {
			return invalid("handoff of an unspecified address")
		}
		if f.Client.Addr().Is4() != f.VIP.Addr().Is4() {
			return invalid("handoff between address families")
		}
	case TypeAck, TypeClosed:
		if f.ID == 0 {
			return invalid("%s id 0", f.Type)
		}
	default:
		return invalid("%s", f.Type)
	}
	return nil
}

func checkAddr(a netip.AddrPort) error {
	if !a.Addr().IsValid() || a.Addr().Is4In6() || a.Addr().Zone() != "" {
		return invalid("address %v", a)
	}
	if a.Port() == 0 {
		return invalid("address %v: port 0", a)
	}
	return nil
}

func appendAddr(b []byte, a netip.AddrPort) []byte {
	ip := a.Addr().AsSlice()
	b = append(b, byte(len(ip)))
	var buf [16]byte
	copy(buf[:], ip)
	b = append(b, buf[:]...)
	return binary.BigEndian.AppendUint16(b, a.Port())
}

func readAddr(b []byte) (netip.AddrPort, error) {
	n := int(b[0])
	if n != 4 && n != 16 {
		return netip.AddrPort{}, invalid("address of %d bytes", n)
	}
	for _, c := range b[1+n : 17] {
		if c != 0 {
			return netip.AddrPort{}, invalid("address padding not zero")
		}
	}
	ip, _ := netip.AddrFromSlice(b[1 : 1+n])
	return netip.AddrPortFrom(ip, binary.BigEndian.Uint16(b[17:19])), nil
}

// Decode reads one frame, which must fill b exactly (one record).
func Decode(b []byte) (*Frame, error) {
	if len(b) < HeaderLen {
		return nil, invalid("%d bytes, shorter than a header", len(b))
	}
	if len(b) > MaxFrame {
		return nil, invalid("%d bytes, more than %d", len(b), MaxFrame)
	}
	if b[0] != Version {
		return nil, invalid("version %d, want %d", b[0], Version)
	}
	f := &Frame{Type: Type(b[1])}
	body := b[HeaderLen:]
	if n := int(binary.BigEndian.Uint16(b[2:4])); n != len(body) {
		return nil, invalid("%s: length %d, record carries %d", f.Type, n, len(body))
	}
	want := 0
	switch f.Type {
	case TypeRegister:
		if len(body) < 1 {
			return nil, invalid("register without a count")
		}
		want = 1 + int(body[0])*addrLen
	case TypeHandoff:
		want = 8 + 2*addrLen
	case TypeAck:
		want = 8 + 1
	case TypeClosed:
		want = 8
	default:
		return nil, invalid("%s", f.Type)
	}
	if len(body) != want {
		return nil, invalid("%s of %d bytes, want %d", f.Type, len(body), want)
	}
	var err error
	switch f.Type {
	case TypeRegister:
		for i := range int(body[0]) {
			a, err := readAddr(body[1+i*addrLen:])
			if err != nil {
				return nil, err
			}
			f.Addrs = append(f.Addrs, a)
		}
	case TypeHandoff:
		f.ID = binary.BigEndian.Uint64(body)
		if f.Client, err = readAddr(body[8:]); err != nil {
			return nil, err
		}
		if f.VIP, err = readAddr(body[8+addrLen:]); err != nil {
			return nil, err
		}
	case TypeAck:
		f.ID = binary.BigEndian.Uint64(body)
		switch body[8] {
		case 0:
		case 1:
			f.Accepted = true
		default:
			return nil, invalid("ack %d", body[8])
		}
	case TypeClosed:
		f.ID = binary.BigEndian.Uint64(body)
	}
	if err := check(f); err != nil {
		return nil, err
	}
	return f, nil
}
