package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestUnitsBehindECMP: three units serve one tunnel VIP behind a router
// that spreads it over them with equal-cost multipath (each flow hashed
// by its addresses and ports), the topology several units share VIPs
// on. Each host's agent streams to every unit and restores every unit's
// tunnel flows; new connections spread over the three units, every one
// completes, and the hosts answer the client directly. The units share
// no state yet (issue 15): a connection lives as long as the router
// keeps its path.
func TestUnitsBehindECMP(t *testing.T) {
	lb := newLB(t, "xe", 2, NewSwitchedLB)
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	type unitAt struct {
		name, ns, ifc, ip string
	}
	units := []unitAt{{"tether-1", lb.Unit, lb.UnitIf, lb.UnitIP}}
	for i := 1; i < 3; i++ {
		ns, ifc, ip, err := lb.AddUnit(i)
		if err != nil {
			t.Fatal(err)
		}
		units = append(units, unitAt{fmt.Sprintf("tether-%d", i+1), ns, ifc, ip})
	}
	var addrs []string
	for _, u := range units {
		addrs = append(addrs, u.ip)
	}
	if err := lb.SpreadVIPs(addrs); err != nil {
		t.Fatal(err)
	}

	certs := filepath.Join(dir, "certs")
	args := []string{"certs", "--dir", certs}
	for _, u := range units {
		args = append(args, "--unit", u.name)
	}
	for i := range lb.Backends {
		args = append(args, "--host", fmt.Sprintf("%d=%s", i+1, tunnelAddr(lb, i)))
	}
	if out, err := exec.Command(tetherd, args...).CombinedOutput(); err != nil {
		t.Fatalf("tetherd %v: %v\n%s", args, err, out)
	}
	if err := lb.StartBackends(80); err != nil {
		t.Fatal(err)
	}
	for _, ns := range lb.Backends {
		// The VIP is the hosts' own; they answer by way of the router.
		if err := lb.Run(ns, "ip", "addr", "add", "192.0.2.10/32", "dev", "lo"); err != nil {
			t.Fatal(err)
		}
		if err := lb.Run(ns, "ip", "route", "replace", "default", "via", "10.0.0.254"); err != nil {
			t.Fatal(err)
		}
	}
	var running []*runningUnit
	for _, u := range units {
		cfg := fmt.Sprintf(`unit:
  name: %s
  address4: %s
forwarder:
  port: {driver: afxdp, interface: %s%s}
vips:
  - name: web
    address: 192.0.2.10
    port: 80
    protocol: tcp
    mode: tunnel
    backends:
      - {name: b0, address: %s}
      - {name: b1, address: %s}
hosts:
  listen: "%s:7320"
  tls: {ca: %s, cert: %s, key: %s}
`, u.name, u.ip, u.ifc, pinDir(lb), tunnelAddr(lb, 0), tunnelAddr(lb, 1), u.ip,
			filepath.Join(certs, "ca.crt"), filepath.Join(certs, "unit-"+u.name+".crt"), filepath.Join(certs, "unit-"+u.name+".key"))
		running = append(running, startUnitIn(t, lb, u.ns, cfg))
	}

	// Each host's agent streams to every unit.
	var names []string
	for _, u := range units {
		names = append(names, u.name)
	}
	startClusterAgents(t, lb, dir, certs, names, addrs, "")
	for _, u := range running {
		waitStreamsUp(t, u, len(lb.Backends))
	}

	res := client(t, lb, "http://192.0.2.10/", 300, 8)
	if res.Errors != 0 || res.Backends["b0"] == 0 || res.Backends["b1"] == 0 {
		t.Fatalf("300 connections through three units: %+v", res)
	}
	total := uint64(0)
	for i, u := range running {
		r := u.report()
		var flows, replies uint64
		for _, b := range r.Backends {
			flows += b.NewFlows
			replies += b.ReplyPackets
		}
		total += flows
		t.Logf("unit %s: %d of the connections", units[i].name, flows)
		st := unitStreams(t, u).Tunnel
		if flows == 0 || replies != 0 || st.NoHost != 0 || nonZero(r.Drops)["mapping_timeout"] != 0 {
			t.Errorf("unit %s: %d new flows, %d replies, tunnel %+v, drops %v: want some of the connections, no reply, every mapping confirmed",
				units[i].name, flows, replies, st, nonZero(r.Drops))
		}
	}
	if total < 300 {
		t.Errorf("the units made %d flows for 300 connections", total)
	}
}

// startClusterAgents starts an agent on every host: its stream to each
// unit (names, at addresses ips: port 7320; health to port 7310) and
// the host side of the tunnels on its tunnel address, with its local
// API on dir/agent-bI.sock. The certificates in certs are tetherd
// certs' (host I+1). splice, when not empty, is an l7 VIP (address:port)
// whose migrated connections each agent splices to the host's server
// on 127.0.0.1 at the VIP's port.
func startClusterAgents(t *testing.T, lb *LB, dir, certs string, names, ips []string, splice string) {
	t.Helper()
	bpf, err := lb.BPFDir()
	if err != nil {
		t.Fatal(err)
	}
	for i := range lb.Backends {
		var health, streams []string
		for j, name := range names {
			health = append(health, fmt.Sprintf("%q", ips[j]+":7310"))
			streams = append(streams, fmt.Sprintf("{name: %s, address: %q}", name, ips[j]+":7320"))
		}
		id := i + 1
		cfg := fmt.Sprintf(`host: {id: %d, listen: "%s:7311"}
units: [%s]
api: {socket: %s}
streams:
  units: [%s]
  tls: {ca: %s, cert: %s, key: %s}
tunnel:
  interface: e0
  addresses: [%s]
  pin_dir: %s
`, id, lb.BackendIP(i), strings.Join(health, ", "), filepath.Join(dir, fmt.Sprintf("agent-b%d.sock", i)), strings.Join(streams, ", "),
			filepath.Join(certs, "ca.crt"), filepath.Join(certs, fmt.Sprintf("host-%d.crt", id)), filepath.Join(certs, fmt.Sprintf("host-%d.key", id)),
			tunnelAddr(lb, i), filepath.Join(bpf, fmt.Sprintf("host-b%d", i)))
		if splice != "" {
			_, port, _ := strings.Cut(splice, ":")
			cfg += fmt.Sprintf("migration:\n  enabled: true\n  handoff_socket: %s\n  splice:\n    - {vip: %q, to: \"127.0.0.1:%s\", proxy_protocol: none}\n",
				filepath.Join(dir, fmt.Sprintf("handoff-b%d.sock", i)), splice, port)
		}
		startAgentConfig(t, lb, dir, i, cfg)
	}
}
