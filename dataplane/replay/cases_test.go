package replay

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/tetherlb/tether/config"
	"github.com/tetherlb/tether/dataplane"
	"github.com/tetherlb/tether/internal/pkttest"
	"github.com/tetherlb/tether/nic"
)

// The test network: clients behind a router (gatewayMAC), the unit, and
// backends on the unit's link.
const (
	unitMAC    = "02:00:00:00:00:01"
	gatewayMAC = "02:00:00:00:00:fe"
)

func backendMAC(i int) string { return fmt.Sprintf("02:00:00:00:0b:%02x", i) }

// baseConfig wraps VIP definitions in a unit configuration with the test
// network's neighbours.
func baseConfig(vips string) string {
	var n strings.Builder
	for i := 1; i <= 3; i++ {
		fmt.Fprintf(&n, "    - {ip: 10.1.0.%d, mac: \"%s\"}\n", i, backendMAC(i))
		fmt.Fprintf(&n, "    - {ip: \"fd00:1::%d\", mac: \"%s\"}\n", i, backendMAC(i))
	}
	return `unit:
  name: golden
  address4: 198.51.100.254
  address6: "2001:db8:5::fe"
  mac: "` + unitMAC + `"
forwarder:
  flows:
    max: 4096
l2:
  gateway_mac: "` + gatewayMAC + `"
  neighbors:
` + n.String() + "vips:\n" + vips
}

func backendsYAML(v6 bool, port int, n int) string {
	var b strings.Builder
	b.WriteString("    backends:\n")
	for i := 1; i <= n; i++ {
		if v6 {
			fmt.Fprintf(&b, "      - {address: \"fd00:1::%d\", port: %d}\n", i, port)
		} else {
			fmt.Fprintf(&b, "      - {address: 10.1.0.%d, port: %d}\n", i, port)
		}
	}
	return b.String()
}

// world answers questions about a case's configuration: which backend a
// client gets, as the pipeline will decide it.
type world struct {
	snap *dataplane.Snapshot
}

func newWorld(c *config.Config) *world {
	s, err := dataplane.Build(c, nil)
	if err != nil {
		panic(err)
	}
	return &world{snap: s}
}

func client(addrPort string) pkttest.Endpoint { return pkttest.EP(gatewayMAC, addrPort) }
func vipEP(addrPort string) pkttest.Endpoint  { return pkttest.EP(unitMAC, addrPort) }

// backendFor returns the backend endpoint (with its MAC) Maglev gives the
// client on the VIP.
func (w *world) backendFor(cl, vip pkttest.Endpoint, proto uint8) pkttest.Endpoint {
	v := w.snap.LookupVIP(vip.Addr, vip.Port, proto)
	id, ok := v.Choose(netip.AddrPortFrom(cl.Addr, cl.Port), proto)
	if !ok {
		panic("no backend")
	}
	be := &w.snap.Backends[id]
	idx := int(be.Addr.As16()[15])
	return pkttest.Endpoint{MAC: pkttest.MustMAC(backendMAC(idx)), Addr: be.Addr, Port: be.Port}
}

// unitSide is how the backend addresses its replies: to the SNAT address
// (nat) or to the client (halfnat), either way to the unit's MAC.
func unitSide(addr netip.Addr, port uint16) pkttest.Endpoint {
	return pkttest.Endpoint{MAC: pkttest.MustMAC(unitMAC), Addr: addr, Port: port}
}

// tcpConversation is a whole TCP connection: handshake, a request, a
// response, and close. peer is where the backend sends its segments;
// without a peer (DSR modes) only the client's side passes the unit.
func tcpConversation(cl, vip, be pkttest.Endpoint, peer *pkttest.Endpoint) [][]byte {
	var f [][]byte
	req := []byte("GET / HTTP/1.1\r\nHost: vip\r\n\r\n")
	resp := []byte("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
	f = append(f, pkttest.TCP(cl, vip, pkttest.SYN, 1000, 0, pkttest.Opts{MSS: 1460, DF: true}))
	if peer != nil {
		f = append(f, pkttest.TCP(be, *peer, pkttest.SYN|pkttest.ACK, 5000, 1001, pkttest.Opts{MSS: 1460, DF: true}))
	}
	f = append(f, pkttest.TCP(cl, vip, pkttest.ACK, 1001, 5001, pkttest.Opts{DF: true}))
	f = append(f, pkttest.TCP(cl, vip, pkttest.ACK|pkttest.PSH, 1001, 5001, pkttest.Opts{DF: true, Payload: req}))
	if peer != nil {
		f = append(f, pkttest.TCP(be, *peer, pkttest.ACK|pkttest.PSH, 5001, 1001+uint32(len(req)), pkttest.Opts{DF: true, Payload: resp}))
	}
	f = append(f, pkttest.TCP(cl, vip, pkttest.ACK|pkttest.FIN, 1001+uint32(len(req)), 5001+uint32(len(resp)), pkttest.Opts{DF: true}))
	if peer != nil {
		f = append(f, pkttest.TCP(be, *peer, pkttest.ACK|pkttest.FIN, 5001+uint32(len(resp)), 1002+uint32(len(req)), pkttest.Opts{DF: true}))
	}
	f = append(f, pkttest.TCP(cl, vip, pkttest.ACK, 1002+uint32(len(req)), 5002+uint32(len(resp)), pkttest.Opts{DF: true}))
	return f
}

// udpExchange is a request and, with a peer, its response.
func udpExchange(cl, vip, be pkttest.Endpoint, peer *pkttest.Endpoint, size int) [][]byte {
	f := [][]byte{pkttest.UDP(cl, vip, pkttest.Opts{Payload: payload(size, 'q')})}
	if peer != nil {
		f = append(f, pkttest.UDP(be, *peer, pkttest.Opts{Payload: payload(size, 'r')}))
	}
	return f
}

func payload(n int, c byte) []byte { return bytes.Repeat([]byte{c}, n) }

// interleave merges conversations round-robin, as concurrent clients'
// packets would arrive.
func interleave(convs ...[][]byte) [][]byte {
	var out [][]byte
	for i := 0; ; i++ {
		added := false
		for _, c := range convs {
			if i < len(c) {
				out = append(out, c[i])
				added = true
			}
		}
		if !added {
			return out
		}
	}
}

func noDrops(t *testing.T, r *Result) {
	t.Helper()
	if d := r.Stats.Dropped(); d != 0 {
		var names []string
		for _, reason := range dataplane.Drops() {
			if n := r.Stats.Drops[reason]; n > 0 {
				names = append(names, fmt.Sprintf("%s=%d", reason, n))
			}
		}
		t.Fatalf("%d frames dropped: %s", d, strings.Join(names, " "))
	}
}

// ipAddrs returns the source and destination of an IP packet.
func ipAddrs(ip []byte) (netip.Addr, netip.Addr) {
	if ip[0]>>4 == 6 {
		return netip.AddrFrom16([16]byte(ip[8:24])), netip.AddrFrom16([16]byte(ip[24:40]))
	}
	return netip.AddrFrom4([4]byte(ip[12:16])), netip.AddrFrom4([4]byte(ip[16:20]))
}

// decapRestores checks that every tunneled output frame restores, through
// the flow-ID map, to exactly the IP packet that went in.
// aged is an IP packet as the unit forwards it: one router hop older
// (forwarder.ttl decrement, the default), TTL or hop limit minus one.
func aged(ip []byte) []byte {
	out := append([]byte(nil), ip...)
	if out[0]>>4 == 6 {
		out[7]--
		return out
	}
	out[8]--
	pkttest.FixIPv4Checksum(out)
	return out
}

func decapRestores(t *testing.T, r *Result, in, out []record) {
	t.Helper()
	var fromClients [][]byte
	for _, f := range in {
		fromClients = append(fromClients, aged(pkttest.IP(f.data, false)))
	}
	for i, o := range out {
		fr := nic.Frame{Buf: append([]byte(nil), o.data...), Len: len(o.data)}
		if !dataplane.Decap(&fr, nic.LinkEthernet, r.Tunnel) {
			t.Fatalf("output frame %d does not decapsulate", i)
		}
		got := pkttest.IP(fr.Data(), false)
		found := false
		for _, w := range fromClients {
			if bytes.Equal(got, w) {
				found = true
				break
			}
		}
		if !found {
			t.Fatalf("output frame %d restores to a packet that never went in:\n% x", i, got)
		}
	}
}

var goldenCases = []goldenCase{
	{
		name: "nat_ipv4_tcp",
		config: baseConfig(`  - name: web
    address: 192.0.2.10
    port: 80
    protocol: tcp
    mode: nat
    snat: [198.51.100.1]
` + backendsYAML(false, 8080, 3)),
		frames: func(c *config.Config) [][]byte {
			w := newWorld(c)
			vip := vipEP("192.0.2.10:80")
			var convs [][][]byte
			for i := range 4 {
				cl := client(fmt.Sprintf("203.0.113.%d:%d", 10+i, 40000+i))
				peer := unitSide(netip.MustParseAddr("198.51.100.1"), uint16(1024+i))
				convs = append(convs, tcpConversation(cl, vip, w.backendFor(cl, vip, 6), &peer))
			}
			// Connections start one after another, so SNAT ports are
			// handed out in client order.
			var f [][]byte
			for _, c := range convs {
				f = append(f, c[0])
			}
			rest := make([][][]byte, len(convs))
			for i, c := range convs {
				rest[i] = c[1:]
			}
			return append(f, interleave(rest...)...)
		},
		check: func(t *testing.T, r *Result, in, out []record) {
			noDrops(t, r)
			if r.Stats.NewFlows != 4 {
				t.Errorf("new flows = %d, want 4", r.Stats.NewFlows)
			}
			// Client-side packets leave from the SNAT address to a
			// backend; backend packets leave from the VIP to a client.
			for i, o := range out {
				src, dst := ipAddrs(pkttest.L3(o.data))
				toBackend := strings.HasPrefix(dst.String(), "10.1.0.")
				if toBackend && src.String() != "198.51.100.1" || !toBackend && src.String() != "192.0.2.10" {
					t.Errorf("frame %d: %v > %v is not translated", i, src, dst)
				}
			}
		},
	},
	{
		name: "nat_ipv6_udp",
		config: baseConfig(`  - name: dns6
    address: "2001:db8::10"
    port: 53
    protocol: udp
    mode: nat
    snat: ["2001:db8:5::1"]
    snat_ports: 20000-20999
` + backendsYAML(true, 5353, 2)),
		frames: func(c *config.Config) [][]byte {
			w := newWorld(c)
			vip := vipEP("[2001:db8::10]:53")
			var f [][]byte
			for i := range 3 {
				cl := client(fmt.Sprintf("[2001:db8:c::%d]:%d", i+1, 5000+i))
				peer := unitSide(netip.MustParseAddr("2001:db8:5::1"), uint16(20000+i))
				f = append(f, udpExchange(cl, vip, w.backendFor(cl, vip, 17), &peer, 40)...)
			}
			return f
		},
		check: func(t *testing.T, r *Result, in, out []record) {
			noDrops(t, r)
			if len(out) != 6 {
				t.Errorf("%d frames out, want 6", len(out))
			}
		},
	},
	{
		name: "halfnat_ipv4_udp",
		config: baseConfig(`  - name: dns
    address: 192.0.2.20
    port: 53
    protocol: udp
    mode: halfnat
` + backendsYAML(false, 53, 3)),
		frames: func(c *config.Config) [][]byte {
			w := newWorld(c)
			vip := vipEP("192.0.2.20:53")
			var f [][]byte
			for i := range 5 {
				cl := client(fmt.Sprintf("203.0.113.%d:%d", 50+i, 3000+i))
				peer := unitSide(cl.Addr, cl.Port)
				f = append(f, udpExchange(cl, vip, w.backendFor(cl, vip, 17), &peer, 60)...)
			}
			// A datagram without a UDP checksum keeps none.
			cl := client("203.0.113.99:999")
			nock := pkttest.UDP(cl, vip, pkttest.Opts{Payload: payload(10, 'z')})
			ip := pkttest.L3(nock)
			ip[20+6], ip[20+7] = 0, 0
			return append(f, nock)
		},
		check: func(t *testing.T, r *Result, in, out []record) {
			noDrops(t, r)
			last := pkttest.L3(out[len(out)-1].data)
			if binary.BigEndian.Uint16(last[26:]) != 0 {
				t.Errorf("a UDP datagram without a checksum left with one")
			}
		},
	},
	{
		name: "halfnat_ipv6_tcp",
		config: baseConfig(`  - name: web6
    address: "2001:db8::20"
    port: 443
    protocol: tcp
    mode: halfnat
` + backendsYAML(true, 8443, 3)),
		frames: func(c *config.Config) [][]byte {
			w := newWorld(c)
			vip := vipEP("[2001:db8::20]:443")
			var convs [][][]byte
			for i := range 3 {
				cl := client(fmt.Sprintf("[2001:db8:c::%x]:%d", 0x100+i, 50000+i))
				peer := unitSide(cl.Addr, cl.Port)
				convs = append(convs, tcpConversation(cl, vip, w.backendFor(cl, vip, 6), &peer))
			}
			return interleave(convs...)
		},
		check: func(t *testing.T, r *Result, in, out []record) { noDrops(t, r) },
	},
	{
		name: "tunnel_ipv4_tcp",
		config: baseConfig(`  - name: tun
    address: 192.0.2.30
    port: 80
    protocol: tcp
    mode: tunnel
` + backendsYAML(false, 80, 3)),
		frames: func(c *config.Config) [][]byte {
			w := newWorld(c)
			vip := vipEP("192.0.2.30:80")
			var convs [][][]byte
			for i := range 3 {
				cl := client(fmt.Sprintf("203.0.113.%d:%d", 70+i, 33000+i))
				convs = append(convs, tcpConversation(cl, vip, w.backendFor(cl, vip, 6), nil))
			}
			return interleave(convs...)
		},
		check: func(t *testing.T, r *Result, in, out []record) {
			noDrops(t, r)
			for i, o := range out {
				if a, b := len(pkttest.IP(in[i].data, false)), len(pkttest.IP(o.data, false)); a != b {
					t.Fatalf("packet %d grew from %d to %d bytes: the flow-ID tunnel has no overhead", i, a, b)
				}
				src, _ := ipAddrs(pkttest.L3(o.data))
				if src.String() != "198.51.100.254" {
					t.Errorf("frame %d leaves from %v, want the unit's address", i, src)
				}
			}
			decapRestores(t, r, in, out)
		},
	},
	{
		name: "tunnel_ipv6_udp",
		config: baseConfig(`  - name: tun6
    address: "2001:db8::30"
    port: 5000
    protocol: udp
    mode: tunnel
` + backendsYAML(true, 5000, 2)),
		frames: func(c *config.Config) [][]byte {
			w := newWorld(c)
			vip := vipEP("[2001:db8::30]:5000")
			var f [][]byte
			for i := range 4 {
				cl := client(fmt.Sprintf("[2001:db8:c::%x]:%d", 0x200+i, 6000+i))
				f = append(f, udpExchange(cl, vip, w.backendFor(cl, vip, 17), nil, 100+i)...)
				f = append(f, udpExchange(cl, vip, w.backendFor(cl, vip, 17), nil, 10)...)
			}
			return f
		},
		check: func(t *testing.T, r *Result, in, out []record) {
			noDrops(t, r)
			if r.Stats.NewFlows != 4 {
				t.Errorf("new flows = %d, want 4", r.Stats.NewFlows)
			}
			decapRestores(t, r, in, out)
		},
	},
	{
		name: "ipip_ipv4_tcp",
		config: baseConfig(`  - name: dsr
    address: 192.0.2.40
    port: 80
    protocol: tcp
    mode: ipip
    mtu: 1500
` + backendsYAML(false, 80, 3) + `  - name: dsr-udp
    address: 192.0.2.40
    port: 9000
    protocol: udp
    mode: ipip
` + backendsYAML(false, 9000, 1)),
		frames: func(c *config.Config) [][]byte {
			w := newWorld(c)
			vip := vipEP("192.0.2.40:80")
			var convs [][][]byte
			for i := range 3 {
				cl := client(fmt.Sprintf("203.0.113.%d:%d", 80+i, 34000+i))
				convs = append(convs, tcpConversation(cl, vip, w.backendFor(cl, vip, 6), nil))
			}
			f := interleave(convs...)
			// A full-size datagram cannot take 20 more bytes: with DF it
			// is answered with "fragmentation needed", without it sent
			// as two fragments of the outer header.
			big := vipEP("192.0.2.40:9000")
			f = append(f, pkttest.UDP(client("203.0.113.90:1"), big, pkttest.Opts{Payload: payload(1472, 'b'), DF: true}))
			f = append(f, pkttest.UDP(client("203.0.113.91:1"), big, pkttest.Opts{Payload: payload(1472, 'c')}))
			return f
		},
		check: func(t *testing.T, r *Result, in, out []record) {
			noDrops(t, r)
			if r.Stats.TooBigAnswered != 1 || r.Stats.TooBigFragmented != 1 {
				t.Errorf("want the oversize datagram with DF answered and the one without sent in fragments")
			}
			// Two whole IP-in-IP packets whose inner fragments
			// reassemble to the client's datagram, one hop older.
			var pieces [][]byte
			for _, o := range out[len(out)-2:] {
				outer := pkttest.IP(o.data, false)
				if outer[9] != 4 || binary.BigEndian.Uint16(outer[6:])&0x3fff != 0 || len(outer) > 1500 {
					t.Errorf("a fragment is not a whole IP-in-IP packet that fits the tunnel:\n% x", outer[:20])
				}
				pieces = append(pieces, outer[20:])
			}
			inner, err := pkttest.Reassemble(pieces)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(inner, aged(pkttest.IP(in[len(in)-1].data, false))) {
				t.Errorf("the last two frames' inner fragments do not reassemble to the datagram without DF")
			}
			// The answer: ICMP fragmentation needed from the VIP to the
			// client, with the MTU the tunnel leaves (1500 - 20), quoting
			// the datagram's start.
			ans := pkttest.IP(out[len(out)-3].data, false)
			if src, dst := ipAddrs(ans); ans[9] != 1 || ans[20] != 3 || ans[21] != 4 || binary.BigEndian.Uint16(ans[26:]) != 1480 ||
				src.String() != "192.0.2.40" || dst.String() != "203.0.113.90" || len(ans) != 576 ||
				!bytes.Equal(ans[28+12:28+20], pkttest.IP(in[len(in)-2].data, false)[12:20]) {
				t.Errorf("the too-big answer is not ICMP fragmentation needed from the VIP with MTU 1480:\n% x", ans)
			}
			out = out[:len(out)-3]
			for i, o := range out {
				outer := pkttest.IP(o.data, false)
				if outer[9] != 4 {
					t.Fatalf("frame %d is not IP-in-IP", i)
				}
				inner := outer[20:]
				if inner[33]&0x02 != 0 { // SYN: the MSS was clamped to 1500-20-20-20
					if mss := binary.BigEndian.Uint16(inner[42:]); mss != 1440 {
						t.Errorf("frame %d: SYN MSS %d, want 1440", i, mss)
					}
					continue
				}
				if !bytes.Equal(inner, aged(pkttest.IP(in[i].data, false))) {
					t.Errorf("frame %d: inner packet differs from what the client sent, one hop older", i)
				}
			}
		},
	},
	{
		name: "ipip_ipv6_udp",
		config: baseConfig(`  - name: dsr6
    address: "2001:db8::40"
    port: 4500
    protocol: udp
    mode: ipip
` + backendsYAML(true, 4500, 3) + `  - name: dsr6-narrow
    address: "2001:db8::40"
    port: 4600
    protocol: udp
    mode: ipip
    mtu: 1300
` + backendsYAML(true, 4600, 1)),
		frames: func(c *config.Config) [][]byte {
			w := newWorld(c)
			vip := vipEP("[2001:db8::40]:4500")
			var f [][]byte
			for i := range 5 {
				cl := client(fmt.Sprintf("[2001:db8:c::%x]:%d", 0x300+i, 7000+i))
				f = append(f, udpExchange(cl, vip, w.backendFor(cl, vip, 17), nil, 200)...)
			}
			// A path narrower than 1280 + 40 bytes (RFC 2473 §7.1): a
			// 1280-byte packet, which its sender cannot shrink, leaves
			// in two fragments of the outer header; one of 1281 bytes is
			// answered with packet too big for 1280.
			narrow := vipEP("[2001:db8::40]:4600")
			f = append(f, pkttest.UDP(client("[2001:db8:c::400]:7100"), narrow, pkttest.Opts{Payload: payload(1280-48, 'n')}))
			f = append(f, pkttest.UDP(client("[2001:db8:c::401]:7101"), narrow, pkttest.Opts{Payload: payload(1281-48, 'o')}))
			return f
		},
		check: func(t *testing.T, r *Result, in, out []record) {
			noDrops(t, r)
			if r.Stats.TooBigAnswered != 1 || r.Stats.TooBigFragmented != 1 {
				t.Errorf("want the 1280-byte packet sent in fragments and the 1281-byte one answered")
			}
			n := len(out) - 3
			outer, err := pkttest.Reassemble([][]byte{pkttest.IP(out[n].data, false), pkttest.IP(out[n+1].data, false)})
			if err != nil {
				t.Fatal(err)
			}
			for _, o := range out[n : n+2] {
				if ip := pkttest.IP(o.data, false); len(ip) > 1300 {
					t.Errorf("a %d-byte fragment on a 1300-byte path", len(ip))
				}
			}
			if outer[6] != 41 || !bytes.Equal(outer[40:], aged(pkttest.IP(in[len(in)-2].data, false))) {
				t.Errorf("the two fragments do not reassemble to the 1280-byte packet in IPv6")
			}
			if ans := pkttest.IP(out[n+2].data, false); ans[6] != 58 || ans[40] != 2 || binary.BigEndian.Uint32(ans[44:]) != 1280 {
				t.Errorf("the 1281-byte packet was not answered with packet too big for 1280:\n% x", ans[:48])
			}
			out = out[:n]
			for i, o := range out {
				outer := pkttest.IP(o.data, false)
				if outer[6] != 41 || !bytes.Equal(outer[40:], aged(pkttest.IP(in[i].data, false))) {
					t.Errorf("frame %d is not the client's packet, one hop older, in IPv6", i)
				}
			}
		},
	},
	{
		name: "fragments",
		config: baseConfig(`  - name: nat-udp
    address: 192.0.2.50
    port: 7000
    protocol: udp
    mode: nat
    snat: [198.51.100.1]
` + backendsYAML(false, 7000, 2) + `  - name: half-udp
    address: 192.0.2.51
    port: 7000
    protocol: udp
    mode: halfnat
` + backendsYAML(false, 7000, 2) + `  - name: tun6-udp
    address: "2001:db8::50"
    port: 7000
    protocol: udp
    mode: tunnel
` + backendsYAML(true, 7000, 2) + `  - name: ipip-udp
    address: 192.0.2.52
    port: 7000
    protocol: udp
    mode: ipip
` + backendsYAML(false, 7000, 2)),
		frames: func(c *config.Config) [][]byte {
			var f [][]byte
			// In order, through nat: the datagram gets a new IP ID.
			d1 := pkttest.UDP(client("203.0.113.1:1111"), vipEP("192.0.2.50:7000"), pkttest.Opts{Payload: payload(3000, 'a'), ID: 0x1234})
			f = append(f, pkttest.FragmentIPv4(d1, 1200, false)...)
			// Out of order through halfnat: the last fragments overtake
			// the first, are held, and follow it.
			d2 := pkttest.UDP(client("203.0.113.2:2222"), vipEP("192.0.2.51:7000"), pkttest.Opts{Payload: payload(2500, 'b'), ID: 0x4321})
			fr := pkttest.FragmentIPv4(d2, 1000, false)
			f = append(f, fr[2], fr[1], fr[0])
			// IPv6 fragments through the tunnel: IPv6-in-IPv6, with the
			// client's source (the host's kernel reassembles them).
			d3 := pkttest.UDP(client("[2001:db8:c::1]:3333"), vipEP("[2001:db8::50]:7000"), pkttest.Opts{Payload: payload(2000, 'c')})
			f = append(f, pkttest.FragmentIPv6(d3, 1200, 0xabcdef)...)
			// Through ipip every fragment is encapsulated as it is.
			d4 := pkttest.UDP(client("203.0.113.4:4444"), vipEP("192.0.2.52:7000"), pkttest.Opts{Payload: payload(1800, 'd'), ID: 7})
			f = append(f, pkttest.FragmentIPv4(d4, 1000, false)...)
			// A fragment whose first fragment never comes is dropped
			// when its time runs out.
			d5 := pkttest.UDP(client("203.0.113.5:5555"), vipEP("192.0.2.50:7000"), pkttest.Opts{Payload: payload(2000, 'e'), ID: 99})
			f = append(f, pkttest.FragmentIPv4(d5, 1000, false)[1])
			return f
		},
		check: func(t *testing.T, r *Result, in, out []record) {
			if r.Stats.Drops[dataplane.DropFragmentTimeout] != 1 || r.Stats.Dropped() != 1 {
				t.Errorf("want one fragment_timeout drop and nothing else")
			}
			if r.Stats.FragmentsHeld != 3 {
				t.Errorf("fragments held = %d, want 3", r.Stats.FragmentsHeld)
			}
		},
	},
	{
		name: "icmp",
		config: baseConfig(`  - name: half
    address: 192.0.2.60
    port: 80
    protocol: tcp
    mode: halfnat
` + backendsYAML(false, 80, 1) + `  - name: nat
    address: 192.0.2.61
    port: 80
    protocol: tcp
    mode: nat
    snat: [198.51.100.1]
` + backendsYAML(false, 8080, 1) + `  - name: dsr6
    address: "2001:db8::60"
    port: 80
    protocol: tcp
    mode: ipip
` + backendsYAML(true, 80, 1)),
		frames: func(c *config.Config) [][]byte {
			w := newWorld(c)
			var f [][]byte
			// Echo requests to VIP addresses are answered by the unit.
			f = append(f, pkttest.EchoRequest(client("203.0.113.1:0"), vipEP("192.0.2.60:0"), 1, 1, pkttest.Opts{Payload: payload(32, 'p')}))
			f = append(f, pkttest.EchoRequest(client("[2001:db8:c::1]:0"), vipEP("[2001:db8::60]:0"), 1, 1, pkttest.Opts{Payload: payload(32, 'p')}))
			// halfnat: a router on the client's path says a reply was
			// too big: it reaches the backend, quoting its own packet.
			cl := client("203.0.113.7:41000")
			vip := vipEP("192.0.2.60:80")
			be := w.backendFor(cl, vip, 6)
			f = append(f, pkttest.TCP(cl, vip, pkttest.SYN, 1, 0, pkttest.Opts{}))
			sent := pkttest.TCP(vipEP("192.0.2.60:80"), cl, pkttest.ACK, 9, 2, pkttest.Opts{Payload: payload(1400, 'x'), DF: true})
			f = append(f, pkttest.ICMPError(client("203.0.113.254:0"), vipEP("192.0.2.60:0"), 3, 4, 1280, pkttest.L3(sent), 28, pkttest.Opts{}))
			// nat: the backend says port unreachable about a packet from
			// the SNAT address: the client gets it from the VIP, about
			// its own packet.
			cl2 := client("203.0.113.8:42000")
			vip2 := vipEP("192.0.2.61:80")
			be2 := w.backendFor(cl2, vip2, 6)
			f = append(f, pkttest.TCP(cl2, vip2, pkttest.SYN, 1, 0, pkttest.Opts{}))
			snat := unitSide(netip.MustParseAddr("198.51.100.1"), 1024)
			seenByBackend := pkttest.TCP(snat, be2, pkttest.SYN, 1, 0, pkttest.Opts{})
			f = append(f, pkttest.ICMPError(be2, pkttest.Endpoint{MAC: snat.MAC, Addr: snat.Addr}, 3, 3, 0, pkttest.L3(seenByBackend), 0, pkttest.Opts{}))
			// ipip: packet too big about the backend's direct reply goes
			// to the backend, encapsulated.
			cl3 := client("[2001:db8:c::9]:43000")
			vip3 := vipEP("[2001:db8::60]:80")
			f = append(f, pkttest.TCP(cl3, vip3, pkttest.SYN, 1, 0, pkttest.Opts{}))
			reply := pkttest.TCP(vipEP("[2001:db8::60]:80"), cl3, pkttest.ACK, 9, 2, pkttest.Opts{Payload: payload(1400, 'y')})
			f = append(f, pkttest.ICMPError(client("[2001:db8:c::fe]:0"), vipEP("[2001:db8::60]:0"), 2, 0, 1280, pkttest.L3(reply), 200, pkttest.Opts{}))
			// An error about a flow nobody knows is dropped.
			stranger := pkttest.TCP(vipEP("192.0.2.60:80"), client("203.0.113.200:1"), pkttest.ACK, 1, 1, pkttest.Opts{})
			f = append(f, pkttest.ICMPError(client("203.0.113.254:0"), vipEP("192.0.2.60:0"), 3, 4, 1280, pkttest.L3(stranger), 28, pkttest.Opts{}))
			// Echo to an address that is not a VIP goes to the host.
			f = append(f, pkttest.EchoRequest(client("203.0.113.1:0"), vipEP("198.51.100.254:0"), 1, 2, pkttest.Opts{}))
			_ = be
			return f
		},
		check: func(t *testing.T, r *Result, in, out []record) {
			s := &r.Stats
			if s.EchoReplies != 2 || s.ICMPForwarded != 3 || s.Drops[dataplane.DropICMPNoFlow] != 1 || s.Passes[dataplane.PassICMP] != 1 {
				t.Errorf("echo replies %d (want 2), icmp forwarded %d (want 3), icmp_no_flow %d (want 1), passed icmp %d (want 1)",
					s.EchoReplies, s.ICMPForwarded, s.Drops[dataplane.DropICMPNoFlow], s.Passes[dataplane.PassICMP])
			}
			if len(out) != 8 {
				t.Fatalf("%d frames out, want 8", len(out))
			}
			// Frame 3: the halfnat error went to the backend, quoting the
			// reply as the backend sent it (backend:80 > client).
			ip := pkttest.IP(out[3].data, false)
			src, dst := ipAddrs(ip)
			qsrc, qdst := ipAddrs(ip[28:])
			if src.String() != "203.0.113.254" || dst.String() != "10.1.0.1" || qsrc.String() != "10.1.0.1" || qdst.String() != "203.0.113.7" {
				t.Errorf("halfnat frag-needed: %v > %v quoting %v > %v", src, dst, qsrc, qdst)
			}
			// Frame 5: the nat error went to the client from the VIP,
			// quoting the client's own SYN (client:42000 > VIP:80).
			ip = pkttest.IP(out[5].data, false)
			src, dst = ipAddrs(ip)
			qsrc, qdst = ipAddrs(ip[28:])
			qports := binary.BigEndian.Uint32(ip[48:])
			if src.String() != "192.0.2.61" || dst.String() != "203.0.113.8" || qsrc.String() != "203.0.113.8" || qdst.String() != "192.0.2.61" || qports != 42000<<16|80 {
				t.Errorf("nat port-unreachable: %v > %v quoting %v > %v ports %#x", src, dst, qsrc, qdst, qports)
			}
			// Frame 7: the ICMPv6 error is tunneled to the backend whole.
			ip = pkttest.IP(out[7].data, false)
			if _, dst := ipAddrs(ip); ip[6] != 41 || dst.String() != "fd00:1::1" || ip[40+6] != 58 {
				t.Errorf("ipip packet-too-big not encapsulated to the backend")
			}
		},
	},
	{
		name: "raw_ipv4_nat",
		raw:  true,
		config: baseConfig(`  - name: web
    address: 192.0.2.10
    port: 80
    protocol: tcp
    mode: nat
    snat: [198.51.100.1]
` + backendsYAML(false, 8080, 2)),
		frames: func(c *config.Config) [][]byte {
			w := newWorld(c)
			vip := vipEP("192.0.2.10:80")
			cl := client("203.0.113.10:40000")
			peer := unitSide(netip.MustParseAddr("198.51.100.1"), 1024)
			var f [][]byte
			for _, fr := range tcpConversation(cl, vip, w.backendFor(cl, vip, 6), &peer) {
				f = append(f, pkttest.L3(fr))
			}
			return f
		},
		check: func(t *testing.T, r *Result, in, out []record) { noDrops(t, r) },
	},
	malformedCase,
	sampleCase,
	hostileCase,
}
