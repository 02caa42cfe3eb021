package migrate

import (
	"bytes"
	"errors"
	"net/netip"
	"testing"
)

func TestProxyHeader(t *testing.T) {
	src, dst := netip.MustParseAddrPort("203.0.113.9:40000"), netip.MustParseAddrPort("192.0.2.50:80")
	b, err := AppendProxyHeader(nil, src, dst)
	if err != nil {
		t.Fatal(err)
	}
	// The bytes of the spec's example layout: signature, 0x21, 0x11,
	// length 12, addresses, ports.
	want := append([]byte("\r\n\r\n\x00\r\nQUIT\n"), 0x21, 0x11, 0, 12, 203, 0, 113, 9, 192, 0, 2, 50, 0x9c, 0x40, 0, 80)
	if !bytes.Equal(b, want) {
		t.Fatalf("header %x, want %x", b, want)
	}
	h, err := ReadProxyHeader(bytes.NewReader(append(b, "GET /"...)))
	if err != nil || h.Local || h.Source != src || h.Destination != dst {
		t.Fatalf("ReadProxyHeader = %+v, %v", h, err)
	}
	// A migrated IPv6 connection's: AF_INET6, length 36, the 16-byte
	// addresses, the ports.
	s6, d6 := netip.MustParseAddrPort("[2001:db8::9]:1"), netip.MustParseAddrPort("[2001:db8::50]:443")
	b6, err := AppendProxyHeader(nil, s6, d6)
	if err != nil {
		t.Fatal(err)
	}
	want6 := append([]byte("\r\n\r\n\x00\r\nQUIT\n"), 0x21, 0x21, 0, 36)
	want6 = append(want6, s6.Addr().AsSlice()...)
	want6 = append(want6, d6.Addr().AsSlice()...)
	want6 = append(want6, 0, 1, 1, 0xbb)
	if !bytes.Equal(b6, want6) {
		t.Fatalf("IPv6 header %x, want %x", b6, want6)
	}
	if h, err := ReadProxyHeader(bytes.NewReader(append(b6, "GET /"...))); err != nil || h.Local || h.Source != s6 || h.Destination != d6 {
		t.Fatalf("IPv6: %+v, %v", h, err)
	}
	// A dual-stack socket's IPv4 peer: AF_INET6, the IPv4 address
	// mapped, read back as the IPv4 address.
	mixed, err := AppendProxyHeader(nil, src, d6)
	if err != nil || mixed[13] != 0x21 {
		t.Fatalf("IPv4 to IPv6: %x, %v; want AF_INET6", mixed, err)
	}
	if h, err := ParseProxyHeader(mixed); err != nil || h.Source != src || h.Destination != d6 {
		t.Fatalf("IPv4 to IPv6 read back: %+v, %v", h, err)
	}
	// Both IPv4-mapped: AF_INET.
	m1, m2 := netip.AddrPortFrom(netip.AddrFrom16(src.Addr().As16()), src.Port()), netip.AddrPortFrom(netip.AddrFrom16(dst.Addr().As16()), dst.Port())
	if bm, err := AppendProxyHeader(nil, m1, m2); err != nil || !bytes.Equal(bm, b) {
		t.Fatalf("IPv4-mapped addresses: %x, %v; want %x", bm, err, b)
	}
	if _, err := AppendProxyHeader(nil, netip.AddrPort{}, dst); err == nil {
		t.Fatal("an invalid address encoded")
	}
	for name, b := range map[string][]byte{
		"short":     b[:10],
		"signature": append([]byte{'x'}, b[1:]...),
		"version":   append(append(bytes.Clone(b[:12]), 0x11), b[13:]...),
		"command":   append(append(bytes.Clone(b[:12]), 0x22), b[13:]...),
		"family":    append(append(bytes.Clone(b[:13]), 0x12), b[14:]...),
		"length":    append(bytes.Clone(b), 0),
		"tlv":       append(append(bytes.Clone(b[:14]), 0, 13), append(bytes.Clone(b[16:]), 1)...),
	} {
		if _, err := ParseProxyHeader(b); !errors.Is(err, ErrProxyHeader) {
			t.Errorf("%s: %v, want ErrProxyHeader", name, err)
		}
	}
}

// FuzzProxyHeader: the decoder never panics, reads nothing past the
// header, and what it accepts as PROXY re-encodes to the same addresses.
func FuzzProxyHeader(f *testing.F) {
	b, _ := AppendProxyHeader(nil, netip.MustParseAddrPort("203.0.113.9:40000"), netip.MustParseAddrPort("192.0.2.50:80"))
	f.Add(b)
	b6, _ := AppendProxyHeader(nil, netip.MustParseAddrPort("[2001:db8::9]:1"), netip.MustParseAddrPort("[2001:db8::50]:443"))
	f.Add(b6)
	f.Add([]byte("\r\n\r\n\x00\r\nQUIT\n\x20\x00\x00\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		r := bytes.NewReader(b)
		h, err := ReadProxyHeader(r)
		if err != nil {
			return
		}
		if used := len(b) - r.Len(); used > MaxProxyHeader {
			t.Fatalf("read %d bytes", used)
		}
		if h.Local {
			return
		}
		out, err := AppendProxyHeader(nil, h.Source, h.Destination)
		if err != nil {
			t.Fatalf("%+v does not encode: %v", h, err)
		}
		g, err := ParseProxyHeader(out)
		if err != nil || *g != *h {
			t.Fatalf("%+v re-encodes to %+v, %v", h, g, err)
		}
	})
}
