package dataplane

import (
	"encoding/binary"
	"fmt"
	"sync/atomic"

	"github.com/tetherlb/tether/api/unit"
	"github.com/tetherlb/tether/dataplane/channel"
	"github.com/tetherlb/tether/dataplane/header"
	"github.com/tetherlb/tether/nic"
	"github.com/tetherlb/tether/tables/encap"
	"github.com/tetherlb/tether/tables/flow"
)

// The worker's outbox: its side of the channel to the control process.
// The worker records punts and flow events in its outbox. It sends them
// itself at the end of a batch, the events first, when the uplink gives
// it a DirectSender (a non-blocking send of whole messages); otherwise,
// or when a send does not go, it rings a bell and the forwarder's
// channel goroutine collects them with Worker.Do. Routes come back
// through Worker.Post.
// Punted packets wait in the worker until their route arrives (or punt
// timeout passes), then go out with the next batch.

const (
	maxOutboxEvents = 4096
	maxPunts        = 256
	// maxHeldPerFlow bounds the packets one connection has held for its
	// route (DropHeldPerFlow): a moved download's burst would otherwise
	// fill the held packets, and other connections' first segments,
	// which their route is asked for by, would be dropped instead.
	maxHeldPerFlow = 8
	maxSendWait    = 256
	maxDeferred    = maxPunts + maxSendWait + 64
	puntTimeout    = 1000 // milliseconds
	// mappingTimeout bounds a tunnel flow's wait for its host: the
	// client's SYN retransmission comes after a second anyway.
	mappingTimeout = 1000 // milliseconds
	// sendWaitTimeout bounds how long a new nat flow's first packet
	// waits for its flow event to leave; a stuck uplink costs latency,
	// never the packet.
	sendWaitTimeout = 100 // milliseconds
)

// heldSend is the first packet of a new nat flow, held until the flow's
// event has been sent to the control process (gen is the outbox
// collection that carries it). A forwarder killed before that moment
// never let the packet out, so the client retransmits it to the next
// forwarder; killed after it, the control process knows the flow and
// puts it back. Without this, a nat connection opened in the last
// milliseconds before a crash would lose its SNAT port.
type heldSend struct {
	frame   nic.Frame
	gen     uint64
	expires flow.Tick
}

type heldPunt struct {
	frame   nic.Frame
	k4      flow.Key4
	k6      flow.Key6
	v6      bool
	expires flow.Tick
	// host: the packet waits for its tunnel flow's host, not for a
	// route (counted as mapping_timeout when it expires).
	host bool
	// accept is the ID of the acceptor's punt the frame waits for an
	// answer to (0: not the acceptor's); l3 is where its IP header
	// starts, where the answer goes.
	accept uint32
	l3     uint16
	// pureACK: a TCP segment with ACK alone and no payload, which a
	// later one of the same connection may replace (DropACKSuperseded).
	pureACK bool
}

// outbox holds what the worker has for the control process.
type outbox struct {
	events  []channel.FlowEvent
	punts   []channel.Punt
	frames  [maxPunts][channel.MaxPuntFrame]byte
	lost    uint64 // events that did not fit
	bell    chan struct{}
	enabled bool
	// direct sends the worker's flow events itself, when set and the
	// uplink has no collection of its own on the way (busy); msg is
	// where it encodes them.
	direct DirectSender
	busy   *atomic.Bool
	msg    []byte
	// puntBudget is how many punts the worker may still send itself;
	// it grows by directPuntsPerTick a tick up to maxDirectPunts, and
	// refilled is the tick it last grew.
	puntBudget int
	refilled   flow.Tick
}

// The worker's own punt sends are bounded: each is a system call on the
// packet core, and a flood of segments the acceptor must see (data to
// an l7 VIP with forged cookies) would spend the core on them. Past the
// budget, punts go through the uplink as before; a normal load of new
// connections stays well under it.
const (
	directPuntsPerTick = 20 // 20,000 a second (a tick is a millisecond)
	maxDirectPunts     = 64
)

// A DirectSender sends a message on the channel to the control process
// from the worker's own thread, without blocking: a nat flow's first
// packet, which waits until the control process has the flow's event,
// then leaves in microseconds instead of after the uplink's round of
// goroutine hand-offs (on a busy machine, milliseconds), and a punt
// reaches the control process without them (an l7 connection's request
// among them). TrySend reports whether the whole message went; Seq
// numbers it.
type DirectSender interface {
	TrySend(msg []byte) bool
	Seq() uint32
}

// SetDirect lets the worker send its flow events and punts itself
// through d while busy (the uplink's flag: it has taken events or punts
// it has not sent yet, which must arrive first) is clear; nil stops it.
// Call it through Worker.Do.
func (p *Pipeline) SetDirect(d DirectSender, busy *atomic.Bool) {
	p.out.direct, p.out.busy = d, busy
	p.out.puntBudget = maxDirectPunts
	if d != nil && p.out.msg == nil {
		p.out.msg = make([]byte, 0, channel.MaxMessage)
	}
}

// sendDirect sends the outbox's flow events, in order, through the
// direct sender, and lets the first packets that waited for them go (with
// the next batch, microseconds later). If a message does not go (the
// socket's buffer is full), what is left waits for the uplink, which it
// calls, and so do the packets.
func (p *Pipeline) sendDirect() {
	p.takeRemovals()
	ev := p.out.events
	for len(ev) > 0 {
		n := min(len(ev), channel.MaxFlowEvents)
		p.out.msg = channel.AppendFlowEvents(p.out.msg[:0], p.out.direct.Seq(), ev[:n])
		if !p.out.direct.TrySend(p.out.msg) {
			p.out.events = append(p.out.events[:0], ev...)
			p.ring() // the uplink takes them, and the packets wait for it
			return
		}
		p.stats.EventsSentDirect += uint64(n)
		ev = ev[n:]
	}
	p.out.events = p.out.events[:0]
	p.releaseSendWait(func(*heldSend) bool { return true })
}

// sendPuntsDirect sends the outbox's punts, in order, through the direct
// sender, within the budget. If one does not go, or the budget is spent,
// it and those after it wait for the uplink, which it calls.
func (p *Pipeline) sendPuntsDirect(now flow.Tick) {
	if d := now - p.out.refilled; d > 0 {
		p.out.puntBudget = min(maxDirectPunts, p.out.puntBudget+int(min(d, maxDirectPunts))*directPuntsPerTick)
		p.out.refilled = now
	}
	for i := range p.out.punts {
		if p.out.puntBudget == 0 {
			p.keepPunts(i)
			p.ring()
			return
		}
		p.out.msg = channel.AppendPunt(p.out.msg[:0], p.out.direct.Seq(), &p.out.punts[i])
		if !p.out.direct.TrySend(p.out.msg) {
			p.keepPunts(i)
			p.ring()
			return
		}
		p.out.puntBudget--
		p.stats.PuntsSentDirect++
	}
	p.out.punts = p.out.punts[:0]
}

// keepPunts drops the outbox's first n punts, which went, and moves the
// rest and their frames to the front: a punt's frame is the buffer of
// its index.
func (p *Pipeline) keepPunts(n int) {
	rest := p.out.punts[n:]
	for j := range rest {
		pu := rest[j]
		k := copy(p.out.frames[j][:], pu.Frame)
		pu.Frame = p.out.frames[j][:k]
		p.out.punts[j] = pu
	}
	clear(p.out.punts[len(rest):])
	p.out.punts = p.out.punts[:len(rest)]
}

// ringPunt tells the uplink about a punt unless the worker sends it
// itself at the end of the batch.
func (p *Pipeline) ringPunt() {
	if p.out.direct == nil || p.out.busy.Load() {
		p.ring()
	}
}

// EnableOutbox makes the pipeline report flows and punt packets to a
// control process. bell is rung (without blocking) when the outbox has
// something; without EnableOutbox, punt VIPs decide by Maglev.
func (p *Pipeline) EnableOutbox(bell chan struct{}) {
	p.out.enabled = true
	p.out.bell = bell
	p.out.events = make([]channel.FlowEvent, 0, maxOutboxEvents)
	p.out.punts = make([]channel.Punt, 0, maxPunts)
	p.flows.EnableRemovals(maxOutboxEvents)
}

func (p *Pipeline) ring() {
	select {
	case p.out.bell <- struct{}{}:
	default:
	}
}

// punt holds pk and asks the control process to decide its flow. Without
// a control process the VIP's Maglev table decides, as for other VIPs.
func (p *Pipeline) punt(pk *packet, v *VIP, now flow.Tick) {
	if !p.out.enabled {
		mh := maglevHashOf(pk)
		if bid, ok := v.pick(mh); ok {
			if e, ok := p.newFlowTo(pk, v, bid, mh, now); ok {
				p.apply(pk, e)
			}
			return
		}
		pk.dropWith(DropNoBackend)
		return
	}
	p.holdForRoute(pk, v, channel.PuntNewFlow, now)
}

// puntMidFlow holds pk, a TCP segment of a connection under way that no
// flow of this unit expects (see midFlow), and asks the control process
// where the connection goes. Callers check that a control process is
// connected: without one the segment takes the way it always took.
func (p *Pipeline) puntMidFlow(pk *packet, v *VIP, now flow.Tick) {
	if p.holdForRoute(pk, v, channel.PuntMidFlow, now) {
		p.stats.PuntedMidFlow++
	}
}

// holdForRoute holds pk until a route for its key comes (AddRoute), the
// control process refuses one (RefuseRoute) or puntTimeout passes, and
// sends the control process a punt of reason for the key's first held
// packet. It reports false, with pk dropped, when too many packets wait.
// v is nil for a nat reply to a SNAT address (channel.NoVIP): its route
// comes keyed by the client's side, and releases it as the entry's peer.
func (p *Pipeline) holdForRoute(pk *packet, v *VIP, reason uint8, now flow.Tick) bool {
	if len(p.held) == maxPunts {
		pk.dropWith(DropPuntOverflow)
		return false
	}
	// A retransmitted first packet waits with the first; only the first
	// is sent to control. A pure ACK replaces the pure ACK of its
	// connection already held: it acknowledges at least as much.
	first := true
	ack := pureACK(pk)
	same := 0
	for i := range p.held {
		h := &p.held[i]
		if h.accept == 0 && h.v6 == pk.v6 && (pk.v6 && h.k6 == pk.k6 || !pk.v6 && h.k4 == pk.k4) {
			first = false
			if ack && h.pureACK && !h.host {
				p.superseded = append(p.superseded, h.frame)
				p.stats.Drops[DropACKSuperseded]++
				h.frame = *pk.frame
				pk.kind = kindHeld
				p.stats.Punted++
				return true
			}
			same++
		}
	}
	if same >= maxHeldPerFlow {
		pk.dropWith(DropHeldPerFlow)
		return false
	}
	if first && len(p.out.punts) == maxPunts {
		pk.dropWith(DropPuntOverflow)
		return false
	}
	p.held = append(p.held, heldPunt{frame: *pk.frame, k4: pk.k4, k6: pk.k6, v6: pk.v6, expires: now + puntTimeout, pureACK: ack})
	pk.kind = kindHeld
	p.stats.Punted++
	if !first {
		return true
	}
	// Maglev's choice goes with the punt: it is the control process's
	// answer unless something it knows decides otherwise. A nat
	// connection under way has none: a fresh flow would give it a new
	// SNAT port, which its backend has never seen.
	choice, vid := uint32(channel.NoChoice), uint32(channel.NoVIP)
	if v != nil {
		vid = v.ID
		if reason != channel.PuntMidFlow || v.Mode != unit.ModeNAT {
			if b, ok := v.pick(maglevHashOf(pk)); ok {
				choice = b
			}
		}
	}
	i := len(p.out.punts)
	n := copy(p.out.frames[i][:], pk.frame.Data())
	p.out.punts = append(p.out.punts, channel.Punt{
		Worker: uint8(p.cfg.Worker), Reason: reason, VIP: vid, Choice: choice,
		Key: flowKey(pk), Frame: p.out.frames[i][:n],
	})
	p.ringPunt()
	return true
}

// pureACK reports whether pk is a TCP segment with ACK alone (PSH
// allowed) and no payload: a cumulative acknowledgement and nothing
// else, which a later one makes redundant.
func pureACK(pk *packet) bool {
	if pk.proto != header.IPProtoTCP || pk.frag != fragNone || pk.tcpFlags&^(ackFlag|pshFlag) != 0 || pk.tcpFlags&ackFlag == 0 {
		return false
	}
	th := pk.b[pk.l4:pk.end]
	return len(th) >= header.TCPMinSize && int(th[12]>>4)*4 == len(th)
}

// flowKey returns pk's flow key in the contract's layout.
func flowKey(pk *packet) unit.FlowKey {
	if pk.v6 {
		return unit.FlowKey{V6: true, Src: pk.k6.Src, Dst: pk.k6.Dst, SrcPort: pk.k6.SrcPort, DstPort: pk.k6.DstPort, Proto: pk.k6.Proto}
	}
	k := unit.FlowKey{SrcPort: pk.k4.SrcPort, DstPort: pk.k4.DstPort, Proto: pk.k4.Proto}
	copy(k.Src[:], pk.k4.Src[:])
	copy(k.Dst[:], pk.k4.Dst[:])
	return k
}

// flowEvent records a flow event for the control process.
func (p *Pipeline) flowEvent(kind uint8, pk *packet, e entry) {
	if !p.out.enabled {
		return
	}
	empty := len(p.out.events) == 0
	p.takeRemovals()
	if len(p.out.events) == maxOutboxEvents {
		p.out.lost++
		return
	}
	ev := channel.FlowEvent{Kind: kind, Worker: uint8(p.cfg.Worker), Key: flowKey(pk)}
	actionOf(&ev.Action, e.m, e.a, e.b)
	p.out.events = append(p.out.events, ev)
	if empty && (p.out.direct == nil || p.out.busy.Load()) {
		// A worker that sends its own rings only when it cannot: while
		// the uplink has events of its own on the way, these must
		// follow them, and the uplink takes them at once instead of at
		// its next tick (a nat flow's first packet waits for them).
		p.ring()
	}
}

func actionOf(a *unit.Action, m *flow.Meta, ea, eb []byte) {
	a.Mode, a.Backend, a.PortA, a.PortB, a.Flags = m.Mode, m.Backend, m.PortA, m.PortB, m.Flags
	copy(a.A[:], ea)
	copy(a.B[:], eb)
}

// awaitSend holds pk, the first packet of the new flow e, until the
// flow's event has been sent (see heldSend); it reports false, holding
// nothing, when no control process is connected, the flow is not nat,
// or too many packets wait already.
func (p *Pipeline) awaitSend(pk *packet, e entry, now flow.Tick) bool {
	if !p.out.enabled || e.m.Mode != unit.ModeNAT || pk.frag != fragNone || len(p.sendWait) == maxSendWait {
		return false
	}
	p.sendWait = append(p.sendWait, heldSend{frame: *pk.frame, gen: p.sendGen, expires: now + sendWaitTimeout})
	pk.kind = kindHeld
	return true
}

// TakeSendWait closes the outbox collection the uplink has just taken
// (TakeOutbox) and returns its number, and whether any packet waits for
// it; the uplink calls EventsSent with the number once it has sent the
// collection. Call it through Worker.Do, right after TakeOutbox.
func (p *Pipeline) TakeSendWait() (uint64, bool) {
	g := p.sendGen
	p.sendGen++
	return g, len(p.sendWait) > 0
}

// EventsSent releases the packets whose flow events went out with
// collection g or earlier: the next batch forwards them.
func (p *Pipeline) EventsSent(g uint64) {
	p.releaseSendWait(func(h *heldSend) bool { return h.gen <= g })
}

func (p *Pipeline) releaseSendWait(release func(h *heldSend) bool) {
	w := p.sendWait
	for i := 0; i < len(w); {
		if !release(&w[i]) {
			i++
			continue
		}
		p.deferred = append(p.deferred, w[i].frame)
		w[i] = w[len(w)-1]
		w = w[:len(w)-1]
	}
	p.sendWait = w
}

// TakeOutbox hands the recorded flow events (opened, and removed by
// aging, eviction or deletion) and punts to fn and clears them. fn must
// copy what it keeps. Call it through Worker.Do.
func (p *Pipeline) TakeOutbox(fn func(events []channel.FlowEvent, punts []channel.Punt, lost uint64)) {
	if !p.out.enabled {
		return
	}
	p.takeRemovals()
	fn(p.out.events, p.out.punts, p.out.lost)
	p.out.events, p.out.punts, p.out.lost = p.out.events[:0], p.out.punts[:0], 0
}

// takeRemovals moves the flow table's log of removed flows into the
// outbox as events. flowEvent calls it before recording an event, so
// that events leave in the order things happened: a flow removed and
// then opened again under the same key within one collection must reach
// the control process as removed, opened, not the other way round.
func (p *Pipeline) takeRemovals() {
	p.flows.TakeRemovals(func(v4 []flow.Removed4, v6 []flow.Removed6, lost uint64) {
		p.out.lost += lost
		for i := range v4 {
			r := &v4[i]
			if len(p.out.events) == maxOutboxEvents {
				p.out.lost++
				continue
			}
			ev := channel.FlowEvent{Kind: channel.FlowExpired, Worker: uint8(p.cfg.Worker),
				Key: unit.FlowKey{SrcPort: r.Key.SrcPort, DstPort: r.Key.DstPort, Proto: r.Key.Proto}}
			copy(ev.Key.Src[:], r.Key.Src[:])
			copy(ev.Key.Dst[:], r.Key.Dst[:])
			actionOf(&ev.Action, &r.Value.Meta, r.Value.A[:], r.Value.B[:])
			p.out.events = append(p.out.events, ev)
		}
		for i := range v6 {
			r := &v6[i]
			if len(p.out.events) == maxOutboxEvents {
				p.out.lost++
				continue
			}
			ev := channel.FlowEvent{Kind: channel.FlowExpired, Worker: uint8(p.cfg.Worker),
				Key: unit.FlowKey{V6: true, Src: r.Key.Src, Dst: r.Key.Dst, SrcPort: r.Key.SrcPort, DstPort: r.Key.DstPort, Proto: r.Key.Proto}}
			actionOf(&ev.Action, &r.Value.Meta, r.Value.A[:], r.Value.B[:])
			p.out.events = append(p.out.events, ev)
		}
	})
}

// keyPacket turns a route's key into the packet flow creation reads: the
// addresses in a scratch IP header, the ports and the hash.
func (p *Pipeline) keyPacket(k *unit.FlowKey) *packet {
	pk := &p.routePk
	*pk = packet{b: p.routeHdr[:], l3: 0, proto: k.Proto, sport: k.SrcPort, dport: k.DstPort, v6: k.V6, kind: kindFlow}
	if k.V6 {
		copy(p.routeHdr[8:24], k.Src[:])
		copy(p.routeHdr[24:40], k.Dst[:])
		pk.end = header.IPv6Size
	} else {
		copy(p.routeHdr[12:16], k.Src[:4])
		copy(p.routeHdr[16:20], k.Dst[:4])
		pk.end = header.IPv4MinSize
	}
	pk.setKey(k.SrcPort, k.DstPort)
	if k.V6 {
		pk.hash = p.flows.Hash6(&pk.k6)
	} else {
		pk.hash = p.flows.Hash4(&pk.k4)
	}
	return pk
}

// AddRoute records the flow a route describes: with Action.Mode 0, a new
// flow of its VIP to Action.Backend, built as the worker builds its own
// (SNAT port, flow ID), or, for a tunnel or ipip VIP, to the foreign
// backend at Action.A port PortA (unit.ForeignBackend); otherwise the
// entry exactly as given (a flow put back into a restarted forwarder, or
// a nat connection another unit made). An existing entry for the key is
// replaced. Packets held for the key go out with the next batch.
func (p *Pipeline) AddRoute(r *channel.Route, now flow.Tick) error {
	pk := p.keyPacket(&r.Key)
	a := &r.Action
	// Refused routes change nothing: check before the old entry goes.
	var v *VIP
	var foreign Backend
	var id uint32
	if a.Mode == 0 {
		v = p.snap.vips[vipKey{addr: addrOf(pk.dst()), port: pk.dport, proto: pk.proto}]
		if v == nil {
			return fmt.Errorf("route: no VIP at %s:%d/%d", r.Key.DstAddr(), r.Key.DstPort, r.Key.Proto)
		}
		switch {
		case a.Backend == unit.ForeignBackend:
			// A connection another unit sent to a host this one does
			// not have: only a flow that carries the client's packets
			// unchanged (an l7 VIP's, migrated, is a tunnel flow)
			// can go there by address alone.
			if v.Mode != unit.ModeTunnel && v.Mode != unit.ModeIPIP && v.Mode != unit.ModeL7 {
				return fmt.Errorf("route: a foreign backend for VIP %s, of mode %s", v.Name, v.Mode)
			}
			foreign = Backend{ID: unit.ForeignBackend, VIP: v.ID, Port: a.PortA, State: unit.StateRemoved, addr: addrKey{a: a.A, v6: r.Key.V6}}
			if !r.Key.V6 {
				foreign.addr = addrKey{}
				copy(foreign.addr.a[:4], a.A[:4])
			}
		case int(a.Backend) >= len(p.snap.Backends) || p.snap.Backends[a.Backend].VIP != v.ID || !p.snap.Backends[a.Backend].known:
			return fmt.Errorf("route: backend %d is not one of VIP %s's", a.Backend, v.Name)
		}
		// A migrated connection's route names its flow ID (B): the
		// control process gave it one of its own, and its host has the
		// mapping from the Migrate.
		if id = binary.BigEndian.Uint32(a.B[:4]); id != 0 && (v.Mode != unit.ModeL7 || id < encap.FirstMigratedID) {
			return fmt.Errorf("route: flow ID %d for VIP %s of mode %s: only l7 routes name one, from %d up", id, v.Name, v.Mode, encap.FirstMigratedID)
		}
	} else if a.Backend != unit.ForeignBackend && int(a.Backend) >= len(p.snap.Backends) {
		return fmt.Errorf("route: backend %d unknown", a.Backend)
	}
	p.deleteKey(pk)
	switch {
	case a.Mode == 0 && a.Backend == unit.ForeignBackend:
		if _, ok := p.newFlowWith(pk, v, &foreign, maglevHashOf(pk), 0, now); !ok {
			return fmt.Errorf("route: %s", pk.drop)
		}
	case a.Mode == 0:
		if _, ok := p.newFlowWith(pk, v, &p.snap.Backends[a.Backend], maglevHashOf(pk), id, now); !ok {
			return fmt.Errorf("route: %s", pk.drop)
		}
	default:
		if err := p.restoreFlow(pk, a, now); err != nil {
			return err
		}
		if a.Mode == unit.ModeNAT {
			// Replies held for the connection (a nat reply to a SNAT
			// address asked for it) go with the entry's peer.
			peer := unit.FlowKey{V6: r.Key.V6, Src: a.A, Dst: a.B, SrcPort: a.PortA, DstPort: a.PortB, Proto: r.Key.Proto}
			p.releasePunted(p.keyPacket(&peer))
			pk = p.keyPacket(&r.Key)
		}
	}
	p.releasePunted(pk)
	return nil
}

// restoreFlow inserts an entry exactly as a flow event described it.
func (p *Pipeline) restoreFlow(pk *packet, a *unit.Action, now flow.Tick) error {
	if a.Backend != unit.ForeignBackend && int(a.Backend) >= len(p.snap.Backends) {
		return fmt.Errorf("route: backend %d unknown", a.Backend)
	}
	m := flow.Meta{LastSeen: now, Backend: a.Backend, PortA: a.PortA, PortB: a.PortB, Mode: a.Mode,
		// A restored flow's host has its mapping already, or gets it in
		// the host's resync: nothing of it waits.
		Flags: unit.FlowFlags(a.Flags) &^ (unit.FlowPeer | unit.FlowReply | unit.FlowHeld)}
	switch a.Mode {
	case unit.ModeNAT, unit.ModeHalfNAT:
		peer := flow.Meta{LastSeen: now, Backend: a.Backend, Mode: a.Mode, PortA: pk.sport, PortB: pk.dport}
		if pk.v6 {
			val := flow.Value6{Meta: m, A: a.A, B: a.B}
			pv := flow.Value6{Meta: peer, A: pk.k6.Src, B: pk.k6.Dst}
			if p.flows.InsertPair6(&pk.k6, pk.hash, &val, &pv, now) == nil {
				return fmt.Errorf("route: %s", DropFlowTableFull)
			}
			return nil
		}
		val := flow.Value4{Meta: m, A: [4]byte(a.A[:4]), B: [4]byte(a.B[:4])}
		pv := flow.Value4{Meta: peer, A: pk.k4.Src, B: pk.k4.Dst}
		if p.flows.InsertPair4(&pk.k4, pk.hash, &val, &pv, now) == nil {
			return fmt.Errorf("route: %s", DropFlowTableFull)
		}
	case unit.ModeTunnel, unit.ModeIPIP:
		// A migrated connection's flow ID is the control process's: no
		// worker's table holds it.
		if id := binary.BigEndian.Uint32(a.B[:4]); a.Mode == unit.ModeTunnel && id < encap.FirstMigratedID {
			t := encapTuple(pk)
			if !p.tunnel().Put(id, &t) {
				return fmt.Errorf("route: flow ID %d belongs to another worker", id)
			}
		}
		if _, ok := p.insertOne(pk, m, a.A[:], a.B[:4], now); !ok {
			return fmt.Errorf("route: %s", pk.drop)
		}
	default:
		return fmt.Errorf("route: mode %d unknown", a.Mode)
	}
	return nil
}

// DeleteRoute removes a flow (and its reply entry).
func (p *Pipeline) DeleteRoute(k *unit.FlowKey) bool {
	return p.deleteKey(p.keyPacket(k))
}

func (p *Pipeline) deleteKey(pk *packet) bool {
	if pk.v6 {
		return p.flows.Delete6(&pk.k6)
	}
	return p.flows.Delete4(&pk.k4)
}

// releasePunted moves the packets held for pk's flow to the deferred
// list, which the next Process sends through the pipeline.
func (p *Pipeline) releasePunted(pk *packet) {
	held := p.held
	for i := 0; i < len(held); {
		h := &held[i]
		if h.accept != 0 || h.v6 != pk.v6 || pk.v6 && h.k6 != pk.k6 || !pk.v6 && h.k4 != pk.k4 {
			// A frame the acceptor answers is not the flow's to
			// forward: the acceptor already has its bytes.
			i++
			continue
		}
		p.deferred = append(p.deferred, h.frame)
		held[i] = held[len(held)-1]
		held = held[:len(held)-1]
	}
	p.held = held
}

// RefuseRoute answers the packets held for k's route when the control
// process knows none (RouteRefuse: a mid-flow punt's connection that no
// unit holds), as a host that does not know the connection answers
// them: a segment without RST gets a reset from the address it was sent
// to, which leaves with the next batch; the others are dropped
// (no_route). Nothing is recorded for k, so a later segment is punted
// again. Packets held for the acceptor or for a tunnel flow's host are
// not the route's and stay. When k has a flow by now (the client opened
// the tuple again with a SYN while the control process was asking), the
// packets go through it instead, as a route would have let them. It
// reports how many packets it answered or dropped. Call it through
// Worker.Post.
func (p *Pipeline) RefuseRoute(k *unit.FlowKey, now flow.Tick) int {
	kp := p.keyPacket(k)
	if kp.v6 && p.flows.Lookup6(&kp.k6, kp.hash) != nil || !kp.v6 && p.flows.Lookup4(&kp.k4, kp.hash) != nil {
		p.releasePunted(kp)
		return 0
	}
	v6, k4, k6 := kp.v6, kp.k4, kp.k6
	held := p.held
	n := 0
	for i := 0; i < len(held); {
		h := &held[i]
		if h.accept != 0 || h.host || h.v6 != v6 || v6 && h.k6 != k6 || !v6 && h.k4 != k4 {
			i++
			continue
		}
		// The frame outlives this call (it goes into the next Output):
		// the scratch slot only lends it a place to be parsed from.
		slot := &p.heldScratch
		*slot = h.frame
		held[i] = held[len(held)-1]
		held = held[:len(held)-1]
		n++
		p.stats.MidFlowRefused++
		if p.answerHeldRST(slot, now) {
			p.answers = append(p.answers, answered{frame: *slot, tx: true})
			continue
		}
		p.stats.Drops[DropNoRoute]++
		p.answers = append(p.answers, answered{frame: *slot})
	}
	p.held = held
	return n
}

// answerHeldRST turns the held frame f, parsed again, into the reset
// that answers it (answerRST), unless it is a reset itself or not a TCP
// segment of a flow's kind. f's offload was dealt with when it first
// went through the pipeline.
func (p *Pipeline) answerHeldRST(f *nic.Frame, now flow.Tick) bool {
	pk := &p.scratch
	pk.frame = f
	parse(pk, p.cfg.Link)
	if pk.kind != kindFlow || pk.proto != header.IPProtoTCP || pk.tcpFlags&rstFlag != 0 {
		return false
	}
	return p.answerRST(pk, now)
}

// awaitHost holds pk, a packet of a tunnel flow whose host has not yet
// confirmed the flow's mapping (FlowHeld), with the punted packets:
// ReleaseHeld lets it go. It reports false, holding nothing, when there
// is no room; the packet then goes now and the host, without the
// mapping, drops it (the client retransmits).
func (p *Pipeline) awaitHost(pk *packet, now flow.Tick) bool {
	if len(p.held) == maxPunts || pk.frag != fragNone {
		return false
	}
	p.held = append(p.held, heldPunt{frame: *pk.frame, k4: pk.k4, k6: pk.k6, v6: pk.v6, expires: now + mappingTimeout, host: true})
	pk.kind = kindHeld
	p.stats.HeldForHost++
	return true
}

// ReleaseHeld lets the packets held for k's tunnel flow go with the next
// batch and clears the flow's FlowHeld: its host holds the mapping. It
// reports whether the flow exists.
func (p *Pipeline) ReleaseHeld(k *unit.FlowKey) bool {
	pk := p.keyPacket(k)
	var m *flow.Meta
	if pk.v6 {
		if v := p.flows.Lookup6(&pk.k6, pk.hash); v != nil {
			m = &v.Meta
		}
	} else if v := p.flows.Lookup4(&pk.k4, pk.hash); v != nil {
		m = &v.Meta
	}
	if m != nil {
		m.Flags &^= unit.FlowHeld
	}
	p.releasePunted(pk)
	return m != nil
}

// expirePunts drops held packets whose route, or whose host's mapping,
// did not come in time.
func (p *Pipeline) expirePunts(now flow.Tick, out *Output) {
	held := p.held
	for i := 0; i < len(held); {
		if int32(held[i].expires-now) >= 0 {
			i++
			continue
		}
		if held[i].host {
			p.stats.Drops[DropMappingTimeout]++
		} else {
			p.stats.Drops[DropPuntTimeout]++
		}
		out.Drop = append(out.Drop, held[i].frame)
		held[i] = held[len(held)-1]
		held = held[:len(held)-1]
	}
	p.held = held
}

// HeldPunts returns how many packets wait for a route.
func (p *Pipeline) HeldPunts() int { return len(p.held) }
