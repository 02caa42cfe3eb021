package dataplane

import (
	"encoding/binary"
	"testing"

	"github.com/tetherlb/tether/dataplane/header"
	"github.com/tetherlb/tether/internal/pkttest"
	"github.com/tetherlb/tether/nic"
)

// l4Of returns the offsets of an Ethernet frame's innermost IP header and
// transport header, and the transport protocol (IPv4 or IPv6 without
// extension headers, inside at most one IP-in-IP header).
func l4Of(f []byte) (l3, l4 int, proto uint8) {
	l3 = header.EthernetSize
	for {
		if f[l3]>>4 == 6 {
			proto, l4 = f[l3+6], l3+header.IPv6Size
		} else {
			proto, l4 = f[l3+9], l3+int(f[l3]&0x0f)*4
		}
		if proto != header.IPProtoIPIP && proto != header.IPProtoIPv6 {
			return l3, l4, proto
		}
		l3 = l4
	}
}

// pseudoOf sums the pseudo-header of the transport segment at l4.
func pseudoOf(f []byte, l3, l4 int, proto uint8) uint64 {
	if f[l3]>>4 == 6 {
		return header.PseudoHeaderSum(proto, f[l3+8:l3+24], f[l3+24:l3+40], uint32(len(f)-l4))
	}
	return header.PseudoHeaderSum(proto, f[l3+12:l3+16], f[l3+16:l3+20], uint32(len(f)-l4))
}

// l4Valid reports whether a frame's transport checksum verifies.
func l4Valid(f []byte) bool {
	l3, l4, proto := l4Of(f)
	return header.Checksum(f[l4:], pseudoOf(f, l3, l4, proto)) == 0
}

// makePartial turns a frame's correct transport checksum into the partial
// one a sender that offloads it leaves: the pseudo-header's sum.
func makePartial(f []byte) nic.Offload {
	l3, l4, proto := l4Of(f)
	off := checksumField(proto)
	binary.BigEndian.PutUint16(f[l4+off:], header.Fold(pseudoOf(f, l3, l4, proto)))
	return nic.Offload{Partial: true, CsumStart: uint16(l4), CsumOffset: uint16(off)}
}

// process runs one frame with offload metadata through r's pipeline and
// returns the frames sent (bytes copied, offloads as they left).
func (r *rig) process(data []byte, o nic.Offload) ([][]byte, []nic.Offload) {
	f := frame(data)
	f.Offload = o
	r.out.Reset()
	r.p.Process(r.now, []nic.Frame{f}, r.out)
	var out [][]byte
	var offs []nic.Offload
	for i := range r.out.TX {
		out = append(out, append([]byte(nil), r.out.TX[i].Data()...))
		offs = append(offs, r.out.TX[i].Offload)
	}
	return out, offs
}

// TestPartialChecksumsThroughEveryMode: a packet whose checksum is left
// to the device goes through every mode still partial, the checksum's
// place moved with any header put in front, and once the device finishes
// it the packet is exactly the one a full checksum would have made.
func TestPartialChecksumsThroughEveryMode(t *testing.T) {
	for _, c := range []struct {
		name string
		port uint16
		v6   bool
	}{{"nat", 80, false}, {"halfnat", 81, false}, {"tunnel", 82, false}, {"ipip", 83, false}, {"halfnat6", 80, true}} {
		t.Run(c.name, func(t *testing.T) {
			build := func() []byte {
				if c.v6 {
					return pkttest.TCP(cl6("2001:db8:9::7", 4000), vip6(c.port), pkttest.ACK|pkttest.PSH, 5, 6, pkttest.Opts{Payload: make([]byte, 900)})
				}
				return pkttest.TCP(cl(7, 4000), vip(c.port), pkttest.ACK|pkttest.PSH, 5, 6, pkttest.Opts{Payload: make([]byte, 900)})
			}
			syn := func(r *rig) {
				s := syn(cl(7, 4000), vip(c.port))
				if c.v6 {
					s = pkttest.TCP(cl6("2001:db8:9::7", 4000), vip6(c.port), pkttest.SYN, 1, 0, pkttest.Opts{MSS: 1400})
				}
				r.send(s)
			}
			full := newRig(t, loadConfig(t, 1024, "1024-65535"))
			syn(full)
			want, _ := full.process(build(), nic.Offload{})
			part := newRig(t, loadConfig(t, 1024, "1024-65535"))
			syn(part)
			in := build()
			got, offs := part.process(in, makePartial(in))
			if len(want) != 1 || len(got) != 1 {
				t.Fatalf("sent %d and %d frames, want 1 each", len(want), len(got))
			}
			o := offs[0]
			_, l4, _ := l4Of(got[0])
			if !o.Partial || int(o.CsumStart) != l4 || o.CsumOffset != 16 {
				t.Fatalf("offload after the rewrite %+v, want partial at the TCP header (%d)", o, l4)
			}
			if !finishChecksum(got[0], int(o.CsumStart), int(o.CsumOffset)) || !l4Valid(got[0]) {
				t.Fatal("the finished checksum does not verify")
			}
			if string(got[0]) != string(want[0]) {
				t.Fatalf("finished packet differs from the one a full checksum makes:\n got %x\nwant %x", got[0], want[0])
			}
			if part.p.stats.ChecksumsFinished != 0 {
				t.Fatal("the forwarder summed a payload it could leave to the device")
			}
		})
	}
}

// TestSuperPacketsKeepTheirSegmentSize: a TCP super-packet goes out
// whole with its segment size; through ipip, segments that would not fit
// the tunnel are refused by the size of a segment, not of the whole.
func TestSuperPacketsKeepTheirSegmentSize(t *testing.T) {
	big := func(port uint16) ([]byte, nic.Offload) {
		f := pkttest.TCP(cl(8, 4100), vip(port), pkttest.ACK, 5, 6, pkttest.Opts{Payload: make([]byte, 30000)})
		o := makePartial(f)
		o.GSO, o.GSOSize = nic.GSOTCPv4, 1400
		return f, o
	}
	r := newRig(t, loadConfig(t, 1024, "1024-65535"))
	r.send(syn(cl(8, 4100), vip(80)))
	r.send(syn(cl(8, 4100), vip(83)))
	f, o := big(80)
	got, offs := r.process(f, o)
	if len(got) != 1 || offs[0].GSOSize != 1400 || offs[0].GSO != nic.GSOTCPv4 || !offs[0].Partial {
		t.Fatalf("nat super-packet: %d frames, offload %+v", len(got), offs)
	}
	f, o = big(83) // ipip: 1400 + 40 of headers + 20 fits 1500
	got, offs = r.process(f, o)
	if len(got) != 1 || offs[0].GSOSize != 1400 || int(offs[0].CsumStart) != header.EthernetSize+2*header.IPv4MinSize {
		t.Fatalf("ipip super-packet: %d frames, offload %+v", len(got), offs)
	}
	f, o = big(83)
	o.GSOSize = 1460 // 1460 + 40 + 20 > 1500
	if got, _ := r.process(f, o); len(got) != 0 || r.p.stats.Drops[DropTooBig] != 1 {
		t.Fatalf("ipip super-packet of 1460-byte segments: %d frames, %d too_big drops; want it dropped (no DF: no answer)", len(got), r.p.stats.Drops[DropTooBig])
	}
}

// TestGuessedPartialChecksums: a port that does not say which checksums
// are partial (AF_XDP on a veth) gets them finished; correct ones are
// left alone, and wrong ones stay wrong.
func TestGuessedPartialChecksums(t *testing.T) {
	r := newRig(t, loadConfig(t, 1024, "1024-65535"))
	r.p.cfg.GuessPartial = true
	r.send(syn(cl(9, 4200), vip(81)))
	partial := pkttest.TCP(cl(9, 4200), vip(81), pkttest.ACK, 5, 6, pkttest.Opts{Payload: []byte("partial")})
	makePartial(partial)
	if got, _ := r.process(partial, nic.Offload{}); len(got) != 1 || !l4Valid(got[0]) || r.p.stats.ChecksumsFinished != 1 {
		t.Fatalf("partial checksum: %d frames, finished %d; want one valid frame", len(got), r.p.stats.ChecksumsFinished)
	}
	whole := pkttest.TCP(cl(9, 4200), vip(81), pkttest.ACK, 5, 6, pkttest.Opts{Payload: []byte("whole")})
	if got, _ := r.process(whole, nic.Offload{}); len(got) != 1 || !l4Valid(got[0]) || r.p.stats.ChecksumsFinished != 1 {
		t.Fatalf("full checksum: %d frames, finished %d; want it forwarded untouched", len(got), r.p.stats.ChecksumsFinished)
	}
	wrong := pkttest.CorruptL4Checksum(pkttest.TCP(cl(9, 4200), vip(81), pkttest.ACK, 5, 6, pkttest.Opts{Payload: []byte("wrong")}))
	if got, _ := r.process(wrong, nic.Offload{}); len(got) != 1 || l4Valid(got[0]) {
		t.Fatal("a wrong checksum was made right")
	}
}

// TestBadOffloadDropped: offload metadata that does not fit its packet
// is dropped under a name.
func TestBadOffloadDropped(t *testing.T) {
	r := newRig(t, loadConfig(t, 1024, "1024-65535"))
	r.send(syn(cl(10, 4300), vip(81)))
	f := pkttest.TCP(cl(10, 4300), vip(81), pkttest.ACK, 5, 6, pkttest.Opts{Payload: []byte("x")})
	for _, o := range []nic.Offload{
		{Partial: true, CsumStart: 2000, CsumOffset: 16},
		{Partial: true, CsumStart: header.EthernetSize, CsumOffset: 6, GSO: nic.GSOTCPv4, GSOSize: 1000},
		{GSO: nic.GSOTCPv4, GSOSize: 1000},
	} {
		if got, _ := r.process(append([]byte(nil), f...), o); len(got) != 0 || r.p.stats.Drops[DropBadOffload] == 0 {
			t.Errorf("offload %+v: %d frames sent, want a bad_offload drop", o, len(got))
		}
		r.p.stats.Drops[DropBadOffload] = 0
	}
}
