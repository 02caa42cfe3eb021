package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// tetherd is the daemon binary the tests run, built once by TestMain.
var tetherd string

func TestMain(m *testing.M) {
	RunRoleFromEnv()
	if Root() == nil {
		// A run killed by go test's -timeout left its namespaces and
		// whatever ran in them: clear them before anything starts.
		if err := RemoveStale(); err != nil {
			fmt.Fprintln(os.Stderr, "e2e: leftovers of an earlier run:", err)
			os.Exit(1)
		}
		dir, err := os.MkdirTemp("", "tether-e2e-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		// Readable by the unprivileged user one test runs tetherd as.
		_ = os.Chmod(dir, 0o755)
		tetherd = filepath.Join(dir, "tetherd")
		for _, bin := range []string{"tetherd", "tetherctl", "tether-agent"} {
			build := exec.Command("go", "build", "-o", filepath.Join(dir, bin), "./cmd/"+bin)
			build.Dir = ".."
			if out, err := build.CombinedOutput(); err != nil {
				fmt.Fprintf(os.Stderr, "build %s: %v\n%s", bin, err, out)
				os.Exit(1)
			}
		}
		// An interrupted run still removes its namespaces.
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
		go func() {
			<-sig
			cleanupAll()
			os.Exit(1)
		}()
		code := m.Run()
		cleanupAll()
		os.RemoveAll(dir)
		os.Exit(code)
	}
	os.Exit(m.Run())
}

// live tracks networks so that an interrupt can remove them.
var live = map[*LB]bool{}

func cleanupAll() {
	for lb := range live {
		lb.Close()
	}
}

// newLB builds a topology for a test, or skips the test when the
// machine cannot.
func newLB(t *testing.T, tag string, backends int, build func(string, int) (*LB, error)) *LB {
	t.Helper()
	if err := Root(); err != nil {
		t.Skipf("system test skipped: %v", err)
	}
	lb, err := build(tag, backends)
	if err != nil {
		t.Fatal(err)
	}
	live[lb] = true
	t.Cleanup(func() {
		if t.Failed() {
			for _, p := range lb.procs {
				t.Logf("--- %s output:\n%s", p.Name, p.Output())
			}
		}
		if err := lb.Close(); err != nil {
			t.Error(err)
		}
		delete(live, lb)
	})
	return lb
}

// startTether writes cfg and starts the forwarder in the unit namespace.
func startTether(t *testing.T, lb *LB, cfg string) (*Proc, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "tether.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := lb.Start(lb.Unit, "tetherd", nil, tetherd, "forwarder", "--config", path)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.WaitFor("forwarding", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	return p, path
}

// client runs the client role in the client namespace.
func client(t *testing.T, lb *LB, url string, conns, par int) ClientResult {
	t.Helper()
	out, err := lb.Exec(lb.Client, append([]string{"env"}, append(RoleCommand("client", url, fmt.Sprint(conns), fmt.Sprint(par)), Self())...)...)
	if err != nil {
		t.Fatal(err)
	}
	var r ClientResult
	if err := json.NewDecoder(bytes.NewReader([]byte(lastLine(out)))).Decode(&r); err != nil {
		t.Fatalf("client output %q: %v", out, err)
	}
	return r
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// curl fetches a URL with curl in the client namespace.
func curl(t *testing.T, lb *LB, url string) string {
	t.Helper()
	if _, err := exec.LookPath("curl"); err != nil {
		t.Fatal("curl is not installed: .ci/run installs it")
	}
	out, err := lb.Exec(lb.Client, "curl", "-sS", "--max-time", "10", url)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(out)
}
