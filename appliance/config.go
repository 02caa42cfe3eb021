package appliance

import (
	"encoding/base64"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/tetherlb/tether/internal/confcheck"
)

// Roles: what the appliance runs.
const (
	RoleUnit  = "unit"  // tetherd run with tether.yaml
	RoleAgent = "agent" // tether-agent run with agent.yaml, on a backend
)

// Config is appliance.yaml: the machine around the product. Everything
// about load balancing stays in tether.yaml (or agent.yaml).
type Config struct {
	Hostname   string      `mapstructure:"hostname"`
	Role       string      `mapstructure:"role"`
	Interfaces []Interface `mapstructure:"interfaces"`
	Routes     []Route     `mapstructure:"routes"`
	// Sysctl settings, "net.ipv4.ip_forward": "1".
	Sysctl map[string]string `mapstructure:"sysctl"`
	// HousekeepingCPUs run init, the control process, the agent and the
	// shell; forwarder workers pin themselves elsewhere (forwarder.cores).
	// Empty means CPU 0 when the machine has more than one.
	HousekeepingCPUs []int `mapstructure:"housekeeping_cpus"`
	// Shell keeps a root shell on the serial console.
	Shell bool `mapstructure:"shell"`
}

// Interface configures one NIC, named as the kernel names it (eth0,
// eth1… in PCI order).
type Interface struct {
	Name      string   `mapstructure:"name"`
	Addresses []string `mapstructure:"addresses"`
	MTU       int      `mapstructure:"mtu"`
}

// Route is a static route; To "default" is 0.0.0.0/0 (or ::/0 when Via
// is IPv6).
type Route struct {
	To  string `mapstructure:"to"`
	Via string `mapstructure:"via"`
	Dev string `mapstructure:"dev"`
}

// Defaults: a unit that forwards, with a console shell.
func Defaults() *Config {
	return &Config{Role: RoleUnit, Shell: true, Hostname: "tether",
		Sysctl: map[string]string{"net.ipv4.ip_forward": "1", "net.ipv6.conf.all.forwarding": "1"}}
}

// ParseConfig reads appliance.yaml over the defaults; every problem
// names its key, its value and why.
func ParseConfig(b []byte) (*Config, error) {
	c := Defaults()
	if err := confcheck.DecodeYAML(confcheck.NewViper(nil, ""), b, c); err != nil {
		return nil, fmt.Errorf("appliance.yaml: %w", err)
	}
	if err := c.Check(); err != nil {
		return nil, fmt.Errorf("appliance.yaml: %w", err)
	}
	return c, nil
}

// problems collects errors in "key: value: reason" form.
type problems = confcheck.Problems

// Check validates c.
func (c *Config) Check() error {
	var p problems
	if c.Role != RoleUnit && c.Role != RoleAgent {
		p.Add("role", c.Role, "must be unit or agent")
	}
	if len(c.Hostname) > 63 || strings.ContainsAny(c.Hostname, " /\t") {
		p.Add("hostname", c.Hostname, "must be a host name of at most 63 characters")
	}
	for i, ifc := range c.Interfaces {
		key := fmt.Sprintf("interfaces[%d]", i)
		if ifc.Name == "" || len(ifc.Name) > 15 {
			p.Add(key+".name", ifc.Name, "must be an interface name (eth0)")
		}
		for j, a := range ifc.Addresses {
			if _, err := netip.ParsePrefix(a); err != nil {
				p.Add(fmt.Sprintf("%s.addresses[%d]", key, j), a, "want address/prefix, e.g. 10.0.0.1/24")
			}
		}
		if ifc.MTU != 0 && (ifc.MTU < 576 || ifc.MTU > 65535) {
			p.Add(key+".mtu", ifc.MTU, "must be between 576 and 65535")
		}
	}
	for i, r := range c.Routes {
		key := fmt.Sprintf("routes[%d]", i)
		if _, err := r.Prefix(); err != nil {
			p.Add(key+".to", r.To, "want default or address/prefix")
		}
		if r.Via == "" && r.Dev == "" {
			p.Add(key+".via", r.Via, "give via, dev or both")
		} else if r.Via != "" {
			if _, err := netip.ParseAddr(r.Via); err != nil {
				p.Add(key+".via", r.Via, "want an address")
			}
		}
	}
	for k := range c.Sysctl {
		if k == "" || strings.Contains(k, "..") || strings.ContainsAny(k, "/ ") {
			p.Add("sysctl", k, "want a dotted name, e.g. net.ipv4.ip_forward")
		}
	}
	for i, cpu := range c.HousekeepingCPUs {
		if cpu < 0 || cpu > 1023 {
			p.Add(fmt.Sprintf("housekeeping_cpus[%d]", i), cpu, "must be a CPU number")
		}
	}
	return p.Err()
}

// Prefix is the route's destination.
func (r Route) Prefix() (netip.Prefix, error) {
	if r.To == "default" {
		if strings.Contains(r.Via, ":") {
			return netip.MustParsePrefix("::/0"), nil
		}
		return netip.MustParsePrefix("0.0.0.0/0"), nil
	}
	return netip.ParsePrefix(r.To)
}

// Cmdline is what the kernel command line says to the appliance: every
// tether.* parameter. It overrides the config disk, and alone can
// configure a unit with no disk at all.
type Cmdline struct {
	// Disk names the config disk's block device (vda); "none" means
	// there is none and tether.config must carry the configuration.
	Disk string
	// Config and Agent are tether.yaml and agent.yaml, base64-encoded.
	Config, Agent []byte
	Role          string
	Hostname      string
	// IPs: "eth0=10.0.0.1/24" (repeatable).
	Interfaces []Interface
	// Routes: "default=10.0.0.254" or "192.0.2.0/24=10.0.0.254".
	Routes []Route
	Shell  *bool
}

// ParseCmdline reads /proc/cmdline's text. Unknown tether.* parameters
// and bad values are errors naming the parameter; everything else on the
// line belongs to the kernel and is ignored.
func ParseCmdline(line string) (*Cmdline, error) {
	var c Cmdline
	var p problems
	for _, f := range strings.Fields(line) {
		key, val, _ := strings.Cut(f, "=")
		name, ok := strings.CutPrefix(key, "tether.")
		if !ok {
			continue
		}
		switch name {
		case "disk":
			c.Disk = strings.TrimPrefix(val, "/dev/")
			if c.Disk == "" || strings.Contains(c.Disk, "/") {
				p.Add(key, val, "want a block device name such as vda, or none")
			}
		case "config", "agent":
			b, err := base64.StdEncoding.DecodeString(val)
			if err != nil {
				p.Add(key, shorten(val), "not base64: %v", err)
				continue
			}
			if name == "config" {
				c.Config = b
			} else {
				c.Agent = b
			}
		case "role":
			c.Role = val
		case "hostname":
			c.Hostname = val
		case "ip":
			ifc, addr, ok := strings.Cut(val, "=")
			if !ok {
				p.Add(key, val, "want interface=address/prefix, e.g. eth0=10.0.0.1/24")
				continue
			}
			c.Interfaces = append(c.Interfaces, Interface{Name: ifc, Addresses: []string{addr}})
		case "route":
			to, via, ok := strings.Cut(val, "=")
			if !ok {
				p.Add(key, val, "want destination=gateway, e.g. default=10.0.0.254")
				continue
			}
			c.Routes = append(c.Routes, Route{To: to, Via: via})
		case "shell":
			b, err := strconv.ParseBool(val)
			if err != nil {
				p.Add(key, val, "want 1 or 0")
				continue
			}
			c.Shell = &b
		default:
			p.Add(key, val, "unknown parameter (known: tether.disk, tether.config, tether.agent, tether.role, tether.hostname, tether.ip, tether.route, tether.shell)")
		}
	}
	return &c, p.Err()
}

func shorten(s string) string {
	if len(s) > 20 {
		return s[:20] + "…"
	}
	return s
}

// Apply lays the command line over c (the disk's appliance.yaml or the
// defaults): scalar settings replace; an interface named on the command
// line takes the command line's addresses (all its tether.ip=) instead of
// the disk's; routes add.
func (cl *Cmdline) Apply(c *Config) error {
	if cl.Role != "" {
		c.Role = cl.Role
	}
	if cl.Hostname != "" {
		c.Hostname = cl.Hostname
	}
	if cl.Shell != nil {
		c.Shell = *cl.Shell
	}
	replaced := map[string]bool{}
	for _, ifc := range cl.Interfaces {
		i := slices.IndexFunc(c.Interfaces, func(x Interface) bool { return x.Name == ifc.Name })
		switch {
		case i < 0:
			c.Interfaces = append(c.Interfaces, Interface{Name: ifc.Name, Addresses: slices.Clone(ifc.Addresses)})
		case !replaced[ifc.Name]:
			c.Interfaces[i].Addresses = slices.Clone(ifc.Addresses)
		default:
			c.Interfaces[i].Addresses = append(c.Interfaces[i].Addresses, ifc.Addresses...)
		}
		replaced[ifc.Name] = true
	}
	c.Routes = append(c.Routes, cl.Routes...)
	return c.Check()
}
