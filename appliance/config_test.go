package appliance

import (
	"net/netip"
	"strings"
	"testing"
)

func TestParseConfig(t *testing.T) {
	c, err := ParseConfig([]byte(`hostname: lb1
interfaces:
  - {name: eth0, addresses: [10.0.0.1/24, "2001:db8::1/64"], mtu: 9000}
routes:
  - {to: default, via: 10.0.0.254}
  - {to: "2001:db8:1::/48", via: "2001:db8::fe"}
housekeeping_cpus: [0, 1]
shell: false
`))
	if err != nil {
		t.Fatal(err)
	}
	if c.Hostname != "lb1" || c.Role != RoleUnit || c.Shell || len(c.Interfaces) != 1 || c.Interfaces[0].MTU != 9000 ||
		len(c.Routes) != 2 || len(c.HousekeepingCPUs) != 2 || c.Sysctl["net.ipv4.ip_forward"] != "1" {
		t.Fatalf("parsed %+v", c)
	}
	if p, err := c.Routes[0].Prefix(); err != nil || p.String() != "0.0.0.0/0" {
		t.Errorf("default route: %v %v", p, err)
	}
}

// Every problem names the key, the value and why.
func TestParseConfigErrors(t *testing.T) {
	for _, tc := range []struct{ yaml, want string }{
		{"role: router\n", `role: "router": must be unit or agent`},
		{"interfaces: [{name: eth0, addresses: [10.0.0.1]}]\n", `interfaces[0].addresses[0]: "10.0.0.1": want address/prefix`},
		{"interfaces: [{name: eth0, mtu: 100}]\n", `interfaces[0].mtu: "100"`},
		{"routes: [{to: default}]\n", `routes[0].via: "": give via, dev or both`},
		{"routes: [{to: nowhere, via: 10.0.0.1}]\n", `routes[0].to: "nowhere"`},
		{"housekeeping_cpus: [-1]\n", `housekeeping_cpus[0]: "-1"`},
		{"colour: blue\n", "colour"},
		{"interfaces: {eth0: up}\n", "interfaces"},
	} {
		_, err := ParseConfig([]byte(tc.yaml))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: got %v, want an error containing %q", tc.yaml, err, tc.want)
		}
	}
}

func TestCmdline(t *testing.T) {
	cl, err := ParseCmdline("BOOT_IMAGE=/vmlinuz console=ttyS0 tether.disk=/dev/vdb tether.role=agent tether.hostname=b1 " +
		"tether.ip=eth0=10.0.0.5/24 tether.ip=eth0=10.0.1.5/24 tether.ip=eth1=192.168.0.2/24 tether.route=default=10.0.0.254 " +
		"tether.shell=0 tether.config=dW5pdDoge30K quiet")
	if err != nil {
		t.Fatal(err)
	}
	if cl.Disk != "vdb" || string(cl.Config) != "unit: {}\n" {
		t.Fatalf("disk %q config %q", cl.Disk, cl.Config)
	}
	c := Defaults()
	c.Interfaces = []Interface{{Name: "eth0", Addresses: []string{"10.9.9.9/24"}, MTU: 1400}}
	if err := cl.Apply(c); err != nil {
		t.Fatal(err)
	}
	// The command line's addresses replace the disk's for eth0 and
	// keep its MTU; eth1 is new.
	if c.Role != RoleAgent || c.Hostname != "b1" || c.Shell || len(c.Interfaces) != 2 ||
		strings.Join(c.Interfaces[0].Addresses, ",") != "10.0.0.5/24,10.0.1.5/24" || c.Interfaces[0].MTU != 1400 ||
		c.Interfaces[1].Name != "eth1" || len(c.Routes) != 1 {
		t.Fatalf("applied: %+v", c)
	}
}

func TestCmdlineErrors(t *testing.T) {
	for _, tc := range []struct{ line, want string }{
		{"tether.colour=blue", "tether.colour"},
		{"tether.config=!!!", `tether.config: "!!!": not base64`},
		{"tether.ip=10.0.0.1/24", "want interface=address/prefix"},
		{"tether.route=10.0.0.1", "want destination=gateway"},
		{"tether.shell=maybe", "want 1 or 0"},
		{"tether.disk=", "want a block device name"},
	} {
		_, err := ParseCmdline(tc.line)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: got %v, want an error containing %q", tc.line, err, tc.want)
		}
	}
	// A bad value in an otherwise good parameter fails Apply, naming it.
	cl, err := ParseCmdline("tether.ip=eth0=10.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	if err := cl.Apply(Defaults()); err == nil || !strings.Contains(err.Error(), `"10.0.0.1"`) {
		t.Errorf("apply: %v", err)
	}
}

func FuzzConfig(f *testing.F) {
	f.Add([]byte("hostname: a\ninterfaces: [{name: eth0, addresses: [10.0.0.1/24]}]\n"))
	f.Add([]byte("routes: [{to: default, via: 10.0.0.254}]\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseConfig(b)
		if err == nil {
			usable(t, c)
		}
	})
}

func FuzzCmdline(f *testing.F) {
	f.Add("console=ttyS0 tether.ip=eth0=10.0.0.1/24 tether.route=default=10.0.0.254")
	f.Add("tether.config=dW5pdDoge30K tether.disk=none tether.shell=1")
	f.Fuzz(func(t *testing.T, line string) {
		cl, err := ParseCmdline(line)
		if err != nil {
			return
		}
		c := Defaults()
		if cl.Apply(c) == nil {
			usable(t, c)
		}
	})
}

// usable fails unless everything applyNetwork parses does parse.
func usable(t *testing.T, c *Config) {
	t.Helper()
	for _, ifc := range c.Interfaces {
		for _, a := range ifc.Addresses {
			if _, err := netip.ParsePrefix(a); err != nil {
				t.Fatalf("accepted address %q: %v", a, err)
			}
		}
	}
	for _, r := range c.Routes {
		if _, err := r.Prefix(); err != nil {
			t.Fatalf("accepted route %+v: %v", r, err)
		}
		if r.Via != "" {
			if _, err := netip.ParseAddr(r.Via); err != nil {
				t.Fatalf("accepted gateway %q: %v", r.Via, err)
			}
		}
	}
}
