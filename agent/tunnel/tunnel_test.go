package tunnel

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/tetherlb/tether/internal/nstest"

	"golang.org/x/sys/unix"

	"github.com/tetherlb/tether/internal/pkttest"
	"github.com/tetherlb/tether/tables/encap"
)

// The topology: namespace U (the unit's side, u0 10.7.0.1/24 and
// 10.7.0.3, an address no unit has) and namespace H (the host, h0
// 10.7.0.2/24, tunnel address 10.7.0.100, the VIP 192.0.2.50 on lo).
// The unit's side sends with the kernel's own sockets, from the ports
// that carry a flow ID; the host's stack must receive what the client
// sent, from the client's address, on a socket bound to the VIP.
const (
	unitAddr   = nstest.UnitAddr
	otherAddr  = nstest.OtherAddr
	hostAddr   = nstest.HostAddr
	tunnelAddr = "10.7.0.100"
	vipAddr    = nstest.VIPAddr
	clientAddr = "203.0.113.9"

	// The same in IPv6 (nstest.AddIPv6).
	unitAddr6   = nstest.UnitAddr6
	otherAddr6  = nstest.OtherAddr6
	hostAddr6   = nstest.HostAddr6
	tunnelAddr6 = "fd00:7::100"
	vipAddr6    = nstest.VIPAddr6
	clientAddr6 = "2001:db8:9::9"
)

type topo struct{ u, h string }

func newTopo(t *testing.T) *topo {
	t.Helper()
	u, h := nstest.UnitHost(t, "tht")
	return &topo{u: u, h: h}
}

func open(t *testing.T, p *topo, dir string) *Host {
	t.Helper()
	return openWith(t, p, Config{
		Addresses: []netip.Addr{netip.MustParseAddr(tunnelAddr)},
		Units:     []netip.Addr{netip.MustParseAddr(unitAddr)},
		PinDir:    dir,
	})
}

// openWith opens the program on the host's h0 with c.
func openWith(t *testing.T, p *topo, c Config) *Host {
	t.Helper()
	c.Interface = "h0"
	var h *Host
	nstest.In(t, p.h, func() {
		var err error
		h, err = Open(c)
		if err != nil {
			t.Fatal(err)
		}
	})
	return h
}

// tuple is the mapping of a client's connection src:sport → dst:dport,
// IPv4 or IPv6 as the addresses are.
func tuple(proto uint8, src, dst string, sport, dport uint16) *encap.Tuple {
	s, d := netip.MustParseAddr(src), netip.MustParseAddr(dst)
	t := &encap.Tuple{Proto: proto, SrcPort: sport, DstPort: dport, V6: s.Is6()}
	copy(t.Src[:], s.AsSlice())
	copy(t.Dst[:], d.AsSlice())
	return t
}

// sendUDP sends payload from src:id>>16 to dst:id&0xffff in namespace ns:
// a tunnel packet of flow ID id, as a unit would send it.
func sendUDP(t *testing.T, ns, src, dst string, id uint32, payload string) {
	t.Helper()
	nstest.In(t, ns, func() {
		c, err := net.DialUDP("udp",
			&net.UDPAddr{IP: net.ParseIP(src), Port: int(id >> 16)},
			&net.UDPAddr{IP: net.ParseIP(dst), Port: int(id & 0xffff)})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Write([]byte(payload)); err != nil {
			t.Fatal(err)
		}
	})
}

// listenUDP binds addr in namespace ns.
func listenUDP(t *testing.T, ns, addr string) *net.UDPConn {
	t.Helper()
	var c *net.UDPConn
	nstest.In(t, ns, func() {
		var err error
		if c, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort(addr))); err != nil {
			t.Fatal(err)
		}
	})
	t.Cleanup(func() { c.Close() })
	return c
}

// receive reads one datagram, or fails after a bound.
func receive(t *testing.T, c *net.UDPConn) (string, netip.AddrPort) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 2048)
	n, from, err := c.ReadFromUDPAddrPort(buf)
	if err != nil {
		t.Fatalf("nothing received on %v: %v", c.LocalAddr(), err)
	}
	return string(buf[:n]), netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
}

// waitCounter waits (bounded) until get reports at least n.
func waitCounter(t *testing.T, h *Host, what string, get func(Counters) uint64, n uint64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := h.Counters()
		if err != nil {
			t.Fatal(err)
		}
		if get(c) >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d, want %d (%+v)", what, get(c), n, c)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestFlowIDPacketsReachTheVIPAsTheClientSentThem(t *testing.T) {
	p := newTopo(t)
	h := open(t, p, nstest.BPFFS(t))
	defer h.Remove()
	if h.Mode == "" {
		t.Fatal("no attach mode")
	}
	unit := netip.MustParseAddr(unitAddr)
	const id = 0x0005_1234
	if err := h.Put(unit, id, tuple(protoUDP, clientAddr, vipAddr, 40000, 5353)); err != nil {
		t.Fatal(err)
	}
	srv := listenUDP(t, p.h, vipAddr+":5353")
	sendUDP(t, p.u, unitAddr, tunnelAddr, id, "hello through the tunnel")
	msg, from := receive(t, srv)
	if msg != "hello through the tunnel" || from != netip.MustParseAddrPort(clientAddr+":40000") {
		t.Fatalf("received %q from %v, want the payload from the client %s:40000", msg, from, clientAddr)
	}
	waitCounter(t, h, "decapsulated", func(c Counters) uint64 { return c.Decapsulated }, 1)

	// TCP: the restored SYN meets the listener on the VIP, whose stack
	// answers the client (SYN-RECV from the client's address and port).
	const tid = 0x0006_0007
	if err := h.Put(unit, tid, tuple(protoTCP, clientAddr, vipAddr, 41000, 8080)); err != nil {
		t.Fatal(err)
	}
	nstest.In(t, p.h, func() {
		l, err := net.Listen("tcp4", vipAddr+":8080")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
	})
	nstest.In(t, p.u, func() {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(unitAddr), Port: tid >> 16}, Timeout: 200 * time.Millisecond}
		c, err := d.Dial("tcp4", net.JoinHostPort(tunnelAddr, fmt.Sprint(tid&0xffff)))
		if err == nil {
			c.Close()
			t.Fatal("the unit's side connected to the tunnel address itself: the packet was not restored")
		}
	})
	deadline := time.Now().Add(5 * time.Second)
	for {
		out := nstest.Sh(t, "ip", "netns", "exec", p.h, "ss", "-Htn", "state", "syn-recv")
		if strings.Contains(out, vipAddr+":8080") && strings.Contains(out, clientAddr+":41000") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no connection from the client in SYN-RECV on the VIP: %q", out)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestWhatNoMappingExplainsIsDroppedAndCounted(t *testing.T) {
	p := newTopo(t)
	h := open(t, p, nstest.BPFFS(t))
	defer h.Remove()
	unit := netip.MustParseAddr(unitAddr)
	if err := h.Put(unit, 0x0005_0001, tuple(protoUDP, clientAddr, vipAddr, 40000, 5353)); err != nil {
		t.Fatal(err)
	}
	srv := listenUDP(t, p.h, vipAddr+":5353")
	// A socket on the tunnel address would receive anything the
	// program let through untranslated.
	leak := listenUDP(t, p.h, tunnelAddr+":1")
	sendUDP(t, p.u, unitAddr, tunnelAddr, 0x0006_0001, "unknown flow ID")
	waitCounter(t, h, "unknown_flow", func(c Counters) uint64 { return c.UnknownFlow }, 1)
	sendUDP(t, p.u, otherAddr, tunnelAddr, 0x0005_0001, "from no unit")
	waitCounter(t, h, "unknown_unit", func(c Counters) uint64 { return c.UnknownUnit }, 1)
	// The mapping is of UDP: a TCP packet with its ID is unknown.
	nstest.In(t, p.u, func() {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(unitAddr), Port: 5}, Timeout: 100 * time.Millisecond}
		if c, err := d.Dial("tcp4", tunnelAddr+":1"); err == nil {
			c.Close()
		}
	})
	waitCounter(t, h, "unknown_flow (protocol)", func(c Counters) uint64 { return c.UnknownFlow }, 2)
	// A known flow still arrives after all that, and it is the first
	// thing either socket sees.
	sendUDP(t, p.u, unitAddr, tunnelAddr, 0x0005_0001, "known")
	if msg, _ := receive(t, srv); msg != "known" {
		t.Fatalf("received %q, want the known flow's payload first", msg)
	}
	leak.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if n, from, err := leak.ReadFromUDP(make([]byte, 64)); err == nil {
		t.Fatalf("%d bytes from %v reached a socket on the tunnel address", n, from)
	}

	// Traffic to the host's own address is not the program's.
	own := listenUDP(t, p.h, hostAddr+":7")
	sendUDP(t, p.u, unitAddr, hostAddr, 0x0005_0007, "the host's own")
	if msg, from := receive(t, own); msg != "the host's own" || from.Addr().String() != unitAddr {
		t.Fatalf("received %q from %v on the host's own address", msg, from)
	}
	c, err := h.Counters()
	if err != nil {
		t.Fatal(err)
	}
	if c.Decapsulated != 1 {
		t.Errorf("%d packets restored, want 1 (%+v)", c.Decapsulated, c)
	}
}

// IP-in-IP: the host's kernel need not have the ipip module.
func TestIPIPIsUnwrapped(t *testing.T) {
	p := newTopo(t)
	h := open(t, p, nstest.BPFFS(t))
	defer h.Remove()
	srv := listenUDP(t, p.h, vipAddr+":5354")
	inner := pkttest.UDP(
		pkttest.Endpoint{Addr: netip.MustParseAddr(clientAddr), Port: 40001},
		pkttest.Endpoint{Addr: netip.MustParseAddr(vipAddr), Port: 5354},
		pkttest.Opts{NoEth: true, Payload: []byte("inside ipip")})
	nstest.In(t, p.u, func() {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_IPIP)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(fd)
		if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: netip.MustParseAddr(unitAddr).As4()}); err != nil {
			t.Fatal(err)
		}
		if err := unix.Sendto(fd, inner, 0, &unix.SockaddrInet4{Addr: netip.MustParseAddr(tunnelAddr).As4()}); err != nil {
			t.Fatal(err)
		}
	})
	msg, from := receive(t, srv)
	if msg != "inside ipip" || from != netip.MustParseAddrPort(clientAddr+":40001") {
		t.Fatalf("received %q from %v", msg, from)
	}
	waitCounter(t, h, "ipip", func(c Counters) uint64 { return c.IPIP }, 1)
}

// An agent that stops (or is killed) leaves the program restoring packets
// with the mappings it holds; the next agent takes it over, mappings and
// counters included.
func TestTheProgramOutlivesTheAgent(t *testing.T) {
	p := newTopo(t)
	dir := nstest.BPFFS(t)
	h := open(t, p, dir)
	unit := netip.MustParseAddr(unitAddr)
	if err := h.Put(unit, 0x0005_0009, tuple(protoUDP, clientAddr, vipAddr, 40000, 5353)); err != nil {
		t.Fatal(err)
	}
	h.Close()
	srv := listenUDP(t, p.h, vipAddr+":5353")
	sendUDP(t, p.u, unitAddr, tunnelAddr, 0x0005_0009, "while no agent runs")
	if msg, _ := receive(t, srv); msg != "while no agent runs" {
		t.Fatalf("received %q", msg)
	}
	h2 := open(t, p, dir)
	defer h2.Remove()
	if h2.Mode != "kept" {
		t.Errorf("mode %q, want the program taken over (kept)", h2.Mode)
	}
	if got, ok := h2.Get(unit, 0x0005_0009); !ok || got.DstPort != 5353 {
		t.Errorf("mapping after the takeover: %+v %v", got, ok)
	}
	waitCounter(t, h2, "decapsulated", func(c Counters) uint64 { return c.Decapsulated }, 1)
	// Removed, the program lets tunnel packets reach the stack, which has
	// no socket for them.
	if err := h2.Remove(); err != nil {
		t.Fatal(err)
	}
	sendUDP(t, p.u, unitAddr, tunnelAddr, 0x0005_0009, "after removal")
	srv.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if _, err := srv.Read(make([]byte, 64)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("after removal the VIP still received a restored packet (%v)", err)
	}
}

// An agent that takes the program over puts its own code in the link,
// keeping the maps: an upgraded agent does not go on running the program
// of the agent it replaced. The earlier program here only passes, so a
// flow-ID packet reaches the VIP restored only if the takeover replaced
// it.
func TestTakeOverRunsThisAgentsProgram(t *testing.T) {
	p := newTopo(t)
	dir := nstest.BPFFS(t)
	h := open(t, p, dir)
	unit := netip.MustParseAddr(unitAddr)
	if err := h.Put(unit, 0x0005_000a, tuple(protoUDP, clientAddr, vipAddr, 40001, 5354)); err != nil {
		t.Fatal(err)
	}
	passOnly, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.XDP, License: "MIT",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, xdpPass), asm.Return()}})
	if err != nil {
		t.Fatal(err)
	}
	defer passOnly.Close()
	if err := h.link.Update(passOnly); err != nil {
		t.Fatal(err)
	}
	h.Close()
	srv := listenUDP(t, p.h, vipAddr+":5354")
	h2 := open(t, p, dir)
	defer h2.Remove()
	if h2.Mode != "kept" || h2.Outdated != nil {
		t.Fatalf("mode %q (%v), want the program taken over with this agent's code", h2.Mode, h2.Outdated)
	}
	sendUDP(t, p.u, unitAddr, tunnelAddr, 0x0005_000a, "after an upgrade")
	if msg, _ := receive(t, srv); msg != "after an upgrade" {
		t.Fatalf("received %q", msg)
	}
}

// IPv6: a host with an IPv6 tunnel address restores the flow-ID packets
// of a unit's IPv6 address into the client's packets to an IPv6 VIP, and
// unwraps IPv6-in-IPv6 (the kernel's own sockets send both here, so the
// kernel's checksums and headers are what the program meets).
func TestIPv6ReachesTheVIPAsTheClientSentIt(t *testing.T) {
	p := newTopo(t)
	nstest.AddIPv6(t, p.u, p.h)
	h := openWith(t, p, Config{
		Addresses: []netip.Addr{netip.MustParseAddr(tunnelAddr), netip.MustParseAddr(tunnelAddr6)},
		Units:     []netip.Addr{netip.MustParseAddr(unitAddr), netip.MustParseAddr(unitAddr6)},
		PinDir:    nstest.BPFFS(t),
	})
	defer h.Remove()
	unit6 := netip.MustParseAddr(unitAddr6)
	const id = 0x0005_1234
	if err := h.Put(unit6, id, tuple(protoUDP, clientAddr6, vipAddr6, 40000, 5353)); err != nil {
		t.Fatal(err)
	}
	// The same ID from the unit's IPv4 address is another flow.
	if err := h.Put(netip.MustParseAddr(unitAddr), id, tuple(protoUDP, clientAddr, vipAddr, 40001, 5353)); err != nil {
		t.Fatal(err)
	}
	srv := listenUDP(t, p.h, "["+vipAddr6+"]:5353")
	sendUDP(t, p.u, unitAddr6, tunnelAddr6, id, "hello through the IPv6 tunnel")
	msg, from := receive(t, srv)
	if msg != "hello through the IPv6 tunnel" || from != netip.MustParseAddrPort("["+clientAddr6+"]:40000") {
		t.Fatalf("received %q from %v, want the payload from the client [%s]:40000", msg, from, clientAddr6)
	}
	waitCounter(t, h, "decapsulated", func(c Counters) uint64 { return c.Decapsulated }, 1)

	// IPv6-in-IPv6 from the unit: the kernel adds the outer header.
	inner := pkttest.UDP(pkttest.EP("02:00:00:00:00:01", "["+clientAddr6+"]:40002"), pkttest.EP("02:00:00:00:00:02", "["+vipAddr6+"]:5353"),
		pkttest.Opts{Payload: []byte("inside IPv6-in-IPv6")})[14:]
	nstest.In(t, p.u, func() {
		c, err := net.ListenPacket("ip6:41", unitAddr6)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.WriteTo(inner, &net.IPAddr{IP: net.ParseIP(tunnelAddr6)}); err != nil {
			t.Fatal(err)
		}
	})
	msg, from = receive(t, srv)
	if msg != "inside IPv6-in-IPv6" || from != netip.MustParseAddrPort("["+clientAddr6+"]:40002") {
		t.Fatalf("received %q from %v, want the inner packet's payload from [%s]:40002", msg, from, clientAddr6)
	}
	waitCounter(t, h, "ipip", func(c Counters) uint64 { return c.IPIP }, 1)

	// From an address no unit has: dropped, never delivered.
	sendUDP(t, p.u, otherAddr6, tunnelAddr6, id, "from a stranger")
	waitCounter(t, h, "unknown_unit", func(c Counters) uint64 { return c.UnknownUnit }, 1)
}

// An agent whose program predates IPv6 left no IPv6 maps: the agent that
// takes it over makes them (and pins them for the next), keeping the
// IPv4 mappings, and serves IPv6 at once.
func TestTakeOverAddsTheIPv6Maps(t *testing.T) {
	p := newTopo(t)
	nstest.AddIPv6(t, p.u, p.h)
	dir := nstest.BPFFS(t)
	h := open(t, p, dir)
	unit := netip.MustParseAddr(unitAddr)
	if err := h.Put(unit, 0x0005_000b, tuple(protoUDP, clientAddr, vipAddr, 40001, 5355)); err != nil {
		t.Fatal(err)
	}
	h.Close()
	for _, n := range pinNames[firstIPv6Map:] {
		if err := os.Remove(filepath.Join(h.dir, n)); err != nil {
			t.Fatal(err)
		}
	}
	cfg := Config{
		Addresses: []netip.Addr{netip.MustParseAddr(tunnelAddr), netip.MustParseAddr(tunnelAddr6)},
		Units:     []netip.Addr{unit, netip.MustParseAddr(unitAddr6)},
		PinDir:    dir,
	}
	h2 := openWith(t, p, cfg)
	if h2.Mode != "kept" || h2.Outdated != nil {
		t.Fatalf("mode %q (%v), want the program taken over with this agent's code", h2.Mode, h2.Outdated)
	}
	if got, ok := h2.Get(unit, 0x0005_000b); !ok || got.DstPort != 5355 {
		t.Errorf("the IPv4 mapping after the takeover: %+v %v", got, ok)
	}
	if err := h2.Put(netip.MustParseAddr(unitAddr6), 0x0005_000c, tuple(protoUDP, clientAddr6, vipAddr6, 40002, 5355)); err != nil {
		t.Fatal(err)
	}
	srv := listenUDP(t, p.h, "["+vipAddr6+"]:5355")
	sendUDP(t, p.u, unitAddr6, tunnelAddr6, 0x0005_000c, "IPv6 after an upgrade")
	if msg, _ := receive(t, srv); msg != "IPv6 after an upgrade" {
		t.Fatalf("received %q", msg)
	}
	h2.Close()
	h3 := openWith(t, p, cfg)
	defer h3.Remove()
	if got, ok := h3.Get(netip.MustParseAddr(unitAddr6), 0x0005_000c); !ok || got.DstPort != 5355 {
		t.Errorf("the IPv6 mapping pinned by the upgraded agent: %+v %v", got, ok)
	}
}
