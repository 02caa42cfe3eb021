// Command tether-demo shows Tether forwarding real TCP connections: it
// builds a small network of namespaces (a client, a router, the unit and
// three backends), starts a unit (tetherd run: the control process and
// the forwarder) on it with an embedded configuration, and a tether-agent
// on every backend for the tunnel and l7 VIPs, asks Tether which backend a
// connection will get, runs the traffic through each VIP (through the l7
// VIP on a path per backend, which its rules route by), and prints per
// VIP and backend what the client saw beside what Tether counted (read
// from its admin API). Then it removes everything again. It needs root.
package main

import (
	"bytes"
	_ "embed"
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/template"
	"time"

	"github.com/tetherlb/tether/e2e"
)

//go:embed demo.yaml
var configTemplate string

// Source ports: VIP k's connections come from portBase+k*portStride
// onwards and the download from downloadPort, all below Linux's
// ephemeral range (32768 up), so every connection has a port of its own
// that the demo chose and could ask Tether about beforehand.
const (
	portBase       = 10000
	portStride     = 5000
	downloadPort   = portBase - 1
	maxConnections = portStride
	ephemeralFirst = 32768
	parallel       = 8
	downloadSize   = 20 << 20
	downloadVIP    = "web-nat"
)

// options are the demo's flags.
type options struct {
	tetherd, agent, port, jsonPath string
	conns                          int
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == clientVerb {
		if err := runClient(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "tether-demo client:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	e2e.RunRoleFromEnv() // the demo's servers are this binary too
	var o options
	flag.StringVar(&o.tetherd, "tetherd", "tetherd", "path of the tetherd binary")
	flag.StringVar(&o.agent, "agent", "", "path of the tether-agent binary (default: beside --tetherd)")
	flag.StringVar(&o.port, "port", "afxdp", "forwarder port: afxdp or tun")
	flag.IntVar(&o.conns, "connections", 300, fmt.Sprintf("connections per VIP (1 to %d)", maxConnections))
	flag.StringVar(&o.jsonPath, "json", "", "also write the final table to this file as JSON")
	flag.Parse()
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "tether-demo:", err)
		os.Exit(1)
	}
}

func step(format string, args ...any) {
	fmt.Printf("==> "+format+"\n", args...)
}

func detail(format string, args ...any) {
	fmt.Printf("    "+format+"\n", args...)
}

func run(o options) error {
	if err := e2e.Root(); err != nil {
		return fmt.Errorf("the demo %v; run it as root: sudo make demo", err)
	}
	if o.conns < 1 || o.conns > maxConnections {
		return fmt.Errorf("--connections %d: want 1 to %d", o.conns, maxConnections)
	}
	if _, err := os.Stat(o.tetherd); err != nil {
		return fmt.Errorf("tetherd binary %s: %w (make demo builds it)", o.tetherd, err)
	}
	tetherd, err := filepath.Abs(o.tetherd)
	if err != nil {
		return fmt.Errorf("tetherd binary: %w", err)
	}
	if o.agent == "" {
		o.agent = filepath.Join(filepath.Dir(tetherd), "tether-agent")
	}
	agent, err := filepath.Abs(o.agent)
	if err == nil {
		_, err = os.Stat(agent)
	}
	if err != nil {
		return fmt.Errorf("tether-agent binary %s: %w (make demo builds it)", o.agent, err)
	}
	// The configuration, the admin socket and the control process's run
	// directory (with the forwarder's PID file).
	dir, err := os.MkdirTemp("", "tether-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	// The agents' API and hand-off sockets are in dir, which the
	// servers' shims, not root's alone, must reach.
	if err := os.Chmod(dir, 0o755); err != nil {
		return err
	}
	admin := newAdmin(filepath.Join(dir, "admin.sock"))
	weights := []int{1, 2, 3}
	var lb *e2e.LB
	switch o.port {
	case "afxdp":
		step("building the demo network: a client behind a router, the unit and %d backends on a bridge (network namespaces, veth pairs)", len(weights))
		lb, err = e2e.NewSwitchedLB("d", len(weights))
	case "tun":
		step("building the demo network: a client, the unit and %d backends, each on a veth pair to the unit (network namespaces)", len(weights))
		lb, err = e2e.NewLB("d", len(weights))
	default:
		return fmt.Errorf("--port %q: want afxdp or tun", o.port)
	}
	if err != nil {
		return fmt.Errorf("build the demo network: %w", err)
	}
	defer func() {
		step("removing the demo network")
		if err := lb.Close(); err != nil {
			fmt.Fprintln(os.Stderr, err)
		}
		stopForwarder(dir)
	}()
	// An interrupt still tears the network down.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-sig
		lb.Close()
		stopForwarder(dir)
		os.RemoveAll(dir)
		os.Exit(1)
	}()
	detail("client %s, unit %s (%s), backends %s", e2e.ClientAddr, lb.UnitIP, lb.UnitIf, strings.Join(backendIPs(lb), ", "))

	step("starting the backends' servers")
	if err := lb.StartBackends(8080); err != nil {
		return err
	}
	for i := range weights {
		if err := lb.StartHTTP(i, 80); err != nil {
			return err
		}
		if err := lb.StartIPIPDecap(i, "192.0.2.30"); err != nil {
			return err
		}
		detail("b%d %s: HTTP on :8080 (nat, halfnat) and on :80 behind an IP-in-IP decapsulator (ipip)", i, lb.BackendIP(i))
	}
	h := &hosts{lb: lb, agent: agent, dir: dir}
	if err := h.prepare(tetherd); err != nil {
		return err
	}
	detail("certificates for the unit and the %d hosts (tetherd certs); the tunnel and l7 VIPs %s and %s on every host's lo", len(weights), tunnelVIP, l7VIP)

	cfg, err := render(lb, weights, dir, h.certs())
	if err != nil {
		return err
	}
	path := filepath.Join(dir, "tether.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		return err
	}
	step("starting tetherd run (control process and forwarder, %s port on %s)", o.port, lb.UnitIf)
	td, err := lb.Start(lb.Unit, "tetherd", nil, tetherd, "run", "--config", path)
	if err != nil {
		return err
	}
	// In order: the forwarder has its port, it has connected to the
	// control process, and that has pushed it the configuration.
	for _, event := range []string{"forwarding", "forwarder connected", "connection inventory read"} {
		if err := td.WaitFor(event, 15*time.Second); err != nil {
			return err
		}
	}
	step("starting tether-agent on every backend (host streams, the tunnel's XDP program, migration), then each host's HTTP server on its agent's listener shim")
	if err := h.start(admin); err != nil {
		return err
	}
	for i := range weights {
		detail("b%d: agent up, stream to the unit up, tunnel address %s; HTTP on %s:%d through the shim (l7), the :80 server for the tunnel VIP", i, tunnelAddr(lb, i), l7VIP, l7Port)
	}
	vips, err := admin.vips()
	if err != nil {
		return err
	}
	if n := len(vips); n == 0 || portBase+(n-1)*portStride+o.conns > ephemeralFirst {
		return fmt.Errorf("%d VIPs: the demo has source ports for 1 to %d", n, (ephemeralFirst-portBase)/portStride)
	}
	if !slices.ContainsFunc(vips, func(v apiVIP) bool { return v.Name == downloadVIP }) {
		return fmt.Errorf("no VIP %s for the download among those tetherd reports", downloadVIP)
	}
	detail("admin API on %s; VIPs: %s", filepath.Join(dir, "admin.sock"), vipNames(vips))

	step("sending traffic from the client: %d new TCP connections per VIP, %d at a time, one HTTP request each (through %s, a third on each of %s)",
		o.conns, parallel, "web-l7", strings.Join(l7Paths(len(weights)), " "))
	conns := make([][]connResult, len(vips))
	for k, v := range vips {
		base := fmt.Sprintf("http://%s", netip.AddrPortFrom(netip.MustParseAddr(v.Address), v.Port))
		paths := []string{"/"}
		if v.Mode == "l7" {
			paths = l7Paths(len(weights))
		}
		for j, path := range paths {
			// The connections split evenly over the paths, the first
			// ones taking what does not divide.
			n := o.conns / len(paths)
			if j < o.conns%len(paths) {
				n++
			}
			if n == 0 {
				continue
			}
			url := base + path
			p := newProgress(fmt.Sprintf("%-12s %-8s %-26s", v.Name, v.Mode, url), n)
			got, err := clientRun(lb, url, portBase+k*portStride+len(conns[k]), n, parallel, p.update)
			p.finish()
			if err != nil {
				return err
			}
			conns[k] = append(conns[k], got...)
		}
	}
	res := result{Port: o.port, Download: download{VIP: downloadVIP, Want: downloadSize}}
	for k, v := range vips {
		if v.Name != downloadVIP {
			continue
		}
		src := netip.AddrPortFrom(netip.MustParseAddr(e2e.ClientAddr), downloadPort)
		if res.Download.Predicted, err = admin.choose(v, src); err != nil {
			return err
		}
		step("one %d MiB download through %s from %s, checked by SHA-256; Tether says (GET /v1/explain) %s will serve it",
			downloadSize>>20, v.Name, src, res.Download.Predicted)
		url := fmt.Sprintf("http://%s/bytes?n=%d", netip.AddrPortFrom(netip.MustParseAddr(v.Address), v.Port), downloadSize)
		big, err := clientRun(lb, url, downloadPort, 1, 1, func(int, int) {})
		if err != nil {
			return err
		}
		d := big[0]
		res.Download.Backend, res.Download.Bytes, res.Download.Error = d.Backend, d.Bytes, d.Err
		res.Download.Intact = d.Err == "" && d.Bytes == downloadSize && d.SHA256 == e2e.PayloadSHA256(downloadSize)
		detail("%d bytes from %s: %s", d.Bytes, d.Backend, map[bool]string{true: "intact", false: "DAMAGED"}[res.Download.Intact])
		conns[k] = append(conns[k], d)
	}

	step("reading Tether's counters (GET /v1/backends)")
	counters, err := admin.backends()
	if err != nil {
		return err
	}
	for k, v := range vips {
		res.VIPs = append(res.VIPs, tally(v, conns[k], counters))
		if v.Mode == "l7" {
			res.L7.Connections += len(conns[k])
		}
	}
	step("reading the acceptor's account of the l7 VIP (GET /v1/l7)")
	l7, err := admin.l7()
	if err != nil {
		return err
	}
	s := l7.Stats
	res.L7.Migrated, res.L7.Uploaded, res.L7.UploadFailed, res.L7.Ended = s.Migrated, s.Uploaded, s.UploadFailed, s.Ended

	step("stopping tetherd")
	if err := td.Signal(syscall.SIGTERM); err != nil {
		return err
	}
	if err := td.Wait(15 * time.Second); err != nil {
		return fmt.Errorf("tetherd: %w\n%s", err, td.Output())
	}

	res.print(os.Stdout)
	if o.jsonPath != "" {
		if err := res.writeJSON(o.jsonPath); err != nil {
			return err
		}
	}
	if ps := res.problems(); len(ps) > 0 {
		return errors.New(strings.Join(ps, "\n  "))
	}
	return nil
}

// stopForwarder kills a forwarder that outlived its control process
// (the control process stops it on SIGTERM, but not when killed), so
// that nothing keeps running once the network is gone.
func stopForwarder(dir string) {
	b, err := os.ReadFile(filepath.Join(dir, "run", "forwarder.pid"))
	if err != nil {
		return
	}
	if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 1 {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}

type backendView struct {
	Name, IP     string
	Weight       int
	Tunnel, Path string // the l7 VIP's: the host's tunnel address, its rule's path
}

// l7Paths are the paths the l7 VIP's rules send to each of n backends.
func l7Paths(n int) []string {
	var ps []string
	for i := range n {
		ps = append(ps, l7Path(i))
	}
	return ps
}

func render(lb *e2e.LB, weights []int, dir, certs string) (string, error) {
	t, err := template.New("demo").Parse(configTemplate)
	if err != nil {
		return "", fmt.Errorf("demo.yaml: %w", err)
	}
	var bs []backendView
	for i, w := range weights {
		bs = append(bs, backendView{Name: fmt.Sprintf("b%d", i), IP: lb.BackendIP(i), Weight: w, Tunnel: tunnelAddr(lb, i), Path: l7Path(i)})
	}
	var b bytes.Buffer
	err = t.Execute(&b, map[string]any{"UnitIP": lb.UnitIP, "Driver": lb.Driver, "Interface": lb.UnitIf, "Backends": bs,
		"Socket": filepath.Join(dir, "admin.sock"), "RunDir": filepath.Join(dir, "run"),
		"TunnelVIP": tunnelVIP, "L7VIP": l7VIP, "L7Port": l7Port, "HostsPort": e2e.HostsPort, "Certs": certs, "UnitName": unitName})
	if err != nil {
		return "", fmt.Errorf("demo.yaml: %w", err)
	}
	return b.String(), nil
}

func backendIPs(lb *e2e.LB) []string {
	var ips []string
	for i := range lb.Backends {
		ips = append(ips, lb.BackendIP(i))
	}
	return ips
}

func vipNames(vs []apiVIP) string {
	var names []string
	for _, v := range vs {
		names = append(names, fmt.Sprintf("%s (%s)", v.Name, v.Mode))
	}
	return strings.Join(names, ", ")
}
