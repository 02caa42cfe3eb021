package dataplane

import (
	"bytes"
	"fmt"
	"net/netip"
	"time"

	"github.com/tetherlb/tether/dataplane/channel"
	"github.com/tetherlb/tether/dataplane/header"
	"github.com/tetherlb/tether/dataplane/syncookie"
)

// An l7 VIP's SYN is answered by the worker itself, with the SYN-ACK the
// acceptor would send (package syncookie, with the acceptor's keys, which
// the control process sends as channel.SYNKey), so that a SYN never
// leaves the forwarder: it was most of the acceptor's work, and every
// one crossed to the control process and back. The worker keeps nothing
// per connection; the client's ACK, and everything after, goes to the
// acceptor as before, which takes the cookie as its own. Without a key
// for the VIP (no control process yet, a VIP just added, or a clock past
// the keys' epochs) the SYN goes to the acceptor too.
//
// The handshake's last segment, the client's ACK without data, the
// worker takes too when its cookie is one of the worker's keys
// (takeHandshakeACK). The acceptor would make the connection's state of
// it and answer nothing; it makes the very same state of the client's
// first data segment, which carries the same sequence and acknowledgment
// numbers, so the cookie still validates then. That spares each
// connection a punt and its answer, and leaves a connection that has sent
// nothing without state in the unit, as a SYN-cookie listener before the
// ACK: its request's time bound (RequestTimeout) counts from its first
// byte, and a cookie past its epochs is answered with a reset.

// synState is a worker's copy of the keys and what it answers with.
type synState struct {
	keys map[uint32]*SYNKey // by VIP ID
	mac  syncookie.MAC
	none syncookie.Key // no key: the previous epoch's when the worker has none
	// clock reads the host clock, which picks the key epoch and makes
	// the TSval as the acceptor does; time.Now but in tests.
	clock func() time.Time
}

// SYNKey is a worker's key of one l7 VIP: made by NewSYNKeys from a
// channel.SYNKey, one copy per worker.
type SYNKey struct {
	addr      netip.Addr
	raw       []byte // addr's bytes, as pk.dst() has them
	port      uint16
	every     time.Duration
	cur, next syncookie.Key // next.Block nil: none
	tsOffset  uint32
	params    syncookie.Params
}

// SYNKeys are the keys SetSYNKeys installs, by VIP ID.
type SYNKeys map[uint32]*SYNKey

// NewSYNKeys makes a worker's keys of what the control process sent. It
// allocates (the ciphers): call it apart from the worker, once for each.
func NewSYNKeys(in []channel.SYNKey) (SYNKeys, error) {
	out := make(SYNKeys, len(in))
	for i := range in {
		c := &in[i]
		if c.Every == 0 || c.Every > 1<<62 {
			return nil, fmt.Errorf("vip %d: an epoch of %d ns", c.VIP, c.Every)
		}
		if !c.Addr.IsValid() || c.Addr.Is4In6() {
			return nil, fmt.Errorf("vip %d: address %v", c.VIP, c.Addr)
		}
		k := &SYNKey{addr: c.Addr, raw: c.Addr.AsSlice(), port: c.Port, every: time.Duration(c.Every), tsOffset: c.TSOffset,
			params: syncookie.Params{MSS: c.MSS, WScale: c.WScale, Window: c.Window}}
		var err error
		if k.cur, err = syncookie.NewKey(c.Epoch, c.Cur); err != nil {
			return nil, fmt.Errorf("vip %d: %w", c.VIP, err)
		}
		if c.HasNext {
			if k.next, err = syncookie.NewKey(c.Epoch+1, c.Next); err != nil {
				return nil, fmt.Errorf("vip %d: %w", c.VIP, err)
			}
		}
		out[c.VIP] = k
	}
	return out, nil
}

// SetSYNKeys replaces the worker's SYN keys with k (nil: none, every
// l7 SYN goes to the acceptor). The pipeline keeps k: give each worker
// its own. Call it through Worker.Post.
func (p *Pipeline) SetSYNKeys(k SYNKeys) { p.syn.keys = k }

// answerSYN answers pk, a pure SYN to the l7 VIP v whose checksums
// verified, with a SYN-ACK in its own frame, and reports whether it did.
// It reports false, changing nothing, when it has no key for v at this
// time or the SYN is one the acceptor should judge (a source no reply
// may go to, malformed options, a frame too short for the answer).
func (p *Pipeline) answerSYN(pk *packet, v *VIP) bool {
	k := p.synKey(pk, v)
	if k == nil || pk.sport == 0 {
		return false
	}
	client := pk.srcAddr()
	if !syncookie.Replyable(client) {
		return false // the acceptor's bad_address
	}
	f := pk.frame
	if len(f.Buf)-(f.Off+pk.l3) < syncookie.MaxSYNACK {
		return false
	}
	in := header.TCP(pk.b[pk.l4:pk.end])
	opt, ok := header.ParseTCPOptions(in)
	if !ok {
		return false
	}
	now := p.synNow()
	key, _ := k.at(now, &p.syn.none)
	if key == nil {
		return false // keys the control process has not renewed
	}
	t := syncookie.Tuple{Client: client, VIP: k.addr, ClientPort: pk.sport, VIPPort: pk.dport}
	syn := syncookie.SYN{Seq: in.Seq(), MSS: syncookie.DefaultMSS, TS: opt.HasTimestamps, TSV: opt.TSVal,
		WS: opt.HasWS, WSh: opt.WindowScale, SACK: opt.SACKPermitted}
	if opt.MSSOff != 0 {
		syn.MSS = opt.MSS
	}
	// Everything read: the answer overwrites the SYN from its IP header
	// on, in place.
	l3 := f.Off + pk.l3
	ip := p.syn.mac.SYNACK(f.Buf[l3:l3:len(f.Buf)], key, syncookie.TSNow(now, k.tsOffset), &k.params, &t, &syn)
	end := pk.l3 + len(ip)
	f.Len = end
	pk.b, pk.end = f.Buf[f.Off:f.Off+end], end
	p.sendBack(pk)
	p.stats.AcceptorSYNs++
	return true
}

// synKey is the worker's key for pk, a TCP segment to the l7 VIP v, or
// nil: none for v, or one for another address or port than pk's (the
// VIP's ID named another VIP when the keys were sent).
func (p *Pipeline) synKey(pk *packet, v *VIP) *SYNKey {
	k := p.syn.keys[v.ID]
	if k == nil || pk.dport != k.port || !bytes.Equal(pk.dst(), k.raw) {
		return nil
	}
	return k
}

// at returns the keys the acceptor holds at now as k has them: cur, the
// key of now's epoch, which makes cookies; prev, the epoch before's,
// which it still takes (none when k does not have it). cur is nil when k
// has no key for now's epoch.
func (k *SYNKey) at(now time.Time, none *syncookie.Key) (cur, prev *syncookie.Key) {
	switch syncookie.Epoch(now, k.every) {
	case k.cur.Epoch:
		return &k.cur, none
	case k.cur.Epoch + 1:
		if k.next.Block != nil {
			return &k.next, &k.cur
		}
	}
	return nil, nil
}

// synNow is the host clock, which picks the key epoch.
func (p *Pipeline) synNow() time.Time {
	if p.syn.clock != nil {
		return p.syn.clock()
	}
	return time.Now()
}

// takeHandshakeACK takes pk, a pure ACK without data to the l7 VIP v
// whose checksums verified, and reports whether it did: when it
// completes a handshake with a cookie the acceptor takes now, of a key
// the worker holds (the acceptor's current epoch's, or the one before
// when the worker has it). It reports false, changing nothing, for
// anything the acceptor should judge: no key, another cookie, a TSecr
// ahead of the clock (not an echo of our SYN-ACK).
func (p *Pipeline) takeHandshakeACK(pk *packet, v *VIP) bool {
	k := p.synKey(pk, v)
	if k == nil {
		return false
	}
	in := header.TCP(pk.b[pk.l4:pk.end])
	opt, ok := header.ParseTCPOptions(in)
	if !ok {
		return false
	}
	now := p.synNow()
	cur, prev := k.at(now, &p.syn.none)
	if cur == nil {
		return false
	}
	if opt.HasTimestamps && int32(syncookie.TSNow(now, k.tsOffset)-opt.TSEcr) < 0 {
		return false
	}
	t := syncookie.Tuple{Client: pk.srcAddr(), VIP: k.addr, ClientPort: pk.sport, VIPPort: pk.dport}
	if _, ok := p.syn.mac.Check(cur, prev, &t, in.Seq()-1, in.Ack()-1); !ok {
		return false
	}
	pk.kind = kindTaken
	p.stats.AcceptorACKs++
	return true
}
