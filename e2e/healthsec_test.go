package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tetherlb/tether/api/unit"
)

// TestHealthSecurity replays the attacks issue 13 found against a running
// unit, with real agents and a real unit, and checks each is refused,
// counted, and changes nothing:
//
//   - an agent's datagrams captured on the wire (heartbeats, the row
//     change that made its application inactive, its goodbye) replayed
//     later from another namespace and address, while the host runs
//     again after a restart;
//   - after the agent is killed (SIGKILL: no goodbye) and its host aged
//     out, its last heartbeats replayed, which must not bring it back;
//   - a rogue host with a valid key of its own (host 9) speaking as host
//     1, saying goodbye for host 1, and naming host 1's endpoint
//     inactive; and a real tether-agent given host 9's key but host 1's
//     ID, which refuses to start.
//
// Throughout, ten connections established to host 1's backend before the
// attacks stay open and answer after them, and the real host's next
// change is applied.
func TestHealthSecurity(t *testing.T) {
	lb := newLB(t, "hs", 2, NewLB)
	if err := lb.StartBackends(8080); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	master := healthKeys(t, dir)
	// b1 has no agent: after the grace it drains, so every new
	// connection goes to b0 (host 1), whose agent the attacks target.
	// b1's namespace is the rogue host's.
	cfg := lbConfig(lb, "nat", []int{1, 1}, 8080, "    snat: [198.51.100.1]\n    health: {source: agent}\n")
	cfg += fmt.Sprintf("health: {listen: \"0.0.0.0:7310\", startup_grace: 1s, auth: {master_key_file: %s}}\n", master)
	u := startUnit(t, lb, cfg)

	// b0's agent also sends to a tap in the unit's namespace, which
	// records every datagram as an eavesdropper on the wire would.
	capture := filepath.Join(dir, "captured")
	tap, err := lb.Start(lb.Unit, "tap", RoleCommand("udpcapture", "10.0.10.1:7398", capture), Self())
	if err != nil {
		t.Fatal(err)
	}
	if err := tap.WaitFor(Ready, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	a := startAgent(t, lb, dir, master, 0, []string{"10.0.10.1:7310", "10.0.10.1:7398"})
	host1 := func(h unit.HealthView) *unit.HostView {
		for i := range h.Hosts {
			if h.Hosts[i].ID == 1 {
				return &h.Hosts[i]
			}
		}
		return nil
	}
	row := func(h unit.HealthView) (r unit.RowView) {
		if ho := host1(h); ho != nil && len(ho.Rows) == 1 {
			r = ho.Rows[0]
		}
		return r
	}
	takesNew := func(h unit.HealthView) bool {
		return verdict(h, "web", "b0").State == "" && row(h).Health == "healthy" && verdict(h, "web", "b1").State == "draining" && !h.Grace
	}
	waitHealth(t, lb, u.socket, "host 1 healthy, b0 taking new connections", takesNew)

	// What the eavesdropper records: the change that makes the
	// application inactive, the one back, and the goodbye of a clean
	// stop. Then the host comes back: a restarted agent.
	a.set(t, "--state", "inactive")
	waitHealth(t, lb, u.socket, "b0 inactive", func(h unit.HealthView) bool { return verdict(h, "web", "b0").State == "inactive" })
	a.set(t, "--state", "active")
	waitHealth(t, lb, u.socket, "b0 active again, confirmed", func(h unit.HealthView) bool {
		return takesNew(h) && row(h).Target == "active" && row(h).Current == "active"
	})
	a.proc.Stop()
	waitHealth(t, lb, u.socket, "host 1's goodbye", func(h unit.HealthView) bool { return host1(h) == nil && h.Stats.Goodbyes == 1 })
	recorded, captured := snapshotCapture(t, capture, filepath.Join(dir, "replay-1"))
	if captured < 4 {
		t.Fatalf("the tap recorded %d datagrams, want at least the changes, heartbeats and the goodbye", captured)
	}
	a.start(t)
	waitHealth(t, lb, u.socket, "host 1 back after the restart", takesNew)
	before := healthView(t, lb, u.socket).Stats

	// Ten connections to b0, established before the attacks.
	goAhead := filepath.Join(dir, "go-ahead")
	hold, err := lb.Start(lb.Client, "held connections", RoleCommand("holdconns", "192.0.2.10:80", "10", goAhead), Self())
	if err != nil {
		t.Fatal(err)
	}
	if err := hold.WaitFor("connected map[b0:10]", 10*time.Second); err != nil {
		t.Fatal(err)
	}

	t.Run("captured datagrams replayed from another address", func(t *testing.T) {
		out, err := lb.Exec(lb.Client, append([]string{"env"}, append(RoleCommand("udpreplay", recorded, UnitAddr+":7310"), Self())...)...)
		if err != nil {
			t.Fatalf("replay: %v\n%s", err, out)
		}
		h := waitHealth(t, lb, u.socket, "every replayed datagram refused", func(h unit.HealthView) bool {
			return refusedSince(before, h.Stats, "replay", "before_goodbye", "stale") == uint64(captured)
		})
		if !takesNew(h) || h.Stats.Goodbyes != 1 {
			t.Fatalf("after the replays: b0 %+v, goodbyes %d, refused %v", verdict(h, "web", "b0"), h.Stats.Goodbyes, h.Stats.Refused)
		}
		t.Logf("%d captured datagrams replayed: refused %v", captured, h.Stats.Refused)
	})

	t.Run("a rogue host with its own key speaks for host 1", func(t *testing.T) {
		key := hostKeyFile(t, dir, master, 9, lb.BackendIP(1))
		out, err := lb.Exec(lb.Backends[1], append([]string{"env"},
			append(RoleCommand("healthforge", key, "10.0.11.1:7310", "1", lb.BackendIP(0)+":8080"), Self())...)...)
		if err != nil {
			t.Fatalf("forge: %v\n%s", err, out)
		}
		h := waitHealth(t, lb, u.socket, "the forgeries refused", func(h unit.HealthView) bool {
			return refusedSince(before, h.Stats, "authentication") == 1 && refusedSince(before, h.Stats, "not_own_host") == 1 &&
				refusedSince(before, h.Stats, "endpoint_not_granted") == 1
		})
		for _, ho := range h.Hosts {
			if ho.ID == 9 {
				t.Fatalf("the rogue host is in the cache: %+v", ho)
			}
		}
		if !takesNew(h) {
			t.Fatalf("after the forgeries: b0 %+v", verdict(h, "web", "b0"))
		}
		// A real agent given host 9's key and host 1's ID does not start.
		rogue := strings.Replace(mustRead(t, a.cfg), "host-1.key", "host-9.key", 1)
		rogue = strings.Replace(rogue, a.socket, filepath.Join(dir, "rogue.sock"), 1)
		path := filepath.Join(dir, "rogue.yaml")
		if err := os.WriteFile(path, []byte(rogue), 0o644); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command("ip", "netns", "exec", lb.Backends[1], agentBin(), "run", "--config", path)
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		done := make(chan []byte, 1)
		go func() { b, _ := cmd.CombinedOutput(); done <- b }()
		select {
		case b := <-done:
			if !strings.Contains(string(b), "auth.key_file") || !strings.Contains(string(b), "the key of host 9, but host.id is 1") {
				t.Fatalf("a tether-agent with host 9's key as host 1: %s", b)
			}
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			t.Fatal("a tether-agent with host 9's key as host 1 started")
		}
	})

	t.Run("established connections survive, the real host is still heard", func(t *testing.T) {
		if err := os.WriteFile(goAhead, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := hold.Wait(30 * time.Second); err != nil || !strings.Contains(hold.Output(), "held 10") {
			t.Fatalf("held connections: %v\n%s", err, hold.Output())
		}
		a.set(t, "--load", "40")
		h := waitHealth(t, lb, u.socket, "the real host's next change", func(h unit.HealthView) bool { return verdict(h, "web", "b0").Load == 40 })
		if h.Stats.StaleChanges != before.StaleChanges {
			t.Fatalf("the real host's changes were taken for stale: %d, before %d", h.Stats.StaleChanges, before.StaleChanges)
		}
		if r := client(t, lb, "http://192.0.2.10/", 50, 4); r.Errors > 0 || r.Backends["b0"] != 50 {
			t.Fatalf("new connections after the attacks: %v (%d errors: %s)", r.Backends, r.Errors, r.FirstErr)
		}
	})

	t.Run("a killed agent's last heartbeats replayed", func(t *testing.T) {
		if err := a.proc.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		h := waitHealth(t, lb, u.socket, "host 1 aged out", func(h unit.HealthView) bool { return host1(h) == nil })
		if h.Stats.AgedOut != before.AgedOut+1 || h.Stats.Goodbyes != 1 {
			t.Fatalf("aged out %d (before %d), goodbyes %d: want aging, not a goodbye", h.Stats.AgedOut, before.AgedOut, h.Stats.Goodbyes)
		}
		tap.Stop()
		// Everything the tap heard, both runs of the agent up to its
		// death: its last heartbeats are in it.
		recorded, n := snapshotCapture(t, capture, filepath.Join(dir, "replay-2"))
		was := h.Stats
		out, err := lb.Exec(lb.Client, append([]string{"env"}, append(RoleCommand("udpreplay", recorded, UnitAddr+":7310"), Self())...)...)
		if err != nil {
			t.Fatalf("replay: %v\n%s", err, out)
		}
		h = waitHealth(t, lb, u.socket, "every replayed datagram refused", func(h unit.HealthView) bool {
			return refusedSince(was, h.Stats, "replay", "before_goodbye", "stale") == uint64(n)
		})
		if host1(h) != nil || verdict(h, "web", "b0").State != "draining" {
			t.Fatalf("the dead host came back: %+v, b0 %+v", host1(h), verdict(h, "web", "b0"))
		}
		t.Logf("%d datagrams of a dead host replayed: refused %v", n, h.Stats.Refused)
	})
}

// snapshotCapture copies the complete lines the tap has written so far
// (it may be writing one) to dst and returns dst and their count.
func snapshotCapture(t *testing.T, capture, dst string) (string, int) {
	t.Helper()
	b, err := os.ReadFile(capture)
	if err != nil {
		t.Fatal(err)
	}
	if i := strings.LastIndexByte(string(b), '\n'); i >= 0 {
		b = b[:i+1]
	} else {
		b = nil
	}
	if err := os.WriteFile(dst, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return dst, strings.Count(string(b), "\n")
}

// refusedSince sums the refusals of the reasons counted since before.
func refusedSince(before, now unit.HealthStats, reasons ...string) uint64 {
	var n uint64
	for _, r := range reasons {
		n += now.Refused[r] - before.Refused[r]
	}
	return n
}

func mustRead(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
