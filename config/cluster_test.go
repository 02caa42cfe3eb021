package config

import (
	"strings"
	"testing"
	"time"
)

func TestClusterConfig(t *testing.T) {
	clearEnv(t)
	c, err := Parse([]byte("unit: {name: u}\n"))
	if err != nil || c.Cluster != nil {
		t.Fatalf("no cluster section: %v, %+v", err, c.Cluster)
	}
	const certs = "hosts: {listen: \"10.0.0.1:7320\", tls: {ca: /ca.pem, cert: /u.pem, key: /u.key}}\n"
	c, err = Parse([]byte(certs + "cluster: {key_file: /etc/tether/cluster.key, peers: [10.0.0.2, \"10.0.0.3:8000\", unit-c.example.net, \"[2001:db8::4]:7946\"]}\n"))
	if err != nil {
		t.Fatal(err)
	}
	cl := c.Cluster
	if cl.Bind != DefaultClusterBind || cl.ProbeInterval != time.Second || cl.ProbeTimeout != 500*time.Millisecond ||
		cl.SuspicionMult != 4 || cl.GossipInterval != 200*time.Millisecond || cl.Advertise != "" ||
		cl.Listen != "0.0.0.0:7947" || cl.Level != 1 || cl.ZombieTime != time.Minute || cl.PullWait != 10*time.Second ||
		cl.TLS != (TLS{CA: "/ca.pem", Cert: "/u.pem", Key: "/u.key"}) {
		t.Errorf("defaults: %+v", cl)
	}
	want := []string{"10.0.0.2:7946", "10.0.0.3:8000", "unit-c.example.net:7946", "[2001:db8::4]:7946"}
	if strings.Join(cl.Peers, " ") != strings.Join(want, " ") {
		t.Errorf("peers %q, want %q", cl.Peers, want)
	}
	c, err = Parse([]byte("cluster: {key_file: /k, bind: 10.0.0.1, advertise: \"192.0.2.1:7000\", probe_interval: 2s, probe_timeout: 1s, suspicion_mult: 6, gossip_interval: 50ms, " +
		"listen: 10.0.0.1, replication: full, zombie_time: 30s, pull_wait: 2s, tls: {ca: /c, cert: /d, key: /e}}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if cl := c.Cluster; cl.Bind != "10.0.0.1:7946" || cl.Advertise != "192.0.2.1:7000" || cl.ProbeInterval != 2*time.Second ||
		cl.ProbeTimeout != time.Second || cl.SuspicionMult != 6 || cl.GossipInterval != 50*time.Millisecond ||
		cl.Listen != "10.0.0.1:7947" || cl.Level != ReplicationFull || cl.ZombieTime != 30*time.Second || cl.PullWait != 2*time.Second ||
		cl.TLS.Cert != "/d" {
		t.Errorf("values: %+v", cl)
	}
	for yaml, level := range map[string]int{"0": 0, "2": 2, "\"3\"": 3, "4.0": 4} {
		c, err = Parse([]byte("cluster: {key_file: /k, tls: {ca: /c, cert: /d, key: /e}, replication: " + yaml + "}\n"))
		if err != nil || c.Cluster.Level != level {
			t.Errorf("replication %s: %v, level %v", yaml, err, c.Cluster)
		}
	}
	if d := c.Clone(); d.Cluster == c.Cluster || !d.Cluster.Equal(c.Cluster) {
		t.Errorf("clone shares or differs: %p %p", d.Cluster, c.Cluster)
	}
}

// TestClusterProblems: each bad value is refused naming its key, the
// value and why.
func TestClusterProblems(t *testing.T) {
	clearEnv(t)
	for _, tc := range []struct{ yaml, want string }{
		{"cluster: {key_file: /k}", `cluster.tls.cert: "": required`},
		{"cluster: {key_file: /k, listen: \"nowhere:1\"}", `cluster.listen: "nowhere:1": want address:port`},
		{"cluster: {key_file: /k, bind: 10.0.0.1:7000, listen: 10.0.0.1:7000}", `cluster.listen: "10.0.0.1:7000": is cluster.bind`},
		{"cluster: {key_file: /k, replication: 17}", `cluster.replication: "17": want 0 to 16, or full`},
		{"cluster: {key_file: /k, replication: all}", `cluster.replication: "all"`},
		{"cluster: {key_file: /k, replication: -1}", `cluster.replication: "-1"`},
		{"cluster: {key_file: /k, replication: 1.5}", `cluster.replication: "1.5"`},
		{"cluster: {key_file: /k, replication: [1]}", `cluster.replication`},
		{"cluster: {key_file: /k, zombie_time: 10ms}", `cluster.zombie_time: "10ms": must be between 1s and 1h`},
		{"cluster: {key_file: /k, pull_wait: 1h}", `cluster.pull_wait: "1h0m0s": must be between 100ms and 10m`},
		{"cluster: {bind: 10.0.0.1:7946}", `cluster.key_file: "": required`},
		{"cluster: {key_file: cluster.key}", `cluster.key_file: "cluster.key": must be an absolute path`},
		{"cluster: {key_file: /k, bind: \"nowhere:7946\"}", `cluster.bind: "nowhere:7946": want address:port`},
		{"cluster: {key_file: /k, bind: \"10.0.0.1:0\"}", `cluster.bind: "10.0.0.1:0"`},
		{"cluster: {key_file: /k, advertise: \"0.0.0.0:7946\"}", `cluster.advertise: "0.0.0.0:7946"`},
		{"cluster: {key_file: /k, advertise: 10.0.0.1}", `cluster.advertise: "10.0.0.1"`},
		{"cluster: {key_file: /k, peers: [\"10.0.0.2:99999\"]}", `cluster.peers[0]: "10.0.0.2:99999": want host:port`},
		{"cluster: {key_file: /k, peers: [10.0.0.2, \"bad host\"]}", `cluster.peers[1]: "bad host"`},
		{"cluster: {key_file: /k, probe_interval: 10ms}", `cluster.probe_interval: "10ms": must be between 100ms and 1m`},
		{"cluster: {key_file: /k, probe_timeout: 2s}", `cluster.probe_timeout: "2s": must be less than cluster.probe_interval (1s)`},
		{"cluster: {key_file: /k, probe_timeout: 1ms}", `cluster.probe_timeout: "1ms": must be between 10ms and 30s`},
		{"cluster: {key_file: /k, suspicion_mult: 40}", `cluster.suspicion_mult: "40": must be between 1 and 20`},
		{"cluster: {key_file: /k, suspicion_mult: -1}", `cluster.suspicion_mult: "-1"`},
		{"cluster: {key_file: /k, gossip_interval: 1m}", `cluster.gossip_interval: "1m0s": must be between 10ms and 10s`},
		{"cluster: {key_file: /k, gossip_interval: soon}", `cluster.gossip_interval`},
		{"cluster: {key_file: /k, join: [10.0.0.2]}", `join`},
	} {
		_, err := Parse([]byte(tc.yaml + "\n"))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error containing %q", tc.yaml, err, tc.want)
		}
	}
}
