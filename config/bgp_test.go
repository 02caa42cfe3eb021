package config

import (
	"strings"
	"testing"
	"time"
)

func TestBGPConfig(t *testing.T) {
	clearEnv(t)
	c, err := Parse([]byte("unit: {name: u}\n"))
	if err != nil || c.BGP != nil {
		t.Fatalf("no bgp section: %v, %+v", err, c.BGP)
	}
	c, err = Parse([]byte(`unit: {name: u, address4: 10.0.0.1, address6: "2001:db8::1"}
bgp: {asn: 4200000001, peers: [{address: 10.0.0.254, asn: 65000, password_file: /k}, {address: "2001:db8::fe", asn: 4200000001, port: 1179, password_file: /k6}]}
vips: [{name: w, address: 192.0.2.10, port: 80, protocol: tcp, mode: nat, snat: [10.0.0.1], backends: [{address: 10.0.0.2}]},
       {name: w6, address: "2001:db8:10::10", port: 80, protocol: tcp, mode: halfnat, backends: [{address: "2001:db8::2"}]}]
`))
	if err != nil {
		t.Fatal(err)
	}
	b := c.BGP
	if b.ASN != 4200000001 || b.RouterIDAddr().String() != "10.0.0.1" || b.HoldTime != 9*time.Second || b.ForwarderGrace != 3*time.Second {
		t.Errorf("defaults: %+v", b)
	}
	if p := b.Peers[0]; p.Addr().String() != "10.0.0.254" || p.Port != 179 || p.ASN != 65000 {
		t.Errorf("peer 0: %+v", p)
	}
	if p := b.Peers[1]; p.Addr().String() != "2001:db8::fe" || p.Port != 1179 || p.PasswordFile != "/k6" {
		t.Errorf("peer 1: %+v", p)
	}
	if d := c.Clone(); d.BGP == c.BGP || &d.BGP.Peers[0] == &c.BGP.Peers[0] || !d.BGP.Equal(c.BGP) {
		t.Errorf("clone shares or differs: %p %p", d.BGP, c.BGP)
	}
	d := c.Clone()
	d.BGP.Peers[1].PasswordFile = "/other"
	if d.BGP.Equal(c.BGP) {
		t.Error("Equal misses a peer's change")
	}
}

// TestBGPProblems: each bad value is refused naming its key, the value
// and why.
func TestBGPProblems(t *testing.T) {
	clearEnv(t)
	const peer = "{address: 10.0.0.254, asn: 65000, password_file: /k}"
	for _, tc := range []struct{ yaml, want string }{
		{"bgp: {peers: [" + peer + "]}", `bgp.asn: "0": want an AS number`},
		{"bgp: {asn: 23456, peers: [" + peer + "]}", `bgp.asn: "23456": want an AS number`},
		{"unit: {address4: ''}\nbgp: {asn: 1, peers: [{address: '2001:db8::1', asn: 2, password_file: /k}]}", `bgp.router_id: "": required without unit.address4`},
		{"bgp: {asn: 1, router_id: '2001:db8::1', peers: [" + peer + "]}", `bgp.router_id: "2001:db8::1": want an IPv4 address`},
		{"bgp: {asn: 1, hold_time: 2s, peers: [" + peer + "]}", `bgp.hold_time: "2s": want whole seconds`},
		{"bgp: {asn: 1, hold_time: 4500ms, peers: [" + peer + "]}", `bgp.hold_time: "4.5s": want whole seconds`},
		{"bgp: {asn: 1, forwarder_grace: 2m, peers: [" + peer + "]}", `bgp.forwarder_grace: "2m0s": want from 0s to 1m`},
		{"bgp: {asn: 1}", `bgp.peers: "0": want 1 to 64 routers`},
		{"bgp: {asn: 1, peers: [{address: nowhere, asn: 2, password_file: /k}]}", `bgp.peers[0].address: "nowhere": not an IP address`},
		{"bgp: {asn: 1, peers: [" + peer + ", " + peer + "]}", `bgp.peers[1].address: "10.0.0.254": also bgp.peers[0]'s`},
		{"bgp: {asn: 1, peers: [{address: '2001:db8::fe', asn: 2, password_file: /k}]}", `bgp.peers[0].address: "2001:db8::fe": the unit has no IPv6 address`},
		{"bgp: {asn: 1, peers: [{address: 10.0.0.254, password_file: /k}]}", `bgp.peers[0].asn: "0": want an AS number`},
		{"bgp: {asn: 1, peers: [{address: 10.0.0.254, asn: 2, port: 70000, password_file: /k}]}", `bgp.peers[0].port: "70000": want a TCP port`},
		{"bgp: {asn: 1, peers: [{address: 10.0.0.254, asn: 2}]}", `bgp.peers[0].password_file: "": required`},
		{"bgp: {asn: 1, peers: [" + peer + "]}\nvips: [{name: w6, address: '2001:db8:10::10', port: 80, protocol: tcp, mode: halfnat, backends: [{address: '2001:db8::2'}]}]",
			`vips[0].address: "2001:db8:10::10": bgp announces it with the unit's IPv6 address`},
	} {
		yaml := tc.yaml
		if !strings.Contains(yaml, "unit:") {
			yaml = "unit: {address4: 10.0.0.1}\n" + yaml
		}
		_, err := Parse([]byte(yaml))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s:\n got %v\nwant %s", tc.yaml, err, tc.want)
		}
	}
}
