package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// tetherctlBin is built by TestMain next to tetherd.
func tetherctlBin() string { return filepath.Join(filepath.Dir(tetherd), "tetherctl") }

// runningUnit is a running tetherd run (control + forwarder) in the unit
// namespace, with its admin socket in a test directory.
type runningUnit struct {
	t  *testing.T
	lb *LB
	// ns is the unit's namespace: lb.Unit, or one AddUnit made.
	ns      string
	proc    *Proc
	cfgPath string
	socket  string
	runDir  string
}

func startUnit(t *testing.T, lb *LB, cfg string) *runningUnit {
	t.Helper()
	return startUnitIn(t, lb, lb.Unit, cfg)
}

// startUnitIn is startUnit in namespace ns.
func startUnitIn(t *testing.T, lb *LB, ns, cfg string) *runningUnit {
	t.Helper()
	dir, err := os.MkdirTemp("", "tether-unit-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755)
	t.Cleanup(func() { os.RemoveAll(dir) })
	u := &runningUnit{t: t, lb: lb, ns: ns, cfgPath: filepath.Join(dir, "tether.yaml"), socket: filepath.Join(dir, "run", "admin.sock"), runDir: filepath.Join(dir, "run")}
	cfg += fmt.Sprintf("admin:\n  socket: %s\n  run_dir: %s\n", u.socket, u.runDir)
	if err := os.WriteFile(u.cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	u.start()
	t.Cleanup(u.killForwarder)
	return u
}

// start runs tetherd run and waits until the forwarder is connected.
func (u *runningUnit) start() {
	u.t.Helper()
	p, err := u.lb.Start(u.ns, "tetherd run", nil, tetherd, "run", "--config", u.cfgPath)
	if err != nil {
		u.t.Fatal(err)
	}
	u.proc = p
	if err := p.WaitFor("forwarder connected", 15*time.Second); err != nil {
		u.t.Fatal(err)
	}
	u.waitInventory()
}

// waitInventory waits for the control process's catch-up to finish.
func (u *runningUnit) waitInventory() {
	u.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(u.proc.Output(), "connection inventory read") && !strings.Contains(u.proc.Output(), "flows restored") {
		if time.Now().After(deadline) {
			u.t.Fatalf("control never caught up:\n%s", u.proc.Output())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// ctl runs tetherctl in the unit namespace.
func (u *runningUnit) ctl(args ...string) (string, error) {
	return u.lb.Exec(u.ns, append([]string{tetherctlBin(), "--socket", u.socket}, args...)...)
}

func (u *runningUnit) status() map[string]any {
	u.t.Helper()
	out, err := u.ctl("status", "-o", "json")
	if err != nil {
		u.t.Fatal(err)
	}
	var s map[string]any
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		u.t.Fatalf("status %q: %v", out, err)
	}
	return s
}

// forwarderPID reads the PID file the control process writes.
func (u *runningUnit) forwarderPID() int {
	b, err := os.ReadFile(filepath.Join(u.runDir, "forwarder.pid"))
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid
}

// killForwarder stops a forwarder that outlived its control process.
func (u *runningUnit) killForwarder() {
	if pid := u.forwarderPID(); pid > 0 {
		syscall.Kill(pid, syscall.SIGKILL)
	}
}

// download starts a SHA-256-checked slow transfer from the VIP (slowSize
// bytes at slowPace) and returns a channel for its result.
func download(lb *LB) chan ClientResult {
	done := make(chan ClientResult, 1)
	go func() {
		done <- clientNoFatal(lb, fmt.Sprintf("http://192.0.2.10/bytes?n=%d&pace=%d", slowSize, slowPace))
	}()
	return done
}

// checkDownload waits for download's transfer, which must arrive whole
// and intact.
func checkDownload(t *testing.T, done chan ClientResult) ClientResult {
	t.Helper()
	select {
	case got := <-done:
		if got.Errors > 0 || got.Bytes != slowSize || got.SHA256 != PayloadSHA256(slowSize) {
			t.Fatalf("transfer: %d bytes, errors %d (%s); want %d intact", got.Bytes, got.Errors, got.FirstErr, slowSize)
		}
		return got
	case <-time.After(120 * time.Second):
		t.Fatal("transfer did not finish in 120 s")
	}
	return ClientResult{}
}

// servingBackend waits for a backend to start serving a transfer.
func servingBackend(t *testing.T, lb *LB) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		for _, p := range lb.procs {
			if strings.HasPrefix(p.Name, "httpd ") && strings.Contains(p.Output(), "serving") {
				return strings.TrimPrefix(p.Name, "httpd ")
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	// What the client's connections are doing tells a handshake that
	// never completed from a request that never came.
	ss, err := lb.Exec(lb.Client, "ss", "-tanoi")
	t.Fatalf("no backend started serving; the client's sockets (%v):\n%s", err, ss)
	return ""
}

// A slow transfer lasts slowSize/slowPace = 6 s on any machine: long
// enough to be in the middle when a process restarts or a backend
// drains, which an unpaced one, done in a moment on a fast machine and
// in minutes on a loaded one, is not.
const slowSize, slowPace = 6 << 20, 1 << 20

func TestControl(t *testing.T) {
	if _, err := os.Stat(tetherctlBin()); err != nil {
		t.Fatalf("tetherctl not built: %v", err)
	}
	drivers(t, func(t *testing.T, build func(string, int) *LB) {
		t.Run("kill control during a transfer", func(t *testing.T) {
			lb := build("cc", 2)
			if err := lb.StartBackends(8080); err != nil {
				t.Fatal(err)
			}
			u := startUnit(t, lb, lbConfig(lb, "nat", []int{1, 1}, 8080, "    snat: [198.51.100.1]\n"))
			done := download(lb)
			servingBackend(t, lb)
			fwd := u.forwarderPID()
			if err := u.proc.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			u.proc.Exited(5 * time.Second)
			checkDownload(t, done)
			if syscall.Kill(fwd, 0) != nil {
				t.Fatal("the forwarder died with its control process")
			}
			// A new control process adopts the forwarder and its flows.
			u.start()
			if !strings.Contains(u.proc.Output(), "adopted the running forwarder") {
				t.Fatalf("control did not adopt the forwarder:\n%s", u.proc.Output())
			}
			if got := curl(t, lb, "http://192.0.2.10/"); !strings.HasPrefix(got, "b") {
				t.Fatalf("after adoption curl got %q", got)
			}
		})
		t.Run("forwarder restart keeps nat connections", func(t *testing.T) {
			lb := build("cf", 2)
			if err := lb.StartBackends(8080); err != nil {
				t.Fatal(err)
			}
			u := startUnit(t, lb, lbConfig(lb, "nat", []int{1, 1}, 8080, "    snat: [198.51.100.1]\n"))
			done := download(lb)
			servingBackend(t, lb)
			old := u.forwarderPID()
			if err := syscall.Kill(old, syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			// The control process restarts the forwarder and puts the
			// flows back, SNAT ports included: the transfer resumes.
			checkDownload(t, done)
			if !strings.Contains(u.proc.Output(), "flows restored into the restarted forwarder") {
				t.Fatalf("no flow restore:\n%s", u.proc.Output())
			}
			st := u.status()
			sup := st["forwarder"].(map[string]any)["supervisor"].(map[string]any)
			if sup["restarts"].(float64) != 1 || !strings.Contains(sup["last_exit"].(string), "killed") {
				t.Fatalf("supervisor %v", sup)
			}
		})
		t.Run("invalid reload and drain", func(t *testing.T) {
			lb := build("cr", 2)
			if err := lb.StartBackends(8080); err != nil {
				t.Fatal(err)
			}
			cfg := lbConfig(lb, "halfnat", []int{1, 1}, 8080, "")
			u := startUnit(t, lb, cfg)
			gen := u.status()["generation"]
			// An invalid file is refused whole, naming the key; service
			// goes on with the running configuration.
			bad := strings.Replace(cfg, "mode: halfnat", "mode: halfnat\n    mtu: 12", 1)
			if err := os.WriteFile(u.cfgPath, []byte(bad+fmt.Sprintf("admin:\n  socket: %s\n  run_dir: %s\n", u.socket, u.runDir)), 0o644); err != nil {
				t.Fatal(err)
			}
			out, err := u.ctl("reload")
			if err == nil || !strings.Contains(out, "vips[0].mtu") {
				t.Fatalf("invalid reload: %v\n%s", err, out)
			}
			if g := u.status()["generation"]; g != gen {
				t.Fatalf("generation moved from %v to %v on a refused reload", gen, g)
			}
			checkWeights(t, client(t, lb, "http://192.0.2.10/", 100, 8), []int{1, 1})
			// Drain: the running download finishes, new flows avoid b0.
			done := download(lb)
			name := servingBackend(t, lb)
			if out, err := u.ctl("drain", "web/"+name); err != nil {
				t.Fatalf("drain: %v\n%s", err, out)
			}
			r := client(t, lb, "http://192.0.2.10/", 100, 8)
			if r.Errors > 0 || r.Backends[name] > 0 {
				t.Fatalf("after draining %s: %v (%d errors)", name, r.Backends, r.Errors)
			}
			checkDownload(t, done)
			out, err = u.ctl("backends")
			if err != nil || !strings.Contains(out, "draining") {
				t.Fatalf("backends after drain: %v\n%s", err, out)
			}
		})
		t.Run("punt", func(t *testing.T) {
			lb := build("cp", 2)
			if err := lb.StartBackends(8080); err != nil {
				t.Fatal(err)
			}
			cfg := strings.Replace(lbConfig(lb, "nat", []int{1, 1}, 8080, "    snat: [198.51.100.1]\n"), "mode: nat", "mode: nat\n    punt: true", 1)
			u := startUnit(t, lb, cfg)
			checkWeights(t, client(t, lb, "http://192.0.2.10/", 100, 8), []int{1, 1})
			punts := u.status()["punts"].(map[string]any)
			if punts["decided"].(float64) < 100 {
				t.Fatalf("control decided %v punts for 100 connections", punts["decided"])
			}
		})
	})
}

// TestAdminPermissions: a user who is not root and not in the admin
// group is refused, with a message that says so.
func TestAdminPermissions(t *testing.T) {
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Skip("setpriv missing")
	}
	lb := newLB(t, "ap", 1, NewLB)
	if err := lb.StartBackends(8080); err != nil {
		t.Fatal(err)
	}
	u := startUnit(t, lb, lbConfig(lb, "nat", []int{1}, 8080, "    snat: [198.51.100.1]\n"))
	if _, err := u.ctl("status"); err != nil {
		t.Fatalf("root refused: %v", err)
	}
	out, err := lb.Exec(lb.Unit, "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", tetherctlBin(), "--socket", u.socket, "status")
	if err == nil || !strings.Contains(out, "permission denied") {
		t.Fatalf("unprivileged tetherctl: %v\n%s", err, out)
	}
}
