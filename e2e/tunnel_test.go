package e2e

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tetherlb/tether/api/unit"
)

// tunnelAddr is backend i's tunnel address: on its link to the unit,
// used for nothing but the unit's tunnel packets.
func tunnelAddr(lb *LB, i int) string {
	if lb.Driver == "tun" {
		return fmt.Sprintf("10.0.%d.100", 10+i)
	}
	return fmt.Sprintf("10.0.0.%d", 100+i)
}

// tunnelAgent starts a tether-agent in backend i as host id, with a
// stream to the unit and the host side of the tunnels on its link.
func tunnelAgent(t *testing.T, lb *LB, dir, certs string, i int, id uint32) *Proc {
	t.Helper()
	return tunnelAgentWith(t, lb, dir, certs, i, id, "")
}

// tunnelAgentWith is tunnelAgent with more of the agent's configuration.
func tunnelAgentWith(t *testing.T, lb *LB, dir, certs string, i int, id uint32, extra string) *Proc {
	t.Helper()
	return tunnelAgentAt(t, lb, dir, certs, i, id, tunnelAddr(lb, i), extra)
}

// tunnelAgentAt is tunnelAgentWith with the tunnel addresses addrs (a
// YAML list's items).
func tunnelAgentAt(t *testing.T, lb *LB, dir, certs string, i int, id uint32, addrs, extra string) *Proc {
	t.Helper()
	bpf, err := lb.BPFDir()
	if err != nil {
		t.Fatal(err)
	}
	tunnel := fmt.Sprintf("tunnel:\n  interface: e0\n  addresses: [%s]\n  pin_dir: %s\n", addrs, filepath.Join(bpf, fmt.Sprintf("host-b%d", i)))
	p, _ := streamAgent(t, lb, dir, i, id, filepath.Join(certs, "ca.crt"),
		filepath.Join(certs, fmt.Sprintf("host-%d.crt", id)), filepath.Join(certs, fmt.Sprintf("host-%d.key", id)), tunnel+extra)
	return p
}

// TestTunnelToHosts: a tunnel VIP (the zero-overhead flow-ID tunnel)
// carries curl and Go HTTP clients to two hosts whose agents restore the
// packets in XDP from the mappings the unit pushed over their streams;
// the hosts answer the clients directly, so the unit forwards no reply;
// a 32 MiB download arrives intact, an upload of full-size segments
// with DF crosses the tunnel (it adds no byte), and a download survives
// both agents being killed and restarted in the middle (the kernel keeps
// restoring). On both ports.
func TestTunnelToHosts(t *testing.T) {
	drivers(t, func(t *testing.T, build func(string, int) *LB) { testTunnelToHosts(t, build("tn", 2), "tunnel") })
}

// TestIPIPToHosts: the same with an ipip VIP, whose packets the hosts'
// agents unwrap in XDP (no ipip module needed).
func TestIPIPToHosts(t *testing.T) {
	drivers(t, func(t *testing.T, build func(string, int) *LB) { testTunnelToHosts(t, build("in", 2), "ipip") })
}

// longDownload starts a SHA-256-checked download of n bytes from the VIP,
// served at pace bytes a second, as a process of its own (not bounded by
// Exec's minute: a download across a restart waits out TCP's
// retransmission back-off) and returns a channel for its result, within
// bound.
func longDownload(t *testing.T, lb *LB, n, pace int64, bound time.Duration) chan ClientResult {
	t.Helper()
	return clientProc(t, lb, "download", fmt.Sprintf("http://192.0.2.10/bytes?n=%d&pace=%d", n, pace), 1, 1, bound)
}

// clientProc runs the client role (conns requests of url, par at a
// time) as a process of its own and returns a channel for its result,
// within bound.
func clientProc(t *testing.T, lb *LB, name, url string, conns, par int, bound time.Duration) chan ClientResult {
	t.Helper()
	p, err := lb.Start(lb.Client, name, RoleCommand("client", url, fmt.Sprint(conns), fmt.Sprint(par)), Self())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Stop)
	done := make(chan ClientResult, 1)
	go func() {
		var r ClientResult
		if err := p.Wait(bound); err != nil {
			r = ClientResult{Errors: 1, FirstErr: err.Error()}
		} else if err := json.Unmarshal([]byte(lastLine(p.Output())), &r); err != nil {
			r = ClientResult{Errors: 1, FirstErr: err.Error()}
		}
		done <- r
	}()
	return done
}

// startTunnelUnit builds the hosts' side (certificates naming their
// tunnel addresses, the VIP on their loopback, HTTP servers on port 80)
// and starts a unit whose VIP web (192.0.2.10:80) has mode mode toward
// the tunnel addresses, with extra VIPs appended, and an agent on each
// host.
func startTunnelUnit(t *testing.T, lb *LB, mode, extra string) (*runningUnit, string, []*Proc) {
	t.Helper()
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	if err := lb.StartBackends(80); err != nil { // the tunnel keeps the VIP's port
		t.Fatal(err)
	}
	u, agents := startHostsUnit(t, lb, dir, mode, extra, func(certs string, i int, id uint32) *Proc {
		return tunnelAgent(t, lb, dir, certs, i, id)
	})
	return u, dir, agents
}

// hostCerts makes, in certs, the certificates of unit tether and of
// hosts 1, 2, ..., host i+1 naming the tunnel addresses addrs[i] ("A" or
// "A,B").
func hostCerts(t *testing.T, certs string, addrs ...string) {
	t.Helper()
	args := []string{"certs", "--dir", certs, "--unit", "tether"}
	for i, a := range addrs {
		args = append(args, "--host", fmt.Sprintf("%d=%s", i+1, a))
	}
	if out, err := exec.Command(tetherd, args...).CombinedOutput(); err != nil {
		t.Fatalf("tetherd %v: %v\n%s", args, err, out)
	}
}

// hostsNet is the family of the VIP startHostsUnitOn makes, 192.0.2.10
// or l7VIP6, of port 80, whose backends are the hosts' tunnel addresses
// of that family.
type hostsNet struct {
	vip string
	v6  bool
}

var (
	hostsIPv4 = hostsNet{vip: "192.0.2.10"}
	hostsIPv6 = hostsNet{vip: l7VIP6, v6: true}
)

// resyncedTo reports whether uv is of a unit boot other than oldBoot
// whose n hosts' streams are up with every change acknowledged (and,
// with full, after a full resync).
func resyncedTo(uv *unit.StreamsView, oldBoot uint64, n int, full bool) bool {
	if uv.Boot == oldBoot || len(uv.Streams) != n {
		return false
	}
	for _, h := range uv.Streams {
		if h.State != unit.StreamUp || h.Acked != h.Seq || full && h.Resync != "full" {
			return false
		}
	}
	return true
}

// eachHostsNet runs f as a subtest per family, named ipv4 and ipv6.
func eachHostsNet(t *testing.T, f func(t *testing.T, n hostsNet)) {
	for _, n := range []hostsNet{hostsIPv4, hostsIPv6} {
		name := "ipv4"
		if n.v6 {
			name = "ipv6"
		}
		t.Run(name, func(t *testing.T) { f(t, n) })
	}
}

// vipPort is the VIP's address and port, as a listener names them.
func (n hostsNet) vipPort() string { return net.JoinHostPort(n.vip, "80") }

// url is the VIP's URL, without a path.
func (n hostsNet) url() string {
	if n.v6 {
		return "http://[" + n.vip + "]"
	}
	return "http://" + n.vip
}

// client is the client's address of the family.
func (n hostsNet) client() string {
	if n.v6 {
		return ClientAddr6
	}
	return ClientAddr
}

// hostAddr is backend i's tunnel address of the family, the VIP's
// backend.
func (n hostsNet) hostAddr(lb *LB, i int) string {
	if n.v6 {
		return tunnelAddr6(lb, i)
	}
	return tunnelAddr(lb, i)
}

// tunnelAddrs are backend i's tunnel addresses (a YAML list's items):
// both families' for an IPv6 VIP, whose hosts' streams run over IPv4.
func (n hostsNet) tunnelAddrs(lb *LB, i int) string {
	if n.v6 {
		return fmt.Sprintf("%s, \"%s\"", tunnelAddr(lb, i), tunnelAddr6(lb, i))
	}
	return tunnelAddr(lb, i)
}

// startHostsUnit is startTunnelUnit in dir, with the hosts' agents
// started by agent.
func startHostsUnit(t *testing.T, lb *LB, dir, mode, extra string, agent func(certs string, i int, id uint32) *Proc) (*runningUnit, []*Proc) {
	t.Helper()
	return startHostsUnitOn(t, lb, dir, hostsIPv4, mode, extra, agent)
}

// startHostsUnitOn is startHostsUnit with a VIP of n's family (for
// IPv6, after AddIPv6).
func startHostsUnitOn(t *testing.T, lb *LB, dir string, n hostsNet, mode, extra string, agent func(certs string, i int, id uint32) *Proc) (*runningUnit, []*Proc) {
	t.Helper()
	certs := filepath.Join(dir, "certs")
	ip, prefix, gw, address6 := []string{"ip"}, "/32", "10.0.0.254", ""
	var nodad []string
	if n.v6 {
		ip, prefix, gw, nodad = []string{"ip", "-6"}, "/128", switchedNet6+"fe", []string{"nodad"}
		address6 = fmt.Sprintf("  address6: \"%s\"\n", lb.UnitIP6())
		hostCerts(t, certs, tunnelAddr(lb, 0)+","+tunnelAddr6(lb, 0), tunnelAddr(lb, 1)+","+tunnelAddr6(lb, 1))
	} else {
		hostCerts(t, certs, tunnelAddr(lb, 0), tunnelAddr(lb, 1))
	}
	for _, ns := range lb.Backends {
		// The VIP is the hosts' own: they answer the client from it.
		if err := lb.Run(ns, append(append(ip, "addr", "add", n.vip+prefix, "dev", "lo"), nodad...)...); err != nil {
			t.Fatal(err)
		}
		if lb.Driver != "tun" {
			// On the switched topology the hosts answer by way of the
			// router, not through the unit's machine at all.
			if err := lb.Run(ns, append(ip, "route", "replace", "default", "via", gw)...); err != nil {
				t.Fatal(err)
			}
		}
	}
	cfg := fmt.Sprintf(`unit:
  name: tether
  address4: %s
%sforwarder:
  port: {driver: %s, interface: %s%s}
  flows: {timeouts: {tcp_fin: 3s, tcp_closed: 3s}}
vips:
  - name: web
    address: "%s"
    port: 80
    protocol: tcp
    mode: %s
    backends:
      - {name: b0, address: "%s"}
      - {name: b1, address: "%s"}
%shosts:
  listen: "0.0.0.0:7320"
  tls: {ca: %s, cert: %s, key: %s}
`, lb.UnitIP, address6, lb.Driver, lb.UnitIf, pinDir(lb), n.vip, mode, n.hostAddr(lb, 0), n.hostAddr(lb, 1), extra,
		filepath.Join(certs, "ca.crt"), filepath.Join(certs, "unit-tether.crt"), filepath.Join(certs, "unit-tether.key"))
	u := startUnit(t, lb, cfg)
	agents := []*Proc{agent(certs, 0, 1), agent(certs, 1, 2)}
	waitStreamsUp(t, u, 2)
	return u, agents
}

func testTunnelToHosts(t *testing.T, lb *LB, mode string) {
	// A UDP VIP of the same mode, for datagrams larger than the links.
	extra := fmt.Sprintf(`  - name: dns
    address: 192.0.2.10
    port: 53
    protocol: udp
    mode: %s
    backends:
      - {name: b0, address: %s}
      - {name: b1, address: %s}
`, mode, tunnelAddr(lb, 0), tunnelAddr(lb, 1))
	u, dir, agents := startTunnelUnit(t, lb, mode, extra)
	certs := filepath.Join(dir, "certs")
	var uv unit.StreamsView

	if got := curl(t, lb, "http://192.0.2.10/"); !strings.HasPrefix(got, "b") {
		t.Fatalf("curl through the tunnel VIP got %q", got)
	}
	res := client(t, lb, "http://192.0.2.10/", 200, 8)
	if res.Errors != 0 || res.Backends["b0"] == 0 || res.Backends["b1"] == 0 {
		t.Fatalf("200 connections through the tunnel: %+v", res)
	}
	const size = 32 << 20
	want := PayloadSHA256(size)
	if r := client(t, lb, fmt.Sprintf("http://192.0.2.10/bytes?n=%d", size), 1, 1); r.Errors != 0 || r.SHA256 != want {
		t.Fatalf("32 MiB through the tunnel: %+v", r)
	}

	// An upload: full-size segments (1500 bytes, DF) cross the flow-ID
	// tunnel, which adds nothing to them (ipip clamps the MSS by its 20
	// bytes, and its segments are nearly as large).
	upload := filepath.Join(dir, "upload")
	f, err := os.Create(upload)
	if err != nil {
		t.Fatal(err)
	}
	if err := Payload(f, 20<<20); err != nil {
		t.Fatal(err)
	}
	f.Close()
	before := u.report()
	out, err := lb.Exec(lb.Client, "curl", "-sS", "--max-time", "60", "--data-binary", "@"+upload, "http://192.0.2.10/upload")
	if want := fmt.Sprintf("%d %s", 20<<20, PayloadSHA256(20<<20)); err != nil || strings.TrimSpace(out) != want {
		t.Fatalf("20 MiB upload through the tunnel: %v: %q, want %q", err, out, want)
	}
	after := u.report()
	var pkts, bytes uint64
	for i := range after.Backends {
		pkts += after.Backends[i].Packets - before.Backends[i].Packets
		bytes += after.Backends[i].Bytes - before.Backends[i].Bytes
	}
	if pkts == 0 || bytes/pkts < 1400 {
		t.Errorf("the upload crossed in %d packets of %d bytes on average: want full-size ones", pkts, bytes/max(pkts, 1))
	}
	if d := nonZero(after.Drops); d["too_big"] != 0 {
		t.Errorf("drops %v", d)
	}

	// Datagrams larger than the links. Their fragments carry no ports
	// for a flow ID (tunnel), and do not fit the links with an outer
	// header: the unit cuts each again and sends the pieces IP-in-IP,
	// which the agents' XDP program unwraps (no ipip module on these
	// kernels); the hosts' kernels reassemble the clients' datagrams.
	// The upload's too-big answers taught the client the tunnel's MTU:
	// it forgets it, so that its fragments are as large as its link
	// allows.
	if err := lb.Run(lb.Client, "ip", "route", "flush", "cache"); err != nil {
		t.Fatal(err)
	}
	if err := lb.StartServers("udpecho", "[::]:53"); err != nil {
		t.Fatal(err)
	}
	before = u.report()
	large := udpClientRun(t, lb, "192.0.2.10:53", 20, 2, udpLarge, "sum", udpTries)
	t.Logf("large datagrams through the agents' hosts: %+v", large)
	checkUDP(t, large, mode, ClientAddr)
	after = u.report()
	if n := after.TooBigFragmented - before.TooBigFragmented; n == 0 {
		t.Errorf("the unit sent no packet in fragments")
	}
	if d := nonZero(after.Drops); d["too_big"]+d["no_buffer"] != 0 {
		t.Errorf("drops %v", d)
	}

	if mode == "tunnel" {
		// Ended flows age out of the unit (3 s here), and their
		// mappings out of the hosts' kernels.
		hostTotal := func() int {
			n := 0
			for i := range lb.Backends {
				out, err := lb.Exec(lb.Backends[i], agentBin(), "--socket", filepath.Join(dir, fmt.Sprintf("agent-b%d.sock", i)), "tunnel", "mappings", "--limit", "1", "-o", "json")
				var v struct{ Total int }
				if err != nil || json.Unmarshal([]byte(out), &v) != nil {
					t.Fatalf("tether-agent tunnel mappings: %v\n%s", err, out)
				}
				n += v.Total
			}
			return n
		}
		var held, kernels int
		eventually(t, "ended flows' mappings gone from the hosts", func() bool {
			uv = unitStreams(t, u)
			held = 0
			for _, h := range uv.Streams {
				if h.Acked != h.Seq {
					return false
				}
				held += h.Mappings
			}
			kernels = hostTotal()
			return uv.Tunnel.Removed >= 200 && kernels == held
		}, func() string {
			return fmt.Sprintf("%s\nthe hosts' kernels hold %d, the unit says %d", jsonText(uv), kernels, held)
		})
	}

	// Both agents die in the middle of a download and come back.
	sent := func() (n uint64) {
		for _, b := range u.report().Backends {
			n += b.Bytes
		}
		return n
	}
	// A download long enough to be caught in the middle: 32 MiB served
	// at 16 MiB a second.
	const long, pace = 32 << 20, 16 << 20
	sentBefore := sent()
	done := longDownload(t, lb, long, pace, 3*time.Minute)
	// The client's side carries only acknowledgements (about 70 KB of
	// them for 100 MiB): 10 KB of them mean the download is under way.
	// state says where a download's packets stop: the unit's drops and
	// tunnel counters, each agent's tunnel and each host's connections.
	state := func() string {
		out, err := u.ctl("stats", "-o", "json")
		var r unit.Report
		if err == nil {
			err = json.Unmarshal([]byte(out), &r)
		}
		if err != nil {
			out = fmt.Sprintf("unit: %v", err)
		} else {
			out = fmt.Sprintf("unit: held %d, drops %v, tunnel %s", r.HeldForHost, nonZero(r.Drops), jsonText(unitStreams(t, u).Tunnel))
		}
		for i := range lb.Backends {
			o, _ := lb.Exec(lb.Backends[i], agentBin(), "--socket", filepath.Join(dir, fmt.Sprintf("agent-b%d.sock", i)), "tunnel")
			ss, _ := lb.Exec(lb.Backends[i], "ss", "-tni")
			out += "\n" + o + "\n" + ss
		}
		ss, _ := lb.Exec(lb.Client, "ss", "-tni")
		return out + "\nclient:\n" + ss
	}
	eventually(t, "the download under way", func() bool { return sent()-sentBefore > 10<<10 }, state)
	select {
	case r := <-done:
		t.Fatalf("the download ended before the agents were killed: %+v", r)
	default:
	}
	for _, a := range agents {
		if err := a.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		a.Wait(10 * time.Second)
	}
	// Restarted: each stops with the test.
	agents = []*Proc{tunnelAgent(t, lb, dir, certs, 0, 1), tunnelAgent(t, lb, dir, certs, 1, 2)}
	select {
	case r := <-done:
		if r.Errors != 0 || r.SHA256 != PayloadSHA256(long) {
			t.Fatalf("a download across the agents' restart: %+v", r)
		}
	case <-time.After(3 * time.Minute):
		t.Fatal("the download across the agents' restart did not end")
	}
	// New connections work with the restarted agents (mappings pushed
	// to them after their full resync).
	if res := client(t, lb, "http://192.0.2.10/", 100, 8); res.Errors != 0 {
		t.Fatalf("after the agents' restart: %+v", res)
	}

	// Flows the restarted unit made before it heard from their hosts
	// (none after).
	var noHost uint64
	if mode == "tunnel" {
		// The control process alone is killed in the middle of a
		// download: the forwarder keeps the flow, and the new control
		// process, which adopts it, makes every host's set its
		// inventory's before it answers the hosts, so the download's
		// mapping survives the hosts' full resync to the new boot.
		oldBoot := unitStreams(t, u).Boot
		fwd := u.forwarderPID()
		sentBefore = sent()
		done = longDownload(t, lb, long, pace, 3*time.Minute)
		eventually(t, "the download under way", func() bool { return sent()-sentBefore > 10<<10 }, func() string { return "" })
		if err := u.proc.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		u.proc.Exited(10 * time.Second)
		u.start()
		if u.forwarderPID() != fwd || !strings.Contains(u.proc.Output(), "adopted the running forwarder") {
			t.Fatalf("the control process did not adopt forwarder %d:\n%s", fwd, u.proc.Output())
		}
		eventually(t, "the hosts resynced to the new control process", func() bool {
			uv = unitStreams(t, u)
			return resyncedTo(&uv, oldBoot, 2, true)
		}, func() string { return jsonText(uv) })
		select {
		case r := <-done:
			if r.Errors != 0 || r.SHA256 != PayloadSHA256(long) {
				t.Fatalf("a download across the control process's restart: %+v", r)
			}
		case <-time.After(3 * time.Minute):
			t.Fatal("the download across the control process's restart did not end")
		}

		// The whole unit restarts in the middle of a download while
		// the hosts' agents are stopped (SIGSTOP): its new forwarder
		// makes the connection's flow again (with a new flow ID)
		// before the new unit has heard from any host, so before it
		// knows which host holds the flow's backend. The flow's
		// mapping must reach its host when the host's stream begins
		// (in its resync), and the hosts' sets become the new unit's.
		sentBefore = sent()
		done = longDownload(t, lb, long, pace, 3*time.Minute)
		eventually(t, "the download under way", func() bool { return sent()-sentBefore > 10<<10 }, func() string { return "" })
		oldBoot = unitStreams(t, u).Boot
		for _, a := range agents {
			if err := a.Signal(syscall.SIGSTOP); err != nil {
				t.Fatal(err)
			}
		}
		resumed := false
		resume := func() {
			if !resumed {
				resumed = true
				for _, a := range agents {
					a.Signal(syscall.SIGCONT)
				}
			}
		}
		defer resume()
		u.proc.Stop()
		u.start()
		eventually(t, "the restarted unit to make the download's flow without knowing its host", func() bool {
			noHost = unitStreams(t, u).Tunnel.NoHost
			return noHost > 0
		}, state)
		resume()
		var r ClientResult
		select {
		case r = <-done:
		case <-time.After(30 * time.Second):
			// Slow: what the packets meet now, while the client waits.
			t.Logf("the download across the unit's restart, still running after 30 s:\n%s", state())
			r = <-done
		}
		if r.Errors != 0 || r.SHA256 != PayloadSHA256(long) {
			t.Fatalf("a download across the unit's restart: %+v\n%s", r, state())
		}
		eventually(t, "the hosts to hold the restarted unit's mappings", func() bool {
			uv = unitStreams(t, u)
			return resyncedTo(&uv, oldBoot, 2, false) && uv.Tunnel.Published > 0
		}, func() string { return jsonText(uv) })
	}

	r := u.report()
	var fwd, replies uint64
	for _, b := range r.Backends {
		fwd += b.Packets
		replies += b.ReplyPackets
	}
	if fwd == 0 || replies != 0 {
		t.Errorf("the unit forwarded %d packets to the hosts and %d replies: want replies direct from the hosts", fwd, replies)
	}
	uv = unitStreams(t, u)
	if (mode == "tunnel") != (uv.Tunnel.Published > 0) || uv.Tunnel.NoHost != noHost {
		t.Errorf("%s VIP's tunnel mappings: %+v", mode, uv.Tunnel)
	}
	if mode == "tunnel" {
		// The hosts list what their kernels hold: at least the
		// connection a held client keeps open, by its real addresses.
		hold, err := lb.Start(lb.Client, "held connections", RoleCommand("holdconns", "192.0.2.10:80", "4", filepath.Join(dir, "hold")), Self())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(hold.Stop)
		if err := hold.WaitFor("connected", 20*time.Second); err != nil {
			t.Fatal(err)
		}
		found := 0
		for i := range lb.Backends {
			out, err := lb.Exec(lb.Backends[i], agentBin(), "--socket", filepath.Join(dir, fmt.Sprintf("agent-b%d.sock", i)), "tunnel", "mappings", "-o", "json")
			var v struct {
				Mappings []struct{ Client, VIP, Proto string }
			}
			if err != nil || json.Unmarshal([]byte(out), &v) != nil {
				t.Fatalf("tether-agent tunnel mappings: %v\n%s", err, out)
			}
			for _, m := range v.Mappings {
				if strings.HasPrefix(m.Client, ClientAddr+":") && m.VIP == "192.0.2.10:80" && m.Proto == "tcp" {
					found++
				}
			}
		}
		if found < 4 {
			t.Errorf("the hosts list %d mappings of the client's connections, want at least the 4 held open", found)
		}
		if err := os.WriteFile(filepath.Join(dir, "hold"), nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := hold.Wait(30 * time.Second); err != nil {
			t.Errorf("the held connections' second requests: %v\n%s", err, hold.Output())
		}
	}
	if d := nonZero(r.Drops); d["mapping_timeout"] != 0 {
		t.Errorf("drops %v: a flow's host never confirmed its mapping", d)
	}
	out, _ = u.ctl("streams")
	t.Logf("tetherctl streams:\n%s", out)
}

// TestMeasureTunnelConnect measures what the tunnel's mapping costs a new
// connection: a tunnel flow's SYN waits in the unit until its host has
// acknowledged the flow's mapping. Connections to the tunnel VIP and to
// a halfnat VIP of the same hosts (no mapping, no wait) alternate, one
// at a time, in the same run. It is a measurement, run when asked
// (TETHER_MEASURE=1; bench/RESULTS.md has its numbers), and asserts no
// duration.
func TestMeasureTunnelConnect(t *testing.T) {
	if os.Getenv("TETHER_MEASURE") == "" {
		t.Skip("a measurement: set TETHER_MEASURE=1")
	}
	lb := newLB(t, "tm", 2, NewLB)
	halfnat := fmt.Sprintf(`  - name: plain
    address: 192.0.2.11
    port: 80
    protocol: tcp
    mode: halfnat
    backends:
      - {name: b0, address: %s}
      - {name: b1, address: %s}
`, lb.BackendIP(0), lb.BackendIP(1))
	startTunnelUnit(t, lb, "tunnel", halfnat)
	out, err := lb.Exec(lb.Client, append([]string{"env"}, append(RoleCommand("connlat", "3000", "192.0.2.10:80", "192.0.2.11:80"), Self())...)...)
	if err != nil {
		t.Fatalf("connlat: %v\n%s", err, out)
	}
	var res []ConnLatency
	if err := json.Unmarshal([]byte(out), &res); err != nil || len(res) != 2 {
		t.Fatalf("connlat: %v\n%s", err, out)
	}
	for _, r := range res {
		if r.Errors != 0 {
			t.Errorf("%s: %d connections failed", r.Addr, r.Errors)
		}
		t.Logf("%s: %d connections, p50 %.0f µs, p99 %.0f µs, max %.0f µs", r.Addr, r.Count, r.P50, r.P99, r.Max)
	}
	// What a mapping costs per new flow, as a rate: 16 clients open
	// 4000 connections (an HTTP request each) to either VIP, in turns.
	for round := range 2 {
		for _, vip := range []string{"192.0.2.10", "192.0.2.11"} {
			start := time.Now()
			r := client(t, lb, "http://"+vip+"/", 4000, 16)
			d := time.Since(start)
			t.Logf("round %d, %s: %d connections in %v (%.0f/s), %d errors", round, vip, 4000-r.Errors, d.Round(time.Millisecond), 4000/d.Seconds(), r.Errors)
		}
	}
}
