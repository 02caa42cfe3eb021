package nstest

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Require skips t unless it can make namespaces: root and iproute2.
func Require(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: network namespaces")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs the ip command (iproute2)")
	}
}

// NS makes the namespace prefix+PID+tag, removed when t ends (the PID
// keeps concurrent test binaries apart).
func NS(t testing.TB, prefix, tag string) string {
	t.Helper()
	name := fmt.Sprintf("%s%d%s", prefix, os.Getpid(), tag)
	Sh(t, "ip", "netns", "add", name)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	return name
}

// Sh runs a command and returns its output, failing t with the output
// when it fails.
func Sh(t testing.TB, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// In runs fn with the calling goroutine's thread in namespace ns.
func In(t testing.TB, ns string, fn func()) {
	t.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	h, err := netns.GetFromName(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if err := netns.Set(h); err != nil {
		t.Fatal(err)
	}
	defer netns.Set(orig)
	fn()
}

// BPFFS mounts a BPF filesystem of t's own, unmounted when t ends, so
// that pins made there do not outlive the test. It skips t when the
// kernel will not mount one.
func BPFFS(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	if err := unix.Mount("bpf", dir, "bpf", 0, "mode=0700"); err != nil {
		t.Skipf("mount a BPF filesystem: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	return dir
}

// The addresses of UnitHost's topology.
const (
	UnitAddr  = "10.7.0.1"   // the unit's side, u0
	OtherAddr = "10.7.0.3"   // also on u0: an address no unit has
	HostAddr  = "10.7.0.2"   // the host, h0
	VIPAddr   = "192.0.2.50" // on the host's lo
	ClientNet = "203.0.113.0/24"
)

// UnitHost builds the host side of a tunnel to test against: namespace
// u (a unit's side: u0 with UnitAddr and OtherAddr) and namespace h (the
// host: h0 with HostAddr, VIPAddr on lo), joined by a veth pair. The
// host's replies to ClientNet go by way of u, which drops them (it
// neither holds nor forwards those addresses): enough for the host's
// stack to answer, with no RST to undo what it did. u0 sends full
// checksums, as a unit does (the kernel's sockets would leave them to
// the veth).
func UnitHost(t testing.TB, prefix string) (u, h string) {
	t.Helper()
	Require(t)
	u, h = NS(t, prefix, "u"), NS(t, prefix, "h")
	for _, args := range [][]string{
		{"ip", "link", "add", "u0", "netns", u, "type", "veth", "peer", "name", "h0", "netns", h},
		{"ip", "-n", u, "addr", "add", UnitAddr + "/24", "dev", "u0"},
		{"ip", "-n", u, "addr", "add", OtherAddr + "/24", "dev", "u0"},
		{"ip", "-n", h, "addr", "add", HostAddr + "/24", "dev", "h0"},
		{"ip", "-n", h, "addr", "add", VIPAddr + "/32", "dev", "lo"},
		{"ip", "-n", u, "link", "set", "lo", "up"},
		{"ip", "-n", h, "link", "set", "lo", "up"},
		{"ip", "-n", u, "link", "set", "u0", "up"},
		{"ip", "-n", h, "link", "set", "h0", "up"},
		{"ip", "-n", h, "route", "add", ClientNet, "via", UnitAddr},
		{"ip", "netns", "exec", u, "ethtool", "-K", "u0", "tx", "off"},
	} {
		Sh(t, args...)
	}
	return u, h
}
