package e2e

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tetherlb/tether/api/unit"
)

// agentBin is built by TestMain next to tetherd.
func agentBin() string { return filepath.Join(filepath.Dir(tetherd), "tether-agent") }

// hostAgent is a tether-agent running in a backend namespace.
type hostAgent struct {
	lb     *LB
	i      int
	proc   *Proc
	cfg    string // its configuration file
	socket string
	fail   string // the file whose existence fails the check
}

// startAgents starts an agent in every backend, reporting one endpoint
// (address:8080, any VIP) to each unit listener, each with its own key
// derived from master (see healthKeys; "" runs them unauthenticated).
// The check is a command that fails while a file exists, so a test can
// fail it at will while the application keeps serving.
func startAgents(t *testing.T, lb *LB, dir, master string, unitPorts ...int) []*hostAgent {
	t.Helper()
	var agents []*hostAgent
	for i := range lb.Backends {
		var units []string
		for _, p := range unitPorts {
			units = append(units, fmt.Sprintf("10.0.%d.1:%d", 10+i, p))
		}
		agents = append(agents, startAgent(t, lb, dir, master, i, units))
	}
	return agents
}

// startAgent starts backend i's agent (host ID i+1) sending to units.
func startAgent(t *testing.T, lb *LB, dir, master string, i int, units []string) *hostAgent {
	t.Helper()
	a := &hostAgent{lb: lb, i: i, socket: filepath.Join(dir, fmt.Sprintf("agent-b%d.sock", i)),
		fail: filepath.Join(dir, fmt.Sprintf("fail-b%d", i))}
	var quoted []string
	for _, u := range units {
		quoted = append(quoted, fmt.Sprintf("%q", u))
	}
	auth := ""
	if master != "" {
		auth = fmt.Sprintf("auth: {key_file: %s}\n", hostKeyFile(t, dir, master, uint32(i+1), lb.BackendIP(i)))
	}
	cfg := fmt.Sprintf(`host: {id: %d, listen: "%s:7311"}
units: [%s]
api: {socket: %s}
%sapplications:
  - name: web
    endpoint: "%s:8080"
    capacity: 50
    check: {type: exec, command: [sh, -c, "test ! -e %s"]}
`, i+1, lb.BackendIP(i), strings.Join(quoted, ", "), a.socket, auth, lb.BackendIP(i), a.fail)
	a.cfg = filepath.Join(dir, fmt.Sprintf("agent-b%d.yaml", i))
	if err := os.WriteFile(a.cfg, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	a.start(t)
	return a
}

// start runs the agent and waits until it runs.
func (a *hostAgent) start(t *testing.T) {
	t.Helper()
	p, err := a.lb.Start(a.lb.Backends[a.i], fmt.Sprintf("agent b%d", a.i), nil, agentBin(), "run", "--config", a.cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.WaitFor("agent running", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	a.proc = p
}

// healthKeys makes the units' master secret in dir with the real
// command (tetherd health-key --create-master) and returns its path.
func healthKeys(t *testing.T, dir string) string {
	t.Helper()
	master := filepath.Join(dir, "health.master")
	out := filepath.Join(dir, "probe.key")
	if b, err := exec.Command(tetherd, "health-key", "--master", master, "--create-master", "--host", "1", "--endpoints", "192.0.2.0/24", "--out", out).CombinedOutput(); err != nil {
		t.Fatalf("tetherd health-key --create-master: %v\n%s", err, b)
	}
	return master
}

// hostKeyFile derives host id's key for endpoints with tetherd
// health-key, as an operator provisions a host, and returns its path.
func hostKeyFile(t *testing.T, dir, master string, id uint32, endpoints string) string {
	t.Helper()
	out := filepath.Join(dir, fmt.Sprintf("host-%d.key", id))
	if b, err := exec.Command(tetherd, "health-key", "--master", master, "--host", fmt.Sprint(id), "--endpoints", endpoints, "--out", out).CombinedOutput(); err != nil {
		t.Fatalf("tetherd health-key: %v\n%s", err, b)
	}
	return out
}

// set runs tether-agent set in the agent's namespace.
func (a *hostAgent) set(t *testing.T, args ...string) {
	t.Helper()
	cmd := append([]string{agentBin(), "--socket", a.socket, "set", "web"}, args...)
	if out, err := a.lb.Exec(a.lb.Backends[a.i], cmd...); err != nil {
		t.Fatalf("tether-agent set %v: %v\n%s", args, err, out)
	}
}

// healthView reads a unit's health cache through tetherctl.
func healthView(t *testing.T, lb *LB, socket string) unit.HealthView {
	t.Helper()
	out, err := lb.Exec(lb.Unit, tetherctlBin(), "--socket", socket, "health", "-o", "json")
	if err != nil {
		t.Fatalf("tetherctl health: %v\n%s", err, out)
	}
	var h unit.HealthView
	if err := json.Unmarshal([]byte(out), &h); err != nil {
		t.Fatalf("tetherctl health: %v\n%s", err, out)
	}
	return h
}

// waitHealth polls a unit's cache until cond holds (20 s at most).
func waitHealth(t *testing.T, lb *LB, socket, what string, cond func(h unit.HealthView) bool) unit.HealthView {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		h := healthView(t, lb, socket)
		if cond(h) {
			return h
		}
		if time.Now().After(deadline) {
			b, _ := json.MarshalIndent(h, "", "  ")
			t.Fatalf("timed out waiting for %s; cache:\n%s", what, b)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// verdict returns a backend's view on a VIP.
func verdict(h unit.HealthView, vip, backend string) (b struct {
	State, Health string
	Load          uint32
	Percent       float64
}) {
	for _, v := range h.Backends {
		if v.VIP == vip && v.Backend == backend {
			b.State, b.Health, b.Load, b.Percent = v.State.String(), v.Health, v.Load, v.Percent
		}
	}
	return b
}

// rows flattens the agents' part of a cache to "host endpoint health
// load target/current" lines, for comparing two units.
func rows(h unit.HealthView) string {
	var lines []string
	for _, ho := range h.Hosts {
		if ho.ID == 0 {
			continue // each unit's own probes
		}
		for _, r := range ho.Rows {
			lines = append(lines, fmt.Sprintf("%d %s %s %d %s/%s", ho.ID, r.Endpoint, r.Health, r.Load, r.Target, r.Current))
		}
	}
	return strings.Join(lines, "\n")
}

// checkShares compares a client's distribution with expected shares
// (percent), four standard deviations wide.
func checkShares(t *testing.T, what string, r ClientResult, want []float64) {
	t.Helper()
	if r.Errors > 0 {
		t.Fatalf("%s: %d requests failed, first: %s", what, r.Errors, r.FirstErr)
	}
	total := 0
	for _, n := range r.Backends {
		total += n
	}
	for i, pct := range want {
		p := pct / 100
		got := r.Backends[fmt.Sprintf("b%d", i)]
		if tol := 4*math.Sqrt(float64(total)*p*(1-p)) + 2; math.Abs(float64(got)-p*float64(total)) > tol {
			t.Errorf("%s: b%d answered %d of %d, want %.0f ± %.0f", what, i, got, total, p*float64(total), tol)
		}
	}
	t.Logf("%s: %v over %d connections", what, r.Backends, total)
}

// TestHealthAndLoad runs real agents in the backends and checks, in
// turn: allotments follow reported load (on a Maglev VIP and on a punted
// VIP that spends tokens); a failing check stops new flows to that
// backend while the others serve; a drained application finishes its
// connections; a row change lost on the wire is repaired by the
// snapshot path; a second unit holds the same cache; a host whose agent
// is killed ages out; and a VIP whose backends have no agent is served by
// the unit's own probes.
func TestHealthAndLoad(t *testing.T) {
	if _, err := exec.LookPath("nft"); err != nil {
		t.Fatal("nft is not installed (.ci/run installs nftables): the test drops datagrams with it")
	}
	lb := newLB(t, "th", 3, NewLB)
	if err := lb.StartBackends(8080); err != nil {
		t.Fatal(err)
	}
	health := "    snat: [198.51.100.1]\n    health: {source: agent}\n"
	cfg := lbConfig(lb, "nat", []int{1, 1, 1}, 8080, health)
	// A second VIP, punted: the control process decides every new
	// connection by spending allotment tokens.
	punted := strings.Replace(strings.SplitN(cfg, "vips:\n", 2)[1], "name: web", "name: webp", 1)
	punted = strings.Replace(punted, "address: 192.0.2.10", "address: 192.0.2.11", 1)
	punted = strings.Replace(punted, "mode: nat", "mode: nat\n    punt: true", 1)
	punted = strings.Replace(punted, "198.51.100.1", "198.51.100.2", 1)
	// A third VIP whose backends have no agent as far as it knows: the
	// unit probes them itself.
	probed := strings.Replace(strings.SplitN(cfg, "vips:\n", 2)[1], "name: web", "name: webprobe", 1)
	probed = strings.Replace(probed, "address: 192.0.2.10", "address: 192.0.2.12", 1)
	probed = strings.Replace(probed, "198.51.100.1", "198.51.100.3", 1)
	probed = strings.Replace(probed, "health: {source: agent}", "health: {source: probe, check: {type: http, interval: 200ms, timeout: 100ms}}", 1)
	// Every host speaks with its own key (tetherd health-key), which the
	// units check against their master secret.
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	master := healthKeys(t, dir)
	cfg += punted + probed + fmt.Sprintf("health: {listen: \"0.0.0.0:7310\", startup_grace: 1s, auth: {master_key_file: %s}}\n", master)
	u := startUnit(t, lb, cfg)

	// A second unit's control process, on its own port: it runs no
	// forwarder, but keeps a cache from the same agents.
	u2socket := filepath.Join(dir, "u2", "admin.sock")
	cfg2 := strings.Replace(cfg, "0.0.0.0:7310", "0.0.0.0:7320", 1)
	cfg2 = strings.Replace(cfg2, "unit:\n", "unit:\n  name: u2\n", 1)
	cfg2 += fmt.Sprintf("admin:\n  socket: %s\n  run_dir: %s\n", u2socket, filepath.Join(dir, "u2"))
	if err := os.WriteFile(filepath.Join(dir, "u2.yaml"), []byte(cfg2), 0o644); err != nil {
		t.Fatal(err)
	}
	u2, err := lb.Start(lb.Unit, "tetherd control u2", nil, tetherd, "control", "--config", filepath.Join(dir, "u2.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := u2.WaitFor("health listener running", 10*time.Second); err != nil {
		t.Fatal(err)
	}

	agents := startAgents(t, lb, dir, master, 7310, 7320)
	all := func(h unit.HealthView) bool {
		n := 0
		for _, ho := range h.Hosts {
			if ho.ID == 0 {
				continue // the unit's own probes
			}
			for _, r := range ho.Rows {
				if r.Health == "healthy" {
					n++
				}
			}
		}
		return n == 3 && !h.Grace
	}
	waitHealth(t, lb, u.socket, "three healthy hosts", all)

	t.Run("allotments follow load", func(t *testing.T) {
		agents[0].set(t, "--load", "90")
		waitHealth(t, lb, u.socket, "b0's load", func(h unit.HealthView) bool { return verdict(h, "web", "b0").Load == 90 })
		// Available capacity 50×10%, 50, 50: b0 gets 5/105 of new flows.
		want := []float64{100 * 5.0 / 105, 100 * 50.0 / 105, 100 * 50.0 / 105}
		checkShares(t, "maglev VIP", client(t, lb, "http://192.0.2.10/", 3000, 16), want)
		checkShares(t, "punted VIP (tokens)", client(t, lb, "http://192.0.2.11/", 1000, 16), want)
		agents[0].set(t, "--load", "0")
	})

	t.Run("failing check stops new flows", func(t *testing.T) {
		if err := os.WriteFile(agents[1].fail, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		waitHealth(t, lb, u.socket, "b1 failing", func(h unit.HealthView) bool { return verdict(h, "web", "b1").State == "draining" })
		r := client(t, lb, "http://192.0.2.10/", 300, 8)
		if r.Errors > 0 || r.Backends["b1"] > 0 || r.Backends["b0"] == 0 || r.Backends["b2"] == 0 {
			t.Fatalf("with b1 failing: %v (%d errors: %s)", r.Backends, r.Errors, r.FirstErr)
		}
		os.Remove(agents[1].fail)
		waitHealth(t, lb, u.socket, "b1 healthy again", func(h unit.HealthView) bool { return verdict(h, "web", "b1").State == "" })
		if r := client(t, lb, "http://192.0.2.10/", 300, 8); r.Backends["b1"] == 0 {
			t.Fatalf("b1 healthy again but got nothing: %v", r.Backends)
		}
	})

	t.Run("draining lets connections finish", func(t *testing.T) {
		done := download(lb)
		name := servingBackend(t, lb)
		var a *hostAgent
		for _, x := range agents {
			if fmt.Sprintf("b%d", x.i) == name {
				a = x
			}
		}
		a.set(t, "--state", "draining")
		waitHealth(t, lb, u.socket, name+" draining", func(h unit.HealthView) bool { return verdict(h, "web", name).State == "draining" })
		r := client(t, lb, "http://192.0.2.10/", 200, 8)
		if r.Errors > 0 || r.Backends[name] > 0 {
			t.Fatalf("after draining %s: %v (%d errors)", name, r.Backends, r.Errors)
		}
		checkDownload(t, done)
		// The handshake confirmed the directive: current follows target.
		waitHealth(t, lb, u.socket, "current state draining", func(h unit.HealthView) bool {
			for _, ho := range h.Hosts {
				for _, r := range ho.Rows {
					if ho.ID != 0 && r.Endpoint == lb.BackendIP(a.i)+":8080" {
						return r.Current == "draining"
					}
				}
			}
			return false
		})
		a.set(t, "--state", "active")
		waitHealth(t, lb, u.socket, name+" active, confirmed", func(h unit.HealthView) bool {
			for _, ho := range h.Hosts {
				for _, r := range ho.Rows {
					if r.Current != r.Target {
						return false
					}
				}
			}
			return verdict(h, "web", name).State == ""
		})
	})

	t.Run("lost row change repaired by snapshot", func(t *testing.T) {
		ns := lb.Backends[2]
		before := healthView(t, lb, u.socket).Stats.SnapshotsIn
		for _, cmd := range [][]string{
			{"nft", "add", "table", "inet", "loss"},
			{"nft", "add", "chain", "inet", "loss", "out", "{ type filter hook output priority 0 ; }"},
			{"nft", "add", "rule", "inet", "loss", "out", "udp", "dport", "{ 7310, 7320 }", "drop"},
		} {
			if err := lb.Run(ns, cmd...); err != nil {
				t.Fatal(err)
			}
		}
		agents[2].set(t, "--load", "60")
		time.Sleep(300 * time.Millisecond) // the row change is sent, and dropped
		if err := lb.Run(ns, "nft", "delete", "table", "inet", "loss"); err != nil {
			t.Fatal(err)
		}
		h := waitHealth(t, lb, u.socket, "b2's load repaired", func(h unit.HealthView) bool { return verdict(h, "web", "b2").Load == 60 })
		if h.Stats.SnapshotsIn <= before || h.Stats.AgedOut != 0 {
			t.Fatalf("repaired without a snapshot (applied %d, before %d) or by aging (%d)", h.Stats.SnapshotsIn, before, h.Stats.AgedOut)
		}
	})

	t.Run("two units converge", func(t *testing.T) {
		var want string
		waitHealth(t, lb, u2socket, "the second unit's cache equals the first's", func(h unit.HealthView) bool {
			want = rows(healthView(t, lb, u.socket))
			return rows(h) == want && strings.Count(want, "\n") == 2
		})
	})

	t.Run("killed agent ages out", func(t *testing.T) {
		if err := agents[2].proc.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		h := waitHealth(t, lb, u.socket, "host 3 aged out and b2 drained", func(h unit.HealthView) bool {
			for _, ho := range h.Hosts {
				if ho.ID == 3 {
					return false
				}
			}
			return verdict(h, "web", "b2").State == "draining"
		})
		if len(h.Stats.Refused) != 0 {
			t.Errorf("the unit refused datagrams of its own agents: %v", h.Stats.Refused)
		}
		if h.Stats.AgedOut != 1 || h.Stats.Goodbyes != 0 {
			t.Fatalf("aged out %d, goodbyes %d: want aging, not a goodbye", h.Stats.AgedOut, h.Stats.Goodbyes)
		}
		r := client(t, lb, "http://192.0.2.10/", 200, 8)
		if r.Errors > 0 || r.Backends["b2"] > 0 {
			t.Fatalf("after b2's agent died: %v (%d errors)", r.Backends, r.Errors)
		}
	})

	t.Run("unit probes backends without an agent", func(t *testing.T) {
		// b2's application still runs: the probed VIP keeps using it.
		if r := client(t, lb, "http://192.0.2.12/", 300, 8); r.Errors > 0 || r.Backends["b2"] == 0 {
			t.Fatalf("probed VIP: %v (%d errors: %s)", r.Backends, r.Errors, r.FirstErr)
		}
		for _, p := range lb.procs {
			if p.Name == "httpd b0" {
				p.Stop()
			}
		}
		waitHealth(t, lb, u.socket, "the probe finds b0 gone", func(h unit.HealthView) bool {
			return verdict(h, "webprobe", "b0").State == "draining" && verdict(h, "webprobe", "b0").Health == "failing"
		})
		r := client(t, lb, "http://192.0.2.12/", 300, 8)
		if r.Errors > 0 || r.Backends["b0"] > 0 || r.Backends["b1"] == 0 || r.Backends["b2"] == 0 {
			t.Fatalf("probed VIP without b0: %v (%d errors: %s)", r.Backends, r.Errors, r.FirstErr)
		}
	})
}
