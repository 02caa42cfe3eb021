package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/tetherlb/tether/api/unit"
	"github.com/tetherlb/tether/e2e"
)

// tetherSide is Tether's cluster: one `tetherd run` per unit, the nat
// VIP with each unit's own SNAT address and the other's as standby, the
// atom manager at replication level 1 (with two units, every atom is
// held by both).
type tetherSide struct {
	lb      *e2e.LB
	units   []*unitNode
	dir     string
	tetherd string
	pollGap time.Duration
	logf    func(string, ...any)
	run     []*tetherUnit
	// polls are the probes' admin round trips.
	mu    sync.Mutex
	polls []time.Duration
}

// tetherUnit is one running unit.
type tetherUnit struct {
	node   *unitNode
	name   string
	runDir string
	proc   *e2e.Proc
	admin  *http.Client
}

// tetherConfig is unit i's configuration (the shape of e2e/dam_test.go's
// cluster, with the nat VIP toward the backends' bridge addresses and
// no host streams: no agents run, and the cluster's own tls section
// takes the place of the hosts' default).
func (t *tetherSide) config(u *unitNode, runDir string) string {
	var standby, peers, backends []string
	for _, o := range t.units {
		peers = append(peers, fmt.Sprintf("%q", o.ip+":7946"))
		if o != u {
			standby = append(standby, snatOf(o.i))
		}
	}
	for i := range nBackends {
		backends = append(backends, fmt.Sprintf("      - {name: b%d, address: %s}\n", i, t.lb.BackendIP(i)))
	}
	name := fmt.Sprintf("tether-%d", u.i+1)
	certs := filepath.Join(t.dir, "certs")
	return fmt.Sprintf(`unit:
  name: %s
  address4: %s
forwarder:
  port: {driver: afxdp, interface: %s, pin_dir: %s}
vips:
  - name: web-nat
    address: %s
    port: 80
    protocol: tcp
    mode: nat
    snat: [%s]
    snat_standby: [%s]
    backends:
%scluster:
  bind: "%s:7946"
  listen: "%s:7947"
  peers: [%s]
  key_file: %s
  replication: 1
  probe_interval: 200ms
  probe_timeout: 100ms
  pull_wait: 3s
  tls: {ca: %s, cert: %s, key: %s}
admin:
  socket: %s
  run_dir: %s
`, name, u.ip, u.ifc, t.lb.PinDir, vip, snatOf(u.i), strings.Join(standby, ", "), strings.Join(backends, ""),
		u.ip, u.ip, strings.Join(peers, ", "), filepath.Join(t.dir, "cluster.key"),
		filepath.Join(certs, "ca.crt"), filepath.Join(certs, "unit-"+name+".crt"), filepath.Join(certs, "unit-"+name+".key"),
		filepath.Join(runDir, "admin.sock"), runDir)
}

func (t *tetherSide) start() error {
	if err := os.WriteFile(filepath.Join(t.dir, "cluster.key"), []byte(strings.Repeat("k", 32)), 0o600); err != nil {
		return fmt.Errorf("cluster key: %w", err)
	}
	args := []string{"certs", "--dir", filepath.Join(t.dir, "certs")}
	for _, u := range t.units {
		args = append(args, "--unit", fmt.Sprintf("tether-%d", u.i+1))
	}
	if out, err := exec.Command(t.tetherd, args...).CombinedOutput(); err != nil {
		return fmt.Errorf("tetherd %s: %w: %s", strings.Join(args, " "), err, out)
	}
	for _, u := range t.units {
		tu := &tetherUnit{node: u, name: fmt.Sprintf("tether-%d", u.i+1), runDir: filepath.Join(t.dir, fmt.Sprintf("run-%d", u.i))}
		tu.admin = adminClient(filepath.Join(tu.runDir, "admin.sock"))
		path := filepath.Join(t.dir, fmt.Sprintf("tether-%d.yaml", u.i))
		if err := os.WriteFile(path, []byte(t.config(u, tu.runDir)), 0o644); err != nil {
			return fmt.Errorf("tether config: %w", err)
		}
		p, err := t.lb.Start(u.ns, "tetherd run "+tu.name, nil, t.tetherd, "run", "--config", path)
		if err != nil {
			return err
		}
		tu.proc = p
		t.run = append(t.run, tu)
		if err := p.WaitFor("forwarder connected", 15*time.Second); err != nil {
			return err
		}
	}
	// Ready: each unit streams to the other and pulled from it.
	for _, tu := range t.run {
		var v unit.AtomsView
		err := poll(30*time.Second, func() error {
			var err error
			if v, err = tu.atoms(context.Background(), "", 1); err != nil {
				return err
			}
			if !v.Ready || len(v.Peers) != len(t.units)-1 {
				return fmt.Errorf("%s not ready: %+v", tu.name, v)
			}
			for _, p := range v.Peers {
				if !p.Connected || !p.Pulled {
					return fmt.Errorf("%s not ready: %+v", tu.name, v)
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("%w\n%s", err, tu.proc.Output())
		}
	}
	t.logf("both units ready")
	return nil
}

// adminClient talks HTTP to a unit's admin socket, keeping its
// connection.
func adminClient(sock string) *http.Client {
	return &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		},
		MaxIdleConnsPerHost: 2,
	}}
}

// get reads the admin API's path into v.
func (tu *tetherUnit) get(ctx context.Context, path string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://unit"+path, nil)
	if err != nil {
		return err
	}
	resp, err := tu.admin.Do(req)
	if err != nil {
		return fmt.Errorf("%s: GET %s: %w", tu.name, path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: GET %s: %s", tu.name, path, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		return fmt.Errorf("%s: GET %s: %w", tu.name, path, err)
	}
	return nil
}

// atoms lists the unit's atoms whose key starts with prefix.
func (tu *tetherUnit) atoms(ctx context.Context, prefix string, limit int) (unit.AtomsView, error) {
	q := url.Values{"limit": {strconv.Itoa(limit)}}
	if prefix != "" {
		q.Set("prefix", prefix)
	}
	var v unit.AtomsView
	err := tu.get(ctx, "/v1/atoms?"+q.Encode(), &v)
	return v, err
}

// routeKey is the route atom of the client's connection from port.
func routeKey(port int) string {
	return fmt.Sprintf("route/tcp/%s:%d>%s:80", e2e.ClientAddr, port, vip)
}

// replicated polls both units in a tight loop until each lists the
// route atom: the replica's (not the adder's) sighting ends the window.
func (t *tetherSide) replicated(ctx context.Context, port int) (origin, replica time.Time, err error) {
	key := routeKey(port)
	type seen struct {
		at     time.Time
		origin bool
		err    error
	}
	ch := make(chan seen, len(t.run))
	for _, tu := range t.run {
		go func() {
			var last error
			var polls []time.Duration
			defer func() {
				t.mu.Lock()
				t.polls = append(t.polls, polls...)
				t.mu.Unlock()
			}()
			for ctx.Err() == nil {
				begin := time.Now()
				v, err := tu.atoms(ctx, key, 1)
				polls = append(polls, time.Since(begin))
				if err != nil {
					last = err
					continue
				}
				if v.Matched > 0 && v.Page[0].Key == key {
					ch <- seen{at: time.Now(), origin: v.Page[0].Adder == tu.name}
					return
				}
				if t.pollGap > 0 {
					time.Sleep(t.pollGap)
				}
			}
			ch <- seen{err: fmt.Errorf("%s never listed %s: %v (last error: %v)", tu.name, key, ctx.Err(), last)}
		}()
	}
	var errs []string
	for range t.run {
		s := <-ch
		switch {
		case s.err != nil:
			errs = append(errs, s.err.Error())
		case s.origin:
			origin = s.at
		default:
			replica = s.at
		}
	}
	if replica.IsZero() {
		return origin, replica, fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	return origin, replica, nil
}

// afterProbes reports the admin round trips of the probes' polls and
// the atom manager's own add-to-acknowledgement lag.
func (t *tetherSide) afterProbes() []string {
	t.mu.Lock()
	polls := sortedCopy(t.polls)
	t.mu.Unlock()
	notes := []string{fmt.Sprintf("a probe's poll of a unit's admin API took %.0f µs median, %.0f µs p99 (%d polls): the window's resolution",
		float64(percentile(polls, 0.5).Nanoseconds())/1e3, float64(percentile(polls, 0.99).Nanoseconds())/1e3, len(polls))}
	for _, tu := range t.run {
		v, err := tu.atoms(context.Background(), "", 1)
		if err != nil {
			notes = append(notes, fmt.Sprintf("%s: %v", tu.name, err))
			continue
		}
		for _, p := range v.Peers {
			notes = append(notes, fmt.Sprintf("%s → %s, the atom manager's own add-to-acknowledgement lag over its last batches: %.2f ms median, %.2f ms p99 (%d atoms sent)",
				tu.name, p.Name, p.LagMedian, p.LagP99, p.Sent))
		}
	}
	return notes
}

// afterTakeover reports how the survivor continued the dead unit's
// connections: its punts and its atom manager's queries.
func (t *tetherSide) afterTakeover(u *unitNode) []string {
	tu := t.run[u.i]
	var st unit.Status
	if err := tu.get(context.Background(), "/v1/status", &st); err != nil {
		return []string{fmt.Sprintf("%s after the takeover: %v", tu.name, err)}
	}
	v, err := tu.atoms(context.Background(), "", 1)
	if err != nil {
		return []string{fmt.Sprintf("%s after the takeover: %v", tu.name, err)}
	}
	return []string{fmt.Sprintf("the survivor %s after the takeover: punts %+v; atom queries answered here %d, by another unit %d, by none %d",
		tu.name, st.Punts, v.Counts.QueryLocal, v.Counts.QueryRemote, v.Counts.QueryMisses)}
}

// carried lists the client ports of the live route atoms unit u added.
func (t *tetherSide) carried(u *unitNode) (map[int]bool, error) {
	tu := t.run[u.i]
	v, err := tu.atoms(context.Background(), fmt.Sprintf("route/tcp/%s:", e2e.ClientAddr), unit.MaxAtomsPage)
	if err != nil {
		return nil, err
	}
	ports := map[int]bool{}
	for _, a := range v.Page {
		if a.Adder != tu.name || a.Zombie {
			continue
		}
		if p, ok := portOf(a.Key); ok {
			ports[p] = true
		}
	}
	return ports, nil
}

// holds counts the ports whose live route atom unit u holds.
func (t *tetherSide) holds(u *unitNode, ports map[int]bool) (int, error) {
	v, err := t.run[u.i].atoms(context.Background(), fmt.Sprintf("route/tcp/%s:", e2e.ClientAddr), unit.MaxAtomsPage)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, a := range v.Page {
		if p, ok := portOf(a.Key); ok && ports[p] && !a.Zombie {
			n++
		}
	}
	return n, nil
}

// portOf is the client's port in a route atom's key.
func portOf(key string) (int, bool) {
	rest, ok := strings.CutPrefix(key, fmt.Sprintf("route/tcp/%s:", e2e.ClientAddr))
	if !ok {
		return 0, false
	}
	p, _, ok := strings.Cut(rest, ">")
	if !ok {
		return 0, false
	}
	n, err := strconv.Atoi(p)
	return n, err == nil
}

// kill ends unit u as a crash does: SIGKILL to its control process and
// to the forwarder it started (a process group of its own).
func (t *tetherSide) kill(u *unitNode) error {
	tu := t.run[u.i]
	pid := tu.forwarderPID()
	if err := tu.proc.Signal(syscall.SIGKILL); err != nil {
		return fmt.Errorf("kill %s's control process: %w", tu.name, err)
	}
	if pid > 0 {
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			return fmt.Errorf("kill %s's forwarder (pid %d): %w", tu.name, pid, err)
		}
	}
	return nil
}

// deadCheck waits for unit u's processes to go.
func (t *tetherSide) deadCheck(u *unitNode) string {
	tu := t.run[u.i]
	var gone []string
	if err := tu.proc.Wait(5 * time.Second); err == nil || !strings.Contains(err.Error(), "killed") {
		gone = append(gone, fmt.Sprintf("control process: %v", err))
	}
	if pid := tu.forwarderPID(); pid > 0 {
		if err := poll(5*time.Second, func() error {
			if syscall.Kill(pid, 0) == nil {
				return fmt.Errorf("forwarder (pid %d) still running 5 s after SIGKILL", pid)
			}
			return nil
		}); err != nil {
			gone = append(gone, err.Error())
		}
	} else {
		gone = append(gone, "no forwarder PID file")
	}
	return strings.Join(gone, "; ")
}

// forwarderPID reads the PID file the control process writes.
func (tu *tetherUnit) forwarderPID() int {
	b, err := os.ReadFile(filepath.Join(tu.runDir, "forwarder.pid"))
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid
}

func (t *tetherSide) notes() []string {
	return []string{
		"Tether: two units (`tetherd run`, AF_XDP on their bridge veths), the nat VIP with each unit's own SNAT address and the other's as `snat_standby`; the atom manager at replication 1 (both units hold every atom), probe_interval 200ms, probe_timeout 100ms",
		fmt.Sprintf("Tether's window ends when the replica's admin API (GET /v1/atoms?prefix=KEY on its unix socket, polled from this process from just before connect(), as is the adder's, %s between polls) first lists the route atom; each poll costs a JSON round trip, which the figure includes", gapText(t.pollGap)),
	}
}

// diagnose shows each live unit's atom manager and status.
func (t *tetherSide) diagnose() string {
	var b strings.Builder
	for _, tu := range t.run {
		select {
		case <-tu.proc.Done():
			fmt.Fprintf(&b, "%s: not running\n", tu.name)
			continue
		default:
		}
		v, err := tu.atoms(context.Background(), "", 1)
		fmt.Fprintf(&b, "%s atoms: %+v %v\n", tu.name, v, err)
		var st map[string]any
		err = tu.get(context.Background(), "/v1/status", &st)
		js, _ := json.Marshal(st)
		fmt.Fprintf(&b, "%s status: %s %v\n", tu.name, js, err)
	}
	return b.String()
}

// close ends every unit as kill does (its control process first, so
// that no forwarder is restarted) and waits for the processes to go:
// a forwarder that outlived its control process would hold the output
// pipe the network's Close waits on.
func (t *tetherSide) close() {
	for _, tu := range t.run {
		_ = tu.proc.Signal(syscall.SIGKILL) // it may be gone already
		if pid := tu.forwarderPID(); pid > 0 {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		if err := tu.proc.Wait(10 * time.Second); err != nil && !strings.Contains(err.Error(), "killed") {
			t.logf("cleanup: %s: %v", tu.name, err)
		}
	}
}

func gapText(d time.Duration) string {
	if d == 0 {
		return "nothing"
	}
	return d.String()
}
