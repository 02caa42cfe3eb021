package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tetherlb/tether/agent"
	"github.com/tetherlb/tether/api/unit"
)

// streamAgent starts a tether-agent in backend i as host id, with a
// stream to the unit named "tether" using the given certificate files,
// and extra configuration appended.
func streamAgent(t *testing.T, lb *LB, dir string, i int, id uint32, ca, cert, key, extra string) (*Proc, string) {
	t.Helper()
	socket := filepath.Join(dir, fmt.Sprintf("agent-b%d.sock", i))
	cfg := fmt.Sprintf(`host: {id: %d, listen: "%s:7311"}
units: ["%s:7310"]
api: {socket: %s}
streams:
  units: [{name: tether, address: "%s:7320"}]
  tls: {ca: %s, cert: %s, key: %s}
%s`, id, lb.BackendIP(i), unitAddrFor(lb, i), socket, unitAddrFor(lb, i), ca, cert, key, extra)
	return startAgentConfig(t, lb, dir, i, cfg), socket
}

// startAgentConfig runs tether-agent in backend i with configuration
// cfg (written in dir) until the test ends, and waits until it runs.
func startAgentConfig(t *testing.T, lb *LB, dir string, i int, cfg string) *Proc {
	t.Helper()
	path := filepath.Join(dir, fmt.Sprintf("agent-b%d.yaml", i))
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := lb.Start(lb.Backends[i], fmt.Sprintf("agent b%d", i), nil, agentBin(), "run", "--config", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Stop)
	if err := p.WaitFor("agent running", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	return p
}

// waitStreamsUp waits until n hosts' streams are up at unit u.
func waitStreamsUp(t *testing.T, u *runningUnit, n int) {
	t.Helper()
	var uv unit.StreamsView
	eventually(t, fmt.Sprintf("%d hosts' streams up at %s", n, u.ns), func() bool {
		uv = unitStreams(t, u)
		up := 0
		for _, s := range uv.Streams {
			if s.State == unit.StreamUp {
				up++
			}
		}
		return up == n
	}, func() string { return jsonText(uv) })
}

// unitAddrFor is the unit's address as backend i reaches it.
func unitAddrFor(lb *LB, i int) string {
	if lb.Driver == "tun" {
		return fmt.Sprintf("10.0.%d.1", 10+i)
	}
	return lb.UnitIP
}

// agentView reads backend i's agent's view through `tether-agent CMD -o
// json` (its API socket is socket).
func agentView[T any](t *testing.T, lb *LB, i int, socket, cmd string) T {
	t.Helper()
	out, err := lb.Exec(lb.Backends[i], agentBin(), "--socket", socket, cmd, "-o", "json")
	var v T
	if err == nil {
		err = json.Unmarshal([]byte(out), &v)
	}
	if err != nil {
		t.Fatalf("tether-agent %s: %v\n%s", cmd, err, out)
	}
	return v
}

// ctlView reads the unit's view through `tetherctl CMD -o json`.
func ctlView[T any](t *testing.T, u *runningUnit, cmd string) T {
	t.Helper()
	out, err := u.ctl(cmd, "-o", "json")
	var v T
	if err == nil {
		err = json.Unmarshal([]byte(out), &v)
	}
	if err != nil {
		t.Fatalf("tetherctl %s: %v\n%s", cmd, err, out)
	}
	return v
}

// agentStreams reads an agent's streams (to its one unit).
func agentStreams(t *testing.T, lb *LB, i int, socket string) agent.StreamsView {
	t.Helper()
	v := agentView[agent.StreamsView](t, lb, i, socket, "streams")
	if len(v.Streams) != 1 {
		t.Fatalf("tether-agent streams: %d streams, want 1", len(v.Streams))
	}
	return v
}

// unitStreams reads the unit's streams.
func unitStreams(t *testing.T, u *runningUnit) unit.StreamsView {
	t.Helper()
	return ctlView[unit.StreamsView](t, u, "streams")
}

// eventually polls cond until it holds, failing after 20 s with what
// show prints.
func eventually(t *testing.T, what string, cond func() bool, show func() string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s:\n%s", what, show())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func jsonText(v any) string {
	b, _ := json.MarshalIndent(v, "", "  ")
	return string(b)
}

// TestHostStreams runs a real unit (tetherd run) with hosts.listen and
// real agents, with certificates made by `tetherd certs`: host 1's
// stream comes up with mutual TLS and shows in tetherctl and in the
// agent; an agent whose certificate comes from another CA is refused
// and counted; the unit restarts and host 1's agent reconnects by
// itself and resyncs with the new boot.
func TestHostStreams(t *testing.T) {
	lb := newLB(t, "hs", 2, NewLB)
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	certs, foreign := filepath.Join(dir, "certs"), filepath.Join(dir, "foreign")
	for _, args := range [][]string{
		{"certs", "--dir", certs, "--unit", "tether", "--host", "1"},
		{"certs", "--dir", foreign, "--ca-name", "another CA", "--host", "2"},
	} {
		if out, err := exec.Command(tetherd, args...).CombinedOutput(); err != nil {
			t.Fatalf("tetherd %v: %v\n%s", args, err, out)
		}
	}
	cfg := lbConfig(lb, "halfnat", []int{1, 1}, 8080, "") + fmt.Sprintf(
		"hosts:\n  listen: \"0.0.0.0:7320\"\n  tls: {ca: %s, cert: %s, key: %s}\n",
		filepath.Join(certs, "ca.crt"), filepath.Join(certs, "unit-tether.crt"), filepath.Join(certs, "unit-tether.key"))
	u := startUnit(t, lb, cfg)
	if err := u.proc.WaitFor("host stream listener running", 10*time.Second); err != nil {
		t.Fatal(err)
	}

	_, good := streamAgent(t, lb, dir, 0, 1, filepath.Join(certs, "ca.crt"), filepath.Join(certs, "host-1.crt"), filepath.Join(certs, "host-1.key"), "")
	// The rogue trusts the unit's CA but holds a certificate of another.
	_, rogue := streamAgent(t, lb, dir, 1, 2, filepath.Join(certs, "ca.crt"), filepath.Join(foreign, "host-2.crt"), filepath.Join(foreign, "host-2.key"), "")

	var uv unit.StreamsView
	var av agent.StreamsView
	eventually(t, "host 1's stream up on both ends", func() bool {
		uv, av = unitStreams(t, u), agentStreams(t, lb, 0, good)
		return len(uv.Streams) == 1 && uv.Streams[0].Host == 1 && uv.Streams[0].State == unit.StreamUp &&
			strings.HasPrefix(uv.Streams[0].Address, lb.BackendIP(0)+":") &&
			av.Streams[0].State == "up" && av.Streams[0].UnitBoot == uv.Boot
	}, func() string { return jsonText(uv) + "\n" + jsonText(av) })
	if s := uv.Streams[0]; s.Resync != "full" || s.AgentBoot != av.Boot || s.Connects != 1 {
		t.Errorf("unit's view of host 1: %+v (agent boot %x)", s, av.Boot)
	}
	firstBoot := uv.Boot

	var rv agent.StreamsView
	eventually(t, "the rogue agent refused, counted", func() bool {
		uv, rv = unitStreams(t, u), agentStreams(t, lb, 1, rogue)
		return uv.Refused["tls"] >= 1 && rv.Streams[0].LastError != ""
	}, func() string { return jsonText(uv) + "\n" + jsonText(rv) })
	for _, s := range uv.Streams {
		if s.Host == 2 {
			t.Errorf("the rogue host has a stream: %+v", s)
		}
	}
	if rv.Streams[0].Connects != 0 || rv.Streams[0].State == "up" {
		t.Errorf("the rogue agent's stream: %+v", rv.Streams[0])
	}
	if out, err := u.ctl("streams"); err != nil || !strings.Contains(out, "up") {
		t.Errorf("tetherctl streams: %v\n%s", err, out)
	}

	// The unit restarts: the agent notices, backs off, comes back and
	// resyncs with the new boot.
	u.proc.Stop()
	eventually(t, "the agent to see the unit go", func() bool {
		av = agentStreams(t, lb, 0, good)
		return av.Streams[0].State != "up"
	}, func() string { return jsonText(av) })
	u.start()
	eventually(t, "host 1's stream back after the unit's restart", func() bool {
		uv, av = unitStreams(t, u), agentStreams(t, lb, 0, good)
		return len(uv.Streams) == 1 && uv.Streams[0].State == unit.StreamUp && uv.Boot != firstBoot &&
			av.Streams[0].State == "up" && av.Streams[0].UnitBoot == uv.Boot
	}, func() string { return jsonText(uv) + "\n" + jsonText(av) })
	if s := av.Streams[0]; s.Connects != 2 || s.LastResync != "full" {
		t.Errorf("agent after the unit's restart: %+v", s)
	}
	out, err := lb.Exec(lb.Backends[0], agentBin(), "--socket", good, "streams")
	if err != nil || !strings.Contains(out, "tether") {
		t.Errorf("tether-agent streams: %v\n%s", err, out)
	}
	t.Logf("tether-agent streams:\n%s", out)
	out, _ = u.ctl("streams")
	t.Logf("tetherctl streams:\n%s", out)
}
