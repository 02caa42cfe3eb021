package cluster

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
)

// Node metadata, as each member publishes it (memberlist's NodeMeta):
//
//	0      1               9            11      12
//	+------+---------------+------------+-------+-----------+------------+
//	| vers |   boot ID     | atoms port | flags | IPv4 (4)? | IPv6 (16)? |
//	+------+---------------+------------+-------+-----------+------------+
//
// vers is metaVersion; boot ID is big-endian and never 0; atoms port is
// the port of the unit's atom stream (big-endian, never 0; other units
// dial it at the unit's gossip address); flags bit 0
// says an IPv4 tunnel source follows, bit 1 an IPv6 one (in that order).
// Any other flag, length or version is refused: a later version that
// adds fields must bump vers, and units of different versions then see
// each other as refused rather than half-understood.
const (
	metaVersion = 2
	metaHeader  = 12
	// metaMax bounds what this package accepts and sends, far under
	// memberlist's MetaMaxSize (512).
	metaMax = 64

	metaHas4 = 1 << 0
	metaHas6 = 1 << 1
)

// meta is a member's metadata.
type meta struct {
	version uint8
	boot    uint64
	atoms   uint16
	addr4   netip.Addr // invalid when unset
	addr6   netip.Addr
}

func (m *meta) encode() []byte {
	b := make([]byte, metaHeader, metaMax)
	b[0] = m.version
	binary.BigEndian.PutUint64(b[1:9], m.boot)
	binary.BigEndian.PutUint16(b[9:11], m.atoms)
	if m.addr4.Is4() {
		b[11] |= metaHas4
		a := m.addr4.As4()
		b = append(b, a[:]...)
	}
	if m.addr6.Is6() {
		b[11] |= metaHas6
		a := m.addr6.As16()
		b = append(b, a[:]...)
	}
	return b
}

var errMetaVersion = errors.New("metadata of another version")

// parseMeta reads and checks a member's metadata.
func parseMeta(b []byte) (meta, error) {
	var m meta
	switch {
	case len(b) > metaMax:
		return m, fmt.Errorf("metadata of %d bytes, over %d", len(b), metaMax)
	case len(b) < metaHeader:
		return m, fmt.Errorf("metadata of %d bytes, under %d", len(b), metaHeader)
	case b[0] != metaVersion:
		return m, fmt.Errorf("%w: %d, want %d", errMetaVersion, b[0], metaVersion)
	}
	m.version = b[0]
	m.boot = binary.BigEndian.Uint64(b[1:9])
	m.atoms = binary.BigEndian.Uint16(b[9:11])
	flags := b[11]
	if m.boot == 0 {
		return m, errors.New("metadata with boot ID 0")
	}
	if m.atoms == 0 {
		return m, errors.New("metadata with atoms port 0")
	}
	if flags&^(metaHas4|metaHas6) != 0 {
		return m, fmt.Errorf("metadata with unknown flags %#x", flags)
	}
	want := metaHeader
	if flags&metaHas4 != 0 {
		want += 4
	}
	if flags&metaHas6 != 0 {
		want += 16
	}
	if len(b) != want {
		return m, fmt.Errorf("metadata of %d bytes, want %d for flags %#x", len(b), want, flags)
	}
	rest := b[metaHeader:]
	if flags&metaHas4 != 0 {
		m.addr4 = netip.AddrFrom4([4]byte(rest[:4]))
		rest = rest[4:]
	}
	if flags&metaHas6 != 0 {
		m.addr6 = netip.AddrFrom16([16]byte(rest[:16]))
		if m.addr6.Is4In6() {
			return m, errors.New("metadata with an IPv4-mapped address as IPv6 tunnel source")
		}
	}
	return m, nil
}

// sources returns the tunnel sources as text.
func (m *meta) sources() []string {
	var out []string
	for _, a := range []netip.Addr{m.addr4, m.addr6} {
		if a.IsValid() {
			out = append(out, a.String())
		}
	}
	return out
}
