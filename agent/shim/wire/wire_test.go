package wire

import (
	"bytes"
	"errors"
	"net/netip"
	"reflect"
	"testing"
)

func frames() []*Frame {
	ap := netip.MustParseAddrPort
	return []*Frame{
		{Type: TypeRegister, Addrs: []netip.AddrPort{ap("192.0.2.50:80")}},
		{Type: TypeRegister, Addrs: []netip.AddrPort{ap("0.0.0.0:8080"), ap("[2001:db8::1]:443")}},
		{Type: TypeHandoff, ID: 7, Client: ap("203.0.113.9:40000"), VIP: ap("192.0.2.50:80")},
		{Type: TypeAck, ID: 1<<64 - 1, Accepted: true},
		{Type: TypeAck, ID: 2},
		{Type: TypeClosed, ID: 9},
	}
}

func TestRoundTrip(t *testing.T) {
	for _, f := range frames() {
		b, err := Encode(nil, f)
		if err != nil {
			t.Fatalf("%+v: %v", f, err)
		}
		if len(b) > MaxFrame {
			t.Fatalf("%+v: %d bytes, more than MaxFrame", f, len(b))
		}
		g, err := Decode(b)
		if err != nil {
			t.Fatalf("%+v: decode: %v", f, err)
		}
		if !reflect.DeepEqual(f, g) {
			t.Fatalf("decoded %+v, want %+v", g, f)
		}
	}
	// The largest frame fits MaxFrame exactly.
	big := &Frame{Type: TypeRegister}
	for i := range MaxAddrs {
		big.Addrs = append(big.Addrs, netip.AddrPortFrom(netip.MustParseAddr("2001:db8::1"), uint16(i+1)))
	}
	b, err := Encode(nil, big)
	if err != nil || len(b) != MaxFrame {
		t.Fatalf("largest register: %d bytes, %v; want %d", len(b), err, MaxFrame)
	}
}

func TestRefused(t *testing.T) {
	ap := netip.MustParseAddrPort
	for _, f := range []*Frame{
		{Type: 0},
		{Type: 9, ID: 1},
		{Type: TypeRegister},
		{Type: TypeRegister, Addrs: make([]netip.AddrPort, MaxAddrs+1)},
		{Type: TypeRegister, Addrs: []netip.AddrPort{ap("192.0.2.1:0")}},
		{Type: TypeRegister, Addrs: []netip.AddrPort{ap("[::ffff:192.0.2.1]:80")}},
		{Type: TypeHandoff, Client: ap("203.0.113.9:1"), VIP: ap("192.0.2.50:80")},
		{Type: TypeHandoff, ID: 1, Client: ap("0.0.0.0:1"), VIP: ap("192.0.2.50:80")},
		{Type: TypeHandoff, ID: 1, Client: ap("[2001:db8::2]:1"), VIP: ap("192.0.2.50:80")},
		{Type: TypeAck},
		{Type: TypeClosed},
	} {
		if _, err := Encode(nil, f); !errors.Is(err, ErrInvalid) {
			t.Errorf("Encode(%+v) = %v, want ErrInvalid", f, err)
		}
	}
	good, _ := Encode(nil, frames()[2])
	for name, b := range map[string][]byte{
		"empty":          {},
		"short header":   good[:3],
		"version":        append([]byte{2}, good[1:]...),
		"truncated":      good[:len(good)-1],
		"trailing":       append(append([]byte{}, good...), 0),
		"length":         append([]byte{Version, byte(TypeHandoff), 0, 1}, good[4:]...),
		"ack value":      {Version, byte(TypeAck), 0, 9, 0, 0, 0, 0, 0, 0, 0, 1, 2},
		"register count": {Version, byte(TypeRegister), 0, 1, 1},
		"oversized":      make([]byte, MaxFrame+1),
	} {
		if _, err := Decode(b); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: Decode = %v, want ErrInvalid", name, err)
		}
	}
	// Padding after a 4-byte address must be zero: one meaning per
	// encoding.
	bad := bytes.Clone(good)
	bad[HeaderLen+8+1+4] = 1
	if _, err := Decode(bad); !errors.Is(err, ErrInvalid) {
		t.Errorf("non-zero padding: Decode = %v, want ErrInvalid", err)
	}
}

// FuzzDecode: nothing panics, and whatever decodes encodes to the same
// bytes (one encoding per frame, so both ends agree on what was meant).
func FuzzDecode(f *testing.F) {
	for _, fr := range frames() {
		b, _ := Encode(nil, fr)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		fr, err := Decode(b)
		if err != nil {
			return
		}
		out, err := Encode(nil, fr)
		if err != nil {
			t.Fatalf("decoded %+v does not encode: %v", fr, err)
		}
		if !bytes.Equal(out, b) {
			t.Fatalf("%x decodes to %+v, which encodes to %x", b, fr, out)
		}
	})
}
