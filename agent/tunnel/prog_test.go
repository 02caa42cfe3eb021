package tunnel

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"os"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/tetherlb/tether/internal/pkttest"
)

// The program run by the kernel's BPF_PROG_TEST_RUN on frames built here:
// no interface, no traffic, every byte of the result checked.

// fam is one IP version's side of the tests: the unit, the host's tunnel
// address, and the client's connection the mappings restore.
type fam struct {
	unit, tunnel pkttest.Endpoint
	client, vip  netip.AddrPort
}

var (
	f4 = fam{
		unit:   pkttest.Endpoint{MAC: pkttest.MustMAC("02:00:00:00:00:01"), Addr: netip.MustParseAddr(unitAddr)},
		tunnel: pkttest.Endpoint{MAC: pkttest.MustMAC("02:00:00:00:00:02"), Addr: netip.MustParseAddr(tunnelAddr)},
		client: netip.MustParseAddrPort(clientAddr + ":40000"),
		vip:    netip.MustParseAddrPort(vipAddr + ":443"),
	}
	f6 = fam{
		unit:   pkttest.Endpoint{MAC: pkttest.MustMAC("02:00:00:00:00:01"), Addr: netip.MustParseAddr(unitAddr6)},
		tunnel: pkttest.Endpoint{MAC: pkttest.MustMAC("02:00:00:00:00:02"), Addr: netip.MustParseAddr(tunnelAddr6)},
		client: netip.MustParseAddrPort("[" + clientAddr6 + "]:40000"),
		vip:    netip.MustParseAddrPort("[" + vipAddr6 + "]:443"),
	}
	fams = []fam{f4, f6}
)

func (f fam) String() string {
	if f.v4() {
		return "IPv4"
	}
	return "IPv6"
}

func (f fam) v4() bool { return f.unit.Addr.Is4() }

// with is f's endpoint e at another address.
func with(e pkttest.Endpoint, addr string) pkttest.Endpoint {
	e.Addr = netip.MustParseAddr(addr)
	return e
}

const testID = 0x0003_0102

// loaded is the program with its maps, not attached anywhere.
type loaded struct {
	m    *maps
	prog *ebpf.Program
}

// load loads the program with both families' tunnel address, unit and
// mappings: in each, testID is a TCP flow and testID+1 a UDP one.
func load(t testing.TB) *loaded {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: BPF")
	}
	m, err := newMaps(1024)
	if err != nil {
		t.Skipf("BPF maps: %v", err)
	}
	prog, err := loadProgram(m)
	if err != nil {
		m.close()
		t.Fatal(err)
	}
	t.Cleanup(func() { prog.Close(); m.close() })
	l := &loaded{m: m, prog: prog}
	h := &Host{m: m}
	if err := h.SetAddresses([]netip.Addr{f4.tunnel.Addr, f6.tunnel.Addr}); err != nil {
		t.Fatal(err)
	}
	if err := h.SetUnits([]netip.Addr{f4.unit.Addr, f6.unit.Addr}); err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		for _, proto := range []uint8{protoTCP, protoUDP} {
			// One ID per protocol: the TCP one, and the next for UDP.
			id := uint32(testID)
			if proto == protoUDP {
				id++
			}
			tp := tuple(proto, f.client.Addr().String(), f.vip.Addr().String(), f.client.Port(), f.vip.Port())
			if err := h.Put(f.unit.Addr, id, tp); err != nil {
				t.Fatal(err)
			}
		}
	}
	return l
}

func (l *loaded) run(t testing.TB, in []byte) (uint32, []byte) {
	t.Helper()
	out := make([]byte, len(in)+256)
	opts := ebpf.RunOptions{Data: in, DataOut: out}
	ret, err := l.prog.Run(&opts)
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	return ret, opts.DataOut
}

// tunneled is what a unit sends for the client's packet: unit → tunnel
// address, the flow ID in the ports.
func (f fam) tunneled(proto uint8, id uint32, payload string) []byte {
	src, dst := f.unit, f.tunnel
	src.Port, dst.Port = uint16(id>>16), uint16(id)
	if proto == protoUDP {
		return pkttest.UDP(src, dst, pkttest.Opts{Payload: []byte(payload)})
	}
	return pkttest.TCP(src, dst, pkttest.ACK|pkttest.PSH, 1000, 2000, pkttest.Opts{Payload: []byte(payload)})
}

// original is the client's packet that f.tunneled(proto, id, payload)
// stands for, with the tunnel frame's Ethernet header.
func (f fam) original(proto uint8, payload string) []byte {
	src := pkttest.Endpoint{MAC: f.unit.MAC, Addr: f.client.Addr(), Port: f.client.Port()}
	dst := pkttest.Endpoint{MAC: f.tunnel.MAC, Addr: f.vip.Addr(), Port: f.vip.Port()}
	if proto == protoUDP {
		return pkttest.UDP(src, dst, pkttest.Opts{Payload: []byte(payload)})
	}
	return pkttest.TCP(src, dst, pkttest.ACK|pkttest.PSH, 1000, 2000, pkttest.Opts{Payload: []byte(payload)})
}

func TestProgramRestoresExactly(t *testing.T) {
	l := load(t)
	for _, f := range fams {
		for _, c := range []struct {
			name  string
			proto uint8
			id    uint32
		}{{"tcp", protoTCP, testID}, {"udp", protoUDP, testID + 1}} {
			for _, payload := range []string{"", "x", "an even payload!", "an odd payload!"} {
				ret, out := l.run(t, f.tunneled(c.proto, c.id, payload))
				if want := f.original(c.proto, payload); ret != xdpPass || !bytes.Equal(out, want) {
					t.Errorf("%v %s %q: verdict %d,\ngot  % x\nwant % x", f, c.name, payload, ret, out, want)
				}
			}
		}
	}
	// An IPv4 UDP packet without a checksum keeps none.
	in := f4.tunneled(protoUDP, testID+1, "no checksum")
	binary.BigEndian.PutUint16(in[offUDPSum:], 0)
	if ret, out := l.run(t, in); ret != xdpPass || binary.BigEndian.Uint16(out[offUDPSum:]) != 0 {
		t.Errorf("UDP without a checksum: verdict %d, checksum %#x", ret, binary.BigEndian.Uint16(out[offUDPSum:]))
	}
}

// TestProgramUnwrapsIPIP: IPv4-in-IPv4 and IPv6-in-IPv6 lose their outer
// header, whatever the inner packet (a fragment of the client's included:
// the unit sends those IP-in-IP).
func TestProgramUnwrapsIPIP(t *testing.T) {
	l := load(t)
	for _, f := range fams {
		whole := f.original(protoUDP, string(bytes.Repeat([]byte("w"), 200)))
		var fragment []byte
		if f.v4() {
			fragment = pkttest.FragmentIPv4(whole, 64, false)[1]
		} else {
			fragment = pkttest.FragmentIPv6(whole, 64, 7)[1]
		}
		for _, inner := range [][]byte{whole[14:], fragment[14:]} {
			outer := pkttest.IPIP(f.unit, f.tunnel, inner, pkttest.Opts{})
			ret, out := l.run(t, outer)
			want := append(append([]byte{}, outer[:14]...), inner...)
			if ret != xdpPass || !bytes.Equal(out, want) {
				t.Errorf("%v: verdict %d,\ngot  % x\nwant % x", f, ret, out, want)
			}
		}
	}
}

// TestProgramPassesIPIPFragments: an IP-in-IP packet a unit sent in
// fragments (too big for the tunnel) goes to the kernel as it came, each
// fragment, for the kernel to reassemble before it decapsulates; from an
// address no unit has it is dropped like any other.
func TestProgramPassesIPIPFragments(t *testing.T) {
	l := load(t)
	h := &Host{m: l.m}
	cut := func(frame []byte) [][]byte {
		if frame[offEtherType] == 0x86 {
			return pkttest.FragmentIPv6(frame, 128, 9)
		}
		return pkttest.FragmentIPv4(frame, 128, false)
	}
	for _, f := range fams {
		inner := f.original(protoUDP, string(bytes.Repeat([]byte("f"), 300)))[14:]
		frags := cut(pkttest.IPIP(f.unit, f.tunnel, inner, pkttest.Opts{}))
		for i, in := range frags {
			if ret, out := l.run(t, in); ret != xdpPass || !bytes.Equal(out, in) {
				t.Errorf("%v fragment %d: verdict %d, changed: %v", f, i, ret, !bytes.Equal(out, in))
			}
		}
		stranger := with(f.unit, map[bool]string{true: otherAddr, false: otherAddr6}[f.v4()])
		before, err := h.Counters()
		if err != nil {
			t.Fatal(err)
		}
		for i, in := range cut(pkttest.IPIP(stranger, f.tunnel, inner, pkttest.Opts{})) {
			if ret, _ := l.run(t, in); ret != xdpDrop {
				t.Errorf("%v fragment %d from no unit: verdict %d, want drop", f, i, ret)
			}
		}
		if after, err := h.Counters(); err != nil || after.UnknownUnit != before.UnknownUnit+uint64(len(frags)) {
			t.Errorf("%v: unknown_unit %d -> %d, want one per fragment (%v)", f, before.UnknownUnit, after.UnknownUnit, err)
		}
	}
}

func TestProgramLeavesOthersAlone(t *testing.T) {
	l := load(t)
	short6 := f6.tunneled(protoTCP, testID, "")[:offL46-1]
	binary.BigEndian.PutUint16(short6[offIP+4:], 0)
	for name, in := range map[string][]byte{
		"to the host's own address":      pkttest.UDP(f4.unit, with(f4.tunnel, hostAddr), pkttest.Opts{Payload: []byte("hi")}),
		"to the host's own IPv6 address": pkttest.UDP(f6.unit, with(f6.tunnel, hostAddr6), pkttest.Opts{Payload: []byte("hi")}),
		"ARP":                            pkttest.ARP("02:00:00:00:00:01", f4.unit.Addr, f4.tunnel.Addr),
		"an IPv4 header cut short":       f4.tunneled(protoTCP, testID, "")[:offIP+10],
		"an IPv6 header cut short":       short6,
		"VLAN-tagged": func() []byte {
			in := f4.tunneled(protoTCP, testID, "tagged")
			return append(append(append([]byte{}, in[:12]...), 0x81, 0, 0, 7), in[12:]...)
		}(),
	} {
		if ret, out := l.run(t, in); ret != xdpPass || !bytes.Equal(out, in) {
			t.Errorf("%s: verdict %d, changed: %v", name, ret, !bytes.Equal(out, in))
		}
	}
}

func TestProgramDropsAndCounts(t *testing.T) {
	l := load(t)
	h := &Host{m: l.m}
	type dropCase struct {
		name string
		in   []byte
		ctr  func(Counters) uint64
	}
	unknownFlow := func(c Counters) uint64 { return c.UnknownFlow }
	unknownUnit := func(c Counters) uint64 { return c.UnknownUnit }
	notTunnel := func(c Counters) uint64 { return c.NotTunnel }
	malformed := func(c Counters) uint64 { return c.Malformed }
	fromNoUnit := func(f fam, stranger string) []byte {
		s, d, id := with(f.unit, stranger), f.tunnel, uint32(testID)
		s.Port, d.Port = uint16(id>>16), uint16(id)
		return pkttest.TCP(s, d, pkttest.ACK, 1, 1, pkttest.Opts{})
	}
	frag := f4.tunneled(protoUDP, testID+1, "a fragment")
	frag[offFrag] |= 0x20 // more fragments
	short := f4.tunneled(protoTCP, testID, "")[:offL4+8]
	binary.BigEndian.PutUint16(short[offIP+2:], offL4+8-offIP)
	short6 := f6.tunneled(protoTCP, testID, "")[:offL46+8]
	binary.BigEndian.PutUint16(short6[offIP+4:], 8)
	// An IPv6 flow packet behind a destination options header: the unit
	// sends such packets IP-in-IP.
	withOpts6 := pkttest.InsertIPv6Header(f6.tunneled(protoUDP, testID+1, "opts"), 60, []byte{protoUDP, 0, 1, 4, 0, 0, 0, 0})
	frag6 := pkttest.FragmentIPv6(f6.tunneled(protoUDP, testID+1, string(bytes.Repeat([]byte("6"), 100))), 64, 3)[0]
	wrongVersion := f6.tunneled(protoUDP, testID+1, "v4?")
	wrongVersion[offIP] = 0x45
	// IPv4 inside IPv6: no unit sends it.
	v4in6 := pkttest.IPIP(f6.unit, f6.tunnel, f4.original(protoUDP, "4in6")[14:], pkttest.Opts{})
	cases := []dropCase{
		{"unknown flow ID", f4.tunneled(protoUDP, 0x0009_0009, "?"), unknownFlow},
		{"the ID of another protocol", f4.tunneled(protoTCP, testID+1, "?"), unknownFlow},
		{"from no unit", fromNoUnit(f4, otherAddr), unknownUnit},
		{"ICMP", pkttest.EchoRequest(f4.unit, f4.tunnel, 1, 1, pkttest.Opts{}), notTunnel},
		{"fragment", frag, malformed},
		{"IPv4 options", pkttest.UDP(f4.unit, f4.tunnel, pkttest.Opts{Payload: []byte("opts"), IPOptions: []byte{1, 1, 1, 0}}), malformed},
		{"short TCP header", short, malformed},
		{"IPv6 unknown flow ID", f6.tunneled(protoUDP, 0x0009_0009, "?"), unknownFlow},
		{"IPv6 ID of another protocol", f6.tunneled(protoTCP, testID+1, "?"), unknownFlow},
		{"IPv6 from no unit", fromNoUnit(f6, otherAddr6), unknownUnit},
		{"IPv6 from the unit's IPv4 address mapped", fromNoUnit(f6, "::ffff:"+unitAddr), unknownUnit},
		{"ICMPv6", pkttest.EchoRequest(f6.unit, f6.tunnel, 1, 1, pkttest.Opts{}), notTunnel},
		{"IPv6 extension header", withOpts6, notTunnel},
		{"IPv6 fragment of a flow", frag6, malformed},
		{"IPv6 short TCP header", short6, malformed},
		{"IPv4 header behind IPv6's EtherType", wrongVersion, malformed},
		{"IPv4 inside IPv6", v4in6, notTunnel},
	}
	for _, c := range cases {
		before, err := h.Counters()
		if err != nil {
			t.Fatal(err)
		}
		if ret, _ := l.run(t, c.in); ret != xdpDrop {
			t.Errorf("%s: verdict %d, want drop", c.name, ret)
		}
		after, err := h.Counters()
		if err != nil {
			t.Fatal(err)
		}
		if c.ctr(after) != c.ctr(before)+1 {
			t.Errorf("%s: counter %d -> %d, want one more (%+v)", c.name, c.ctr(before), c.ctr(after), after)
		}
	}
}

// FuzzProgram: whatever the frame, the program passes or drops it; what
// is not to a tunnel address passes unchanged; what it passes from a
// tunnel address is addressed to the VIP (restored) or is the inner
// packet of IP-in-IP; and a restored packet whose checksums were right
// has right checksums. Both IP versions.
func FuzzProgram(f *testing.F) {
	for _, fm := range fams {
		inner := fm.original(protoTCP, "inner")[14:]
		outer := pkttest.IPIP(fm.unit, fm.tunnel, inner, pkttest.Opts{})
		var frag []byte
		if fm.v4() {
			frag = pkttest.FragmentIPv4(outer, 24, false)[1]
		} else {
			frag = pkttest.FragmentIPv6(outer, 24, 5)[1]
		}
		for _, s := range [][]byte{
			fm.tunneled(protoTCP, testID, "seed"), fm.tunneled(protoUDP, testID+1, "seed"),
			fm.tunneled(protoUDP, 0x0009_0009, "unknown"), outer, frag,
		} {
			f.Add(s)
		}
	}
	l := load(f)
	tunnel4, tunnel6 := f4.tunnel.Addr.As4(), f6.tunnel.Addr.As16()
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) < 14 || len(in) > 4000 {
			return // the kernel's test run wants at least an Ethernet header
		}
		ret, out := l.run(t, in)
		et := binary.BigEndian.Uint16(in[offEtherType:])
		v4 := len(in) >= offL4 && et == 0x0800 && bytes.Equal(in[offDst:offDst+4], tunnel4[:])
		v6 := len(in) >= offL46 && et == 0x86dd && bytes.Equal(in[offDst6:offDst6+16], tunnel6[:])
		var proto uint8
		var fragment bool
		var l4 int
		switch {
		case v4:
			proto, fragment, l4 = in[offProto], binary.BigEndian.Uint16(in[offFrag:])&0x3fff != 0, offL4
		case v6:
			proto, fragment, l4 = in[offNext6], in[offNext6] == protoFrag, offL46
		}
		toTunnel := v4 || v6
		switch {
		case ret != xdpPass && ret != xdpDrop:
			t.Fatalf("verdict %d", ret)
		case !toTunnel && (ret != xdpPass || !bytes.Equal(out, in)):
			t.Fatalf("a frame not to a tunnel address was changed or dropped (verdict %d)", ret)
		case toTunnel && ret == xdpPass && fragment:
			if !bytes.Equal(out, in) {
				t.Fatalf("a fragment of IP-in-IP passed changed")
			}
		case toTunnel && ret == xdpPass && (proto == protoIPIP || proto == protoIPv6):
			if !bytes.Equal(out[14:], in[l4:]) {
				t.Fatalf("IP-in-IP passed, but not as its inner packet")
			}
		case v4 && ret == xdpPass:
			vip := f4.vip.Addr().As4()
			if !bytes.Equal(out[offDst:offDst+4], vip[:]) {
				t.Fatalf("passed from the tunnel address without being restored:\n% x", out)
			}
		case v6 && ret == xdpPass:
			vip := f6.vip.Addr().As16()
			if !bytes.Equal(out[offDst6:offDst6+16], vip[:]) {
				t.Fatalf("passed from the IPv6 tunnel address without being restored:\n% x", out)
			}
		}
		if toTunnel && ret == xdpPass && !fragment && proto != protoIPIP && proto != protoIPv6 && (&pkttest.Checker{}).Check(in) == nil {
			if err := (&pkttest.Checker{}).Check(out); err != nil {
				t.Fatalf("right checksums in, %v out", err)
			}
		}
	})
}

// BenchmarkProgram is the program's own cost per packet in the kernel
// (BPF_PROG_TEST_RUN), beside a program that only passes, in the same
// run. The restoring case maps the packet to itself, so that each of
// the kernel's repetitions (which reuse the buffer) does the whole work.
func BenchmarkProgram(b *testing.B) {
	l := load(b)
	h := &Host{m: l.m}
	self := tuple(protoTCP, unitAddr, tunnelAddr, 4, 4) // flow ID 0x0004_0004
	if err := h.Put(f4.unit.Addr, 0x0004_0004, self); err != nil {
		b.Fatal(err)
	}
	passOnly, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.XDP, License: "MIT",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, xdpPass), asm.Return()}})
	if err != nil {
		b.Fatal(err)
	}
	defer passOnly.Close()
	self6 := tuple(protoTCP, unitAddr6, tunnelAddr6, 4, 4)
	if err := h.Put(f6.unit.Addr, 0x0004_0004, self6); err != nil {
		b.Fatal(err)
	}
	other := with(f4.tunnel, hostAddr)
	for _, c := range []struct {
		name string
		prog *ebpf.Program
		in   []byte
	}{
		{"pass-only program", passOnly, f4.tunneled(protoTCP, 0x0004_0004, "0123456789")},
		{"not to a tunnel address", l.prog, pkttest.TCP(f4.unit, other, pkttest.ACK, 1, 1, pkttest.Opts{Payload: []byte("0123456789")})},
		{"restored TCP", l.prog, f4.tunneled(protoTCP, 0x0004_0004, "0123456789")},
		{"restored TCP, IPv6", l.prog, f6.tunneled(protoTCP, 0x0004_0004, "0123456789")},
		{"unknown flow", l.prog, f4.tunneled(protoTCP, 0x0009_0009, "0123456789")},
	} {
		b.Run(c.name, func(b *testing.B) {
			ret, d, err := c.prog.Benchmark(c.in, b.N, b.ResetTimer)
			if err != nil {
				b.Fatal(err)
			}
			if ret != xdpPass && ret != xdpDrop {
				b.Fatalf("verdict %d", ret)
			}
			b.ReportMetric(float64(d.Nanoseconds()), "ns/packet")
		})
	}
}
