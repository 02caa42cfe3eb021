package dataplane

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/tetherlb/tether/config"
	"github.com/tetherlb/tether/internal/pkttest"
	"github.com/tetherlb/tether/nic"
	"github.com/tetherlb/tether/nic/ring"
)

// splitConfig has ipip VIPs whose paths are narrower than the clients':
// TCP and UDP over IPv4 with room for 1380-byte packets, and TCP over
// IPv6 with room for 1260, less than every IPv6 link's 1280.
const splitConfig = `
unit:
  address4: 198.51.100.254
  address6: "2001:db8:5::fe"
  mac: "02:00:00:00:00:01"
forwarder:
  flows: {max: 1024}
l2:
  gateway_mac: "02:00:00:00:00:fe"
vips:
  - {name: dsr, address: 192.0.2.1, port: 83, protocol: tcp, mode: ipip, mtu: 1400, backends: [{name: b1, address: 10.1.0.1}]}
  - {name: dsr-udp, address: 192.0.2.1, port: 53, protocol: udp, mode: ipip, mtu: 1400, backends: [{name: b1, address: 10.1.0.1}]}
  - {name: dsr6, address: "2001:db8::1", port: 80, protocol: tcp, mode: ipip, mtu: 1300, backends: [{name: c1, address: "fd00::1"}]}
  - {name: dsr-wide, address: 192.0.2.1, port: 54, protocol: udp, mode: ipip, mtu: 1500, backends: [{name: b1, address: 10.1.0.1}]}
  - {name: tun-udp, address: 192.0.2.1, port: 55, protocol: udp, mode: tunnel, backends: [{name: b1, address: 10.1.0.1}]}
  - {name: tun6-udp, address: "2001:db8::1", port: 55, protocol: udp, mode: tunnel, backends: [{name: c1, address: "fd00::1"}]}
`

// splitRig is a rig on splitConfig whose pipeline borrows buffers from
// a ring port of n buffers of size bytes.
func splitRig(t testing.TB, n, size int) (*rig, *ring.Port) {
	t.Helper()
	c, err := config.Parse([]byte(splitConfig))
	if err != nil {
		t.Fatal(err)
	}
	r := newRig(t, c)
	lender := ring.New("lender", nic.LinkEthernet, n, size)
	r.p.UseAllocator(lender)
	return r, lender
}

// outerIPs returns the IP packets of frames, checking each fits mtu and
// that every checksum is right.
func outerIPs(t *testing.T, frames [][]byte, mtu int) [][]byte {
	t.Helper()
	ck := &pkttest.Checker{}
	var ips [][]byte
	for i, f := range frames {
		if err := ck.Check(f); err != nil {
			t.Errorf("frame %d: %v", i, err)
		}
		ip := pkttest.IP(f, false)
		if len(ip) > mtu {
			t.Errorf("frame %d: a %d-byte packet on a path of MTU %d", i, len(ip), mtu)
		}
		ips = append(ips, ip)
	}
	return ips
}

// inners checks that each of ips is a whole IP-in-IP packet from the
// unit to dst and returns the packets they carry.
func inners(t *testing.T, ips [][]byte, dst string) [][]byte {
	t.Helper()
	var in [][]byte
	for i, ip := range ips {
		if ip[9] != 4 || binary.BigEndian.Uint16(ip[6:])&0x3fff != 0 ||
			netip.AddrFrom4([4]byte(ip[12:16])) != netip.MustParseAddr("198.51.100.254") || netip.AddrFrom4([4]byte(ip[16:20])) != netip.MustParseAddr(dst) {
			t.Errorf("packet %d is not a whole IP-in-IP packet from the unit to %s:\n% x", i, dst, ip[:20])
		}
		in = append(in, ip[20:])
	}
	return in
}

// sameBut compares two IP packets but for the TTL (hop limit) and the
// IPv4 header checksum, which a router hop changes.
func sameBut(a, b []byte) bool {
	if len(a) != len(b) || len(a) < 20 {
		return false
	}
	a, b = bytes.Clone(a), bytes.Clone(b)
	for _, p := range [][]byte{a, b} {
		if p[0]>>4 == 4 {
			p[8], p[10], p[11] = 0, 0, 0
		} else if len(p) >= 40 {
			p[7] = 0
		}
	}
	return bytes.Equal(a, b)
}

// TestIPIPSplitsWhatMayBeFragmented: a packet too big for an ipip
// tunnel that may be fragmented on the way leaves in fragments, each
// fitting the tunnel's MTU: IPv4 without DF (every fragment of a
// datagram the client fragmented itself too) as inner fragments, each in
// a whole outer packet, which reassemble to the client's packet once
// unwrapped; IPv6 of 1280 bytes or less as fragments of the outer
// packet (RFC 2473 §7.1), which reassemble to the outer packet around
// the client's; an IPv6 packet above 1280 bytes is still answered.
func TestIPIPSplitsWhatMayBeFragmented(t *testing.T) {
	r, _ := splitRig(t, 64, nic.Headroom+2048)

	t.Run("IPv4 without DF", func(t *testing.T) {
		c, v := cl(50, 1), vip(83)
		r.send(syn(c, v))
		seg := pkttest.TCP(c, v, pkttest.ACK, 2, 2, pkttest.Opts{Payload: make([]byte, 1400)})
		before := r.p.Stats()
		tx, _, drop := r.send(seg)
		if len(tx) != 2 || len(drop) != 0 {
			t.Fatalf("%d frames sent, %d dropped; want the packet in 2 fragments", len(tx), len(drop))
		}
		got, err := pkttest.Reassemble(inners(t, outerIPs(t, tx, 1400), "10.1.0.1"))
		if err != nil {
			t.Fatal(err)
		}
		if !sameBut(got, pkttest.IP(seg, false)) {
			t.Errorf("the fragments the tunnel carried do not reassemble to the client's packet")
		}
		after := r.p.Stats()
		if n := after.TooBigFragmented - before.TooBigFragmented; n != 1 || after.TxPackets-before.TxPackets != 2 {
			t.Errorf("counted %d packets sent in fragments and %d frames sent, want 1 and 2", n, after.TxPackets-before.TxPackets)
		}
	})

	t.Run("a datagram the client fragmented", func(t *testing.T) {
		c := cl(51, 5353)
		dg := pkttest.UDP(c, vip(53), pkttest.Opts{Payload: bytes.Repeat([]byte("d"), 4000)})
		frags := pkttest.FragmentIPv4(dg, 1480, false) // what a 1500-byte link carries
		tx, _, drop := r.send(frags...)
		if len(drop) != 0 {
			t.Fatalf("%d frames dropped", len(drop))
		}
		// Each full-size fragment cut in two, the last whole.
		if len(tx) != 5 {
			t.Fatalf("%d frames sent, want 5", len(tx))
		}
		got, err := pkttest.Reassemble(inners(t, outerIPs(t, tx, 1400), "10.1.0.1"))
		if err != nil {
			t.Fatal(err)
		}
		if !sameBut(got, pkttest.IP(dg, false)) {
			t.Errorf("the client's fragments, reassembled after the tunnel, are not its datagram")
		}
	})

	t.Run("inner options", func(t *testing.T) {
		// Router alert (copied into every fragment) and record route
		// (the first fragment's only): the later fragment carries the
		// first and no-operations in place of the second.
		opts := []byte{0x94, 4, 0, 0, 7, 7, 4, 0, 0, 0, 0, 1}
		dg := pkttest.WithIPv4Options(pkttest.UDP(cl(53, 5353), vip(53), pkttest.Opts{Payload: make([]byte, 1400)}), opts)
		tx, _, drop := r.send(dg)
		if len(tx) != 2 || len(drop) != 0 {
			t.Fatalf("%d frames sent, %d dropped; want 2 fragments", len(tx), len(drop))
		}
		in := inners(t, outerIPs(t, tx, 1400), "10.1.0.1")
		if got := in[0][20:32]; !bytes.Equal(got, opts) {
			t.Errorf("the first fragment's options are % x, want % x", got, opts)
		}
		if got, want := in[1][20:32], []byte{0x94, 4, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1}; !bytes.Equal(got, want) {
			t.Errorf("the later fragment's options are % x, want % x", got, want)
		}
		got, err := pkttest.Reassemble(in)
		if err != nil {
			t.Fatal(err)
		}
		if !sameBut(got[32:], pkttest.IP(dg, false)[32:]) {
			t.Errorf("the fragments do not reassemble to the client's datagram")
		}
	})

	t.Run("IPv6 of 1280 bytes", func(t *testing.T) {
		c, v := cl6("2001:db8:9::50", 1), vip6(80)
		r.send(syn(c, v))
		seg := pkttest.TCP(c, v, pkttest.ACK, 2, 2, pkttest.Opts{Payload: make([]byte, 1280-60)})
		tx, _, _ := r.send(seg)
		if len(tx) != 2 {
			t.Fatalf("%d frames sent, want the packet in 2 fragments", len(tx))
		}
		whole, err := pkttest.Reassemble(outerIPs(t, tx, 1300))
		if err != nil {
			t.Fatal(err)
		}
		if whole[6] != 41 || !sameBut(whole[40:], pkttest.IP(seg, false)) {
			t.Errorf("the reassembled outer packet is not the client's in IPv6:\n% x", whole[:48])
		}
		// One byte more: the client can shrink it, so it is told to.
		answered := r.p.Stats().TooBigAnswered
		seg = pkttest.TCP(c, v, pkttest.ACK, 2, 2, pkttest.Opts{Payload: make([]byte, 1280-60+8)})
		tx, _, _ = r.send(seg)
		if len(tx) != 1 || r.p.Stats().TooBigAnswered != answered+1 {
			t.Fatalf("a 1288-byte IPv6 packet: %d frames sent, want the ICMPv6 answer", len(tx))
		}
		ans := pkttest.IP(tx[0], false)
		if ans[6] != 58 || ans[40] != 2 || binary.BigEndian.Uint32(ans[44:]) != 1280 {
			t.Errorf("the answer is not packet too big with MTU 1280:\n% x", ans[:48])
		}
	})

	t.Run("IPv4 with DF", func(t *testing.T) {
		c, v := cl(52, 1), vip(83)
		r.send(syn(c, v))
		tx, _, _ := r.send(pkttest.TCP(c, v, pkttest.ACK, 2, 2, pkttest.Opts{Payload: make([]byte, 1400), DF: true}))
		if len(tx) != 1 || pkttest.IP(tx[0], false)[9] != 1 {
			t.Errorf("a packet with DF: %d frames sent, want the ICMP answer alone", len(tx))
		}
	})
}

// TestTunnelSendsFragmentsIPIP: the fragments of a datagram to a tunnel
// VIP, which carry no ports for the flow ID (the later ones none at
// all), go to the flow's host IP-in-IP instead, which the host's program
// unwraps as it does ipip's; its kernel reassembles the client's
// datagram. Unfragmented packets still take the flow-ID tunnel.
func TestTunnelSendsFragmentsIPIP(t *testing.T) {
	r, _ := splitRig(t, 64, nic.Headroom+2048)
	c := cl(54, 5353)
	dg := pkttest.UDP(c, vip(55), pkttest.Opts{Payload: bytes.Repeat([]byte("t"), 3000)})
	tx, _, drop := r.send(pkttest.FragmentIPv4(dg, 1480, false)...)
	if len(tx) != 5 || len(drop) != 0 { // each full-size fragment cut in two for the outer header
		t.Fatalf("%d frames sent, %d dropped; want 5", len(tx), len(drop))
	}
	got, err := pkttest.Reassemble(inners(t, outerIPs(t, tx, 1500), "10.1.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	if !sameBut(got, pkttest.IP(dg, false)) {
		t.Errorf("the fragments the tunnel carried do not reassemble to the client's datagram")
	}
	tx, _, _ = r.send(pkttest.UDP(c, vip(55), pkttest.Opts{Payload: []byte("small")}))
	if len(tx) != 1 || pkttest.IP(tx[0], false)[9] != 17 {
		t.Errorf("an unfragmented datagram of the flow did not take the flow-ID tunnel")
	}
	// IPv4 options put the ports where the host's program does not look
	// for them: IP-in-IP too.
	opts := pkttest.WithIPv4Options(pkttest.UDP(c, vip(55), pkttest.Opts{Payload: []byte("options")}), []byte{0x94, 4, 0, 0})
	tx, _, _ = r.send(opts)
	if in := inners(t, outerIPs(t, tx, 1500), "10.1.0.1"); len(in) != 1 || !sameBut(in[0], pkttest.IP(opts, false)) {
		t.Errorf("a datagram with IPv4 options did not go IP-in-IP as it came")
	}

	// IPv6: the client's fragments, and a datagram behind an extension
	// header, go IPv6-in-IPv6 from the unit's address6; the rest takes
	// the flow-ID tunnel.
	c6 := cl6("2001:db8:9::60", 5353)
	dg6 := pkttest.UDP(c6, vip6(55), pkttest.Opts{Payload: bytes.Repeat([]byte("s"), 3000)})
	frags := pkttest.FragmentIPv6(dg6, 1280-48, 77)
	tx, _, drop = r.send(frags...)
	if len(tx) != len(frags) || len(drop) != 0 {
		t.Fatalf("IPv6: %d frames sent, %d dropped; want the %d fragments", len(tx), len(drop), len(frags))
	}
	var in6 [][]byte
	for i, ip := range outerIPs(t, tx, 1500) {
		if ip[6] != 41 || netip.AddrFrom16([16]byte(ip[8:24])) != netip.MustParseAddr("2001:db8:5::fe") ||
			netip.AddrFrom16([16]byte(ip[24:40])) != netip.MustParseAddr("fd00::1") {
			t.Fatalf("IPv6 fragment %d is not IPv6-in-IPv6 from the unit to its host:\n% x", i, ip[:40])
		}
		if !sameBut(ip[40:], pkttest.IP(frags[i], false)) {
			t.Errorf("IPv6 fragment %d did not go as the client sent it", i)
		}
		in6 = append(in6, ip[40:])
	}
	if got, err := pkttest.Reassemble(in6); err != nil || !sameBut(got, pkttest.IP(dg6, false)) {
		t.Errorf("the IPv6 fragments the tunnel carried do not reassemble to the client's datagram (%v)", err)
	}
	ext := pkttest.InsertIPv6Header(pkttest.UDP(c6, vip6(55), pkttest.Opts{Payload: []byte("dst opts")}), 60, []byte{17, 0, 1, 4, 0, 0, 0, 0})
	tx, _, _ = r.send(ext)
	if len(tx) != 1 || pkttest.IP(tx[0], false)[6] != 41 || !sameBut(pkttest.IP(tx[0], false)[40:], pkttest.IP(ext, false)) {
		t.Errorf("an IPv6 datagram behind a destination options header did not go IPv6-in-IPv6 as it came")
	}
	tx, _, _ = r.send(pkttest.UDP(c6, vip6(55), pkttest.Opts{Payload: []byte("small")}))
	if len(tx) != 1 || pkttest.IP(tx[0], false)[6] != 17 {
		t.Errorf("an unfragmented IPv6 datagram of the flow did not take the flow-ID tunnel")
	}
}

// TestTunnelSendsErrorsIPIP: an ICMP error about a host's direct reply
// to a tunnel flow's client (a router on the client's path says it was
// too big) goes to the host IP-in-IP, as the router sent it: the host's
// program takes nothing but flow-ID packets and IP-in-IP at a tunnel
// address, and the host's stack wants the error addressed to the VIP.
func TestTunnelSendsErrorsIPIP(t *testing.T) {
	r, _ := splitRig(t, 64, nic.Headroom+2048)
	for _, c := range []struct {
		name              string
		client, vip, rtr  pkttest.Endpoint
		unit, host        string
		typ, code, outerP uint8
	}{
		{"IPv4", cl(70, 5353), vip(55), ep4("203.0.113.254", 0), "198.51.100.254", "10.1.0.1", 3, 4, 4},
		{"IPv6", cl6("2001:db8:9::70", 5353), vip6(55), cl6("2001:db8:9::fe", 0), "2001:db8:5::fe", "fd00::1", 2, 0, 41},
	} {
		t.Run(c.name, func(t *testing.T) {
			if tx, _, _ := r.send(pkttest.UDP(c.client, c.vip, pkttest.Opts{Payload: []byte("q")})); len(tx) != 1 {
				t.Fatalf("the client's datagram: %d frames sent", len(tx))
			}
			reply := pkttest.UDP(c.vip, c.client, pkttest.Opts{Payload: make([]byte, 1400)})
			toVIP := c.vip
			toVIP.Port = 0
			// As much of the reply as a router quotes: an ICMPv6 error
			// fills at most 1280 bytes (RFC 4443 §2.4(c)).
			icmp := pkttest.ICMPError(c.rtr, toVIP, c.typ, c.code, 1280, pkttest.L3(reply), 1280-48, pkttest.Opts{})
			tx, _, drop := r.send(icmp)
			if len(tx) != 1 || len(drop) != 0 {
				t.Fatalf("%d frames sent, %d dropped; want the error sent", len(tx), len(drop))
			}
			ip := outerIPs(t, tx, 1500)[0]
			src, dst, proto, hl := ip[12:16], ip[16:20], ip[9], 20
			if c.outerP == 41 {
				src, dst, proto, hl = ip[8:24], ip[24:40], ip[6], 40
			}
			if s, d := netip.MustParseAddr(c.unit), netip.MustParseAddr(c.host); proto != c.outerP || !bytes.Equal(src, s.AsSlice()) || !bytes.Equal(dst, d.AsSlice()) {
				t.Fatalf("the error is not IP-in-IP from the unit to the host:\n% x", ip[:hl])
			}
			if !sameBut(ip[hl:], pkttest.IP(icmp, false)) {
				t.Errorf("the host gets the error changed:\n% x\nwant\n% x", ip[hl:], pkttest.IP(icmp, false))
			}

			// An error too big for the tunnel is never answered with
			// an error: dropped as too big.
			long := pkttest.UDP(c.vip, c.client, pkttest.Opts{Payload: make([]byte, 1480)})
			big := pkttest.ICMPError(c.rtr, toVIP, c.typ, c.code, 1280, pkttest.L3(long), 0, pkttest.Opts{DF: true})
			answered := r.p.Stats().TooBigAnswered
			tx, _, drop = r.send(big)
			if len(tx) != 0 || len(drop) != 1 || r.p.Stats().TooBigAnswered != answered {
				t.Errorf("an error too big for the tunnel: %d sent, %d dropped, %d answers; want it dropped unanswered",
					len(tx), len(drop), r.p.Stats().TooBigAnswered-answered)
			}
		})
	}
}

// TestIPIPSplitWithinBuffers: fragments are cut to what the port's
// buffers hold; a packet the port has too few free buffers for is
// dropped as no_buffer and the buffers it took go back, and the rest of
// its datagram if it is a fragment; and a batch
// makes at most maxSplitFrames extra frames, the rest dropped as
// no_buffer, so Output's lists never grow.
func TestIPIPSplitWithinBuffers(t *testing.T) {
	udp := func(i, size int) []byte {
		return pkttest.UDP(cl(60+i/200, uint16(1000+i)), vip(53), pkttest.Opts{Payload: make([]byte, size)})
	}

	t.Run("small buffers", func(t *testing.T) {
		const size = 800
		r, _ := splitRig(t, 64, size)
		dg := udp(0, 3000)
		tx, _, _ := r.send(dg)
		for i, f := range tx[1:] {
			if len(f) > size-nic.Headroom {
				t.Errorf("fragment %d: %d bytes, more than a %d-byte buffer holds", i+1, len(f), size-nic.Headroom)
			}
		}
		got, err := pkttest.Reassemble(inners(t, outerIPs(t, tx, 1400), "10.1.0.1"))
		if err != nil {
			t.Fatal(err)
		}
		if !sameBut(got, pkttest.IP(dg, false)) {
			t.Errorf("the fragments the tunnel carried do not reassemble to the client's datagram")
		}
		if n, b := backendCounts(r.p.Stats()); n != 1 || b != uint64(len(pkttest.IP(dg, false))) {
			t.Errorf("the backend counted %d packets of %d bytes, want the one datagram of %d", n, b, len(pkttest.IP(dg, false)))
		}
	})

	t.Run("too few free buffers", func(t *testing.T) {
		r, lender := splitRig(t, 1, nic.Headroom+2048)
		r.out.Reset()
		fr := []nic.Frame{frame(udp(1, 3000))} // three fragments: two borrowed buffers
		r.p.Process(r.now, fr, r.out)
		if len(r.out.TX) != 0 || len(r.out.Drop) != 2 || r.p.Stats().Drops[DropNoBuffer] != 1 {
			t.Fatalf("%d sent, %d given back, %d no_buffer; want nothing sent, the packet and the borrowed buffer given back, one no_buffer",
				len(r.out.TX), len(r.out.Drop), r.p.Stats().Drops[DropNoBuffer])
		}
		if n, _ := backendCounts(r.p.Stats()); n != 0 {
			t.Errorf("the backend counted %d packets, want none: nothing was sent", n)
		}
		lender.Release(r.out.Drop[1:])
		if lender.Free() != 1 {
			t.Errorf("the lender has %d free buffers, want its 1 back", lender.Free())
		}

		// A datagram the client fragmented whose first fragment cannot
		// be sent: its later fragment, which would fit, goes too.
		none, _ := splitRig(t, 0, nic.Headroom+2048)
		frags := pkttest.FragmentIPv4(udp(2, 2000), 1480, false)
		tx, _, drop := none.send(frags[0])
		if len(tx) != 0 || len(drop) != 1 {
			t.Fatalf("the first fragment: %d sent, %d dropped; want it dropped", len(tx), len(drop))
		}
		if got := none.fate(frags[1]); got != "no_buffer" {
			t.Errorf("the later fragment of a datagram whose first had no buffer: %s, want no_buffer", got)
		}
	})

	t.Run("a batch's share", func(t *testing.T) {
		r, _ := splitRig(t, 1024, nic.Headroom+2048)
		frames := make([]nic.Frame, MaxBatch)
		for i := range frames {
			frames[i] = frame(udp(2+i, 6000)) // five fragments: four borrowed buffers
		}
		caps := [3]int{cap(r.out.TX), cap(r.out.Pass), cap(r.out.Drop)}
		r.out.Reset()
		r.p.Process(r.now, frames, r.out)
		split := maxSplitFrames / 4
		s := r.p.Stats()
		if s.TooBigFragmented != uint64(split) || s.Drops[DropNoBuffer] != uint64(MaxBatch-split) || len(r.out.TX) != 5*split {
			t.Errorf("%d packets sent in fragments (%d frames), %d dropped as no_buffer; want %d (%d frames) and %d",
				s.TooBigFragmented, len(r.out.TX), s.Drops[DropNoBuffer], split, 5*split, MaxBatch-split)
		}
		if got := [3]int{cap(r.out.TX), cap(r.out.Pass), cap(r.out.Drop)}; got != caps {
			t.Errorf("Output's lists grew from %v to %v", caps, got)
		}
	})
}

// TestSplitDoesNotAllocate: sending packets in fragments takes buffers
// from the port and allocates nothing.
func TestSplitDoesNotAllocate(t *testing.T) {
	r, lender := splitRig(t, 256, nic.Headroom+2048)
	const batch = 16
	templates := make([][]byte, batch)
	frames := make([]nic.Frame, batch)
	for i := range templates {
		templates[i] = pkttest.UDP(cl(70, uint16(2000+i)), vip(53), pkttest.Opts{Payload: make([]byte, 3000)})
		frames[i] = frame(templates[i])
	}
	sent, lent := 0, make([]nic.Frame, 0, 2*batch)
	noAllocs(t, 200, func() {
		for i := range frames {
			frames[i].Off, frames[i].Len = nic.Headroom, len(templates[i])
			copy(frames[i].Buf[nic.Headroom:], templates[i])
		}
		r.out.Reset()
		r.p.Process(r.now, frames, r.out)
		sent += len(r.out.TX)
		// The borrowed buffers go back, as the port's Transmit does.
		lent = giveBack(lender, frames, r.out.TX, lent)
	})
	if want := 201 * batch * 3; sent != want {
		t.Errorf("%d frames sent, want %d: every packet in 3 fragments", sent, want)
	}
	if lender.Free() != 256 {
		t.Errorf("the lender has %d of its 256 buffers back", lender.Free())
	}
}

// giveBack returns to lender the frames of tx it lent, those in none of
// frames' buffers, as the port's Transmit does; lent is scratch space,
// returned for the next call.
func giveBack(lender *ring.Port, frames, tx, lent []nic.Frame) []nic.Frame {
	lent = lent[:0]
	for _, f := range tx {
		own := false
		for i := range frames {
			own = own || &frames[i].Buf[0] == &f.Buf[0]
		}
		if !own {
			lent = append(lent, f)
		}
	}
	lender.Release(lent)
	return lent
}

// BenchmarkSplit is the cost of a packet sent in fragments (two, each
// with a copy of the headers; the second in a buffer the port lends)
// beside the same packet through a tunnel it fits, in the same run.
func BenchmarkSplit(b *testing.B) {
	for _, c := range []struct {
		name   string
		port   uint16
		frames int
	}{{"fits", 54, 1}, {"split", 53, 2}} {
		b.Run(c.name, func(b *testing.B) {
			r, lender := splitRig(b, 256, nic.Headroom+2048)
			const batch = 16
			templates := make([][]byte, batch)
			frames := make([]nic.Frame, batch)
			for i := range templates {
				templates[i] = pkttest.UDP(cl(80, uint16(3000+i)), vip(c.port), pkttest.Opts{Payload: make([]byte, 1420)})
				frames[i] = frame(templates[i])
			}
			lent := make([]nic.Frame, 0, batch)
			b.ResetTimer()
			for range b.N {
				for i := range frames {
					frames[i].Off, frames[i].Len = nic.Headroom, len(templates[i])
					copy(frames[i].Buf[nic.Headroom:], templates[i])
				}
				r.out.Reset()
				r.p.Process(r.now, frames, r.out)
				if len(r.out.TX) != batch*c.frames {
					b.Fatalf("%d frames sent, want %d", len(r.out.TX), batch*c.frames)
				}
				lent = giveBack(lender, frames, r.out.TX, lent)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*batch), "ns/packet")
		})
	}
}

// backendCounts sums the packets and bytes counted toward backends.
func backendCounts(st Stats) (packets, bytes uint64) {
	for _, c := range st.Backends {
		packets += c.Packets
		bytes += c.Bytes
	}
	return packets, bytes
}
