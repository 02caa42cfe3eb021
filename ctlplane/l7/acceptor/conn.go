package acceptor

import (
	"bytes"
	"strconv"
	"time"

	"github.com/tetherlb/tether/api/hostpb"
	"github.com/tetherlb/tether/dataplane/header"
)

// before reports a < b in sequence space (RFC 9293 §3.4).
func before(a, b uint32) bool { return int32(a-b) < 0 }

// established handles a segment of a connection with state.
func (a *Acceptor) established(now time.Time, c *conn, s *seg, out []byte) ([]byte, Event) {
	f := s.flags
	if f&header.TCPFlagRST != 0 {
		// RFC 5961 §3.2: only a RST at exactly rcv_nxt resets; one
		// elsewhere in the window earns a challenge ACK, one outside it
		// nothing, so a blind attacker cannot reset a connection.
		switch {
		case s.seq == c.rcvNxt:
			phase := c.phase
			a.drop(c)
			a.count(cResets)
			if phase == closing {
				return nil, Event{}
			}
			return nil, Event{Kind: Reset, Key: c.key}
		case a.inWindow(c, s.seq):
			return a.ack(now, c, out), Event{}
		}
		return nil, Event{}
	}
	if f&header.TCPFlagSYN != 0 {
		if f&header.TCPFlagACK == 0 && s.seq == c.remoteISN && c.phase != closing {
			// The client did not hear our SYN-ACK but its ACK reached
			// us: say it again, as it was.
			return a.resendSynAck(now, c, s, out), Event{}
		}
		// RFC 5961 §4: a SYN on a synchronized connection gets a
		// challenge ACK.
		return a.ack(now, c, out), Event{}
	}
	if f&header.TCPFlagACK == 0 {
		a.count(cNoACK)
		return nil, Event{}
	}
	if c.phase == closing {
		return a.closing(now, c, s, out)
	}
	if c.phase == collecting && !now.Before(c.deadline) {
		a.count(cTimeouts)
		reply := a.answer(now, c, 408, out)
		return reply, Event{Kind: Dropped, Key: c.key, Status: 408}
	}
	if s.ack != c.localISN+1 {
		// It acknowledges what we never sent (or less than our SYN).
		a.count(cBadACK)
		return a.ack(now, c, out), Event{}
	}
	if c.ts && s.opt.HasTimestamps && before(s.opt.TSVal, c.tsRecent) {
		// PAWS (RFC 7323 §5.3): an old duplicate.
		a.count(cPAWS)
		return a.ack(now, c, out), Event{}
	}
	if before(c.rcvNxt+max(c.rcvWnd, 1), s.seq) {
		// Beyond the window we advertised: not an acceptable segment
		// (RFC 9293 §3.10.7.4), so its window is not taken either.
		a.count(cOutOfWindow)
		return a.ack(now, c, out), Event{}
	}
	a.updateWindow(c, s)
	end := s.seq + uint32(len(s.payload))
	if c.ts && s.opt.HasTimestamps && !before(c.rcvNxt, s.seq) {
		c.tsRecent = s.opt.TSVal
	}
	if before(c.rcvNxt, s.seq) {
		// A hole before this segment: say where we are, keep nothing.
		a.count(cOutOfOrder)
		return a.ack(now, c, out), Event{}
	}
	if c.phase == ready {
		// The decision is being made on the bytes we have. Anything new
		// (data, FIN) is left unacknowledged for the host to receive.
		if before(c.rcvNxt, end) || f&header.TCPFlagFIN != 0 && end == c.rcvNxt {
			a.count(cHeldWhileReady)
			return nil, Event{}
		}
		if len(s.payload) == 0 && f&header.TCPFlagFIN == 0 {
			return nil, Event{} // a bare ACK
		}
		a.count(cRetransmits)
		return a.ack(now, c, out), Event{}
	}
	// The new part of the segment, trimmed to the room left.
	var fresh []byte
	if before(c.rcvNxt, end) {
		fresh = s.payload[c.rcvNxt-s.seq:]
		if room := a.cfg.MaxRequest - len(c.data); len(fresh) > room {
			fresh = fresh[:room]
			a.count(cTrimmed)
		}
	} else if len(s.payload) > 0 {
		a.count(cRetransmits)
	}
	fin := f&header.TCPFlagFIN != 0 && s.seq+uint32(len(s.payload)) == c.rcvNxt+uint32(len(fresh))
	if len(fresh) > 0 {
		from := len(c.data)
		a.append(c, fresh)
		head, status := 0, 0
		if c.worthAsking(from) {
			head, status = a.cfg.Complete(c.data)
		}
		switch {
		case status != 0:
			a.count(cBadRequests)
			return a.answer(now, c, status, out), Event{Kind: Dropped, Key: c.key, Status: status}
		case head > 0:
			// A FIN with the head is not acknowledged: TCPState cannot say
			// the client has closed, so the host will receive it again.
			c.phase = ready
			c.deadline = now.Add(a.cfg.RequestTimeout)
			a.count(cReady)
			reply := a.ack(now, c, out)
			return reply, Event{Kind: Ready, Key: c.key, State: a.state(c), Data: c.data, HeadLen: min(head, len(c.data))}
		case len(c.data) >= a.cfg.MaxRequest:
			a.count(cTooLarge)
			return a.answer(now, c, 431, out), Event{Kind: Dropped, Key: c.key, Status: 431}
		}
	}
	if fin {
		// The client stopped before a whole head: it will read nothing,
		// so it gets our FIN and no response.
		c.rcvNxt++
		c.peerFin = true
		a.count(cEarlyFIN)
		return a.answer(now, c, 0, out), Event{Kind: Dropped, Key: c.key}
	}
	if len(fresh) == 0 && len(s.payload) == 0 {
		return nil, Event{} // a bare ACK: nothing to say
	}
	return a.ack(now, c, out), Event{}
}

// worthAsking reports whether the bytes appended at from can have
// changed Complete's answer: the first line has just ended (a bad
// request line is refused early), or a line ending in them ends an
// empty line, which is how a head ends (RFC 9112 §2.1). Asking on every
// segment would let a client of one-byte segments make the acceptor
// parse its whole head once per byte.
func (c *conn) worthAsking(from int) bool {
	d := c.data
	for p := from; p < len(d); p++ {
		i := bytes.IndexByte(d[p:], '\n')
		if i < 0 {
			return false
		}
		p += i
		if !c.sawLF {
			c.sawLF = true
			return true
		}
		if p >= 1 && d[p-1] == '\n' || p >= 2 && d[p-1] == '\r' && d[p-2] == '\n' {
			return true
		}
	}
	return false
}

// inWindow reports whether seq lies in the receive window.
func (a *Acceptor) inWindow(c *conn, seq uint32) bool {
	return !before(seq, c.rcvNxt) && before(seq, c.rcvNxt+max(c.rcvWnd, 1))
}

// updateWindow takes the client's window from s when s is no older
// than the segment that last set it (RFC 9293 §3.10.7.4; our snd_nxt
// never moves, so SND.WL2 needs no test).
func (a *Acceptor) updateWindow(c *conn, s *seg) {
	if before(s.seq, c.sndWl1) {
		return
	}
	c.sndWl1 = s.seq
	c.sndWnd = uint32(s.window) << c.sndWscale
}

// append adds bytes to c's buffer, whose capacity never passes
// MaxRequest.
func (a *Acceptor) append(c *conn, b []byte) {
	need := len(c.data) + len(b)
	if need > cap(c.data) {
		n := min(max(2*cap(c.data), need, 2048), a.cfg.MaxRequest)
		d := make([]byte, len(c.data), n)
		copy(d, c.data)
		a.held += n - cap(c.data)
		c.data = d
	}
	c.data = append(c.data, b...)
	c.rcvNxt += uint32(len(b))
}

// window returns the window field to advertise and records the window
// in bytes. Its right edge stays at the first byte after the SYN plus
// MaxRequest: rounded up to the scale, so it never moves back (RFC 7323
// §2.4); what the rounding lets a client send beyond MaxRequest is
// trimmed, not acknowledged.
func (a *Acceptor) window(c *conn) uint16 {
	room := a.cfg.MaxRequest - len(c.data)
	if c.phase == closing {
		room = a.cfg.MaxRequest // whatever comes is discarded
	}
	room = max(room, 0)
	if !c.ws {
		w := min(room, 65535)
		c.rcvWnd = uint32(w)
		return uint16(w)
	}
	shift := uint(a.cfg.WindowScale)
	w := min((room+1<<shift-1)>>shift, 65535)
	c.rcvWnd = uint32(w) << shift
	return uint16(w)
}

// opts returns the options of a non-SYN reply and records its TSval.
func (a *Acceptor) opts(now time.Time, c *conn) replyOpts {
	if !c.ts {
		return replyOpts{}
	}
	// The clock is never behind the SYN-ACK's TSval (see synAck), but a
	// clock stepped back must not make the host's TSvals go backwards.
	if t := a.tsNow(now); !before(t, c.tsVal) {
		c.tsVal = t
	}
	return replyOpts{TS: true, TSVal: c.tsVal, TSEcr: c.tsRecent}
}

// ack builds a bare ACK of everything received.
func (a *Acceptor) ack(now time.Time, c *conn, out []byte) []byte {
	o := a.opts(now, c)
	seq := c.localISN + 1
	if c.phase == closing {
		seq = c.finSeq + 1
	}
	return build(out, &c.key, seq, c.rcvNxt, header.TCPFlagACK, a.window(c), &o, nil)
}

// resendSynAck repeats the SYN-ACK for a SYN retransmitted after its
// connection was made.
func (a *Acceptor) resendSynAck(now time.Time, c *conn, s *seg, out []byte) []byte {
	o := replyOpts{SYN: true, MSS: uint16(a.cfg.MSS), SACK: c.sack && c.ts, TS: c.ts}
	if c.ws {
		o.WS, o.WScale = true, uint8(a.cfg.WindowScale)
	}
	if c.ts {
		o.TSVal, o.TSEcr = c.tsVal, s.opt.TSVal
	}
	a.count(cRetransmits)
	wnd := uint16(min(a.cfg.MaxRequest, 65535))
	return build(out, &c.key, c.localISN, c.remoteISN+1, header.TCPFlagSYN|header.TCPFlagACK, wnd, &o, nil)
}

// answer sends status (0: none) and our FIN in one segment and moves c
// to closing: its request bytes are let go.
func (a *Acceptor) answer(now time.Time, c *conn, status int, out []byte) []byte {
	if c.phase != closing {
		a.nLive--
		a.held -= cap(c.data)
		c.data = nil
		if a.nClosing >= a.cfg.MaxConns {
			// No room to linger: answer once and forget.
			delete(a.conns, c.key)
			a.count(cClosingFull)
			c.phase = closing
			c.status = status
			c.finSeq = c.localISN + 1 + uint32(responseLen(status))
			return a.sendAnswer(now, c, out)
		}
		a.nClosing++
		c.phase = closing
		c.status = status
		c.finSeq = c.localISN + 1 + uint32(responseLen(status))
		c.deadline = now.Add(a.cfg.CloseLinger)
		a.count(cAnswered)
	}
	return a.sendAnswer(now, c, out)
}

// sendAnswer (re)builds the answer segment of a closing connection.
func (a *Acceptor) sendAnswer(now time.Time, c *conn, out []byte) []byte {
	var buf [maxResponse]byte
	body := response(buf[:0], c.status)
	o := a.opts(now, c)
	return build(out, &c.key, c.localISN+1, c.rcvNxt, header.TCPFlagFIN|header.TCPFlagACK|pshIf(len(body) > 0), a.window(c), &o, body)
}

func pshIf(b bool) uint8 {
	if b {
		return header.TCPFlagPSH
	}
	return 0
}

// closing handles a segment after our answer.
func (a *Acceptor) closing(now time.Time, c *conn, s *seg, out []byte) ([]byte, Event) {
	if s.ack != c.finSeq+1 {
		if before(c.finSeq+1, s.ack) || before(s.ack, c.localISN+1) {
			a.count(cBadACK)
			return a.ack(now, c, out), Event{}
		}
		// Our answer or FIN is still unacknowledged: send it again.
		a.count(cRetransmits)
		return a.sendAnswer(now, c, out), Event{}
	}
	end := s.seq + uint32(len(s.payload))
	if !c.peerFin && !before(c.rcvNxt, s.seq) && before(c.rcvNxt, end) {
		// A lingering close: the rest of the request is acknowledged
		// and thrown away, so the client reads our answer, not a reset.
		a.add(cDiscardedBytes, uint64(end-c.rcvNxt))
		c.rcvNxt = end
	}
	switch {
	case s.flags&header.TCPFlagFIN != 0 && !c.peerFin && end == c.rcvNxt:
		c.rcvNxt++
		c.peerFin = true
		// Both FINs are acknowledged once this ACK arrives; keep the
		// state until CloseLinger (TIME-WAIT) to repeat it.
		return a.ack(now, c, out), Event{}
	case c.peerFin && s.flags&header.TCPFlagFIN == 0 && len(s.payload) == 0:
		// The client acknowledged our FIN after its own: done.
		a.drop(c)
		a.count(cClosed)
		return nil, Event{}
	case len(s.payload) > 0 || s.flags&header.TCPFlagFIN != 0:
		return a.ack(now, c, out), Event{}
	}
	return nil, Event{}
}

// state is c's TCPState for the host, as hostpb documents each field.
func (a *Acceptor) state(c *conn) *hostpb.TCPState {
	st := &hostpb.TCPState{
		Client:        c.key.Client.AsSlice(),
		ClientPort:    uint32(c.key.ClientPort),
		Vip:           c.key.VIP.AsSlice(),
		VipPort:       uint32(c.key.VIPPort),
		RemoteIsn:     c.remoteISN,
		LocalIsn:      c.localISN,
		SndNxt:        c.localISN + 1,
		RcvNxt:        c.rcvNxt,
		SndWnd:        c.sndWnd,
		SndWl1:        c.sndWl1,
		RcvWnd:        c.rcvWnd,
		WindowScaling: c.ws,
		Mss:           uint32(c.mss),
		SackPermitted: c.sack,
		Timestamps:    c.ts,
	}
	if c.ws {
		st.SndWscale = uint32(c.sndWscale)
		st.RcvWscale = uint32(a.cfg.WindowScale)
	}
	if c.ts {
		st.TsVal, st.TsRecent = c.tsVal, c.tsRecent
	}
	return st
}

// reasons are the phrases of the statuses an acceptor answers.
func reason(status int) string {
	switch status {
	case 400:
		return "Bad Request"
	case 408:
		return "Request Timeout"
	case 413:
		return "Content Too Large"
	case 414:
		return "URI Too Long"
	case 429:
		return "Too Many Requests"
	case 431:
		return "Request Header Fields Too Large"
	case 500:
		return "Internal Server Error"
	case 501:
		return "Not Implemented"
	case 502:
		return "Bad Gateway"
	case 503:
		return "Service Unavailable"
	case 504:
		return "Gateway Timeout"
	case 505:
		return "HTTP Version Not Supported"
	}
	return "Error"
}

// responseLen is the length of status's answer.
func responseLen(status int) int {
	var buf [maxResponse]byte
	return len(response(buf[:0], status))
}

// maxResponse bounds an answer's length (the longest phrase is 31
// bytes): it fits the smallest MSS class.
const maxResponse = 160

// response appends the HTTP answer for status to b (nothing for 0).
// It is short enough to fit the smallest MSS class in one segment.
func response(b []byte, status int) []byte {
	if status == 0 {
		return b
	}
	if status < 100 || status > 999 {
		status = 500
	}
	b = append(b, "HTTP/1.1 "...)
	b = strconv.AppendInt(b, int64(status), 10)
	b = append(b, ' ')
	b = append(b, reason(status)...)
	b = append(b, "\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"...)
	return b
}
