package nstest

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"runtime"
	"strconv"
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

// marker starts the name of every namespace NS makes.
const marker = "tns"

// NS makes the namespace tns-prefix-PID-tag, removed when t ends. The
// PID keeps concurrent test binaries apart, and lets the next binary
// remove what one killed by go test's -timeout (whose cleanups never
// ran) left behind, with the processes still in it.
func NS(t testing.TB, prefix, tag string) string {
	t.Helper()
	if err := removeStale(); err != nil {
		t.Logf("nstest: leftovers of an earlier run: %v", err)
	}
	name := fmt.Sprintf("%s-%s-%d-%s", marker, prefix, os.Getpid(), tag)
	Sh(t, "ip", "netns", "add", name)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	return name
}

// owner returns the PID in a name NS made.
func owner(name string) (int, bool) {
	f := strings.Split(name, "-")
	if len(f) < 4 || f[0] != marker {
		return 0, false
	}
	pid, err := strconv.Atoi(f[2])
	return pid, err == nil && pid > 0
}

// removeStale deletes the namespaces NS made for test binaries that are
// no longer running, after killing what runs in them (a deleted
// namespace lives on while a process is inside). A PID reused by
// another process keeps its namespace: a leak, never a wrong removal.
func removeStale() error {
	entries, err := os.ReadDir("/run/netns")
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("list namespaces: %w", err)
	}
	var errs []error
	for _, e := range entries {
		pid, ok := owner(e.Name())
		if !ok || unix.Kill(pid, 0) != unix.ESRCH {
			continue
		}
		if out, err := exec.Command("ip", "netns", "pids", e.Name()).Output(); err == nil {
			for _, f := range strings.Fields(string(out)) {
				if p, err := strconv.Atoi(f); err == nil {
					_ = unix.Kill(p, unix.SIGKILL)
				}
			}
		}
		if out, err := exec.Command("ip", "netns", "del", e.Name()).CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("delete %s: %v: %s", e.Name(), err, strings.TrimSpace(string(out))))
		}
	}
	return errors.Join(errs...)
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

	// The same in IPv6, after AddIPv6.
	UnitAddr6  = "fd00:7::1"
	OtherAddr6 = "fd00:7::3"
	HostAddr6  = "fd00:7::2"
	VIPAddr6   = "2001:db8:50::50"
	ClientNet6 = "2001:db8:9::/64"
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

// AddIPv6 gives UnitHost's topology its IPv6 addresses (UnitAddr6 and
// OtherAddr6 on u0, HostAddr6 on h0, VIPAddr6 on the host's lo; no
// duplicate address detection, so they are usable at once) and the
// host's route to ClientNet6 by way of u.
func AddIPv6(t testing.TB, u, h string) {
	t.Helper()
	for _, args := range [][]string{
		{"ip", "-n", u, "addr", "add", UnitAddr6 + "/64", "dev", "u0", "nodad"},
		{"ip", "-n", u, "addr", "add", OtherAddr6 + "/64", "dev", "u0", "nodad"},
		{"ip", "-n", h, "addr", "add", HostAddr6 + "/64", "dev", "h0", "nodad"},
		{"ip", "-n", h, "addr", "add", VIPAddr6 + "/128", "dev", "lo", "nodad"},
		{"ip", "-n", h, "route", "add", ClientNet6, "via", UnitAddr6},
	} {
		Sh(t, args...)
	}
}
