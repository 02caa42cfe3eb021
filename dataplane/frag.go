package dataplane

import (
	"github.com/tetherlb/tether/api/unit"
	"github.com/tetherlb/tether/dataplane/header"
	"github.com/tetherlb/tether/nic"
	"github.com/tetherlb/tether/tables/flow"
)

// Only the first fragment of a datagram carries the ports, so the first
// fragment's flow is remembered under (source, destination, protocol, IP
// ID) and later fragments follow it. Fragments that overtake their first
// fragment are held, up to a bound and a timeout, and sent once it comes.
//
// nat, which rewrites the source address, also gives the datagram a new
// IP ID: many clients' datagrams now share one source, and their original
// IDs could collide in the backend's reassembly. (The tunnel's fragments
// go IP-in-IP with the client's source: see apply.)

type fragKey struct {
	src, dst [16]byte
	id       uint32
	proto    uint8
	v6       bool
}

type fragDatagram struct {
	key          fragKey
	sport, dport uint16
	newID        uint32
	hasNewID     bool
	expires      flow.Tick
	used         bool
	// dead is why the datagram's first fragment, or an overlapping one,
	// was dropped: its other fragments share that fate, since a backend
	// can never reassemble them.
	dead Drop
	// seen are the byte ranges of the datagram forwarded so far, merged
	// where they touch, to refuse overlapping fragments (RFC 5722).
	seen  [maxRanges][2]uint32
	nseen uint8
}

// maxRanges bounds the disjoint pieces of a datagram tracked at once:
// fragments arriving in order, or in reverse, keep one range; a datagram
// scattered into more holes than this is dropped as fragment_overflow.
const maxRanges = 16

// add records the piece [off, off+n) of the datagram, or says why not:
// it overlaps a piece already seen, or there are too many holes.
func (d *fragDatagram) add(off, n uint32) Drop {
	end := off + n
	for i := range d.nseen {
		r := &d.seen[i]
		if off < r[1] && r[0] < end {
			return DropFragmentOverlap
		}
	}
	// Merge with the ranges it touches.
	for i := 0; i < int(d.nseen); {
		r := d.seen[i]
		if r[1] == off || end == r[0] {
			off, end = min(off, r[0]), max(end, r[1])
			d.nseen--
			d.seen[i] = d.seen[d.nseen]
			continue
		}
		i++
	}
	if int(d.nseen) == maxRanges {
		return DropFragmentOverflow
	}
	d.seen[d.nseen] = [2]uint32{off, end}
	d.nseen++
	return dropNone
}

type heldFragment struct {
	frame   nic.Frame
	key     fragKey
	expires flow.Tick
}

// fragWays is the associativity of the datagram table: a datagram lives
// in one of four slots of its set, and a new one replaces an expired or
// the oldest entry there.
const fragWays = 4

type fragments struct {
	sets    [][fragWays]fragDatagram
	held    []heldFragment
	maxHeld int
	seed    uint64
}

func newFragments(datagrams, pending int, seed uint64) *fragments {
	nsets := max(1, (datagrams+fragWays-1)/fragWays)
	return &fragments{
		sets:    make([][fragWays]fragDatagram, nsets),
		held:    make([]heldFragment, 0, pending),
		maxHeld: pending,
		seed:    seed,
	}
}

func (f *fragments) set(k *fragKey) *[fragWays]fragDatagram {
	h := (&flow.Key6{Src: k.src, Dst: k.dst, SrcPort: uint16(k.id >> 16), DstPort: uint16(k.id), Proto: k.proto}).Hash(f.seed)
	return &f.sets[(h>>32)*uint64(len(f.sets))>>32]
}

func (f *fragments) lookup(k *fragKey, now flow.Tick) *fragDatagram {
	set := f.set(k)
	for i := range set {
		d := &set[i]
		if d.used && d.key == *k && int32(d.expires-now) >= 0 {
			return d
		}
	}
	return nil
}

func (f *fragments) insert(k *fragKey, now flow.Tick) *fragDatagram {
	set := f.set(k)
	victim := &set[0]
	for i := range set {
		d := &set[i]
		if !d.used || d.key == *k || int32(d.expires-now) < 0 {
			victim = d
			break
		}
		if int32(d.expires-victim.expires) < 0 {
			victim = d
		}
	}
	*victim = fragDatagram{key: *k, used: true}
	return victim
}

func (pk *packet) fragKey() fragKey {
	k := fragKey{id: pk.fragID, proto: pk.proto, v6: pk.v6}
	copy(k.src[:], pk.src())
	copy(k.dst[:], pk.dst())
	return k
}

// firstFragment forwards the first fragment of a datagram along its flow
// and remembers the flow for the datagram's other fragments, releasing
// those that arrived before it. If the first fragment cannot be
// forwarded (its backend inactive, say), neither can the rest:
// the datagram is remembered as dead and they are dropped with it.
func (p *Pipeline) firstFragment(pk *packet, e entry, now flow.Tick, out *Output) {
	k := pk.fragKey() // before apply rewrites the addresses
	d := p.frags.insert(&k, now)
	d.sport, d.dport = pk.sport, pk.dport
	d.expires = now + flow.Tick(p.cfg.FragTimeout)
	// A new source needs a new ID; tunnel fragments keep the client's
	// source (they go IP-in-IP: see apply).
	if e.m.Mode == unit.ModeNAT {
		p.ipID += uint32(p.cfg.Workers)
		d.newID, d.hasNewID = p.ipID, true
	}
	d.add(0, pk.fragLen)
	p.setFragID(pk, d)
	p.apply(pk, e)
	if pk.kind == kindDrop {
		d.dead = pk.drop
	}
	p.releaseHeld(&k, now, out)
}

// setFragID gives a fragment its datagram's new IP ID, if it has one.
func (p *Pipeline) setFragID(pk *packet, d *fragDatagram) {
	if !d.hasNewID {
		return
	}
	if pk.v6 {
		header.IPv6Fragment(pk.b[pk.fragHdr:]).SetID(d.newID)
	} else {
		header.IPv4(pk.b[pk.l3:]).SetID(uint16(d.newID))
	}
}

// laterFragment forwards a non-first fragment along its datagram's flow,
// or holds it until the first fragment arrives.
func (p *Pipeline) laterFragment(pk *packet, now flow.Tick, out *Output) {
	k := pk.fragKey()
	d := p.frags.lookup(&k, now)
	if d == nil {
		if len(p.frags.held) == p.frags.maxHeld {
			pk.dropWith(DropFragmentOverflow)
			p.emit(pk, out)
			return
		}
		p.frags.held = append(p.frags.held, heldFragment{frame: *pk.frame, key: k, expires: now + flow.Tick(p.cfg.FragTimeout)})
		p.stats.FragmentsHeld++
		return
	}
	if d.dead != dropNone {
		pk.dropWith(d.dead)
		p.emit(pk, out)
		return
	}
	if why := d.add(pk.fragOff, pk.fragLen); why != dropNone {
		// RFC 5722: a datagram with overlapping fragments is dropped
		// whole; what was forwarded of it will never reassemble.
		d.dead = why
		pk.dropWith(why)
		p.emit(pk, out)
		return
	}
	pk.setKey(d.sport, d.dport)
	if pk.v6 {
		pk.hash = p.flows.Hash6(&pk.k6)
	} else {
		pk.hash = p.flows.Hash4(&pk.k4)
	}
	e, ok := p.lookup(pk)
	if !ok {
		pk.dropWith(DropNoFlow)
		p.emit(pk, out)
		return
	}
	e.m.LastSeen = now
	p.setFragID(pk, d)
	p.apply(pk, e)
	p.emit(pk, out)
}

// releaseHeld processes the held fragments of datagram k, whose first
// fragment has just been seen.
func (p *Pipeline) releaseHeld(k *fragKey, now flow.Tick, out *Output) {
	held := p.frags.held
	for i := 0; i < len(held); {
		if held[i].key != *k {
			i++
			continue
		}
		fr := held[i].frame
		held[i] = held[len(held)-1]
		held = held[:len(held)-1]
		p.frags.held = held
		// The held frame must outlive this call: it goes into out.
		slot := &p.heldScratch
		*slot = fr
		pk := &p.scratch
		pk.frame = slot
		parse(pk, p.cfg.Link)
		if pk.kind == kindLater {
			p.laterFragment(pk, now, out)
		} else {
			p.emit(pk, out)
		}
		held = p.frags.held
	}
}

// expireHeld drops held fragments whose first fragment did not come in
// time.
func (p *Pipeline) expireHeld(now flow.Tick, out *Output) {
	held := p.frags.held
	for i := 0; i < len(held); {
		if int32(held[i].expires-now) >= 0 {
			i++
			continue
		}
		p.stats.Drops[DropFragmentTimeout]++
		out.Drop = append(out.Drop, held[i].frame)
		held[i] = held[len(held)-1]
		held = held[:len(held)-1]
	}
	p.frags.held = held
}

// HeldFragments returns how many fragments wait for their first fragment.
func (p *Pipeline) HeldFragments() int { return len(p.frags.held) }
