package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tetherlb/tether/api/unit"
)

// birdConfig is the router's BIRD configuration: a BGP session with
// each unit (their AS 65001, the router's 65000, a TCP MD5 key), every
// route they announce taken and installed in the kernel with all equal
// paths merged into one multipath route, nothing announced back.
func birdConfig(units []string, password string) string {
	var b strings.Builder
	fmt.Fprintf(&b, `router id 10.0.0.254;
protocol device {}
protocol kernel {
  merge paths on;
  ipv4 { import none; export all; };
}
`)
	for i, u := range units {
		fmt.Fprintf(&b, `protocol bgp unit%d {
  local 10.0.0.254 as 65000;
  neighbor %s as 65001;
  password "%s";
  passive on;
  ipv4 { import all; export none; };
}
`, i+1, u, password)
	}
	return b.String()
}

// nextHops returns the router's next hops for prefix, sorted.
func nextHops(t *testing.T, lb *LB, prefix string) []string {
	t.Helper()
	out, err := lb.Exec(lb.Router, "ip", "-j", "route", "show", prefix)
	if err != nil {
		t.Fatal(err)
	}
	var routes []struct {
		Gateway  string `json:"gateway"`
		Nexthops []struct {
			Gateway string `json:"gateway"`
		} `json:"nexthops"`
	}
	if err := json.Unmarshal([]byte(out), &routes); err != nil {
		t.Fatalf("ip -j route: %v: %q", err, out)
	}
	var hops []string
	for _, r := range routes {
		if r.Gateway != "" {
			hops = append(hops, r.Gateway)
		}
		for _, n := range r.Nexthops {
			hops = append(hops, n.Gateway)
		}
	}
	slices.Sort(hops)
	return hops
}

// waitNextHops waits until the router sends prefix to exactly want;
// sock is BIRD's control socket, for what it says when that never
// happens.
func waitNextHops(t *testing.T, lb *LB, sock, prefix, what string, want ...string) {
	t.Helper()
	slices.Sort(want)
	deadline := time.Now().Add(30 * time.Second)
	for {
		got := nextHops(t, lb, prefix)
		if slices.Equal(got, want) {
			return
		}
		if time.Now().After(deadline) {
			birdc, _ := lb.Exec(lb.Router, "birdc", "-s", sock, "show", "route", "all")
			t.Fatalf("%s: the router sends %s to %v, want %v\n%s", what, prefix, got, want, birdc)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (u *runningUnit) bgpView() unit.BGPView {
	u.t.Helper()
	out, err := u.ctl("bgp", "-o", "json")
	if err != nil {
		u.t.Fatalf("tetherctl bgp: %v\n%s", err, out)
	}
	var v unit.BGPView
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		u.t.Fatalf("tetherctl bgp: %v: %q", err, out)
	}
	return v
}

// newFlows is the unit's flows made so far.
func (u *runningUnit) newFlows() uint64 {
	var n uint64
	for _, b := range u.report().Backends {
		n += b.NewFlows
	}
	return n
}

// TestBGP: two units announce an ipip VIP to a real router (BIRD) over
// BGP with TCP MD5, and the router spreads the VIP over both with
// equal-cost multipath. Each also announces its nat VIP's SNAT address,
// and the other's as a backup that the router takes only while that
// unit is gone. Each unit withdraws the VIP when an operator
// drains the unit (and announces it again on undrain), when none of the
// VIP's backends takes new connections, and when its control process
// stops (at once) or dies (its sessions close with it); a unit cut off
// the network loses the route when the router's hold timer runs out.
// Each time the client's new connections all go to the unit that still
// announces.
func TestBGP(t *testing.T) {
	if _, err := exec.LookPath("bird"); err != nil {
		t.Fatalf("bird not installed (scripts/deps.sh test installs bird2): %v", err)
	}
	lb := newLB(t, "bg", 2, NewSwitchedLB)
	ns2, ifc2, ip2, err := lb.AddUnit(1)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	// The router learns the VIP from the units alone, and hashes each
	// flow's five fields over the paths (SpreadVIPs says why).
	for _, r := range []string{VIPRange, "198.51.100.0/24"} {
		if err := lb.Run(lb.Router, "ip", "route", "del", r); err != nil {
			t.Fatal(err)
		}
	}
	if err := lb.Sysctl(lb.Router, "net.ipv4.fib_multipath_hash_policy=3", "net.ipv4.fib_multipath_hash_fields=0x0037"); err != nil {
		t.Fatal(err)
	}
	const password = "tether-bgp-e2e"
	pwFile := filepath.Join(dir, "bgp.key")
	if err := os.WriteFile(pwFile, []byte(password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "bird.conf")
	if err := os.WriteFile(conf, []byte(birdConfig([]string{lb.UnitIP, ip2}, password)), 0o644); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "bird.ctl")
	if _, err := lb.Start(lb.Router, "bird", nil, "bird", "-f", "-c", conf, "-s", sock, "-P", filepath.Join(dir, "bird.pid")); err != nil {
		t.Fatal(err)
	}
	wait := func(what string, want ...string) {
		t.Helper()
		waitNextHops(t, lb, sock, "192.0.2.10/32", what, want...)
	}
	// snatVia waits until the router sends unit 2's SNAT address to
	// the unit at via.
	snatVia := func(what, via string) {
		t.Helper()
		waitNextHops(t, lb, sock, "198.51.100.2/32", what, via)
	}
	// ipip: the hosts decapsulate and answer the client by way of the
	// router, whichever unit sent them the connection.
	if err := lb.StartBackends(80); err != nil {
		t.Fatal(err)
	}
	for i, ns := range lb.Backends {
		if err := lb.StartIPIPDecap(i, "192.0.2.10"); err != nil {
			t.Fatal(err)
		}
		if err := lb.Run(ns, "ip", "route", "replace", "default", "via", "10.0.0.254"); err != nil {
			t.Fatal(err)
		}
	}
	cfg := func(name, ip, ifc, snat, standby string) string {
		return fmt.Sprintf(`unit:
  name: %s
  address4: %s
forwarder:
  port: {driver: afxdp, interface: %s%s}
bgp:
  asn: 65001
  hold_time: 3s
  peers: [{address: 10.0.0.254, asn: 65000, password_file: %s}]
vips:
  - name: web
    address: 192.0.2.10
    port: 80
    protocol: tcp
    mode: ipip
    backends:
      - {name: b0, address: %[6]s}
      - {name: b1, address: %[7]s}
  - name: db
    address: 192.0.2.20
    port: 8080
    protocol: tcp
    mode: nat
    snat: [%[8]s]
    snat_standby: [%[9]s]
    backends:
      - {name: b0, address: %[6]s}
      - {name: b1, address: %[7]s}
`, name, ip, ifc, pinDir(lb), pwFile, lb.BackendIP(0), lb.BackendIP(1), snat, standby)
	}
	for i := range lb.Backends {
		if err := lb.StartHTTP(i, 8080); err != nil {
			t.Fatal(err)
		}
	}
	u1 := startUnitIn(t, lb, lb.Unit, cfg("tether-1", lb.UnitIP, lb.UnitIf, "198.51.100.1", "198.51.100.2"))
	u2 := startUnitIn(t, lb, ns2, cfg("tether-2", ip2, ifc2, "198.51.100.2", "198.51.100.1"))
	wait("both units announce", lb.UnitIP, ip2)
	// Each unit's SNAT address goes to it: the other's backup route
	// (its AS prepended) loses to it.
	snatVia("unit 2 announces its SNAT address", ip2)
	waitNextHops(t, lb, sock, "198.51.100.1/32", "unit 1 announces its SNAT address", lb.UnitIP)
	natOK := func(what string) {
		t.Helper()
		if r := client(t, lb, "http://192.0.2.20:8080/", 50, 8); r.Errors != 0 {
			t.Fatalf("%s: %d of 50 connections to the nat VIP failed: %s", what, r.Errors, r.FirstErr)
		}
	}
	natOK("both units")
	for _, u := range []struct {
		u           *runningUnit
		own, backup string
	}{{u1, "198.51.100.1/32", "198.51.100.2/32"}, {u2, "198.51.100.2/32", "198.51.100.1/32"}} {
		v := u.u.bgpView()
		if !v.Enabled || v.ASN != 65001 || len(v.Peers) != 1 || v.Peers[0].State != "established" ||
			!slices.Equal(v.Announced, []string{"192.0.2.10/32", "192.0.2.20/32", u.own}) || !slices.Equal(v.Backup, []string{u.backup}) {
			t.Fatalf("tetherctl bgp: %+v", v)
		}
	}
	// spread checks that 100 new connections all succeed, and that of
	// the units whose counts can be read (running ones), those in want
	// took some each and the others none.
	spread := func(what string, readable []*runningUnit, want ...*runningUnit) {
		t.Helper()
		before := map[*runningUnit]uint64{}
		for _, u := range readable {
			before[u] = u.newFlows()
		}
		r := client(t, lb, "http://192.0.2.10/", 100, 8)
		if r.Errors != 0 {
			t.Fatalf("%s: %d of 100 connections failed: %s", what, r.Errors, r.FirstErr)
		}
		for _, u := range readable {
			if got := u.newFlows() - before[u]; slices.Contains(want, u) != (got > 0) {
				t.Fatalf("%s: unit %s took %d of the connections", what, u.ns, got)
			}
		}
	}
	both := []*runningUnit{u1, u2}
	spread("both announce", both, u1, u2)

	// An operator drains unit 2, then puts it back.
	if out, err := u2.ctl("bgp", "drain"); err != nil || !strings.Contains(out, "drained by an operator") {
		t.Fatalf("tetherctl bgp drain: %v\n%s", err, out)
	}
	wait("unit 2 drained", lb.UnitIP)
	// Drained, it keeps its SNAT address (replies to its connections),
	// and no longer backs up unit 1's.
	if v := u2.bgpView(); !v.Drained || !slices.Equal(v.Announced, []string{"198.51.100.2/32"}) || len(v.Backup) != 0 ||
		v.Withheld["192.0.2.10/32"] != unit.BGPWithheldDrained || v.Withheld["198.51.100.1/32"] != unit.BGPWithheldDrained {
		t.Fatalf("drained: %+v", v)
	}
	snatVia("unit 2 drained", ip2)
	spread("unit 2 drained", both, u1)
	if out, err := u2.ctl("bgp", "undrain"); err != nil {
		t.Fatalf("tetherctl bgp undrain: %v\n%s", err, out)
	}
	wait("unit 2 undrained", lb.UnitIP, ip2)

	// No backend of unit 1 takes new connections: it withdraws.
	for _, b := range []string{"web/b0", "web/b1"} {
		if out, err := u1.ctl("drain", b); err != nil {
			t.Fatalf("drain %s: %v\n%s", b, err, out)
		}
	}
	wait("unit 1 without backends", ip2)
	if v := u1.bgpView(); v.Withheld["192.0.2.10/32"] != unit.BGPWithheldNoBackend {
		t.Fatalf("without backends: %+v", v)
	}
	spread("unit 1 without backends", both, u2)
	for _, b := range []string{"web/b0", "web/b1"} {
		if out, err := u1.ctl("undrain", b); err != nil {
			t.Fatalf("undrain %s: %v\n%s", b, err, out)
		}
	}
	wait("unit 1's backends back", lb.UnitIP, ip2)

	// Unit 2's control process stops: it withdraws, closes its session,
	// and stops its forwarder.
	if err := u2.proc.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := u2.proc.Wait(30 * time.Second); err != nil {
		t.Fatalf("unit 2 did not stop: %v\n%s", err, u2.proc.Output())
	}
	if !strings.Contains(u2.proc.Output(), "bgp routes withdrawn") {
		t.Fatalf("unit 2 stopped without withdrawing:\n%s", u2.proc.Output())
	}
	wait("unit 2 stopped", lb.UnitIP)
	snatVia("unit 2 stopped: unit 1's backup route", lb.UnitIP)
	spread("unit 2 stopped", []*runningUnit{u1}, u1)
	natOK("unit 2 stopped")
	u2.start()
	wait("unit 2 started again", lb.UnitIP, ip2)
	snatVia("unit 2 started again", ip2)

	// An operator's drain outlives a restart (it is kept in the run
	// directory): the unit comes back withdrawn, until undrained.
	if out, err := u2.ctl("bgp", "drain"); err != nil {
		t.Fatalf("tetherctl bgp drain: %v\n%s", err, out)
	}
	wait("unit 2 drained for a restart", lb.UnitIP)
	if err := u2.proc.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := u2.proc.Wait(30 * time.Second); err != nil {
		t.Fatalf("unit 2 did not stop: %v\n%s", err, u2.proc.Output())
	}
	u2.start()
	if v := u2.bgpView(); !v.Drained || !slices.Equal(v.Announced, []string{"198.51.100.2/32"}) {
		t.Fatalf("unit 2 restarted: %+v, want drained, announcing its SNAT address alone", v)
	}
	if out, err := u2.ctl("bgp", "undrain"); err != nil {
		t.Fatalf("tetherctl bgp undrain: %v\n%s", err, out)
	}
	wait("unit 2 undrained after its restart", lb.UnitIP, ip2)

	// Unit 1's control process dies: its session closes with it. A new
	// one adopts the forwarder and announces again.
	if err := u1.proc.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := u1.proc.Exited(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	wait("unit 1's control process killed", ip2)
	spread("unit 1's control process killed", []*runningUnit{u2}, u2)
	u1.start()
	wait("unit 1's control process back", lb.UnitIP, ip2)

	// Unit 2 is cut off the network without a word: the router drops its
	// route when its hold timer (3 s) runs out.
	if err := lb.Run(ns2, "ip", "link", "set", ifc2, "down"); err != nil {
		t.Fatal(err)
	}
	wait("unit 2 cut off", lb.UnitIP)
	snatVia("unit 2 cut off: unit 1's backup route", lb.UnitIP)
	spread("unit 2 cut off", []*runningUnit{u1}, u1)
}
