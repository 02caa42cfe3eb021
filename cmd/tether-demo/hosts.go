package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/tetherlb/tether/e2e"
)

// The tunnel and l7 VIPs' hosts. Each backend is also a host:
// tether-agent there holds the unit's host stream (mutual TLS), restores
// the tunnel's packets in XDP from the mappings the unit sends, and takes
// the connections the unit migrates (TCP_REPAIR), handing them to a Go
// HTTP server on the agent's listener shim. The hosts answer the client
// directly. Both VIPs are each host's own addresses (on lo), and the
// tunnel keeps the client's destination port, so the servers listen at
// the VIPs' ports: the tunnel VIP's is the :80 server's (the ipip VIP's
// too), the l7 VIP's the shim's, at l7Port.
const (
	tunnelVIP  = "192.0.2.50"
	l7VIP      = "192.0.2.40"
	l7Port     = 8000
	unitName   = "demo"
	policyRule = "100" // the hosts' routing table for what the VIP sends
	// routerAddr is the switched network's router on the bridge
	// (e2e.NewSwitchedLB).
	routerAddr = "10.0.0.254"
)

// l7Path is the path prefix the l7 VIP's rules send to backend i.
func l7Path(i int) string { return fmt.Sprintf("/b%d/", i) }

// tunnelAddr is backend i's tunnel address (its agent adds it to the
// host's link): the unit reaches the host there.
func tunnelAddr(lb *e2e.LB, i int) string {
	if lb.Driver == "tun" {
		return fmt.Sprintf("10.0.%d.100", 10+i)
	}
	return fmt.Sprintf("10.0.0.%d", 100+i)
}

// unitAddrFor is the unit's address as backend i reaches it.
func unitAddrFor(lb *e2e.LB, i int) string {
	if lb.Driver == "tun" {
		return fmt.Sprintf("10.0.%d.1", 10+i)
	}
	return lb.UnitIP
}

// hosts is what the demo runs on the backends for the l7 VIP.
type hosts struct {
	lb    *e2e.LB
	agent string // the tether-agent binary
	dir   string // the demo's directory
}

func (h *hosts) certs() string { return filepath.Join(h.dir, "certs") }

// prepare issues the certificates (the unit's and one per host, naming
// its tunnel address) and gives every host the VIPs. Before the unit
// starts: its configuration names the certificates.
func (h *hosts) prepare(tetherd string) error {
	args := []string{"certs", "--dir", h.certs(), "--unit", unitName}
	for i := range h.lb.Backends {
		args = append(args, "--host", fmt.Sprintf("%d=%s", i+1, tunnelAddr(h.lb, i)))
	}
	if out, err := exec.Command(tetherd, args...).CombinedOutput(); err != nil {
		return fmt.Errorf("tetherd certs: %v\n%s", err, out)
	}
	for i, ns := range h.lb.Backends {
		cmds := [][]string{{"ip", "addr", "add", tunnelVIP + "/32", "dev", "lo"}, {"ip", "addr", "add", l7VIP + "/32", "dev", "lo"}}
		if h.lb.Driver != "tun" {
			// On the switched network the hosts answer these VIPs'
			// clients by way of the router, not through the unit's
			// machine; their other traffic (the nat and halfnat VIPs'
			// replies) keeps its route through the unit.
			cmds = append(cmds, []string{"ip", "route", "add", "default", "via", routerAddr, "table", policyRule},
				[]string{"ip", "rule", "add", "from", tunnelVIP, "table", policyRule},
				[]string{"ip", "rule", "add", "from", l7VIP, "table", policyRule})
		}
		for _, cmd := range cmds {
			if err := h.lb.Run(ns, cmd...); err != nil {
				return fmt.Errorf("b%d: %w", i, err)
			}
		}
	}
	return nil
}

// start runs an agent on every host, waits until the unit has their
// streams, then starts each host's server on its agent's shim and waits
// until the agent lists it.
func (h *hosts) start(admin admin) error {
	bpf, err := h.lb.BPFDir()
	if err != nil {
		return err
	}
	var agents []e2e.HostAgent
	for i, ns := range h.lb.Backends {
		a := e2e.HostAgent{ID: i + 1, IP: h.lb.BackendIP(i), Unit: unitAddrFor(h.lb, i), UnitName: unitName, Certs: h.certs(),
			Tunnel: tunnelAddr(h.lb, i), PinDir: filepath.Join(bpf, fmt.Sprintf("host-b%d", i)),
			Dir: filepath.Join(h.dir, fmt.Sprintf("host-b%d", i))}
		if err := os.MkdirAll(a.Dir, 0o755); err != nil {
			return err
		}
		path := filepath.Join(a.Dir, "agent.yaml")
		if err := os.WriteFile(path, a.Config(), 0o644); err != nil {
			return fmt.Errorf("agent b%d configuration: %w", i, err)
		}
		p, err := h.lb.Start(ns, fmt.Sprintf("agent b%d", i), nil, h.agent, "run", "--config", path)
		if err != nil {
			return err
		}
		if err := p.WaitFor("agent running", 10*time.Second); err != nil {
			return err
		}
		agents = append(agents, a)
	}
	if err := e2e.Poll(15*time.Second, func() error {
		up, err := admin.streamsUp()
		if err == nil && up != len(h.lb.Backends) {
			err = fmt.Errorf("%d of %d hosts' streams up", up, len(h.lb.Backends))
		}
		return err
	}); err != nil {
		return err
	}
	for i, ns := range h.lb.Backends {
		p, err := h.lb.Start(ns, fmt.Sprintf("shim httpd b%d", i),
			e2e.RoleCommand("shimhttpd", fmt.Sprintf("b%d", i), fmt.Sprintf("%s:%d", l7VIP, l7Port), agents[i].Handoff()), e2e.Self())
		if err != nil {
			return err
		}
		if err := p.WaitFor(e2e.Ready, 10*time.Second); err != nil {
			return err
		}
		if err := e2e.Poll(10*time.Second, func() error {
			out, err := h.lb.Exec(ns, h.agent, "--socket", agents[i].API(), "migrations", "-o", "json")
			if err != nil {
				return err
			}
			var v struct {
				Shims []json.RawMessage `json:"shims"`
			}
			if err := json.Unmarshal([]byte(out), &v); err != nil {
				return fmt.Errorf("tether-agent migrations: %w", err)
			}
			if len(v.Shims) != 1 {
				return fmt.Errorf("agent b%d lists %d listener shims, want 1", i, len(v.Shims))
			}
			return nil
		}); err != nil {
			return err
		}
	}
	return nil
}
