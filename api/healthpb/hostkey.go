package healthpb

import (
	"bytes"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// Per-host identity. Every host has its own key, derived from a master
// secret only the units hold:
//
//	key(host, grant) = HKDF-SHA256(master, salt "tether health v2",
//	                               info "host key" ‖ host (4 bytes) ‖ grant encoding)
//
// The grant is the list of address prefixes whose endpoints the host may
// report on. It is part of the derivation, so it cannot be changed
// without the master secret, and every frame a host sends carries it in
// its header: a unit needs nothing but the master secret to check any
// host's frames, and a host holds only its own key, which speaks for
// one host ID and the addresses it was issued for, nothing else.

// KeySize is the length of a host key.
const KeySize = 32

// MinMasterSize is the shortest master secret accepted.
const MinMasterSize = 16

// MaxGrant bounds the prefixes of a grant.
const MaxGrant = 16

// Errors of host keys and grants.
var (
	ErrGrant   = errors.New("health: bad endpoint grant")
	ErrHostKey = errors.New("health: bad host key file")
)

// Grant is the canonical list of address prefixes a host may report
// endpoints in: masked, sorted, without duplicates. The zero Grant
// allows nothing.
type Grant []netip.Prefix

// NewGrant checks and canonicalises prefixes.
func NewGrant(prefixes []netip.Prefix) (Grant, error) {
	if len(prefixes) == 0 {
		return nil, fmt.Errorf("%w: no prefixes", ErrGrant)
	}
	g := make(Grant, 0, len(prefixes))
	for _, p := range prefixes {
		if !p.IsValid() || p.Addr().Zone() != "" {
			return nil, fmt.Errorf("%w: %q is not an address prefix", ErrGrant, p)
		}
		if p.Addr().Is4In6() {
			return nil, fmt.Errorf("%w: %s: write IPv4 prefixes as IPv4", ErrGrant, p)
		}
		g = append(g, p.Masked())
	}
	slices.SortFunc(g, comparePrefix)
	g = slices.Compact(g)
	if len(g) > MaxGrant {
		return nil, fmt.Errorf("%w: %d prefixes, at most %d", ErrGrant, len(g), MaxGrant)
	}
	return g, nil
}

// ParseGrant reads a comma- or space-separated list of prefixes; a bare
// address stands for itself alone (/32 or /128).
func ParseGrant(s string) (Grant, error) {
	var ps []netip.Prefix
	for _, f := range strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' }) {
		p, err := netip.ParsePrefix(f)
		if err != nil {
			a, err2 := netip.ParseAddr(f)
			if err2 != nil {
				return nil, fmt.Errorf("%w: %q: want address/prefix, e.g. 10.0.10.2/32", ErrGrant, f)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		ps = append(ps, p)
	}
	return NewGrant(ps)
}

func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}

// Allows reports whether an endpoint ("address:port") lies in the grant.
// An empty endpoint names no backend and is allowed.
func (g Grant) Allows(endpoint string) bool {
	if endpoint == "" {
		return true
	}
	ap, err := netip.ParseAddrPort(endpoint)
	if err != nil {
		return false
	}
	a := ap.Addr().Unmap()
	for _, p := range g {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// Equal reports whether two canonical grants are the same.
func (g Grant) Equal(o Grant) bool { return slices.Equal(g, o) }

// String lists the prefixes, comma-separated.
func (g Grant) String() string {
	s := make([]string, len(g))
	for i, p := range g {
		s[i] = p.String()
	}
	return strings.Join(s, ",")
}

// appendGrant writes the grant's wire form: a count, then per prefix its
// family (4 or 6), its length in bits and its address bytes.
func appendGrant(b []byte, g Grant) []byte {
	b = append(b, byte(len(g)))
	for _, p := range g {
		if p.Addr().Is4() {
			a := p.Addr().As4()
			b = append(b, 4, byte(p.Bits()))
			b = append(b, a[:]...)
		} else {
			a := p.Addr().As16()
			b = append(b, 6, byte(p.Bits()))
			b = append(b, a[:]...)
		}
	}
	return b
}

// readGrant reads a grant's wire form and requires it canonical, so
// that one grant has exactly one encoding (it is MAC and key input).
func readGrant(b []byte) (Grant, []byte, error) {
	if len(b) < 1 {
		return nil, nil, ErrShort
	}
	n := int(b[0])
	b = b[1:]
	if n > MaxGrant {
		return nil, nil, fmt.Errorf("%w: %d prefixes", ErrGrant, n)
	}
	var g Grant
	for range n {
		if len(b) < 2 {
			return nil, nil, ErrShort
		}
		fam, bits := b[0], int(b[1])
		b = b[2:]
		var a netip.Addr
		switch {
		case fam == 4 && len(b) >= 4:
			a = netip.AddrFrom4([4]byte(b[:4]))
			b = b[4:]
		case fam == 6 && len(b) >= 16:
			a = netip.AddrFrom16([16]byte(b[:16]))
			b = b[16:]
			if a.Is4In6() {
				return nil, nil, fmt.Errorf("%w: IPv4 written as IPv6", ErrGrant)
			}
		case fam == 4 || fam == 6:
			return nil, nil, ErrShort
		default:
			return nil, nil, fmt.Errorf("%w: family %d", ErrGrant, fam)
		}
		if bits > a.BitLen() {
			return nil, nil, fmt.Errorf("%w: /%d", ErrGrant, bits)
		}
		p := netip.PrefixFrom(a, bits)
		if p != p.Masked() || len(g) > 0 && comparePrefix(g[len(g)-1], p) >= 0 {
			return nil, nil, fmt.Errorf("%w: not canonical", ErrGrant)
		}
		g = append(g, p)
	}
	return g, b, nil
}

// DeriveKey computes host's key for grant from the master secret.
func DeriveKey(master []byte, host uint32, g Grant) []byte {
	info := binary.BigEndian.AppendUint32([]byte("host key"), host)
	info = appendGrant(info, g)
	k, err := hkdf.Key(sha256.New, master, []byte("tether health v2"), string(info), KeySize)
	if err != nil {
		// Only a key longer than 255 hash blocks can fail; KeySize is one.
		panic("health: hkdf: " + err.Error())
	}
	return k
}

// HostKey is what one host holds: its ID, the endpoints it may report
// on, and the key derived for exactly those.
type HostKey struct {
	Host  uint32
	Grant Grant
	Key   []byte
}

// NewHostKey derives a host's key file contents from the master secret.
func NewHostKey(master []byte, host uint32, g Grant) (*HostKey, error) {
	if len(master) < MinMasterSize {
		return nil, fmt.Errorf("health: master secret of %d bytes, at least %d", len(master), MinMasterSize)
	}
	if host == 0 {
		return nil, fmt.Errorf("health: host 0 is no host")
	}
	if len(g) == 0 {
		return nil, fmt.Errorf("%w: a host key must grant at least one prefix", ErrGrant)
	}
	return &HostKey{Host: host, Grant: g, Key: DeriveKey(master, host, g)}, nil
}

// MarshalText writes the key file: three "name value" lines after a
// comment, readable by an operator who wonders what a file allows.
func (k *HostKey) MarshalText() ([]byte, error) {
	var b bytes.Buffer
	fmt.Fprintf(&b, "# Tether health host key (protocol %d). Secret: it speaks for host %d.\n", Version, k.Host)
	fmt.Fprintf(&b, "host %d\nendpoints %s\nkey %s\n", k.Host, k.Grant, base64.StdEncoding.EncodeToString(k.Key))
	return b.Bytes(), nil
}

// ParseHostKey reads a key file written by MarshalText.
func ParseHostKey(b []byte) (*HostKey, error) {
	k := &HostKey{}
	seen := map[string]bool{}
	for i, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, val, _ := strings.Cut(line, " ")
		val = strings.TrimSpace(val)
		if seen[name] {
			return nil, fmt.Errorf("%w: line %d: %s twice", ErrHostKey, i+1, name)
		}
		seen[name] = true
		var err error
		switch name {
		case "host":
			var n uint64
			if n, err = strconv.ParseUint(val, 10, 32); err == nil && n == 0 {
				err = errors.New("host 0")
			}
			k.Host = uint32(n)
		case "endpoints":
			k.Grant, err = ParseGrant(val)
		case "key":
			if k.Key, err = base64.StdEncoding.DecodeString(val); err == nil && len(k.Key) != KeySize {
				err = fmt.Errorf("%d bytes, want %d", len(k.Key), KeySize)
			}
		default:
			err = errors.New("unknown line")
		}
		if err != nil {
			return nil, fmt.Errorf("%w: line %d (%s): %v", ErrHostKey, i+1, name, err)
		}
	}
	for _, need := range []string{"host", "endpoints", "key"} {
		if !seen[need] {
			return nil, fmt.Errorf("%w: no %q line (make one with `tetherd health-key`)", ErrHostKey, need)
		}
	}
	return k, nil
}
