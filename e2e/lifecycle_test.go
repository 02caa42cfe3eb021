package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// attached reports what the unit's port has attached: an XDP program on
// the AF_XDP interface, or the TUN device.
func attached(t *testing.T, lb *LB) bool {
	t.Helper()
	out, err := lb.Exec(lb.Unit, "ip", "-d", "link", "show")
	if err != nil {
		t.Fatal(err)
	}
	if lb.Driver == "tun" {
		return strings.Contains(out, lb.UnitIf+":")
	}
	return strings.Contains(out, "prog/xdp")
}

// TestCrashAndRestart kills a lone forwarder with SIGKILL: what it leaves
// is what keeps the VIPs from falling to the kernel until the next one
// (the XDP program, pinned; TUN's blackhole routes, the device itself
// going with the process). The next forwarder takes over and forwards;
// a clean stop then leaves nothing.
func TestCrashAndRestart(t *testing.T) {
	drivers(t, func(t *testing.T, build func(string, int) *LB) {
		lb := build("k", 2)
		if err := lb.StartBackends(8080); err != nil {
			t.Fatal(err)
		}
		cfg := lbConfig(lb, "nat", []int{1, 1}, 8080, "    snat: [198.51.100.1]\n")
		td, _ := startTether(t, lb, cfg)
		if !attached(t, lb) {
			t.Fatal("nothing attached while the forwarder runs")
		}
		if got := curl(t, lb, "http://192.0.2.10/"); !strings.HasPrefix(got, "b") {
			t.Fatalf("curl got %q", got)
		}
		if err := td.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		td.Wait(5 * time.Second)
		if lb.Driver == "tun" {
			waitDetached(t, lb) // the device goes with the process
		} else if !attached(t, lb) {
			t.Fatal("the XDP program went with the forwarder: the kernel gets Tether's traffic")
		}
		if !standIn(t, lb) {
			t.Fatal("nothing stands in for the forwarder after the crash")
		}
		td2, _ := startTether(t, lb, cfg)
		if lb.Driver == "afxdp" && !strings.Contains(td2.Output(), "xdp=kept") {
			t.Errorf("the next forwarder did not take the pinned program over:\n%s", td2.Output())
		}
		if got := curl(t, lb, "http://192.0.2.10/"); !strings.HasPrefix(got, "b") {
			t.Fatalf("after restart curl got %q", got)
		}
		if err := td2.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if err := td2.Wait(10 * time.Second); err != nil {
			t.Fatalf("clean stop: %v\n%s", err, td2.Output())
		}
		if !strings.Contains(td2.Output(), "frames:") {
			t.Errorf("no summary on stop:\n%s", td2.Output())
		}
		waitDetached(t, lb)
		if standIn(t, lb) {
			t.Error("a clean stop left the stand-in (pin or blackhole routes) behind")
		}
	})
}

// standIn reports whether what holds the VIPs while no forwarder runs is
// in place: the pinned XDP link, or TUN's blackhole routes.
func standIn(t *testing.T, lb *LB) bool {
	t.Helper()
	if lb.Driver == "tun" {
		out, err := lb.Exec(lb.Unit, "ip", "route", "show", "type", "blackhole")
		if err != nil {
			t.Fatal(err)
		}
		return strings.Contains(out, "192.0.2.10")
	}
	pins, _ := filepath.Glob(filepath.Join(lb.PinDir, "xdp-*"))
	return len(pins) > 0
}

func waitDetached(t *testing.T, lb *LB) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for attached(t, lb) {
		if time.Now().After(deadline) {
			t.Fatal("the forwarder's program or device outlived it")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestBadPortFailsClearly: a wrong interface name is one clear error
// naming the cause and the other port, and nothing is left behind.
func TestBadPortFailsClearly(t *testing.T) {
	lb := newLB(t, "e", 1, NewSwitchedLB)
	cfg := "unit: {address4: 10.0.0.1}\nforwarder:\n  port: {driver: afxdp, interface: nope0}\nvips: []\n"
	path := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("ip", "netns", "exec", lb.Unit, tetherd, "forwarder", "--config", path).CombinedOutput()
	if err == nil {
		t.Fatalf("tetherd started on a missing interface:\n%s", out)
	}
	for _, want := range []string{"nope0", "tun"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("error lacks %q:\n%s", want, out)
		}
	}
	if attached(t, lb) {
		t.Error("something was attached despite the failure")
	}
	// Without privileges: one error naming the missing capabilities.
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Log("setpriv missing: unprivileged start not checked")
		return
	}
	dir, err := os.MkdirTemp("", "tether-e2e-cfg-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	os.Chmod(dir, 0o755) // readable by the unprivileged user
	path = filepath.Join(dir, "tether.yaml")
	if err := os.WriteFile(path, []byte(strings.Replace(cfg, "nope0", lb.UnitIf, 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err = exec.Command("ip", "netns", "exec", lb.Unit, "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
		"--inh-caps=-all", "--bounding-set=-all", tetherd, "forwarder", "--config", path).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "permission denied") || !strings.Contains(string(out), "CAP_NET_ADMIN") {
		t.Errorf("unprivileged start: %v\n%s", err, out)
	}
	if attached(t, lb) {
		t.Error("an unprivileged start attached something")
	}
}
