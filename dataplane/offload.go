package dataplane

import (
	"encoding/binary"

	"github.com/tetherlb/tether/dataplane/header"
)

// Offloads. A TUN port with virtio-net headers hands over packets whose
// transport checksum is partial (the field holds the pseudo-header's sum;
// the device adds the rest) and TCP super-packets of up to 64 KiB (GSO),
// and takes them back the same way: one rewrite then moves tens of
// kilobytes, and nobody sums the payload. The pipeline keeps such a packet
// as it is where it rewrites it (rewrite knows partial checksums), and
// finishes the checksum itself anywhere else, as the kernel's
// skb_checksum_help does for a device without offload.
//
// An AF_XDP socket on a veth says nothing: a local sender's packets come
// with partial checksums, which a forwarder cannot tell from wrong ones,
// and a receiver drops. With GuessPartial the pipeline finishes a TCP or
// UDP checksum whose field holds exactly the pseudo-header's sum. A
// correct checksum that happens to equal it (one in 65,536) is finished
// to the same value, so nothing correct is harmed; a corrupted packet that
// happens to match loses its checksum's protection, which the link's CRC
// still gives.

// offload settles the checksum of a packet that arrived with offload
// metadata, or may carry a partial checksum unannounced.
func (p *Pipeline) offload(pk *packet) {
	o := &pk.frame.Offload
	if pk.kind == kindDrop {
		return
	}
	if o.Partial {
		if pk.kind == kindFlow && pk.frag == fragNone && int(o.CsumStart) == pk.l4 && int(o.CsumOffset) == checksumField(pk.proto) {
			return // rewritten as it is
		}
		if o.GSOSize != 0 || !finishChecksum(pk.b, int(o.CsumStart), int(o.CsumOffset)) {
			// A super-packet is always TCP with its checksum where it
			// belongs; and a checksum's place must lie in the packet.
			pk.dropWith(DropBadOffload)
			return
		}
		o.Partial = false
		p.stats.ChecksumsFinished++
		return
	}
	if o.GSOSize != 0 {
		pk.dropWith(DropBadOffload) // segments need their checksums left to the device
		return
	}
	if p.cfg.GuessPartial && pk.kind == kindFlow && pk.frag == fragNone && looksPartial(pk) {
		finishChecksum(pk.b, pk.l4, checksumField(pk.proto))
		p.stats.ChecksumsFinished++
	}
}

// checksumField is where the checksum lies in a TCP or UDP header, or -1.
func checksumField(proto uint8) int {
	switch proto {
	case header.IPProtoTCP:
		return 16
	case header.IPProtoUDP:
		return 6
	}
	return -1
}

// looksPartial reports whether a TCP or UDP packet's checksum field holds
// the pseudo-header's sum, as a partial checksum does.
func looksPartial(pk *packet) bool {
	off := checksumField(pk.proto)
	if off < 0 {
		return false
	}
	field := binary.BigEndian.Uint16(pk.b[pk.l4+off:])
	if field == 0 && pk.proto == header.IPProtoUDP {
		return false // no checksum (IPv4 UDP)
	}
	return field == header.Fold(header.PseudoHeaderSum(pk.proto, pk.src(), pk.dst(), uint32(pk.end-pk.l4)))
}

// finishChecksum completes the partial checksum whose transport header
// starts at start in b and whose field lies off bytes into it: the field
// already holds the pseudo-header's sum, so the sum from start to the end
// is the whole. It reports false, changing nothing, when the field is not
// within b.
func finishChecksum(b []byte, start, off int) bool {
	if start <= 0 || off < 0 || start+off+2 > len(b) {
		return false
	}
	c := header.Checksum(b[start:], 0)
	if c == 0 && off == 6 {
		c = 0xffff // UDP sends a zero sum as all ones (RFC 768)
	}
	binary.BigEndian.PutUint16(b[start+off:], c)
	return true
}
