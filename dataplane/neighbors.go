package dataplane

import (
	"encoding/binary"
	"net/netip"

	"github.com/tetherlb/tether/dataplane/header"
)

// Neighbors is the forwarder's L2 view: the MAC of every next hop it may
// send to, the gateways for everything else, and its own MAC. It is built
// once and then only read; a change is a new Neighbors (see
// Snapshot.WithNeighbors). The static configuration provides one; with
// AF_XDP the forwarder builds them from the kernel's neighbour table.
type Neighbors struct {
	v4             map[uint32]header.MAC
	v6             map[[16]byte]header.MAC
	gw4, gw6       header.MAC
	hasGW4, hasGW6 bool
	self           header.MAC
	hasSelf        bool
}

// NewNeighbors returns an empty table to fill with Add and friends before
// it is shared.
func NewNeighbors() *Neighbors {
	return &Neighbors{v4: map[uint32]header.MAC{}, v6: map[[16]byte]header.MAC{}}
}

// Add records addr's MAC.
func (n *Neighbors) Add(addr netip.Addr, mac header.MAC) {
	addr = addr.Unmap()
	if addr.Is4() {
		b := addr.As4()
		n.v4[binary.BigEndian.Uint32(b[:])] = mac
	} else {
		n.v6[addr.As16()] = mac
	}
}

// SetGateway sets the MAC of the next hop for off-link destinations of a
// family (4 or 6).
func (n *Neighbors) SetGateway(family int, mac header.MAC) {
	if family == 4 {
		n.gw4, n.hasGW4 = mac, true
	} else {
		n.gw6, n.hasGW6 = mac, true
	}
}

// SetSelf sets the source MAC of frames the forwarder sends.
func (n *Neighbors) SetSelf(mac header.MAC) { n.self, n.hasSelf = mac, true }

// Has reports whether every address in addrs has a MAC of its own (not
// the gateway's).
func (n *Neighbors) Has(addrs []netip.Addr) bool {
	for _, a := range addrs {
		a = a.Unmap()
		var ok bool
		if a.Is4() {
			b := a.As4()
			_, ok = n.v4[binary.BigEndian.Uint32(b[:])]
		} else {
			_, ok = n.v6[a.As16()]
		}
		if !ok {
			return false
		}
	}
	return true
}

// Len returns the number of neighbours.
func (n *Neighbors) Len() int { return len(n.v4) + len(n.v6) }

// lookup returns the MAC frames to addr (4 or 16 bytes) go to: the
// neighbour's if addr is on the link, the gateway's otherwise.
func (n *Neighbors) lookup(addr []byte) (header.MAC, bool) {
	if len(addr) == 4 {
		if mac, ok := n.v4[binary.BigEndian.Uint32(addr)]; ok {
			return mac, true
		}
		return n.gw4, n.hasGW4
	}
	if mac, ok := n.v6[[16]byte(addr)]; ok {
		return mac, true
	}
	return n.gw6, n.hasGW6
}

// WithNeighbors returns a copy of s that sends by n: the VIPs, Maglev
// tables and IDs are shared, the backends' next hops resolved anew. It is
// how neighbour changes reach the workers without rebuilding Maglev
// tables.
func (s *Snapshot) WithNeighbors(n *Neighbors) *Snapshot {
	c := *s
	c.neigh = n
	c.Backends = append([]Backend(nil), s.Backends...)
	for i := range c.Backends {
		b := &c.Backends[i]
		b.mac, b.hasMAC = n.lookup(b.addr.a[:b.addrLen()])
	}
	return &c
}

// Neighbors returns the snapshot's L2 view.
func (s *Snapshot) Neighbors() *Neighbors { return s.neigh }

// maxMissed bounds the next hops a worker remembers between collections.
const maxMissed = 16

// missedHop remembers a next hop that had no MAC, so that the forwarder
// can ask the kernel to resolve it. Repeats and overflow are ignored: the
// drop is counted either way, and the next miss asks again.
func (p *Pipeline) missedHop(addr []byte) {
	if p.nMissed == maxMissed {
		return
	}
	var a netip.Addr
	if len(addr) == 4 {
		a = netip.AddrFrom4([4]byte(addr))
	} else {
		a = netip.AddrFrom16([16]byte(addr))
	}
	for _, m := range p.missed[:p.nMissed] {
		if m == a {
			return
		}
	}
	p.missed[p.nMissed] = a
	p.nMissed++
}

// TakeMissed appends the next hops that had no MAC since the last call to
// dst and forgets them.
func (p *Pipeline) TakeMissed(dst []netip.Addr) []netip.Addr {
	dst = append(dst, p.missed[:p.nMissed]...)
	p.nMissed = 0
	return dst
}
