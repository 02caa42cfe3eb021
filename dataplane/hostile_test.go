package dataplane

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/tetherlb/tether/config"
	"github.com/tetherlb/tether/internal/pkttest"
	"github.com/tetherlb/tether/nic"
	"github.com/tetherlb/tether/nic/ring"
)

// fate sends one frame and says what became of it: "tx", or the drop or
// pass reason, read from the counters.
func (r *rig) fate(f []byte) string {
	r.t.Helper()
	before := r.p.Stats()
	tx, _, _ := r.send(f)
	after := r.p.Stats()
	for _, d := range Drops() {
		if after.Drops[d] != before.Drops[d] {
			return d.String()
		}
	}
	for _, p := range Passes() {
		if after.Passes[p] != before.Passes[p] {
			return "pass:" + p.String()
		}
	}
	if len(tx) == 1 {
		return "tx"
	}
	return "held"
}

func ep4(a string, port uint16) pkttest.Endpoint {
	return pkttest.Endpoint{MAC: pkttest.MustMAC(gwMAC), Addr: netip.MustParseAddr(a), Port: port}
}

func vip6(port uint16) pkttest.Endpoint {
	return pkttest.Endpoint{MAC: pkttest.MustMAC(unitMAC), Addr: netip.MustParseAddr("2001:db8::1"), Port: port}
}

func cl6(a string, port uint16) pkttest.Endpoint {
	return pkttest.Endpoint{MAC: pkttest.MustMAC(gwMAC), Addr: netip.MustParseAddr(a), Port: port}
}

// TestHostileInput: each malformed or hostile class is dropped under the
// reason that names it, and its well-formed neighbour goes through.
func TestHostileInput(t *testing.T) {
	const (
		fin, syn4, rst, psh, ackF, urg = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
	)
	c4 := cl(7, 40000)
	base := syn(c4, vip(81)) // halfnat: takes mid-stream segments too
	// Errors a router sends about the flow's reply (VIP to client),
	// which the unit hands to the backend that sent it.
	router := ep4("198.18.0.1", 0)
	quote := pkttest.L3(syn(pkttest.Endpoint{MAC: vip(81).MAC, Addr: vip(81).Addr, Port: 81}, c4))
	hbh := []byte{0, 0, 1, 4, 0, 0, 0, 0}
	// A type 2 routing header with one segment left: 8 bytes and an
	// address.
	rh2 := append([]byte{0, 2, 2, 1, 0, 0, 0, 0}, netip.MustParseAddr("2001:db8::77").AsSlice()...)
	cases := []struct {
		name  string
		frame []byte
		want  string
	}{
		{"a well-formed SYN", base, "tx"},
		// IPv4 options.
		{"a loose source route with hops to go", pkttest.WithIPv4Options(syn(cl(8, 1), vip(81)), []byte{131, 7, 4, 10, 9, 9, 9}), "source_routed"},
		{"a strict source route", pkttest.WithIPv4Options(syn(cl(8, 2), vip(80)), []byte{137, 7, 8, 10, 9, 9, 9}), "source_routed"},
		{"a record-route option", pkttest.WithIPv4Options(syn(cl(8, 3), vip(81)), []byte{7, 7, 4, 0, 0, 0, 0}), "tx"},
		{"an option of length 1", pkttest.WithIPv4Options(syn(cl(8, 4), vip(81)), []byte{68, 1}), "ipv4_bad_options"},
		{"an option past the header", pkttest.WithIPv4Options(syn(cl(8, 5), vip(81)), []byte{68, 40, 0, 0}), "ipv4_bad_options"},
		// IPv6 headers.
		{"a routing header with segments left", pkttest.InsertIPv6Header(syn(cl6("2001:db8:9::1", 1), vip6(80)), 43, rh2), "source_routed"},
		{"a type 0 routing header, none left", pkttest.InsertIPv6Header(syn(cl6("2001:db8:9::1", 2), vip6(80)), 43, []byte{0, 0, 0, 0, 0, 0, 0, 0}), "source_routed"},
		{"an SRH with no segments left", pkttest.InsertIPv6Header(syn(cl6("2001:db8:9::1", 3), vip6(80)), 43, []byte{0, 0, 4, 0, 0, 0, 0, 0}), "tx"},
		{"hop-by-hop first", pkttest.InsertIPv6Header(syn(cl6("2001:db8:9::1", 4), vip6(80)), 0, hbh), "tx"},
		{"hop-by-hop second", pkttest.InsertIPv6Header(pkttest.InsertIPv6Header(syn(cl6("2001:db8:9::1", 5), vip6(80)), 0, hbh), 60, []byte{0, 0, 1, 4, 0, 0, 0, 0}), "ipv6_bad_ext_headers"},
		{"IPv6 version 7", pkttest.SetIPv6(syn(cl6("2001:db8:9::1", 6), vip6(80)), func(ip []byte) { ip[0] = 0x70 }), "ipv6_bad_header"},
		// Fragments.
		{"DF and MF together", pkttest.SetIPv4(pkttest.FragmentIPv4(syn(cl(9, 1), vip(81)), 16, false)[0], func(ip []byte) { ip[6] |= 0x40 }), "bad_fragment"},
		{"MF with a ragged length", raggedFragment(pkttest.UDP(cl(9, 2), vip(81), pkttest.Opts{Payload: make([]byte, 64)})), "bad_fragment"},
		// ICMP errors.
		{"an error with a wrong checksum", pkttest.CorruptL4Checksum(pkttest.ICMPError(router, c4, 3, 4, 1400, quote, 0, pkttest.Opts{})), "icmp_bad_checksum"},
		{"an error quoting an error", pkttest.ICMPError(router, c4, 3, 1, 0, pkttest.L3(pkttest.ICMPError(c4, vip(81), 3, 3, 0, quote, 0, pkttest.Opts{})), 0, pkttest.Opts{}), "icmp_bad_quote"},
		{"an error quoting a later fragment", pkttest.ICMPError(router, c4, 3, 1, 0, pkttest.L3(pkttest.FragmentIPv4(syn(c4, vip(81)), 16, false)[1]), 0, pkttest.Opts{}), "icmp_bad_quote"},
		{"an error quoting an echo", pkttest.ICMPError(router, c4, 3, 1, 0, pkttest.L3(pkttest.EchoRequest(c4, vip(0), 1, 1, pkttest.Opts{})), 0, pkttest.Opts{}), "icmp_no_flow"},
		{"an error quoting 4 bytes of TCP", pkttest.ICMPError(router, c4, 3, 1, 0, quote, 24, pkttest.Opts{}), "icmp_truncated"},
		{"a valid error about the flow", pkttest.ICMPError(router, c4, 3, 4, 1400, quote, 0, pkttest.Opts{}), "tx"},
		// Impossible sources, on new flows.
		{"source 0.1.2.3", syn(ep4("0.1.2.3", 1), vip(81)), "bad_source"},
		{"source loopback", syn(ep4("127.0.0.1", 1), vip(81)), "bad_source"},
		{"source multicast", syn(ep4("224.0.0.5", 1), vip(81)), "bad_source"},
		{"source limited broadcast", syn(ep4("255.255.255.255", 1), vip(81)), "bad_source"},
		{"LAND: source is the VIP", syn(ep4("192.0.2.1", 81), vip(81)), "bad_source"},
		{"source ::1", syn(cl6("::1", 1), vip6(80)), "bad_source"},
		{"source ff02::1", syn(cl6("ff02::1", 1), vip6(80)), "bad_source"},
		{"source IPv4-mapped", syn(cl6("::ffff:203.0.113.9", 1), vip6(80)), "bad_source"},
		// TCP flags on new flows.
		{"SYN+FIN", pkttest.SetTCPFlags(syn(cl(10, 1), vip(81)), syn4|fin), "tcp_bad_flags"},
		{"SYN+RST", pkttest.SetTCPFlags(syn(cl(10, 2), vip(81)), syn4|rst), "tcp_bad_flags"},
		{"no flags", pkttest.SetTCPFlags(syn(cl(10, 3), vip(81)), 0), "tcp_bad_flags"},
		{"FIN+PSH+URG", pkttest.SetTCPFlags(syn(cl(10, 4), vip(81)), fin|psh|urg), "tcp_bad_flags"},
		{"SYN+ACK opens nothing", pkttest.SetTCPFlags(syn(cl(10, 5), vip(81)), syn4|ackF), "tcp_not_syn"},
		{"RST opens nothing", pkttest.SetTCPFlags(syn(cl(10, 6), vip(81)), rst|ackF), "tcp_not_syn"},
		{"ACK to a nat VIP opens nothing: answered with a reset", ack(cl(10, 7), vip(80)), "tx"},
		{"ACK to a halfnat VIP follows Maglev", ack(cl(10, 8), vip(81)), "tx"},
	}
	r := newRig(t, loadConfig(t, 1024, "1024-65535"))
	for _, c := range cases {
		if got := r.fate(c.frame); got != c.want {
			t.Errorf("%s: got %s, want %s", c.name, got, c.want)
		}
	}
}

// raggedFragment makes the first fragment of a UDP datagram whose data
// (8-byte UDP header and 13 bytes) is not a multiple of 8 while MF is set.
func raggedFragment(frame []byte) []byte {
	return pkttest.SetIPv4(frame[:14+20+8+13], func(ip []byte) {
		ip[2], ip[3] = 0, 20+8+13
		ip[6] = 0x20 // MF
	})
}

// TestTTL: with forwarder.ttl decrement (the default) the unit is a
// router hop in every mode, both ways: TTL and hop limit go down by one
// (ipip: the inner packet's), checksums stay right, and a packet that
// arrives with 1 goes no further; with keep, nothing changes.
func TestTTL(t *testing.T) {
	ttlOf := func(f []byte) uint8 {
		ip := pkttest.IP(f, false)
		if ip[0]>>4 == 6 {
			return ip[7]
		}
		if ip[9] == 4 { // ipip: the inner header
			return ip[20+8]
		}
		return ip[8]
	}
	for _, keep := range []bool{false, true} {
		c := loadConfig(t, 1024, "1024-65535")
		if keep {
			c.Forwarder.TTL = "keep"
		}
		r := newRig(t, c)
		ck := &pkttest.Checker{}
		for i, port := range []uint16{80, 81, 82, 83} {
			for _, ttl := range []uint8{64, 2, 1} {
				f := syn(cl(20+i, uint16(ttl)), vip(port))
				f = pkttest.SetIPv4(f, func(ip []byte) { ip[8] = ttl })
				flows := r.p.Stats().NewFlows
				tx, _, drop := r.send(f)
				if !keep && ttl == 1 && r.p.Stats().NewFlows != flows {
					t.Errorf("port %d: a SYN with TTL 1 opened a flow", port)
				}
				switch {
				case keep && (len(tx) != 1 || ttlOf(tx[0]) != ttl):
					t.Errorf("keep, port %d, TTL %d: %d sent, %d dropped", port, ttl, len(tx), len(drop))
				case !keep && ttl == 1 && (len(drop) != 1 || r.p.stats.Drops[DropTTLExceeded] == 0):
					t.Errorf("port %d, TTL 1: %d sent, want ttl_exceeded", port, len(tx))
				case !keep && ttl > 1 && (len(tx) != 1 || ttlOf(tx[0]) != ttl-1):
					t.Errorf("port %d, TTL %d: sent %d frames, TTL %v", port, ttl, len(tx), tx)
				}
				for _, f := range tx {
					if err := ck.Check(f); err != nil {
						t.Errorf("port %d, TTL %d: %v", port, ttl, err)
					}
				}
			}
		}
		// IPv6: hop limit.
		f := pkttest.SetIPv6(syn(cl6("2001:db8:9::9", 9), vip6(80)), func(ip []byte) { ip[7] = 1 })
		if got := r.fate(f); keep && got != "tx" || !keep && got != "ttl_exceeded" {
			t.Errorf("keep %v: hop limit 1 went %s", keep, got)
		}
	}
}

// TestIPIPEdges: an ipip VIP clamps every MSS option of a SYN and drops
// one whose options it cannot read; a packet too big for the tunnel with
// DF is answered, and the fragments of a datagram whose first fragment
// is too big all leave, in either order (TestIPIPSplitsWhatMayBeFragmented
// has the rest).
func TestIPIPEdges(t *testing.T) {
	c := loadConfig(t, 1024, "1024-65535")
	c.VIPs[3].MTU = 1400 // ipip, port 83: room for 1380-byte packets inside
	r := newRig(t, c)
	ck := &pkttest.Checker{}

	// Two MSS options: both clamped to 1400-20-20-20.
	two := pkttest.SetTCPOptions(syn(cl(30, 1), vip(83)), []byte{2, 4, 0x05, 0xb4, 1, 1, 2, 4, 0x23, 0x28})
	tx, _, _ := r.send(two)
	if len(tx) != 1 {
		t.Fatalf("a SYN with two MSS options: %d sent", len(tx))
	}
	inner := pkttest.IP(tx[0], false)[20:]
	for _, off := range []int{40 + 2, 40 + 8} { // inner IP header, TCP header, then the options
		if mss := uint16(inner[off])<<8 | uint16(inner[off+1]); mss != 1340 {
			t.Errorf("MSS option at %d is %d, want 1340", off, mss)
		}
	}
	if err := ck.Check(tx[0]); err != nil {
		t.Error(err)
	}
	bad := pkttest.SetTCPOptions(syn(cl(30, 2), vip(83)), []byte{2, 4, 0x05, 0xb4, 8, 1})
	if got := r.fate(bad); got != "tcp_bad_options" {
		t.Errorf("a SYN with a malformed option: %s", got)
	}

	// Too big with DF: answered.
	big := pkttest.TCP(cl(31, 1), vip(83), pkttest.ACK, 1, 1, pkttest.Opts{Payload: make([]byte, 1400), DF: true})
	r.send(syn(cl(31, 1), vip(83)))
	tx, _, _ = r.send(big)
	if len(tx) != 1 {
		t.Fatalf("too big with DF: %d sent, want the ICMP answer", len(tx))
	}
	ans := pkttest.IP(tx[0], false)
	if ans[9] != 1 || ans[20] != 3 || ans[21] != 4 || uint16(ans[26])<<8|uint16(ans[27]) != 1380 || ans[16] != 203 {
		t.Errorf("the answer is not fragmentation needed for 1380 to the client:\n% x", ans[:40])
	}
	if err := ck.Check(tx[0]); err != nil {
		t.Error(err)
	}

	// A datagram whose first fragment is too big (no fragment has DF):
	// each fragment leaves, the first in two, whether the later one
	// comes after it or before (held until the first).
	r.p.UseAllocator(ring.New("lender", nic.LinkEthernet, 16, nic.Headroom+2048))
	for i, order := range [][]int{{0, 1}, {1, 0}} {
		seg := pkttest.TCP(cl(33, uint16(i)), vip(83), pkttest.ACK, 1, 1, pkttest.Opts{Payload: make([]byte, 2400)})
		seg = pkttest.SetIPv4(seg, func(ip []byte) { ip[5] = byte(i + 1) }) // a datagram of its own
		r.send(syn(cl(33, uint16(i)), vip(83)))
		frags := pkttest.FragmentIPv4(seg, 1392, false)
		var sent [][]byte
		for _, j := range order {
			tx, _, _ := r.send(frags[j])
			sent = append(sent, tx...)
		}
		if st := r.p.Stats(); len(sent) != 3 || st.Dropped() != 1 {
			t.Errorf("order %v: %d frames sent, %d drops in all; want 3 (the first fragment in two), and only the malformed SYN dropped",
				order, len(sent), st.Dropped())
		}
		for _, f := range sent {
			if err := ck.Check(f); err != nil {
				t.Errorf("order %v: %v", order, err)
			}
		}
	}
}

// TestFragmentOverlap: a fragment overlapping one already seen of its
// datagram is dropped, and the rest of the datagram with it (RFC 5722).
func TestFragmentOverlap(t *testing.T) {
	r := newRig(t, loadConfig(t, 1024, "1024-65535"))
	seg := pkttest.TCP(cl(40, 1), vip(81), pkttest.ACK, 1, 1, pkttest.Opts{Payload: make([]byte, 100)})
	frags := pkttest.FragmentIPv4(seg, 32, false) // 4 fragments: 0-32, 32-64, 64-96, 96-120
	// The third again, moved back 8 bytes: it overlaps the second.
	overlap := pkttest.SetIPv4(frags[2], func(ip []byte) { ip[7] -= 1 })
	for i, c := range []struct {
		frame []byte
		want  string
	}{
		{frags[0], "tx"}, {frags[1], "tx"}, {overlap, "fragment_overlap"}, {frags[3], "fragment_overlap"},
	} {
		if got := r.fate(c.frame); got != c.want {
			t.Errorf("fragment %d: got %s, want %s", i, got, c.want)
		}
	}
}

// TestSYNFloodLeavesNATUsable: forged SYNs that take every SNAT port of
// a backend hold them only until a real client needs one and they have
// waited a second; established connections keep theirs.
func TestSYNFloodLeavesNATUsable(t *testing.T) {
	c := loadConfig(t, 4096, "1024-1031") // 8 ports per backend
	v := &c.VIPs[0]                       // nat, port 80: one backend, so the pool is 8 ports
	v.Backends = v.Backends[:1]
	r := newRig(t, c)
	// Four established connections, then forged SYNs take the rest.
	for i := range 4 {
		r.send(syn(cl(60+i, 5000), vip(80)))
		r.send(ack(cl(60+i, 5000), vip(80)))
	}
	for i := range 20 {
		r.send(syn(ep4(fmt.Sprintf("198.18.7.%d", i+1), 6000), vip(80)))
	}
	if r.p.stats.Drops[DropSNATExhausted] != 16 {
		t.Fatalf("%d forged SYNs refused, want 16 of 20 (4 ports were free)", r.p.stats.Drops[DropSNATExhausted])
	}
	legit := func(i int) string { return r.fate(syn(cl(70+i, 7000), vip(80))) }
	r.now = 500
	if got := legit(0); got != "snat_exhausted" {
		t.Errorf("half a second into the flood: %s, want snat_exhausted (the forged handshakes are young)", got)
	}
	r.now = 1500
	for i := 1; i <= 4; i++ {
		if got := legit(i); got != "tx" {
			t.Errorf("legitimate SYN %d after a second: %s, want tx (a half-open port reclaimed)", i, got)
		}
	}
	if got := legit(5); got != "snat_exhausted" {
		t.Errorf("a fifth legitimate SYN: %s, want snat_exhausted: established ports are never taken", got)
	}
	if r.p.stats.HalfOpenReclaimed != 4 {
		t.Errorf("%d ports reclaimed, want 4", r.p.stats.HalfOpenReclaimed)
	}
}

// TestUDPFloodLeavesNATUsable: one-packet UDP flows from many sources
// take every SNAT port of a backend only until a new flow needs one and
// they have waited a second; flows the backend answers keep theirs.
func TestUDPFloodLeavesNATUsable(t *testing.T) {
	text := strings.Replace(fmt.Sprintf(testConfig, 4096, "1024-1031"), "port: 80\n    protocol: tcp\n    mode: nat", "port: 80\n    protocol: udp\n    mode: nat", 1)
	c, err := config.Parse([]byte(text))
	if err != nil {
		t.Fatal(err)
	}
	c.VIPs[0].Backends = c.VIPs[0].Backends[:1] // 8 ports in the pool
	r := newRig(t, c)
	datagram := func(from pkttest.Endpoint) []byte {
		return pkttest.UDP(from, vip(80), pkttest.Opts{Payload: []byte("q")})
	}
	// Two flows the backend answers, then a flood takes the rest.
	for i := range 2 {
		tx, _, _ := r.send(datagram(cl(60+i, 5000)))
		if len(tx) != 1 {
			t.Fatalf("flow %d not forwarded", i)
		}
		to, from := dstOf(tx[0]), srcOf(tx[0])
		reply := pkttest.UDP(pkttest.Endpoint{MAC: pkttest.MustMAC(gwMAC), Addr: to.Addr(), Port: to.Port()},
			pkttest.Endpoint{MAC: pkttest.MustMAC(unitMAC), Addr: from.Addr(), Port: from.Port()}, pkttest.Opts{Payload: []byte("a")})
		if got := r.fate(reply); got != "tx" {
			t.Fatalf("reply %d: %s, want tx", i, got)
		}
	}
	for i := range 20 {
		r.send(datagram(ep4(fmt.Sprintf("198.18.7.%d", i+1), 6000)))
	}
	if r.p.stats.Drops[DropSNATExhausted] != 14 {
		t.Fatalf("%d flood flows refused, want 14 of 20 (6 ports were free)", r.p.stats.Drops[DropSNATExhausted])
	}
	fresh := func(i int) string { return r.fate(datagram(cl(70+i, 7000))) }
	r.now = 500
	if got := fresh(0); got != "snat_exhausted" {
		t.Errorf("half a second into the flood: %s, want snat_exhausted (the unreplied flows are young)", got)
	}
	r.now = 1500
	for i := 1; i <= 6; i++ {
		if got := fresh(i); got != "tx" {
			t.Errorf("new flow %d after a second: %s, want tx (an unreplied flow's port reclaimed)", i, got)
		}
	}
	if got := fresh(7); got != "snat_exhausted" {
		t.Errorf("a seventh new flow: %s, want snat_exhausted: answered flows keep their ports", got)
	}
}

// TestResetForUnknownNAT: a segment of a nat connection the unit does
// not know (after a restart with nobody to tell it) is answered with the
// reset a stack sends for a connection it lost, from the VIP, so that the
// client fails at once; a reset is never answered, and halfnat continues
// by Maglev instead.
func TestResetForUnknownNAT(t *testing.T) {
	r := newRig(t, loadConfig(t, 1024, "1024-65535"))
	c := cl(80, 41000)
	tx, _, _ := r.send(pkttest.TCP(c, vip(80), pkttest.ACK|pkttest.PSH, 1000, 5000, pkttest.Opts{Payload: []byte("hello")}))
	if len(tx) != 1 {
		t.Fatalf("%d frames sent, want the reset", len(tx))
	}
	ip := pkttest.IP(tx[0], false)
	tcp := ip[20:]
	if ip[9] != 6 || tcp[13] != 0x04 || binary.BigEndian.Uint32(tcp[4:]) != 5000 || len(ip) != 40 ||
		srcOf(tx[0]) != netip.MustParseAddrPort("192.0.2.1:80") || dstOf(tx[0]) != netip.AddrPortFrom(c.Addr, c.Port) {
		t.Fatalf("not a reset from the VIP with seq = the segment's ack:\n% x", ip)
	}
	if err := (&pkttest.Checker{}).Check(tx[0]); err != nil {
		t.Error(err)
	}
	// No ACK flag (a FIN alone is refused earlier as impossible): none.
	if got := r.fate(pkttest.SetTCPFlags(ack(cl(81, 1), vip(80)), rstFlag|ackFlag)); got != "tcp_not_syn" {
		t.Errorf("a reset answered: %s", got)
	}
	if got := r.fate(ack(cl(82, 1), vip(81))); got != "tx" || r.p.stats.ResetsSent != 1 {
		t.Errorf("halfnat: %s, %d resets sent; want forwarded, one reset in all", got, r.p.stats.ResetsSent)
	}
	// A segment whose checksum is wrong is not answered: a stack would
	// not have seen it.
	bad := pkttest.TCP(cl(83, 41000), vip(80), pkttest.ACK, 1000, 5000, pkttest.Opts{Payload: []byte("x")})
	bad[14+20+16] ^= 0xff // the TCP checksum
	if got := r.fate(bad); got != "tcp_not_syn" {
		t.Errorf("segment with a bad checksum: %s, want tcp_not_syn (no reset)", got)
	}
	// The backend's side of a lost connection is reset too, from the
	// SNAT address and port it wrote to.
	be := pkttest.Endpoint{MAC: pkttest.MustMAC(gwMAC), Addr: netip.MustParseAddr("10.1.0.1"), Port: 8080}
	snat := pkttest.Endpoint{MAC: pkttest.MustMAC(unitMAC), Addr: netip.MustParseAddr("198.51.100.1"), Port: 3333}
	tx, _, _ = r.send(pkttest.TCP(be, snat, pkttest.ACK, 7000, 9000, pkttest.Opts{Payload: []byte("data")}))
	if len(tx) != 1 || srcOf(tx[0]) != netip.AddrPortFrom(snat.Addr, snat.Port) || dstOf(tx[0]) != netip.AddrPortFrom(be.Addr, be.Port) {
		t.Fatalf("backend's segment of an unknown nat connection: %d frames, want a reset from the SNAT port", len(tx))
	}
	if got := r.fate(pkttest.TCP(be, snat, pkttest.RST, 7000, 0, pkttest.Opts{})); got != "no_flow" {
		t.Errorf("backend's reset: %s, want no_flow", got)
	}
}

// TestHalfNATReplyRecoversItsFlow: after a restart of the whole unit, a
// half-NAT backend's reply (the client idle, waiting for data) must not
// reach the kernel, which would forward it untranslated and have the
// client reset the connection. The flow the client's next packet would
// make is made from the reply instead, when Maglev would choose that
// backend; otherwise the reply is dropped.
func TestHalfNATReplyRecoversItsFlow(t *testing.T) {
	c := loadConfig(t, 1024, "1024-65535")
	first := newRig(t, c)
	client := cl(7, 41000)
	tx, _, _ := first.send(syn(client, vip(81)))
	if len(tx) != 1 {
		t.Fatal("SYN not forwarded")
	}
	chosen := dstOf(tx[0]) // the backend Maglev chose

	r := newRig(t, c) // the restarted unit: no flows
	from := func(be netip.AddrPort, flags int) []byte {
		return pkttest.TCP(pkttest.Endpoint{MAC: pkttest.MustMAC(gwMAC), Addr: be.Addr(), Port: be.Port()},
			pkttest.Endpoint{MAC: pkttest.MustMAC(unitMAC), Addr: client.Addr, Port: client.Port}, flags, 9000, 1001, pkttest.Opts{Payload: []byte("data")})
	}
	other := netip.AddrPortFrom(netip.MustParseAddr("10.1.0.1"), 81)
	if other == chosen {
		other = netip.AddrPortFrom(netip.MustParseAddr("10.1.0.2"), 81)
	}
	if got := r.fate(from(other, pkttest.ACK|pkttest.PSH)); got != "no_flow" {
		t.Errorf("a reply from a backend Maglev would not choose: %s, want no_flow", got)
	}
	if got := r.fate(from(chosen, pkttest.RST)); got != "no_flow" {
		t.Errorf("a backend's reset: %s, want no_flow", got)
	}
	tx, _, _ = r.send(from(chosen, pkttest.ACK|pkttest.PSH))
	if len(tx) != 1 || srcOf(tx[0]) != netip.MustParseAddrPort("192.0.2.1:81") || dstOf(tx[0]) != netip.AddrPortFrom(client.Addr, client.Port) {
		t.Fatalf("the chosen backend's reply: %d sent, want it translated from the VIP to the client", len(tx))
	}
	if err := (&pkttest.Checker{}).Check(tx[0]); err != nil {
		t.Error(err)
	}
	if r.p.stats.Recovered != 1 || r.p.stats.NewFlows != 1 {
		t.Errorf("recovered %d, new flows %d; want 1 and 1", r.p.stats.Recovered, r.p.stats.NewFlows)
	}
	// The client's next segment finds the flow, to the same backend.
	tx, _, _ = r.send(ack(client, vip(81)))
	if len(tx) != 1 || dstOf(tx[0]) != chosen || r.p.stats.NewFlows != 1 {
		t.Fatalf("the client's segment after the recovery went to %v (new flows %d), want %v through the recovered flow", dstOf(tx[0]), r.p.stats.NewFlows, chosen)
	}
	// Anything else from elsewhere to a client is still the host's.
	stranger := pkttest.TCP(pkttest.Endpoint{MAC: pkttest.MustMAC(gwMAC), Addr: netip.MustParseAddr("10.9.9.9"), Port: 81},
		pkttest.Endpoint{MAC: pkttest.MustMAC(unitMAC), Addr: client.Addr, Port: client.Port}, pkttest.ACK, 1, 1, pkttest.Opts{})
	if got := r.fate(stranger); got != "pass:not_vip" {
		t.Errorf("a packet from no backend: %s, want pass:not_vip", got)
	}
}
