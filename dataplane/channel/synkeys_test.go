package channel

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"reflect"
	"testing"
)

func testSYNKeys() []SYNKey {
	return []SYNKey{
		{VIP: 3, Addr: netip.MustParseAddr("192.0.2.1"), Port: 80, Every: 64e9, Epoch: 28_125_000, Cur: [16]byte{1, 15: 2}, Next: [16]byte{3, 15: 4},
			HasNext: true, TSOffset: 0xdeadbeef, MSS: 1460, WScale: 7, Window: 16384},
		{VIP: 9, Addr: netip.MustParseAddr("2001:db8::2"), Port: 443, Every: 1, Epoch: 0, Cur: [16]byte{5}, MSS: 64, WScale: 0, Window: 1},
	}
}

// TestSYNKeysRoundTrip: the keys decode as they were sent, an empty set
// too (it takes every key away).
func TestSYNKeysRoundTrip(t *testing.T) {
	for _, keys := range [][]SYNKey{testSYNKeys(), {}} {
		msg := AppendSYNKeys(nil, 5, keys)
		h, p, err := ParseHeader(msg)
		if err != nil || h.Type != TSYNKeys || h.Seq != 5 || h.Type.String() != "syn-keys" {
			t.Fatalf("header %+v, %v", h, err)
		}
		got, err := DecodeSYNKeys(p)
		if err != nil || !reflect.DeepEqual(got, keys) {
			t.Fatalf("syn keys %+v, %v", got, err)
		}
	}
}

// TestSYNKeysRefused: lengths and values out of range are refused.
func TestSYNKeysRefused(t *testing.T) {
	good := AppendSYNKeys(nil, 1, testSYNKeys())[HeaderSize:]
	if _, err := DecodeSYNKeys(good); err != nil {
		t.Fatal(err)
	}
	// Offsets in the first key (after the count).
	const (
		oVIP     = 2
		oFamily  = oVIP + 4
		oAddr    = oFamily + 1
		oPort    = oAddr + 16
		oEvery   = oPort + 2
		oEpoch   = oEvery + 8
		oHasNext = oEpoch + 8 + 32
		oMSS     = oHasNext + 1 + 4
		oWScale  = oMSS + 2
		oWindow  = oWScale + 1
	)
	mod := func(f func(b []byte)) []byte {
		b := append([]byte(nil), good...)
		f(b)
		return b
	}
	for name, c := range map[string]struct {
		p    []byte
		want error
	}{
		"short":          {good[:len(good)-1], ErrLength},
		"trailing":       {append(append([]byte(nil), good...), 0), ErrLength},
		"no count":       {good[:1], ErrShort},
		"count too high": {mod(func(b []byte) { binary.BigEndian.PutUint16(b, 3) }), ErrLength},
		"over the max":   {mod(func(b []byte) { binary.BigEndian.PutUint16(b, MaxSYNKeys+1) }), ErrLength},
		"a VIP twice":    {mod(func(b []byte) { copy(b[2+synKeySize:], b[oVIP:oVIP+4]) }), ErrValue},
		"port 0":         {mod(func(b []byte) { binary.BigEndian.PutUint16(b[oPort:], 0) }), ErrValue},
		"family 5":       {mod(func(b []byte) { b[oFamily] = 5 }), ErrValue},
		"IPv4 with more": {mod(func(b []byte) { b[oAddr+15] = 1 }), ErrValue},
		"IPv4-mapped":    {mod(func(b []byte) { b[oFamily] = 6; copy(b[oAddr:], netip.MustParseAddr("::ffff:192.0.2.1").AsSlice()) }), ErrValue},
		"unspecified":    {mod(func(b []byte) { b[oFamily] = 6; copy(b[oAddr:], make([]byte, 16)) }), ErrValue},
		"no epoch":       {mod(func(b []byte) { binary.BigEndian.PutUint64(b[oEvery:], 0) }), ErrValue},
		"negative epoch": {mod(func(b []byte) { b[oEpoch] = 0x80 }), ErrValue},
		"has-next 2":     {mod(func(b []byte) { b[oHasNext] = 2 }), ErrValue},
		"MSS 63":         {mod(func(b []byte) { binary.BigEndian.PutUint16(b[oMSS:], 63) }), ErrValue},
		"scale 15":       {mod(func(b []byte) { b[oWScale] = 15 }), ErrValue},
		"window 0":       {mod(func(b []byte) { binary.BigEndian.PutUint16(b[oWindow:], 0) }), ErrValue},
	} {
		if got, err := DecodeSYNKeys(c.p); !errors.Is(err, c.want) || got != nil {
			t.Errorf("%s: %v, %v; want %v", name, got, err, c.want)
		}
	}
}
