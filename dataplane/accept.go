package dataplane

import (
	"github.com/tetherlb/tether/api/unit"
	"github.com/tetherlb/tether/dataplane/channel"
	"github.com/tetherlb/tether/dataplane/header"
	"github.com/tetherlb/tether/nic"
	"github.com/tetherlb/tether/tables/flow"
)

// An l7 VIP's connections begin in the control process's acceptor (seed
// S1, FIG. 32): every packet of a flow the forwarder has no entry for is
// copied to the acceptor (PuntAccept) and its frame held; the acceptor
// answers each with at most one packet (an ACK, an HTTP error, a
// SYN-ACK), which leaves in place of the held frame, turned around. A
// SYN, though, is answered by the worker itself when it holds the
// VIP's cookie keys (synanswer.go): the same SYN-ACK, from the same
// code, so that SYNs never leave the forwarder; and the handshake's
// last ACK, without data, is taken there too when its cookie is of
// those keys (the acceptor makes the connection of the request's first
// segment, which carries the same cookie). The forwarder keeps
// nothing per connection before the control process plumbs the
// migrated connection's route, so a SYN flood costs it only its answers
// (or, without keys, the bounded held frames). After the route, the
// flow is an ordinary tunnel flow.

// acceptTimeout bounds how long a frame waits for the acceptor's answer:
// a dropped answer costs the client one retransmission, while a held
// frame occupies one of the worker's few hold slots.
const acceptTimeout = 200 // milliseconds

// answered is a held frame the acceptor answered: it leaves with the
// next batch, transmitted or (no answer) dropped.
type answered struct {
	frame nic.Frame
	tx    bool
}

// toAcceptor hands pk, a packet of an l7 VIP without a flow, to the
// acceptor and holds its frame for the answer.
func (p *Pipeline) toAcceptor(pk *packet, v *VIP, now flow.Tick) {
	if d := refuseNew(pk, v.Mode, false); d != dropNone && !(d == DropTCPNotSYN && pk.tcpFlags&(rstFlag|synFlag) == rstFlag) {
		// A client's reset goes to the acceptor (it ends the
		// connection there); a SYN-ACK or a flag combination no stack
		// sends does not. The unit is the connection's end here, not a
		// hop, so the TTL does not matter.
		pk.dropWith(d)
		return
	}
	if !p.out.enabled {
		pk.dropWith(DropNoAcceptor)
		return
	}
	// No IP options or IPv6 extension headers: the acceptor takes none,
	// and a migrated connection's packets go to its host with the
	// flow-ID tunnel, which restores them from fixed offsets.
	ipLen := header.IPv4MinSize
	if pk.v6 {
		ipLen = header.IPv6Size
	}
	o := &pk.frame.Offload
	if pk.frag != fragNone || o.GSOSize != 0 || pk.end-pk.l3 > channel.MaxPuntFrame || pk.l4 != pk.l3+ipLen {
		pk.dropWith(DropAcceptorUnfit)
		return
	}
	if o.Partial && !finishChecksum(pk.b, int(o.CsumStart), int(o.CsumOffset)) {
		pk.dropWith(DropBadOffload)
		return
	}
	if header.Checksum(pk.b[pk.l4:pk.end], header.PseudoHeaderSum(header.IPProtoTCP, pk.src(), pk.dst(), uint32(pk.end-pk.l4))) != 0 {
		pk.dropWith(DropTCPBadChecksum)
		return
	}
	switch pk.tcpFlags & (synFlag | ackFlag | rstFlag | finFlag) {
	case synFlag:
		if p.answerSYN(pk, v) {
			return
		}
	case ackFlag:
		if pk.end == pk.l4+header.TCP(pk.b[pk.l4:pk.end]).DataOffset() && p.takeHandshakeACK(pk, v) {
			return
		}
	}
	if len(p.held) == maxPunts || len(p.out.punts) == maxPunts {
		pk.dropWith(DropPuntOverflow)
		return
	}
	p.acceptID++
	if p.acceptID == 0 {
		p.acceptID++ // 0 is no ID
	}
	p.held = append(p.held, heldPunt{frame: *pk.frame, k4: pk.k4, k6: pk.k6, v6: pk.v6, expires: now + acceptTimeout, accept: p.acceptID, l3: uint16(pk.l3)})
	pk.kind = kindHeld
	p.stats.ToAcceptor++
	i := len(p.out.punts)
	n := copy(p.out.frames[i][:], pk.b[pk.l3:pk.end])
	p.out.punts = append(p.out.punts, channel.Punt{
		Worker: uint8(p.cfg.Worker), Reason: channel.PuntAccept, VIP: v.ID, ID: p.acceptID, Choice: channel.NoChoice,
		Key: flowKey(pk), Frame: p.out.frames[i][:n],
	})
	p.ringPunt()
}

// Forward sends the frame held for the acceptor's punt id through the
// pipeline again with the next batch, instead of an answer: the control
// process found where the frame's connection goes (another unit of a
// cluster carried it) and has just added its route. It reports false
// when no frame waits under id (its wait expired).
// Call it through Worker.Post.
func (p *Pipeline) Forward(id uint32) bool {
	held := p.held
	for i := range held {
		if h := &held[i]; h.accept == id && id != 0 {
			p.deferred = append(p.deferred, h.frame)
			held[i] = held[len(held)-1]
			p.held = held[:len(held)-1]
			return true
		}
	}
	return false
}

// Answer sends ip, an IP packet from the acceptor of the held frame's
// family, in place of the frame held for the acceptor's punt id, with
// the link addresses turned around; an empty ip drops the frame. Either
// leaves with the next batch. It reports false when no frame waits
// under id (its wait expired), or ip does not fit the frame's buffer or
// is not of its family (the frame is dropped).
// Call it through Worker.Post.
func (p *Pipeline) Answer(id uint32, ip []byte) bool {
	held := p.held
	for i := range held {
		h := &held[i]
		if h.accept != id || id == 0 {
			continue
		}
		f := h.frame
		l3 := int(h.l3)
		held[i] = held[len(held)-1]
		p.held = held[:len(held)-1]
		if len(ip) == 0 {
			p.answers = append(p.answers, answered{frame: f})
			return true
		}
		if ip[0]>>4 == 6 != h.v6 {
			p.stats.Drops[DropAcceptorUnfit]++
			p.answers = append(p.answers, answered{frame: f})
			return false
		}
		if f.Off+l3+len(ip) > len(f.Buf) || len(ip) < header.IPv4MinSize {
			p.stats.Drops[DropNoHeadroom]++
			p.answers = append(p.answers, answered{frame: f})
			return false
		}
		b := f.Buf[f.Off : f.Off+l3+len(ip)]
		copy(b[l3:], ip)
		f.Len = len(b)
		f.Offload = nic.Offload{} // the acceptor's packets are whole
		if p.cfg.Link == nic.LinkEthernet {
			eth := header.Ethernet(b)
			d, s := eth.Dst(), eth.Src()
			eth.SetDst(s)
			eth.SetSrc(d)
		}
		p.answers = append(p.answers, answered{frame: f, tx: true})
		p.stats.AcceptorAnswers++
		return true
	}
	return false
}

// flushAnswers puts the answered frames into out.
func (p *Pipeline) flushAnswers(out *Output) {
	for i := range p.answers {
		a := &p.answers[i]
		if a.tx {
			p.stats.TxPackets++
			p.stats.TxBytes += uint64(a.frame.Len)
			out.TX = append(out.TX, a.frame)
		} else {
			out.Drop = append(out.Drop, a.frame)
		}
	}
	p.answers = p.answers[:0]
}

// isL7 reports whether flows of VIP v begin in the acceptor.
func isL7(v *VIP) bool { return v.Mode == unit.ModeL7 }
