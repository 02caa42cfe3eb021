package tun

import (
	"net"
	"net/netip"
	"os/exec"
	"runtime"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/tetherlb/tether/internal/nstest"
)

// TestKernelDropsAreCounted: packets the kernel routes into the device
// while nobody reads it overflow the device's queue; the port reports
// those drops, which no drop reason of the pipeline can count. (The
// queue is made 4 packets long through Config.QueueLength.)
func TestKernelDropsAreCounted(t *testing.T) {
	name := enterNetns(t, "ttun")
	p, err := Open(Config{Name: "tdrop0", QueueLength: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	for _, c := range [][]string{
		{"ip", "-n", name, "addr", "add", "10.99.0.1/24", "dev", "tdrop0"},
	} {
		if out, err := exec.Command(c[0], c[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v: %s", c, err, out)
		}
	}
	if n := p.KernelDropped(); n != 0 {
		t.Fatalf("%d drops before any traffic", n)
	}
	conn, err := net.Dial("udp", "10.99.0.2:9")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	const sent = 64
	for range sent {
		conn.Write([]byte("nobody reads the device")) // some fail once the queue is full: that is the point
	}
	n := p.KernelDropped()
	if n == 0 || n > sent {
		t.Fatalf("%d kernel drops after %d packets into a 4-packet queue nobody reads", n, sent)
	}
	if s := p.Stats(); s.KernelDropped != n {
		t.Errorf("Stats().KernelDropped %d, KernelDropped %d", s.KernelDropped, n)
	}
}

// TestBlackholeStandsIn: a routed prefix keeps a blackhole route of
// lower preference, which outlives the device (a killed forwarder) and
// which a clean Close removes.
func TestBlackholeStandsIn(t *testing.T) {
	enterNetns(t, "ttbh")
	blackholes := func() int {
		rs, err := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Type: unix.RTN_BLACKHOLE}, netlink.RT_FILTER_TYPE)
		if err != nil {
			t.Fatal(err)
		}
		return len(rs)
	}
	p, err := Open(Config{Name: "tbh0"})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Route(netip.MustParsePrefix("192.0.2.10/32")); err != nil {
		t.Fatal(err)
	}
	if n := blackholes(); n != 1 {
		t.Fatalf("%d blackhole routes after Route, want 1", n)
	}
	// The device goes (as when its forwarder is killed): the blackhole stays.
	if l, err := netlink.LinkByName("tbh0"); err == nil {
		netlink.LinkDel(l)
	}
	if n := blackholes(); n != 1 {
		t.Fatalf("%d blackhole routes without the device, want 1", n)
	}
	p.Close()
	if n := blackholes(); n != 0 {
		t.Fatalf("%d blackhole routes after Close, want 0", n)
	}
}

// enterNetns moves the test's thread into a new network namespace for
// the rest of the test, and returns its name; Cleanup moves the thread
// back and deletes the namespace. It skips the test without root.
func enterNetns(t *testing.T, prefix string) string {
	t.Helper()
	nstest.Require(t)
	name := nstest.NS(t, prefix, "a")
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		netns.Set(orig)
		orig.Close()
		runtime.UnlockOSThread()
	})
	h, err := netns.GetFromName(name)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if err := netns.Set(h); err != nil {
		t.Fatal(err)
	}
	return name
}
