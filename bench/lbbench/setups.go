package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/template"
	"time"

	"github.com/tetherlb/tether/e2e"
)

// setup is one load balancer and how it runs.
type setup struct {
	name string
	kind string // nft, haproxy, tether; haproxy-http, tether-l7 (l7.go)
	// driver and mode of a Tether setup; unit runs the whole unit
	// (tetherd run: the control process, which starts the forwarder)
	// rather than the forwarder alone.
	driver, mode string
	unit         bool
	// tag is a short namespace tag: with the run number after it, at
	// most 4 characters (interface names are short), and it must not
	// start with a digit, which would read as part of this process's ID
	// in the namespace name, so that any other run's e2e.RemoveStale
	// would take the namespaces for a dead process's and delete them.
	tag string
	// optIn leaves the setup out of the default -setups.
	optIn bool
	// pinUnit confines the whole unit, control process too, to core 1.
	pinUnit bool
	// env is added to tetherd run's environment.
	env []string
}

// peer reports whether the setup is one Tether is compared against.
func (s setup) peer() bool { return !strings.HasPrefix(s.kind, "tether") }

// l7 reports whether the setup is one of the l7 comparison's (l7.go),
// which run their own loads.
func (s setup) l7() bool { return s.kind == "haproxy-http" || s.kind == "tether-l7" }

var allSetups = []setup{
	{name: "nft", kind: "nft", tag: "n"},
	{name: "haproxy", kind: "haproxy", tag: "h"},
	{name: "tether-afxdp-nat", kind: "tether", driver: "afxdp", mode: "nat", tag: "xn"},
	{name: "tether-afxdp-halfnat", kind: "tether", driver: "afxdp", mode: "halfnat", tag: "xh"},
	{name: "tether-tun-nat", kind: "tether", driver: "tun", mode: "nat", tag: "tn"},
	{name: "tether-tun-halfnat", kind: "tether", driver: "tun", mode: "halfnat", tag: "th"},
	{name: "tether-unit-afxdp-nat", kind: "tether", driver: "afxdp", mode: "nat", unit: true, tag: "un"},
	{name: "tether-unit-tun-nat", kind: "tether", driver: "tun", mode: "nat", unit: true, tag: "ut"},
	// The l7 comparison (issue 14), not in the default set: -setups
	// haproxy-http,tether-l7.
	{name: "haproxy-http", kind: "haproxy-http", tag: "hh", optIn: true},
	{name: "tether-l7", kind: "tether-l7", driver: "afxdp", mode: "l7", unit: true, tag: "l", optIn: true},
	// The whole unit confined to core 1 with taskset, against the
	// operations guide's advice: its control process cannot leave the
	// worker's core and waits behind the spinning worker.
	{name: "tether-l7-1core", kind: "tether-l7", driver: "afxdp", mode: "l7", unit: true, tag: "lc", optIn: true, pinUnit: true},
	// A diagnosis, not a peer: tetherd run with GOMAXPROCS=2 in its
	// environment. The control process moves itself to core 0 before
	// it starts the forwarder, which inherits that one-core mask, so
	// the Go runtime gives the forwarder one P, which its spinning
	// worker holds: the uplink reads the acceptor's answers only when
	// the worker is preempted (every 10 ms). A second P lets it read
	// them at once.
	{name: "tether-l7-procs2", kind: "tether-l7", driver: "afxdp", mode: "l7", unit: true, tag: "lp", optIn: true, env: []string{"GOMAXPROCS=2"}},
}

func setupNames() []string { return names(allSetups) }

// defaultSetups are the setups measured without -setups.
func defaultSetups() []string {
	var n []string
	for _, s := range allSetups {
		if !s.optIn {
			n = append(n, s.name)
		}
	}
	return n
}

func findSetup(name string) (setup, bool) {
	for _, s := range allSetups {
		if s.name == name {
			return s, true
		}
	}
	return setup{}, false
}

// Addresses and ports every setup shares.
const (
	vip         = "192.0.2.10"
	httpPort    = 8080 // nginx on the backends; the VIP listens on 80
	udpPort     = 9    // UDP sinks on the backends, and the VIP's UDP port
	nBackends   = 3
	tcpSNAT     = "198.51.100.1" // the router sends 198.51.100.0/24 to the unit
	udpSNAT     = "198.51.100.2"
	newFlowSrcs = "10.0.1.64/26" // the client's extra addresses for new-flow UDP
	bulkSize    = 1 << 20
)

// site is the nginx content and configuration shared by the backends.
type site struct {
	dir       string // temporary directory: configs, logs, www/
	indexSize int64
	stream    int64
}

// writeSite writes the backends' documents: a small index page, a
// 1 MiB file and a sparse file for the long stream.
func writeSite(dir string, stream int64) (*site, error) {
	www := filepath.Join(dir, "www")
	if err := os.MkdirAll(www, 0o755); err != nil {
		return nil, fmt.Errorf("site: %w", err)
	}
	index := []byte(indexPage)
	if err := os.WriteFile(filepath.Join(www, "index.html"), index, 0o644); err != nil {
		return nil, fmt.Errorf("site: %w", err)
	}
	if err := os.WriteFile(filepath.Join(www, "1m.bin"), bulkBytes(), 0o644); err != nil {
		return nil, fmt.Errorf("site: %w", err)
	}
	f, err := os.Create(filepath.Join(www, "stream.bin"))
	if err != nil {
		return nil, fmt.Errorf("site: %w", err)
	}
	err = f.Truncate(stream)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("site: sparse stream file: %w", err)
	}
	// Read the holes once so that the page cache holds them: the first
	// read of a sparse file allocates and zeroes every page (about 250
	// MB/s here), which would slow whichever setup came first.
	if err := readThrough(filepath.Join(www, "stream.bin")); err != nil {
		return nil, fmt.Errorf("site: %w", err)
	}
	return &site{dir: dir, indexSize: int64(len(index)), stream: stream}, nil
}

// indexPage is the backends' small page, in nginx's site and in the l7
// rows' Go server alike.
const indexPage = "<html><body>tether lbbench backend</body></html>\n"

// bulkBytes is the 1 MiB file's content.
func bulkBytes() []byte {
	mib := make([]byte, bulkSize)
	for i := range mib {
		mib[i] = byte(i*7 + i>>8)
	}
	return mib
}

// nginxConfig is one backend's nginx: one worker, no access log,
// sendfile, and keep-alive connections that last the whole load (the
// default of 1,000 requests would mix new connections into the
// keep-alive figure). user root: the temporary directory is private.
const nginxConfig = `daemon off;
master_process on;
worker_processes 1;
user root;
pid {{.Dir}}/nginx-{{.Name}}.pid;
error_log {{.Dir}}/nginx-{{.Name}}.err warn;
events { worker_connections 4096; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 1000000;
  keepalive_timeout 60s;
  default_type application/octet-stream;
  client_body_temp_path {{.Dir}}/tmp-{{.Name}}-body;
  proxy_temp_path {{.Dir}}/tmp-{{.Name}}-proxy;
  fastcgi_temp_path {{.Dir}}/tmp-{{.Name}}-fastcgi;
  uwsgi_temp_path {{.Dir}}/tmp-{{.Name}}-uwsgi;
  scgi_temp_path {{.Dir}}/tmp-{{.Name}}-scgi;
  server {
    listen {{.Port}} reuseport backlog=4096;
    root {{.Dir}}/www;
  }
}
`

// startNginx starts nginx in every backend, pinned to core 0, and waits
// until each serves its index page. The network's Close stops them.
func startNginx(lb *e2e.LB, st *site) error {
	t := template.Must(template.New("nginx").Parse(nginxConfig))
	for i, ns := range lb.Backends {
		name := fmt.Sprintf("b%d", i)
		var b bytes.Buffer
		if err := t.Execute(&b, map[string]any{"Dir": st.dir, "Name": name, "Port": httpPort}); err != nil {
			return fmt.Errorf("nginx config: %w", err)
		}
		conf := filepath.Join(st.dir, "nginx-"+name+".conf")
		if err := os.WriteFile(conf, b.Bytes(), 0o644); err != nil {
			return fmt.Errorf("nginx config: %w", err)
		}
		if _, err := lb.Start(ns, "nginx "+name, nil, "taskset", "-c", "0", "nginx", "-p", st.dir, "-c", conf, "-e", "stderr"); err != nil {
			return err
		}
	}
	for i, ns := range lb.Backends {
		url := fmt.Sprintf("http://127.0.0.1:%d/", httpPort)
		if err := e2e.Poll(10*time.Second, func() error {
			return lb.Run(ns, "curl", "-sf", "--max-time", "1", "-o", "/dev/null", url)
		}); err != nil {
			return fmt.Errorf("nginx on backend b%d does not serve: %w", i, err)
		}
	}
	return nil
}

// startSinks starts a UDP sink in every backend, pinned to core 0.
func startSinks(lb *e2e.LB) ([]*e2e.Proc, error) {
	var sinks []*e2e.Proc
	for i, ns := range lb.Backends {
		p, err := lb.Start(ns, fmt.Sprintf("udpsink b%d", i), e2e.RoleCommand("udpsink", fmt.Sprintf("0.0.0.0:%d", udpPort)), "taskset", "-c", "0", e2e.Self())
		if err != nil {
			return nil, err
		}
		if err := p.WaitFor(e2e.Ready, 10*time.Second); err != nil {
			return nil, err
		}
		sinks = append(sinks, p)
	}
	return sinks, nil
}

// addNewFlowSources gives the client the addresses new-flow UDP is sent
// from (the router accepts them: they are inside the client's subnet).
func addNewFlowSources(lb *e2e.LB, dir string) error {
	var b strings.Builder
	for i := range 64 {
		fmt.Fprintf(&b, "address add 10.0.1.%d/24 dev c0\n", 64+i)
	}
	path := filepath.Join(dir, fmt.Sprintf("addrs-%s.ip", filepath.Base(lb.Client)))
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		return fmt.Errorf("client addresses: %w", err)
	}
	defer os.Remove(path)
	return lb.Run(lb.Client, "ip", "-batch", path)
}

// nftRules makes the unit's kernel the load balancer: DNAT from the VIP
// to the backends by a hash of the client's address and port (for UDP
// too, so that an established flow stays on its backend); conntrack
// reverses the replies, which the backends route through the unit.
func nftRules(ips []string) string {
	var m []string
	for i, ip := range ips {
		m = append(m, fmt.Sprintf("%d : %s", i, ip))
	}
	return fmt.Sprintf(`table ip lbbench {
  chain pre {
    type nat hook prerouting priority dstnat; policy accept;
    ip daddr %[3]s tcp dport 80 dnat to jhash ip saddr . tcp sport mod %[1]d map { %[2]s } : %[4]d
    ip daddr %[3]s udp dport %[5]d dnat to jhash ip saddr . udp sport mod %[1]d map { %[2]s } : %[5]d
  }
}
`, len(ips), strings.Join(m, ", "), vip, httpPort, udpPort)
}

// haproxyConfig is HAProxy as a TCP proxy with one thread and its
// defaults otherwise; the timeouts are the ones it warns about when
// missing.
const haproxyConfig = `global
  nbthread 1
defaults
  mode tcp
  timeout connect 5s
  timeout client 30s
  timeout server 30s
frontend vip
  bind {{.VIP}}:80
  default_backend web
backend web
  balance roundrobin
{{- range $i, $ip := .Backends}}
  server b{{$i}} {{$ip}}:{{$.Port}}
{{- end}}
`

// tetherConfig is the unit: one worker pinned to core 1, a TCP and a UDP
// VIP in the row's mode, every other setting at its default.
const tetherConfig = `unit: {address4: {{.UnitIP}}}
{{- if .Admin}}
admin: {socket: {{.Admin}}/admin.sock, run_dir: {{.Admin}}/run}
{{- end}}
forwarder:
  port: {driver: {{.Driver}}, interface: {{.If}}{{if .PinDir}}, pin_dir: {{.PinDir}}{{end}}}
  cores: [1]
vips:
  - name: web
    address: {{.VIP}}
    port: 80
    protocol: tcp
    mode: {{.Mode}}
{{- if eq .Mode "nat"}}
    snat: [{{.TCPSNAT}}]
{{- end}}
    backends:
{{- range $i, $ip := .Backends}}
      - {name: b{{$i}}, address: {{$ip}}, port: {{$.HTTPPort}}}
{{- end}}
  - name: udp
    address: {{.VIP}}
    port: {{.UDPPort}}
    protocol: udp
    mode: {{.Mode}}
{{- if eq .Mode "nat"}}
    snat: [{{.UDPSNAT}}]
{{- end}}
    backends:
{{- range $i, $ip := .Backends}}
      - {name: u{{$i}}, address: {{$ip}}, port: {{$.UDPPort}}}
{{- end}}
`

// startLB starts the setup's load balancer in the unit namespace and
// returns notes on how it runs. The network's Close stops it.
func startLB(lb *e2e.LB, s setup, tetherd, dir string) ([]string, error) {
	var ips []string
	for i := range nBackends {
		ips = append(ips, lb.BackendIP(i))
	}
	tag := filepath.Base(lb.Unit)
	switch s.kind {
	case "nft":
		path := filepath.Join(dir, tag+".nft")
		if err := os.WriteFile(path, []byte(nftRules(ips)), 0o644); err != nil {
			return nil, fmt.Errorf("nft rules: %w", err)
		}
		if err := lb.Run(lb.Unit, "nft", "-f", path); err != nil {
			return nil, err
		}
		return []string{"kernel DNAT in the unit (nftables, conntrack at its defaults); softirq work runs wherever the kernel runs it"}, nil
	case "haproxy":
		var b bytes.Buffer
		t := template.Must(template.New("haproxy").Parse(haproxyConfig))
		if err := t.Execute(&b, map[string]any{"VIP": vip, "Backends": ips, "Port": httpPort}); err != nil {
			return nil, fmt.Errorf("haproxy config: %w", err)
		}
		path := filepath.Join(dir, tag+"-haproxy.cfg")
		if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
			return nil, fmt.Errorf("haproxy config: %w", err)
		}
		// The VIP is a local address of the unit: HAProxy ends the
		// client's connection and opens its own to a backend.
		if err := lb.Run(lb.Unit, "ip", "addr", "add", vip+"/32", "dev", "lo"); err != nil {
			return nil, err
		}
		if _, err := lb.Start(lb.Unit, "haproxy", nil, "taskset", "-c", "1", "haproxy", "-db", "-f", path); err != nil {
			return nil, err
		}
		return []string{"HAProxy mode tcp, nbthread 1, round robin, pinned to core 1; the VIP is a local address of the unit; no UDP"}, nil
	}
	admin := ""
	if s.unit {
		admin = filepath.Join(dir, tag+"-unit")
	}
	var b bytes.Buffer
	t := template.Must(template.New("tether").Parse(tetherConfig))
	if err := t.Execute(&b, map[string]any{
		"UnitIP": lb.UnitIP, "Driver": lb.Driver, "If": lb.UnitIf, "PinDir": lb.PinDir, "VIP": vip,
		"Mode": s.mode, "TCPSNAT": tcpSNAT, "UDPSNAT": udpSNAT, "Backends": ips, "HTTPPort": httpPort, "UDPPort": udpPort,
		"Admin": admin,
	}); err != nil {
		return nil, fmt.Errorf("tether config: %w", err)
	}
	path := filepath.Join(dir, tag+"-tether.yaml")
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		return nil, fmt.Errorf("tether config: %w", err)
	}
	cmd, how := "forwarder", "`tetherd forwarder` alone (no control process)"
	if s.unit {
		cmd, how = "run", "the whole unit (`tetherd run`: the control process and the forwarder it starts, which holds a nat flow's first packet until the control process has its flow)"
	}
	td, err := lb.Start(lb.Unit, "tetherd", nil, tetherd, cmd, "--config", path)
	if err != nil {
		return nil, err
	}
	if err := td.WaitFor("forwarding", 15*time.Second); err != nil {
		return nil, err
	}
	notes := []string{fmt.Sprintf("%s, %s port, one worker pinned to core 1 (forwarder.cores: [1]), other settings at their defaults", how, s.driver)}
	if s.mode == "nat" {
		notes = append(notes, fmt.Sprintf("SNAT addresses %s (TCP) and %s (UDP)", tcpSNAT, udpSNAT))
	}
	return notes, nil
}

// readThrough reads a file to its end.
func readThrough(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.Copy(io.Discard, f)
	return err
}
