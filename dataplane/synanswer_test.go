package dataplane

import (
	"bytes"
	"net/netip"
	"testing"
	"time"

	"github.com/tetherlb/tether/dataplane/channel"
	"github.com/tetherlb/tether/dataplane/header"
	"github.com/tetherlb/tether/dataplane/syncookie"
	"github.com/tetherlb/tether/internal/pkttest"
	"github.com/tetherlb/tether/nic"
)

// synClock is the tests' host clock: in the middle of an epoch.
var synClock = time.Unix(1_800_000_000, 0).Add(10 * time.Second)

const synEvery = 64 * time.Second

// testSYNKey is what a control process would send for the rig's IPv4
// l7 VIP.
func testSYNKey(r *rig) channel.SYNKey { return testSYNKeyOf(r, l7Families[0]) }

// testSYNKeyOf is what a control process would send for the rig's l7
// VIP of fam.
func testSYNKeyOf(r *rig, fam l7Family) channel.SYNKey {
	e := syncookie.Epoch(synClock, synEvery)
	id := r.p.snap.VIPs[0].ID
	if fam.v.Addr.Is6() {
		id = r.p.snap.VIPs[1].ID
	}
	return channel.SYNKey{VIP: id, Addr: fam.v.Addr, Port: 84, Every: uint64(synEvery), Epoch: e,
		Cur: [16]byte{1, 2, 3}, Next: [16]byte{4, 5, 6}, HasNext: true, TSOffset: 0x01020304, MSS: 1400, WScale: 7, Window: 16384}
}

func installSYNKeys(t testing.TB, r *rig, ks ...channel.SYNKey) {
	t.Helper()
	k, err := NewSYNKeys(ks)
	if err != nil {
		t.Fatal(err)
	}
	r.p.SetSYNKeys(k)
	r.p.syn.clock = func() time.Time { return synClock }
}

// TestWorkerAnswersSYN: with the VIP's key, the worker answers its SYN
// in place with the SYN-ACK package syncookie makes (the acceptor's,
// byte for byte), whose cookie validates when the client's ACK comes,
// carrying the SYN's options; nothing goes to the acceptor and nothing
// is kept. Without a key, the SYN goes to the acceptor as before.
func TestWorkerAnswersSYN(t *testing.T) { forFamilies(t, testWorkerAnswersSYN) }

func testWorkerAnswersSYN(t *testing.T, fam l7Family) {
	r := l7Rig(t, false)
	c, v := fam.c, fam.v
	in := syn(c, v) // MSS 1460, SACK, timestamps (TSval 0), window scale 7
	if _, _, _ = r.send(in); r.p.HeldPunts() != 1 || r.p.stats.AcceptorSYNs != 0 {
		t.Fatal("without a key the SYN did not go to the acceptor")
	}
	take(r)
	sk := testSYNKeyOf(r, fam)
	installSYNKeys(t, r, sk)
	tx, _, drop := r.send(in)
	if len(tx) != 1 || len(drop) != 0 || r.p.HeldPunts() != 1 {
		t.Fatalf("tx %d drop %d held %d: want the SYN answered at once", len(tx), len(drop), r.p.HeldPunts())
	}
	if _, punts := take(r); len(punts) != 0 {
		t.Fatalf("%d punts for a SYN the worker answered", len(punts))
	}
	if n4, n6 := r.p.flows.Len(); n4+n6 != 0 || r.p.stats.AcceptorSYNs != 1 || r.p.stats.ToAcceptor != 1 {
		t.Fatalf("flows %d, syn answers %d, to acceptor %d", n4+n6, r.p.stats.AcceptorSYNs, r.p.stats.ToAcceptor)
	}
	out := tx[0]
	if !bytes.Equal(out[:6], in[6:12]) || !bytes.Equal(out[6:12], in[:6]) {
		t.Fatal("the SYN-ACK does not go back to the client's MAC from the unit's")
	}
	// The very bytes the acceptor makes with the same keys.
	key, err := syncookie.NewKey(sk.Epoch, sk.Cur)
	if err != nil {
		t.Fatal(err)
	}
	tu := syncookie.Tuple{Client: c.Addr, VIP: v.Addr, ClientPort: c.Port, VIPPort: v.Port}
	var m syncookie.MAC
	want := m.SYNACK(nil, &key, syncookie.TSNow(synClock, sk.TSOffset), &syncookie.Params{MSS: 1400, WScale: 7, Window: 16384}, &tu,
		&syncookie.SYN{Seq: 1, MSS: 1460, TS: true, TSV: 0, WS: true, WSh: 7, SACK: true})
	ip := pkttest.IP(out, false)
	if !bytes.Equal(ip, want) {
		t.Fatalf("worker's SYN-ACK\n%x\nwant\n%x", ip, want)
	}
	// The client's ACK: the cookie validates (as the acceptor checks
	// it) and gives back the SYN's MSS class; the TSval's low bits give
	// back its window scale and SACK.
	tcp := header.TCP(ip[fam.l4:])
	idx, ok := m.Check(&key, &syncookie.Key{}, &tu, 1, tcp.Seq())
	if !ok || syncookie.MSSClasses[idx] != 1460 || tcp.Ack() != 2 {
		t.Fatalf("the cookie: class %d, valid %v", idx, ok)
	}
	o, ok := header.ParseTCPOptions(tcp)
	if !ok || o.MSS != 1400 || !o.HasWS || o.WindowScale != 7 || !o.SACKPermitted || !o.HasTimestamps ||
		o.TSVal&syncookie.TSOptMask != 7|syncookie.TSSACK || o.TSEcr != 0 {
		t.Fatalf("SYN-ACK options %+v", o)
	}
	// The next epoch answers with the next key; past it, with none.
	r.p.syn.clock = func() time.Time { return synClock.Add(synEvery) }
	tx, _, _ = r.send(in)
	next, _ := syncookie.NewKey(sk.Epoch+1, sk.Next)
	if len(tx) != 1 {
		t.Fatal("not answered in the next epoch")
	}
	if _, ok := m.Check(&next, &key, &tu, 1, header.TCP(pkttest.IP(tx[0], false)[fam.l4:]).Seq()); !ok {
		t.Fatal("the next epoch's SYN-ACK is not under the next key")
	}
	r.p.syn.clock = func() time.Time { return synClock.Add(2 * synEvery) }
	if tx, _, _ := r.send(in); len(tx) != 0 || r.p.HeldPunts() != 2 {
		t.Fatal("keys two epochs old answered a SYN")
	}
	take(r)
	// What the worker leaves to the acceptor: another VIP's address for
	// the ID, a source no reply may go to, and anything but a pure SYN.
	other := sk
	other.Addr = v.Addr.Next()
	installSYNKeys(t, r, other)
	r.send(in)
	installSYNKeys(t, r, sk)
	// A SYN without options is answered too, for the default MSS.
	tx, _, _ = r.send(ack(c, v), pkttest.TCP(c, v, pkttest.SYN, 1, 0, pkttest.Opts{}))
	if s := r.p.stats; len(tx) != 1 || s.AcceptorSYNs != 3 || s.ToAcceptor != 4 {
		t.Fatalf("tx %d, syn answers %d, to acceptor %d", len(tx), s.AcceptorSYNs, s.ToAcceptor)
	}
	bare := header.TCP(pkttest.IP(tx[0], false)[fam.l4:])
	if idx, ok := m.Check(&key, &syncookie.Key{}, &tu, 1, bare.Seq()); !ok || syncookie.MSSClasses[idx] != syncookie.DefaultMSS || bare.DataOffset() != 24 {
		t.Fatalf("the optionless SYN's SYN-ACK: class %d valid %v, header %d bytes", idx, ok, bare.DataOffset())
	}
	// The control process leaving takes its keys.
	r.p.SetControlConnected(false)
	r.p.SetControlConnected(true)
	if r.p.syn.keys != nil {
		t.Fatal("keys outlived the control process")
	}
}

// TestWorkerSYNAnswerAllocs: answering a SYN allocates nothing.
func TestWorkerSYNAnswerAllocs(t *testing.T) { forFamilies(t, testWorkerSYNAnswerAllocs) }

func testWorkerSYNAnswerAllocs(t *testing.T, fam l7Family) {
	r := l7Rig(t, false)
	installSYNKeys(t, r, testSYNKeyOf(r, fam))
	n := allocsPerFrame(r, syn(fam.c, fam.v))
	if n != 0 || r.p.stats.AcceptorSYNs == 0 || len(r.out.TX) != 1 {
		t.Fatalf("%v allocations per SYN answered (%d answered)", n, r.p.stats.AcceptorSYNs)
	}
}

// allocsPerFrame is the allocations of the pipeline's Process for the
// frame in, the same frame each time.
func allocsPerFrame(r *rig, in []byte) float64 {
	fr := []nic.Frame{frame(in)}
	buf := append([]byte(nil), fr[0].Buf...)
	return testing.AllocsPerRun(200, func() {
		copy(fr[0].Buf, buf)
		fr[0].Len, fr[0].Offload = len(in), nic.Offload{}
		r.out.Reset()
		r.p.Process(r.now, fr, r.out)
	})
}

// BenchmarkL7SYN is a worker's cost for one l7 VIP's SYN: answered in
// place with the VIP's key, or (punted) copied out for the acceptor and
// held, its hold let go at once.
func BenchmarkL7SYN(b *testing.B) {
	for _, fam := range l7Families {
		for _, answered := range []bool{true, false} {
			name := fam.name + "/punted"
			if answered {
				name = fam.name + "/answered"
			}
			b.Run(name, func(b *testing.B) {
				r := l7Rig(b, false)
				if answered {
					installSYNKeys(b, r, testSYNKeyOf(r, fam))
				}
				in := syn(fam.c, fam.v)
				fr := []nic.Frame{frame(in)}
				buf := append([]byte(nil), fr[0].Buf...)
				b.ReportAllocs()
				for b.Loop() {
					copy(fr[0].Buf, buf)
					fr[0].Len, fr[0].Offload = len(in), nic.Offload{}
					r.out.Reset()
					r.p.Process(r.now, fr, r.out)
					if !answered {
						r.p.TakeOutbox(func([]channel.FlowEvent, []channel.Punt, uint64) {})
						r.p.Answer(r.p.acceptID, nil)
						r.p.flushAnswers(r.out)
					}
				}
			})
		}
	}
}

// FuzzL7SYN: whatever options a SYN to an l7 VIP carries, the worker
// answers it with a well-formed SYN-ACK whose cookie validates and
// whose TSval carries the options it credited, or leaves it to the
// acceptor; it never panics.
func FuzzL7SYN(f *testing.F) {
	f.Add([]byte{2, 4, 5, 0xb4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7}, uint32(1))
	f.Add([]byte{}, uint32(0xffffffff))
	f.Add([]byte{1, 1, 3, 3, 14}, uint32(5))
	f.Add([]byte{2, 4, 0, 1, 8, 10}, uint32(5))
	f.Fuzz(func(t *testing.T, opts []byte, seq uint32) {
		if len(opts) > 40 {
			opts = opts[:40]
		}
		optLen := (len(opts) + 3) &^ 3
		tcpLen := header.TCPMinSize + optLen
		pkt := make([]byte, header.EthernetSize+header.IPv4MinSize+tcpLen)
		copy(pkt, pkttest.MustMAC(unitMAC))
		copy(pkt[6:], pkttest.MustMAC(gwMAC))
		pkt[12], pkt[13] = 0x08, 0x00
		ip := pkt[header.EthernetSize:]
		src, dst := [4]byte{203, 0, 113, 1}, [4]byte{192, 0, 2, 1}
		header.EncodeIPv4(ip, &header.IPv4Fields{TotalLength: uint16(header.IPv4MinSize + tcpLen), TTL: 64, Protocol: header.IPProtoTCP, Src: src, Dst: dst})
		tc := ip[header.IPv4MinSize:]
		tc[0], tc[1], tc[2], tc[3] = 0x13, 0x88, 0, 84 // 5000 → 84
		tc[4], tc[5], tc[6], tc[7] = byte(seq>>24), byte(seq>>16), byte(seq>>8), byte(seq)
		tc[12], tc[13], tc[14], tc[15] = byte(tcpLen/4)<<4, synFlag, 0xff, 0xff
		copy(tc[header.TCPMinSize:], opts)
		header.TCP(tc).SetChecksum(header.Checksum(tc, header.PseudoHeaderSum(header.IPProtoTCP, src[:], dst[:], uint32(tcpLen))))
		r := l7Rig(t, false)
		sk := testSYNKey(r)
		installSYNKeys(t, r, sk)
		tx, _, _ := r.send(pkt)
		in, inOK := header.ParseTCPOptions(header.TCP(tc))
		if len(tx) == 0 {
			if inOK {
				t.Fatalf("a SYN with well-formed options %x was not answered", opts)
			}
			return
		}
		if !inOK {
			t.Fatalf("a SYN with malformed options %x was answered", opts)
		}
		out := pkttest.IP(tx[0], false)
		o := header.IPv4(out)
		st := header.TCP(out[header.IPv4MinSize:])
		if header.Checksum(out[:header.IPv4MinSize], 0) != 0 || int(o.TotalLength()) != len(out) ||
			header.Checksum(st, header.PseudoHeaderSum(header.IPProtoTCP, o.Src(), o.Dst(), uint32(len(st)))) != 0 {
			t.Fatalf("a broken SYN-ACK %x", out)
		}
		got, ok := header.ParseTCPOptions(st)
		if !ok || st.Flags() != synFlag|ackFlag || st.Ack() != seq+1 || got.MSS != sk.MSS || got.HasTimestamps != in.HasTimestamps {
			t.Fatalf("SYN-ACK %x: options %+v for a SYN's %+v", out, got, in)
		}
		key, _ := syncookie.NewKey(sk.Epoch, sk.Cur)
		tu := syncookie.Tuple{Client: netip.AddrFrom4(src), VIP: netip.AddrFrom4(dst), ClientPort: 5000, VIPPort: 84}
		var m syncookie.MAC
		idx, ok := m.Check(&key, &syncookie.Key{}, &tu, seq, st.Seq())
		wantMSS := uint16(syncookie.DefaultMSS)
		if in.MSSOff != 0 {
			wantMSS = in.MSS
		}
		if !ok || idx != syncookie.MSSIndex(wantMSS) {
			t.Fatalf("cookie class %d valid %v; want class of %d", idx, ok, wantMSS)
		}
		if in.HasTimestamps {
			ws := got.TSVal & syncookie.TSNoWS
			if in.HasWS != (ws != syncookie.TSNoWS) || in.HasWS && ws != uint32(min(in.WindowScale, 14)) || in.SACKPermitted != (got.TSVal&syncookie.TSSACK != 0) {
				t.Fatalf("TSval %#x for a SYN's %+v", got.TSVal, in)
			}
		}
	})
}

// TestWorkerTakesHandshakeACK: the client's ACK that completes a
// handshake, without data, under a cookie of the worker's keys, is taken
// by the worker: no punt, no drop counted, nothing kept. The client's
// first data segment, with the same numbers, goes to the acceptor, which
// makes the connection of it. Everything the acceptor should judge still
// goes there: another cookie, a TSecr ahead of the clock, keys of
// another time, and no keys at all.
func TestWorkerTakesHandshakeACK(t *testing.T) { forFamilies(t, testWorkerTakesHandshakeACK) }

func testWorkerTakesHandshakeACK(t *testing.T, fam l7Family) {
	r := l7Rig(t, false)
	c, v := fam.c, fam.v
	sk := testSYNKeyOf(r, fam)
	installSYNKeys(t, r, sk)
	tx, _, _ := r.send(syn(c, v))
	if len(tx) != 1 {
		t.Fatal("the SYN was not answered")
	}
	synack := header.TCP(pkttest.IP(tx[0], false)[fam.l4:])
	o, _ := header.ParseTCPOptions(synack)
	cookie, tsval := synack.Seq(), o.TSVal
	hsACK := func(seq, ack, tsecr uint32) []byte {
		return pkttest.TCP(c, v, pkttest.ACK, seq, ack, pkttest.Opts{Timestamps: true, TSVal: 5, TSEcr: tsecr})
	}
	punted := func(what string, in []byte) {
		t.Helper()
		before := r.p.stats
		r.send(in)
		if _, punts := take(r); len(punts) != 1 || r.p.stats.ToAcceptor != before.ToAcceptor+1 || r.p.stats.AcceptorACKs != before.AcceptorACKs {
			t.Fatalf("%s: %d punts; want it handed to the acceptor", what, len(punts))
		}
		r.p.Answer(r.p.held[0].accept, nil) // the acceptor's silence
		r.send()                            // lets the held frame go
	}

	tx, _, drop := r.send(hsACK(2, cookie+1, tsval))
	if _, punts := take(r); len(tx) != 0 || len(drop) != 1 || len(punts) != 0 || r.p.HeldPunts() != 0 {
		t.Fatalf("the handshake's ACK: tx %d drop %d punts %d held %d; want it taken", len(tx), len(drop), len(punts), r.p.HeldPunts())
	}
	if s := r.p.stats; s.AcceptorACKs != 1 || s.ToAcceptor != 0 || s.Dropped() != 0 {
		t.Fatalf("taken %d, to acceptor %d, dropped %d", s.AcceptorACKs, s.ToAcceptor, s.Dropped())
	}
	if n4, n6 := r.p.flows.Len(); n4+n6 != 0 {
		t.Fatal("a flow for a handshake's ACK")
	}
	punted("the first data segment", pkttest.TCP(c, v, pkttest.ACK|pkttest.PSH, 2, cookie+1, pkttest.Opts{Payload: []byte("GET / HTTP/1.1\r\n\r\n")}))
	punted("another cookie", hsACK(2, cookie+2, tsval))
	punted("another ISN", hsACK(3, cookie+1, tsval))
	punted("a TSecr ahead of the clock", hsACK(2, cookie+1, syncookie.TSNow(synClock, sk.TSOffset)+1000))
	punted("a FIN", pkttest.TCP(c, v, pkttest.ACK|pkttest.FIN, 2, cookie+1, pkttest.Opts{}))

	// In the next epoch the cookie is the previous epoch's, which the
	// acceptor still takes; two epochs on, it does not.
	r.p.syn.clock = func() time.Time { return synClock.Add(synEvery) }
	if _, _, drop := r.send(hsACK(2, cookie+1, tsval)); len(drop) != 1 || r.p.stats.AcceptorACKs != 2 {
		t.Fatalf("the previous epoch's cookie was not taken: drop %d, taken %d", len(drop), r.p.stats.AcceptorACKs)
	}
	r.p.syn.clock = func() time.Time { return synClock.Add(2 * synEvery) }
	punted("keys two epochs old", hsACK(2, cookie+1, tsval))
	// A worker whose keys begin in the cookie's next epoch does not hold
	// the cookie's key.
	later := sk
	later.Epoch++
	installSYNKeys(t, r, later)
	r.p.syn.clock = func() time.Time { return synClock.Add(synEvery) }
	punted("a cookie of a key the worker does not hold", hsACK(2, cookie+1, tsval))
	r.p.SetSYNKeys(nil)
	punted("no keys", hsACK(2, cookie+1, tsval))
}

// TestWorkerHandshakeACKAllocs: taking a handshake's ACK allocates
// nothing.
func TestWorkerHandshakeACKAllocs(t *testing.T) {
	r := l7Rig(t, false)
	c, v := cl(1, 5000), vip(84)
	installSYNKeys(t, r, testSYNKey(r))
	tx, _, _ := r.send(syn(c, v))
	cookie := header.TCP(pkttest.IP(tx[0], false)[header.IPv4MinSize:]).Seq()
	n := allocsPerFrame(r, pkttest.TCP(c, v, pkttest.ACK, 2, cookie+1, pkttest.Opts{}))
	if n != 0 || r.p.stats.AcceptorACKs == 0 || len(r.out.Drop) != 1 {
		t.Fatalf("%v allocations per handshake ACK taken (%d taken)", n, r.p.stats.AcceptorACKs)
	}
}

// FuzzL7HandshakeACK: whatever flags, numbers, timestamps and payload a
// segment after a worker's SYN-ACK carries, the worker takes it only
// when it is the handshake's ACK the acceptor would take without
// answering (ACK alone, no data, the cookie's numbers, a TSecr not ahead
// of the clock), and hands everything else on; it never panics.
func FuzzL7HandshakeACK(f *testing.F) {
	f.Add(uint8(1), uint32(0), uint32(0), false, uint32(0), uint8(0))
	f.Add(uint8(1), uint32(0), uint32(0), true, uint32(0), uint8(0))
	f.Add(uint8(1|4), uint32(0), uint32(0), false, uint32(0), uint8(5))
	f.Add(uint8(1), uint32(1), uint32(0), true, uint32(1<<31), uint8(0))
	f.Add(uint8(1|8), uint32(0), uint32(7), false, uint32(0), uint8(0))
	f.Add(uint8(1|4), uint32(0), uint32(0), false, uint32(0), uint8(0))
	f.Fuzz(func(t *testing.T, flags uint8, seqDelta, ackDelta uint32, ts bool, tsecrDelta uint32, payload uint8) {
		r := l7Rig(t, false)
		sk := testSYNKey(r)
		installSYNKeys(t, r, sk)
		c, v := cl(1, 5000), vip(84)
		tx, _, _ := r.send(syn(c, v))
		if len(tx) != 1 {
			t.Fatal("the SYN was not answered")
		}
		synack := header.TCP(pkttest.IP(tx[0], false)[header.IPv4MinSize:])
		o, _ := header.ParseTCPOptions(synack)
		var fl int
		for bit, f := range []int{pkttest.ACK, pkttest.SYN, pkttest.PSH, pkttest.FIN, pkttest.RST} {
			if flags&(1<<bit) != 0 {
				fl |= f
			}
		}
		opts := pkttest.Opts{Timestamps: ts, TSVal: 9, TSEcr: o.TSVal + tsecrDelta}
		if payload > 0 {
			opts.Payload = make([]byte, payload)
		}
		in := pkttest.TCP(c, v, fl, 2+seqDelta, synack.Seq()+1+ackDelta, opts)
		tx, _, drop := r.send(in)
		_, punts := take(r)
		taken := r.p.stats.AcceptorACKs == 1
		want := fl&^pkttest.PSH == pkttest.ACK && payload == 0 && seqDelta == 0 && ackDelta == 0 &&
			(!ts || int32(syncookie.TSNow(synClock, sk.TSOffset)-opts.TSEcr) >= 0)
		if taken != want {
			t.Fatalf("flags %#x seq+%d ack+%d ts %v tsecr+%d payload %d: taken %v, want %v", fl, seqDelta, ackDelta, ts, tsecrDelta, payload, taken, want)
		}
		if taken && (len(tx) != 0 || len(drop) != 1 || len(punts) != 0 || r.p.stats.Dropped() != 0) {
			t.Fatalf("a taken ACK: tx %d drop %d punts %d dropped %d", len(tx), len(drop), len(punts), r.p.stats.Dropped())
		}
	})
}
