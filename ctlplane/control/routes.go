package control

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/tetherlb/tether/api/atompb"
	"github.com/tetherlb/tether/api/unit"
	"github.com/tetherlb/tether/ctlplane/atoms"
	"github.com/tetherlb/tether/dataplane/channel"
)

// Route atoms (issue 15): every flow of a mode whose connections can
// cross units (tunnel, ipip, nat) is an atom of the distributed atom
// manager from the moment its opening event arrives, keyed by the
// client's 5-tuple; its host is the backend's address and its data the
// rest of the forwarder's action, by name rather than by this unit's
// forwarder IDs, which other units do not share. A unit that receives a
// packet of a connection it has no flow for (the router moved it) looks
// the atom up and installs the same action (FIG. 28).

// routeKey is a flow's atom key: route/PROTO/CLIENT>VIP, addresses as
// address:port ([address]:port for IPv6).
func routeKey(k *unit.FlowKey) string {
	proto := strconv.Itoa(int(k.Proto))
	switch k.Proto {
	case 6:
		proto = "tcp"
	case 17:
		proto = "udp"
	}
	return atompb.KindRoute + proto + "/" + netip.AddrPortFrom(k.SrcAddr(), k.SrcPort).String() + ">" +
		netip.AddrPortFrom(k.DstAddr(), k.DstPort).String()
}

// routeData is a route atom's data: the action, by names.
type routeData struct {
	Mode unit.Mode
	// VIP and Backend name the backend (unit.BackendKey).
	VIP, Backend string
	// Port is the backend's port (its address is the atom's host).
	Port uint16
	// SNAT is a nat flow's source toward the backend.
	SNAT netip.AddrPort
	// Client and Service are the client's side of a nat connection, in
	// the atom keyed by its reply (backend to SNAT): a unit that
	// receives a reply it has no flow for finds the connection by it.
	Client, Service netip.AddrPort
}

// routeDataVersion is the encoding's first byte.
const routeDataVersion = 1

// maxRouteName bounds a name in route data (config names are shorter).
const maxRouteName = 100

var errRouteData = errors.New("route atom data")

// encode lays the data out as
//
//	version · mode · port (2) · len · VIP · len · backend · [family (4|6) · SNAT address · port (2) [· client · port (2) · service · port (2)]]
//
// the SNAT part for nat only, the client's side for a nat reply's atom
// only (addresses of the same family).
func (d *routeData) encode() []byte {
	b := []byte{routeDataVersion, byte(d.Mode)}
	b = binary.BigEndian.AppendUint16(b, d.Port)
	b = append(b, byte(len(d.VIP)))
	b = append(b, d.VIP...)
	b = append(b, byte(len(d.Backend)))
	b = append(b, d.Backend...)
	if d.SNAT.IsValid() {
		a := d.SNAT.Addr()
		if a.Is4() {
			b = append(b, 4)
		} else {
			b = append(b, 6)
		}
		b = append(b, a.AsSlice()...)
		b = binary.BigEndian.AppendUint16(b, d.SNAT.Port())
		if d.Client.IsValid() {
			b = append(b, d.Client.Addr().AsSlice()...)
			b = binary.BigEndian.AppendUint16(b, d.Client.Port())
			b = append(b, d.Service.Addr().AsSlice()...)
			b = binary.BigEndian.AppendUint16(b, d.Service.Port())
		}
	}
	return b
}

func decodeRouteData(b []byte) (routeData, error) {
	var d routeData
	if len(b) < 5 || b[0] != routeDataVersion {
		return d, fmt.Errorf("%w: %d bytes, version %v", errRouteData, len(b), b[:min(1, len(b))])
	}
	d.Mode = unit.Mode(b[1])
	d.Port = binary.BigEndian.Uint16(b[2:4])
	b = b[4:]
	name := func() (string, bool) {
		if len(b) < 1 || int(b[0]) > len(b)-1 || b[0] == 0 || b[0] > maxRouteName {
			return "", false
		}
		s := string(b[1 : 1+b[0]])
		b = b[1+b[0]:]
		return s, true
	}
	var ok1, ok2 bool
	d.VIP, ok1 = name()
	d.Backend, ok2 = name()
	if !ok1 || !ok2 {
		return routeData{}, fmt.Errorf("%w: names", errRouteData)
	}
	switch d.Mode {
	case unit.ModeTunnel, unit.ModeIPIP:
		if len(b) != 0 {
			return routeData{}, fmt.Errorf("%w: %d trailing bytes", errRouteData, len(b))
		}
	case unit.ModeNAT:
		if len(b) < 1 || b[0] != 4 && b[0] != 6 {
			return routeData{}, fmt.Errorf("%w: nat source family", errRouteData)
		}
		n := 4
		if b[0] == 6 {
			n = 16
		}
		ap := func(p []byte) netip.AddrPort {
			a, _ := netip.AddrFromSlice(p[:n])
			return netip.AddrPortFrom(a, binary.BigEndian.Uint16(p[n:]))
		}
		switch len(b) {
		case 1 + n + 2:
			d.SNAT = ap(b[1:])
		case 1 + 3*(n+2):
			d.SNAT, d.Client, d.Service = ap(b[1:]), ap(b[1+n+2:]), ap(b[1+2*(n+2):])
		default:
			return routeData{}, fmt.Errorf("%w: nat source of %d bytes", errRouteData, len(b))
		}
	default:
		return routeData{}, fmt.Errorf("%w: mode %d", errRouteData, d.Mode)
	}
	return d, nil
}

// sharedMode reports whether a flow of mode m is a route atom.
// halfnat flows are not: their replies come back to the unit that made
// them (the client's address is kept), so they stay on one unit.
func sharedMode(m unit.Mode) bool {
	return m == unit.ModeTunnel || m == unit.ModeIPIP || m == unit.ModeNAT
}

// shareRoutes turns flow events into route atoms: an opened flow is
// added, a closed or expired one deleted (it lingers as a zombie, so
// that late packets still reach its backend).
func (c *Control) shareRoutes(events []channel.FlowEvent) {
	mgr := c.cl.atoms.Load()
	if mgr == nil {
		return
	}
	c.mu.Lock()
	names := c.beNames
	to := c.running.Forwarder.Flows.Timeouts
	c.mu.Unlock()
	for i := range events {
		ev := &events[i]
		if !sharedMode(ev.Action.Mode) {
			continue
		}
		key := routeKey(&ev.Key)
		if ev.Kind != channel.FlowOpened {
			mgr.DeleteMine(key) // another unit may carry the connection now
			if ev.Action.Mode == unit.ModeNAT {
				rk := replyKey(&ev.Key, &ev.Action)
				mgr.DeleteMine(routeKey(&rk))
			}
			continue
		}
		bk, ok := names[ev.Action.Backend]
		if ev.Action.Backend == unit.ForeignBackend {
			bk, ok = c.foreign.take(key)
		}
		if !ok {
			continue // a backend this process has no name for: nothing another unit could use
		}
		d := routeData{Mode: ev.Action.Mode, VIP: bk.VIP, Backend: bk.Backend, Port: ev.Action.PortA}
		if d.Mode == unit.ModeNAT {
			// B is the source toward the backend, in the flow's family.
			d.SNAT = netip.AddrPortFrom(backendAddr(&ev.Key, &unit.Action{A: ev.Action.B}), ev.Action.PortB)
		}
		timeout := to.TCPEstablished
		if ev.Key.Proto != 6 {
			timeout = to.UDP
		}
		host := backendAddr(&ev.Key, &ev.Action).String()
		if _, err := mgr.Add(key, host, d.encode(), max(timeout, time.Second), 0); err != nil {
			c.log.Debug().Err(err).Str("key", key).Msg("route atom not added")
		}
		if d.Mode == unit.ModeNAT {
			// The same connection by its reply, for the unit that
			// receives replies to this unit's SNAT address after its death.
			d.Client = netip.AddrPortFrom(ev.Key.SrcAddr(), ev.Key.SrcPort)
			d.Service = netip.AddrPortFrom(ev.Key.DstAddr(), ev.Key.DstPort)
			rk := replyKey(&ev.Key, &ev.Action)
			if _, err := mgr.Add(routeKey(&rk), host, d.encode(), max(timeout, time.Second), 0); err != nil {
				c.log.Debug().Err(err).Str("key", routeKey(&rk)).Msg("route atom not added")
			}
		}
	}
}

// foreignRoutes remembers, by route key, the names of backends this
// unit does not have that routes were made to (unit.ForeignBackend), so
// that the flow's opening event can be added as a route atom again
// under its names. Bounded: a route whose event never comes is
// forgotten when the map fills.
type foreignRoutes struct {
	mu    sync.Mutex
	names map[string]unit.BackendKey
}

// maxForeignRoutes bounds foreignRoutes.
const maxForeignRoutes = 1 << 16

func (f *foreignRoutes) note(key string, bk unit.BackendKey) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.names == nil || len(f.names) >= maxForeignRoutes {
		f.names = map[string]unit.BackendKey{}
	}
	f.names[key] = bk
}

func (f *foreignRoutes) take(key string) (unit.BackendKey, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	bk, ok := f.names[key]
	delete(f.names, key)
	return bk, ok
}

// replyKey is a nat connection's key as its replies carry it: from the
// backend (A, PortA) to the SNAT source (B, PortB).
func replyKey(k *unit.FlowKey, a *unit.Action) unit.FlowKey {
	return unit.FlowKey{V6: k.V6, Src: a.A, Dst: a.B, SrcPort: a.PortA, DstPort: a.PortB, Proto: k.Proto}
}

// replyRouteOf looks a nat connection up by a reply's key (a reply to a
// SNAT address this unit took over) and returns the connection's key
// on the client's side and the whole entry that carries it.
func (c *Control) replyRouteOf(ctx context.Context, k *unit.FlowKey) (client unit.FlowKey, a unit.Action, found bool, err error) {
	mgr := c.cl.atoms.Load()
	if mgr == nil {
		return client, a, false, nil
	}
	at, found, err := mgr.Query(ctx, routeKey(k))
	if err != nil || !found {
		return client, a, false, err
	}
	d, err := decodeRouteData(at.Data)
	if err != nil {
		return client, a, false, err
	}
	if d.Mode != unit.ModeNAT || !d.Client.IsValid() || d.Client.Addr().Is4() == k.V6 {
		return client, a, false, fmt.Errorf("route atom %s: not a nat reply's", at.Key)
	}
	client = unit.FlowKey{V6: k.V6, SrcPort: d.Client.Port(), DstPort: d.Service.Port(), Proto: k.Proto}
	copy(client.Src[:], d.Client.Addr().AsSlice())
	copy(client.Dst[:], d.Service.Addr().AsSlice())
	_, a, found, err = c.routeFrom(at, d, &client)
	return client, a, found, err
}

// routeOf looks a flow's route atom up (here, then at the other units)
// and returns the action that continues the connection where its first
// unit sent it: for tunnel and ipip, a new flow to the same backend
// (Mode 0: the forwarder makes it, with a flow ID of this unit's); for
// nat, the whole action, with the same source toward the backend. A
// zombie counts: late packets of a closed connection still go to its
// host. found is false when no unit knows the flow or this unit has no
// such backend.
func (c *Control) routeOf(ctx context.Context, k *unit.FlowKey) (vip string, a unit.Action, found bool, err error) {
	mgr := c.cl.atoms.Load()
	if mgr == nil {
		return "", a, false, nil
	}
	at, found, err := mgr.Query(ctx, routeKey(k))
	if err != nil || !found {
		return "", a, false, err
	}
	d, err := decodeRouteData(at.Data)
	if err != nil {
		return "", a, false, err
	}
	return c.routeFrom(at, d, k)
}

// routeFrom turns a route atom into this unit's action for key k.
func (c *Control) routeFrom(at atoms.Atom, d routeData, k *unit.FlowKey) (vip string, a unit.Action, found bool, err error) {
	bk := unit.BackendKey{VIP: d.VIP, Backend: d.Backend}
	c.mu.Lock()
	id, ok := c.ids.Backends[bk]
	if !ok {
		id, ok = c.ids.Retired[bk]
	}
	c.mu.Unlock()
	host, err := netip.ParseAddr(at.Host)
	if err != nil || host.Is4() == k.V6 || d.Mode == unit.ModeNAT && host.Is4() != d.SNAT.Addr().Is4() {
		return "", a, false, fmt.Errorf("route atom %s: host %q", at.Key, at.Host)
	}
	if !ok {
		// A backend that left the configuration before this unit
		// started: the connection still goes to it, by address.
		id = unit.ForeignBackend
		c.foreign.note(routeKey(k), bk) // under the client's key, which the flow's event names
	}
	if d.Mode != unit.ModeNAT {
		a = unit.Action{Backend: id}
		if id == unit.ForeignBackend {
			a.PortA = d.Port
			copy(a.A[:], host.AsSlice())
		}
		return d.VIP, a, true, nil
	}
	a = unit.Action{Mode: unit.ModeNAT, Backend: id, PortA: d.Port, PortB: d.SNAT.Port()}
	copy(a.A[:], host.AsSlice())
	copy(a.B[:], d.SNAT.Addr().AsSlice())
	return d.VIP, a, true, nil
}
