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

var (
	testUnit   = pkttest.Endpoint{MAC: pkttest.MustMAC("02:00:00:00:00:01"), Addr: netip.MustParseAddr(unitAddr)}
	testTunnel = pkttest.Endpoint{MAC: pkttest.MustMAC("02:00:00:00:00:02"), Addr: netip.MustParseAddr(tunnelAddr)}
	testClient = netip.MustParseAddrPort(clientAddr + ":40000")
	testVIP    = netip.MustParseAddrPort(vipAddr + ":443")
)

const testID = 0x0003_0102

// loaded is the program with its maps, not attached anywhere.
type loaded struct {
	m    *maps
	prog *ebpf.Program
}

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
	if err := h.SetAddresses([]netip.Addr{testTunnel.Addr}); err != nil {
		t.Fatal(err)
	}
	if err := h.SetUnits([]netip.Addr{testUnit.Addr}); err != nil {
		t.Fatal(err)
	}
	for _, proto := range []uint8{protoTCP, protoUDP} {
		// One ID per protocol: the TCP one, and the next for UDP.
		id := uint32(testID)
		if proto == protoUDP {
			id++
		}
		if err := h.Put(testUnit.Addr, id, tuple(proto, clientAddr, vipAddr, testClient.Port(), testVIP.Port())); err != nil {
			t.Fatal(err)
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
func tunneled(proto uint8, id uint32, payload string) []byte {
	src, dst := testUnit, testTunnel
	src.Port, dst.Port = uint16(id>>16), uint16(id)
	if proto == protoUDP {
		return pkttest.UDP(src, dst, pkttest.Opts{Payload: []byte(payload)})
	}
	return pkttest.TCP(src, dst, pkttest.ACK|pkttest.PSH, 1000, 2000, pkttest.Opts{Payload: []byte(payload)})
}

// original is the client's packet that tunneled(proto, id, payload) stands
// for, with the tunnel frame's Ethernet header.
func original(proto uint8, payload string) []byte {
	src := pkttest.Endpoint{MAC: testUnit.MAC, Addr: testClient.Addr(), Port: testClient.Port()}
	dst := pkttest.Endpoint{MAC: testTunnel.MAC, Addr: testVIP.Addr(), Port: testVIP.Port()}
	if proto == protoUDP {
		return pkttest.UDP(src, dst, pkttest.Opts{Payload: []byte(payload)})
	}
	return pkttest.TCP(src, dst, pkttest.ACK|pkttest.PSH, 1000, 2000, pkttest.Opts{Payload: []byte(payload)})
}

func TestProgramRestoresExactly(t *testing.T) {
	l := load(t)
	for _, c := range []struct {
		name  string
		proto uint8
		id    uint32
	}{{"tcp", protoTCP, testID}, {"udp", protoUDP, testID + 1}} {
		for _, payload := range []string{"", "x", "an even payload!", "an odd payload!"} {
			ret, out := l.run(t, tunneled(c.proto, c.id, payload))
			if want := original(c.proto, payload); ret != xdpPass || !bytes.Equal(out, want) {
				t.Errorf("%s %q: verdict %d,\ngot  % x\nwant % x", c.name, payload, ret, out, want)
			}
		}
	}
	// A UDP packet without a checksum keeps none.
	in := tunneled(protoUDP, testID+1, "no checksum")
	binary.BigEndian.PutUint16(in[offUDPSum:], 0)
	if ret, out := l.run(t, in); ret != xdpPass || binary.BigEndian.Uint16(out[offUDPSum:]) != 0 {
		t.Errorf("UDP without a checksum: verdict %d, checksum %#x", ret, binary.BigEndian.Uint16(out[offUDPSum:]))
	}
}

func TestProgramUnwrapsIPIP(t *testing.T) {
	l := load(t)
	inner := original(protoUDP, "inner")[14:]
	outer := pkttest.IPIP(testUnit, testTunnel, inner, pkttest.Opts{})
	ret, out := l.run(t, outer)
	want := append(append([]byte{}, outer[:14]...), inner...)
	if ret != xdpPass || !bytes.Equal(out, want) {
		t.Fatalf("verdict %d,\ngot  % x\nwant % x", ret, out, want)
	}
}

// TestProgramPassesIPIPFragments: an IP-in-IP packet a unit sent in
// fragments (too big for the tunnel) goes to the kernel as it came, each
// fragment, for the kernel to reassemble before it decapsulates; from an
// address no unit has it is dropped like any other.
func TestProgramPassesIPIPFragments(t *testing.T) {
	l := load(t)
	h := &Host{m: l.m}
	inner := original(protoUDP, string(bytes.Repeat([]byte("f"), 300)))[14:]
	frags := pkttest.FragmentIPv4(pkttest.IPIP(testUnit, testTunnel, inner, pkttest.Opts{}), 128, false)
	for i, in := range frags {
		if ret, out := l.run(t, in); ret != xdpPass || !bytes.Equal(out, in) {
			t.Errorf("fragment %d: verdict %d, changed: %v", i, ret, !bytes.Equal(out, in))
		}
	}
	stranger := testUnit
	stranger.Addr = netip.MustParseAddr(otherAddr)
	before, err := h.Counters()
	if err != nil {
		t.Fatal(err)
	}
	for i, in := range pkttest.FragmentIPv4(pkttest.IPIP(stranger, testTunnel, inner, pkttest.Opts{}), 128, false) {
		if ret, _ := l.run(t, in); ret != xdpDrop {
			t.Errorf("fragment %d from no unit: verdict %d, want drop", i, ret)
		}
	}
	if after, err := h.Counters(); err != nil || after.UnknownUnit != before.UnknownUnit+uint64(len(frags)) {
		t.Errorf("unknown_unit %d -> %d, want one per fragment (%v)", before.UnknownUnit, after.UnknownUnit, err)
	}
}

func TestProgramLeavesOthersAlone(t *testing.T) {
	l := load(t)
	other := testTunnel
	other.Addr = netip.MustParseAddr(hostAddr)
	for name, in := range map[string][]byte{
		"to the host's own address": pkttest.UDP(testUnit, other, pkttest.Opts{Payload: []byte("hi")}),
		"ARP":                       pkttest.ARP("02:00:00:00:00:01", testUnit.Addr, testTunnel.Addr),
		"IPv6":                      pkttest.UDP(pkttest.Endpoint{MAC: testUnit.MAC, Addr: netip.MustParseAddr("fd00::1")}, pkttest.Endpoint{MAC: testTunnel.MAC, Addr: netip.MustParseAddr("fd00::2")}, pkttest.Opts{}),
		"an IPv4 header cut short":  tunneled(protoTCP, testID, "")[:offIP+10],
	} {
		if ret, out := l.run(t, in); ret != xdpPass || !bytes.Equal(out, in) {
			t.Errorf("%s: verdict %d, changed: %v", name, ret, !bytes.Equal(out, in))
		}
	}
}

func TestProgramDropsAndCounts(t *testing.T) {
	l := load(t)
	h := &Host{m: l.m}
	stranger := testUnit
	stranger.Addr = netip.MustParseAddr(otherAddr)
	frag := tunneled(protoUDP, testID+1, "a fragment")
	frag[offFrag] |= 0x20 // more fragments
	withOptions := pkttest.UDP(testUnit, testTunnel, pkttest.Opts{Payload: []byte("opts"), IPOptions: []byte{1, 1, 1, 0}})
	icmp := pkttest.EchoRequest(testUnit, testTunnel, 1, 1, pkttest.Opts{})
	short := tunneled(protoTCP, testID, "")[:offL4+8]
	binary.BigEndian.PutUint16(short[offIP+2:], offL4+8-offIP)
	cases := []struct {
		name string
		in   []byte
		ctr  func(Counters) uint64
	}{
		{"unknown flow ID", tunneled(protoUDP, 0x0009_0009, "?"), func(c Counters) uint64 { return c.UnknownFlow }},
		{"the ID of another protocol", tunneled(protoTCP, testID+1, "?"), func(c Counters) uint64 { return c.UnknownFlow }},
		{"from no unit", func() []byte {
			s, d, id := stranger, testTunnel, uint32(testID)
			s.Port, d.Port = uint16(id>>16), uint16(id)
			return pkttest.TCP(s, d, pkttest.ACK, 1, 1, pkttest.Opts{})
		}(), func(c Counters) uint64 { return c.UnknownUnit }},
		{"ICMP", icmp, func(c Counters) uint64 { return c.NotTunnel }},
		{"fragment", frag, func(c Counters) uint64 { return c.Malformed }},
		{"IPv4 options", withOptions, func(c Counters) uint64 { return c.Malformed }},
		{"short TCP header", short, func(c Counters) uint64 { return c.Malformed }},
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
// has right checksums.
func FuzzProgram(f *testing.F) {
	for _, s := range [][]byte{
		tunneled(protoTCP, testID, "seed"), tunneled(protoUDP, testID+1, "seed"),
		tunneled(protoUDP, 0x0009_0009, "unknown"),
		pkttest.IPIP(testUnit, testTunnel, original(protoTCP, "inner")[14:], pkttest.Opts{}),
		pkttest.FragmentIPv4(pkttest.IPIP(testUnit, testTunnel, original(protoTCP, "inner")[14:], pkttest.Opts{}), 24, false)[1],
	} {
		f.Add(s)
	}
	l := load(f)
	tunnel4 := testTunnel.Addr.As4()
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) < 14 || len(in) > 4000 {
			return // the kernel's test run wants at least an Ethernet header
		}
		ret, out := l.run(t, in)
		toTunnel := len(in) >= offL4 && binary.BigEndian.Uint16(in[offEtherType:]) == 0x0800 && bytes.Equal(in[offDst:offDst+4], tunnel4[:])
		switch {
		case ret != xdpPass && ret != xdpDrop:
			t.Fatalf("verdict %d", ret)
		case !toTunnel && (ret != xdpPass || !bytes.Equal(out, in)):
			t.Fatalf("a frame not to the tunnel address was changed or dropped (verdict %d)", ret)
		case toTunnel && ret == xdpPass && in[offProto] == protoIPIP && binary.BigEndian.Uint16(in[offFrag:])&0x3fff != 0:
			if !bytes.Equal(out, in) {
				t.Fatalf("a fragment of IP-in-IP passed changed")
			}
		case toTunnel && ret == xdpPass && in[offProto] == protoIPIP:
			if !bytes.Equal(out[14:], in[offL4:]) {
				t.Fatalf("IP-in-IP passed, but not as its inner packet")
			}
		case toTunnel && ret == xdpPass:
			vip := testVIP.Addr().As4()
			if !bytes.Equal(out[offDst:offDst+4], vip[:]) {
				t.Fatalf("passed from the tunnel address without being restored:\n% x", out)
			}
			if (&pkttest.Checker{}).Check(in) == nil {
				if err := (&pkttest.Checker{}).Check(out); err != nil {
					t.Fatalf("right checksums in, %v out", err)
				}
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
	if err := h.Put(testUnit.Addr, 0x0004_0004, self); err != nil {
		b.Fatal(err)
	}
	passOnly, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.XDP, License: "MIT",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, xdpPass), asm.Return()}})
	if err != nil {
		b.Fatal(err)
	}
	defer passOnly.Close()
	other := testTunnel
	other.Addr = netip.MustParseAddr(hostAddr)
	for _, c := range []struct {
		name string
		prog *ebpf.Program
		in   []byte
	}{
		{"pass-only program", passOnly, tunneled(protoTCP, 0x0004_0004, "0123456789")},
		{"not to a tunnel address", l.prog, pkttest.TCP(testUnit, other, pkttest.ACK, 1, 1, pkttest.Opts{Payload: []byte("0123456789")})},
		{"restored TCP", l.prog, tunneled(protoTCP, 0x0004_0004, "0123456789")},
		{"unknown flow", l.prog, tunneled(protoTCP, 0x0009_0009, "0123456789")},
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
