package dataplane

import (
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/tetherlb/tether/api/unit"
	"github.com/tetherlb/tether/config"
	"github.com/tetherlb/tether/dataplane/header"
	"github.com/tetherlb/tether/tables/flow"
	"github.com/tetherlb/tether/tables/maglev"
)

// addrKey is an address as a map key; V6 keeps an IPv4 address from
// meeting an IPv6 one with the same leading bytes.
type addrKey struct {
	a  [16]byte
	v6 bool
}

type vipKey struct {
	addr  addrKey
	port  uint16
	proto uint8
}

// addrRole marks what an address is to the forwarder.
type addrRole uint8

const (
	roleVIP  addrRole = 1 << iota // some VIP listens on it
	roleSNAT                      // a nat VIP's source pool holds it
)

// VIP is a virtual service as the dataplane sees it.
type VIP struct {
	ID    uint32
	Name  string
	Addr  netip.Addr
	Port  uint16
	Proto uint8
	Mode  unit.Mode
	MTU   int
	// Maglev is nil when no backend takes new flows.
	Maglev *maglev.Table
	// slots maps a Maglev entry to a backend ID.
	slots []uint32
	// maglevIn is what Maglev was built from; a rebuild whose input is
	// the same reuses the table (see Build).
	maglevIn       []maglev.Backend
	snat           []addrKey
	portLo, portHi uint16
	addr           addrKey
	// Backends lists the IDs of the VIP's configured backends.
	Backends []uint32
	// Removed marks a VIP that left the configuration; its flows finish.
	Removed bool
	// Punt hands the first packet of each new flow to the control
	// process to decide.
	Punt bool
}

// Backend is one instance behind a VIP.
type Backend struct {
	ID     uint32
	VIP    uint32
	Name   string
	Addr   netip.Addr
	Port   uint16
	Weight int
	State  unit.State
	addr   addrKey
	// known is false only for the stand-in of a backend the snapshot does
	// not have (see backendOf).
	known bool
	// mac is the next hop toward the backend, resolved when the snapshot
	// is built so that packets to backends skip the neighbour lookup.
	mac    header.MAC
	hasMAC bool
}

// Snapshot is the forwarder's read-mostly state. It is immutable once
// built: workers read it without synchronisation, and a change is a new
// Snapshot swapped in between batches.
type Snapshot struct {
	// Generation counts builds: the first is 1.
	Generation uint64
	// VIPs and Backends are indexed by ID. IDs are stable across
	// rebuilds for the same VIP and backend names, so counters and flows
	// keep their meaning; entries of removed VIPs and backends stay, the
	// backends as unit.StateRemoved, so that their flows can finish.
	VIPs     []*VIP
	Backends []Backend

	vips  map[vipKey]*VIP
	roles map[addrKey]addrRole
	// halfNATSrc lists, by service address, port and protocol, the
	// backends of half-NAT VIPs: where a reply without a flow can come
	// from (see Pipeline.recoverHalfNAT).
	halfNATSrc map[vipKey][]uint32
	neigh      *Neighbors
	unit4      [4]byte
	unit6      [16]byte
	timeouts   flow.Timeouts
	ping       bool
	// hop makes the unit a router hop: TTL decremented, 1 and 0 dropped.
	hop bool
	// holdTunnel: the unit tells hosts its tunnel flows' mappings (it
	// has host streams); a new tunnel flow's packets wait in the
	// forwarder until the control process says the host holds the
	// mapping (RouteRelease), so that none reaches a host that could not
	// restore it.
	holdTunnel bool
	// shareFlows: the unit is one of a cluster (a cluster section), so a
	// connection's segments may reach it without its flow when the
	// router moves the connection from another unit. A TCP segment
	// without SYN that misses on a nat, tunnel or ipip VIP is then held
	// and punted (PuntMidFlow) for the control process, which can ask
	// the other units, instead of making a flow of its own or being
	// reset.
	shareFlows bool
	unknown    Backend // stands in for backends the snapshot lacks
	vipIDs     map[string]uint32
	beIDs      map[string]uint32
}

func keyOf(a netip.Addr) addrKey {
	if a.Is4() {
		b := a.As4()
		var k addrKey
		copy(k.a[:], b[:])
		return k
	}
	return addrKey{a: a.As16(), v6: true}
}

// Build compiles a checked configuration into a Snapshot. prev, when not
// nil, is the snapshot being replaced: IDs are kept for VIPs and backends
// that keep their names, and backends that disappear are kept as
// unit.StateRemoved.
func Build(c *config.Config, prev *Snapshot) (*Snapshot, error) {
	s := &Snapshot{
		Generation: 1,
		vips:       map[vipKey]*VIP{},
		roles:      map[addrKey]addrRole{},
		halfNATSrc: map[vipKey][]uint32{},
		neigh:      NewNeighbors(),
		vipIDs:     map[string]uint32{},
		beIDs:      map[string]uint32{},
		ping:       c.Forwarder.AnswerPing,
		hop:        c.Forwarder.TTL != config.TTLKeep,
		holdTunnel: c.Hosts.Listen != "",
		shareFlows: c.Cluster != nil,
		unknown:    Backend{State: unit.StateRemoved},
		timeouts:   TimeoutsOf(&c.Forwarder.Flows.Timeouts),
	}
	if prev != nil {
		s.Generation = prev.Generation + 1
		for k, v := range prev.vipIDs {
			s.vipIDs[k] = v
		}
		for k, v := range prev.beIDs {
			s.beIDs[k] = v
		}
		// Removed VIPs keep their place (flows point at them through
		// their backends) but leave the lookup map.
		s.VIPs = make([]*VIP, len(prev.VIPs))
		for i, v := range prev.VIPs {
			if v != nil {
				cp := *v
				cp.Removed, cp.Maglev, cp.slots = true, nil, nil
				s.VIPs[i] = &cp
			}
		}
		s.Backends = append([]Backend(nil), prev.Backends...)
		for i := range s.Backends {
			s.Backends[i].State = unit.StateRemoved
		}
	}
	if a := c.Unit.Addr4(); a.IsValid() {
		s.unit4 = a.As4()
	}
	if a := c.Unit.Addr6(); a.IsValid() {
		s.unit6 = a.As16()
	}
	if m, ok := c.Unit.HardwareAddr(); ok {
		s.neigh.SetSelf(m)
	}
	if m, ok := c.L2.Gateway(); ok {
		s.neigh.SetGateway(4, m)
		s.neigh.SetGateway(6, m)
	}
	for i := range s.Backends {
		// Backends carried over from prev: their next hop may have moved.
		b := &s.Backends[i]
		b.mac, b.hasMAC = s.neigh.lookup(b.addr.a[:b.addrLen()])
	}
	for i := range c.L2.Neighbors {
		n := &c.L2.Neighbors[i]
		s.neigh.Add(n.Addr(), n.HardwareAddr())
	}
	var prevVIPs []*VIP
	if prev != nil {
		prevVIPs = prev.VIPs
	}
	for i := range c.VIPs {
		if err := s.addVIP(&c.VIPs[i], prevVIPs); err != nil {
			return nil, err
		}
	}
	return s, nil
}

func (s *Snapshot) id(ids map[string]uint32, name string, next int) uint32 {
	if id, ok := ids[name]; ok {
		return id
	}
	id := uint32(next)
	ids[name] = id
	return id
}

func (s *Snapshot) addVIP(cv *config.VIP, prevVIPs []*VIP) error {
	id := s.id(s.vipIDs, cv.Name, len(s.VIPs))
	v := &VIP{
		ID:    id,
		Name:  cv.Name,
		Addr:  cv.Addr(),
		Port:  uint16(cv.Port),
		Proto: cv.ProtoNum(),
		MTU:   cv.MTU,
		Punt:  cv.Punt,
		addr:  keyOf(cv.Addr()),
	}
	v.Mode = cv.ModeValue()
	if !v.Mode.Valid() {
		return fmt.Errorf("dataplane: vip %s: mode %q unknown", cv.Name, cv.Mode)
	}
	for _, a := range cv.SNATAddrs() {
		k := keyOf(a)
		v.snat = append(v.snat, k)
		s.roles[k] |= roleSNAT
	}
	for _, a := range cv.SNATStandbyAddrs() {
		// Replies to another unit's SNAT address, for the connections
		// this unit took over: never a source for new flows.
		s.roles[keyOf(a)] |= roleSNAT
	}
	v.portLo, v.portHi = cv.SNATPortRange()
	var mb []maglev.Backend
	for i := range cv.Backends {
		cb := &cv.Backends[i]
		bid := s.id(s.beIDs, cv.Name+"/"+cb.Name, len(s.Backends))
		b := Backend{
			ID: bid, VIP: id, Name: cb.Name, Addr: cb.Addr(), Port: uint16(cb.Port),
			Weight: cb.WeightValue(), addr: keyOf(cb.Addr()), known: true,
		}
		b.State = cb.StateValue()
		b.mac, b.hasMAC = s.neigh.lookup(b.addr.a[:b.addrLen()])
		if int(bid) == len(s.Backends) {
			s.Backends = append(s.Backends, b)
		} else {
			s.Backends[bid] = b
		}
		v.Backends = append(v.Backends, bid)
		if v.Mode == unit.ModeHalfNAT && !v.Punt {
			k := vipKey{addr: b.addr, port: b.Port, proto: v.Proto}
			s.halfNATSrc[k] = append(s.halfNATSrc[k], bid)
		}
		if b.State == unit.StateActive && b.Weight > 0 {
			mb = append(mb, maglev.Backend{Name: b.Name, Weight: uint32(b.Weight)})
			v.slots = append(v.slots, bid)
		}
	}
	v.maglevIn = mb
	if int(id) < len(prevVIPs) && sameMaglev(prevVIPs[id], v, uint32(cv.MaglevSize)) {
		v.Maglev, v.slots = prevVIPs[id].Maglev, prevVIPs[id].slots
	} else if len(mb) > 0 {
		t, err := maglev.New(mb, uint32(cv.MaglevSize))
		if err != nil {
			return fmt.Errorf("dataplane: vip %s: %w", cv.Name, err)
		}
		v.Maglev = t
	}
	if int(id) == len(s.VIPs) {
		s.VIPs = append(s.VIPs, v)
	} else {
		s.VIPs[id] = v
	}
	s.vips[vipKey{addr: v.addr, port: v.Port, proto: v.Proto}] = v
	s.roles[v.addr] |= roleVIP
	return nil
}

// sameMaglev reports whether prev's Maglev table is the one v would
// build with size m: same backends in the same order, with the same
// weights and IDs. A table is immutable, so the two snapshots can share
// it.
func sameMaglev(prev, v *VIP, m uint32) bool {
	return prev != nil && !prev.Removed && prev.Maglev != nil && prev.Maglev.Size() == m &&
		slices.Equal(prev.maglevIn, v.maglevIn) && slices.Equal(prev.slots, v.slots)
}

// backendOf returns the backend with ID id. A flow can name a backend the
// snapshot does not have only if the snapshot was built without its
// predecessor (a control process starting afresh); such flows finish
// like those of a removed backend, uncounted.
func (s *Snapshot) backendOf(id uint32) *Backend {
	if int(id) < len(s.Backends) {
		return &s.Backends[id]
	}
	return &s.unknown
}

// mtuOf returns the MTU of the backend's VIP.
func (s *Snapshot) mtuOf(b *Backend) int {
	if b.known && int(b.VIP) < len(s.VIPs) && s.VIPs[b.VIP] != nil {
		return s.VIPs[b.VIP].MTU
	}
	return config.DefaultMTU
}

func (b *Backend) addrLen() int {
	if b.addr.v6 {
		return 16
	}
	return 4
}

// TimeoutsOf converts configured timeouts to the flow table's.
func TimeoutsOf(t *config.Timeouts) flow.Timeouts {
	ms := func(d time.Duration) uint32 { return uint32(d / time.Millisecond) }
	return flow.Timeouts{
		TCPSyn:         ms(t.TCPSyn),
		TCPEstablished: ms(t.TCPEstablished),
		TCPFin:         ms(t.TCPFin),
		TCPClosed:      ms(t.TCPClosed),
		UDP:            ms(t.UDP),
		UDPUnreplied:   ms(t.UDPUnreplied),
		Other:          ms(t.Other),
	}
}

// Timeouts returns the flow timeouts of the configuration.
func (s *Snapshot) Timeouts() flow.Timeouts { return s.timeouts }

// LookupVIP returns the VIP serving addr:port/proto, or nil.
func (s *Snapshot) LookupVIP(addr netip.Addr, port uint16, proto uint8) *VIP {
	return s.vips[vipKey{addr: keyOf(addr.Unmap()), port: port, proto: proto}]
}

// pick returns the backend ID Maglev gives a flow hash, and whether the
// VIP has any backend for new flows.
func (v *VIP) pick(h uint64) (uint32, bool) {
	if v.Maglev == nil {
		return 0, false
	}
	return v.slots[v.Maglev.Lookup(h)], true
}

// Slot returns the Maglev table entry a new flow from src would use (0
// for a source of the other family).
func (v *VIP) Slot(src netip.AddrPort, proto uint8) uint32 {
	h, ok := v.maglevHash(src, proto)
	if v.Maglev == nil || !ok {
		return 0
	}
	return v.Maglev.Slot(h)
}

// Choose returns the backend Maglev gives a new flow from src to the VIP,
// as the pipeline would choose it; ok is false when the VIP has no
// backend for new flows, or src is of the other family. It is how tools
// explain a decision.
func (v *VIP) Choose(src netip.AddrPort, proto uint8) (backend uint32, ok bool) {
	h, ok := v.maglevHash(src, proto)
	if !ok {
		return 0, false
	}
	return v.pick(h)
}

// maglevHash is the hash the pipeline gives a new flow from src to the
// VIP; false when src is of the other family (no packet has both).
func (v *VIP) maglevHash(src netip.AddrPort, proto uint8) (uint64, bool) {
	a := src.Addr().Unmap()
	if a.Is4() != v.Addr.Is4() {
		return 0, false
	}
	if a.Is4() {
		k := flow.Key4{Src: a.As4(), Dst: v.Addr.As4(), SrcPort: src.Port(), DstPort: v.Port, Proto: proto}
		return maglevHash4(&k), true
	}
	k := flow.Key6{Src: a.As16(), Dst: v.Addr.As16(), SrcPort: src.Port(), DstPort: v.Port, Proto: proto}
	return maglevHash6(&k), true
}
