package dataplane

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/gopacket/gopacket/pcapgo"

	"github.com/tetherlb/tether/dataplane/header"
	"github.com/tetherlb/tether/internal/pkttest"
	"github.com/tetherlb/tether/nic"
	"github.com/tetherlb/tether/nic/ring"
)

// seedFrames adds every frame of the golden captures to a fuzz corpus, so
// fuzzing starts from packets of every mode, family and malformation.
func seedFrames(f *testing.F, add func(frame []byte, raw bool)) { seedFramesT(f, add) }

func seedFramesT(f testing.TB, add func(frame []byte, raw bool)) {
	paths, _ := filepath.Glob("replay/testdata/*/in.pcap")
	for _, p := range paths {
		fh, err := os.Open(p)
		if err != nil {
			f.Fatal(err)
		}
		r, err := pcapgo.NewReader(fh)
		if err != nil {
			f.Fatal(err)
		}
		raw := r.LinkType() != 1
		for {
			data, _, err := r.ReadPacketData()
			if err != nil {
				break
			}
			add(data, raw)
		}
		fh.Close()
	}
}

// FuzzParse: no frame makes the parser panic or read out of range, and
// what it accepts has offsets inside the frame.
func FuzzParse(f *testing.F) {
	seedFrames(f, func(b []byte, raw bool) { f.Add(b, raw) })
	f.Fuzz(func(t *testing.T, data []byte, raw bool) {
		link := nic.LinkEthernet
		if raw {
			link = nic.LinkIP
		}
		fr := frame(data)
		var pk packet
		pk.frame = &fr
		parse(&pk, link)
		// The fast path must agree with the general parser.
		slowFr := frame(data)
		var slow packet
		slow.frame = &slowFr
		slow.b = slowFr.Data()
		slow.l4, slow.frag, slow.fragHdr, slow.tcpFlags, slow.sport, slow.dport = 0, fragNone, 0, 0, 0, 0
		parseSlow(&slow, link)
		slow.frame, pk.frame = nil, nil
		if slow.kind != pk.kind || slow.drop != pk.drop || slow.pass != pk.pass ||
			(pk.kind == kindFlow && (slow.k4 != pk.k4 || slow.k6 != pk.k6 || slow.l4 != pk.l4 || slow.end != pk.end || slow.tcpFlags != pk.tcpFlags || slow.frag != pk.frag || slowFr.Len != fr.Len)) {
			t.Fatalf("fast and general parsers disagree:\nfast %+v\nslow %+v", pk, slow)
		}
		switch pk.kind {
		case kindDrop:
			if pk.drop == dropNone || pk.drop >= numDrops {
				t.Fatalf("drop without a reason: %d", pk.drop)
			}
		case kindPass:
			if pk.pass == passNone || pk.pass >= numPasses {
				t.Fatalf("pass without a reason: %d", pk.pass)
			}
		default:
			if pk.end != len(pk.b) || pk.end > len(data) || pk.l3 >= pk.end || pk.l4 > pk.end {
				t.Fatalf("offsets out of the frame: l3 %d l4 %d end %d len %d", pk.l3, pk.l4, pk.end, len(data))
			}
		}
	})
}

const fuzzConfig = `
unit: {address4: 198.51.100.254, address6: "2001:db8:5::fe", mac: "02:00:00:00:00:01"}
forwarder:
  flows: {max: 64}
  fragments: {datagrams: 8, pending: 4}
l2: {gateway_mac: "02:00:00:00:00:fe"}
vips:
  - {name: nat, address: 192.0.2.10, port: 80, protocol: tcp, mode: nat, snat: [198.51.100.1], snat_ports: 1024-1040,
     backends: [{address: 10.1.0.1}, {address: 10.1.0.2}]}
  - {name: half, address: 192.0.2.20, port: 53, protocol: udp, mode: halfnat, backends: [{address: 10.1.0.1}]}
  - {name: tun, address: 192.0.2.30, port: 80, protocol: tcp, mode: tunnel, backends: [{address: 10.1.0.3}]}
  - {name: dsr, address: 192.0.2.40, port: 80, protocol: tcp, mode: ipip, mtu: 600, backends: [{address: 10.1.0.1}]}
  - {name: nat6, address: "2001:db8::10", port: 53, protocol: udp, mode: nat, snat: ["2001:db8:5::1"], backends: [{address: "fd00::1"}]}
  - {name: half6, address: "2001:db8::20", port: 80, protocol: tcp, mode: halfnat, backends: [{address: "fd00::1"}]}
  - {name: tun6, address: "2001:db8::30", port: 80, protocol: tcp, mode: tunnel, backends: [{address: "fd00::2"}]}
  - {name: dsr6, address: "2001:db8::40", port: 443, protocol: udp, mode: ipip, backends: [{address: "fd00::3"}]}
  - {name: golden-web, address: 192.0.2.10, port: 8080, protocol: tcp, mode: halfnat, backends: [{address: 10.1.0.1}]}
`

// FuzzPipeline feeds frames one at a time to a pipeline with a VIP of
// every mode and family, so that later frames meet the flows, fragments
// and held state earlier ones created. No input may panic; every frame is
// accounted for; every forwarded frame parses again; and a frame whose
// checksums were all correct leaves with correct checksums.
func FuzzPipeline(f *testing.F) {
	var seeds [][]byte
	seedFrames(f, func(b []byte, raw bool) {
		if !raw {
			seeds = append(seeds, b)
		}
	})
	// Each input is a few frames, each prefixed with a 2-byte length.
	for i := 0; i+3 <= len(seeds); i += 3 {
		var in []byte
		for _, s := range seeds[i : i+3] {
			in = binary.BigEndian.AppendUint16(in, uint16(len(s)))
			in = append(in, s...)
		}
		f.Add(in, uint16(0))
	}
	// Configuration and snapshot are immutable: build them once, not per
	// input, and give each input a fresh pipeline.
	cfg := loadFuzzConfig(f)
	snap, err := Build(cfg, nil)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, in []byte, clock uint16) {
		pc := ConfigFrom(cfg, 0, nic.LinkEthernet, 1)
		p, err := New(pc, snap)
		if err != nil {
			t.Fatal(err)
		}
		// Buffers for packets sent in fragments, as a port lends them.
		p.UseAllocator(ring.New("lender", nic.LinkEthernet, 64, nic.Headroom+1024))
		r := &rig{t: t, p: p, out: NewOutput(&pc)}
		// The same frames through the general path alone must come
		// out the same (see TestEstablishedPathIsTheGeneralOne).
		gc := pc
		gc.GeneralOnly = true
		gp, err := New(gc, snap)
		if err != nil {
			t.Fatal(err)
		}
		gp.UseAllocator(ring.New("lender", nic.LinkEthernet, 64, nic.Headroom+1024))
		g := &rig{t: t, p: gp, out: NewOutput(&gc)}
		var frames [][]byte
		for len(in) >= 2 && len(frames) < 16 {
			n := int(binary.BigEndian.Uint16(in))
			in = in[2:]
			n = min(n, len(in))
			frames = append(frames, in[:n])
			in = in[n:]
		}
		for i, fr := range frames {
			inOK := (&pkttest.Checker{}).Check(fr) == nil
			r.now += Tick(clock)
			g.now = r.now
			tx, pass, drop := r.send(fr)
			gtx, gpass, gdrop := g.send(fr)
			if !reflect.DeepEqual([][][]byte{tx, pass, drop}, [][][]byte{gtx, gpass, gdrop}) {
				t.Fatalf("frame %d: sent, passed, dropped\n%x\n%x\n%x\nthe general path\n%x\n%x\n%x", i, tx, pass, drop, gtx, gpass, gdrop)
			}
			if got := len(tx) + len(pass) + len(drop); got < 1 && r.p.HeldFragments() == 0 {
				t.Fatalf("frame %d vanished: not forwarded, passed, dropped or held", i)
			}
			ck := &pkttest.Checker{} // one for all: a packet may leave in fragments
			for _, o := range tx {
				ofr := frame(o)
				var pk packet
				pk.frame = &ofr
				parse(&pk, nic.LinkEthernet)
				if pk.kind == kindDrop {
					t.Fatalf("frame %d left malformed (%s):\n% x", i, pk.drop, o)
				}
				if inOK {
					if err := ck.Check(o); err != nil {
						t.Fatalf("frame %d had correct checksums and left with %v:\nin  % x\nout % x", i, err, fr, o)
					}
				}
			}
		}
		s := r.p.Stats()
		if gs := g.p.Stats(); !reflect.DeepEqual(s, gs) {
			t.Fatalf("counters differ from the general path's:\n%+v\n%+v", s, gs)
		}
		if s.RxPackets != s.Forwarded()+s.Passed()+s.Dropped()+uint64(r.p.HeldFragments()) {
			t.Fatalf("rx %d != forwarded %d + passed %d + dropped %d + held %d", s.RxPackets, s.Forwarded(), s.Passed(), s.Dropped(), r.p.HeldFragments())
		}
	})
}

// FuzzOffload: a frame with any offload metadata (as a virtio-net header
// could say, or a guess) is forwarded, passed, dropped or held, never
// lost or a panic; and one that leaves with a partial checksum leaves it
// where the device can finish it.
func FuzzOffload(f *testing.F) {
	seedFrames(f, func(b []byte, raw bool) {
		if !raw {
			f.Add(b, uint16(header.EthernetSize+20), uint16(16), uint16(0), true, false)
		}
	})
	cfg := loadFuzzConfig(f)
	snap, err := Build(cfg, nil)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte, start, off, gso uint16, partial, guess bool) {
		pc := ConfigFrom(cfg, 0, nic.LinkEthernet, 1)
		pc.GuessPartial = guess
		p, err := New(pc, snap)
		if err != nil {
			t.Fatal(err)
		}
		out := NewOutput(&pc)
		fr := frame(data)
		fr.Offload = nic.Offload{Partial: partial, CsumStart: start, CsumOffset: off, GSOSize: gso, GSO: nic.GSOTCPv4}
		p.Process(0, []nic.Frame{fr}, out)
		if n := len(out.TX) + len(out.Pass) + len(out.Drop) + p.HeldFragments(); n != 1 {
			t.Fatalf("%d outcomes for one frame", n)
		}
		for i := range out.TX {
			o := out.TX[i].Offload
			if o.Partial && int(o.CsumStart)+int(o.CsumOffset)+2 > out.TX[i].Len {
				t.Fatalf("left with a partial checksum outside the frame: %+v, %d bytes", o, out.TX[i].Len)
			}
		}
	})
}
