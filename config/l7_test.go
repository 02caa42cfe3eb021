package config

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/tetherlb/tether/api/unit"
)

func TestL7Loads(t *testing.T) {
	clearEnv(t)
	c, err := LoadFile("testdata/l7.yaml")
	if err != nil {
		t.Fatal(err)
	}
	v := &c.VIPs[0]
	if v.ModeValue() != unit.ModeL7 {
		t.Fatalf("mode %v", v.ModeValue())
	}
	l := v.L7
	if l.MaxRequestBytes() != 16<<10 || l.RequestTimeout != 5*time.Second || len(l.Rules) != 3 {
		t.Fatalf("l7 %+v", l)
	}
	r := l.Rules[0]
	if r.Name != "api" || r.Host != "api.example.com" || r.PathPrefix != "/api/" || *r.Header != (L7Match{"X-Tenant", "blue"}) ||
		*r.Cookie != (L7Match{"backend", "b"}) || !reflect.DeepEqual(r.Backends, []string{"api-1", "api-2"}) {
		t.Errorf("rule 0: %+v", r)
	}
	if l.Rules[1].Name != "rule-1" {
		t.Errorf("an unnamed rule is named %q, want rule-1", l.Rules[1].Name)
	}
	// What the control process sends the forwarder carries the section.
	b, err := Encode(c)
	if err != nil {
		t.Fatal(err)
	}
	d, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(d, c) {
		t.Errorf("decoded l7 configuration differs:\n got %+v\nwant %+v", d.VIPs[0].L7, l)
	}
	// A clone's rules are its own.
	cl := c.Clone()
	cl.VIPs[0].L7.Rules[0].Backends[0] = "x"
	cl.VIPs[0].L7.Rules[0].Header.Value = "red"
	cl.VIPs[0].L7.Rules = append(cl.VIPs[0].L7.Rules[:1], L7Rule{})
	if r := c.VIPs[0].L7.Rules; r[0].Backends[0] != "api-1" || r[0].Header.Value != "blue" || r[1].Name != "rule-1" {
		t.Error("changing a clone's rules changed its source")
	}
}

// l7VIP is a valid configuration with one l7 VIP; extra goes into its
// l7 section ("" leaves the section out), and edit rewrites the rest.
func l7VIP(l7 string, edit ...string) string {
	s := "unit: {address4: 198.51.100.254}\n" +
		"hosts: {listen: \"198.51.100.254:7320\", tls: {ca: /c, cert: /c, key: /k}}\n" +
		"vips:\n  - name: web\n    address: 10.0.0.100\n    port: 80\n    protocol: tcp\n    mode: l7\n" +
		"    backends: [{name: a, address: 10.1.0.1}, {name: b, address: 10.1.0.2}]\n"
	if l7 != "" {
		s += "    l7: " + l7 + "\n"
	}
	for i := 0; i+1 < len(edit); i += 2 {
		s = strings.Replace(s, edit[i], edit[i+1], 1)
	}
	return s
}

// TestL7IPv6: an IPv6 l7 VIP with IPv6 hosts loads, given the unit's
// IPv6 tunnel source.
func TestL7IPv6(t *testing.T) {
	clearEnv(t)
	c, err := Parse([]byte(l7VIP("{rules: [{path_prefix: /a/, backends: [a]}]}", "address: 10.0.0.100", "address: \"2001:db8::100\"",
		"10.1.0.1", "\"2001:db8::1\"", "10.1.0.2", "\"2001:db8::2\"", "address4: 198.51.100.254", "address6: \"2001:db8::fe\"")))
	if err != nil {
		t.Fatal(err)
	}
	if v := &c.VIPs[0]; v.ModeValue() != unit.ModeL7 || v.Address != "2001:db8::100" || len(v.L7.Rules) != 1 {
		t.Fatalf("vip %+v", v)
	}
}

func TestL7Defaults(t *testing.T) {
	clearEnv(t)
	c, err := Parse([]byte(l7VIP("")))
	if err != nil {
		t.Fatal(err)
	}
	l := c.VIPs[0].L7
	if l == nil || l.MaxRequestBytes() != DefaultL7Request || l.MaxRequest != "16384" || l.RequestTimeout != DefaultL7Timeout || len(l.Rules) != 0 {
		t.Fatalf("defaults: %+v", l)
	}
	if b := c.VIPs[0].Backends[0]; b.Port != 80 {
		t.Errorf("backend port %d, want the VIP's (ignored, as in tunnel mode)", b.Port)
	}
	// Other modes get no section.
	c, err = Parse([]byte(minimal))
	if err != nil {
		t.Fatal(err)
	}
	if c.VIPs[0].L7 != nil {
		t.Errorf("a halfnat VIP got an l7 section: %+v", c.VIPs[0].L7)
	}
}

func TestL7MaxRequest(t *testing.T) {
	clearEnv(t)
	for in, want := range map[string]int{
		"16KiB": 16 << 10, "64KiB": 64 << 10, "1 KiB": 1 << 10, "4096": 4096, "2048B": 2048, "32768": 32768, "\"8192\"": 8192,
	} {
		c, err := Parse([]byte(l7VIP("{max_request: " + in + "}")))
		if err != nil {
			t.Errorf("%s: %v", in, err)
			continue
		}
		if got := c.VIPs[0].L7.MaxRequestBytes(); got != want {
			t.Errorf("%s: %d bytes, want %d", in, got, want)
		}
	}
}

func TestL7Refusals(t *testing.T) {
	clearEnv(t)
	rule := func(r string) string { return "{rules: [" + r + "]}" }
	for _, tc := range []struct {
		name, yaml string
		want       []string
	}{
		{"l7 section on halfnat", l7VIP("{max_request: 8KiB}", "mode: l7", "mode: halfnat"), []string{"vips[0].l7", "halfnat", "only mode l7"}},
		{"l7 over udp", l7VIP("", "protocol: tcp", "protocol: udp"), []string{"vips[0].protocol", "udp", "tcp"}},
		{"l7 over IPv6 without unit address6", l7VIP("", "address: 10.0.0.100", "address: \"2001:db8::100\"", "10.1.0.1", "\"2001:db8::1\"", "10.1.0.2", "\"2001:db8::2\""),
			[]string{"unit.address6", "vips[0] (l7 mode)", "tunnel source"}},
		{"l7 without unit address", l7VIP("", "address4: 198.51.100.254", "name: u"), []string{"unit.address4", "vips[0] (l7 mode)", "tunnel source"}},
		{"l7 without host streams", l7VIP("", "hosts: {listen: \"198.51.100.254:7320\", tls: {ca: /c, cert: /c, key: /k}}", ""), []string{"hosts.listen", "vips[0] (mode l7)", "host streams"}},
		{"l7 with snat", l7VIP("", "mode: l7", "mode: l7\n    snat: [198.51.100.1]"), []string{"vips[0].snat", "only nat"}},
		{"max_request unit", l7VIP("{max_request: 16KB}"), []string{"vips[0].l7.max_request", "16KB", "KiB"}},
		{"max_request word", l7VIP("{max_request: lots}"), []string{"vips[0].l7.max_request", "lots"}},
		{"max_request negative", l7VIP("{max_request: -1}"), []string{"vips[0].l7.max_request", "-1"}},
		{"max_request too large", l7VIP("{max_request: 65537}"), []string{"vips[0].l7.max_request", "65537", "64KiB"}},
		{"max_request MiB", l7VIP("{max_request: 1MiB}"), []string{"vips[0].l7.max_request", "1MiB", "64KiB"}},
		{"max_request too small", l7VIP("{max_request: 100}"), []string{"vips[0].l7.max_request", "100", "1KiB"}},
		{"request_timeout", l7VIP("{request_timeout: 10m}"), []string{"vips[0].l7.request_timeout", "10m", "1m"}},
		{"request_timeout short", l7VIP("{request_timeout: 1ms}"), []string{"vips[0].l7.request_timeout", "1ms"}},
		{"unknown key", l7VIP("{rules: [{hots: a.example}]}"), []string{"hots"}},
		{"rule without condition", l7VIP(rule("{name: all, backends: [a]}")), []string{"vips[0].l7.rules[0]", "all", "at least one of host"}},
		{"rule named default", l7VIP(rule("{name: default, host: a.example}")), []string{"vips[0].l7.rules[0].name", "default", "no rule matches"}},
		{"rule name", l7VIP(rule("{name: \"my rule\", host: a.example}")), []string{"vips[0].l7.rules[0].name", "my rule", "letters"}},
		{"rule names twice", l7VIP(rule("{name: x, host: a.example}, {name: x, host: b.example}")), []string{"vips[0].l7.rules[1].name", "also the name of vips[0].l7.rules[0]"}},
		{"default name taken", l7VIP(rule("{name: rule-1, host: a.example}, {host: b.example}")), []string{"vips[0].l7.rules[1].name", "rule-1", "also the name of vips[0].l7.rules[0]"}},
		{"host with port", l7VIP(rule("{host: \"a.example:80\"}")), []string{"vips[0].l7.rules[0].host", "a.example:80", "without port"}},
		{"host with trailing dot", l7VIP(rule("{host: a.example.}")), []string{"vips[0].l7.rules[0].host", "a.example.", "trailing dot"}},
		{"host with a path", l7VIP(rule("{host: a.example/x}")), []string{"vips[0].l7.rules[0].host", "a.example/x", "DNS name"}},
		{"host with a bad wildcard", l7VIP(rule("{host: \"*example.com\"}")), []string{"vips[0].l7.rules[0].host", "*example.com", "DNS name"}},
		{"host wildcard inside", l7VIP(rule("{host: \"a.*.example\"}")), []string{"vips[0].l7.rules[0].host", "a.*.example"}},
		{"host wildcard of an address", l7VIP(rule("{host: \"*.10.0.0.1:x\"}")), []string{"vips[0].l7.rules[0].host", "*.10.0.0.1:x"}},
		{"host address with zone", l7VIP(rule("{host: \"fe80::1%eth0\"}")), []string{"vips[0].l7.rules[0].host", "fe80::1%eth0", "zone"}},
		{"host empty label", l7VIP(rule("{host: a..example}")), []string{"vips[0].l7.rules[0].host", "a..example"}},
		{"path without slash", l7VIP(rule("{path_prefix: api/}")), []string{"vips[0].l7.rules[0].path_prefix", "api/", "start with /"}},
		{"path with query", l7VIP(rule("{path_prefix: \"/a?b\"}")), []string{"vips[0].l7.rules[0].path_prefix", "/a?b", "before the query"}},
		{"path with space", l7VIP(rule("{path_prefix: \"/a b\"}")), []string{"vips[0].l7.rules[0].path_prefix", "/a b"}},
		{"header name", l7VIP(rule("{header: {name: \"X Tenant\", value: blue}}")), []string{"vips[0].l7.rules[0].header.name", "X Tenant", "field name"}},
		{"header host", l7VIP(rule("{header: {name: Host, value: a}}")), []string{"vips[0].l7.rules[0].header.name", "Host", "host key"}},
		{"header cookie", l7VIP(rule("{header: {name: cookie, value: a}}")), []string{"vips[0].l7.rules[0].header.name", "cookie", "cookie key"}},
		{"header without value", l7VIP(rule("{header: {name: X-Tenant}}")), []string{"vips[0].l7.rules[0].header.value", "surrounding whitespace"}},
		{"header value padded", l7VIP(rule("{header: {name: X-Tenant, value: \" blue\"}}")), []string{"vips[0].l7.rules[0].header.value", " blue"}},
		{"header value control", l7VIP(rule("{header: {name: X-Tenant, value: \"a\\x01\"}}")), []string{"vips[0].l7.rules[0].header.value"}},
		{"cookie name", l7VIP(rule("{cookie: {name: \"a=b\", value: x}}")), []string{"vips[0].l7.rules[0].cookie.name", "a=b", "cookie name"}},
		{"cookie value", l7VIP(rule("{cookie: {name: backend, value: \"a;b\"}}")), []string{"vips[0].l7.rules[0].cookie.value", "a;b", "semicolons"}},
		{"cookie without value", l7VIP(rule("{cookie: {name: backend}}")), []string{"vips[0].l7.rules[0].cookie.value"}},
		{"unknown backend", l7VIP(rule("{host: a.example, backends: [a, c]}")), []string{"vips[0].l7.rules[0].backends[1]", "\"c\"", "not the name of a backend"}},
		{"backend twice", l7VIP(rule("{host: a.example, backends: [a, b, a]}")), []string{"vips[0].l7.rules[0].backends[2]", "also vips[0].l7.rules[0].backends[0]"}},
		{"backend of another VIP", l7VIP(rule("{host: a.example, backends: [other]}"), "vips:\n", "vips:\n  - {name: v2, address: 10.0.0.101, port: 80, protocol: tcp, mode: halfnat, backends: [{name: other, address: 10.1.0.9}]}\n"),
			[]string{"vips[1].l7.rules[0].backends[0]", "other", "not the name of a backend of this VIP"}},
		{"unknown handoff", l7VIP("{handoff: forward}"), []string{"vips[0].l7.handoff", "forward", "migrate, proxy or migrate-or-proxy"}},
		{"proxy without routers", l7VIP("{handoff: proxy}"), []string{"vips[0].l7.routers", "request routers"}},
		{"proxy rule without routers", l7VIP(rule("{host: a.example, proxy: true}")), []string{"vips[0].l7.routers", "proxy: true"}},
		{"unknown router", l7VIP("{handoff: proxy, routers: [r]}"), []string{"vips[0].l7.routers[0]", "\"r\"", "not the name of a backend"}},
		{"router twice", l7VIP("{handoff: proxy, routers: [a, a]}"), []string{"vips[0].l7.routers[1]", "also vips[0].l7.routers[0]"}},
		{"every backend a router", l7VIP("{handoff: proxy, routers: [a, b]}"), []string{"vips[0].l7.routers", "nowhere to send"}},
		{"rule chooses a router", l7VIP("{routers: [a], rules: [{host: a.example, backends: [a]}]}"), []string{"vips[0].l7.rules[0].backends[0]", "request router"}},
		{"too many rules", l7VIP("{rules: [" + strings.Repeat("{host: a.example},", MaxL7Rules) + "{host: a.example}]}"), []string{"vips[0].l7.rules", "1001", "more than 1000"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.yaml))
			if err == nil {
				t.Fatalf("accepted:\n%s", tc.yaml)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

// The rule's host accepts names in any case, wildcards and addresses.
func TestL7Hosts(t *testing.T) {
	clearEnv(t)
	for _, h := range []string{"api.example.com", "API.Example.com", "\"*.example.com\"", "localhost", "10.0.0.100", "\"2001:db8::1\"", "a_b.example"} {
		if _, err := Parse([]byte(l7VIP("{rules: [{host: " + h + "}]}"))); err != nil {
			t.Errorf("host %s: %v", h, err)
		}
	}
}

func TestL7Handoff(t *testing.T) {
	clearEnv(t)
	c, err := Parse([]byte(l7VIP("")))
	if err != nil {
		t.Fatal(err)
	}
	if l := c.VIPs[0].L7; l.HandoffValue() != HandoffMigrate || l.Handoff != "migrate" || l.IsRouter("a") {
		t.Fatalf("default handoff %q (%v)", l.Handoff, l.HandoffValue())
	}
	c, err = Parse([]byte(l7VIP("{handoff: migrate-or-proxy, routers: [b], rules: [{path_prefix: /x/, proxy: true}]}")))
	if err != nil {
		t.Fatal(err)
	}
	if l := c.VIPs[0].L7; l.HandoffValue() != HandoffMigrateOrProxy || !l.IsRouter("b") || l.IsRouter("a") || !l.Rules[0].Proxy {
		t.Fatalf("handoff %v, routers %v, rules %+v", l.HandoffValue(), l.Routers, l.Rules)
	}
	if cl := c.Clone(); &cl.VIPs[0].L7.Routers[0] == &c.VIPs[0].L7.Routers[0] {
		t.Fatal("a clone shares its routers with the original")
	}
}
