package agent

import (
	"fmt"
	"strings"
	"testing"

	"github.com/tetherlb/tether/agent/streams"
	"github.com/tetherlb/tether/internal/mtls"
)

const streamBase = "host: {id: 7, listen: \"127.0.0.1:1\"}\nunits: [\"127.0.0.1:2\"]\n"

func TestStreamConfigErrorsNameTheKey(t *testing.T) {
	tls := "tls: {ca: /c, cert: /c, key: /k}"
	cases := map[string][]string{
		"streams: {units: [{name: u, address: \"10.0.0.1\"}], " + tls + "}":                         {"streams.units[0].address", "10.0.0.1", "host:port"},
		"streams: {units: [{name: u, address: \"10.0.0.1:0\"}], " + tls + "}":                       {"streams.units[0].address"},
		"streams: {units: [{name: \"\", address: \"10.0.0.1:7320\"}], " + tls + "}":                 {"streams.units[0].name"},
		"streams: {units: [{name: u, address: \"a:1\"}, {name: u, address: \"b:1\"}], " + tls + "}": {"streams.units[1].name", "also the name of streams.units[0]"},
		"streams: {units: [{name: u, address: \"unit.example:7320\"}], tls: {ca: /c}}":              {"streams.tls.cert", "streams.tls.key", "mutual TLS only"},
		"streams: {tls: {ca: /c}}": {"streams.tls.ca", "needs streams.units"},
		"streams: {units: [{name: u, address: \"unit.example:7320\", port: 1}], " + tls + "}": {"port"},
	}
	for y, want := range cases {
		_, err := ParseConfig([]byte(streamBase + y))
		for _, w := range want {
			if err == nil || !strings.Contains(err.Error(), w) {
				t.Errorf("%q: got %v, want it to say %s", y, err, w)
			}
		}
	}
}

// TestNewStreamsChecksTheCertificate: an agent whose certificate names
// another host refuses to start, naming the key; the right one starts.
func TestNewStreamsChecksTheCertificate(t *testing.T) {
	dir := t.TempDir()
	ca, _, err := mtls.OpenCA(dir, "test")
	if err != nil {
		t.Fatal(err)
	}
	f, err := ca.IssueHost(dir, 8)
	if err != nil {
		t.Fatal(err)
	}
	y := fmt.Sprintf("streams: {units: [{name: u, address: \"127.0.0.1:7320\"}], tls: {ca: %s, cert: %s, key: %s}}", f.CA, f.Cert, f.Key)
	cfg, err := ParseConfig([]byte(streamBase + y))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cfg.NewStreams(streams.Options{}); err == nil || !strings.Contains(err.Error(), "streams.tls.cert") || !strings.Contains(err.Error(), "names host 8, this host is 7") {
		t.Errorf("a certificate of host 8 on host 7: %v", err)
	}
	cfg.Host.ID = 8
	s, err := cfg.NewStreams(streams.Options{})
	if err != nil || s == nil || len(s.Status()) != 1 || s.Status()[0].Unit != "u" {
		t.Errorf("host 8: %v, %v", s, err)
	}
	none, _ := ParseConfig([]byte(streamBase))
	if s, err := none.NewStreams(streams.Options{}); s != nil || err != nil {
		t.Errorf("no streams configured: %v, %v", s, err)
	}
}
