package migrate

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
)

// The PROXY protocol version 2 (haproxy's proxy-protocol.txt, §2.2) is
// how a spliced server learns the client's address: a binary header
// before the connection's first byte. It is small enough to write here
// rather than add a dependency for; only what the splice sends (PROXY,
// TCP over IPv4 or IPv6) and LOCAL are understood, and TLVs are skipped.

// proxySig is the header's fixed signature.
var proxySig = []byte("\r\n\r\n\x00\r\nQUIT\n")

// Bounds of a PROXY v2 header.
const (
	proxyFixed = 16 // signature, version/command, family, length
	// MaxProxyHeader bounds the header a decoder accepts: the addresses
	// plus TLVs a server might be sent (the spec's maximum is 64 KiB,
	// far more than anything sends).
	MaxProxyHeader = proxyFixed + 1024
)

// ProxyHeader is a decoded PROXY v2 header.
type ProxyHeader struct {
	// Local is the LOCAL command (a health check by the proxy itself:
	// no addresses); otherwise PROXY.
	Local bool
	// Source is the client, Destination the address it connected to
	// (PROXY over TCP only).
	Source, Destination netip.AddrPort
}

// ErrProxyHeader wraps every decoding failure.
var ErrProxyHeader = errors.New("PROXY v2 header: invalid")

// AppendProxyHeader appends a PROXY v2 header (command PROXY, TCP) for a
// connection from src to dst: AF_INET when both are IPv4 (IPv4-mapped
// IPv6 addresses included), else AF_INET6, an IPv4 address in its mapped
// form (a dual-stack socket's peer).
func AppendProxyHeader(b []byte, src, dst netip.AddrPort) ([]byte, error) {
	s, d := src.Addr().Unmap(), dst.Addr().Unmap()
	if !s.IsValid() || !d.IsValid() {
		return nil, fmt.Errorf("PROXY v2 header: addresses %v and %v: an invalid address", src, dst)
	}
	b = append(b, proxySig...)
	b = append(b, 0x21) // version 2, PROXY
	if s.Is4() && d.Is4() {
		b = append(b, 0x11, 0, 12) // AF_INET, STREAM
		b = append(b, s.AsSlice()...)
		b = append(b, d.AsSlice()...)
	} else {
		b = append(b, 0x21, 0, 36) // AF_INET6, STREAM
		s16, d16 := s.As16(), d.As16()
		b = append(b, s16[:]...)
		b = append(b, d16[:]...)
	}
	b = binary.BigEndian.AppendUint16(b, src.Port())
	return binary.BigEndian.AppendUint16(b, dst.Port()), nil
}

// ReadProxyHeader reads one PROXY v2 header from r, and nothing more.
func ReadProxyHeader(r io.Reader) (*ProxyHeader, error) {
	var fixed [proxyFixed]byte
	if _, err := io.ReadFull(r, fixed[:]); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrProxyHeader, err)
	}
	n := int(binary.BigEndian.Uint16(fixed[14:]))
	if proxyFixed+n > MaxProxyHeader {
		return nil, fmt.Errorf("%w: %d bytes of addresses and TLVs, at most %d", ErrProxyHeader, n, MaxProxyHeader-proxyFixed)
	}
	b := make([]byte, proxyFixed+n)
	copy(b, fixed[:])
	if _, err := io.ReadFull(r, b[proxyFixed:]); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrProxyHeader, err)
	}
	return ParseProxyHeader(b)
}

// ParseProxyHeader decodes a whole PROXY v2 header, which must fill b.
func ParseProxyHeader(b []byte) (*ProxyHeader, error) {
	bad := func(format string, args ...any) (*ProxyHeader, error) {
		return nil, fmt.Errorf("%w: %s", ErrProxyHeader, fmt.Sprintf(format, args...))
	}
	if len(b) < proxyFixed || !bytes.Equal(b[:12], proxySig) {
		return bad("no signature")
	}
	if len(b) > MaxProxyHeader {
		return bad("%d bytes, at most %d", len(b), MaxProxyHeader)
	}
	if v := b[12] >> 4; v != 2 {
		return bad("version %d", v)
	}
	if n := int(binary.BigEndian.Uint16(b[14:])); n != len(b)-proxyFixed {
		return bad("length %d, header carries %d", n, len(b)-proxyFixed)
	}
	body := b[proxyFixed:]
	switch b[12] & 0x0f {
	case 0: // LOCAL: the family and addresses are to be ignored
		return &ProxyHeader{Local: true}, nil
	case 1:
	default:
		return bad("command %d", b[12]&0x0f)
	}
	var alen int
	switch b[13] {
	case 0x11:
		alen = 4
	case 0x21:
		alen = 16
	default:
		return bad("family/protocol %#x, want TCP over IPv4 or IPv6", b[13])
	}
	if len(body) < 2*alen+4 {
		return bad("%d bytes of addresses, want %d", len(body), 2*alen+4)
	}
	// An IPv4-mapped address is the IPv4 address (a dual-stack
	// socket's peer): one client, one form.
	s, _ := netip.AddrFromSlice(body[:alen])
	d, _ := netip.AddrFromSlice(body[alen : 2*alen])
	s, d = s.Unmap(), d.Unmap()
	sp := binary.BigEndian.Uint16(body[2*alen:])
	dp := binary.BigEndian.Uint16(body[2*alen+2:])
	// TLVs follow; each must fit (type, length, value).
	for t := body[2*alen+4:]; len(t) > 0; {
		if len(t) < 3 {
			return bad("a truncated TLV")
		}
		l := 3 + int(binary.BigEndian.Uint16(t[1:]))
		if l > len(t) {
			return bad("a TLV of %d bytes, %d left", l, len(t))
		}
		t = t[l:]
	}
	return &ProxyHeader{Source: netip.AddrPortFrom(s, sp), Destination: netip.AddrPortFrom(d, dp)}, nil
}
