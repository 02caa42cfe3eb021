package tun

import (
	"encoding/binary"

	"golang.org/x/sys/unix"

	"github.com/tetherlb/tether/dataplane/header"
	"github.com/tetherlb/tether/nic"
)

// The virtio-net header (struct virtio_net_hdr, without num_buffers): ten
// bytes in the host's byte order, which virtio's legacy format makes
// little-endian on every host Tether runs on.
const (
	vnetHdrLen       = 10
	vnetNeedsCsum    = 1 // VIRTIO_NET_HDR_F_NEEDS_CSUM
	tcpChecksumField = 16
	// segMax bounds one segment the port cuts: the headers and at most
	// a whole super-packet's payload.
	segMax = 65536 + nic.Headroom
	// gsoMax bounds the super-packets the kernel hands over, leaving
	// room for an outer IPv6 header within IPv4's 64 KiB total length.
	gsoMax = 65535 - header.IPv6Size
)

// readVnetHdr turns a virtio-net header into a frame's Offload.
func readVnetHdr(b []byte) nic.Offload {
	var o nic.Offload
	if b[0]&vnetNeedsCsum != 0 {
		o.Partial = true
		o.CsumStart = binary.LittleEndian.Uint16(b[6:])
		o.CsumOffset = binary.LittleEndian.Uint16(b[8:])
	}
	if b[1] != nic.GSONone {
		o.GSO = b[1]
		o.GSOSize = binary.LittleEndian.Uint16(b[4:])
	}
	return o
}

// writeVnetHdr writes the virtio-net header for a frame whose bytes
// follow it in the same buffer (b is the header's ten bytes).
func writeVnetHdr(b []byte, o *nic.Offload) {
	clear(b)
	if o.Partial {
		b[0] = vnetNeedsCsum
		binary.LittleEndian.PutUint16(b[6:], o.CsumStart)
		binary.LittleEndian.PutUint16(b[8:], o.CsumOffset)
		// hdr_len is only a hint; the kernel raises it to cover the
		// checksum field.
		binary.LittleEndian.PutUint16(b[2:], o.CsumStart+o.CsumOffset+2)
	}
	if o.GSOSize > 0 {
		b[1] = o.GSO
		binary.LittleEndian.PutUint16(b[4:], o.GSOSize)
	}
}

// encapsulated reports whether an IP packet carries another IP packet
// (IPv4 or IPv6 in IPv4 or IPv6), which the kernel's segmentation offload
// of a TUN device's writes does not cut.
func encapsulated(b []byte) bool {
	if len(b) < header.IPv6Size {
		return false
	}
	switch b[0] >> 4 {
	case 4:
		return b[9] == header.IPProtoIPIP || b[9] == header.IPProtoIPv6
	case 6:
		return b[6] == header.IPProtoIPIP || b[6] == header.IPProtoIPv6
	}
	return false
}

// segment writes an encapsulated TCP super-packet as the segments the
// kernel would have cut from it (see cut), each behind its virtio-net
// header.
func (p *Port) segment(fr *nic.Frame) error {
	return cut(fr.Data(), &fr.Offload, p.seg, func(seg []byte) error {
		_, err := nic.RawWrite(p.fd, seg)
		return err
	})
}

// cut cuts the encapsulated TCP super-packet b into segments, building
// each in buf (which must hold segMax bytes and a virtio-net header) and
// handing it, header first, to emit: for each GSOSize bytes of payload the
// outer and inner IP headers with their lengths (and IPv4 IDs and header
// checksums) set for it, the TCP header with its sequence number advanced,
// FIN and PSH only on the last and CWR only on the first, and its checksum
// left partial for the kernel (or the next device) to finish. It returns
// EINVAL, emitting nothing, when the offload does not describe b.
func cut(b []byte, o *nic.Offload, buf []byte, emit func(seg []byte) error) error {
	if len(b) < header.IPv6Size || !o.Partial || o.CsumOffset != tcpChecksumField || o.GSOSize == 0 {
		return unix.EINVAL
	}
	inner := int(b[0]&0x0f) * 4
	if b[0]>>4 == 6 {
		inner = header.IPv6Size
	}
	ts := int(o.CsumStart)
	if inner < header.IPv4MinSize || ts < inner+header.IPv4MinSize || ts+header.TCPMinSize > len(b) {
		return unix.EINVAL
	}
	v6in := b[inner]>>4 == 6
	if v, want := b[inner]>>4, ts-inner; v6in && want < header.IPv6Size || !v6in && (v != 4 || want != int(b[inner]&0x0f)*4) {
		return unix.EINVAL // the TCP header must follow the inner IP header
	}
	thl := int(b[ts+12]>>4) * 4
	hdrs := ts + thl
	if thl < header.TCPMinSize || hdrs > len(b) || hdrs+int(o.GSOSize) > segMax || len(buf) < vnetHdrLen+segMax {
		return unix.EINVAL
	}
	payload := b[hdrs:]
	mss := int(o.GSOSize)
	seq := binary.BigEndian.Uint32(b[ts+4:])
	flags := b[ts+13]
	for k, off := 0, 0; off < len(payload); k, off = k+1, off+mss {
		chunk := payload[off:min(off+mss, len(payload))]
		last := off+len(chunk) == len(payload)
		seg := buf[:vnetHdrLen+hdrs+len(chunk)]
		writeVnetHdr(seg[:vnetHdrLen], &nic.Offload{Partial: true, CsumStart: o.CsumStart, CsumOffset: tcpChecksumField})
		pkt := seg[vnetHdrLen:]
		copy(pkt, b[:hdrs])
		copy(pkt[hdrs:], chunk)
		n := len(pkt)
		setIPLength(pkt, 0, n, k)
		setIPLength(pkt, inner, n-inner, k)
		t := pkt[ts:]
		binary.BigEndian.PutUint32(t[4:], seq+uint32(off))
		f := flags
		if !last {
			f &^= 0x01 | 0x08 // FIN, PSH
		}
		if k > 0 {
			f &^= 0x80 // CWR
		}
		t[13] = f
		var src, dst []byte
		if v6in {
			src, dst = pkt[inner+8:inner+24], pkt[inner+24:inner+40]
		} else {
			src, dst = pkt[inner+12:inner+16], pkt[inner+16:inner+20]
		}
		binary.BigEndian.PutUint16(t[16:], header.Fold(header.PseudoHeaderSum(header.IPProtoTCP, src, dst, uint32(n-ts))))
		if err := emit(seg); err != nil {
			return err
		}
	}
	return nil
}

// setIPLength sets the length of the IP header at off for a packet of n
// bytes from there, and for IPv4 advances its ID by k (as the kernel does
// for each segment) and recomputes its checksum.
func setIPLength(b []byte, off, n, k int) {
	ip := b[off:]
	if ip[0]>>4 == 6 {
		binary.BigEndian.PutUint16(ip[4:], uint16(n-header.IPv6Size))
		return
	}
	hl := int(ip[0]&0x0f) * 4
	binary.BigEndian.PutUint16(ip[2:], uint16(n))
	binary.BigEndian.PutUint16(ip[4:], binary.BigEndian.Uint16(ip[4:])+uint16(k))
	ip[10], ip[11] = 0, 0
	binary.BigEndian.PutUint16(ip[10:], header.Checksum(ip[:hl], 0))
}
