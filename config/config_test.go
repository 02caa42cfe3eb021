package config

import (
	"errors"
	"fmt"
	"math/big"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tetherlb/tether/api/unit"
)

// clearEnv keeps the caller's TETHER_* variables out of a test.
func clearEnv(t *testing.T) {
	for _, k := range []string{"TETHER_FORWARDER_BATCH", "TETHER_FORWARDER_WORKERS", "TETHER_UNIT_NAME", "TETHER_FORWARDER_FLOWS_MAX", WorkerCPUsEnv} {
		t.Setenv(k, "")
	}
}

const minimal = `
unit: {address4: 198.51.100.254}
vips:
  - name: web
    address: 192.0.2.10
    port: 80
    protocol: tcp
    mode: halfnat
    backends: [{address: 10.1.0.1}, {address: 10.1.0.2, port: 8080, weight: 3, name: big}]
`

func TestSampleLoads(t *testing.T) {
	clearEnv(t)
	c, err := LoadFile("../dataplane/replay/testdata/sample/config.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(c.VIPs) != 4 {
		t.Fatalf("%d VIPs, want 4", len(c.VIPs))
	}
}

func TestDefaults(t *testing.T) {
	clearEnv(t)
	c, err := Parse([]byte(minimal))
	if err != nil {
		t.Fatal(err)
	}
	f := &c.Forwarder
	if f.Workers != 1 || f.Batch != 32 || f.Flows.Max != 1<<20 || !f.AnswerPing ||
		f.Flows.Timeouts.TCPEstablished != 15*time.Minute || f.Flows.Timeouts.UDP != 5*time.Minute ||
		f.Fragments.Timeout != 5*time.Second || c.Unit.Name != "tether" || f.Port.Table != DefaultReturnTable {
		t.Fatalf("forwarder defaults: %+v", f)
	}
	v := &c.VIPs[0]
	if v.MaglevSize != DefaultMaglev || v.MTU != DefaultMTU || v.ProtoNum() != 6 || v.Addr().String() != "192.0.2.10" {
		t.Fatalf("VIP defaults: %+v", v)
	}
	b0, b1 := &v.Backends[0], &v.Backends[1]
	if b0.Port != 80 || b0.WeightValue() != 1 || b0.Name != "10.1.0.1:80" || b0.State != unit.StateActive.String() {
		t.Fatalf("backend defaults: %+v", b0)
	}
	if b1.Port != 8080 || b1.WeightValue() != 3 || b1.Name != "big" {
		t.Fatalf("backend values: %+v", b1)
	}
	nat, err := Parse([]byte(strings.Replace(minimal, "mode: halfnat", "mode: nat\n    snat: [198.51.100.1]", 1)))
	if err != nil {
		t.Fatal(err)
	}
	if lo, hi := nat.VIPs[0].SNATPortRange(); lo != 1024 || hi != 65535 {
		t.Fatalf("default SNAT ports %d-%d", lo, hi)
	}
}

func TestEnvironmentOverrides(t *testing.T) {
	clearEnv(t)
	t.Setenv("TETHER_FORWARDER_BATCH", "64")
	t.Setenv("TETHER_UNIT_NAME", "edge-7")
	c, err := Parse([]byte(minimal))
	if err != nil {
		t.Fatal(err)
	}
	if c.Forwarder.Batch != 64 || c.Unit.Name != "edge-7" {
		t.Fatalf("batch %d, name %q: environment not applied", c.Forwarder.Batch, c.Unit.Name)
	}
	t.Setenv("TETHER_FORWARDER_BATCH", "1000")
	if _, err := Parse([]byte(minimal)); err == nil || !strings.Contains(err.Error(), "forwarder.batch") {
		t.Fatalf("a bad environment value gave %v", err)
	}
}

func TestBadConfigurations(t *testing.T) {
	clearEnv(t)
	vip := func(extra string) string {
		return "unit: {address4: 198.51.100.254}\nvips:\n  - {name: v, address: 192.0.2.1, port: 80, protocol: tcp, mode: halfnat, backends: [{address: 10.0.0.1}]" + extra + "}\n"
	}
	cases := []struct {
		name, yaml string
		want       []string // substrings of the error
	}{
		{"unknown key", "unit: {nmae: x}\n", []string{"nmae"}},
		{"yaml syntax", "vips: [\n", []string{"config"}},
		{"bad IP", strings.Replace(vip(""), "10.0.0.1", "10.0.0.x", 1), []string{"vips[0].backends[0].address", "10.0.0.x", "not an IP address"}},
		{"backend family", strings.Replace(vip(""), "10.0.0.1", "\"fd00::1\"", 1), []string{"vips[0].backends[0].address", "IPv4"}},
		{"mode", strings.Replace(vip(""), "halfnat", "dsr", 1), []string{"vips[0].mode", "dsr", "one of"}},
		{"nat without snat", strings.Replace(vip(""), "halfnat", "nat", 1), []string{"vips[0].snat", "at least one"}},
		{"snat on halfnat", vip(", snat: [198.51.100.1]"), []string{"vips[0].snat", "only nat"}},
		{"snat family", strings.Replace(vip(", snat: [\"2001:db8::1\"]"), "halfnat", "nat", 1), []string{"vips[0].snat[0]"}},
		{"snat ports", strings.Replace(vip(", snat: [198.51.100.1], snat_ports: 9-5"), "halfnat", "nat", 1), []string{"vips[0].snat_ports", "9-5"}},
		{"maglev size", vip(", maglev_size: 65536"), []string{"vips[0].maglev_size", "65536", "prime"}},
		{"mtu", vip(", mtu: 100"), []string{"vips[0].mtu", "100"}},
		{"protocol", strings.Replace(vip(""), "tcp", "sctp", 1), []string{"vips[0].protocol", "sctp"}},
		{"port", strings.Replace(vip(""), "port: 80", "port: 0", 1), []string{"vips[0].port"}},
		{"weight", strings.Replace(vip(""), "{address: 10.0.0.1}", "{address: 10.0.0.1, weight: -1}", 1), []string{"vips[0].backends[0].weight", "-1"}},
		{"state", strings.Replace(vip(""), "{address: 10.0.0.1}", "{address: 10.0.0.1, state: sleepy}", 1), []string{"vips[0].backends[0].state", "sleepy"}},
		{"unit mac", "unit: {mac: \"zz:00:00:00:00:00\"}\n", []string{"unit.mac"}},
		{"gateway mac", "l2: {gateway_mac: \"02:00\"}\n", []string{"l2.gateway_mac"}},
		{"neighbor", "l2: {neighbors: [{ip: 10.0.0.1, mac: nope}]}\n", []string{"l2.neighbors[0].mac"}},
		{"tunnel without unit address", strings.Replace(strings.Replace(vip(""), "halfnat", "tunnel", 1), "unit: {address4: 198.51.100.254}", "unit: {}", 1), []string{"unit.address4", "tunnel source"}},
		{"timeout", "forwarder: {flows: {timeouts: {udp: 0s}}}\n", []string{"forwarder.flows.timeouts.udp"}},
		{"workers", "forwarder: {workers: 0}\n", []string{"forwarder.workers"}},
		{"reserved table", "forwarder: {port: {table: 254}}\n", []string{"forwarder.port.table", "254", "reserves"}},
		{"negative table", "forwarder: {port: {table: -1}}\n", []string{"forwarder.port.table", "-1"}},
		{"relative pin dir", "forwarder: {port: {pin_dir: bpf/tether}}\n", []string{"forwarder.port.pin_dir", "bpf/tether", "absolute"}},
		{"queue length zero", "forwarder: {port: {queue_length: 0}}\n", []string{"forwarder.port.queue_length", "0"}},
		{"table too large", "forwarder: {port: {table: 4294967296}}\n", []string{"forwarder.port.table", "4294967296"}},
		{"duplicate name", "unit: {address4: 198.51.100.254}\nvips:\n  - {name: v, address: 192.0.2.1, port: 80, protocol: tcp, mode: halfnat}\n  - {name: v, address: 192.0.2.2, port: 80, protocol: tcp, mode: halfnat}\n", []string{"vips[1].name", "also the name of vips[0]"}},
		{"duplicate service", "vips:\n  - {name: a, address: 192.0.2.1, port: 80, protocol: tcp, mode: halfnat}\n  - {name: b, address: 192.0.2.1, port: 80, protocol: tcp, mode: halfnat}\n", []string{"vips[1]", "same address, port and protocol"}},
		{"wrong type", "forwarder: {batch: lots}\n", []string{"batch"}},
		{"hosts listen", "hosts: {listen: \"10.0.0.1\", tls: {ca: /c, cert: /c, key: /k}}\n", []string{"hosts.listen", "10.0.0.1", "address:port"}},
		{"hosts without tls", "hosts: {listen: \"10.0.0.1:7320\", tls: {ca: /c}}\n", []string{"hosts.tls.cert", "hosts.tls.key", "mutual TLS only"}},
		{"hosts tls without listen", "hosts: {tls: {ca: /c}}\n", []string{"hosts.tls.ca", "/c", "needs hosts.listen"}},
		{"shared health key", "health: {key_file: /etc/tether/health.key}\n", []string{"health.key_file", "/etc/tether/health.key", "health.auth.master_key_file", "tetherd health-key"}},
		{"relative master", "health: {auth: {master_key_file: health.master}}\n", []string{"health.auth.master_key_file", "absolute"}},
		{"freshness", "health: {auth: {freshness: 100ms}}\n", []string{"health.auth.freshness", "100ms"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse([]byte(c.yaml))
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestEveryProblemReported(t *testing.T) {
	clearEnv(t)
	_, err := Parse([]byte("forwarder: {workers: 0, batch: 0}\nvips:\n  - {name: v, address: x, port: 0, protocol: y, mode: z}\n"))
	var joined interface{ Unwrap() []error }
	if !errors.As(err, &joined) || len(joined.Unwrap()) < 6 {
		t.Fatalf("want every problem reported, got %v", err)
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(minimal))
	f.Add([]byte("vips: [{name: a, mode: nat, snat: [1.2.3.4], snat_ports: 1-2}]\n"))
	f.Add([]byte("unit: {address6: \"::1\"}\nl2: {neighbors: [{ip: x}]}\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Parse(b)
		if err == nil && c == nil {
			t.Fatal("no configuration and no error")
		}
	})
}

// The appliance pins workers through TETHER_WORKER_CPUS unless the file
// names cores itself.
func TestWorkerCPUsEnv(t *testing.T) {
	base := "unit: {address4: 10.0.0.1}\nforwarder:\n  port: {driver: tun, interface: tun0}\n  workers: 2\n"
	for _, tc := range []struct {
		env, extra string
		want       []int
		err        string
	}{
		{env: "", want: nil},
		{env: "1,2,3", want: []int{1, 2}},
		{env: " 3 , 1 ", want: []int{3, 1}},
		{env: "1", want: nil}, // fewer CPUs than workers: unpinned
		{env: "1,2", extra: "  cores: [0, 1]\n", want: []int{0, 1}},
		{env: "1-3", err: `TETHER_WORKER_CPUS: "1-3": want CPU numbers separated by commas`},
	} {
		t.Setenv(WorkerCPUsEnv, tc.env)
		c, err := Parse([]byte(base + tc.extra))
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("env %q: got %v, want %q", tc.env, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("env %q: %v", tc.env, err)
		}
		if !slices.Equal(c.Forwarder.Cores, tc.want) {
			t.Errorf("env %q, file %q: cores %v, want %v", tc.env, tc.extra, c.Forwarder.Cores, tc.want)
		}
	}
}

func TestParseMAC(t *testing.T) {
	for _, s := range []string{"02:00:5E:10:00:0a", "02-00-5e-10-00-0a"} {
		if m, err := parseMAC(s); err != nil || m != [6]byte{2, 0, 0x5e, 0x10, 0, 0x0a} {
			t.Errorf("parseMAC(%q) = %x, %v", s, m, err)
		}
	}
	for _, s := range []string{"", "02:00:5e:10:00", "02:00:5e:10:00:0g", "02:00:5e:10:00:0a:", "02:00:5e:10:00:0a:00:00"} {
		if _, err := parseMAC(s); err == nil {
			t.Errorf("parseMAC(%q) succeeded", s)
		}
	}
}

// TestEncodeDecode: the form the control process sends the forwarder
// gives back the same checked configuration, and takes no TETHER_*
// override of the receiving process; a clone is independent of its
// source.
func TestEncodeDecode(t *testing.T) {
	clearEnv(t)
	sample, err := LoadFile("../dataplane/replay/testdata/sample/config.yaml")
	if err != nil {
		t.Fatal(err)
	}
	b, err := Encode(sample)
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("TETHER_FORWARDER_BATCH", "7")
	got, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if got.Forwarder.Batch != sample.Forwarder.Batch {
		t.Errorf("decoding applied the environment: batch %d, want %d", got.Forwarder.Batch, sample.Forwarder.Batch)
	}
	if !reflect.DeepEqual(got, sample) {
		t.Errorf("decoded configuration differs:\n got %+v\nwant %+v", got, sample)
	}
	for name, body := range map[string]string{
		"unknown key":   `{"Colour": "blue"}`,
		"trailing data": string(b) + "{}",
		"bad value":     strings.Replace(string(b), `"Mode":"nat"`, `"Mode":"sideways"`, 1),
		"not json":      "vips: []",
	} {
		if _, err := Decode([]byte(body)); err == nil {
			t.Errorf("%s: decoded", name)
		}
	}
	clone := sample.Clone()
	w := 9
	clone.VIPs[0].Backends[0].Weight = &w
	clone.VIPs[0].SNAT = append(clone.VIPs[0].SNAT[:0], "203.0.113.99")
	if sample.VIPs[0].Backends[0].WeightValue() == 9 || sample.VIPs[0].SNAT[0] == "203.0.113.99" {
		t.Error("changing a clone changed its source")
	}
}

// FuzzDecode: no reload body makes Decode panic, and whatever it accepts
// is a configuration that encodes and decodes to itself.
func FuzzDecode(f *testing.F) {
	c, err := Parse([]byte(minimal))
	if err != nil {
		f.Fatal(err)
	}
	b, err := Encode(c)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Add([]byte(`{"VIPs":[{"Name":"a","Mode":"nat"}]}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Decode(b)
		if err != nil {
			return
		}
		again, err := Encode(c)
		if err != nil {
			t.Fatal(err)
		}
		d, err := Decode(again)
		if err != nil {
			t.Fatalf("an accepted configuration does not decode again: %v", err)
		}
		if !reflect.DeepEqual(c, d) {
			t.Fatalf("not stable:\n%+v\n%+v", c, d)
		}
	})
}

func TestIsPrime(t *testing.T) {
	for n := -1; n < 5000; n++ {
		if got, want := isPrime(n), n > 1 && big.NewInt(int64(n)).ProbablyPrime(20); got != want {
			t.Fatalf("isPrime(%d) = %v", n, got)
		}
	}
	for _, n := range []int{65537, 1048573, 251, 4093} {
		if !isPrime(n) {
			t.Errorf("%d is prime", n)
		}
	}
	for _, n := range []int{65535, 1048575, 1 << 20, 1046529 /* 1023² */} {
		if isPrime(n) {
			t.Errorf("%d is not prime", n)
		}
	}
}

// forwarder.port.table takes 0 (no return rules) and any table the
// kernel does not reserve.
func TestReturnTable(t *testing.T) {
	clearEnv(t)
	for _, table := range []int{0, 1, 100, 251, 256, 1<<32 - 1} {
		c, err := Parse(fmt.Appendf(nil, "forwarder: {port: {table: %d}}\n", table))
		if err != nil {
			t.Errorf("table %d: %v", table, err)
			continue
		}
		if c.Forwarder.Port.Table != table {
			t.Errorf("table %d read as %d", table, c.Forwarder.Port.Table)
		}
	}
}
