// Command tether-demo shows Tether forwarding real TCP connections: it
// builds a small network of namespaces (a client, a router, the unit and
// three backends), starts tetherd on it with an embedded configuration,
// runs traffic through each VIP, prints what the client saw and what
// Tether counted, and removes everything again. It needs root.
package main

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"text/template"
	"time"

	"github.com/tetherlb/tether/e2e"
)

//go:embed demo.yaml
var configTemplate string

func main() {
	e2e.RunRoleFromEnv() // the demo's helpers are this binary too
	tetherd := flag.String("tetherd", "tetherd", "path of the tetherd binary")
	port := flag.String("port", "afxdp", "forwarder port: afxdp or tun")
	conns := flag.Int("connections", 300, "connections per VIP")
	flag.Parse()
	if err := run(*tetherd, *port, *conns); err != nil {
		fmt.Fprintln(os.Stderr, "tether-demo:", err)
		os.Exit(1)
	}
}

func step(format string, args ...any) {
	fmt.Printf("==> "+format+"\n", args...)
}

func run(tetherd, port string, conns int) error {
	if err := e2e.Root(); err != nil {
		return fmt.Errorf("the demo %v; run it as root: sudo make demo", err)
	}
	if _, err := os.Stat(tetherd); err != nil {
		return fmt.Errorf("tetherd binary %s: %w (make demo builds it)", tetherd, err)
	}
	tetherd, _ = filepath.Abs(tetherd)
	weights := []int{1, 2, 3}
	step("building the demo network (client, router, unit and %d backends in network namespaces)", len(weights))
	var lb *e2e.LB
	var err error
	switch port {
	case "afxdp":
		lb, err = e2e.NewSwitchedLB("d", len(weights))
	case "tun":
		lb, err = e2e.NewLB("d", len(weights))
	default:
		return fmt.Errorf("--port %q: want afxdp or tun", port)
	}
	if err != nil {
		return err
	}
	defer func() {
		step("removing the demo network")
		if err := lb.Close(); err != nil {
			fmt.Fprintln(os.Stderr, err)
		}
	}()
	// An interrupt still tears the network down.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	go func() { <-sig; lb.Close(); os.Exit(1) }()

	step("starting HTTP servers on the backends (ports 8080, and 80 behind an IP-in-IP decapsulator)")
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
	}
	cfg, err := render(lb, weights)
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "tether-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "tether.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		return err
	}
	step("starting tetherd on the %s port (%s)", port, lb.UnitIf)
	td, err := lb.Start(lb.Unit, "tetherd", nil, tetherd, "forwarder", "--config", path)
	if err != nil {
		return err
	}
	if err := td.WaitFor("forwarding", 15*time.Second); err != nil {
		return err
	}
	vips := []struct{ name, mode, addr string }{
		{"web-nat", "nat", "192.0.2.10"},
		{"web-halfnat", "halfnat", "192.0.2.20"},
		{"web-dsr", "ipip", "192.0.2.30"},
	}
	results := map[string]e2e.ClientResult{}
	for _, v := range vips {
		step("%d connections to %s (%s, http://%s/) from the client", conns, v.name, v.mode, v.addr)
		r, err := clientRun(lb, fmt.Sprintf("http://%s/", v.addr), conns, 8)
		if err != nil {
			return err
		}
		results[v.name] = r
	}
	step("one 20 MiB download through web-nat, checked by SHA-256")
	const size = 20 << 20
	big, err := clientRun(lb, fmt.Sprintf("http://192.0.2.10/bytes?n=%d", size), 1, 1)
	if err != nil {
		return err
	}
	intact := big.Errors == 0 && big.Bytes == size && big.SHA256 == e2e.PayloadSHA256(size)

	step("stopping tetherd")
	if err := td.Signal(syscall.SIGTERM); err != nil {
		return err
	}
	if err := td.Wait(10 * time.Second); err != nil {
		return fmt.Errorf("tetherd: %w\n%s", err, td.Output())
	}

	fmt.Println()
	fmt.Println("What the client saw (backend weights 1:2:3 for web-nat, equal elsewhere):")
	for _, v := range vips {
		r := results[v.name]
		fmt.Printf("  %-12s %-8s %s", v.name, v.mode, perBackend(r.Backends))
		if r.Errors > 0 {
			fmt.Printf("  (%d failed: %s)", r.Errors, r.FirstErr)
		}
		fmt.Println()
	}
	fmt.Printf("  20 MiB download: %s\n", map[bool]string{true: "arrived intact", false: "DAMAGED: " + big.FirstErr}[intact])
	fmt.Println()
	fmt.Println("What Tether counted:")
	fmt.Print(summaryOf(td.Output()))
	if !intact {
		return errors.New("the download did not arrive intact")
	}
	for _, v := range vips {
		if r := results[v.name]; r.Errors > 0 {
			return fmt.Errorf("%d connections to %s failed", r.Errors, v.name)
		}
	}
	return nil
}

type backendView struct {
	Name, IP string
	Weight   int
}

func render(lb *e2e.LB, weights []int) (string, error) {
	t, err := template.New("demo").Parse(configTemplate)
	if err != nil {
		return "", err
	}
	var bs []backendView
	for i, w := range weights {
		bs = append(bs, backendView{Name: fmt.Sprintf("b%d", i), IP: lb.BackendIP(i), Weight: w})
	}
	var b bytes.Buffer
	err = t.Execute(&b, map[string]any{"UnitIP": lb.UnitIP, "Driver": lb.Driver, "Interface": lb.UnitIf, "Backends": bs})
	return b.String(), err
}

func clientRun(lb *e2e.LB, url string, conns, par int) (e2e.ClientResult, error) {
	args := append([]string{"env"}, append(e2e.RoleCommand("client", url, fmt.Sprint(conns), fmt.Sprint(par)), e2e.Self())...)
	out, err := lb.Exec(lb.Client, args...)
	var r e2e.ClientResult
	if err != nil {
		return r, err
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &r); err != nil {
		return r, fmt.Errorf("client output %q: %w", out, err)
	}
	return r, nil
}

func perBackend(m map[string]int) string {
	var names []string
	for n := range m {
		names = append(names, n)
	}
	sort.Strings(names)
	var parts []string
	for _, n := range names {
		parts = append(parts, fmt.Sprintf("%s:%d", n, m[n]))
	}
	return strings.Join(parts, "  ")
}

// summaryOf returns tetherd's exit summary: what it printed to stdout,
// without its log lines.
func summaryOf(out string) string {
	var keep []string
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, " INF ") || strings.Contains(l, " WRN ") || strings.Contains(l, " ERR ") || l == "" {
			continue
		}
		keep = append(keep, "  "+l)
	}
	return strings.Join(keep, "\n") + "\n"
}
