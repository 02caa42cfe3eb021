package afxdp

import (
	"bytes"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/tetherlb/tether/internal/nstest"
	"github.com/tetherlb/tether/internal/pkttest"
)

// programRun loads the redirect program with src as the half-NAT
// sources (and, when ns is not "", the local addresses followed in
// namespace ns) and returns what it does with a frame: "caught"
// (redirected: with no socket in the map, BPF_PROG_TEST_RUN reports it
// as XDP_DROP) or "passed".
func programRun(t *testing.T, src []Endpoint, ns string) func(frame []byte) string {
	t.Helper()
	nstest.Require(t)
	m, err := newMaps(1)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.close)
	prog, err := loadProgram(m)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { prog.Close() })
	if err := m.own(nil, src); err != nil {
		t.Fatal(err)
	}
	if ns != "" {
		var stop func()
		nstest.In(t, ns, func() { stop, err = m.followLocal() })
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(stop)
	}
	return func(frame []byte) string {
		t.Helper()
		ret, err := prog.Run(&ebpf.RunOptions{Data: frame})
		if err != nil {
			t.Fatal(err)
		}
		return map[uint32]string{xdpDrop: "caught", xdpPass: "passed"}[ret]
	}
}

// TestProgramCatchesFragmentedReplies runs the redirect program on
// frames (BPF_PROG_TEST_RUN; with no socket in the map a redirect comes
// back as XDP_DROP): a half-NAT backend's reply is caught by its source
// address and port, and when it is fragmented, its later fragments,
// which carry no port, are caught with it, for IPv4 and IPv6 (with or
// without a VLAN tag). A later fragment of a datagram whose first
// fragment was not caught (another port, or never seen) passes, as does
// the backend's other traffic.
func TestProgramCatchesFragmentedReplies(t *testing.T) {
	const udp = 17
	verdict := programRun(t, []Endpoint{
		{Addr: netip.MustParseAddr("10.0.0.10"), Port: 5353, Proto: udp},
		{Addr: netip.MustParseAddr("fd00::10"), Port: 5353, Proto: udp},
	}, "")
	const mac = "02:00:00:00:00:01"
	payload := bytes.Repeat([]byte("reply "), 700) // 4,200 bytes: four fragments of 1,400
	for _, vlans := range [][]uint16{nil, {7}} {
		o := pkttest.Opts{VLANs: vlans, Payload: payload}
		reply := func(src, dst string, id uint16) [][]byte {
			o := o
			o.ID = id
			frame := pkttest.UDP(pkttest.EP(mac, src), pkttest.EP(mac, dst), o)
			if netip.MustParseAddrPort(src).Addr().Is4() {
				return pkttest.FragmentIPv4(frame, 1400, false)
			}
			return pkttest.FragmentIPv6(frame, 1400, uint32(id)<<8|uint32(len(vlans)))
		}
		for _, c := range []struct {
			name     string
			frags    [][]byte
			from     int // the first fragment sent
			want     string
			wantRest string
		}{
			{"IPv4 reply", reply("10.0.0.10:5353", "10.0.1.2:40000", 1), 0, "caught", "caught"},
			{"IPv4 reply, first fragment never seen", reply("10.0.0.10:5353", "10.0.1.2:40000", 2), 1, "passed", "passed"},
			{"IPv4 from another port", reply("10.0.0.10:5354", "10.0.1.2:40000", 3), 0, "passed", "passed"},
			{"IPv4 from another host", reply("10.0.0.11:5353", "10.0.1.2:40000", 4), 0, "passed", "passed"},
			{"IPv6 reply", reply("[fd00::10]:5353", "[fd00:1::2]:40000", 1), 0, "caught", "caught"},
			{"IPv6 reply, first fragment never seen", reply("[fd00::10]:5353", "[fd00:1::2]:40000", 2), 1, "passed", "passed"},
			{"IPv6 from another port", reply("[fd00::10]:5354", "[fd00:1::2]:40000", 3), 0, "passed", "passed"},
		} {
			if len(c.frags) < 3 {
				t.Fatalf("%s: %d fragments", c.name, len(c.frags))
			}
			for i, f := range c.frags[c.from:] {
				want := c.wantRest
				if i == 0 {
					want = c.want
				}
				if got := verdict(f); got != want {
					t.Errorf("vlans %v, %s: fragment %d %s, want %s", vlans, c.name, c.from+i, got, want)
				}
			}
		}
		// Whole datagrams: caught by the source, as before.
		o.Payload = []byte("small")
		if got := verdict(pkttest.UDP(pkttest.EP(mac, "10.0.0.10:5353"), pkttest.EP(mac, "10.0.1.2:40000"), o)); got != "caught" {
			t.Errorf("vlans %v: a whole IPv4 reply %s", vlans, got)
		}
		if got := verdict(pkttest.UDP(pkttest.EP(mac, "[fd00::10]:5353"), pkttest.EP(mac, "[fd00:1::2]:40000"), o)); got != "caught" {
			t.Errorf("vlans %v: a whole IPv6 reply %s", vlans, got)
		}
		if got := verdict(pkttest.UDP(pkttest.EP(mac, "10.0.0.10:22"), pkttest.EP(mac, "10.0.1.2:40000"), o)); got != "passed" {
			t.Errorf("vlans %v: the backend's other traffic %s", vlans, got)
		}
	}
}

// TestProgramLeavesTheUnitsOwnTraffic: a half-NAT backend's packet from
// its service port to one of the unit's own addresses (its answer to the
// unit's health probe) is left to the kernel, and the addresses followed
// as they come and go; the same packet to a client is caught.
func TestProgramLeavesTheUnitsOwnTraffic(t *testing.T) {
	nstest.Require(t)
	ns := nstest.NS(t, "tlo", "a")
	nstest.Sh(t, "ip", "-n", ns, "link", "set", "lo", "up")
	nstest.Sh(t, "ip", "-n", ns, "addr", "add", "10.0.0.1/32", "dev", "lo")
	nstest.Sh(t, "ip", "-n", ns, "addr", "add", "fd00::1/128", "dev", "lo", "nodad")
	run := programRun(t, []Endpoint{
		{Addr: netip.MustParseAddr("10.0.0.10"), Port: 8080, Proto: 6},
		{Addr: netip.MustParseAddr("fd00::10"), Port: 8080, Proto: 6},
	}, ns)
	const mac = "02:00:00:00:00:01"
	verdict := func(src, dst string) string {
		t.Helper()
		return run(pkttest.TCP(pkttest.EP(mac, src), pkttest.EP(mac, dst), pkttest.SYN|pkttest.ACK, 1, 1, pkttest.Opts{}))
	}
	for _, c := range []struct{ dst, want string }{
		{"10.0.0.1:40000", "passed"},
		{"10.0.1.2:40000", "caught"},
		{"[fd00::1]:40000", "passed"},
		{"[fd00:1::2]:40000", "caught"},
	} {
		src := "10.0.0.10:8080"
		if netip.MustParseAddrPort(c.dst).Addr().Is6() {
			src = "[fd00::10]:8080"
		}
		if got := verdict(src, c.dst); got != c.want {
			t.Errorf("the backend's answer to %s %s, want %s", c.dst, got, c.want)
		}
	}
	// An address the unit gains is its own at once, and one it loses is
	// a client's again.
	until := func(what, dst, want string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for verdict("10.0.0.10:8080", dst) != want {
			if time.Now().After(deadline) {
				t.Fatalf("%s: the answer to %s still not %s", what, dst, want)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	nstest.Sh(t, "ip", "-n", ns, "addr", "add", "10.0.0.2/32", "dev", "lo")
	until("an address added", "10.0.0.2:40000", "passed")
	nstest.Sh(t, "ip", "-n", ns, "addr", "del", "10.0.0.2/32", "dev", "lo")
	until("the address removed", "10.0.0.2:40000", "caught")
}

// TestProgramCatchesErrorsAboutHalfNATFlows: an ICMP or ICMPv6 error
// quoting a packet toward a half-NAT backend's service (the backend's
// own port unreachable, a router's too-big on the way) is caught by the
// quote, so that the forwarder can turn it into the client's error about
// the VIP; an error quoting anything else passes, as does one addressed
// to the unit itself, and an informational message.
func TestProgramCatchesErrorsAboutHalfNATFlows(t *testing.T) {
	nstest.Require(t)
	ns := nstest.NS(t, "tie", "a")
	nstest.Sh(t, "ip", "-n", ns, "addr", "add", "10.0.0.1/32", "dev", "lo")
	verdict := programRun(t, []Endpoint{
		{Addr: netip.MustParseAddr("10.0.0.10"), Port: 5353, Proto: 17},
		{Addr: netip.MustParseAddr("fd00::10"), Port: 5353, Proto: 17},
	}, ns)
	const mac = "02:00:00:00:00:01"
	ep := func(s string) pkttest.Endpoint { return pkttest.EP(mac, s) }
	quote := func(src, dst string) []byte {
		return pkttest.L3(pkttest.UDP(ep(src), ep(dst), pkttest.Opts{Payload: []byte("query")}))
	}
	for _, c := range []struct {
		name  string
		frame []byte
		want  string
	}{
		{"IPv4 port unreachable from the backend", pkttest.ICMPError(ep("10.0.0.10:0"), ep("10.0.1.2:0"), 3, 3, 0, quote("10.0.1.2:40000", "10.0.0.10:5353"), 0, pkttest.Opts{}), "caught"},
		{"IPv4 too big from a router on the way", pkttest.ICMPError(ep("10.0.0.254:0"), ep("10.0.1.2:0"), 3, 4, 1400, quote("10.0.1.2:40000", "10.0.0.10:5353"), 0, pkttest.Opts{}), "caught"},
		{"IPv4 time exceeded", pkttest.ICMPError(ep("10.0.0.254:0"), ep("10.0.1.2:0"), 11, 0, 0, quote("10.0.1.2:40000", "10.0.0.10:5353"), 0, pkttest.Opts{}), "caught"},
		{"IPv4 error about another port", pkttest.ICMPError(ep("10.0.0.10:0"), ep("10.0.1.2:0"), 3, 3, 0, quote("10.0.1.2:40000", "10.0.0.10:22"), 0, pkttest.Opts{}), "passed"},
		{"IPv4 error to the unit itself", pkttest.ICMPError(ep("10.0.0.10:0"), ep("10.0.0.1:0"), 3, 3, 0, quote("10.0.0.1:40000", "10.0.0.10:5353"), 0, pkttest.Opts{}), "passed"},
		{"IPv4 error quoting a later fragment", pkttest.ICMPError(ep("10.0.0.10:0"), ep("10.0.1.2:0"), 3, 3, 0, laterFragment(quote("10.0.1.2:40000", "10.0.0.10:5353")), 0, pkttest.Opts{}), "passed"},
		{"IPv4 error cut short", pkttest.ICMPError(ep("10.0.0.10:0"), ep("10.0.1.2:0"), 3, 3, 0, quote("10.0.1.2:40000", "10.0.0.10:5353"), 21, pkttest.Opts{}), "passed"},
		{"IPv6 port unreachable from the backend", pkttest.ICMPError(ep("[fd00::10]:0"), ep("[fd00:1::2]:0"), 1, 4, 0, quote("[fd00:1::2]:40000", "[fd00::10]:5353"), 0, pkttest.Opts{}), "caught"},
		{"IPv6 packet too big from a router", pkttest.ICMPError(ep("[fd00::fe]:0"), ep("[fd00:1::2]:0"), 2, 0, 1400, quote("[fd00:1::2]:40000", "[fd00::10]:5353"), 0, pkttest.Opts{}), "caught"},
		{"IPv6 error about another port", pkttest.ICMPError(ep("[fd00::10]:0"), ep("[fd00:1::2]:0"), 1, 4, 0, quote("[fd00:1::2]:40000", "[fd00::10]:53"), 0, pkttest.Opts{}), "passed"},
	} {
		if got := verdict(c.frame); got != c.want {
			t.Errorf("%s: %s, want %s", c.name, got, c.want)
		}
	}
}

// TestProgramReadsIPv4Options: an IPv4 header may carry up to 40 bytes
// of options, and the program finds the ports behind them: a half-NAT
// reply with options is caught (and its later fragments), as is an ICMP
// error with options in its own header or in the header it quotes. The
// unit's own traffic still passes, fragmented or not; so does an error
// quoting a later fragment, whose bytes where ports would be are data,
// and a header whose length is below five words.
func TestProgramReadsIPv4Options(t *testing.T) {
	nstest.Require(t)
	ns := nstest.NS(t, "tio", "a")
	nstest.Sh(t, "ip", "-n", ns, "addr", "add", "10.0.0.1/32", "dev", "lo")
	verdict := programRun(t, []Endpoint{
		{Addr: netip.MustParseAddr("10.0.0.10"), Port: 5353, Proto: 17},
		{Addr: netip.MustParseAddr("10.0.0.10"), Port: 8080, Proto: 6},
	}, ns)
	const mac = "02:00:00:00:00:01"
	ep := func(s string) pkttest.Endpoint { return pkttest.EP(mac, s) }
	routerAlert := []byte{0x94, 0x04, 0x00, 0x00}
	longest := bytes.Repeat([]byte{0x01}, 40) // no-operations: IHL 15
	quote := func(dst string, o pkttest.Opts) []byte {
		o.Payload = []byte("query")
		return pkttest.L3(pkttest.UDP(ep("10.0.1.2:40000"), ep(dst), o))
	}
	for _, vlans := range [][]uint16{nil, {7}} {
		for _, opts := range [][]byte{routerAlert, longest} {
			o := pkttest.Opts{VLANs: vlans, IPOptions: opts}
			name := fmt.Sprintf("vlans %v, %d bytes of options", vlans, len(opts))
			for _, c := range []struct {
				name  string
				frame []byte
				want  string
			}{
				{"TCP reply", pkttest.TCP(ep("10.0.0.10:8080"), ep("10.0.1.2:40000"), pkttest.ACK, 1, 1, o), "caught"},
				{"UDP reply", pkttest.UDP(ep("10.0.0.10:5353"), ep("10.0.1.2:40000"), o), "caught"},
				{"reply from another port", pkttest.UDP(ep("10.0.0.10:5354"), ep("10.0.1.2:40000"), o), "passed"},
				{"answer to the unit itself", pkttest.TCP(ep("10.0.0.10:8080"), ep("10.0.0.1:40000"), pkttest.ACK, 1, 1, o), "passed"},
				{"error with options", pkttest.ICMPError(ep("10.0.0.254:0"), ep("10.0.1.2:0"), 3, 4, 1400, quote("10.0.0.10:5353", pkttest.Opts{}), 0, o), "caught"},
				{"error quoting options", pkttest.ICMPError(ep("10.0.0.10:0"), ep("10.0.1.2:0"), 3, 3, 0, quote("10.0.0.10:5353", pkttest.Opts{IPOptions: opts}), 0, pkttest.Opts{VLANs: vlans}), "caught"},
				{"error quoting options, cut short", pkttest.ICMPError(ep("10.0.0.10:0"), ep("10.0.1.2:0"), 3, 3, 0, quote("10.0.0.10:5353", pkttest.Opts{IPOptions: opts}), 20+len(opts)+3, pkttest.Opts{VLANs: vlans}), "passed"},
				{"error about another port", pkttest.ICMPError(ep("10.0.0.10:0"), ep("10.0.1.2:0"), 3, 3, 0, quote("10.0.0.10:22", pkttest.Opts{IPOptions: opts}), 0, o), "passed"},
				{"error quoting a later fragment", pkttest.ICMPError(ep("10.0.0.10:0"), ep("10.0.1.2:0"), 3, 3, 0, laterFragment(quote("10.0.0.10:5353", pkttest.Opts{})), 0, o), "passed"},
			} {
				if got := verdict(c.frame); got != c.want {
					t.Errorf("%s: %s %s, want %s", name, c.name, got, c.want)
				}
			}
			o.Payload = bytes.Repeat([]byte("reply "), 700)
			for i, dst := range []string{"10.0.1.2:40000", "10.0.0.1:40000"} {
				want := map[int]string{0: "caught", 1: "passed"}[i]
				o.ID = uint16(100*len(opts) + len(vlans)*10 + i)
				for j, f := range pkttest.FragmentIPv4(pkttest.UDP(ep("10.0.0.10:5353"), ep(dst), o), 1400, false) {
					if got := verdict(f); got != want {
						t.Errorf("%s: fragment %d of a reply to %s %s, want %s", name, j, dst, got, want)
					}
				}
			}
		}
	}
	short := pkttest.UDP(ep("10.0.0.10:5353"), ep("10.0.1.2:40000"), pkttest.Opts{})
	short[14] = 0x44
	if got := verdict(short); got != "passed" {
		t.Errorf("a header of four words %s, want passed", got)
	}
}

// laterFragment marks an IPv4 packet as a later fragment (offset 1,480)
// without changing its bytes.
func laterFragment(ip []byte) []byte {
	ip = append([]byte(nil), ip...)
	ip[6], ip[7] = 0x00, 0xb9
	return ip
}
