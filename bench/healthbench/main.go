// Command healthbench measures how fast Tether reacts to backend failures
// with its default health settings, beside HAProxy with its defaults
// (check inter 2s fall 3 rise 2) on the same namespace topology in the
// same run, and prints one table of medians and maxima.
//
// It builds the TUN topology of e2e.NewLB with two backends, runs
// `tetherd run` (a nat VIP fed by tether-agent on each backend, which
// checks the application over HTTP) and HAProxy (tcp mode, httpchk) side
// by side in the unit namespace, and a prober in the client namespace
// that opens a new connection to each balancer every 10 ms and records
// which backend answered. It then fails backend b1 in three ways, each
// several times, restoring it in between:
//
//   - the application's /healthz starts answering 503 while it still
//     serves (both balancers' checks must notice);
//   - the application tells its agent it is failing (Tether only: HAProxy
//     has no such channel);
//   - the host dies silently: agent and server killed, link down.
//
// It needs root. Performance is measured here, never asserted.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/tetherlb/tether/api/unit"
	"github.com/tetherlb/tether/e2e"
)

// The VIPs: Tether's forwarder takes 192.0.2.10 through its TUN device;
// HAProxy listens on a local address of the unit namespace in the same
// range, which the client already routes through the unit.
const (
	tetherVIP  = "192.0.2.10:80"
	haproxyVIP = "192.0.2.20"
	// failed is the backend every event fails.
	failed = 1
)

// Timeouts bounding every wait. The slowest expected event is HAProxy
// noticing a silent death (three checks 2 s apart, each waiting up to 2 s
// for a connect), well under downTimeout.
const (
	readyTimeout = 60 * time.Second
	downTimeout  = 30 * time.Second
	upTimeout    = 60 * time.Second
	// warmup lets the prober reach both backends through both balancers
	// before an event, so that "last connection" has a before.
	warmup = time.Second
	// jitter: a random pause of up to this much follows the warm-up.
	// Every check here is periodic (the agent's every 250 ms, HAProxy's
	// every 2 s, heartbeats every 500 ms) and a repetition starts when a
	// check has just seen the backend up again, so without it T0 would
	// fall at nearly the same phase of every check each time and the
	// repetitions would measure one point of the distribution over and
	// over. 2 s is a multiple of every period.
	jitter = 2 * time.Second
	// tail keeps the prober running after both balancers marked the
	// backend down: a connection the balancer still sends there after its
	// verdict (a forwarder not yet updated) shows up in it.
	tail = 2 * time.Second
)

func main() {
	e2e.RunRoleFromEnv()
	if args := os.Getenv(probeEnv); args != "" {
		if err := runProber(args); err != nil {
			fmt.Fprintln(os.Stderr, "healthbench prober:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	tetherd := flag.String("tetherd", "bin/tetherd", "tetherd binary")
	tetherctl := flag.String("tetherctl", "bin/tetherctl", "tetherctl binary")
	agent := flag.String("agent", "bin/tether-agent", "tether-agent binary")
	reps := flag.Int("reps", 5, "repetitions of each event")
	flag.Parse()
	if err := run(*tetherd, *tetherctl, *agent, *reps); err != nil {
		fmt.Fprintln(os.Stderr, "healthbench:", err)
		os.Exit(1)
	}
}

func run(tetherd, tetherctl, agent string, reps int) error {
	if err := e2e.Root(); err != nil {
		return fmt.Errorf("run me as root: %w", err)
	}
	if _, err := exec.LookPath("haproxy"); err != nil {
		return errors.New("haproxy is not installed (Debian: apt-get install haproxy); it is the baseline every Tether number is compared with")
	}
	if reps < 1 {
		return fmt.Errorf("--reps %d: want at least 1", reps)
	}
	bins := map[string]*string{"--tetherd": &tetherd, "--tetherctl": &tetherctl, "--agent": &agent}
	for flagName, p := range bins {
		abs, err := filepath.Abs(*p)
		if err != nil {
			return fmt.Errorf("%s %s: %w", flagName, *p, err)
		}
		if _, err := os.Stat(abs); err != nil {
			return fmt.Errorf("%s: %w (make bin builds it)", flagName, err)
		}
		*p = abs
	}
	b, err := newBench(tetherd, tetherctl, agent)
	if err != nil {
		return err
	}
	defer b.close()
	// An interrupt still stops every process and removes the network.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-sig
		fmt.Fprintln(os.Stderr, "healthbench: interrupted, removing the network")
		b.close()
		os.Exit(1)
	}()
	if err := b.setup(); err != nil {
		return err
	}
	var res results
	events := []struct {
		name string
		fn   func() (sample, error)
	}{
		{"check failure", b.checkFailure},
		{"pushed failure", b.pushedFailure},
		{"silent death", b.silentDeath},
	}
	for _, ev := range events {
		for i := range reps {
			s, err := ev.fn()
			if err != nil {
				return fmt.Errorf("%s, repetition %d: %w", ev.name, i+1, err)
			}
			logf("%s %d/%d: %s", ev.name, i+1, reps, s)
			res.add(ev.name, s)
		}
	}
	res.report(os.Stdout, reps, b)
	return nil
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "==> "+format+"\n", args...)
}

// host is one backend: its HTTP server, its agent, and the file whose
// existence fails the server's /healthz.
type host struct {
	i         int
	ns, ip    string
	fail      string
	agentSock string
	agentCfg  string
	httpd     *e2e.Proc
	agent     *e2e.Proc
}

type bench struct {
	lb                          *e2e.LB
	dir                         string
	tetherd, tetherctl, agent   string
	unit, haproxy               *e2e.Proc
	cfgPath, socket, runDir     string
	haCfg, haSock               string
	hosts                       []*host
	closeOnce                   sync.Once
	tetherPolls, haproxyPolls   pollStats
	tetherPollMu, haproxyPollMu sync.Mutex
}

func newBench(tetherd, tetherctl, agent string) (*bench, error) {
	lb, err := e2e.NewLB("hb", 2)
	if err != nil {
		return nil, fmt.Errorf("build the topology: %w", err)
	}
	dir, err := os.MkdirTemp("", "healthbench-")
	if err != nil {
		lb.Close()
		return nil, fmt.Errorf("temporary directory: %w", err)
	}
	b := &bench{lb: lb, dir: dir, tetherd: tetherd, tetherctl: tetherctl, agent: agent,
		cfgPath: filepath.Join(dir, "tether.yaml"), socket: filepath.Join(dir, "run", "admin.sock"), runDir: filepath.Join(dir, "run"),
		haCfg: filepath.Join(dir, "haproxy.cfg"), haSock: filepath.Join(dir, "haproxy.sock")}
	for i := range lb.Backends {
		b.hosts = append(b.hosts, &host{i: i, ns: lb.Backends[i], ip: lb.BackendIP(i),
			fail:      filepath.Join(dir, fmt.Sprintf("fail-b%d", i)),
			agentSock: filepath.Join(dir, fmt.Sprintf("agent-b%d.sock", i)),
			agentCfg:  filepath.Join(dir, fmt.Sprintf("agent-b%d.yaml", i))})
	}
	return b, nil
}

// close stops everything and removes the network; it runs once, from the
// deferred call or the interrupt handler, whichever comes first.
func (b *bench) close() {
	b.closeOnce.Do(func() {
		// The forwarder runs in its own process group and outlives a
		// killed control process on purpose; a control process stopped
		// cleanly stops it, and would restart it if killed first. So:
		// control first, then whatever forwarder is left, by its PID.
		pid := b.forwarderPID()
		if b.unit != nil {
			b.unit.Stop()
		}
		if pid > 0 {
			if cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); err == nil && strings.Contains(string(cmdline), "forwarder") {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		if err := b.lb.Close(); err != nil {
			fmt.Fprintln(os.Stderr, "healthbench:", err)
		}
		os.RemoveAll(b.dir)
	})
}

func (b *bench) forwarderPID() int {
	s, err := os.ReadFile(filepath.Join(b.runDir, "forwarder.pid"))
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(s)))
	return pid
}

// tetherConfig: everything health-related at its default except what the
// brief fixes (agents as the source, the listener).
const tetherConfig = `unit:
  address4: %s
forwarder:
  port: {driver: %s, interface: %s}
  flows: {max: 65536}
vips:
  - name: web
    address: 192.0.2.10
    port: 80
    protocol: tcp
    mode: nat
    snat: [198.51.100.1]
    health: {source: agent}
    backends:
      - {name: b0, address: %s, port: 8080}
      - {name: b1, address: %s, port: 8080}
health: {listen: "0.0.0.0:7310"}
admin:
  socket: %s
  run_dir: %s
`

// agentConfig: the check's interval, timeout, rise and fall are left to
// their defaults, which is what is being measured.
const agentConfig = `host: {id: %d, listen: "%s:7311"}
units: ["%s:7310"]
api: {socket: %s}
applications:
  - name: web
    endpoint: "%s:8080"
    capacity: 50
    check: {type: http, target: "127.0.0.1:8080", path: /healthz}
`

// haproxyConfig: HAProxy's check defaults written out (inter 2s fall 3
// rise 2 is what "check" alone means). tcp mode, because Tether is L4;
// httpchk still checks over HTTP. The timeouts are the usual ones of
// Debian's example configuration; without them HAProxy warns and waits
// forever.
const haproxyConfig = `global
    stats socket %s mode 600 level admin
    maxconn 4096
defaults
    mode tcp
    timeout connect 5s
    timeout client 50s
    timeout server 50s
frontend fe
    bind %s:80
    default_backend be
backend be
    balance roundrobin
    option httpchk GET /healthz
    server b0 %s:8080 check inter 2s fall 3 rise 2
    server b1 %s:8080 check inter 2s fall 3 rise 2
`

func (b *bench) setup() error {
	// Readable by everything the namespaces run.
	if err := os.Chmod(b.dir, 0o755); err != nil {
		return err
	}
	logf("starting HTTP servers on the backends")
	for _, h := range b.hosts {
		if err := b.startHTTPD(h); err != nil {
			return err
		}
	}
	logf("starting tetherd run in the unit")
	lb := b.lb
	cfg := fmt.Sprintf(tetherConfig, lb.UnitIP, lb.Driver, lb.UnitIf, lb.BackendIP(0), lb.BackendIP(1), b.socket, b.runDir)
	if err := os.WriteFile(b.cfgPath, []byte(cfg), 0o644); err != nil {
		return fmt.Errorf("write the unit's config: %w", err)
	}
	p, err := lb.Start(lb.Unit, "tetherd run", nil, b.tetherd, "run", "--config", b.cfgPath)
	if err != nil {
		return err
	}
	b.unit = p
	if err := p.WaitFor("forwarder connected", 15*time.Second); err != nil {
		return err
	}
	logf("starting tether-agent on the backends")
	for _, h := range b.hosts {
		cfg := fmt.Sprintf(agentConfig, h.i+1, h.ip, fmt.Sprintf("10.0.%d.1", 10+h.i), h.agentSock, h.ip)
		if err := os.WriteFile(h.agentCfg, []byte(cfg), 0o644); err != nil {
			return fmt.Errorf("write agent b%d's config: %w", h.i, err)
		}
		if err := b.startAgent(h); err != nil {
			return err
		}
	}
	logf("starting HAProxy in the unit on %s:80", haproxyVIP)
	if err := lb.Run(lb.Unit, "ip", "addr", "add", haproxyVIP+"/32", "dev", "lo"); err != nil {
		return err
	}
	hcfg := fmt.Sprintf(haproxyConfig, b.haSock, haproxyVIP, lb.BackendIP(0), lb.BackendIP(1))
	if err := os.WriteFile(b.haCfg, []byte(hcfg), 0o644); err != nil {
		return fmt.Errorf("write HAProxy's config: %w", err)
	}
	if b.haproxy, err = lb.Start(lb.Unit, "haproxy", nil, "haproxy", "-f", b.haCfg, "-db"); err != nil {
		return err
	}
	logf("waiting for both balancers to see both backends up")
	for _, h := range b.hosts {
		if err := b.waitUp(h, readyTimeout); err != nil {
			return err
		}
	}
	return nil
}

func (b *bench) startHTTPD(h *host) error {
	name := fmt.Sprintf("b%d", h.i)
	p, err := b.lb.Start(h.ns, "httpd "+name, e2e.RoleCommand("httpd", name, "0.0.0.0:8080", h.fail), e2e.Self())
	if err != nil {
		return err
	}
	if err := p.WaitFor(e2e.Ready, 10*time.Second); err != nil {
		return err
	}
	h.httpd = p
	return nil
}

func (b *bench) startAgent(h *host) error {
	p, err := b.lb.Start(h.ns, fmt.Sprintf("agent b%d", h.i), nil, b.agent, "run", "--config", h.agentCfg)
	if err != nil {
		return err
	}
	if err := p.WaitFor("agent running", 10*time.Second); err != nil {
		return err
	}
	h.agent = p
	return nil
}

// health reads the unit's health cache the way an operator does. The
// admin socket is a path, reachable from this namespace.
func (b *bench) health() (unit.HealthView, error) {
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, b.tetherctl, "--socket", b.socket, "health", "-o", "json").Output()
	b.tetherPollMu.Lock()
	b.tetherPolls.add(time.Since(start))
	b.tetherPollMu.Unlock()
	var h unit.HealthView
	if err != nil {
		return h, fmt.Errorf("tetherctl health: %w", err)
	}
	if err := json.Unmarshal(out, &h); err != nil {
		return h, fmt.Errorf("tetherctl health: %w: %s", err, out)
	}
	return h, nil
}

// verdictState is the state the unit gives backend i of the VIP ("" when
// the configuration's stands, draining when health took it away).
func verdictState(h unit.HealthView, i int) string {
	for _, v := range h.Backends {
		if v.VIP == "web" && v.Backend == fmt.Sprintf("b%d", i) {
			return v.State.String()
		}
	}
	return "?"
}

// hostRow returns host i's row health, and whether the cache lists the
// host at all.
func hostRow(h unit.HealthView, i int) (string, bool) {
	for _, ho := range h.Hosts {
		if ho.ID == uint32(i+1) {
			if len(ho.Rows) == 0 {
				return "", true
			}
			return ho.Rows[0].Health, true
		}
	}
	return "", false
}

// haStatus returns the status column of server b<i> from HAProxy's
// stats socket ("UP", "DOWN", "UP 1/3" while going down, "DOWN 1/2"
// while coming up).
func (b *bench) haStatus(i int) (string, error) {
	start := time.Now()
	defer func() {
		b.haproxyPollMu.Lock()
		b.haproxyPolls.add(time.Since(start))
		b.haproxyPollMu.Unlock()
	}()
	c, err := net.DialTimeout("unix", b.haSock, 2*time.Second)
	if err != nil {
		return "", fmt.Errorf("haproxy stats socket: %w", err)
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(5 * time.Second)); err != nil {
		return "", err
	}
	if _, err := io.WriteString(c, "show stat\n"); err != nil {
		return "", fmt.Errorf("haproxy stats socket: %w", err)
	}
	out, err := io.ReadAll(c)
	if err != nil {
		return "", fmt.Errorf("haproxy show stat: %w", err)
	}
	lines := strings.Split(string(out), "\n")
	if len(lines) == 0 || !strings.HasPrefix(lines[0], "# ") {
		return "", fmt.Errorf("haproxy show stat: unexpected answer %q", out)
	}
	col := slices.Index(strings.Split(strings.TrimPrefix(lines[0], "# "), ","), "status")
	if col < 0 {
		return "", fmt.Errorf("haproxy show stat: no status column in %q", lines[0])
	}
	for _, l := range lines[1:] {
		f := strings.Split(l, ",")
		if len(f) > col && f[0] == "be" && f[1] == fmt.Sprintf("b%d", i) {
			return f[col], nil
		}
	}
	return "", fmt.Errorf("haproxy show stat: no server b%d", i)
}

// watch polls cond, pausing period between polls, until it holds, and
// returns the moment it was first seen to hold: the end of that poll, so
// a time is late by at most one poll. Errors are retried until timeout.
func watch(what string, timeout, period time.Duration, cond func() (bool, error)) (time.Time, error) {
	deadline := time.Now().Add(timeout)
	var last error
	for {
		ok, err := cond()
		if ok && err == nil {
			return time.Now(), nil
		}
		if err != nil {
			last = err
		}
		if time.Now().After(deadline) {
			if last != nil {
				return time.Time{}, fmt.Errorf("%s: not within %s (last error: %w)", what, timeout, last)
			}
			return time.Time{}, fmt.Errorf("%s: not within %s", what, timeout)
		}
		time.Sleep(period)
	}
}

// Poll periods: tetherctl is a process start each time, so it is polled
// less eagerly than HAProxy's socket to leave the two cores to the
// systems being measured.
const (
	tetherPoll  = 20 * time.Millisecond
	haproxyPoll = 10 * time.Millisecond
)

func (b *bench) tetherDown(i int, gone bool) func() (bool, error) {
	return func() (bool, error) {
		h, err := b.health()
		if err != nil {
			return false, err
		}
		if _, listed := hostRow(h, i); gone && listed {
			return false, nil
		}
		return verdictState(h, i) == "draining", nil
	}
}

func (b *bench) haDown(i int) func() (bool, error) {
	return func() (bool, error) {
		s, err := b.haStatus(i)
		return strings.HasPrefix(s, "DOWN"), err
	}
}

// waitUp waits until both balancers take new connections to host h
// again: Tether lists it healthy with no verdict against it (and its
// startup grace is over), HAProxy says UP.
func (b *bench) waitUp(h *host, timeout time.Duration) error {
	if _, err := watch(fmt.Sprintf("Tether to take b%d", h.i), timeout, 50*time.Millisecond, func() (bool, error) {
		v, err := b.health()
		if err != nil {
			return false, err
		}
		row, listed := hostRow(v, h.i)
		return listed && row == "healthy" && verdictState(v, h.i) == "" && !v.Grace, nil
	}); err != nil {
		return err
	}
	_, err := watch(fmt.Sprintf("HAProxy to take b%d", h.i), timeout, 50*time.Millisecond, func() (bool, error) {
		s, err := b.haStatus(h.i)
		return s == "UP", err
	})
	return err
}

// sample is one repetition of one event. Durations are from T0; a
// negative one means not measured (n/a).
type sample struct {
	tetherLast, tetherDown   time.Duration
	haproxyLast, haproxyDown time.Duration
	// Prober connections after T0 that failed, per balancer.
	tetherFailed, haproxyFailed int
}

func (s sample) String() string {
	f := func(d time.Duration) string {
		if d < 0 {
			return "n/a"
		}
		return fmt.Sprintf("%.0fms", ms(d))
	}
	return fmt.Sprintf("tether last %s down %s failed %d; haproxy last %s down %s failed %d",
		f(s.tetherLast), f(s.tetherDown), s.tetherFailed, f(s.haproxyLast), f(s.haproxyDown), s.haproxyFailed)
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// downBoth watches both balancers at once from T0 and returns when each
// marked host i down.
func (b *bench) downBoth(i int, gone bool) (tether, haproxy time.Time, err error) {
	type seen struct {
		at  time.Time
		err error
	}
	tc, hc := make(chan seen, 1), make(chan seen, 1)
	go func() {
		at, err := watch(fmt.Sprintf("Tether to mark b%d down", i), downTimeout, tetherPoll, b.tetherDown(i, gone))
		tc <- seen{at, err}
	}()
	go func() {
		at, err := watch(fmt.Sprintf("HAProxy to mark b%d DOWN", i), downTimeout, haproxyPoll, b.haDown(i))
		hc <- seen{at, err}
	}()
	t, h := <-tc, <-hc
	return t.at, h.at, errors.Join(t.err, h.err)
}

// checkFailure: the application's /healthz answers 503 from T0 on while
// it keeps serving; both balancers' checks must notice.
func (b *bench) checkFailure() (sample, error) {
	h := b.hosts[failed]
	pr, err := b.warmProber()
	if err != nil {
		return sample{}, err
	}
	defer pr.Stop()
	t0 := time.Now()
	if err := os.WriteFile(h.fail, nil, 0o644); err != nil {
		return sample{}, fmt.Errorf("fail b%d's /healthz: %w", h.i, err)
	}
	td, hd, err := b.downBoth(h.i, false)
	if err != nil {
		return sample{}, err
	}
	time.Sleep(tail)
	conns, err := stopProber(pr)
	if err != nil {
		return sample{}, err
	}
	s := sample{tetherDown: td.Sub(t0), haproxyDown: hd.Sub(t0)}
	if s.tetherLast, s.tetherFailed, err = lastTo(conns, "tether", h.i, t0); err != nil {
		return s, err
	}
	if s.haproxyLast, s.haproxyFailed, err = lastTo(conns, "haproxy", h.i, t0); err != nil {
		return s, err
	}
	if err := os.Remove(h.fail); err != nil {
		return s, fmt.Errorf("restore b%d's /healthz: %w", h.i, err)
	}
	return s, b.waitUp(h, upTimeout)
}

// pushedFailure: at T0 the application tells its agent it is failing.
// HAProxy has no equivalent; its prober connections keep going for
// comparable load.
func (b *bench) pushedFailure() (sample, error) {
	h := b.hosts[failed]
	pr, err := b.warmProber()
	if err != nil {
		return sample{}, err
	}
	defer pr.Stop()
	t0 := time.Now()
	if err := b.setHealth(h, "failing"); err != nil {
		return sample{}, err
	}
	td, err := watch(fmt.Sprintf("Tether to mark b%d down", h.i), downTimeout, tetherPoll, b.tetherDown(h.i, false))
	if err != nil {
		return sample{}, err
	}
	time.Sleep(tail)
	conns, err := stopProber(pr)
	if err != nil {
		return sample{}, err
	}
	s := sample{tetherDown: td.Sub(t0), haproxyLast: -1, haproxyDown: -1}
	if s.tetherLast, s.tetherFailed, err = lastTo(conns, "tether", h.i, t0); err != nil {
		return s, err
	}
	if err := b.setHealth(h, "healthy"); err != nil {
		return s, err
	}
	return s, b.waitUp(h, upTimeout)
}

// setHealth is what an application does: tether-agent set, run in its
// own namespace.
func (b *bench) setHealth(h *host, health string) error {
	if out, err := b.lb.Exec(h.ns, b.agent, "--socket", h.agentSock, "set", "web", "--health", health); err != nil {
		return fmt.Errorf("tether-agent set web --health %s: %w: %s", health, err, out)
	}
	return nil
}

// silentDeath: at T0 the host dies without a goodbye: its agent and
// server are killed and its link goes down, so nothing answers. New
// connections sent to it fail, so the metric is how long until each
// balancer stops choosing it.
func (b *bench) silentDeath() (sample, error) {
	h := b.hosts[failed]
	pr, err := b.warmProber()
	if err != nil {
		return sample{}, err
	}
	defer pr.Stop()
	t0 := time.Now()
	for _, p := range []*e2e.Proc{h.agent, h.httpd} {
		if err := p.Signal(syscall.SIGKILL); err != nil {
			return sample{}, fmt.Errorf("kill %s: %w", p.Name, err)
		}
	}
	if err := b.lb.Run(h.ns, "ip", "link", "set", "e0", "down"); err != nil {
		return sample{}, err
	}
	td, hd, err := b.downBoth(h.i, true)
	if err != nil {
		return sample{}, err
	}
	conns, err := stopProber(pr)
	if err != nil {
		return sample{}, err
	}
	s := sample{tetherLast: -1, haproxyLast: -1, tetherDown: td.Sub(t0), haproxyDown: hd.Sub(t0)}
	// Only the failure counts matter here: the last connection sent to
	// a dead host is a failed one.
	_, s.tetherFailed, _ = lastTo(conns, "tether", h.i, t0)
	_, s.haproxyFailed, _ = lastTo(conns, "haproxy", h.i, t0)
	for _, p := range []*e2e.Proc{h.agent, h.httpd} {
		if err := p.Wait(5 * time.Second); err != nil && !strings.Contains(err.Error(), "signal: killed") {
			return s, fmt.Errorf("%s after SIGKILL: %w", p.Name, err)
		}
	}
	// Link down flushed the backend's routes; the link-local one comes
	// back with the link, the default route does not.
	if err := b.lb.Run(h.ns, "ip", "link", "set", "e0", "up"); err != nil {
		return s, err
	}
	if err := b.lb.Run(h.ns, "ip", "route", "replace", "default", "via", fmt.Sprintf("10.0.%d.1", 10+h.i)); err != nil {
		return s, err
	}
	if err := b.startHTTPD(h); err != nil {
		return s, err
	}
	if err := b.startAgent(h); err != nil {
		return s, err
	}
	return s, b.waitUp(h, upTimeout)
}

// lastTo returns how long after t0 the last new connection the target
// balancer sent to backend i started (0 if none started after t0), and
// how many connections started after t0 failed. It errs if the prober
// never reached backend i through target before t0: then "last" would
// mean nothing.
func lastTo(conns []conn, target string, i int, t0 time.Time) (time.Duration, int, error) {
	name := fmt.Sprintf("b%d", i)
	var last time.Time
	before, failedConns := false, 0
	for _, c := range conns {
		if c.target != target {
			continue
		}
		if c.start.After(t0) && c.err != "" {
			failedConns++
		}
		if c.backend != name {
			continue
		}
		if c.start.Before(t0) {
			before = true
		} else if c.start.After(last) {
			last = c.start
		}
	}
	if !before {
		return 0, failedConns, fmt.Errorf("the prober never reached %s through %s before the event", name, target)
	}
	if last.IsZero() {
		return 0, failedConns, nil
	}
	return last.Sub(t0), failedConns, nil
}

// pollStats collects how long observation polls take: the resolution
// of every "marked down" time.
type pollStats struct{ d []time.Duration }

func (p *pollStats) add(d time.Duration) { p.d = append(p.d, d) }

// results holds every sample by event.
type results struct {
	order []string
	by    map[string][]sample
}

func (r *results) add(event string, s sample) {
	if r.by == nil {
		r.by = map[string][]sample{}
	}
	if _, ok := r.by[event]; !ok {
		r.order = append(r.order, event)
	}
	r.by[event] = append(r.by[event], s)
}

// medMax returns the median and maximum, in ms, of the measured values
// (negative ones are n/a) and whether there were any.
func medMax(ds []time.Duration) (float64, float64, bool) {
	var v []float64
	for _, d := range ds {
		if d >= 0 {
			v = append(v, ms(d))
		}
	}
	if len(v) == 0 {
		return 0, 0, false
	}
	slices.Sort(v)
	med := v[len(v)/2]
	if len(v)%2 == 0 {
		med = (v[len(v)/2-1] + v[len(v)/2]) / 2
	}
	return med, v[len(v)-1], true
}

func (r *results) report(w io.Writer, reps int, b *bench) {
	rows := []struct {
		label, event string
		tether       func(sample) time.Duration
		haproxy      func(sample) time.Duration
	}{
		{"check failure → last new connection", "check failure", func(s sample) time.Duration { return s.tetherLast }, func(s sample) time.Duration { return s.haproxyLast }},
		{"check failure → marked down", "check failure", func(s sample) time.Duration { return s.tetherDown }, func(s sample) time.Duration { return s.haproxyDown }},
		{"pushed failure → last new connection", "pushed failure", func(s sample) time.Duration { return s.tetherLast }, func(s sample) time.Duration { return s.haproxyLast }},
		{"pushed failure → marked down", "pushed failure", func(s sample) time.Duration { return s.tetherDown }, func(s sample) time.Duration { return s.haproxyDown }},
		{"silent death → removed / DOWN", "silent death", func(s sample) time.Duration { return s.tetherDown }, func(s sample) time.Duration { return s.haproxyDown }},
	}
	fmt.Fprintf(w, "\n%d repetitions of each event; times from T0 in ms\n\n", reps)
	tw := tabwriter.NewWriter(w, 0, 0, 3, ' ', 0)
	fmt.Fprintln(tw, "event\ttether median/max (ms)\thaproxy median/max (ms)\tratio (haproxy/tether)")
	for _, row := range rows {
		var td, hd []time.Duration
		for _, s := range r.by[row.event] {
			td, hd = append(td, row.tether(s)), append(hd, row.haproxy(s))
		}
		tm, tx, tok := medMax(td)
		hm, hx, hok := medMax(hd)
		cell := func(m, x float64, ok bool) string {
			if !ok {
				return "n/a"
			}
			return fmt.Sprintf("%.0f / %.0f", m, x)
		}
		ratio := "n/a"
		if tok && hok && tm > 0 {
			ratio = fmt.Sprintf("%.1f×", hm/tm)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", row.label, cell(tm, tx, tok), cell(hm, hx, hok), ratio)
	}
	tw.Flush()

	fmt.Fprintln(w, "\nper repetition:")
	for _, ev := range r.order {
		for i, s := range r.by[ev] {
			fmt.Fprintf(w, "  %s %d: %s\n", ev, i+1, s)
		}
	}
	b.tetherPollMu.Lock()
	tp, _, _ := medMax(b.tetherPolls.d)
	b.tetherPollMu.Unlock()
	b.haproxyPollMu.Lock()
	hp, _, _ := medMax(b.haproxyPolls.d)
	b.haproxyPollMu.Unlock()
	fmt.Fprintf(w, "\npoll resolution: tetherctl health takes %.0f ms (median) plus a %s pause; HAProxy's stats socket %.1f ms plus %s\n",
		tp, tetherPoll, hp, haproxyPoll)
	fmt.Fprintln(w, "\"failed\" counts prober connections after T0 that got no answer within 1 s (or were refused)")
}

// The prober: this program again, in the client namespace, with its
// arguments in probeEnv.
const probeEnv = "HEALTHBENCH_PROBE"

// proberArgs: targets are name=address:port; every interval the prober
// opens a new connection to each, spread evenly over the interval.
type proberArgs struct {
	Targets  map[string]string `json:"targets"`
	Interval time.Duration     `json:"interval"`
	Timeout  time.Duration     `json:"timeout"`
}

// conn is one prober connection as it reports it.
type conn struct {
	target, backend string
	start           time.Time
	err             string
}

// warmProber starts the prober and lets it reach both backends through
// both balancers, then waits a random part of the checks' common period
// (see jitter), so that the event can happen at T0 = now.
func (b *bench) warmProber() (*e2e.Proc, error) {
	pr, err := b.startProber()
	if err != nil {
		return nil, err
	}
	time.Sleep(warmup + rand.N(jitter))
	return pr, nil
}

func (b *bench) startProber() (*e2e.Proc, error) {
	a, err := json.Marshal(proberArgs{
		Targets:  map[string]string{"tether": tetherVIP, "haproxy": haproxyVIP + ":80"},
		Interval: 10 * time.Millisecond, Timeout: time.Second,
	})
	if err != nil {
		return nil, err
	}
	p, err := b.lb.Start(b.lb.Client, "prober", []string{probeEnv + "=" + string(a)}, e2e.Self())
	if err != nil {
		return nil, err
	}
	if err := p.WaitFor(e2e.Ready, 10*time.Second); err != nil {
		p.Stop()
		return nil, err
	}
	return p, nil
}

// stopProber ends the prober and parses what it recorded.
func stopProber(p *e2e.Proc) ([]conn, error) {
	if err := p.Signal(syscall.SIGTERM); err != nil {
		return nil, fmt.Errorf("stop the prober: %w", err)
	}
	if err := p.Wait(10 * time.Second); err != nil {
		return nil, fmt.Errorf("prober: %w\n%s", err, p.Output())
	}
	var conns []conn
	sc := bufio.NewScanner(strings.NewReader(p.Output()))
	for sc.Scan() {
		f := strings.SplitN(sc.Text(), " ", 5)
		if len(f) < 4 || f[0] != "conn" {
			continue
		}
		ns, err := strconv.ParseInt(f[2], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("prober line %q: %w", sc.Text(), err)
		}
		c := conn{target: f[1], start: time.Unix(0, ns), backend: f[3]}
		if len(f) == 5 {
			c.err = f[4]
		}
		conns = append(conns, c)
	}
	if len(conns) == 0 {
		return nil, fmt.Errorf("the prober recorded nothing:\n%s", p.Output())
	}
	return conns, nil
}

// runProber opens a new connection (an HTTP/1.1 GET with keep-alive off)
// to each target every interval until SIGTERM, each in its own goroutine
// so that a connection hanging on a dead backend does not delay the
// next, and prints "conn TARGET START_UNIX_NS BACKEND [ERROR]" for each
// (BACKEND "-" on error), once it ends. START is taken just before the
// dial: the SYN is what the balancer decides on.
func runProber(args string) error {
	var a proberArgs
	if err := json.Unmarshal([]byte(args), &a); err != nil {
		return fmt.Errorf("arguments %q: %w", args, err)
	}
	if len(a.Targets) == 0 || a.Interval <= 0 || a.Timeout <= 0 {
		return fmt.Errorf("arguments %q: want targets, a positive interval and timeout", args)
	}
	client := &http.Client{
		Timeout:   a.Timeout,
		Transport: &http.Transport{DisableKeepAlives: true, DialContext: (&net.Dialer{Timeout: a.Timeout}).DialContext},
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, os.Interrupt)
	var mu sync.Mutex
	out := bufio.NewWriter(os.Stdout)
	var wg sync.WaitGroup
	probe := func(name, addr string) {
		defer wg.Done()
		start := time.Now()
		backend, err := ask(client, "http://"+addr+"/")
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			fmt.Fprintf(out, "conn %s %d - %s\n", name, start.UnixNano(), strings.ReplaceAll(err.Error(), "\n", " "))
			return
		}
		fmt.Fprintf(out, "conn %s %d %s\n", name, start.UnixNano(), backend)
	}
	var names []string
	for n := range a.Targets {
		names = append(names, n)
	}
	slices.Sort(names)
	// Interleave: target k fires k/len of an interval after target 0.
	step := a.Interval / time.Duration(len(names))
	t := time.NewTicker(step)
	defer t.Stop()
	fmt.Println(e2e.Ready)
	for k := 0; ; k++ {
		select {
		case <-stop:
			wg.Wait()
			mu.Lock()
			defer mu.Unlock()
			return out.Flush()
		case <-t.C:
			n := names[k%len(names)]
			wg.Add(1)
			go probe(n, a.Targets[n])
		}
	}
}

// ask makes one request on a new connection and returns the backend
// that answered.
func ask(c *http.Client, url string) (string, error) {
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("status %s", resp.Status)
	}
	name := resp.Header.Get("X-Backend")
	if name == "" {
		return "", errors.New("no X-Backend header")
	}
	return name, nil
}
