package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// demoConnections is how many connections the test has the demo open
// per VIP. The demo chooses every source port, so Maglev's split of them
// is the same on every run; 300 puts the lightest backend (weight 1 of
// 6) about 50 connections, far from the bounds checkDemo allows.
const demoConnections = 300

// demoResult is what tether-demo --json writes: the fields checked here.
type demoResult struct {
	Port string `json:"port"`
	VIPs []struct {
		Name        string `json:"name"`
		Mode        string `json:"mode"`
		Connections int    `json:"connections"`
		Failed      int    `json:"failed"`
		FirstError  string `json:"first_error"`
		Backends    []struct {
			Name     string `json:"name"`
			Weight   int    `json:"weight"`
			Client   int    `json:"client"`
			NewFlows uint64 `json:"new_flows"`
			Packets  uint64 `json:"packets"`
		} `json:"backends"`
	} `json:"vips"`
	L7 struct {
		Connections  int    `json:"connections"`
		Migrated     uint64 `json:"migrated"`
		Uploaded     uint64 `json:"uploaded"`
		UploadFailed uint64 `json:"upload_failed"`
	} `json:"l7"`
	Download struct {
		VIP       string `json:"vip"`
		Backend   string `json:"backend"`
		Predicted string `json:"predicted"`
		Want      int64  `json:"want_bytes"`
		Bytes     int64  `json:"bytes"`
		Intact    bool   `json:"intact"`
		Error     string `json:"error"`
	} `json:"download"`
}

// TestDemo runs the README's main command's program end to end, on both
// ports, and checks what it measured: every connection through every VIP
// answered, every backend served, the weighted split (the l7 VIP's: by
// its path rules, a third each), Tether's flow counts against the
// client's, the download intact, the network gone.
func TestDemo(t *testing.T) {
	if err := Root(); err != nil {
		t.Skipf("system test skipped: %v", err)
	}
	demo := filepath.Join(t.TempDir(), "tether-demo")
	build := exec.Command("go", "build", "-o", demo, "./cmd/tether-demo")
	build.Dir = ".."
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build tether-demo: %v\n%s", err, out)
	}
	for _, port := range []string{"afxdp", "tun"} {
		t.Run(port, func(t *testing.T) {
			report := filepath.Join(t.TempDir(), "demo.json")
			// A bound on a hung demo, not a measurement.
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, demo, "--tetherd", tetherd, "--agent", agentBin(), "--port", port,
				"--connections", strconv.Itoa(demoConnections), "--json", report)
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			runErr := cmd.Run()
			defer func() {
				if t.Failed() {
					t.Logf("demo output:\n%s", out.String())
				}
			}()
			// The demo writes its report even when it then fails on what
			// it found; check it first, for the details.
			if b, err := os.ReadFile(report); err == nil {
				var r demoResult
				if err := json.Unmarshal(b, &r); err != nil {
					t.Fatalf("demo report: %v\n%s", err, b)
				}
				checkDemo(t, &r, port)
			} else if runErr == nil {
				t.Errorf("the demo succeeded without writing its report: %v", err)
			}
			if runErr != nil {
				t.Fatalf("demo: %v", runErr)
			}
			checkNamespacesGone(t, cmd.Process.Pid)
		})
	}
}

// checkDemo checks the demo's report.
func checkDemo(t *testing.T, r *demoResult, port string) {
	t.Helper()
	if r.Port != port {
		t.Errorf("report for port %q, want %q", r.Port, port)
	}
	// The demo's configuration (cmd/tether-demo/demo.yaml): one VIP per
	// mode it can show end to end, each over the same three backends.
	wantModes := map[string]string{"web-nat": "nat", "web-halfnat": "halfnat", "web-dsr": "ipip", "web-tunnel": "tunnel", "web-l7": "l7"}
	var names []string
	weighted := false
	for _, v := range r.VIPs {
		names = append(names, v.Name)
		if m, ok := wantModes[v.Name]; !ok || m != v.Mode {
			t.Errorf("VIP %s (%s): want one of %v", v.Name, v.Mode, wantModes)
		}
		want := demoConnections
		if v.Name == r.Download.VIP {
			want++
		}
		if v.Connections != want || v.Failed != 0 {
			t.Errorf("%s: %d connections, %d failed (%s); want %d, all answered", v.Name, v.Connections, v.Failed, v.FirstError, want)
		}
		if len(v.Backends) != 3 {
			t.Errorf("%s: %d backends, want 3", v.Name, len(v.Backends))
		}
		answered, weights := 0, 0
		for _, b := range v.Backends {
			answered += b.Client
			weights += b.Weight
			if b.Weight != v.Backends[0].Weight {
				weighted = true
			}
		}
		if answered != v.Connections-v.Failed {
			t.Errorf("%s: backends answered %d connections, the client made %d", v.Name, answered, v.Connections-v.Failed)
		}
		for _, b := range v.Backends {
			if b.Client == 0 || b.Packets == 0 {
				t.Errorf("%s/%s: %d connections, %d packets: the backend got no traffic", v.Name, b.Name, b.Client, b.Packets)
			}
			// Exact: each connection is one new flow, whatever the split.
			if b.NewFlows != uint64(b.Client) {
				t.Errorf("%s/%s: the client saw %d connections, Tether counted %d new flows", v.Name, b.Name, b.Client, b.NewFlows)
			}
			if v.Mode == "l7" {
				// Each backend's path got a third of the connections,
				// and its rule sent every one of them there.
				if b.Client != v.Connections/len(v.Backends) {
					t.Errorf("%s/%s: %d connections, want the %d on its rule's path", v.Name, b.Name, b.Client, v.Connections/len(v.Backends))
				}
				continue
			}
			if weights == 0 || answered == 0 {
				continue
			}
			// The split follows the weights, within half of each
			// backend's share: generous, and the split is deterministic
			// anyway (fixed source ports), so this cannot flake.
			share, want := float64(b.Client)/float64(answered), float64(b.Weight)/float64(weights)
			if math.Abs(share-want) > want/2 {
				t.Errorf("%s/%s: weight %d of %d, %.1f%% of the connections; want %.1f%% ± half", v.Name, b.Name, b.Weight, weights, 100*share, 100*want)
			}
		}
	}
	slices.Sort(names)
	if want := []string{"web-dsr", "web-halfnat", "web-l7", "web-nat", "web-tunnel"}; !slices.Equal(names, want) {
		t.Errorf("VIPs %v, want %v", names, want)
	}
	if !weighted {
		t.Error("no VIP has backends of different weights: the weighted split went unchecked")
	}
	// The l7 VIP's connections were each migrated to a host, and every
	// host took its own.
	if l := r.L7; l.Connections != demoConnections || l.Migrated != uint64(l.Connections) || l.Uploaded != l.Migrated || l.UploadFailed != 0 {
		t.Errorf("l7: %d connections, %d migrated, %d taken by the hosts, %d failed; want all %d migrated and taken",
			l.Connections, l.Migrated, l.Uploaded, l.UploadFailed, demoConnections)
	}
	d := r.Download
	if !d.Intact || d.Want == 0 || d.Bytes != d.Want || d.Error != "" {
		t.Errorf("download through %s: %d of %d bytes, intact %v (%s)", d.VIP, d.Bytes, d.Want, d.Intact, d.Error)
	}
	if d.Backend == "" || d.Backend != d.Predicted {
		t.Errorf("download served by %q; Tether had named %q", d.Backend, d.Predicted)
	}
}

// checkNamespacesGone checks that the demo (process pid) removed its
// network: its namespaces are named after its process ID.
func checkNamespacesGone(t *testing.T, pid int) {
	t.Helper()
	entries, err := os.ReadDir("/run/netns")
	if errors.Is(err, os.ErrNotExist) {
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	prefix := namePrefix + strconv.Itoa(pid)
	for _, e := range entries {
		if rest, ok := strings.CutPrefix(e.Name(), prefix); ok && !startsWithDigit(rest) {
			t.Errorf("the demo left namespace %s behind", e.Name())
		}
	}
}

// startsWithDigit tells a longer process ID (pid 12 vs 123) from a tag.
func startsWithDigit(s string) bool { return s != "" && s[0] >= '0' && s[0] <= '9' }
