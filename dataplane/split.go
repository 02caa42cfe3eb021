package dataplane

import (
	"encoding/binary"

	"github.com/tetherlb/tether/dataplane/header"
	"github.com/tetherlb/tether/nic"
)

// A packet too big for an ipip tunnel that may be fragmented on the way
// is sent in fragments, as a router on the path would send it, instead
// of being dropped or answered:
//
//   - IPv4 without DF, which includes every fragment of a datagram a
//     client fragmented itself: the inner packet is cut into fragments
//     (a router may fragment any IPv4 packet without DF, a fragment
//     again), each in an outer header of its own (RFC 2003 §5.1). The
//     host unwraps each outer packet whole (tether-agent's XDP program
//     does it without the ipip module) and reassembles the client's
//     datagram.
//   - IPv6 of at most 1280 bytes, which the sender may not shrink
//     further and no router may fragment: the outer packet is cut,
//     behind a fragment header (RFC 2473 §7.1), and the host
//     reassembles it before it decapsulates.
//
// The frame itself carries the first fragment; the port lends a buffer
// (nic.Allocator) for each of the others, which start with a copy of the
// frame's link and IP headers. A worker makes at most maxSplitFrames
// such extra frames per Process call, so that Output's lists keep their
// size; past that, or when the port has no free buffer, the packet is
// dropped as no_buffer.

// maxSplitFrames bounds the frames split adds to an Output in one
// Process call: a 64 KiB packet cut for a 576-byte path makes 118.
const maxSplitFrames = 256

// UseAllocator gives the pipeline the port's buffers for the fragments
// of packets too big for an ipip tunnel (see split). Without one,
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

// split sends pk, encapsulated in an outer header that starts at pk.l3
// and too big for pk.splitMTU, in fragments: pk's frame as the first,
// frames from the port's allocator as the rest, all appended to out.TX
// in order.
func (p *Pipeline) split(pk *packet, out *Output) {
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
		p.noBuffer(pk, out)
		return
	}
	if pk.v6 {
		p.splitOuter6(pk, out)
	} else {
		p.splitInner4(pk, out)
	}
}

// splitInner4 cuts the inner IPv4 packet of pk into fragments, each in a
// copy of the outer header with its own ID and length. Options the
// inner header carries that are not to be copied into every fragment
// (RFC 791: the copied flag) become no-operations in the later ones, as
// Linux's ip_options_fragment does, so every fragment's header is as
// long.
func (p *Pipeline) splitInner4(pk *packet, out *Output) {
	l3 := pk.l3
	outer := header.IPv4MinSize
	in := header.IPv4(pk.b[l3+outer:])
	ihl := in.HeaderLength()
	hdrs := l3 + outer + ihl // link, outer and inner headers
	data := pk.b[hdrs:pk.end]
	base, more := in.FragmentOffset(), in.MoreFragments()
	step := (int(pk.splitMTU) - outer - ihl) &^ 7
	pieces, ok := p.lend(len(data), &step, hdrs, out)
	if !ok {
		p.noBuffer(pk, out)
		return
	}
	for i := range pieces {
		f := &pieces[i]
		off := (i + 1) * step
		chunk := data[off:min(off+step, len(data))]
		b := f.Buf[f.Off:]
		copy(b, pk.b[:hdrs])
		n := hdrs + copy(b[hdrs:], chunk)
		f.Len, f.Time = n, pk.frame.Time
		noCopiedOptions(b[l3+outer : hdrs])
		p.ipID += uint32(p.cfg.Workers)
		setInner4(b[l3:n], ihl, uint16(p.ipID), base+off, more || off+len(chunk) < len(data))
		p.stats.TxBytes += uint64(n)
	}
	pk.end = hdrs + step
	pk.b, pk.frame.Len = pk.b[:pk.end], pk.end
	setInner4(pk.b[l3:], ihl, header.IPv4(pk.b[l3:]).ID(), base, true)
	p.sent(pk, pieces, out)
}

// setInner4 makes ip, an outer IPv4 header with no options followed by
// an inner IPv4 header of ihl bytes and a piece of the inner packet, a
// whole outer packet of ID id around the inner fragment at off: lengths,
// the inner offset and more-fragments flag, both header checksums.
func setInner4(ip []byte, ihl int, id uint16, off int, more bool) {
	o, in := header.IPv4(ip), header.IPv4(ip[header.IPv4MinSize:])
	fo := uint16(off / 8)
	if more {
		fo |= header.IPv4FlagMF
	}
	binary.BigEndian.PutUint16(in[2:], uint16(len(in)))
	binary.BigEndian.PutUint16(in[6:], fo)
	in.SetChecksum(0)
	in.SetChecksum(in.CalculateChecksum())
	binary.BigEndian.PutUint16(o[2:], uint16(len(ip)))
	binary.BigEndian.PutUint16(o[4:], id)
	o.SetChecksum(0)
	o.SetChecksum(o.CalculateChecksum())
}

// noCopiedOptions turns the options of IPv4 header h that later
// fragments do not carry into no-operations.
func noCopiedOptions(h []byte) {
	for i := header.IPv4MinSize; i < len(h); {
		t := h[i]
		if t == 0 { // end of options: the rest is padding
			return
		}
		if t == 1 {
			i++
			continue
		}
		n := 2
		if i+1 < len(h) {
			n = max(2, int(h[i+1]))
		}
		end := min(i+n, len(h))
		if t&0x80 == 0 {
			for j := i; j < end; j++ {
				h[j] = 1
			}
		}
		i = end
	}
}

// splitOuter6 cuts the outer IPv6 packet of pk into fragments behind a
// fragment header.
func (p *Pipeline) splitOuter6(pk *packet, out *Output) {
	l3 := pk.l3
	hdr, ext := header.IPv6Size, header.IPv6FragmentSize
	if pk.frame.Off < ext {
		p.dropOut(pk, DropNoHeadroom, out)
		return
	}
	data := pk.b[l3+hdr : pk.end] // the inner packet, cut into pieces
	step := (int(pk.splitMTU) - hdr - ext) &^ 7
	pieces, ok := p.lend(len(data), &step, l3+hdr+ext, out)
	if !ok {
		p.noBuffer(pk, out)
		return
	}
	p.ipID += uint32(p.cfg.Workers)
	id := p.ipID
	// The later fragments first, from the packet as it is.
	for i := range pieces {
		f := &pieces[i]
		off := (i + 1) * step
		chunk := data[off:min(off+step, len(data))]
		b := f.Buf[f.Off:]
		copy(b, pk.b[:l3+hdr])
		n := l3 + hdr + ext + copy(b[l3+hdr+ext:], chunk)
		f.Len, f.Time = n, pk.frame.Time
		setFragment6(b[l3:n], off, off+len(chunk) < len(data), id)
		p.stats.TxBytes += uint64(n)
	}
	// Then the first, in place: the link and outer headers move to the
	// front to make room for the fragment header.
	b, _ := pk.frame.Prepend(ext)
	copy(b, b[ext:ext+l3+hdr])
	pk.end = l3 + hdr + ext + step
	pk.b, pk.frame.Len = b[:pk.end], pk.end
	setFragment6(pk.b[l3:], 0, true, id)
	p.sent(pk, pieces, out)
}

// sent counts pk and the pieces cut from it and appends them to out.TX.
func (p *Pipeline) sent(pk *packet, pieces []nic.Frame, out *Output) {
	p.splitFrames += len(pieces)
	p.stats.TooBigFragmented++
	p.stats.TooBigFragments += uint64(1 + len(pieces))
	p.stats.TxPackets += uint64(1 + len(pieces))
	p.stats.TxBytes += uint64(pk.frame.Len)
	if pk.splitBackend >= 0 {
		c := &p.stats.Backends[pk.splitBackend]
		c.Packets++
		c.Bytes += pk.splitBytes
	}
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

// setFragment6 makes ip, an IPv6 header, a fragment header's space and
// the piece of the packet at off, that fragment: its payload length and
// its fragment header, with id.
func setFragment6(ip []byte, off int, more bool, id uint32) {
	h := header.IPv6(ip)
	next := h.NextHeader()
	h.SetPayloadLength(uint16(len(ip) - header.IPv6Size))
	h.SetNextHeader(header.IPProtoFragment)
	header.EncodeIPv6Fragment(ip[header.IPv6Size:], next, off, more, id)
}

// noBuffer drops pk as no_buffer and, when it is a fragment, the rest of
// its datagram with it: the host could never reassemble it.
func (p *Pipeline) noBuffer(pk *packet, out *Output) {
	if pk.frag != fragNone {
		// The client's header follows the outer one, its addresses
		// as the datagram's key has them.
		k := fragKey{id: pk.fragID, proto: pk.proto, v6: pk.v6}
		if in := pk.b[pk.l3:]; pk.v6 {
			copy(k.src[:], in[header.IPv6Size+8:header.IPv6Size+24])
			copy(k.dst[:], in[header.IPv6Size+24:header.IPv6Size+40])
		} else {
			copy(k.src[:], in[header.IPv4MinSize+12:header.IPv4MinSize+16])
			copy(k.dst[:], in[header.IPv4MinSize+16:header.IPv4MinSize+20])
		}
		if d := p.frags.lookup(&k, p.now); d != nil {
			d.dead = DropNoBuffer
		}
	}
	p.dropOut(pk, DropNoBuffer, out)
}

// dropOut drops pk at the point of its emission, counted under d.
func (p *Pipeline) dropOut(pk *packet, d Drop, out *Output) {
	pk.dropWith(d)
	p.stats.Drops[d]++
	out.Drop = append(out.Drop, *pk.frame)
}
