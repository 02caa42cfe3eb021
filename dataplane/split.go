package dataplane

import (
	"encoding/binary"

	"github.com/tetherlb/tether/dataplane/header"
	"github.com/tetherlb/tether/nic"
)

// A packet too big for an ipip tunnel that may be fragmented on the way
// is sent as fragments of its outer header, as a router on the path (or
// IPVS) would send it: an IPv4 packet without DF (RFC 2003 §5.1), which
// includes every fragment of a datagram a client fragmented itself, and
// an IPv6 packet of at most 1280 bytes, which the sender may not shrink
// further (RFC 2473 §7.1; the outer header then carries a fragment
// header). The host reassembles the outer packet before it decapsulates,
// so what it delivers is the packet the client sent.
//
// The frame itself carries the first fragment; the port lends a buffer
// (nic.Allocator) for each of the others, which start with a copy of the
// frame's link header. A worker makes at most maxSplitFrames such extra
// frames per Process call, so that Output's lists keep their size; past
// that, or when the port has no free buffer, the packet is dropped as
// no_buffer.

// maxSplitFrames bounds the frames splitOuter adds to an Output in one
// Process call: a 64 KiB packet cut for a 576-byte path makes 118.
const maxSplitFrames = 256

// UseAllocator gives the pipeline the port's buffers for the fragments
// of packets too big for an ipip tunnel (see splitOuter). Without one,
// such packets are dropped as no_buffer. Call it before the first batch.
func (p *Pipeline) UseAllocator(a nic.Allocator) {
	p.alloc = a
	if a != nil && p.pieces == nil {
		p.pieces = make([]nic.Frame, 0, maxSplitFrames)
	}
}

// splittable reports whether a packet of inner bytes that does not fit a
// tunnel of MTU mtu after an outer header of overhead bytes may be sent
// in fragments. A TCP super-packet may not: its segments are cut to fit
// (its sender's MSS was clamped), and what does not fit is answered.
func splittable(pk *packet, inner, overhead, mtu int) bool {
	if pk.frame.Offload.GSOSize != 0 || mtu > 0xffff {
		return false
	}
	if pk.v6 {
		// RFC 2473 §7.1: only what the sender cannot shrink.
		return inner <= header.IPv6MinMTU && inner+header.IPv6FragmentSize <= 0xffff
	}
	return !header.IPv4(pk.b[pk.l3:]).DontFragment() && inner+overhead <= 0xffff
}

// splitOuter sends pk, encapsulated in an outer header that starts at
// pk.l3 and too big for pk.splitMTU, as fragments of that outer header:
// pk's frame as the first, frames from the port's allocator as the rest,
// all appended to out.TX in order.
func (p *Pipeline) splitOuter(pk *packet, out *Output) {
	o := &pk.frame.Offload
	if o.Partial {
		// No device can finish a checksum whose data spans fragments.
		if !finishChecksum(pk.b, int(o.CsumStart), int(o.CsumOffset)) {
			p.dropOut(pk, DropBadOffload, out)
			return
		}
		o.Partial = false
		p.stats.ChecksumsFinished++
	}
	if p.alloc == nil {
		p.dropOut(pk, DropNoBuffer, out)
		return
	}
	l3 := pk.l3
	hdr, ext := header.IPv4MinSize, 0 // the outer header, and what each fragment adds to it
	if pk.v6 {
		hdr, ext = header.IPv6Size, header.IPv6FragmentSize
	}
	if pk.frame.Off < ext {
		p.dropOut(pk, DropNoHeadroom, out)
		return
	}
	data := pk.b[l3+hdr : pk.end] // the inner packet, cut into pieces
	step := (int(pk.splitMTU) - hdr - ext) &^ 7
	pieces, ok := p.lend(len(data), &step, l3+hdr+ext, out)
	if !ok {
		p.dropOut(pk, DropNoBuffer, out)
		return
	}
	id := uint32(0)
	if pk.v6 {
		p.ipID += uint32(p.cfg.Workers)
		id = p.ipID
	}
	// The later fragments first, from the packet as it is.
	for i := range pieces {
		f := &pieces[i]
		off := (i + 1) * step
		chunk := data[off:min(off+step, len(data))]
		b := f.Buf[f.Off:]
		copy(b, pk.b[:l3+hdr])
		n := l3 + hdr + ext + copy(b[l3+hdr+ext:], chunk)
		f.Len, f.Time = n, pk.frame.Time
		setFragment(b[l3:n], pk.v6, off, off+len(chunk) < len(data), id)
		p.stats.TxBytes += uint64(n)
	}
	// Then the first, in place: for IPv6 the link and outer headers move
	// to the front to make room for the fragment header.
	if ext > 0 {
		b, _ := pk.frame.Prepend(ext)
		copy(b, b[ext:ext+l3+hdr])
		pk.b = b
	}
	pk.end = l3 + hdr + ext + step
	pk.b, pk.frame.Len = pk.b[:pk.end], pk.end
	setFragment(pk.b[l3:], pk.v6, 0, true, id)
	p.splitFrames += len(pieces)
	p.stats.TooBigFragmented++
	p.stats.TooBigFragments += uint64(1 + len(pieces))
	p.stats.TxPackets += uint64(1 + len(pieces))
	p.stats.TxBytes += uint64(pk.frame.Len)
	out.TX = append(out.TX, *pk.frame)
	out.TX = append(out.TX, pieces...)
	p.pieces = pieces[:0]
}

// lend borrows from the port a buffer for each fragment after the first
// of n bytes cut into pieces of *step bytes behind headers of hdrs
// bytes, shrinking *step to what a buffer holds. When it cannot (no free
// buffer, the Process call's budget spent) it gives back what it
// borrowed, through out.Drop, and reports false.
func (p *Pipeline) lend(n int, step *int, hdrs int, out *Output) ([]nic.Frame, bool) {
	pieces := p.pieces[:0]
	fail := func() ([]nic.Frame, bool) {
		out.Drop = append(out.Drop, pieces...)
		p.pieces = pieces[:0]
		return nil, false
	}
	f, ok := p.alloc.Alloc()
	if !ok {
		return fail()
	}
	pieces = append(pieces, f)
	// Every buffer of a port is as long: the first says what each holds.
	*step = min(*step, (len(f.Buf)-f.Off-hdrs)&^7)
	if *step <= 0 {
		return fail()
	}
	later := (n+*step-1) / *step - 1
	if later < 1 || p.splitFrames+later > maxSplitFrames {
		return fail()
	}
	for len(pieces) < later {
		if f, ok = p.alloc.Alloc(); !ok {
			return fail()
		}
		pieces = append(pieces, f)
	}
	return pieces, true
}

// setFragment makes ip, an outer header and the piece of the inner packet
// at off that follows it (behind a fragment header's space for IPv6),
// the fragment it is: its length, offset and more-fragments flag, and
// for IPv4 its header checksum, or for IPv6 the fragment header with id.
func setFragment(ip []byte, v6 bool, off int, more bool, id uint32) {
	if v6 {
		h := header.IPv6(ip)
		next := h.NextHeader()
		h.SetPayloadLength(uint16(len(ip) - header.IPv6Size))
		h.SetNextHeader(header.IPProtoFragment)
		header.EncodeIPv6Fragment(ip[header.IPv6Size:], next, off, more, id)
		return
	}
	h := header.IPv4(ip)
	fo := uint16(off / 8)
	if more {
		fo |= header.IPv4FlagMF
	}
	binary.BigEndian.PutUint16(ip[2:], uint16(len(ip)))
	binary.BigEndian.PutUint16(ip[6:], fo)
	h.SetChecksum(0)
	h.SetChecksum(h.CalculateChecksum())
}

// dropOut drops pk at the point of its emission, counted under d.
func (p *Pipeline) dropOut(pk *packet, d Drop, out *Output) {
	pk.dropWith(d)
	p.stats.Drops[d]++
	out.Drop = append(out.Drop, *pk.frame)
}
