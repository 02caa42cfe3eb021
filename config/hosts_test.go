package config

import "testing"

func TestHostsConfig(t *testing.T) {
	clearEnv(t)
	c, err := Parse([]byte("hosts: {listen: \"10.0.0.1:7320\", tls: {ca: /etc/tether/ca.crt, cert: /etc/tether/unit.crt, key: /etc/tether/unit.key}}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Hosts.Listen != "10.0.0.1:7320" || c.Hosts.TLS.Key != "/etc/tether/unit.key" {
		t.Errorf("hosts: %+v", c.Hosts)
	}
	if c, err := Parse([]byte("unit: {name: u}\n")); err != nil || c.Hosts.Listen != "" {
		t.Errorf("no hosts section: %v, %+v", err, c.Hosts)
	}
}
