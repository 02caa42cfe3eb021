// Command lbbench measures whole-system throughput: it builds the
// namespace topology, runs Tether (AF_XDP, then TUN) or the Linux kernel
// doing the same job with nftables DNAT, and drives small-packet UDP,
// HTTP keep-alive requests, new connections and a bulk download through
// each from the client namespace, then prints one table with the ratios
// to the kernel. The unit's worker is pinned to core 1 and the load
// generators to core 0. It needs root.
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"text/template"
	"time"

	"github.com/tetherlb/tether/e2e"
)

type result struct {
	setup             string
	pps, rps, cps, mb float64
	// par is MiB/s of many concurrent downloads.
	par   float64
	notes []string
}

func main() {
	e2e.RunRoleFromEnv()
	tetherd := flag.String("tetherd", "bin/tetherd", "tetherd binary")
	secs := flag.Float64("seconds", 5, "duration of each load")
	bulk := flag.Int64("bulk", 1<<30, "bytes of the bulk download")
	qlen := flag.Int("queue-length", 0, "forwarder.port.queue_length for the TUN setup (0: the default)")
	flag.Parse()
	if err := e2e.Root(); err != nil {
		fmt.Fprintln(os.Stderr, "lbbench:", err)
		os.Exit(1)
	}
	abs, _ := filepath.Abs(*tetherd)
	var results []result
	for _, setup := range []string{"nft", "tether-afxdp", "tether-tun"} {
		fmt.Fprintf(os.Stderr, "==> %s\n", setup)
		r, err := measure(setup, abs, *secs, *bulk, *qlen)
		if err != nil {
			fmt.Fprintf(os.Stderr, "lbbench: %s: %v\n", setup, err)
			os.Exit(1)
		}
		results = append(results, r)
	}
	report(results)
}

const backends = 3

const tetherConfig = `unit: {address4: {{.UnitIP}}}
forwarder:
  port: {driver: {{.Driver}}, interface: {{.If}}{{if .QueueLength}}, queue_length: {{.QueueLength}}{{end}}}
  cores: [1]
  flows: {max: 262144}
vips:
  - name: web
    address: 192.0.2.10
    port: 80
    protocol: tcp
    mode: halfnat
    backends:
{{- range .Backends}}
      - {address: {{.}}, port: 8080}
{{- end}}
  - name: udp
    address: 192.0.2.10
    port: 9
    protocol: udp
    mode: halfnat
    backends:
{{- range .Backends}}
      - {address: {{.}}, port: 9}
{{- end}}
`

// Many concurrent downloads: bursts from hundreds of TCP senders at
// once, which a short device queue turns into losses.
const parallel, parallelSize = 200, 4 << 20

func measure(setup, tetherd string, secs float64, bulk int64, qlen int) (result, error) {
	res := result{setup: setup}
	var lb *e2e.LB
	var err error
	if setup == "tether-tun" {
		lb, err = e2e.NewLB("b", backends)
	} else {
		lb, err = e2e.NewSwitchedLB("b", backends)
	}
	if err != nil {
		return res, err
	}
	defer lb.Close()
	if err := lb.StartBackends(8080); err != nil {
		return res, err
	}
	var ips []string
	for i := range backends {
		ips = append(ips, lb.BackendIP(i))
	}
	var td *e2e.Proc
	switch setup {
	case "nft":
		if err := nftDNAT(lb, ips); err != nil {
			return res, err
		}
	default:
		t := template.Must(template.New("c").Parse(tetherConfig))
		var b bytes.Buffer
		if err := t.Execute(&b, map[string]any{"UnitIP": lb.UnitIP, "Driver": lb.Driver, "If": lb.UnitIf, "Backends": ips, "QueueLength": qlen}); err != nil {
			return res, err
		}
		dir, err := os.MkdirTemp("", "lbbench-")
		if err != nil {
			return res, err
		}
		defer os.RemoveAll(dir)
		path := filepath.Join(dir, "tether.yaml")
		if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
			return res, err
		}
		if td, err = lb.Start(lb.Unit, "tetherd", nil, tetherd, "forwarder", "--config", path); err != nil {
			return res, err
		}
		if err := td.WaitFor("forwarding", 15*time.Second); err != nil {
			return res, err
		}
	}

	// Small-packet UDP: 18-byte payloads (64-byte frames) from 256
	// source ports, counted by sinks on the backends.
	var sinks []*e2e.Proc
	for i, ns := range lb.Backends {
		p, err := lb.Start(ns, fmt.Sprintf("sink b%d", i), e2e.RoleCommand("udpsink", "0.0.0.0:9"), e2e.Self())
		if err != nil {
			return res, err
		}
		if err := p.WaitFor(e2e.Ready, 10*time.Second); err != nil {
			return res, err
		}
		sinks = append(sinks, p)
	}
	var flood e2e.LoadResult
	if err := role(lb, &flood, "udpflood", "192.0.2.10:9", "256", "18", fmt.Sprint(secs)); err != nil {
		return res, err
	}
	time.Sleep(200 * time.Millisecond) // let queues drain
	var got int64
	for _, s := range sinks {
		if err := s.Signal(syscall.SIGTERM); err != nil {
			return res, err
		}
		s.Wait(5 * time.Second)
		var n int64
		if _, err := fmt.Sscanf(lastLine(s.Output()), "received %d", &n); err != nil {
			return res, fmt.Errorf("sink output %q: %w", s.Output(), err)
		}
		got += n
	}
	res.pps = float64(got) / flood.Seconds
	res.notes = append(res.notes, fmt.Sprintf("UDP: %.0f pps offered, %.1f%% delivered", float64(flood.Sent)/flood.Seconds, 100*float64(got)/float64(max(flood.Sent, 1))))

	var keep, fresh e2e.LoadResult
	if err := role(lb, &keep, "load", "http://192.0.2.10/", "16", fmt.Sprint(secs), "true"); err != nil {
		return res, err
	}
	res.rps = float64(keep.Requests) / keep.Seconds
	if err := role(lb, &fresh, "load", "http://192.0.2.10/", "16", fmt.Sprint(secs), "false"); err != nil {
		return res, err
	}
	res.cps = float64(fresh.Requests) / fresh.Seconds
	if keep.Errors+fresh.Errors > 0 {
		res.notes = append(res.notes, fmt.Sprintf("HTTP errors: %d keep-alive, %d new-connection", keep.Errors, fresh.Errors))
	}
	start := time.Now()
	var dl e2e.ClientResult
	if err := role(lb, &dl, "client", fmt.Sprintf("http://192.0.2.10/bytes?n=%d", bulk), "1", "1"); err != nil {
		return res, err
	}
	if dl.Errors > 0 || dl.Bytes != bulk || dl.SHA256 != e2e.PayloadSHA256(bulk) {
		return res, fmt.Errorf("bulk download damaged: %+v", dl)
	}
	res.mb = float64(bulk) / (1 << 20) / time.Since(start).Seconds()
	start = time.Now()
	var pdl e2e.ClientResult
	if err := role(lb, &pdl, "client", fmt.Sprintf("http://192.0.2.10/bytes?n=%d", parallelSize), fmt.Sprint(parallel), fmt.Sprint(parallel)); err != nil {
		return res, err
	}
	if pdl.Errors > 0 {
		return res, fmt.Errorf("%d of %d parallel downloads failed: %s", pdl.Errors, parallel, pdl.FirstErr)
	}
	res.par = float64(parallel*parallelSize) / (1 << 20) / time.Since(start).Seconds()
	if td != nil {
		td.Stop()
	}
	return res, nil
}

// nftDNAT makes the unit's kernel do the job: DNAT from the VIP to the
// backends (jhash of the client's address and port for TCP, numgen for
// UDP), with conntrack reversing the replies, which the backends send
// through the unit.
func nftDNAT(lb *e2e.LB, ips []string) error {
	var m []string
	for i, ip := range ips {
		m = append(m, fmt.Sprintf("%d : %s", i, ip))
	}
	rules := fmt.Sprintf(`table ip lbbench {
  chain pre {
    type nat hook prerouting priority dstnat; policy accept;
    ip daddr 192.0.2.10 tcp dport 80 dnat to jhash ip saddr . tcp sport mod %[1]d map { %[2]s } : 8080
    ip daddr 192.0.2.10 udp dport 9 dnat to numgen inc mod %[1]d map { %[2]s }
  }
}
`, len(ips), strings.Join(m, ", "))
	path := filepath.Join(os.TempDir(), fmt.Sprintf("lbbench-%d.nft", os.Getpid()))
	if err := os.WriteFile(path, []byte(rules), 0o644); err != nil {
		return err
	}
	defer os.Remove(path)
	return lb.Run(lb.Unit, "nft", "-f", path)
}

// role runs a load role in the client namespace on core 0 and decodes its
// JSON output into v.
func role(lb *e2e.LB, v any, name string, args ...string) error {
	cmd := append([]string{"env"}, e2e.RoleCommand(name, args...)...)
	cmd = append(cmd, "taskset", "-c", "0", e2e.Self())
	out, err := lb.Exec(lb.Client, cmd...)
	if err != nil {
		return err
	}
	if err := json.Unmarshal([]byte(lastLine(out)), v); err != nil {
		return fmt.Errorf("%s output %q: %w", name, out, err)
	}
	return nil
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

func report(rs []result) {
	var base *result
	for i := range rs {
		if rs[i].setup == "nft" {
			base = &rs[i]
		}
	}
	ratio := func(a, b float64) string {
		if b == 0 {
			return "-"
		}
		return fmt.Sprintf("%.2f×", a/b)
	}
	fmt.Printf("| setup | UDP packets/s | HTTP keep-alive req/s | new connections/s | bulk MiB/s | %d parallel downloads MiB/s |\n", parallel)
	fmt.Println("|---|---|---|---|---|---|")
	for _, r := range rs {
		fmt.Printf("| %s | %.0f (%s) | %.0f (%s) | %.0f (%s) | %.0f (%s) | %.0f (%s) |\n", r.setup,
			r.pps, ratio(r.pps, base.pps), r.rps, ratio(r.rps, base.rps), r.cps, ratio(r.cps, base.cps), r.mb, ratio(r.mb, base.mb), r.par, ratio(r.par, base.par))
	}
	fmt.Println()
	for _, r := range rs {
		for _, n := range r.notes {
			fmt.Printf("- %s: %s\n", r.setup, n)
		}
	}
	if base == nil {
		fmt.Fprintln(os.Stderr, errors.New("no nft baseline"))
	}
}
