package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tetherlb/tether/agent/sessionclient"
	"github.com/tetherlb/tether/agent/sessions"
	"github.com/tetherlb/tether/api/unit"
)

// damUnit is one unit of the cluster tests: where it runs and how to
// write its configuration.
type damUnit struct {
	name, ns, ifc, ip string
	run               *runningUnit
}

// damCluster is three units behind the ECMP router, sharing their flows
// through the atom manager, and ten hosts with agents.
type damCluster struct {
	t       *testing.T
	lb      *LB
	dir     string
	certs   string
	keyFile string
	units   []*damUnit
	level   string
	vips    []damVIP
}

// damVIP is a VIP of the cluster tests, spread over every host's tunnel
// address; punt makes the units decide its new flows (sessions).
type damVIP struct {
	name, addr, mode string
	punt             bool
}

// damVIPs are the VIPs the cluster tests run, one per mode that crosses
// units, each spread over every host's tunnel address.
var damVIPs = []damVIP{
	{name: "web-tunnel", addr: "192.0.2.10", mode: "tunnel"},
	{name: "web-ipip", addr: "192.0.2.11", mode: "ipip"},
}

// damL7 is the l7 VIP: the units' acceptors migrate its connections to
// the hosts, whose agents splice them to their servers.
var damL7 = damVIP{name: "web-l7", addr: "192.0.2.14", mode: "l7"}

// damNAT is the nat VIP: each unit has its own SNAT address
// (snatOf) and takes the others' replies when the router sends them.
var damNAT = damVIP{name: "web-nat", addr: "192.0.2.13", mode: "nat"}

// snatOf is unit i's SNAT address.
func snatOf(i int) string { return fmt.Sprintf("198.51.100.%d", 11+i) }

// config is unit u's configuration with the hosts in backends.
func (c *damCluster) config(u *damUnit, backends []int) string {
	var vips strings.Builder
	self := slices.Index(c.units, u)
	for _, v := range c.vips {
		fmt.Fprintf(&vips, "  - name: %s\n    address: %s\n    port: 80\n    protocol: tcp\n    mode: %s\n    punt: %v\n", v.name, v.addr, v.mode, v.punt)
		if v.mode == "nat" {
			var standby []string
			for j := range c.units {
				if j != self {
					standby = append(standby, snatOf(j))
				}
			}
			fmt.Fprintf(&vips, "    snat: [%s]\n    snat_standby: [%s]\n", snatOf(self), strings.Join(standby, ", "))
		}
		vips.WriteString("    backends:\n")
		for _, i := range backends {
			addr := tunnelAddr(c.lb, i) // the host's tunnel address: its agent takes the packets
			if v.mode == "nat" {
				addr = c.lb.BackendIP(i)
			}
			fmt.Fprintf(&vips, "      - {name: b%d, address: %s}\n", i, addr)
		}
	}
	var peers []string
	for _, p := range c.units {
		peers = append(peers, fmt.Sprintf("%q", p.ip+":7946"))
	}
	return fmt.Sprintf(`unit:
  name: %s
  address4: %s
forwarder:
  port: {driver: afxdp, interface: %s%s}
vips:
%shosts:
  listen: "%s:7320"
  tls: {ca: %s, cert: %s, key: %s}
cluster:
  bind: "%s:7946"
  listen: "%s:7947"
  peers: [%s]
  key_file: %s
  replication: %s
  probe_interval: 200ms
  probe_timeout: 100ms
  pull_wait: 3s
`, u.name, u.ip, u.ifc, pinDir(c.lb), vips.String(), u.ip,
		filepath.Join(c.certs, "ca.crt"), filepath.Join(c.certs, "unit-"+u.name+".crt"), filepath.Join(c.certs, "unit-"+u.name+".key"),
		u.ip, u.ip, strings.Join(peers, ", "), c.keyFile, c.level)
}

// newDAMCluster builds the topology and starts everything: hosts, their
// agents, the units, and waits until every unit sees the others and is
// ready, and every host's stream is up.
func newDAMCluster(t *testing.T, tag, level string, vips []damVIP) *damCluster {
	t.Helper()
	// Three units busy-polling two cores beside ten hosts: a boot of the
	// appliance under emulation, or a flood, must not share the machine
	// with them.
	Exclusive(t, floodExclusiveWait)
	lb := newLB(t, tag, 10, NewSwitchedLB)
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	c := &damCluster{t: t, lb: lb, dir: dir, certs: filepath.Join(dir, "certs"), keyFile: filepath.Join(dir, "cluster.key"), level: level, vips: vips}
	c.units = []*damUnit{{name: "tether-1", ns: lb.Unit, ifc: lb.UnitIf, ip: lb.UnitIP}}
	for i := 1; i < 3; i++ {
		ns, ifc, ip, err := lb.AddUnit(i)
		if err != nil {
			t.Fatal(err)
		}
		c.units = append(c.units, &damUnit{name: fmt.Sprintf("tether-%d", i+1), ns: ns, ifc: ifc, ip: ip})
	}
	if err := lb.SpreadVIPs(c.ips(c.units)); err != nil {
		t.Fatal(err)
	}
	for i, u := range c.units {
		if err := lb.RouteSNAT(snatOf(i), u.ip); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(c.keyFile, []byte(strings.Repeat("k", 32)), 0o600); err != nil {
		t.Fatal(err)
	}
	args := []string{"certs", "--dir", c.certs}
	for _, u := range c.units {
		args = append(args, "--unit", u.name)
	}
	for i := range lb.Backends {
		args = append(args, "--host", fmt.Sprintf("%d=%s", i+1, tunnelAddr(lb, i)))
	}
	if out, err := exec.Command(tetherd, args...).CombinedOutput(); err != nil {
		t.Fatalf("tetherd %v: %v\n%s", args, err, out)
	}
	if err := lb.StartBackends(80); err != nil {
		t.Fatal(err)
	}
	for _, ns := range lb.Backends {
		for _, v := range vips {
			// The VIPs are the hosts' own; they answer by way of the router.
			if err := lb.Run(ns, "ip", "addr", "add", v.addr+"/32", "dev", "lo"); err != nil {
				t.Fatal(err)
			}
		}
		if err := lb.Run(ns, "ip", "route", "replace", "default", "via", "10.0.0.254"); err != nil {
			t.Fatal(err)
		}
	}
	all := make([]int, len(lb.Backends))
	for i := range all {
		all[i] = i
	}
	for _, u := range c.units {
		u.run = startUnitIn(t, lb, u.ns, c.config(u, all))
	}
	var names, ips []string
	for _, u := range c.units {
		names, ips = append(names, u.name), append(ips, u.ip)
	}
	splice := ""
	for _, v := range vips {
		if v.mode == "l7" {
			splice = v.addr + ":80"
		}
	}
	startClusterAgents(t, lb, dir, c.certs, names, ips, splice)
	for _, u := range c.units {
		waitStreamsUp(t, u.run, len(lb.Backends))
		c.waitReady(u, len(c.units))
	}
	return c
}

func (c *damCluster) ips(units []*damUnit) []string {
	var out []string
	for _, u := range units {
		out = append(out, u.ip)
	}
	return out
}

// atoms reads unit u's atom manager.
func (c *damCluster) atoms(u *damUnit) unit.AtomsView {
	c.t.Helper()
	out, err := u.run.ctl("atoms", "--limit", "1", "-o", "json")
	if err != nil {
		c.t.Fatal(err)
	}
	var v unit.AtomsView
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		c.t.Fatalf("atoms %q: %v", out, err)
	}
	return v
}

// waitReady waits until u's atom manager has streams to the other
// members, has pulled from each, and says it is ready.
func (c *damCluster) waitReady(u *damUnit, members int) {
	c.t.Helper()
	var v unit.AtomsView
	eventually(c.t, u.name+" ready with its atoms pulled", func() bool {
		v = c.atoms(u)
		if !v.Ready || len(v.Peers) != members-1 {
			return false
		}
		for _, p := range v.Peers {
			if !p.Connected || !p.Pulled {
				return false
			}
		}
		return true
	}, func() string { return fmt.Sprintf("%+v", v) })
}

// replicated waits until every unit's adds have reached their peers.
func (c *damCluster) replicated(units []*damUnit) {
	c.t.Helper()
	eventually(c.t, "atoms replicated", func() bool {
		for _, u := range units {
			for _, p := range c.atoms(u).Peers {
				if p.Queued != 0 || p.Acked != p.Sent {
					return false
				}
			}
		}
		return true
	}, func() string {
		var s []string
		for _, u := range units {
			s = append(s, fmt.Sprintf("%s: %+v", u.name, c.atoms(u).Peers))
		}
		return strings.Join(s, "\n")
	})
}

// flows counts the connections in units' inventories.
func (c *damCluster) flows(units []*damUnit) int {
	n := 0
	for _, u := range units {
		if f, ok := u.run.status()["flows"].(float64); ok {
			n += int(f)
		}
	}
	return n
}

// established counts the transfers' connections the hosts hold
// established (from the client, for tunnel and ipip, or from a unit's
// SNAT address): a flow in a unit may still be a handshake, and the
// tests kill a unit under established connections.
func (c *damCluster) established() int {
	c.t.Helper()
	n := 0
	for _, ns := range c.lb.Backends {
		out, err := c.lb.Exec(ns, "ss", "-Htn", "state", "established", "( sport = :80 ) and ( dst "+ClientAddr+" or dst 198.51.100.0/24 )")
		if err != nil {
			c.t.Fatal(err)
		}
		n += strings.Count(out, "\n")
	}
	return n
}

// downloads starts conns concurrent SHA-256-checked downloads of n
// bytes at pace bytes a second from vip, and returns a channel for their
// result, within bound.
func (c *damCluster) downloads(vip string, conns int, n, pace int64, bound time.Duration) chan ClientResult {
	c.t.Helper()
	return clientProc(c.t, c.lb, "downloads "+vip, fmt.Sprintf("http://%s/bytes?n=%d&pace=%d", vip, n, pace), conns, conns, bound)
}

// kill ends u as a crash does: both its processes, SIGKILL.
func (c *damCluster) kill(u *damUnit) {
	c.t.Helper()
	if err := u.run.proc.Signal(syscall.SIGKILL); err != nil {
		c.t.Fatal(err)
	}
	u.run.killForwarder()
	if err := u.run.proc.Wait(10 * time.Second); err == nil || !strings.Contains(err.Error(), "killed") {
		c.t.Logf("%s's control process: %v", u.name, err)
	}
}

// writeConfig writes u's configuration with the hosts in backends, and
// its admin section as startUnitIn wrote it.
func (c *damCluster) writeConfig(u *damUnit, backends []int) {
	c.t.Helper()
	cfg := c.config(u, backends) + fmt.Sprintf("admin:\n  socket: %s\n  run_dir: %s\n", u.run.socket, u.run.runDir)
	if err := os.WriteFile(u.run.cfgPath, []byte(cfg), 0o644); err != nil {
		c.t.Fatal(err)
	}
}

// reconfigure gives u the hosts in backends and reloads it.
func (c *damCluster) reconfigure(u *damUnit, backends []int) {
	c.t.Helper()
	c.writeConfig(u, backends)
	if out, err := u.run.ctl("reload"); err != nil {
		c.t.Fatalf("%s: reload: %v\n%s", u.name, err, out)
	}
}

// TestUnitDies: 300 long transfers through three units sharing their
// flows at replication level 1 (tunnel, ipip, nat and l7 VIPs: an l7
// connection is migrated to its host by the unit that accepted it, and
// its route atom is a tunnel flow's), and 30 l7 connections whose
// handshakes are made and whose requests wait; one unit is
// killed (both processes, SIGKILL) while one host of ten leaves the
// configuration at the same moment, and the router moves the dead
// unit's connections to the survivors (and, removing a path, some of the
// survivors' between them) and its SNAT address to one survivor. The
// survivors find each moved connection's route atom (a nat reply's by
// the reply's key) and continue it: every transfer completes intact,
// and every waiting request, sent now, is answered.
// The dead unit then restarts, pulls its atoms before it says it is
// ready, takes its paths and its SNAT address back, and the connections
// the router moves to it continue too.
func TestUnitDies(t *testing.T) {
	vips := append(slices.Clone(damVIPs), damNAT, damL7)
	c := newDAMCluster(t, "ud", "1", vips)
	const conns, size, pace = 75, 3 << 20, 128 << 10 // 24 s a transfer
	// l7 connections whose handshakes are made first, through every
	// unit, and whose requests come after the router moved them (their
	// keepalive probes answered meanwhile): the units share their SYN
	// cookie keys (derived from the cluster key), so another unit's
	// acceptor, or the dead unit's next process, takes each.
	const preconns = 30
	goAhead := filepath.Join(c.dir, "preconnect-go")
	pre, err := c.lb.Start(c.lb.Client, "preconnect", RoleCommand("preconnect", damL7.addr+":80", "/", goAhead, fmt.Sprint(preconns)), Self())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pre.Stop)
	if err := pre.WaitFor("connected", time.Minute); err != nil {
		t.Fatalf("%v\nunits' drops: %v, %v, %v", err, nonZero(c.units[0].run.report().Drops), nonZero(c.units[1].run.report().Drops), nonZero(c.units[2].run.report().Drops))
	}
	var results []chan ClientResult
	for _, v := range vips {
		results = append(results, c.downloads(v.addr, conns, size, pace, 4*time.Minute))
	}
	eventually(t, "every transfer under way", func() bool { return c.established() >= conns*len(vips) },
		func() string { return fmt.Sprint(c.established(), " established, ", c.flows(c.units), " flows") })
	c.replicated(c.units)

	dead, survivors := c.units[0], c.units[1:]
	kept := make([]int, 0, len(c.lb.Backends)-1)
	for i := range len(c.lb.Backends) - 1 { // b9 leaves: 10% of the hosts
		kept = append(kept, i)
	}
	c.kill(dead)
	if err := c.lb.SpreadVIPs(c.ips(survivors)); err != nil {
		t.Fatal(err)
	}
	// The dead unit's nat connections answer to its SNAT address: a
	// survivor takes it.
	if err := c.lb.RouteSNAT(snatOf(0), survivors[0].ip); err != nil {
		t.Fatal(err)
	}
	for _, u := range survivors {
		c.reconfigure(u, kept)
	}
	// The transfers the dead unit carried move on through the survivors.
	eventually(t, "moved connections found in the atom manager", func() bool {
		n := uint64(0)
		for _, u := range survivors {
			cnt := c.atoms(u).Counts
			n += cnt.QueryLocal + cnt.QueryRemote
		}
		return n > 0
	}, func() string {
		return fmt.Sprintf("%+v / %+v", c.atoms(survivors[0]).Counts, c.atoms(survivors[1]).Counts)
	})

	// The dead unit comes back, with the new configuration.
	c.writeConfig(dead, kept)
	dead.run.start()
	c.waitReady(dead, len(c.units))
	if err := c.lb.SpreadVIPs(c.ips(c.units)); err != nil {
		t.Fatal(err)
	}
	if err := c.lb.RouteSNAT(snatOf(0), dead.ip); err != nil {
		t.Fatal(err)
	}
	// The waiting requests go now, each to whichever unit the router
	// picks: one that did not make its handshake, or the dead unit's
	// next process.
	if err := os.WriteFile(goAhead, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := pre.Wait(time.Minute); err != nil || lastLine(pre.Output()) != fmt.Sprintf("answered %d of %d", preconns, preconns) {
		t.Errorf("l7 requests on connections made before the router moved them: %v\n%s", err, pre.Output())
	}
	for i, done := range results {
		r := <-done
		if r.Errors != 0 {
			t.Errorf("%s: %+v", vips[i].name, r)
		}
		got := 0
		for _, n := range r.Backends {
			got += n
		}
		if got != conns {
			t.Errorf("%s: %d transfers complete, want %d", vips[i].name, got, conns)
		}
		// The transfers are paced in 64 KiB writes, two a second: a
		// half-second stall is the pace, anything above it the takeover.
		t.Logf("%s: the longest any transfer stood still: %d ms", vips[i].name, r.MaxStallMS)
	}
	for _, u := range c.units {
		a := c.atoms(u)
		rep := u.run.report()
		t.Logf("%s: atoms %d, counts %+v; punts %v; drops %v; resets sent %d", u.name, a.Atoms, a.Counts, u.run.status()["punts"], nonZero(rep.Drops), rep.ResetsSent)
		for _, p := range a.Peers {
			t.Logf("%s → %s: %d atoms sent, add to acknowledgement %.2f ms median, %.2f ms p99", u.name, p.Name, p.Sent, p.LagMedian, p.LagP99)
		}
	}
	if a := c.atoms(dead); a.Counts.QueryLocal+a.Counts.QueryRemote == 0 {
		t.Errorf("the restarted unit continued no connection: %+v", a.Counts)
	}
	// The l7 connections that moved reached the acceptors of the units
	// they moved to, which found their routes.
	moved := uint64(0)
	for _, u := range c.units {
		v := unitL7(t, u.run)
		moved += v.Stats.MovedIn
		t.Logf("%s: l7 migrated %d, moved in %d", u.name, v.Stats.Migrated, v.Stats.MovedIn)
	}
	if moved == 0 {
		t.Error("no l7 connection moved to another unit: the test proves nothing for them")
	}
}

// TestUnitDiesLevel0: at replication level 0 an atom lives only at the
// unit that added it. The prediction: when a unit dies, a connection it
// carried survives exactly when the survivors' Maglev choice for it
// (after the change: b9 has left) is still its backend, since no atom is
// left to say otherwise; every connection the survivors carried
// survives, however the router moves it between them, since its atom
// lives at its adder. The test computes the doomed set before the
// transfers end and requires the failed set to be exactly that.
func TestUnitDiesLevel0(t *testing.T) {
	c := newDAMCluster(t, "u0", "0", damVIPs)
	const conns, size, pace = 60, 2 << 20, 128 << 10 // 16 s a transfer
	var results []chan ClientResult
	for _, v := range damVIPs {
		results = append(results, c.downloads(v.addr, conns, size, pace, 3*time.Minute))
	}
	eventually(t, "every transfer under way", func() bool { return c.established() >= conns*len(damVIPs) },
		func() string { return fmt.Sprint(c.established(), " established, ", c.flows(c.units), " flows") })

	dead, survivors := c.units[0], c.units[1:]
	out, err := dead.run.ctl("flows", "--limit", "10000", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var carried unit.FlowsReply
	if err := json.Unmarshal([]byte(out), &carried); err != nil {
		t.Fatalf("flows %q: %v", out, err)
	}
	kept := make([]int, 0, len(c.lb.Backends)-1)
	for i := range len(c.lb.Backends) - 1 {
		kept = append(kept, i)
	}
	// The host leaves before the router moves the dead unit's
	// connections, so that every survivor decides them by the Maglev
	// table the prediction reads.
	c.kill(dead)
	for _, u := range survivors {
		c.reconfigure(u, kept)
	}
	if err := c.lb.SpreadVIPs(c.ips(survivors)); err != nil {
		t.Fatal(err)
	}
	addrOf := map[string]string{}
	for i := range c.lb.Backends {
		addrOf[fmt.Sprintf("b%d", i)] = tunnelAddr(c.lb, i)
	}
	doomed := map[string]bool{}
	for _, f := range carried.Flows {
		src := fmt.Sprintf("%s:%d", f.Key.SrcAddr(), f.Key.SrcPort)
		out, err := survivors[0].run.ctl("explain", "tcp", src, fmt.Sprintf("%s:%d", f.Key.DstAddr(), f.Key.DstPort), "-o", "json")
		if err != nil {
			t.Fatal(err)
		}
		var e unit.Explanation
		if err := json.Unmarshal([]byte(out), &e); err != nil {
			t.Fatalf("explain %q: %v", out, err)
		}
		had := fmt.Sprint(netip.AddrFrom4([4]byte(f.Action.A[:4])))
		if addrOf[e.Backend] != had {
			doomed[src] = true
		}
	}
	t.Logf("%s carried %d connections; predicted lost: %d", dead.name, len(carried.Flows), len(doomed))
	failed := map[string]bool{}
	for i, done := range results {
		r := <-done
		for _, f := range r.Failed {
			failed[f] = true
		}
		if r.Errors != len(r.Failed) {
			t.Errorf("%s: %d errors, %d of them with a connection: %+v", damVIPs[i].name, r.Errors, len(r.Failed), r)
		}
	}
	for f := range failed {
		if !doomed[f] {
			t.Errorf("connection %s failed; the model says it survives", f)
		}
	}
	for f := range doomed {
		if !failed[f] {
			t.Errorf("connection %s survived; the model says it is lost", f)
		}
	}
}

// TestSessionOutlivesItsUnit: an application on host b4 reports a
// client-IP session for the client to its agent, which reports it to
// its unit; the unit keeps it as an atom. The unit dies (SIGKILL) and
// the router drops its path; each of the client's new connections to a
// VIP whose new flows the units decide lands on b4, where Maglev alone
// would spread them over ten hosts (S1 FIG. 26: a known session goes to
// its host).
func TestSessionOutlivesItsUnit(t *testing.T) {
	vip := damVIP{name: "web-session", addr: "192.0.2.12", mode: "tunnel", punt: true}
	c := newDAMCluster(t, "us", "1", []damVIP{vip})
	const host = 4 // b4, host ID 5
	sc := sessionclient.New(filepath.Join(c.dir, fmt.Sprintf("agent-b%d.sock", host)))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := sc.Established(ctx, sessions.Session{Kind: sessions.KindClientIP, Client: netip.MustParseAddr(ClientAddr),
		IdleTimeoutMS: 600000, Application: "shop"}); err != nil {
		t.Fatal(err)
	}
	// The agent reports to the first unit of its configuration.
	learnt, survivors := c.units[0], c.units[1:]
	eventually(t, "the session's atom replicated", func() bool {
		n := 0
		for _, u := range c.units {
			out, err := u.run.ctl("atoms", "--prefix", "session/", "-o", "json")
			if err != nil {
				return false
			}
			var v unit.AtomsView
			if json.Unmarshal([]byte(out), &v) == nil && v.Matched > 0 && v.Page[0].Host == fmt.Sprintf("host/%d", host+1) && !v.Page[0].Cached {
				n++
			}
		}
		return n >= 2 // its adder and one replica
	}, func() string { return fmt.Sprintf("%+v", c.atoms(learnt)) })
	want := fmt.Sprintf("b%d", host)
	if r := client(t, c.lb, "http://"+vip.addr+"/", 20, 4); r.Errors != 0 || r.Backends[want] != 20 {
		t.Fatalf("before the unit died: %+v, want every connection on %s", r, want)
	}
	c.kill(learnt)
	if err := c.lb.SpreadVIPs(c.ips(survivors)); err != nil {
		t.Fatal(err)
	}
	r := client(t, c.lb, "http://"+vip.addr+"/", 20, 4)
	if r.Errors != 0 || r.Backends[want] != 20 {
		t.Errorf("after the unit that learnt the session died: %+v, want every connection on %s", r, want)
	}
	routed := 0.0
	for _, u := range survivors {
		if p, ok := u.run.status()["punts"].(map[string]any); ok {
			routed += p["session_routed"].(float64)
		}
	}
	if routed < 20 {
		t.Errorf("the survivors routed %v connections by the session, want 20", routed)
	}
}
