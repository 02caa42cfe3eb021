package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"text/template"
	"time"

	"github.com/tetherlb/tether/agent"
	"github.com/tetherlb/tether/api/unit"
	"github.com/tetherlb/tether/e2e"
)

// The l7 comparison (issue 14): HAProxy mode http beside Tether's l7 VIP,
// both routing by one path rule on the same switched topology, and the
// same backend program (serveL7) on every backend for both:
//
//   - HAProxy ends the client's connection, reads the request, and opens
//     its own connection to the backend the rule chooses (a new one for
//     every client connection's first request: http-reuse safe, its
//     default). nbthread 1, pinned to core 1.
//   - Tether's unit accepts the connection with SYN cookies, reads the
//     request, and migrates the live connection to the chosen host's
//     kernel (TCP_REPAIR); the host's agent hands it to the server's
//     listener shim and the host answers the client directly. The whole
//     unit, control process (where the acceptor runs) and forwarder
//     (worker on core 1), is pinned to core 1 with taskset: one core,
//     as HAProxy has.
//
// No PROXY protocol on either path: a migrated connection is the
// client's own, so the server sees the client's address without a
// header, and the Go server is the application itself rather than a
// splice to nginx (which would put the agent's splice, a second copy on
// the host, in Tether's path only). HAProxy's server connections carry
// HAProxy's address; send-proxy-v2 would give the server the client's
// too at the cost of a header per connection, which would only lower
// HAProxy's figures.
//
// The rule: paths under /big/ go to b0; everything else is balanced
// over all three (HAProxy round robin, Tether its default rule, which
// hashes the client).

// l7Rule is the path both peers route by.
const l7Rule = "/big/"

// l7Port is the port of the backends' server: the VIP's, since a
// migrated connection keeps the client's destination port.
const l7Port = 80

// tunnelAddr is backend i's tunnel address on the switched topology.
func tunnelAddr(i int) string { return fmt.Sprintf("10.0.0.%d", 100+i) }

const haproxyHTTPConfig = `global
  nbthread 1
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
frontend vip
  bind {{.VIP}}:80
  use_backend big if { path_beg {{.Rule}} }
  default_backend web
backend big
  server b0 {{index .Backends 0}}:{{.Port}}
backend web
  balance roundrobin
{{- range $i, $ip := .Backends}}
  server b{{$i}} {{$ip}}:{{$.Port}}
{{- end}}
`

const tetherL7Config = `unit: {name: tether, address4: {{.UnitIP}}}
admin: {socket: {{.Dir}}/admin.sock, run_dir: {{.Dir}}/run}
forwarder:
  port: {driver: {{.Driver}}, interface: {{.If}}{{if .PinDir}}, pin_dir: {{.PinDir}}{{end}}}
  cores: [1]
vips:
  - name: web
    address: {{.VIP}}
    port: 80
    protocol: tcp
    mode: l7
    l7:
      rules:
        - {name: big, path_prefix: {{.Rule}}, backends: [b0]}
    backends:
{{- range $i, $ip := .Tunnels}}
      - {name: b{{$i}}, address: {{$ip}}}
{{- end}}
hosts:
  listen: "0.0.0.0:{{.HostsPort}}"
  tls: {ca: {{.Certs}}/ca.crt, cert: {{.Certs}}/unit-tether.crt, key: {{.Certs}}/unit-tether.key}
`

// l7Unit is what a running l7 row needs to read its load balancer.
type l7Unit struct {
	lb        *e2e.LB
	tetherctl string
	dir       string // the unit's admin directory ("" for HAProxy)
	// agent is tether-agent's path and agents the hosts' agents (none
	// for HAProxy).
	agent  string
	agents []e2e.HostAgent
}

// agentSteps reports each host's agent's own times for its latest
// uploads and hand-offs (at most 512 of each): the part of a migrated
// connection's time the agent can see.
func (u *l7Unit) agentSteps() (string, error) {
	var parts []string
	for i, ha := range u.agents {
		out, err := u.lb.Exec(u.lb.Backends[i], u.agent, "--socket", ha.API(), "migrations", "-o", "json")
		if err != nil {
			return "", err
		}
		var v agent.MigrationsView
		if err := json.Unmarshal([]byte(out), &v); err != nil {
			return "", fmt.Errorf("agent b%d: %w", i, err)
		}
		parts = append(parts, fmt.Sprintf("b%d upload %.0f / %.0f µs, hand-off %.0f / %.0f µs (%d)",
			i, v.Upload.P50, v.Upload.P99, v.Handoff.P50, v.Handoff.P99, v.Handoff.Count))
	}
	return "the agents' latest steps (p50 / p99): " + strings.Join(parts, "; "), nil
}

func (u *l7Unit) ctl(v any, args ...string) error {
	out, err := u.lb.Exec(u.lb.Unit, append([]string{u.tetherctl, "--socket", filepath.Join(u.dir, "admin.sock")}, args...)...)
	if err != nil {
		return fmt.Errorf("tetherctl %s: %w", strings.Join(args, " "), err)
	}
	if err := json.Unmarshal([]byte(out), v); err != nil {
		return fmt.Errorf("tetherctl %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return nil
}

func execTemplate(text string, data any) ([]byte, error) {
	var b bytes.Buffer
	err := template.Must(template.New("").Parse(text)).Execute(&b, data)
	return b.Bytes(), err
}

// startL7 starts the backends' servers and the row's load balancer,
// and returns notes on how they run and the PIDs to watch, by name.
func startL7(o options, s setup, st *site, lb *e2e.LB) (*l7Unit, []string, error) {
	var ips []string
	for i := range nBackends {
		ips = append(ips, lb.BackendIP(i))
		// The backends answer by way of the router in both rows (on
		// the switched topology their default route is the unit): the
		// hosts of a migrated connection answer the client directly,
		// and the direct baseline takes the same path for both.
		if err := lb.Run(lb.Backends[i], "ip", "route", "replace", "default", "via", "10.0.0.254"); err != nil {
			return nil, nil, err
		}
	}
	tag := filepath.Base(lb.Unit)
	u := &l7Unit{lb: lb, tetherctl: o.tetherctl}
	startServers := func(socks []string) error {
		for i, ns := range lb.Backends {
			p, err := lb.Start(ns, fmt.Sprintf("l7httpd b%d", i), e2e.RoleCommand(roleL7HTTPD, fmt.Sprintf("0.0.0.0:%d", l7Port), socks[i]),
				"taskset", "-c", "0", e2e.Self())
			if err != nil {
				return err
			}
			if err := p.WaitFor(e2e.Ready, 10*time.Second); err != nil {
				return err
			}
		}
		return nil
	}
	if s.kind == "haproxy-http" {
		if err := startServers(make([]string, nBackends)); err != nil {
			return nil, nil, err
		}
		cfg, err := execTemplate(haproxyHTTPConfig, map[string]any{"VIP": vip, "Backends": ips, "Port": l7Port, "Rule": l7Rule})
		if err != nil {
			return nil, nil, fmt.Errorf("haproxy config: %w", err)
		}
		path := filepath.Join(st.dir, tag+"-haproxy.cfg")
		if err := os.WriteFile(path, cfg, 0o644); err != nil {
			return nil, nil, fmt.Errorf("haproxy config: %w", err)
		}
		if err := lb.Run(lb.Unit, "ip", "addr", "add", vip+"/32", "dev", "lo"); err != nil {
			return nil, nil, err
		}
		if _, err := lb.Start(lb.Unit, "haproxy", nil, "taskset", "-c", "1", "haproxy", "-db", "-f", path); err != nil {
			return nil, nil, err
		}
		return u, []string{"HAProxy 2.x mode http at its defaults (keep-alive, http-reuse safe), nbthread 1, pinned to core 1; path_beg " + l7Rule +
			" → b0, else round robin over b0–b2; no PROXY protocol to the servers; the VIP is a local address of the unit"}, nil
	}

	// Tether: certificates naming the hosts' tunnel addresses, the unit,
	// an agent on every host, and the server on each agent's shim.
	u.dir = filepath.Join(st.dir, tag+"-unit")
	certs := filepath.Join(u.dir, "certs")
	args := []string{"certs", "--dir", certs, "--unit", "tether"}
	for i := range nBackends {
		args = append(args, "--host", fmt.Sprintf("%d=%s", i+1, tunnelAddr(i)))
	}
	if out, err := exec.Command(o.tetherd, args...).CombinedOutput(); err != nil {
		return nil, nil, fmt.Errorf("tetherd certs: %v\n%s", err, out)
	}
	var tunnels []string
	for i := range nBackends {
		tunnels = append(tunnels, tunnelAddr(i))
		// The VIP is the hosts' own: they answer the client from it.
		if err := lb.Run(lb.Backends[i], "ip", "addr", "add", vip+"/32", "dev", "lo"); err != nil {
			return nil, nil, err
		}
	}
	cfg, err := execTemplate(tetherL7Config, map[string]any{
		"UnitIP": lb.UnitIP, "Dir": u.dir, "Driver": lb.Driver, "If": lb.UnitIf, "PinDir": lb.PinDir,
		"VIP": vip, "Rule": l7Rule, "Tunnels": tunnels, "Certs": certs, "HostsPort": e2e.HostsPort,
	})
	if err != nil {
		return nil, nil, fmt.Errorf("tether config: %w", err)
	}
	path := filepath.Join(u.dir, "tether.yaml")
	if err := os.WriteFile(path, cfg, 0o644); err != nil {
		return nil, nil, fmt.Errorf("tether config: %w", err)
	}
	cmd := []string{o.tetherd, "run", "--config", path}
	if s.pinUnit {
		cmd = append([]string{"taskset", "-c", "1"}, cmd...)
	}
	td, err := lb.Start(lb.Unit, "tetherd", s.env, cmd...)
	if err != nil {
		return nil, nil, err
	}
	if err := td.WaitFor("forwarder connected", 15*time.Second); err != nil {
		return nil, nil, err
	}
	bpf, err := lb.BPFDir()
	if err != nil {
		return nil, nil, err
	}
	var socks []string
	var agents []e2e.HostAgent
	for i, ns := range lb.Backends {
		dir := filepath.Join(u.dir, fmt.Sprintf("host-b%d", i))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, nil, err
		}
		ha := e2e.HostAgent{ID: i + 1, IP: lb.BackendIP(i), Unit: lb.UnitIP, UnitName: "tether", Certs: certs,
			Tunnel: tunnelAddr(i), PinDir: filepath.Join(bpf, fmt.Sprintf("host-b%d", i)), Dir: dir}
		path := filepath.Join(dir, "agent.yaml")
		if err := os.WriteFile(path, ha.Config(), 0o644); err != nil {
			return nil, nil, fmt.Errorf("agent config: %w", err)
		}
		// Agents run on core 0 with the servers: they are the hosts'.
		p, err := lb.Start(ns, fmt.Sprintf("agent b%d", i), nil, "taskset", "-c", "0", o.agent, "run", "--config", path)
		if err != nil {
			return nil, nil, err
		}
		if err := p.WaitFor("agent running", 10*time.Second); err != nil {
			return nil, nil, err
		}
		socks, agents = append(socks, ha.Handoff()), append(agents, ha)
	}
	u.agent, u.agents = o.agent, agents
	var sv unit.StreamsView
	if err := e2e.Poll(15*time.Second, func() error {
		if err := u.ctl(&sv, "streams", "-o", "json"); err != nil {
			return err
		}
		up := 0
		for _, h := range sv.Streams {
			if h.State == unit.StreamUp {
				up++
			}
		}
		if up != nBackends {
			return fmt.Errorf("%d of %d hosts' streams up", up, nBackends)
		}
		return nil
	}); err != nil {
		return nil, nil, err
	}
	if err := startServers(socks); err != nil {
		return nil, nil, err
	}
	for i, ns := range lb.Backends {
		if err := e2e.Poll(10*time.Second, func() error {
			out, err := lb.Exec(ns, o.agent, "--socket", agents[i].API(), "migrations", "-o", "json")
			if err != nil {
				return err
			}
			var v agent.MigrationsView
			if err := json.Unmarshal([]byte(out), &v); err != nil {
				return err
			}
			if len(v.Shims) != 1 {
				return fmt.Errorf("agent b%d lists %d shims", i, len(v.Shims))
			}
			return nil
		}); err != nil {
			return nil, nil, err
		}
	}
	how := "`tetherd run` as the harness's other unit rows run it: one worker pinned to core 1 (forwarder.cores: [1]); Tether moves every other thread, " +
		"the control process's (where the acceptor runs) and the forwarder's own, off the worker's core, so they run on core 0 with the client and the servers"
	if s.pinUnit {
		how = "`tetherd run` confined whole to core 1 with taskset (one worker, forwarder.cores: [1]): the control process, where the acceptor runs, has no other core to move to and shares core 1 with the worker"
	}
	if len(s.env) > 0 {
		how += " (environment: " + strings.Join(s.env, " ") + ", which the forwarder inherits)"
	}
	return u, []string{fmt.Sprintf("%s; %s port; ", how, s.driver) +
		"the VIP mode l7, rule path_prefix " + l7Rule + " → b0, else the default rule over b0–b2 (a hash of the client); " +
		"tether-agent on each host (tunnel and migration) on core 0 with the servers, on their listener shims; no PROXY protocol"}, nil
}

// lbPIDs names the row's load-balancer processes: HAProxy's, or the
// unit's control process and forwarder.
func (u *l7Unit) lbPIDs() map[string]int {
	pids := map[string]int{}
	if u.dir == "" {
		self := os.Getpid()
		procs := procTimes()
		for pid := range procs {
			if comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); err == nil &&
				strings.TrimSpace(string(comm)) == "haproxy" && !foreign(procs, pid, self) {
				pids["haproxy"] = pid
			}
		}
		return pids
	}
	var st unit.Status
	if err := u.ctl(&st, "status", "-o", "json"); err == nil {
		pids["control"] = st.ControlPID
	}
	if b, err := os.ReadFile(filepath.Join(u.dir, "run", "forwarder.pid")); err == nil {
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
			pids["forwarder"] = pid
		}
	}
	return pids
}

// affinity says on which cores each of the processes' threads may run,
// e.g. "control: 9 threads on 0; forwarder: 1 on 1, 7 on 0".
func affinity(pids map[string]int) string {
	var parts []string
	for _, name := range []string{"haproxy", "control", "forwarder"} {
		pid, ok := pids[name]
		if !ok {
			continue
		}
		count := map[string]int{}
		var sets []string
		tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/status", pid))
		for _, t := range tasks {
			b, err := os.ReadFile(t)
			if err != nil {
				continue
			}
			for _, line := range strings.Split(string(b), "\n") {
				if v, ok := strings.CutPrefix(line, "Cpus_allowed_list:"); ok {
					v = strings.TrimSpace(v)
					if count[v] == 0 {
						sets = append(sets, v)
					}
					count[v]++
				}
			}
		}
		var each []string
		for _, set := range sets {
			each = append(each, fmt.Sprintf("%d on %s", count[set], set))
		}
		parts = append(parts, fmt.Sprintf("%s threads: %s", name, strings.Join(each, ", ")))
	}
	return strings.Join(parts, "; ")
}

// cpuWatch measures the CPU the load balancer's processes and core 1
// took over one load.
type cpuWatch struct {
	pids   map[string]int
	groups map[string][]int // processes counted together: the hosts' servers, their agents
	ticks  map[string]uint64
	core   [2][2]uint64 // cores 0 and 1: busy and total ticks
	start  time.Time
}

// hostPIDs are the processes on the backends a load makes work, by
// group: the servers (lbbench's l7httpd role) and Tether's agents. They
// share core 0 with the client, so their cost per connection is part of
// what bounds a row's rate there.
func hostPIDs() map[string][]int {
	self := os.Getpid()
	procs := procTimes()
	groups := map[string][]int{}
	server := []byte(e2e.RoleEnv + "=" + roleL7HTTPD + "\x00")
	for pid := range procs {
		if pid == self || foreign(procs, pid, self) {
			continue
		}
		comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		if err != nil {
			continue
		}
		if strings.TrimSpace(string(comm)) == "tether-agent" {
			groups["agents"] = append(groups["agents"], pid)
			continue
		}
		if env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid)); err == nil && bytes.Contains(env, server) {
			groups["servers"] = append(groups["servers"], pid)
		}
	}
	return groups
}

func procTicks(pid int) uint64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseUint(f[11], 10, 64)
	st, _ := strconv.ParseUint(f[12], 10, 64)
	return ut + st
}

// coreTicks reads core n's busy and total ticks from /proc/stat.
func coreTicks(n int) [2]uint64 {
	b, _ := os.ReadFile("/proc/stat")
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 6 || f[0] != fmt.Sprintf("cpu%d", n) {
			continue
		}
		var total, idle uint64
		for i, v := range f[1:] {
			x, _ := strconv.ParseUint(v, 10, 64)
			total += x
			if i == 3 || i == 4 { // idle, iowait
				idle += x
			}
		}
		return [2]uint64{total - idle, total}
	}
	return [2]uint64{}
}

func watchCPU(pids map[string]int, groups map[string][]int) *cpuWatch {
	w := &cpuWatch{pids: pids, groups: groups, ticks: map[string]uint64{}, core: [2][2]uint64{coreTicks(0), coreTicks(1)}, start: time.Now()}
	for name, pid := range pids {
		w.ticks[name] = procTicks(pid)
	}
	for name, pids := range groups {
		w.ticks[name] = groupTicks(pids)
	}
	return w
}

func groupTicks(pids []int) uint64 {
	var t uint64
	for _, pid := range pids {
		t += procTicks(pid)
	}
	return t
}

// end describes the shares of a core each process, each group and the
// cores were busy; with conns > 0, also each one's CPU time per
// connection (the load's connections in the watch's time).
func (w *cpuWatch) end(conns float64) string {
	secs := time.Since(w.start).Seconds()
	var parts []string
	share := func(name string, ticks uint64) {
		p := fmt.Sprintf("%s %.0f%%", name, 100*float64(ticks-w.ticks[name])/clockTicks/secs)
		if conns > 0 {
			p += fmt.Sprintf(" (%.0f µs per connection)", 1e6*float64(ticks-w.ticks[name])/clockTicks/conns)
		}
		parts = append(parts, p)
	}
	for _, name := range []string{"haproxy", "control", "forwarder"} {
		if pid, ok := w.pids[name]; ok {
			share(name, procTicks(pid))
		}
	}
	for _, name := range []string{"servers", "agents"} {
		if pids, ok := w.groups[name]; ok {
			share(name, groupTicks(pids))
		}
	}
	for c := range 2 {
		core := coreTicks(c)
		if d := core[1] - w.core[c][1]; d > 0 {
			parts = append(parts, fmt.Sprintf("core %d busy %.0f%%", c, 100*float64(core[0]-w.core[c][0])/float64(d)))
		}
	}
	return strings.Join(parts, ", ")
}

// measureL7 runs the l7 comparison's loads on a built topology: time to
// first byte beside a direct connection, new connections, and parallel
// bulk.
func measureL7(o options, s setup, st *site, lb *e2e.LB, res *result, progress func(string, ...any)) {
	u, notes, err := startL7(o, s, st, lb)
	if err != nil {
		res.fatal = err.Error()
		progress("FAILED: %v", err)
		return
	}
	res.notes = append(res.notes, notes...)
	// Requests through the VIP prove both paths before anything is
	// measured.
	for _, c := range []struct{ path, want string }{{"/", "lbbench backend"}, {l7Rule + "1m.bin", ""}} {
		if err := e2e.Poll(10*time.Second, func() error {
			out, err := lb.Exec(lb.Client, "curl", "-sf", "--max-time", "2", "-o", "/dev/null", "-w", "%{size_download}", "http://"+vip+c.path)
			if err == nil && c.want == "" && strings.TrimSpace(out) != strconv.Itoa(bulkSize) {
				err = fmt.Errorf("GET %s through the VIP: %s bytes", c.path, out)
			}
			return err
		}); err != nil {
			res.fatal = err.Error()
			progress("FAILED: %v", err)
			return
		}
	}
	pids := u.lbPIDs()
	if a := affinity(pids); a != "" {
		res.notes = append(res.notes, "cores allowed: "+a)
		progress("cores allowed: %s", a)
	}
	ow := watchOtherWork()
	defer func() {
		res.other = ow.end()
		if res.other >= quietShare {
			progress("WARNING: other work on the machine used %.0f%% of a core while this setup ran", 100*res.other)
		}
	}()
	hosts := hostPIDs()
	cpuNote := func(what string, w *cpuWatch, conns float64) {
		n := w.end(conns)
		res.notes = append(res.notes, fmt.Sprintf("CPU during %s: %s", what, n))
		progress("CPU during %s: %s", what, n)
	}

	direct := fmt.Sprintf("%s:%d", lb.BackendIP(1), l7Port)
	progress("time to first byte: new connections one at a time, alternately direct to %s and through the VIP, %d s", direct, o.secs)
	var hops *l7Hops
	if o.hops && u.dir != "" {
		var err error
		if hops, err = startL7Hops(lb, st.dir); err != nil {
			res.notes = append(res.notes, "hops: "+err.Error())
			progress("hops: %v", err)
		}
	}
	w := watchCPU(pids, hosts)
	if t, err := runTTFB(lb, o.secs, "/", direct, fmt.Sprintf("%s:80", vip)); err != nil {
		res.fail(figTTFB50, err)
		progress("time to first byte FAILED: %v", err)
	} else {
		d, v := t[0], t[1]
		res.vals[figTTFB50], res.vals[figTTFB99] = v.P50, v.P99
		res.vals[figDirect50], res.vals[figDirect99] = d.P50, d.P99
		res.vals[figAdded99] = v.P99 - d.P99
		res.notes = append(res.notes, fmt.Sprintf("time to first byte, run %d: %d connections through the VIP (max %.0f µs; of it the handshake, connect(2), p50 %.0f µs, p99 %.0f µs), %d direct (max %.0f µs; handshake p50 %.0f µs, p99 %.0f µs)",
			res.run+1, v.Count, v.Max, v.ConnP50, v.ConnP99, d.Count, d.Max, d.ConnP50, d.ConnP99))
		progress("time to first byte: VIP p50 %.0f µs p99 %.0f µs; direct p50 %.0f µs p99 %.0f µs (%d and %d connections)", v.P50, v.P99, d.P50, d.P99, v.Count, d.Count)
	}
	cpuNote(fmt.Sprintf("time to first byte, run %d", res.run+1), w, 0)
	if hops != nil {
		notes, err := hops.split()
		if err != nil {
			notes = []string{err.Error()}
		}
		if n, err := u.agentSteps(); err != nil {
			notes = append(notes, "the agents' steps: "+err.Error())
		} else if len(u.agents) > 0 {
			notes = append(notes, n)
		}
		for _, n := range notes {
			res.notes = append(res.notes, fmt.Sprintf("run %d: %s", res.run+1, n))
			progress("%s", n)
		}
	}

	url := "http://" + vip + "/"
	progress("new connections (wrk, Connection: close, %d connections, %d s)", o.conns, o.secs)
	w = watchCPU(pids, hosts)
	conns := 0.0
	if cps, retx, err := runNewConns(lb, st, url, o); err != nil {
		res.fail(figNewConn, err)
		progress("new connections FAILED: %v", err)
	} else {
		res.vals[figNewConn], res.vals[figSynRetx] = cps, float64(retx)
		conns = cps * float64(o.secs)
		progress("new connections %.0f/s, %d SYN retransmissions", cps, retx)
	}
	cpuNote(fmt.Sprintf("new connections, run %d", res.run+1), w, conns)

	progress("parallel bulk (wrk, %d connections downloading 1 MiB each, %d s)", o.bulkConns, o.secs)
	w = watchCPU(pids, hosts)
	if wr, err := runWrk(lb, st, url+strings.TrimPrefix(l7Rule, "/")+"1m.bin", o.bulkConns, o.secs); err != nil {
		res.fail(figBulk, err)
		progress("parallel bulk FAILED: %v", err)
	} else if err := wr.check(bulkSize, bulkSize+512, o.bulkConns); err != nil {
		res.fail(figBulk, err)
		progress("parallel bulk FAILED: %v", err)
	} else {
		res.vals[figBulk] = float64(wr.Bytes) / (1 << 20) / wr.seconds()
		progress("parallel bulk %.0f MiB/s", res.vals[figBulk])
	}
	cpuNote(fmt.Sprintf("parallel bulk, run %d", res.run+1), w, 0)

	if u.dir != "" {
		var v unit.L7View
		if err := u.ctl(&v, "l7", "-o", "json"); err != nil {
			res.notes = append(res.notes, "acceptor counters: "+err.Error())
		} else {
			s := v.Stats
			n := fmt.Sprintf("acceptor, run %d: migrated %d, uploaded %d, upload failed %d, upload timeouts %d, ended %d, no host %d, host down %d, route failed %d, bad requests %d; by rule %v",
				res.run+1, s.Migrated, s.Uploaded, s.UploadFailed, s.UploadTimeouts, s.Ended, s.NoHost, s.HostDown, s.RouteFailed, s.BadRequests, s.ByRule)
			for _, a := range v.VIPs {
				n += fmt.Sprintf("; counters %v", nonZero(a.Counters))
			}
			res.notes = append(res.notes, n)
			progress("%s", n)
		}
	}
}

func nonZero(m map[string]uint64) map[string]uint64 {
	out := map[string]uint64{}
	for k, v := range m {
		if v != 0 {
			out[k] = v
		}
	}
	return out
}

// runTTFB runs the ttfb role in the client namespace on core 0 and
// returns its figures per address, in order.
func runTTFB(lb *e2e.LB, secs int, path string, addrs ...string) ([]TTFB, error) {
	cmd := append([]string{"env"}, e2e.RoleCommand(roleTTFB, append([]string{strconv.Itoa(secs), path}, addrs...)...)...)
	out, err := lb.Exec(lb.Client, append(cmd, "taskset", "-c", "0", e2e.Self())...)
	if err != nil {
		return nil, err
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	var t []TTFB
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &t); err != nil || len(t) != len(addrs) {
		return nil, fmt.Errorf("ttfb printed %q: %v", out, err)
	}
	for _, r := range t {
		if r.Errors > 0 || r.Count == 0 {
			return nil, fmt.Errorf("%s: %d connections, %d errors, the first: %s", r.Addr, r.Count, r.Errors, r.First)
		}
	}
	return t, nil
}
