package dataplane

import (
	"bytes"
	"encoding/binary"

	"github.com/tetherlb/tether/api/unit"
	"github.com/tetherlb/tether/dataplane/channel"
	"github.com/tetherlb/tether/dataplane/header"

	"github.com/tetherlb/tether/tables/encap"
	"github.com/tetherlb/tether/tables/flow"
)

// snatAttempts bounds the search for a free SNAT port.
const snatAttempts = 32

// newFlow decides where a packet without a flow goes and records the
// decision. On failure it sets the packet's drop or pass reason.
func (p *Pipeline) newFlow(pk *packet, now flow.Tick) (entry, bool) {
	s := p.snap
	dst := addrOf(pk.dst())
	v := s.vips[vipKey{addr: dst, port: pk.dport, proto: pk.proto}]
	if v == nil {
		if s.roles[dst]&roleSNAT != 0 {
			if s.shareFlows && pk.proto == header.IPProtoTCP && pk.tcpFlags&synFlag == 0 && pk.frag == fragNone {
				// A reply of a nat connection another unit made (its
				// SNAT address came here with its death): ask the
				// control process, as for a moved client's segment. While
				// it is away, drop: another unit may carry the
				// connection, which a reset would end.
				if !p.out.enabled {
					pk.dropWith(DropNoFlow)
					return entry{}, false
				}
				p.puntMidFlow(pk, nil, now)
				return entry{}, false
			}
			// A backend's segment of a nat connection the unit lost:
			// reset it too, so the server frees the connection now
			// rather than retransmitting to nobody.
			if pk.proto == header.IPProtoTCP && pk.tcpFlags&rstFlag == 0 && p.answerRST(pk, now) {
				return entry{}, false
			}
			pk.dropWith(DropNoFlow)
		} else if e, handled := p.recoverHalfNAT(pk, now); handled {
			return e, e.m != nil
		} else {
			pk.passWith(PassNotVIP)
		}
		return entry{}, false
	}
	if isL7(v) {
		p.toAcceptor(pk, v, now)
		return entry{}, false
	}
	d := refuseNew(pk, v.Mode, s.hop)
	if s.shareFlows && p.out.enabled && midFlow(pk, v.Mode, d) {
		// A segment of a connection under way that this unit has no
		// flow for: in a cluster, most likely another unit's, moved
		// here by the router. A flow of this unit's own (or, for nat,
		// a reset) would break it; the control process can ask the
		// other units where it goes.
		p.puntMidFlow(pk, v, now)
		return entry{}, false
	}
	if d != dropNone {
		// A nat connection's segment the unit does not know is answered
		// with a reset, as a stack answers a segment of a connection it
		// lost; the client fails at once. Not in a cluster, whose other
		// units may carry the connection (the control process is away,
		// or it would have been asked).
		if d == DropTCPNotSYN && v.Mode == unit.ModeNAT && !s.shareFlows && pk.tcpFlags&(synFlag|rstFlag) == 0 && p.answerRST(pk, now) {
			return entry{}, false
		}
		pk.dropWith(d)
		return entry{}, false
	}
	if v.Punt {
		// Control decides this VIP's flows: hold the packet and ask.
		p.punt(pk, v, now)
		return entry{}, false
	}
	mh := maglevHashOf(pk)
	bid, ok := v.pick(mh)
	if !ok {
		pk.dropWith(DropNoBackend)
		return entry{}, false
	}
	return p.newFlowTo(pk, v, bid, mh, now)
}

// newFlowTo records a new flow of VIP v to backend bid.
func (p *Pipeline) newFlowTo(pk *packet, v *VIP, bid uint32, mh uint64, now flow.Tick) (entry, bool) {
	return p.newFlowWith(pk, v, &p.snap.Backends[bid], mh, 0, now)
}

// newFlowWith records a new flow of VIP v to backend be: one of the
// snapshot's, or a foreign one a route names (unit.ForeignBackend),
// which no counter counts. A flow of an l7 VIP takes flow ID id when it
// is not 0 (one of the control process's, encap.FirstMigratedID and up).
func (p *Pipeline) newFlowWith(pk *packet, v *VIP, be *Backend, mh uint64, id uint32, now flow.Tick) (entry, bool) {
	bid := be.ID
	m := flow.Meta{Backend: bid, Mode: v.Mode, PortA: be.Port}
	track(&m, pk.tcpFlags, now)
	var e entry
	var ok bool
	switch v.Mode {
	case unit.ModeNAT, unit.ModeHalfNAT:
		e, ok = p.newTranslated(pk, v, be, m, mh, now)
	case unit.ModeTunnel:
		e, ok = p.newTunnel(pk, be, m, 0, now)
	case unit.ModeL7:
		// A connection the acceptor migrated (its route): a tunnel
		// flow whose packets wait until the host has the connection
		// and the flow's mapping (RouteRelease).
		m.Mode, m.Flags = unit.ModeTunnel, m.Flags|unit.FlowHeld
		e, ok = p.newTunnel(pk, be, m, id, now)
	case unit.ModeIPIP:
		e, ok = p.insertOne(pk, m, be.addr.a[:], nil, now)
	}
	if ok {
		p.stats.NewFlows++
		if be.known {
			p.stats.Backends[bid].NewFlows++
		}
		p.flowEvent(channel.FlowOpened, pk, e)
	}
	return e, ok
}

// newTranslated records a nat or halfnat connection: the entry for the
// client's direction (rewrite to backend, from SNAT or client) and the
// entry for replies (rewrite back to client, from VIP).
func (p *Pipeline) newTranslated(pk *packet, v *VIP, be *Backend, m flow.Meta, mh uint64, now flow.Tick) (entry, bool) {
	var src addrKey
	var sport uint16
	if v.Mode == unit.ModeHalfNAT {
		src, sport = addrOf(pk.src()), pk.sport
		if p.replyTaken(pk, be, &src, sport) {
			pk.dropWith(DropFlowConflict)
			return entry{}, false
		}
	} else {
		src = v.snat[mh%uint64(len(v.snat))]
		found := false
		for range snatAttempts {
			port, ok := p.nextPort(v)
			if !ok {
				break
			}
			if !p.replyTaken(pk, be, &src, port) || p.reclaimHalfOpen(pk, be, &src, port, now) {
				sport, found = port, true
				break
			}
		}
		if !found {
			pk.dropWith(DropSNATExhausted)
			return entry{}, false
		}
	}
	m.PortB = sport
	peer := flow.Meta{Backend: m.Backend, Mode: m.Mode, PortA: pk.sport, PortB: pk.dport, LastSeen: now}
	if pk.v6 {
		val := flow.Value6{Meta: m, A: be.addr.a, B: src.a}
		pv := flow.Value6{Meta: peer}
		copy(pv.A[:], pk.src())
		copy(pv.B[:], pk.dst())
		v := p.flows.InsertPair6(&pk.k6, pk.hash, &val, &pv, now)
		if v == nil {
			pk.dropWith(DropFlowTableFull)
			return entry{}, false
		}
		return entry{&v.Meta, v.A[:], v.B[:]}, true
	}
	val := flow.Value4{Meta: m}
	copy(val.A[:], be.addr.a[:4])
	copy(val.B[:], src.a[:4])
	pv := flow.Value4{Meta: peer}
	copy(pv.A[:], pk.src())
	copy(pv.B[:], pk.dst())
	v4 := p.flows.InsertPair4(&pk.k4, pk.hash, &val, &pv, now)
	if v4 == nil {
		pk.dropWith(DropFlowTableFull)
		return entry{}, false
	}
	return entry{&v4.Meta, v4.A[:], v4.B[:]}, true
}

// replyTaken reports whether replies from the backend to src:port would
// collide with an existing flow.
func (p *Pipeline) replyTaken(pk *packet, be *Backend, src *addrKey, port uint16) bool {
	if pk.v6 {
		k := flow.Key6{Src: be.addr.a, Dst: src.a, SrcPort: be.Port, DstPort: port, Proto: pk.proto}
		return p.flows.Lookup6(&k, p.flows.Hash6(&k)) != nil
	}
	k := flow.Key4{SrcPort: be.Port, DstPort: port, Proto: pk.proto}
	copy(k.Src[:], be.addr.a[:4])
	copy(k.Dst[:], src.a[:4])
	return p.flows.Lookup4(&k, p.flows.Hash4(&k)) != nil
}

// halfOpenReclaim is how long a nat connection whose handshake never
// completed keeps its SNAT port against a new connection that needs it:
// longer than any handshake that is going to complete (a client whose
// SYN-ACK was lost retransmits its SYN after a second, and gets a new
// flow), far shorter than the SYN timeout that frees it otherwise.
const halfOpenReclaim = 1000 // milliseconds

// reclaimHalfOpen frees the SNAT port src:port toward be when the
// connection holding it is half-open, or a UDP flow its backend never
// answered, and has waited at least halfOpenReclaim: a SYN flood from
// forged sources would otherwise hold every port for the SYN timeout
// (60 s), and one-packet UDP flows from many sources for the unreplied
// timeout, and refuse every real client.
func (p *Pipeline) reclaimHalfOpen(pk *packet, be *Backend, src *addrKey, port uint16, now flow.Tick) bool {
	var last flow.Tick
	var flags unit.FlowFlags
	var ok bool
	if pk.v6 {
		k := flow.Key6{Src: be.addr.a, Dst: src.a, SrcPort: be.Port, DstPort: port, Proto: pk.proto}
		if last, flags, ok = p.flows.PairState6(&k, p.flows.Hash6(&k)); ok && reclaimable(pk.proto, flags) && now.Since(last) >= halfOpenReclaim {
			p.flows.Delete6(&k)
			p.stats.HalfOpenReclaimed++
			return true
		}
		return false
	}
	k := flow.Key4{SrcPort: be.Port, DstPort: port, Proto: pk.proto}
	copy(k.Src[:], be.addr.a[:4])
	copy(k.Dst[:], src.a[:4])
	if last, flags, ok = p.flows.PairState4(&k, p.flows.Hash4(&k)); ok && reclaimable(pk.proto, flags) && now.Since(last) >= halfOpenReclaim {
		p.flows.Delete4(&k)
		p.stats.HalfOpenReclaimed++
		return true
	}
	return false
}

// reclaimable reports whether a pair's flags let a new flow take its
// SNAT port once it has been idle for halfOpenReclaim. A TCP connection
// is judged by its handshake, which a forged source cannot complete.
func reclaimable(proto uint8, f unit.FlowFlags) bool {
	if proto == header.IPProtoTCP {
		return flow.HalfOpen(f)
	}
	return flow.Unreplied(f)
}

// nextPort returns the next SNAT port of this worker's share of v's
// range: worker w of n owns the ports p with p mod n = w, whatever the
// VIP, so replies to a SNAT address are steered to the worker that owns
// their flow by the destination port alone (see Snapshot.Steer).
func (p *Pipeline) nextPort(v *VIP) (uint16, bool) {
	w, n := uint32(p.cfg.Worker), uint32(p.cfg.Workers)
	lo, hi := uint32(v.portLo), uint32(v.portHi)
	first := lo + (w+n-lo%n)%n // the first port of the range this worker owns
	if first > hi {
		return 0, false
	}
	share := (hi-first)/n + 1
	port := uint16(first + (p.natCursor%share)*n)
	p.natCursor++
	return port, true
}

// newTunnel records a flow-ID tunnel flow: a flow ID stands for the
// packet's 5-tuple in the ports toward the backend, a fresh one of this
// worker's when id is 0, else id (the control process's, which no
// worker's table holds).
func (p *Pipeline) newTunnel(pk *packet, be *Backend, m flow.Meta, id uint32, now flow.Tick) (entry, bool) {
	own := id == 0
	if own {
		t := encapTuple(pk)
		var ok bool
		if id, ok = p.tunnel().Alloc(&t, p.stale); !ok {
			pk.dropWith(DropFlowIDExhausted)
			return entry{}, false
		}
	}
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], id)
	e, ok := p.insertOne(pk, m, be.addr.a[:], b[:], now)
	if !ok && own {
		p.tun.Free(id)
	}
	return e, ok
}

// encapTuple returns pk's 5-tuple as the flow-ID map stores it.
func encapTuple(pk *packet) encap.Tuple {
	t := encap.Tuple{SrcPort: pk.sport, DstPort: pk.dport, Proto: pk.proto, V6: pk.v6}
	copy(t.Src[:], pk.src())
	copy(t.Dst[:], pk.dst())
	return t
}

// flowIDStale tells the flow-ID allocator whether the flow that last held
// an ID is gone.
func (p *Pipeline) flowIDStale(id uint32, t *encap.Tuple) bool {
	var b []byte
	if t.V6 {
		k := flow.Key6{Src: t.Src, Dst: t.Dst, SrcPort: t.SrcPort, DstPort: t.DstPort, Proto: t.Proto}
		v := p.flows.Lookup6(&k, p.flows.Hash6(&k))
		if v == nil || v.Mode != unit.ModeTunnel {
			return true
		}
		b = v.B[:4]
	} else {
		var k flow.Key4
		copy(k.Src[:], t.Src[:4])
		copy(k.Dst[:], t.Dst[:4])
		k.SrcPort, k.DstPort, k.Proto = t.SrcPort, t.DstPort, t.Proto
		v := p.flows.Lookup4(&k, p.flows.Hash4(&k))
		if v == nil || v.Mode != unit.ModeTunnel {
			return true
		}
		b = v.B[:]
	}
	return binary.BigEndian.Uint32(b) != id
}

// insertOne records a flow without a reply entry (tunnel, ipip).
func (p *Pipeline) insertOne(pk *packet, m flow.Meta, a, b []byte, now flow.Tick) (entry, bool) {
	if pk.v6 {
		val := flow.Value6{Meta: m}
		copy(val.A[:], a)
		copy(val.B[:], b)
		v := p.flows.Insert6(&pk.k6, pk.hash, &val, now)
		if v == nil {
			pk.dropWith(DropFlowTableFull)
			return entry{}, false
		}
		return entry{&v.Meta, v.A[:], v.B[:]}, true
	}
	val := flow.Value4{Meta: m}
	copy(val.A[:], a)
	copy(val.B[:], b)
	v := p.flows.Insert4(&pk.k4, pk.hash, &val, now)
	if v == nil {
		pk.dropWith(DropFlowTableFull)
		return entry{}, false
	}
	return entry{&v.Meta, v.A[:], v.B[:]}, true
}

// refuseNew says why a packet must not open a flow, or dropNone. These
// checks cost nothing on established flows: they run once per flow,
// before it takes any state (a SNAT port, a flow ID, a table slot).
func refuseNew(pk *packet, mode unit.Mode, hop bool) Drop {
	if badSource(pk.src(), pk.dst(), pk.v6) {
		return DropBadSource
	}
	if hop && pk.ttl() <= 1 {
		return DropTTLExceeded // it would be dropped on its way out anyway
	}
	if pk.proto != header.IPProtoTCP {
		return dropNone
	}
	f := pk.tcpFlags
	switch {
	case f&(synFlag|finFlag) == synFlag|finFlag, f&(synFlag|rstFlag) == synFlag|rstFlag, f&(synFlag|ackFlag|rstFlag) == 0:
		// SYN+FIN, SYN+RST, and segments with none of SYN, ACK and RST
		// (null, FIN alone, FIN+PSH+URG): scans and attacks, never a
		// stack's own.
		return DropTCPBadFlags
	case f&rstFlag != 0, f&(synFlag|ackFlag) == synFlag|ackFlag:
		// A reset or a SYN-ACK opens no connection: backscatter.
		return DropTCPNotSYN
	case f&synFlag == 0 && mode == unit.ModeNAT:
		// A segment of a connection this unit does not know (after a
		// restart, say) would get a fresh SNAT port, and the backend
		// answers a connection it never saw with a reset. Only a SYN
		// opens a nat flow. The other modes keep the client's tuple, so
		// Maglev sends a connection's later segments where its first went.
		return DropTCPNotSYN
	}
	return dropNone
}

// midFlow reports whether pk, which has no flow, is a TCP segment of a
// connection under way that a unit of a cluster hands to the control
// process: no SYN, to a VIP whose flows a unit cannot rebuild by itself
// (nat: the SNAT port; tunnel: the host's flow-ID mapping; ipip: the
// backend as it was when the connection opened), and nothing else wrong
// with it (d, refuseNew's verdict, is at most the missing SYN: a
// source, TTL or flag combination it refuses stays refused). halfnat
// VIPs keep deciding by Maglev, and rebuild lost flows from their
// backends' replies (recoverHalfNAT); l7 VIPs' segments go to the
// acceptor.
func midFlow(pk *packet, mode unit.Mode, d Drop) bool {
	if pk.proto != header.IPProtoTCP || pk.tcpFlags&synFlag != 0 || d != dropNone && d != DropTCPNotSYN {
		return false
	}
	return mode == unit.ModeNAT || mode == unit.ModeTunnel || mode == unit.ModeIPIP
}

// badSource reports sources no legitimate packet has: IPv4 0/8 ("this
// network"), 127/8 (loopback), 224/4 (multicast), 255.255.255.255
// (limited broadcast); IPv6 :: (unspecified), ::1 (loopback), ff00::/8
// (multicast), ::ffff:0:0/96 (IPv4-mapped, RFC 4291 §2.5.5.2: never on
// the wire); and a source equal to the destination (a LAND attack).
func badSource(src, dst []byte, v6 bool) bool {
	if bytes.Equal(src, dst) {
		return true
	}
	if !v6 {
		a := src[0]
		return a == 0 || a == 127 || a >= 224 && a <= 239 || binary.BigEndian.Uint32(src) == 0xffffffff
	}
	if src[0] == 0xff {
		return true
	}
	for _, b := range src[:10] {
		if b != 0 {
			return false
		}
	}
	if src[10] == 0xff && src[11] == 0xff {
		return true // IPv4-mapped
	}
	if src[10] != 0 || src[11] != 0 {
		return false
	}
	for _, b := range src[12:15] {
		if b != 0 {
			return false
		}
	}
	return src[15] <= 1 // :: or ::1
}

// recoverHalfNAT handles a packet from a half-NAT backend's service
// address and port that no flow expects: the reply of a connection whose
// flow the unit lost (it restarted, or evicted the flow). Passed to the
// kernel it would reach the client untranslated, and the client would
// reset the connection. When the client's own next packet would make a
// flow to this backend (the VIP's Maglev choice for the connection's
// tuple: the same decision), the flow is made now and the packet goes
// through it: recoverHalfNAT returns the entry for replies. Otherwise
// the packet is dropped (no_flow). handled is false, and nothing
// decided, for a packet from anywhere else.
func (p *Pipeline) recoverHalfNAT(pk *packet, now flow.Tick) (e entry, handled bool) {
	s := p.snap
	cands := s.halfNATSrc[vipKey{addr: addrOf(pk.src()), port: pk.sport, proto: pk.proto}]
	if len(cands) == 0 {
		return entry{}, false
	}
	if pk.frag != fragNone || pk.proto == header.IPProtoTCP && pk.tcpFlags&rstFlag != 0 {
		pk.dropWith(DropNoFlow)
		return entry{}, true
	}
	var k unit.FlowKey
	var v *VIP
	var bid uint32
	matches := 0
	for _, b := range cands {
		cv := s.VIPs[s.Backends[b].VIP]
		if cv == nil || cv.Removed {
			continue
		}
		ck := unit.FlowKey{V6: pk.v6, SrcPort: pk.dport, DstPort: cv.Port, Proto: pk.proto}
		copy(ck.Src[:], pk.dst())
		copy(ck.Dst[:], cv.addr.a[:])
		if got, ok := cv.pick(maglevHashOf(p.keyPacket(&ck))); ok && got == b {
			k, v, bid = ck, cv, b
			matches++
		}
	}
	if matches != 1 {
		// None would have chosen this backend, or several VIPs share it
		// and the reply cannot say which: leave it to the client.
		pk.dropWith(DropNoFlow)
		return entry{}, true
	}
	kp := p.keyPacket(&k)
	if _, ok := p.newFlowTo(kp, v, bid, maglevHashOf(kp), now); !ok {
		pk.dropWith(kp.drop)
		return entry{}, true
	}
	e, ok := p.lookup(pk)
	if !ok {
		pk.dropWith(DropNoFlow)
		return entry{}, true
	}
	track(e.m, pk.tcpFlags, now)
	p.stats.Recovered++
	return e, true
}

// maglevHashOf is the hash Maglev picks a new flow's backend by.
func maglevHashOf(pk *packet) uint64 {
	if pk.v6 {
		return maglevHash6(&pk.k6)
	}
	return maglevHash4(&pk.k4)
}
