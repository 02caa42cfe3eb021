package afxdp

import (
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/tetherlb/tether/internal/nstest"

	"github.com/tetherlb/tether/internal/pkttest"
	"github.com/tetherlb/tether/nic"
)

// pair is two namespaces joined by a veth pair: a0 (10.9.0.1) in A, where
// the port binds, and b0 (10.9.0.2) in B, the peer.
type pair struct {
	a, b string
}

func newPair(t *testing.T) *pair {
	t.Helper()
	nstest.Require(t)
	p := &pair{a: nstest.NS(t, "ttx", "a"), b: nstest.NS(t, "ttx", "b")}
	sh := func(args ...string) { nstest.Sh(t, args...) }
	sh("ip", "link", "add", "a0", "netns", p.a, "type", "veth", "peer", "name", "b0", "netns", p.b)
	sh("ip", "-n", p.a, "addr", "add", "10.9.0.1/24", "dev", "a0")
	sh("ip", "-n", p.b, "addr", "add", "10.9.0.2/24", "dev", "b0")
	sh("ip", "-n", p.a, "link", "set", "a0", "up")
	sh("ip", "-n", p.b, "link", "set", "b0", "up")
	sh("ip", "-n", p.b, "route", "add", "10.9.0.100/32", "via", "10.9.0.1")
	return p
}

func receive(t *testing.T, p *Port, timeout time.Duration) []nic.Frame {
	t.Helper()
	frames := make([]nic.Frame, 16)
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if n, err := p.Receive(frames); err != nil {
			t.Fatal(err)
		} else if n > 0 {
			return frames[:n]
		}
		p.Wait(10 * time.Millisecond)
	}
	return nil
}

func TestRedirectOnlyOwnedTraffic(t *testing.T) {
	pr := newPair(t)
	var u *Unit
	var err error
	var ownUDP *net.UDPConn
	nstest.In(t, pr.a, func() {
		u, err = Open(Config{Interface: "a0"})
		if err == nil {
			ownUDP, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(10, 9, 0, 1), Port: 5555})
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	defer ownUDP.Close()
	port := u.Sockets()[0]
	t.Logf("XDP %s, socket %s", u.XDPMode(), port.Mode())
	if err := u.Own([]netip.Addr{netip.MustParseAddr("10.9.0.100")}, nil); err != nil {
		t.Fatal(err)
	}
	var send *net.UDPConn
	nstest.In(t, pr.b, func() { send, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(10, 9, 0, 2), Port: 7777}) })
	if err != nil {
		t.Fatal(err)
	}
	defer send.Close()

	// To the owned address: redirected to the socket.
	if _, err := send.WriteToUDP([]byte("to-vip"), &net.UDPAddr{IP: net.IPv4(10, 9, 0, 100), Port: 9999}); err != nil {
		t.Fatal(err)
	}
	got := receive(t, port, 5*time.Second)
	if len(got) == 0 || !strings.Contains(string(got[0].Data()), "to-vip") {
		t.Fatalf("owned traffic not redirected: %d frames", len(got))
	}
	port.Release(got)

	// To the unit's own address: the kernel gets it, the socket does not.
	if _, err := send.WriteToUDP([]byte("to-unit"), &net.UDPAddr{IP: net.IPv4(10, 9, 0, 1), Port: 5555}); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 100)
	ownUDP.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, _, err := ownUDP.ReadFromUDP(buf); err != nil || string(buf[:n]) != "to-unit" {
		t.Fatalf("the unit's own traffic did not reach its kernel: %q, %v", buf[:n], err)
	}
	if leaked := receive(t, port, 200*time.Millisecond); len(leaked) > 0 {
		t.Fatalf("the unit's own traffic was redirected too")
	}

	// Transmit: a frame from the port reaches the peer's socket.
	peerMAC := macOf(t, pr.b, "b0")
	ownMAC := macOf(t, pr.a, "a0")
	frame := pkttest.UDP(pkttest.Endpoint{MAC: ownMAC, Addr: netip.MustParseAddr("10.9.0.100"), Port: 9999},
		pkttest.Endpoint{MAC: peerMAC, Addr: netip.MustParseAddr("10.9.0.2"), Port: 7777}, pkttest.Opts{Payload: []byte("from-port")})
	tx := make([]nic.Frame, 1)
	for {
		// Borrow a frame buffer by receiving: send ourselves one more
		// owned packet and reuse its buffer for the reply.
		send.WriteToUDP([]byte("x"), &net.UDPAddr{IP: net.IPv4(10, 9, 0, 100), Port: 9999})
		if got := receive(t, port, 5*time.Second); len(got) > 0 {
			tx[0] = got[0]
			port.Release(got[1:])
			break
		}
	}
	tx[0].Len = copy(tx[0].Buf[tx[0].Off:], frame)
	if n, err := port.Transmit(tx); n != 1 || err != nil {
		t.Fatalf("Transmit = %d, %v", n, err)
	}
	send.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, _, err := send.ReadFromUDP(buf); err != nil || string(buf[:n]) != "from-port" {
		t.Fatalf("peer did not receive the transmitted frame: %q, %v", buf[:n], err)
	}
}

func macOf(t *testing.T, ns, ifc string) net.HardwareAddr {
	t.Helper()
	out := nstest.Sh(t, "ip", "-n", ns, "-br", "link", "show", ifc)
	for _, f := range strings.Fields(out) {
		if m, err := net.ParseMAC(f); err == nil && len(m) == 6 {
			return m
		}
	}
	t.Fatalf("no MAC in %q", out)
	return nil
}

func TestBadInterface(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	_, err := Open(Config{Interface: "no-such-if0"})
	if err == nil || !strings.Contains(err.Error(), "no-such-if0") || !strings.Contains(err.Error(), "tun") {
		t.Fatalf("error %v should name the interface and the alternative port", err)
	}
}

// TestKernelDropsAreCounted: frames the kernel cannot place in a socket
// that nobody reads (its rings full) are reported by the port, which no
// drop reason of the pipeline can count.
func TestKernelDropsAreCounted(t *testing.T) {
	pr := newPair(t)
	var u *Unit
	var err error
	const ringEntries = 512 // Open rounds 300 up to this
	nstest.In(t, pr.a, func() { u, err = Open(Config{Interface: "a0", Ring: 300}) })
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	port := u.Sockets()[0]
	if err := u.Own([]netip.Addr{netip.MustParseAddr("10.9.0.100")}, nil); err != nil {
		t.Fatal(err)
	}
	if n := port.KernelDropped(); n != 0 {
		t.Fatalf("%d drops before any traffic", n)
	}
	var send *net.UDPConn
	nstest.In(t, pr.b, func() { send, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(10, 9, 0, 2), Port: 7778}) })
	if err != nil {
		t.Fatal(err)
	}
	defer send.Close()
	// Twice the rings' size, and nobody receives.
	for range 2 * ringEntries {
		send.WriteToUDP([]byte("unread"), &net.UDPAddr{IP: net.IPv4(10, 9, 0, 100), Port: 9999})
	}
	deadline := time.Now().Add(10 * time.Second)
	for port.KernelDropped() == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond) // polling a counter the kernel updates
	}
	if n := port.KernelDropped(); n == 0 || n > 2*ringEntries {
		t.Fatalf("%d kernel drops after %d frames to a socket holding %d", n, 2*ringEntries, ringEntries)
	}
	if s := port.Stats(); s.KernelDropped == 0 {
		t.Error("Stats does not report the kernel's drops")
	}
}

// TestPinnedAcrossACrash: a forwarder killed without Close leaves its
// program attached: Tether's traffic is dropped (not handed to the
// kernel, which would forward it untranslated) until the next forwarder
// takes the link over; a clean Close detaches it.
func TestPinnedAcrossACrash(t *testing.T) {
	pr := newPair(t)
	nstest.Sh(t, "ip", "-n", pr.a, "addr", "add", "10.9.0.100/32", "dev", "a0")
	var u *Unit
	var err error
	var local *net.UDPConn
	nstest.In(t, pr.a, func() {
		if u, err = Open(Config{Interface: "a0"}); err == nil {
			local, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(10, 9, 0, 100), Port: 9999})
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer local.Close()
	if !u.Pinned() {
		t.Skip("no BPF filesystem to pin the link in")
	}
	if err := u.Own([]netip.Addr{netip.MustParseAddr("10.9.0.100")}, nil); err != nil {
		t.Fatal(err)
	}
	// The crash: sockets, program and maps go; the pinned link stays.
	for _, s := range u.sockets {
		s.close()
	}
	var send *net.UDPConn
	nstest.In(t, pr.b, func() { send, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(10, 9, 0, 2), Port: 7779}) })
	if err != nil {
		t.Fatal(err)
	}
	defer send.Close()
	buf := make([]byte, 64)
	sendAndRead := func(msg string, within time.Duration) bool {
		send.WriteToUDP([]byte(msg), &net.UDPAddr{IP: net.IPv4(10, 9, 0, 100), Port: 9999})
		local.SetReadDeadline(time.Now().Add(within))
		n, _, err := local.ReadFromUDP(buf)
		return err == nil && string(buf[:n]) == msg
	}
	if sendAndRead("during the gap", 500*time.Millisecond) {
		t.Fatal("with no forwarder, Tether's traffic reached the kernel")
	}
	// The next forwarder takes the link over.
	var next *Unit
	nstest.In(t, pr.a, func() { next, err = Open(Config{Interface: "a0"}) })
	if err != nil {
		t.Fatalf("a forwarder after a crash: %v", err)
	}
	if next.XDPMode() != "kept" {
		t.Errorf("the next forwarder attached anew (%s) instead of taking the pinned link over", next.XDPMode())
	}
	u.stopLocal() // the crashed process's goroutines go with it
	u.prog.Close()
	u.maps.close()
	u.link.Close() // the crashed process's handle; the pin holds the link
	// Until it says what it owns, the dead one's program stays: a new
	// program with empty maps would pass everything to the kernel.
	if sendAndRead("before the next forwarder owns anything", 500*time.Millisecond) {
		t.Fatal("the next forwarder handed Tether's traffic to the kernel before owning it")
	}
	if err := next.Own([]netip.Addr{netip.MustParseAddr("10.9.0.100")}, nil); err != nil {
		t.Fatal(err)
	}
	if next.kept != nil || next.link == nil {
		t.Fatal("Own did not take the pinned link over")
	}
	if sendAndRead("once it owns the address", 500*time.Millisecond) {
		t.Fatal("the kernel got traffic the next forwarder owns")
	}
	// A clean stop detaches: the kernel gets the traffic again.
	if err := next.Close(); err != nil {
		t.Fatal(err)
	}
	if !sendAndRead("after a clean stop", 5*time.Second) {
		t.Fatal("after a clean stop the kernel does not get the traffic")
	}
}

// TestAllocatedFrameIsSent: a buffer lent by Alloc (for a frame another
// worker received) is sent by Transmit like a received one, and the
// free list runs dry only when every frame not lent to the kernel for
// receiving is out, until they come back.
func TestAllocatedFrameIsSent(t *testing.T) {
	pr := newPair(t)
	var u *Unit
	var err error
	nstest.In(t, pr.a, func() { u, err = Open(Config{Interface: "a0", Ring: 64}) })
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	port := u.Sockets()[0]
	var recv *net.UDPConn
	nstest.In(t, pr.b, func() { recv, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(10, 9, 0, 2), Port: 7777}) })
	if err != nil {
		t.Fatal(err)
	}
	defer recv.Close()
	frame := pkttest.UDP(pkttest.Endpoint{MAC: macOf(t, pr.a, "a0"), Addr: netip.MustParseAddr("10.9.0.100"), Port: 9999},
		pkttest.Endpoint{MAC: macOf(t, pr.b, "b0"), Addr: netip.MustParseAddr("10.9.0.2"), Port: 7777}, pkttest.Opts{Payload: []byte("allocated")})
	f, ok := port.Alloc()
	if !ok || f.Len != 0 || f.Off != nic.Headroom || len(f.Buf)-f.Off < 1500 {
		t.Fatalf("Alloc = %+v (len %d), %v: want an empty frame with headroom and room for 1500 bytes", f.Off, len(f.Buf), ok)
	}
	f.Len = copy(f.Buf[f.Off:], frame)
	if n, err := port.Transmit([]nic.Frame{f}); n != 1 || err != nil {
		t.Fatalf("Transmit = %d, %v", n, err)
	}
	buf := make([]byte, 100)
	recv.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, _, err := recv.ReadFromUDP(buf); err != nil || string(buf[:n]) != "allocated" {
		t.Fatalf("peer did not receive the allocated frame: %q, %v", buf[:n], err)
	}
	// 128 frames, 64 of them in the fill ring: 64 to lend.
	var lent []nic.Frame
	for {
		f, ok := port.Alloc()
		if !ok {
			break
		}
		lent = append(lent, f)
	}
	if len(lent) != 64 {
		t.Fatalf("lent %d frames of 128 with a fill ring of 64, want 64", len(lent))
	}
	port.Release(lent)
	if _, ok := port.Alloc(); !ok {
		t.Fatal("no frame to lend after the lent ones came back")
	}
}
