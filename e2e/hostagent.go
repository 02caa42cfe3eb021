package e2e

import (
	"fmt"
	"path/filepath"
)

// HostsPort is where the harnesses' units take their hosts' streams
// (hosts.listen).
const HostsPort = 7320

// HostAgent is a tether-agent run as a host of tunnel and l7 VIPs, as the
// demo and lbbench run it: a stream to one unit (mutual TLS, with the
// certificates `tetherd certs` issued), the tunnel's host side on the
// host's link e0, and migration, whose hand-off socket the host's
// listener shims dial.
type HostAgent struct {
	ID       int    // the host's ID, which its certificate names (host-<ID>.crt)
	IP       string // the host's own address
	Unit     string // the unit's address as the host reaches it
	UnitName string // the unit's name, which its certificate names
	Certs    string // the directory `tetherd certs` wrote
	Tunnel   string // the host's tunnel address
	PinDir   string // where the tunnel program's maps are pinned
	Dir      string // the directory of the agent's sockets
}

// API is the agent's API socket (tether-agent --socket).
func (h HostAgent) API() string { return filepath.Join(h.Dir, "agent.sock") }

// Handoff is the agent's hand-off socket, for the listener shims.
func (h HostAgent) Handoff() string { return filepath.Join(h.Dir, "handoff.sock") }

// Config is the agent's configuration file.
func (h HostAgent) Config() []byte {
	cert := func(ext string) string { return filepath.Join(h.Certs, fmt.Sprintf("host-%d.%s", h.ID, ext)) }
	return fmt.Appendf(nil, `host: {id: %d, listen: "%s:7311"}
units: ["%s:7310"]
api: {socket: %s}
streams:
  units: [{name: %s, address: "%s:%d"}]
  tls: {ca: %s, cert: %s, key: %s}
tunnel:
  interface: e0
  addresses: [%s]
  pin_dir: %s
migration:
  enabled: true
  handoff_socket: %s
`, h.ID, h.IP, h.Unit, h.API(), h.UnitName, h.Unit, HostsPort, filepath.Join(h.Certs, "ca.crt"), cert("crt"), cert("key"),
		h.Tunnel, h.PinDir, h.Handoff())
}
