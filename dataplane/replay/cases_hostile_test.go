package replay

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tetherlb/tether/config"
	"github.com/tetherlb/tether/dataplane"
	"github.com/tetherlb/tether/internal/pkttest"
	"github.com/tetherlb/tether/nic"
	"github.com/tetherlb/tether/nic/ring"
)

// The hostile corpus: every malformed and hostile class the forwarder
// has a policy for (docs/operations.md, "Hostile and malformed input"),
// in every mode it concerns, each frame tagged with what it is and what
// must become of it, beside well-formed controls. The golden pins the
// output; hostileCheck replays the frames one by one and holds each to
// its tag, so that every drop is under the reason that names it.

// tagged is one frame of the corpus.
type tagged struct {
	tag   string // what the frame is
	want  string // "tx", a drop reason, or "pass:" and a pass reason
	frame []byte
}

const hostileConfig = `  - {name: nat, address: 192.0.2.50, port: 80, protocol: tcp, mode: nat, snat: [198.51.100.1],
` + `     backends: [{address: 10.1.0.1}, {address: 10.1.0.2}]}
  - {name: halfnat, address: 192.0.2.51, port: 80, protocol: tcp, mode: halfnat, backends: [{address: 10.1.0.1}, {address: 10.1.0.2}]}
  - {name: tunnel, address: 192.0.2.52, port: 80, protocol: tcp, mode: tunnel, backends: [{address: 10.1.0.1}, {address: 10.1.0.2}]}
  - {name: ipip, address: 192.0.2.53, port: 80, protocol: tcp, mode: ipip, mtu: 1400, backends: [{address: 10.1.0.1}, {address: 10.1.0.2}]}
  - {name: dns, address: 192.0.2.54, port: 53, protocol: udp, mode: nat, snat: [198.51.100.1], backends: [{address: 10.1.0.1}]}
  - {name: halfnat6, address: "2001:db8::51", port: 80, protocol: tcp, mode: halfnat, backends: [{address: "fd00:1::1"}, {address: "fd00:1::2"}]}
  - {name: ipip6, address: "2001:db8::53", port: 80, protocol: tcp, mode: ipip, mtu: 1400, backends: [{address: "fd00:1::1"}, {address: "fd00:1::2"}]}
  - {name: nat6, address: "2001:db8::50", port: 80, protocol: tcp, mode: nat, snat: ["2001:db8:5::1"], backends: [{address: "fd00:1::1"}, {address: "fd00:1::2"}]}
  - {name: tunnel6, address: "2001:db8::52", port: 80, protocol: tcp, mode: tunnel, backends: [{address: "fd00:1::1"}, {address: "fd00:1::2"}]}
`

// TCP flag bits, as the wire has them.
const (
	fFIN = 0x01
	fSYN = 0x02
	fRST = 0x04
	fPSH = 0x08
	fACK = 0x10
	fURG = 0x20
)

// corpus builds the tagged frames. Every frame comes from a client of
// its own, so that no frame depends on another's flow but where a tag
// says so.
func corpus() []tagged {
	var out []tagged
	n := 0
	next4 := func() pkttest.Endpoint {
		n++
		return client(fmt.Sprintf("198.18.%d.%d:%d", n/250, n%250+1, 10000+n))
	}
	next6 := func() pkttest.Endpoint {
		n++
		return client(fmt.Sprintf("[2001:db8:c::%x]:%d", n, 10000+n))
	}
	add := func(tag, want string, f []byte) { out = append(out, tagged{tag, want, f}) }
	syn := func(c, v pkttest.Endpoint) []byte {
		return pkttest.TCP(c, v, pkttest.SYN, 1, 0, pkttest.Opts{MSS: 1460})
	}
	l3 := pkttest.L3
	router := client("198.51.100.99:0")

	for _, m := range []struct{ mode, vip string }{{"nat", "192.0.2.50:80"}, {"halfnat", "192.0.2.51:80"}, {"tunnel", "192.0.2.52:80"}, {"ipip", "192.0.2.53:80"}} {
		v := vipEP(m.vip)
		t := func(s string) string { return m.mode + " " + s }
		add(t("SYN"), "tx", syn(next4(), v))

		// Source routes and IPv4 options.
		add(t("LSRR, hops to go"), "source_routed", pkttest.WithIPv4Options(syn(next4(), v), []byte{131, 7, 4, 10, 9, 9, 9}))
		add(t("LSRR, route done"), "source_routed", pkttest.WithIPv4Options(syn(next4(), v), []byte{131, 7, 8, 10, 9, 9, 9}))
		add(t("SSRR, hops to go"), "source_routed", pkttest.WithIPv4Options(syn(next4(), v), []byte{137, 11, 4, 10, 9, 9, 9, 10, 9, 9, 8}))
		add(t("record route"), "tx", pkttest.WithIPv4Options(syn(next4(), v), []byte{7, 7, 4, 0, 0, 0, 0}))
		add(t("router alert"), "tx", pkttest.WithIPv4Options(syn(next4(), v), []byte{148, 4, 0, 0}))
		add(t("option of length 1"), "ipv4_bad_options", pkttest.WithIPv4Options(syn(next4(), v), []byte{68, 1}))
		add(t("option of length 0"), "ipv4_bad_options", pkttest.WithIPv4Options(syn(next4(), v), []byte{130, 0}))
		add(t("option past the header"), "ipv4_bad_options", pkttest.WithIPv4Options(syn(next4(), v), []byte{68, 12, 5, 0}))
		add(t("option kind without length"), "ipv4_bad_options", pkttest.WithIPv4Options(syn(next4(), v), []byte{1, 1, 1, 68}))

		// Sources that are never legitimate, and LAND.
		for _, src := range []string{"0.0.0.1", "0.255.1.2", "127.0.0.1", "127.9.9.9", "224.0.0.1", "239.255.255.250", "255.255.255.255"} {
			add(t("source "+src), "bad_source", syn(client(src+":1234"), v))
		}
		add(t("LAND"), "bad_source", syn(pkttest.EP(gatewayMAC, m.vip), v))

		// TCP flags on a new flow.
		for _, f := range []struct {
			name  string
			flags uint8
			want  string
		}{
			{"SYN+FIN", fSYN | fFIN, "tcp_bad_flags"}, {"SYN+RST", fSYN | fRST, "tcp_bad_flags"},
			{"SYN+FIN+PSH+URG", fSYN | fFIN | fPSH | fURG, "tcp_bad_flags"}, {"no flags", 0, "tcp_bad_flags"},
			{"FIN alone", fFIN, "tcp_bad_flags"}, {"FIN+PSH+URG", fFIN | fPSH | fURG, "tcp_bad_flags"},
			{"PSH+URG", fPSH | fURG, "tcp_bad_flags"}, {"SYN+ACK", fSYN | fACK, "tcp_not_syn"},
			{"RST", fRST, "tcp_not_syn"}, {"RST+ACK", fRST | fACK, "tcp_not_syn"},
			{"SYN+PSH", fSYN | fPSH, "tx"}, {"SYN+ECE+CWR", fSYN | 0xc0, "tx"},
		} {
			add(t(f.name), f.want, pkttest.SetTCPFlags(syn(next4(), v), f.flags))
		}
		// Without a flow an ACK continues by Maglev where it can; a nat
		// connection's SNAT port is lost, and the unit answers with a
		// reset (tx) so that the client fails at once.
		add(t("ACK without a flow"), "tx", pkttest.TCP(next4(), v, pkttest.ACK, 5, 5, pkttest.Opts{Payload: payload(10, 'a')}))

		// TTL: the unit is a router hop.
		for _, ttl := range []uint8{0, 1} {
			add(t(fmt.Sprintf("TTL %d", ttl)), "ttl_exceeded", pkttest.SetIPv4(syn(next4(), v), func(ip []byte) { ip[8] = ttl }))
		}
		add(t("TTL 2"), "tx", pkttest.SetIPv4(syn(next4(), v), func(ip []byte) { ip[8] = 2 }))

		// Fragments: a SYN carrying 64 bytes of data, in pieces.
		c := next4()
		frags := pkttest.FragmentIPv4(pkttest.TCP(c, v, pkttest.SYN, 1, 0, pkttest.Opts{Payload: payload(64, 'f')}), 32, false)
		add(t("fragment 1/3"), "tx", frags[0])
		add(t("fragment 2/3"), "tx", frags[1])
		add(t("fragment 2/3 again, 8 bytes back: overlaps"), "fragment_overlap", pkttest.SetIPv4(frags[1], func(ip []byte) { ip[7]-- }))
		add(t("fragment 3/3 of the overlapped datagram"), "fragment_overlap", frags[2])
		add(t("DF with MF"), "bad_fragment", pkttest.SetIPv4(pkttest.FragmentIPv4(syn(next4(), v), 16, false)[0], func(ip []byte) { ip[6] |= 0x40 }))
		ragged := pkttest.FragmentIPv4(pkttest.TCP(next4(), v, pkttest.SYN, 1, 0, pkttest.Opts{Payload: payload(40, 'r')}), 32, false)[0]
		add(t("MF with 29 bytes"), "bad_fragment", pkttest.SetIPv4(ragged[:len(ragged)-3], func(ip []byte) {
			binary.BigEndian.PutUint16(ip[2:], binary.BigEndian.Uint16(ip[2:])-3)
		}))
		add(t("first fragment with 8 bytes of TCP"), "bad_fragment", pkttest.FragmentIPv4(pkttest.TCP(next4(), v, pkttest.SYN, 1, 0, pkttest.Opts{Payload: payload(40, 't')}), 8, false)[0])

		// ICMP errors about a flow (the SYN's just above opened it).
		reply := l3(pkttest.TCP(v, c, pkttest.SYN|pkttest.ACK, 1, 2, pkttest.Opts{}))
		icmp := func(typ, code uint8, rest uint32, quote []byte, n int) []byte {
			return pkttest.ICMPError(router, c, typ, code, rest, quote, n, pkttest.Opts{})
		}
		add(t("ICMP frag-needed about the flow"), "tx", icmp(3, 4, 1400, reply, 0))
		add(t("ICMP error, wrong checksum"), "icmp_bad_checksum", pkttest.CorruptL4Checksum(icmp(3, 4, 1400, reply, 0)))
		add(t("ICMP error quoting an ICMP error"), "icmp_bad_quote", icmp(3, 1, 0, l3(pkttest.ICMPError(c, v, 3, 3, 0, reply, 0, pkttest.Opts{})), 0))
		add(t("ICMP error quoting a later fragment"), "icmp_bad_quote", icmp(3, 1, 0, l3(frags[1]), 0))
		add(t("ICMP error quoting an echo"), "icmp_no_flow", icmp(3, 1, 0, l3(pkttest.EchoRequest(c, v, 1, 1, pkttest.Opts{})), 0))
		add(t("ICMP error quoting 24 bytes"), "icmp_truncated", icmp(3, 1, 0, reply, 24))
		add(t("ICMP error with TTL 1"), "ttl_exceeded", pkttest.SetIPv4(icmp(3, 4, 1400, reply, 0), func(ip []byte) { ip[8] = 1 }))
		stranger := next4()
		add(t("ICMP error about no flow"), "icmp_no_flow", pkttest.ICMPError(router, stranger, 3, 4, 1400,
			l3(pkttest.TCP(v, stranger, pkttest.SYN|pkttest.ACK, 1, 2, pkttest.Opts{})), 0, pkttest.Opts{}))
	}

	// ipip: the tunnel's edges.
	dsr := vipEP("192.0.2.53:80")
	c := next4()
	add("ipip SYN", "tx", pkttest.TCP(c, dsr, pkttest.SYN, 1, 0, pkttest.Opts{MSS: 1460}))
	add("ipip too big with DF: answered", "tx", pkttest.TCP(c, dsr, pkttest.ACK, 2, 2, pkttest.Opts{Payload: payload(1400, 'b'), DF: true}))
	add("ipip too big without DF: sent in fragments", "tx", pkttest.TCP(c, dsr, pkttest.ACK, 2, 2, pkttest.Opts{Payload: payload(1400, 'b')}))
	big := pkttest.FragmentIPv4(pkttest.TCP(c, dsr, pkttest.ACK, 3, 3, pkttest.Opts{Payload: payload(2400, 'g')}), 1392, false)
	add("ipip first fragment too big: sent in fragments", "tx", big[0])
	add("ipip its later fragment", "tx", big[1])
	add("ipip 65,520-byte packet without DF: no outer IPv4 header can hold it", "too_big", pkttest.TCP(c, dsr, pkttest.ACK, 4, 4, pkttest.Opts{Payload: payload(65520-40, 'j')}))
	add("ipip SYN with two MSS options", "tx", pkttest.SetTCPOptions(pkttest.TCP(next4(), dsr, pkttest.SYN, 1, 0, pkttest.Opts{}), []byte{2, 4, 5, 0xb4, 1, 1, 2, 4, 0x23, 0x28}))
	add("ipip SYN with a malformed option", "tcp_bad_options", pkttest.SetTCPOptions(pkttest.TCP(next4(), dsr, pkttest.SYN, 1, 0, pkttest.Opts{}), []byte{2, 4, 5, 0xb4, 8, 1}))
	add("ipip SYN with a 3-byte MSS option", "tcp_bad_options", pkttest.SetTCPOptions(pkttest.TCP(next4(), dsr, pkttest.SYN, 1, 0, pkttest.Opts{}), []byte{2, 3, 5, 1}))

	// IPv6.
	for _, m := range []struct{ mode, vip string }{{"nat6", "[2001:db8::50]:80"}, {"halfnat6", "[2001:db8::51]:80"},
		{"tunnel6", "[2001:db8::52]:80"}, {"ipip6", "[2001:db8::53]:80"}} {
		v := vipEP(m.vip)
		t := func(s string) string { return m.mode + " " + s }
		add(t("SYN"), "tx", syn(next6(), v))
		rh := func(typ, left byte) []byte {
			return append([]byte{0, 2, typ, left, 0, 0, 0, 0}, netip.MustParseAddr("2001:db8::77").AsSlice()...)
		}
		add(t("routing header type 0, none left"), "source_routed", pkttest.InsertIPv6Header(syn(next6(), v), 43, rh(0, 0)))
		add(t("routing header type 2, one left"), "source_routed", pkttest.InsertIPv6Header(syn(next6(), v), 43, rh(2, 1)))
		add(t("SRH, one left"), "source_routed", pkttest.InsertIPv6Header(syn(next6(), v), 43, rh(4, 1)))
		add(t("SRH, none left"), "tx", pkttest.InsertIPv6Header(syn(next6(), v), 43, rh(4, 0)))
		hbh := []byte{0, 0, 1, 4, 0, 0, 0, 0}
		add(t("hop-by-hop first"), "tx", pkttest.InsertIPv6Header(syn(next6(), v), 0, hbh))
		add(t("hop-by-hop after destination options"), "ipv6_bad_ext_headers",
			pkttest.InsertIPv6Header(pkttest.InsertIPv6Header(syn(next6(), v), 0, hbh), 60, []byte{0, 0, 1, 4, 0, 0, 0, 0}))
		add(t("version 4 in an IPv6 frame"), "ipv6_bad_header", pkttest.SetIPv6(syn(next6(), v), func(ip []byte) { ip[0] = 0x40 }))
		for _, src := range []string{"::", "::1", "ff02::1", "ff05::2", "::ffff:203.0.113.5"} {
			add(t("source "+src), "bad_source", syn(client("["+src+"]:1234"), v))
		}
		add(t("LAND"), "bad_source", syn(pkttest.EP(gatewayMAC, m.vip), v))
		add(t("hop limit 1"), "ttl_exceeded", pkttest.SetIPv6(syn(next6(), v), func(ip []byte) { ip[7] = 1 }))
		add(t("hop limit 0"), "ttl_exceeded", pkttest.SetIPv6(syn(next6(), v), func(ip []byte) { ip[7] = 0 }))
		add(t("SYN+FIN"), "tcp_bad_flags", pkttest.SetTCPFlags(syn(next6(), v), fSYN|fFIN))
		add(t("no flags"), "tcp_bad_flags", pkttest.SetTCPFlags(syn(next6(), v), 0))
		add(t("SYN+ACK"), "tcp_not_syn", pkttest.SetTCPFlags(syn(next6(), v), fSYN|fACK))
		c := next6()
		add(t("flow"), "tx", syn(c, v))
		reply := l3(pkttest.TCP(v, c, pkttest.SYN|pkttest.ACK, 1, 2, pkttest.Opts{}))
		r6 := client("[2001:db8:ffff::1]:0")
		add(t("packet too big about the flow"), "tx", pkttest.ICMPError(r6, c, 2, 0, 1400, reply, 0, pkttest.Opts{}))
		add(t("packet too big, wrong checksum"), "icmp_bad_checksum", pkttest.CorruptL4Checksum(pkttest.ICMPError(r6, c, 2, 0, 1400, reply, 0, pkttest.Opts{})))
	}
	add("ipip6 too big: answered", "tx", pkttest.TCP(next6(), vipEP("[2001:db8::53]:80"), pkttest.ACK, 2, 2, pkttest.Opts{Payload: payload(1400, 'b')}))

	// UDP to a nat VIP.
	dns := vipEP("192.0.2.54:53")
	add("udp query", "tx", pkttest.UDP(next4(), dns, pkttest.Opts{Payload: payload(30, 'q')}))
	add("udp from loopback", "bad_source", pkttest.UDP(client("127.0.0.1:53"), dns, pkttest.Opts{Payload: payload(30, 'q')}))
	add("udp with TTL 1", "ttl_exceeded", pkttest.SetIPv4(pkttest.UDP(next4(), dns, pkttest.Opts{Payload: payload(30, 'q')}), func(ip []byte) { ip[8] = 1 }))
	uf := pkttest.FragmentIPv4(pkttest.UDP(next4(), dns, pkttest.Opts{Payload: payload(100, 'u')}), 40, false)
	add("udp fragment 1/3", "tx", uf[0])
	add("udp fragment 3/3", "tx", uf[2])
	add("udp fragment 3/3 again", "fragment_overlap", uf[2])
	add("udp fragment 2/3 after the overlap", "fragment_overlap", uf[1])

	// What the parser has always refused, for completeness.
	v := vipEP("192.0.2.51:80")
	good := func() []byte { return syn(next4(), v) }
	ipOf := func(f []byte) []byte { return pkttest.L3(f) }
	add("frame too short", "frame_too_short", good()[:10])
	add("three VLAN tags", "vlan_too_deep", pkttest.TCP(next4(), v, pkttest.SYN, 1, 0, pkttest.Opts{VLANs: []uint16{10, 20, 30}}))
	add("one VLAN tag", "tx", pkttest.TCP(next4(), v, pkttest.SYN, 1, 0, pkttest.Opts{VLANs: []uint16{10}}))
	add("IPv4 header cut", "ipv4_truncated", good()[:14+10])
	b := good()
	ipOf(b)[0] = 0x55
	pkttest.FixIPv4Checksum(ipOf(b))
	add("IPv4 version 5", "ipv4_bad_header", b)
	b = good()
	ipOf(b)[0] = 0x44
	add("IHL 4", "ipv4_bad_header", b)
	b = good()
	binary.BigEndian.PutUint16(ipOf(b)[2:], 1500)
	pkttest.FixIPv4Checksum(ipOf(b))
	add("total length past the frame", "ipv4_bad_length", b)
	b = good()
	ipOf(b)[10] ^= 0xff
	add("IPv4 header checksum", "ipv4_bad_checksum", b)
	v6 := syn(next6(), vipEP("[2001:db8::51]:80"))
	add("IPv6 header cut", "ipv6_truncated", v6[:14+20])
	b = append([]byte(nil), v6...)
	binary.BigEndian.PutUint16(ipOf(b)[4:], 2000)
	add("IPv6 payload length past the frame", "ipv6_bad_length", b)
	b = append([]byte(nil), v6...)
	binary.BigEndian.PutUint16(ipOf(b)[4:], 0)
	add("IPv6 jumbogram", "ipv6_bad_length", b)
	add("nine extension headers", "ipv6_bad_ext_headers", ipv6ExtChain(9))
	b = good()
	ip := ipOf(b)
	binary.BigEndian.PutUint16(ip[2:], 30)
	pkttest.FixIPv4Checksum(ip)
	add("10 bytes of TCP", "l4_truncated", b[:14+30])
	b = good()
	ipOf(b)[20+12] = 0xf0
	add("TCP data offset past the segment", "tcp_bad_offset", b)
	b = pkttest.UDP(next4(), dns, pkttest.Opts{Payload: payload(20, 'u')})
	binary.BigEndian.PutUint16(ipOf(b)[24:], 4)
	add("UDP length 4", "udp_bad_length", b)
	b = pkttest.EchoRequest(next4(), v, 1, 1, pkttest.Opts{})
	ip = ipOf(b)
	binary.BigEndian.PutUint16(ip[2:], 24)
	pkttest.FixIPv4Checksum(ip)
	add("4 bytes of ICMP", "icmp_truncated", b[:14+24])
	add("echo to a VIP", "tx", pkttest.EchoRequest(next4(), v, 1, 1, pkttest.Opts{}))
	add("ARP", "pass:not_ip", pkttest.ARP(gatewayMAC, netip.MustParseAddr("203.0.113.254"), netip.MustParseAddr("198.51.100.254")))
	add("another address", "pass:not_vip", syn(next4(), vipEP("192.0.2.99:80")))
	add("another port", "pass:not_vip", syn(next4(), vipEP("192.0.2.51:81")))
	add("SCTP to a VIP", "pass:other_protocol", pkttest.Raw(next4(), v, 132, pkttest.Opts{Payload: payload(16, 's')}))
	add("a reply to a SNAT port without a flow", "no_flow", pkttest.UDP(pkttest.EP(backendMAC(1), "10.1.0.1:53"), unitSide(netip.MustParseAddr("198.51.100.1"), 4000), pkttest.Opts{}))
	add("a SYN after it all", "tx", good())
	return out
}

var hostileCase = goldenCase{
	name:   "hostile",
	config: baseConfig(hostileConfig),
	// The overlapping datagrams' first pieces left before the overlap
	// showed; the rest of each was dropped (RFC 5722), so they stay
	// incomplete at the backend, which discards them.
	incomplete: 5,
	frames: func(*config.Config) [][]byte {
		var f [][]byte
		for _, t := range corpus() {
			f = append(f, t.frame)
		}
		return f
	},
	check: hostileCheck,
}

// hostileCheck holds every frame of the corpus to its tag, replaying
// them one at a time through a pipeline of the case's configuration; it
// also keeps testdata/hostile/tags.txt, the corpus's index, in step.
func hostileCheck(t *testing.T, r *Result, in, out []record) {
	frames := corpus()
	if len(frames) < 300 {
		t.Errorf("the corpus has %d frames, want at least 300", len(frames))
	}
	var idx strings.Builder
	for i, f := range frames {
		fmt.Fprintf(&idx, "%d\t%s\t%s\n", i, f.want, f.tag)
	}
	path := filepath.Join("testdata", "hostile", "tags.txt")
	if *update {
		mustWrite(t, path, []byte(idx.String()))
	} else if got, err := os.ReadFile(path); err != nil || string(got) != idx.String() {
		t.Errorf("%s does not match the corpus; rerun with -update", path)
	}

	cfg, err := config.Parse([]byte(baseConfig(hostileConfig)))
	if err != nil {
		t.Fatal(err)
	}
	snap, err := dataplane.Build(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	pc := dataplane.ConfigFrom(cfg, 0, nic.LinkEthernet, 0)
	pc.Workers = 1
	p, err := dataplane.New(pc, snap)
	if err != nil {
		t.Fatal(err)
	}
	// Buffers for packets sent in fragments, as a port lends them; the
	// corpus needs a few, never given back.
	p.UseAllocator(ring.New("lender", nic.LinkEthernet, 64, nic.Headroom+2048))
	o := dataplane.NewOutput(&pc)
	seen := map[string]bool{}
	sent := 0 // frames: a packet sent in fragments makes more than one
	for i, f := range frames {
		buf := make([]byte, nic.Headroom+len(f.frame)+64)
		copy(buf[nic.Headroom:], f.frame)
		fr := []nic.Frame{{Buf: buf, Off: nic.Headroom, Len: len(f.frame)}}
		before := p.Stats()
		o.Reset()
		p.Process(1, fr, o)
		after := p.Stats()
		got := "held"
		switch {
		case after.TxPackets > before.TxPackets:
			got = "tx"
			sent += int(after.TxPackets - before.TxPackets)
		case after.Dropped() > before.Dropped():
			for _, d := range dataplane.Drops() {
				if after.Drops[d] > before.Drops[d] {
					got = d.String()
				}
			}
		case after.Passed() > before.Passed():
			for _, ps := range dataplane.Passes() {
				if after.Passes[ps] > before.Passes[ps] {
					got = "pass:" + ps.String()
				}
			}
		}
		if got != f.want {
			t.Errorf("frame %d (%s): %s, want %s", i, f.tag, got, f.want)
		}
		seen[f.want] = true
	}
	// Every class of issue 11's list, and every reason the parser names.
	for _, want := range []string{"source_routed", "icmp_bad_checksum", "bad_source", "tcp_bad_flags", "tcp_not_syn",
		"ttl_exceeded", "ipv4_bad_options", "ipv6_bad_ext_headers", "bad_fragment", "fragment_overlap", "ipv6_bad_header",
		"icmp_bad_quote", "icmp_truncated", "too_big", "tcp_bad_options", "frame_too_short", "vlan_too_deep",
		"ipv4_truncated", "ipv4_bad_header", "ipv4_bad_length", "ipv4_bad_checksum", "ipv6_truncated", "ipv6_bad_length",
		"l4_truncated", "tcp_bad_offset", "udp_bad_length", "icmp_no_flow", "no_flow"} {
		if !seen[want] {
			t.Errorf("the corpus has no frame for %s", want)
		}
	}
	// The golden run agrees with the one-by-one run on what left.
	if len(out) != sent {
		t.Errorf("the capture's replay forwarded %d frames, the one-by-one run %d", len(out), sent)
	}
}
