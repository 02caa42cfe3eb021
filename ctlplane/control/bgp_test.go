package control

import (
	"fmt"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tetherlb/tether/api/unit"
	"github.com/tetherlb/tether/config"
	"github.com/tetherlb/tether/ctlplane/bgp"
)

// TestAnnouncement: a VIP address is announced while the forwarder runs,
// the unit is ready and not drained, and one VIP on the address has a
// backend that takes new connections (active and weighted); a nat VIP's
// own SNAT addresses whenever the unit runs and is ready, drained or
// not; other units' (standby) as backups, as VIPs are. Each other
// address is withheld, saying why.
func TestAnnouncement(t *testing.T) {
	cfg, err := config.Parse([]byte(`
unit: {address4: 198.51.100.254, address6: "2001:db8::fe"}
vips:
  - {name: web, address: 192.0.2.10, port: 80, protocol: tcp, mode: halfnat,
     backends: [{name: a, address: 10.1.0.1, state: draining}, {name: b, address: 10.1.0.2}]}
  - {name: web443, address: 192.0.2.10, port: 443, protocol: tcp, mode: halfnat,
     backends: [{name: a, address: 10.1.0.1, state: inactive}]}
  - {name: dns, address: 192.0.2.11, port: 53, protocol: udp, mode: halfnat,
     backends: [{name: a, address: 10.1.0.1, state: draining}, {name: b, address: 10.1.0.2, weight: 0}]}
  - {name: web6, address: "2001:db8:10::10", port: 80, protocol: tcp, mode: halfnat,
     backends: [{name: a, address: "2001:db8::1"}]}
  - {name: db, address: 192.0.2.12, port: 5432, protocol: tcp, mode: nat, snat: [198.51.100.11], snat_standby: [198.51.100.12],
     backends: [{name: a, address: 10.1.0.1}]}
`))
	if err != nil {
		t.Fatal(err)
	}
	r := func(a string, backup bool) bgp.Route { return bgp.Route{Addr: netip.MustParseAddr(a), Backup: backup} }
	for _, tc := range []struct {
		name     string
		st       unitState
		want     []bgp.Route
		withheld map[string]string
	}{
		{"serving", unitState{fwdOK: true, ready: true},
			[]bgp.Route{r("192.0.2.10", false), r("192.0.2.12", false), r("198.51.100.11", false), r("198.51.100.12", true), r("2001:db8:10::10", false)},
			map[string]string{"192.0.2.11/32": unit.BGPWithheldNoBackend}},
		{"drained", unitState{fwdOK: true, ready: true, drained: true},
			[]bgp.Route{r("198.51.100.11", false)},
			map[string]string{"192.0.2.10/32": unit.BGPWithheldDrained, "192.0.2.11/32": unit.BGPWithheldDrained, "192.0.2.12/32": unit.BGPWithheldDrained,
				"198.51.100.12/32": unit.BGPWithheldDrained, "2001:db8:10::10/128": unit.BGPWithheldDrained}},
		{"not ready", unitState{fwdOK: true, drained: true}, nil,
			map[string]string{"192.0.2.10/32": unit.BGPWithheldNotReady, "192.0.2.11/32": unit.BGPWithheldNotReady, "192.0.2.12/32": unit.BGPWithheldNotReady,
				"198.51.100.11/32": unit.BGPWithheldNotReady, "198.51.100.12/32": unit.BGPWithheldNotReady, "2001:db8:10::10/128": unit.BGPWithheldNotReady}},
		{"no forwarder", unitState{ready: true}, nil,
			map[string]string{"192.0.2.10/32": unit.BGPWithheldForwarder, "192.0.2.11/32": unit.BGPWithheldForwarder, "192.0.2.12/32": unit.BGPWithheldForwarder,
				"198.51.100.11/32": unit.BGPWithheldForwarder, "198.51.100.12/32": unit.BGPWithheldForwarder, "2001:db8:10::10/128": unit.BGPWithheldForwarder}},
	} {
		routes, withheld := announcement(cfg, tc.st)
		if !slices.Equal(routes, tc.want) || !maps.Equal(withheld, tc.withheld) {
			t.Errorf("%s: announce %v, withheld %v\nwant %v, %v", tc.name, routes, withheld, tc.want, tc.withheld)
		}
	}
}

// TestForwarderGrace: a lost forwarder keeps the VIPs announced for the
// grace (the supervisor restarts a dead one at once), with a decision
// due when it ends; after it they are withheld; a forwarder back clears
// it. Before any forwarder ran nothing is announced.
func TestForwarderGrace(t *testing.T) {
	cfg, err := config.Parse([]byte(`
unit: {address4: 198.51.100.254}
vips: [{name: web, address: 192.0.2.10, port: 80, protocol: tcp, mode: halfnat, backends: [{name: a, address: 10.1.0.1}]}]
`))
	if err != nil {
		t.Fatal(err)
	}
	var p bgpPart
	t0 := time.Unix(1000, 0)
	const grace = 3 * time.Second
	if a, again := p.decide(cfg, true, t0, grace); len(a) != 0 || again != 0 || p.withheld["192.0.2.10/32"] != unit.BGPWithheldForwarder {
		t.Fatalf("before any forwarder: %v, again %v, withheld %v", a, again, p.withheld)
	}
	p.fwdUp = true
	if a, again := p.decide(cfg, true, t0, grace); len(a) != 1 || again != 0 {
		t.Fatalf("forwarder up: %v, again %v", a, again)
	}
	p.fwdUp, p.fwdLost = false, t0
	if a, again := p.decide(cfg, true, t0.Add(time.Second), grace); len(a) != 1 || again != 2*time.Second {
		t.Fatalf("1 s into the grace: %v, again %v", a, again)
	}
	if a, again := p.decide(cfg, true, t0.Add(grace), grace); len(a) != 0 || again != 0 || p.withheld["192.0.2.10/32"] != unit.BGPWithheldForwarder {
		t.Fatalf("grace over: %v, again %v, withheld %v", a, again, p.withheld)
	}
}

// TestBGPStart: a unit with a bgp section runs its speaker; a password
// file it cannot use stops the start, naming the key; a reload that
// changes the section is refused; an operator's drain is kept in the run
// directory.
func TestBGPStart(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "bgp.key")
	text := func(keyFile, extra string) string {
		// A router nobody runs: the session stays down, which is all
		// this test needs of it.
		return fmt.Sprintf("unit: {name: u1, address4: 127.0.0.1}\nbgp: {asn: 65001%s, peers: [{address: 127.0.0.1, port: 1, asn: 65000, password_file: %s}]}\n", extra, keyFile)
	}
	for _, tc := range []struct{ content, want string }{
		{"", "the key is 0 bytes"},
		{strings.Repeat("k", 81), "the key is 81 bytes"},
	} {
		if err := os.WriteFile(key, []byte(tc.content), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, err := config.Parse([]byte(text(key, "")))
		if err != nil {
			t.Fatal(err)
		}
		c, err := New(Options{Config: cfg, RunDir: t.TempDir(), Log: zerolog.Nop()})
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Run(t.Context()); err == nil || !strings.Contains(err.Error(), "bgp.peers[0].password_file") || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("key %q: Run: %v, want %q", tc.content, err, tc.want)
		}
	}
	cfg, _ := config.Parse([]byte(text(filepath.Join(dir, "none"), "")))
	c, _ := New(Options{Config: cfg, RunDir: t.TempDir(), Log: zerolog.Nop()})
	if err := c.Run(t.Context()); err == nil || !strings.Contains(err.Error(), "bgp.peers[0].password_file: open") {
		t.Errorf("no key file: Run: %v", err)
	}

	if err := os.WriteFile(key, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, path := startControl(t, text(key, ""))
	deadline := time.Now().Add(10 * time.Second)
	var v unit.BGPView
	for v = c.BGP(t.Context()); !v.Enabled; v = c.BGP(t.Context()) {
		if time.Now().After(deadline) {
			t.Fatal("the speaker never started")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if v.ASN != 65001 || v.RouterID != "127.0.0.1" || len(v.Peers) != 1 || v.Peers[0].State == "established" || v.Drained {
		t.Errorf("view %+v", v)
	}
	if err := os.WriteFile(path, []byte(text(key, ", hold_time: 30s")), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := c.Reload(t.Context()); err == nil || !strings.Contains(err.Error(), "changing the bgp section needs a restart") {
		t.Errorf("reload of another bgp section: %v", err)
	}
	if err := os.WriteFile(path, []byte(text(key, "")), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := c.Reload(t.Context()); err != nil {
		t.Errorf("reload of the same bgp section: %v", err)
	}
	if err := c.SetBGPDrained(t.Context(), true); err != nil || !c.BGP(t.Context()).Drained {
		t.Fatalf("drain: %v", err)
	}
	if _, err := os.Stat(filepath.Join(c.opts.RunDir, bgpDrainedFile)); err != nil {
		t.Errorf("the drain is not kept: %v", err)
	}
	if err := c.SetBGPDrained(t.Context(), false); err != nil || c.BGP(t.Context()).Drained {
		t.Fatalf("undrain: %v", err)
	}
	if _, err := os.Stat(filepath.Join(c.opts.RunDir, bgpDrainedFile)); !os.IsNotExist(err) {
		t.Errorf("the undrain left the file: %v", err)
	}
	alone, _ := startControl(t, "unit: {name: u2}\n")
	if err := alone.SetBGPDrained(t.Context(), true); err == nil || alone.BGP(t.Context()).Enabled {
		t.Errorf("a unit without bgp drained: %v", err)
	}
}
