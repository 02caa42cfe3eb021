package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// lockedBuffer collects a process's output while the test reads it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// rescueUnit is a tetherd run --rescue in its own network namespace,
// where the forwarder's TUN port touches nothing of the host's; the
// admin socket, a file, is reachable from the host's namespace.
type rescueUnit struct {
	t         *testing.T
	tetherctl string
	socket    string
	cfgPath   string
	runDir    string
	cmd       *exec.Cmd
	out       *lockedBuffer
	exited    chan struct{}
}

// config is a valid configuration for the unit; workers and vip vary it.
func (u *rescueUnit) config(workers int, vip string) []byte {
	return fmt.Appendf(nil, `unit: {name: rescued}
forwarder:
  workers: %d
  flows: {max: 4096}
  port: {driver: tun, interface: tether0}
admin: {socket: %s, run_dir: %s}
vips:
  - name: %s
    address: 192.0.2.10
    port: 80
    protocol: tcp
    mode: halfnat
    backends: [{address: 10.1.0.1}]
`, workers, u.socket, u.runDir, vip)
}

// ctl runs tetherctl against the unit.
func (u *rescueUnit) ctl(args ...string) (string, error) {
	out, err := exec.Command(u.tetherctl, append([]string{"--socket", u.socket}, args...)...).CombinedOutput()
	return string(out), err
}

// status polls tetherctl status until ok accepts it.
func (u *rescueUnit) status(what string, ok func(map[string]any) bool) map[string]any {
	u.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	var last string
	for time.Now().Before(deadline) {
		out, err := u.ctl("-o", "json", "status")
		last = out
		var s map[string]any
		if err == nil && json.Unmarshal([]byte(out), &s) == nil && ok(s) {
			return s
		}
		select {
		case <-u.exited:
			u.t.Fatalf("tetherd exited while waiting for %s:\n%s", what, u.out)
		case <-time.After(100 * time.Millisecond):
		}
	}
	u.t.Fatalf("no %s; last status: %s\ntetherd:\n%s", what, last, u.out)
	return nil
}

func readString(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestRescue: tetherd run --rescue with no configuration file keeps
// running and answers status; a file fixed by hand and SIGHUP is re-read;
// tetherctl config apply of a good file has it re-execute into a normal
// unit, whose own config apply then reloads, or puts the file back when
// the reload is refused.
func TestRescue(t *testing.T) {
	if testing.Short() {
		t.Skip("builds tetherd and tetherctl and runs a unit")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root: a network namespace for the forwarder, and the admin socket serves root")
	}
	dir := t.TempDir()
	u := &rescueUnit{t: t, tetherctl: filepath.Join(dir, "tetherctl"), socket: filepath.Join(dir, "run", "admin.sock"),
		cfgPath: filepath.Join(dir, "config", "tether.yaml"), runDir: filepath.Join(dir, "run"),
		out: &lockedBuffer{}, exited: make(chan struct{})}
	tetherd := filepath.Join(dir, "tetherd")
	for bin, pkg := range map[string]string{tetherd: ".", u.tetherctl: "../tetherctl"} {
		if out, err := exec.Command("go", "build", "-o", bin, pkg).CombinedOutput(); err != nil {
			t.Fatalf("build %s: %v\n%s", pkg, err, out)
		}
	}

	u.cmd = exec.Command(tetherd, "run", "--rescue", "--config", u.cfgPath, "--admin-socket", u.socket)
	u.cmd.Stdout, u.cmd.Stderr = u.out, u.out
	u.cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET}
	if err := u.cmd.Start(); err != nil {
		t.Skipf("cannot start tetherd in a network namespace: %v", err)
	}
	go func() { u.cmd.Wait(); close(u.exited) }()
	t.Cleanup(func() {
		select {
		case <-u.exited:
			return
		default:
		}
		u.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-u.exited:
		case <-time.After(15 * time.Second):
			u.cmd.Process.Kill()
			if b, err := os.ReadFile(filepath.Join(u.runDir, "forwarder.pid")); err == nil {
				if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
					syscall.Kill(pid, syscall.SIGKILL)
				}
			}
			<-u.exited
		}
	})
	pid := float64(u.cmd.Process.Pid)

	// No file: rescue mode, saying so in status and in one log line.
	s := u.status("rescue status", func(s map[string]any) bool { return s["problem"] != nil })
	if p := s["problem"].(string); !strings.HasPrefix(p, "no valid configuration: ") || !strings.Contains(p, "no such file") || s["control_pid"] != pid {
		t.Fatalf("rescue status: %v", s)
	}
	if out := u.out.String(); !strings.Contains(out, "no valid configuration: rescue mode") || !strings.Contains(out, u.cfgPath) {
		t.Fatalf("no rescue log line:\n%s", out)
	}
	if out, _ := u.ctl("status"); !strings.HasPrefix(out, "PROBLEM") || !strings.Contains(out, "tetherctl config apply FILE") {
		t.Fatalf("tetherctl status in rescue mode:\n%s", out)
	}
	if out, err := u.ctl("vips"); err == nil || !strings.Contains(out, "no valid configuration yet") || !strings.Contains(out, "tetherctl config apply FILE") {
		t.Fatalf("vips in rescue mode: %v\n%s", err, out)
	}

	// A file fixed by hand but still invalid, and SIGHUP: still rescue,
	// with the config package's reason.
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("forwarder: {workers: 0}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(u.cfgPath), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(u.cfgPath, []byte("forwarder: {workers: 0}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := u.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	u.status("the re-read file's problem", func(s map[string]any) bool {
		p, _ := s["problem"].(string)
		return strings.Contains(p, `forwarder.workers: "0": must be between 1 and 64`)
	})
	if out, err := u.ctl("config", "validate", bad); err == nil || !strings.Contains(out, "forwarder.workers") {
		t.Fatalf("validate in rescue mode: %v\n%s", err, out)
	}
	if out, err := u.ctl("config", "apply", bad); err == nil || !strings.Contains(out, "forwarder.workers") {
		t.Fatalf("apply of a bad file: %v\n%s", err, out)
	}

	// Apply a good one: tetherd re-executes (same PID) and runs a unit.
	good := filepath.Join(dir, "good.yaml")
	if err := os.WriteFile(good, u.config(1, "web"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := u.ctl("config", "apply", good); err != nil || !strings.Contains(out, "tetherd restarts with it") {
		t.Fatalf("apply in rescue mode: %v\n%s", err, out)
	}
	s = u.status("a running unit", func(s map[string]any) bool {
		fwd, _ := s["forwarder"].(map[string]any)
		return s["problem"] == nil && fwd != nil && fwd["connected"] == true
	})
	if s["unit"] != "rescued" || s["control_pid"] != pid || s["config"] != u.cfgPath {
		t.Fatalf("status after the restart: %v", s)
	}
	if got := readString(t, u.cfgPath); got != string(u.config(1, "web")) {
		t.Fatalf("configuration file after apply: %q", got)
	}
	gen := s["generation"].(float64)

	// The running unit's apply: a change reloads...
	if err := os.WriteFile(good, u.config(1, "web2"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := u.ctl("config", "apply", good)
	if err != nil || !strings.Contains(out, "applied") || !strings.Contains(out, u.cfgPath) {
		t.Fatalf("apply to a running unit: %v\n%s", err, out)
	}
	if out, err := u.ctl("vips"); err != nil || !strings.Contains(out, "web2") {
		t.Fatalf("vips after apply: %v\n%s", err, out)
	}
	// ... and one the forwarder refuses (a worker count needs a restart)
	// leaves the file as it was.
	if err := os.WriteFile(good, u.config(2, "web3"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := u.ctl("config", "apply", good); err == nil || !strings.Contains(out, "previous file was put back") || !strings.Contains(out, "forwarder.workers") {
		t.Fatalf("refused apply: %v\n%s", err, out)
	}
	if got := readString(t, u.cfgPath); got != string(u.config(1, "web2")) {
		t.Fatalf("configuration file after a refused apply: %q", got)
	}
	s = u.status("the running unit", func(map[string]any) bool { return true })
	if s["generation"].(float64) <= gen {
		t.Fatalf("generation %v after an apply, was %v", s["generation"], gen)
	}

	if err := u.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-u.exited:
	case <-time.After(15 * time.Second):
		t.Fatalf("tetherd did not stop:\n%s", u.out)
	}
}
