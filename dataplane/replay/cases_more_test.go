package replay

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"testing"

	"github.com/tetherlb/tether/config"
	"github.com/tetherlb/tether/dataplane"
	"github.com/tetherlb/tether/internal/pkttest"
)

// malformedCase feeds every kind of broken frame the parser names a drop
// reason for, between good frames that must still get through.
var malformedCase = goldenCase{
	name: "malformed",
	config: baseConfig(`  - name: web
    address: 192.0.2.10
    port: 80
    protocol: tcp
    mode: halfnat
` + backendsYAML(false, 80, 2) + `  - name: nat-udp
    address: 192.0.2.11
    port: 53
    protocol: udp
    mode: nat
    snat: [198.51.100.1]
` + backendsYAML(false, 53, 1) + `  - name: empty
    address: 192.0.2.12
    port: 80
    protocol: tcp
    mode: halfnat
    backends:
      - {address: 10.1.0.1, weight: 0}
      - {address: 10.1.0.2, state: draining}
`),
	frames: func(c *config.Config) [][]byte {
		vip := vipEP("192.0.2.10:80")
		cl := client("203.0.113.1:1000")
		good := func() []byte { return pkttest.TCP(cl, vip, pkttest.SYN, 1, 0, pkttest.Opts{MSS: 1460}) }
		ipOf := func(f []byte) []byte { return pkttest.L3(f) }
		var f [][]byte
		add := func(b []byte) { f = append(f, b) }

		add(good()[:10])                                                                        // frame_too_short
		add(pkttest.TCP(cl, vip, pkttest.SYN, 1, 0, pkttest.Opts{VLANs: []uint16{10, 20, 30}})) // vlan_too_deep
		add(pkttest.TCP(cl, vip, pkttest.SYN, 2, 0, pkttest.Opts{VLANs: []uint16{10}}))         // forwarded, tag kept
		add(pkttest.TCP(client("203.0.113.2:1000"), vip, pkttest.SYN, 3, 0, pkttest.Opts{VLANs: []uint16{10, 20}}))
		add(good()[:14+10]) // ipv4_truncated
		b := good()
		ipOf(b)[0] = 0x55 // version 5: ipv4_bad_header
		pkttest.FixIPv4Checksum(ipOf(b))
		add(b)
		b = good()
		ipOf(b)[0] = 0x44 // IHL 4: ipv4_bad_header
		add(b)
		b = good()
		binary.BigEndian.PutUint16(ipOf(b)[2:], 1500) // ipv4_bad_length
		pkttest.FixIPv4Checksum(ipOf(b))
		add(b)
		b = good()
		ipOf(b)[10] ^= 0xff // ipv4_bad_checksum
		add(b)
		v6 := pkttest.TCP(client("[2001:db8:c::1]:1000"), vipEP("[2001:db8::1]:80"), pkttest.SYN, 1, 0, pkttest.Opts{})
		add(v6[:14+20]) // ipv6_truncated
		b = append([]byte(nil), v6...)
		binary.BigEndian.PutUint16(ipOf(b)[4:], 2000) // ipv6_bad_length
		add(b)
		add(ipv6ExtChain(9)) // ipv6_bad_ext_headers
		b = good()
		ip := ipOf(b)
		binary.BigEndian.PutUint16(ip[2:], 30) // 10 bytes of TCP: l4_truncated
		pkttest.FixIPv4Checksum(ip)
		add(b[:14+30])
		b = good()
		ipOf(b)[20+12] = 0xf0 // data offset 60 in a 44-byte segment: tcp_bad_offset
		add(b)
		b = pkttest.UDP(cl, vipEP("192.0.2.11:53"), pkttest.Opts{Payload: payload(20, 'u')})
		binary.BigEndian.PutUint16(ipOf(b)[24:], 4) // udp_bad_length
		add(b)
		// A first fragment holding only 8 bytes of the TCP header.
		add(pkttest.FragmentIPv4(pkttest.TCP(cl, vip, pkttest.ACK, 1, 1, pkttest.Opts{Payload: payload(100, 't')}), 8, false)[0])
		b = pkttest.EchoRequest(cl, vip, 1, 1, pkttest.Opts{})
		ip = ipOf(b)
		binary.BigEndian.PutUint16(ip[2:], 24) // 4 bytes of ICMP: icmp_truncated
		pkttest.FixIPv4Checksum(ip)
		add(b[:14+24])
		add(pkttest.ARP(gatewayMAC, netip.MustParseAddr("203.0.113.254"), netip.MustParseAddr("198.51.100.254")))                       // pass not_ip
		add(pkttest.TCP(cl, vipEP("192.0.2.99:80"), pkttest.SYN, 1, 0, pkttest.Opts{}))                                                 // pass not_vip
		add(pkttest.TCP(cl, vipEP("192.0.2.10:81"), pkttest.SYN, 1, 0, pkttest.Opts{}))                                                 // pass not_vip (port)
		add(pkttest.Raw(cl, vip, 132, pkttest.Opts{Payload: payload(16, 's')}))                                                         // pass other_protocol
		add(pkttest.UDP(pkttest.EP(backendMAC(1), "10.1.0.1:53"), unitSide(netip.MustParseAddr("198.51.100.1"), 4000), pkttest.Opts{})) // no_flow
		add(pkttest.TCP(cl, vipEP("192.0.2.12:80"), pkttest.SYN, 1, 0, pkttest.Opts{}))                                                 // no_backend
		add(good())                                                                                                                     // still fine after all that
		return f
	},
	check: func(t *testing.T, r *Result, in, out []record) {
		s := &r.Stats
		for _, d := range []dataplane.Drop{
			dataplane.DropFrameTooShort, dataplane.DropVLANTooDeep, dataplane.DropIPv4Truncated,
			dataplane.DropIPv4BadLength, dataplane.DropIPv4BadChecksum, dataplane.DropIPv6Truncated,
			dataplane.DropIPv6BadLength, dataplane.DropIPv6BadExtHeaders, dataplane.DropL4Truncated,
			dataplane.DropTCPBadOffset, dataplane.DropUDPBadLength, dataplane.DropBadFragment,
			dataplane.DropICMPTruncated, dataplane.DropNoFlow, dataplane.DropNoBackend,
		} {
			if s.Drops[d] != 1 {
				t.Errorf("drop %s counted %d times, want 1", d, s.Drops[d])
			}
		}
		if s.Drops[dataplane.DropIPv4BadHeader] != 2 {
			t.Errorf("drop ipv4_bad_header counted %d times, want 2", s.Drops[dataplane.DropIPv4BadHeader])
		}
		if s.Passes[dataplane.PassNotIP] != 1 || s.Passes[dataplane.PassNotVIP] != 2 || s.Passes[dataplane.PassProtocol] != 1 {
			t.Errorf("passes: not_ip %d (1), not_vip %d (2), other_protocol %d (1)",
				s.Passes[dataplane.PassNotIP], s.Passes[dataplane.PassNotVIP], s.Passes[dataplane.PassProtocol])
		}
		if s.TxPackets != 3 {
			t.Errorf("%d frames forwarded, want the 3 good ones", s.TxPackets)
		}
	},
}

// ipv6ExtChain builds an IPv6 packet with n destination-options headers
// before its UDP header.
func ipv6ExtChain(n int) []byte {
	u := pkttest.UDP(client("[2001:db8:c::1]:1"), vipEP("[2001:db8::1]:53"), pkttest.Opts{Payload: payload(8, 'x')})
	eth, ip := u[:14], pkttest.L3(u)
	var ext []byte
	for i := 0; i < n; i++ {
		next := byte(60)
		if i == n-1 {
			next = 17
		}
		ext = append(ext, next, 0, 1, 4, 0, 0, 0, 0) // PadN filling 8 bytes
	}
	hdr := append([]byte(nil), ip[:40]...)
	hdr[6] = 60
	binary.BigEndian.PutUint16(hdr[4:], uint16(len(ext)+len(ip)-40))
	out := append(append(append([]byte(nil), eth...), hdr...), ext...)
	return append(out, ip[40:]...)
}

// sampleCase is the bundled capture the README's first command replays:
// a few dozen clients on four VIPs, one per mode, with replies where the
// mode sends them through the unit, and some noise.
var sampleCase = goldenCase{
	name: "sample",
	config: baseConfig(`  - name: web
    address: 192.0.2.10
    port: 80
    protocol: tcp
    mode: nat
    snat: [198.51.100.1]
    backends:
      - {name: web-1, address: 10.1.0.1, port: 8080, weight: 2}
      - {name: web-2, address: 10.1.0.2, port: 8080, weight: 1}
      - {name: web-3, address: 10.1.0.3, port: 8080, weight: 1}
  - name: dns
    address: 192.0.2.53
    port: 53
    protocol: udp
    mode: halfnat
` + backendsYAML(false, 53, 3) + `  - name: stream6
    address: "2001:db8::80"
    port: 443
    protocol: tcp
    mode: tunnel
` + backendsYAML(true, 443, 3) + `  - name: dsr
    address: 192.0.2.44
    port: 443
    protocol: tcp
    mode: ipip
` + backendsYAML(false, 443, 2)),
	frames: func(c *config.Config) [][]byte {
		w := newWorld(c)
		var convs [][][]byte
		web := vipEP("192.0.2.10:80")
		for i := range 24 {
			cl := client(fmt.Sprintf("203.0.113.%d:%d", 1+i, 40000+i*7))
			peer := unitSide(netip.MustParseAddr("198.51.100.1"), uint16(1024+i))
			convs = append(convs, tcpConversation(cl, web, w.backendFor(cl, web, 6), &peer))
		}
		var f [][]byte
		for _, c := range convs {
			f = append(f, c[0])
		}
		rest := make([][][]byte, 0, len(convs)+20)
		for _, c := range convs {
			rest = append(rest, c[1:])
		}
		dns := vipEP("192.0.2.53:53")
		for i := range 12 {
			cl := client(fmt.Sprintf("198.18.0.%d:%d", 1+i, 20000+i))
			peer := unitSide(cl.Addr, cl.Port)
			rest = append(rest, udpExchange(cl, dns, w.backendFor(cl, dns, 17), &peer, 48))
		}
		st := vipEP("[2001:db8::80]:443")
		for i := range 6 {
			cl := client(fmt.Sprintf("[2001:db8:c::%x]:%d", 0x50+i, 50000+i))
			rest = append(rest, tcpConversation(cl, st, w.backendFor(cl, st, 6), nil))
		}
		dsr := vipEP("192.0.2.44:443")
		for i := range 6 {
			cl := client(fmt.Sprintf("203.0.113.%d:%d", 100+i, 30000+i))
			rest = append(rest, tcpConversation(cl, dsr, w.backendFor(cl, dsr, 6), nil))
		}
		f = append(f, interleave(rest...)...)
		// Noise: ARP, a probe of a port no VIP serves, a corrupt header.
		f = append(f, pkttest.ARP(gatewayMAC, netip.MustParseAddr("203.0.113.254"), netip.MustParseAddr("198.51.100.254")))
		f = append(f, pkttest.TCP(client("203.0.113.66:6666"), vipEP("192.0.2.10:22"), pkttest.SYN, 1, 0, pkttest.Opts{}))
		bad := pkttest.TCP(client("203.0.113.67:6667"), web, pkttest.SYN, 1, 0, pkttest.Opts{})
		pkttest.L3(bad)[10] ^= 0x55
		return append(f, bad)
	},
	check: func(t *testing.T, r *Result, in, out []record) {
		if r.Stats.NewFlows != 48 || r.Stats.Dropped() != 1 || r.Stats.Passed() != 2 {
			t.Errorf("new flows %d (48), dropped %d (1), passed %d (2)", r.Stats.NewFlows, r.Stats.Dropped(), r.Stats.Passed())
		}
	},
}
