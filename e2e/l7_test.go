package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tetherlb/tether/agent"
	"github.com/tetherlb/tether/api/unit"
)

// l7Rules are the rules of the l7 VIP in the system tests: b0 is a Go
// server that takes migrated connections through the agent's listener
// shim, b1 an nginx that gets them spliced with a PROXY v2 header.
const l7Rules = `l7
    l7:
      rules:
        - {name: path-b1, path_prefix: /b1/, backends: [b1]}
        - {name: path-b0, path_prefix: /b0/, backends: [b0]}
        - {name: host-b0, host: zero.example, backends: [b0]}
        - {name: cookie-b1, cookie: {name: backend, value: b1}, backends: [b1]}`

// l7Hosts starts what the hosts run for the l7 VIP: on b0 a Go HTTP
// server whose listener is the agent's shim, on b1 nginx on loopback
// with proxy_protocol, answering "b1 <the client's address>"; and each
// host's agent with its hand-off configuration. It returns the agents'
// hand-off sockets.
func l7Hosts(t *testing.T, lb *LB, dir string) []string {
	t.Helper()
	socks := []string{filepath.Join(dir, "handoff-b0.sock"), filepath.Join(dir, "handoff-b1.sock")}
	nginx := filepath.Join(dir, "nginx")
	if err := os.MkdirAll(nginx, 0o755); err != nil {
		t.Fatal(err)
	}
	conf := fmt.Sprintf(`daemon off;
master_process off;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log;
events {}
http {
  access_log off;
  client_body_temp_path %[1]s/body;
  proxy_temp_path %[1]s/proxy;
  fastcgi_temp_path %[1]s/fastcgi;
  uwsgi_temp_path %[1]s/uwsgi;
  scgi_temp_path %[1]s/scgi;
  server {
    listen 127.0.0.1:8080 proxy_protocol;
    location / { default_type text/plain; add_header X-Backend b1; return 200 "b1 $proxy_protocol_addr\n"; }
  }
}
`, nginx)
	if err := os.WriteFile(filepath.Join(nginx, "nginx.conf"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := lb.Start(lb.Backends[1], "nginx b1", nil, "nginx", "-e", filepath.Join(nginx, "error.log"), "-c", filepath.Join(nginx, "nginx.conf"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Stop)
	eventually(t, "nginx listening", func() bool {
		_, err := lb.Exec(lb.Backends[1], "bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/8080")
		return err == nil
	}, func() string { b, _ := os.ReadFile(filepath.Join(nginx, "error.log")); return p.Output() + string(b) })
	return socks
}

// l7Agent starts backend i's agent with the tunnel's host side for n's
// VIP and its hand-off: the shim socket, and on b1 the splice to nginx.
func l7Agent(t *testing.T, lb *LB, dir string, n hostsNet, certs string, i int, id uint32, sock string) *Proc {
	t.Helper()
	return tunnelAgentAt(t, lb, dir, certs, i, id, n.tunnelAddrs(lb, i), l7Migration(i, sock, n.vipPort()))
}

// l7Migration is backend i's agent's migration section: the shim
// socket, and on b1 the splice of vip (address:port) to nginx.
func l7Migration(i int, sock, vip string) string {
	migration := fmt.Sprintf("migration:\n  enabled: true\n  handoff_socket: %s\n", sock)
	if i == 1 {
		migration += fmt.Sprintf("  splice:\n    - {vip: \"%s\", to: \"127.0.0.1:8080\", proxy_protocol: v2}\n", vip)
	}
	return migration
}

// listensFor reports whether a host's listeners (unit.HostStream's)
// take vip: it, or an unspecified address at its port, or any.
func listensFor(listeners []string, vip string) bool {
	_, port, _ := strings.Cut(vip, ":")
	for _, l := range listeners {
		if l == vip || l == "*" || l == "0.0.0.0:"+port || l == "[::]:"+port {
			return true
		}
	}
	return false
}

// startShimHTTP starts b0's Go HTTP server on the agent's listener shim
// and waits until the agent (whose API socket is in dir) lists it.
func startShimHTTP(t *testing.T, lb *LB, dir, sock string) *Proc {
	t.Helper()
	return startShimHTTPOn(t, lb, dir, sock, "192.0.2.10:80")
}

// startShimHTTPOn is startShimHTTP listening on vip (address:port).
func startShimHTTPOn(t *testing.T, lb *LB, dir, sock, vip string) *Proc {
	t.Helper()
	p, err := lb.Start(lb.Backends[0], "shim httpd b0", RoleCommand("shimhttpd", "b0", vip, sock), Self())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Stop)
	if err := p.WaitFor(Ready, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	var v agent.MigrationsView
	eventually(t, "the agent lists b0's shim", func() bool {
		v = agentMigrations(t, lb, 0, filepath.Join(dir, "agent-b0.sock"))
		return len(v.Shims) == 1
	}, func() string { return jsonText(v) + p.Output() })
	return p
}

// agentMigrations reads backend i's agent's migrations view.
func agentMigrations(t *testing.T, lb *LB, i int, socket string) agent.MigrationsView {
	t.Helper()
	return agentView[agent.MigrationsView](t, lb, i, socket, "migrations")
}

// unitL7 reads the unit's l7 view.
func unitL7(t *testing.T, u *runningUnit) unit.L7View {
	t.Helper()
	return ctlView[unit.L7View](t, u, "l7")
}

// checkL7Routing checks the l7 VIP of n's family that l7Hosts and
// l7Rules set up: curl's requests land where the rules on path, host and
// cookie say, on both hand-over paths (nginx on b1 sees the client's
// address); Go clients, a connection each, spread over both hosts; and
// a download of size bytes arrives intact with no reply through the
// unit.
func checkL7Routing(t *testing.T, lb *LB, u *runningUnit, n hostsNet, size int) {
	t.Helper()
	url := n.url()
	get := func(args ...string) (string, error) {
		return lb.Exec(lb.Client, append([]string{"curl", "-sS", "--max-time", "20"}, args...)...)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{url + "/b0/x"}, "b0"},
		{[]string{url + "/b1/x"}, "b1 " + n.client()},
		{[]string{"-H", "Host: zero.example", url + "/"}, "b0"},
		{[]string{"--cookie", "backend=b1", url + "/"}, "b1 " + n.client()},
	} {
		out, err := get(c.args...)
		if err != nil || strings.TrimSpace(out) != c.want {
			t.Fatalf("curl %v: %v: got %q, want %q\n%s", c.args, err, out, c.want, jsonText(unitL7(t, u)))
		}
	}
	res := client(t, lb, url+"/", 100, 4)
	b1 := 0
	for name, n := range res.Backends {
		if strings.HasPrefix(name, "b1") {
			b1 += n
		}
	}
	if res.Errors != 0 || res.Backends["b0"] == 0 || b1 == 0 {
		t.Fatalf("100 connections through the l7 VIP: %+v", res)
	}
	before := u.report()
	out, err := lb.Exec(lb.Client, "bash", "-c",
		fmt.Sprintf("curl -sS --max-time 60 -H 'Host: zero.example' '%s/bytes?n=%d' | sha256sum", url, size))
	if err != nil || strings.Fields(out)[0] != PayloadSHA256(int64(size)) {
		t.Fatalf("%d MiB through a migrated connection: %v: %q", size>>20, err, out)
	}
	after := u.report()
	var fwd, replies uint64
	for i, b := range after.Backends {
		fwd += b.Packets - before.Backends[i].Packets
		replies += b.ReplyPackets - before.Backends[i].ReplyPackets
	}
	if fwd == 0 || replies != 0 {
		t.Errorf("the unit forwarded %d packets to the hosts and %d replies: want replies direct from the hosts", fwd, replies)
	}
}

// TestL7Migration: an l7 VIP's acceptor takes each connection, reads its
// first request, chooses the host by the rules, and migrates the live
// connection there; the host's kernel continues it and answers the
// client directly, on both ports. Both hand-over paths (a Go server on the listener
// shim, nginx behind the agent's splice with PROXY v2), rules on path,
// host and cookie, a 32 MiB download, a keep-alive connection's second
// request, the ends of connections, a host with no application, and an
// upload whose segments arrive before the host is done.
func TestL7Migration(t *testing.T) {
	drivers(t, func(t *testing.T, build func(string, int) *LB) { testL7Migration(t, build("l7", 2)) })
}

func testL7Migration(t *testing.T, lb *LB) {
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	socks := l7Hosts(t, lb, dir)
	u, agents := startHostsUnit(t, lb, dir, l7Rules, "", func(certs string, i int, id uint32) *Proc {
		return l7Agent(t, lb, dir, hostsIPv4, certs, i, id, socks[i])
	})
	shim := startShimHTTP(t, lb, dir, socks[0])

	checkL7Routing(t, lb, u, hostsIPv4, 32<<20)
	get := func(args ...string) (string, error) {
		return lb.Exec(lb.Client, append([]string{"curl", "-sS", "--max-time", "20"}, args...)...)
	}

	// A keep-alive connection: the first request decides; the second,
	// which a rule sends elsewhere, reaches the same host.
	out, err := get("http://192.0.2.10/b0/first", "http://192.0.2.10/b1/second")
	if err != nil || out != "b0\nb0\n" {
		t.Fatalf("two requests on one connection: %v: %q, want both answered by b0", err, out)
	}

	// Connections end on their hosts; the hosts tell the unit, which
	// removes their routes.
	var v unit.L7View
	eventually(t, "every migrated connection ended", func() bool {
		v = unitL7(t, u)
		return v.Live == 0 && v.Stats.Ended > 0
	}, func() string { return jsonText(v) })
	if v.Stats.UploadFailed != 0 {
		t.Errorf("uploads failed: %s", jsonText(v))
	}

	// Every host tells the unit it listens for the VIP: b0 through its
	// application's shim, b1 through its splice.
	var sv unit.StreamsView
	listening := func() (n, deaf int) {
		sv = unitStreams(t, u)
		for _, h := range sv.Streams {
			switch {
			case listensFor(h.Listeners, "192.0.2.10:80"):
				n++
			case h.Listeners != nil:
				deaf++
			}
		}
		return n, deaf
	}
	eventually(t, "both hosts listening for the VIP", func() bool { n, _ := listening(); return n == 2 },
		func() string { return jsonText(sv) })

	// No application on b0: its agent tells the unit, which sends the
	// connections b1 may take there alone.
	shim.Stop()
	eventually(t, "the unit told that nothing on b0 listens", func() bool { n, deaf := listening(); return n == 1 && deaf == 1 },
		func() string { return jsonText(sv) })
	res := client(t, lb, "http://192.0.2.10/", 20, 4)
	if res.Errors != 0 || res.Backends["b0"] != 0 {
		t.Fatalf("20 connections with nothing listening on b0: %+v", res)
	}
	// A request only b0 may take goes there all the same, as the last
	// resort: the upload fails, the host resets the client, and the
	// unit removes the route.
	if out, err := get("http://192.0.2.10/b0/x"); err == nil {
		t.Fatalf("a request to a host with no application succeeded: %q", out)
	} else if !strings.Contains(out+err.Error(), "reset") {
		t.Errorf("want a reset, got %v: %q", err, out)
	}
	eventually(t, "the failed upload reported", func() bool {
		v = unitL7(t, u)
		return v.Stats.UploadFailed == 1 && v.Live == 0
	}, func() string { return jsonText(v) })
	if v.Stats.NotListening != 1 {
		t.Errorf("connections sent to a host that said nothing listens: %d, want 1", v.Stats.NotListening)
	}

	// Early packets: b0's application is back, but its agent is
	// stopped (SIGSTOP), so the connection's state cannot reach the
	// host's kernel while the client's upload keeps coming: its segments
	// must wait in the forwarder (held_for_host), and arrive intact once
	// the agent goes on, recreates the connection and takes the flow's
	// mapping.
	shim = startShimHTTP(t, lb, dir, socks[0])
	upload := filepath.Join(dir, "upload")
	f, err := os.Create(upload)
	if err != nil {
		t.Fatal(err)
	}
	if err := Payload(f, 8<<20); err != nil {
		t.Fatal(err)
	}
	f.Close()
	before := u.report()
	if err := agents[0].Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stopped := true
	defer func() {
		if stopped {
			agents[0].Signal(syscall.SIGCONT)
		}
	}()
	up, err := lb.Start(lb.Client, "upload", nil, "curl", "-sS", "--max-time", "30", "-H", "Host: zero.example", "-H", "Expect:",
		"--data-binary", "@"+upload, "http://192.0.2.10/upload")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(up.Stop)
	var held uint64
	eventually(t, "the upload's packets waiting for the host", func() bool {
		held = u.report().HeldForHost - before.HeldForHost
		return held > 0
	}, func() string { return jsonText(unitL7(t, u)) })
	if err := agents[0].Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	stopped = false
	if err := up.Wait(time.Minute); err != nil {
		t.Fatalf("upload: %v\n%s", err, up.Output())
	}
	if want := fmt.Sprintf("%d %s", 8<<20, PayloadSHA256(8<<20)); strings.TrimSpace(up.Output()) != want {
		t.Fatalf("8 MiB upload whose first segments waited for the host: %q, want %q", up.Output(), want)
	}
	if v = unitL7(t, u); v.Stats.UploadFailed != 1 {
		t.Fatalf("the upload behind a stopped agent failed: %s", jsonText(v))
	}
	t.Logf("%d packets of the upload waited in the forwarder for the host", held)

	l7ControlKilled(t, lb, u, shim, dir)
}

// l7ControlKilled: the control process, where the acceptor runs, is
// SIGKILLed while a migrated connection's download is under way and
// while another connection is open, its handshake made, and its
// request not sent yet (as a browser's preconnection). The forwarder
// keeps the download's route and the host its mapping, so the download
// goes on while no control process runs; the new one adopts the
// forwarder, makes the hosts' mappings its inventory's (which holds the
// migrated connection's flow), and takes over the SYN cookie keys the
// workers made the other connection's handshake with, so that its
// request, sent after the restart, is taken, not reset. New
// connections migrate as before.
func l7ControlKilled(t *testing.T, lb *LB, u *runningUnit, shim *Proc, dir string) {
	t.Helper()
	goAhead := filepath.Join(dir, "preconnect-go")
	pre, err := lb.Start(lb.Client, "preconnect", RoleCommand("preconnect", "192.0.2.10:80", "/b1/x", goAhead), Self())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pre.Stop)
	if err := pre.WaitFor("connected", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	// 8 s at the pace: the restart and the hosts' resync take about one.
	const long, pace = 64 << 20, 8 << 20
	done := clientProc(t, lb, "download", fmt.Sprintf("http://192.0.2.10/b0/bytes?n=%d&pace=%d", long, pace), 1, 1, 3*time.Minute)
	if err := shim.WaitFor(fmt.Sprintf("serving %d bytes", long), 20*time.Second); err != nil {
		t.Fatalf("the download never reached b0's application: %v", err)
	}
	oldBoot := unitStreams(t, u).Boot
	fwd := u.forwarderPID()
	if err := u.proc.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	u.proc.Exited(10 * time.Second)
	select {
	case r := <-done:
		t.Fatalf("the download ended before the control process came back: %+v", r)
	default:
	}
	u.start()
	if u.forwarderPID() != fwd || !strings.Contains(u.proc.Output(), "adopted the running forwarder") {
		t.Fatalf("the control process did not adopt forwarder %d:\n%s", fwd, u.proc.Output())
	}
	var uv unit.StreamsView
	eventually(t, "the hosts resynced to the new control process", func() bool {
		uv = unitStreams(t, u)
		return resyncedTo(&uv, oldBoot, 2, false)
	}, func() string { return jsonText(uv) })
	select {
	case r := <-done:
		t.Fatalf("the download ended before the hosts resynced, which the test is about: %+v", r)
	default:
	}
	select {
	case r := <-done:
		if r.Errors != 0 || r.SHA256 != PayloadSHA256(long) {
			t.Fatalf("a migrated connection's download across the control process's restart: %+v", r)
		}
	case <-time.After(3 * time.Minute):
		t.Fatal("the download across the control process's restart did not end")
	}
	if err := os.WriteFile(goAhead, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := pre.Wait(time.Minute); err != nil || !strings.Contains(pre.Output(), "b1 "+ClientAddr+"\n") || lastLine(pre.Output()) != "answered 1 of 1" {
		t.Fatalf("a request on a connection made before the restart: %v: %q\n%s", err, pre.Output(), jsonText(unitL7(t, u)))
	}
	// New connections are accepted and migrated by the new process.
	for _, c := range []struct{ path, want string }{{"/b0/x", "b0"}, {"/b1/x", "b1 " + ClientAddr}} {
		out, err := lb.Exec(lb.Client, "curl", "-sS", "--max-time", "20", "http://192.0.2.10"+c.path)
		if err != nil || strings.TrimSpace(out) != c.want {
			t.Fatalf("after the control process's restart, curl %s: %v: %q, want %q", c.path, err, out, c.want)
		}
	}
	if v := unitL7(t, u); v.Stats.Migrated != 3 || v.Stats.Uploaded != v.Stats.Migrated || v.Stats.SYNKeysAdopted != 1 {
		t.Errorf("migrations after the restart: %s", jsonText(v))
	}
}

// l7FloodConnBytes bounds the acceptor's memory under a SYN flood: a
// SYN costs it nothing (its answer is a SYN cookie), so what it holds
// is the legitimate connections' request bytes, at most max_conns ×
// max_request; the flood adds nothing to either.
const l7FloodControlMiB = 128

// TestL7SYNFlood: SYNs from forged sources at the l7 VIP, at a rate the
// acceptor answers with SYN cookies, while a probe opens a legitimate
// connection every 100 ms: the acceptor keeps no state for the flood
// (its connections and bytes stay within what the probes need), the
// control process stays under its memory bound, and at least 90% of the
// probes complete (within 3 s: a SYN the flood crowded out is sent
// again after 1 s). With an IPv4 VIP and an IPv6 one, whose cookies
// cover a longer tuple.
func TestL7SYNFlood(t *testing.T) {
	Exclusive(t, floodExclusiveWait)
	eachHostsNet(t, testL7SYNFlood)
}

func testL7SYNFlood(t *testing.T, n hostsNet) {
	lb := newLB(t, "l7f", 2, NewLB)
	forged := "100.64.0.0/10"
	if n.v6 {
		if err := lb.AddIPv6(); err != nil {
			t.Fatal(err)
		}
		forged = "fd00:64::/64"
	}
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	socks := l7Hosts(t, lb, dir)
	u, _ := startHostsUnitOn(t, lb, dir, n, l7Rules, "", func(certs string, i int, id uint32) *Proc {
		return l7Agent(t, lb, dir, n, certs, i, id, socks[i])
	})
	startShimHTTPOn(t, lb, dir, socks[0], n.vipPort())
	// The unit's answers to the forged sources go to the client's
	// namespace, which drops them: nothing answers them.
	if err := lb.Run(lb.Router, "ip", "route", "add", forged, "via", n.client()); err != nil {
		t.Fatal(err)
	}
	const rate, secs = 5000, 8
	flood, err := lb.Start(lb.Client, "syn flood", RoleCommand("synflood", n.vipPort(), forged, fmt.Sprint(rate), fmt.Sprint(secs)), Self())
	if err != nil {
		t.Fatal(err)
	}
	pr, err := lb.Start(lb.Client, "probe", RoleCommand("probe", n.url()+"/b0/probe", "100", fmt.Sprint(secs), "3000"), Self())
	if err != nil {
		t.Fatal(err)
	}
	peakConns, peakBytes, maxBytes := 0, 0, 0
	for done := false; !done; {
		select {
		case <-pr.Done():
			done = true
		case <-time.After(200 * time.Millisecond):
		}
		for _, a := range unitL7(t, u).VIPs {
			peakConns, peakBytes, maxBytes = max(peakConns, a.Conns), max(peakBytes, a.Bytes), a.MaxBytes
		}
	}
	for _, p := range []*Proc{flood, pr} {
		if err := p.Wait(time.Minute); err != nil {
			t.Fatalf("%s: %v\n%s", p.Name, err, p.Output())
		}
	}
	var fr LoadResult
	var res ProbeResult
	if err := json.Unmarshal([]byte(lastLine(flood.Output())), &fr); err != nil {
		t.Fatalf("flood result: %v\n%s", err, flood.Output())
	}
	if err := json.Unmarshal([]byte(lastLine(pr.Output())), &res); err != nil {
		t.Fatalf("probe result: %v\n%s", err, pr.Output())
	}
	v := unitL7(t, u)
	rep := u.report()
	t.Logf("flood: %d SYNs in %.1f s; workers answered %d SYNs; acceptor: %s; peak %d connections, %d bytes (bound %d); forwarder drops %v",
		fr.Sent, fr.Seconds, rep.SYNAnswers, jsonText(v.VIPs[0].Counters), peakConns, peakBytes, maxBytes, nonZero(rep.Drops))
	// The workers answer the SYNs with the acceptor's cookie once they
	// hold its keys; the acceptor answers those punted before.
	if answered := rep.SYNAnswers + v.VIPs[0].Counters["syn_cookies_sent"]; answered < uint64(fr.Sent)/2 {
		t.Fatalf("the workers and the acceptor answered %d of %d SYNs (%d by the workers): the flood did not reach them, the test proves nothing",
			answered, fr.Sent, rep.SYNAnswers)
	}
	// The probes' connections are the only state: at most one probe's
	// worth per 100 ms in flight within its 3 s.
	if peakConns > 64 || peakBytes > maxBytes {
		t.Errorf("the acceptor held %d connections and %d bytes during the flood: want only the probes' (≤ 64) within %d bytes", peakConns, peakBytes, maxBytes)
	}
	for url, n := range res.Attempts {
		if ok := res.OK[url]; n == 0 || float64(ok) < 0.9*float64(n) {
			t.Errorf("%s: %d of %d legitimate connections completed during the flood, want at least 90%%; first error %s", url, ok, n, res.FirstErr)
		}
	}
	if t.Failed() {
		t.Logf("the machine now: a thread's wake-up takes %s", WakeTimes())
	}
	peak := peakRSSMiB(t, int(u.status()["control_pid"].(float64)))
	t.Logf("control process: peak resident memory %d MiB (bound %d MiB)", peak, l7FloodControlMiB)
	if peak > l7FloodControlMiB {
		t.Errorf("the control process reached %d MiB during the flood, over its %d MiB bound", peak, l7FloodControlMiB)
	}
}

// TestL7Router: the request router. An l7 VIP with handoff
// migrate-or-proxy has a host with an agent (b0), a host that runs the
// request router (b1), and two servers on a host without an agent (b2,
// ports 8080 and 8081) that only the router can reach. A request for b0
// migrates there; one for b2's servers migrates to the router, which
// routes every request of the connection by the rules (one keep-alive
// connection reaches both of b2's servers), from its own source
// address, over connections it reuses. With an IPv4 VIP and an IPv6 one.
func TestL7Router(t *testing.T) { eachHostsNet(t, testL7Router) }

func testL7Router(t *testing.T, n hostsNet) {
	lb := newLB(t, "l7r", 3, NewLB)
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	b2, listen := lb.BackendIP(2), "0.0.0.0:"
	// The router's source address, beside b1's own on its link.
	source, plen := "10.0.11.50", "/24"
	if n.v6 {
		if err := lb.AddIPv6(); err != nil {
			t.Fatal(err)
		}
		b2, listen = lb.BackendIP6(2), "[::]:"
		own := lb.BackendIP6(1)
		source, plen = own[:strings.LastIndex(own, ":")+1]+"50", "/64"
	}
	for _, s := range []struct{ name, port string }{{"b2a", "8080"}, {"b2b", "8081"}} {
		p, err := lb.Start(lb.Backends[2], "httpd "+s.name, RoleCommand("httpd", s.name, listen+s.port), Self())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(p.Stop)
		if err := p.WaitFor(Ready, 10*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	addr := []string{"ip", "addr", "add", source + plen, "dev", "e0"}
	if n.v6 {
		addr = append(addr, "nodad")
	}
	if err := lb.Run(lb.Backends[1], addr...); err != nil {
		t.Fatal(err)
	}
	socks := []string{filepath.Join(dir, "handoff-b0.sock"), filepath.Join(dir, "handoff-b1.sock")}
	mode := `l7
    l7:
      handoff: migrate-or-proxy
      routers: [b1]
      rules:
        - {name: to-a, path_prefix: /a/, backends: [b2a]}
        - {name: to-b, path_prefix: /b/, backends: [b2b]}
        - {name: to-b0, path_prefix: /b0/, backends: [b0]}`
	extra := fmt.Sprintf("      - {name: b2a, address: \"%s\", port: 8080}\n      - {name: b2b, address: \"%s\", port: 8081}\n", b2, b2)
	u, _ := startHostsUnitOn(t, lb, dir, n, mode, extra, func(certs string, i int, id uint32) *Proc {
		return tunnelAgentAt(t, lb, dir, certs, i, id, n.tunnelAddrs(lb, i), fmt.Sprintf("migration:\n  enabled: true\n  handoff_socket: %s\n", socks[i]))
	})
	startShimHTTPOn(t, lb, dir, socks[0], n.vipPort())
	routerSock := filepath.Join(dir, "router.sock")
	rt, err := lb.Start(lb.Backends[1], "router b1", nil, tetherd, "router", "--config", u.cfgPath, "--vip", "web", "--source", source,
		"--handoff-socket", socks[1], "--admin-socket", routerSock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(rt.Stop)
	var mv agent.MigrationsView
	eventually(t, "the agent lists the router's shim", func() bool {
		mv = agentMigrations(t, lb, 1, filepath.Join(dir, "agent-b1.sock"))
		return len(mv.Shims) == 1
	}, func() string { return jsonText(mv) + rt.Output() })

	get := func(args ...string) (string, error) {
		return lb.Exec(lb.Client, append([]string{"curl", "-sS", "--max-time", "20"}, args...)...)
	}
	// Migrated to the host with an agent, as before.
	url := n.url()
	if out, err := get(url + "/b0/x"); err != nil || strings.TrimSpace(out) != "b0" {
		t.Fatalf("/b0/x: %v: %q", err, out)
	}
	// One keep-alive connection, through the router, to both of b2's
	// servers: each request routed by the rules.
	out, err := get(url+"/a/x?peer", url+"/b/x?peer", url+"/a/x")
	if want := fmt.Sprintf("b2a %s\nb2b %s\nb2a\n", source, source); err != nil || out != want {
		t.Fatalf("three requests on one connection through the router: %v: %q, want %q\n%s", err, out, want, rt.Output())
	}
	// Many short client connections, few connections to the hosts.
	res := client(t, lb, url+"/a/x", 50, 4)
	if res.Errors != 0 || res.Backends["b2a"] != 50 {
		t.Fatalf("50 connections through the router: %+v", res)
	}
	conns, err := lb.Exec(lb.Backends[2], "ss", "-Htn", "state", "established", "( sport = :8080 )")
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(conns, "\n"); n == 0 || n > 8 {
		t.Errorf("b2a holds %d connections from the router after 52 requests on 51 client connections: want a few reused ones\n%s", n, conns)
	}
	v := unitL7(t, u)
	if v.Stats.Proxied != 51 || v.Stats.UploadFailed != 0 {
		t.Fatalf("unit: %s", jsonText(v.Stats))
	}
	// The router's own counters, from its admin socket.
	out, err = lb.Exec(lb.Backends[1], tetherctlBin(), "--socket", routerSock, "router", "-o", "json")
	var rs unit.RouterStats
	if err == nil {
		err = json.Unmarshal([]byte(out), &rs)
	}
	if err != nil || rs.ByBackend["web/b2a"].Requests != 52 || rs.ByBackend["web/b2b"].Requests != 1 || rs.HostReuses == 0 || len(rs.Ejected) != 0 {
		t.Fatalf("tetherctl router: %v: %s", err, out)
	}
	// A request no host with an agent can take and no router... the
	// router gone, migrate-or-proxy has nowhere to send b2's requests.
	rt.Stop()
	eventually(t, "the router's shim gone", func() bool {
		mv = agentMigrations(t, lb, 1, filepath.Join(dir, "agent-b1.sock"))
		return len(mv.Shims) == 0
	}, func() string { return jsonText(mv) })
	if out, err := get(url + "/a/x"); err == nil {
		t.Fatalf("with the router gone, /a/x got %q", out)
	}
}
