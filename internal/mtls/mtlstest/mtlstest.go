package mtlstest

import (
	"crypto/tls"
	"net/netip"
	"testing"

	"github.com/tetherlb/tether/internal/mtls"
)

// UnitAndHost makes a CA in dir, issues unit's certificate (for
// 127.0.0.1) and host's, and returns the unit's server configuration
// and the host's client configuration. Any failure fails t.
func UnitAndHost(t testing.TB, dir, unit string, host uint32) (server, client *tls.Config) {
	t.Helper()
	ca, _, err := mtls.OpenCA(dir, "test")
	if err != nil {
		t.Fatal(err)
	}
	uf, err := ca.IssueUnit(dir, unit, []netip.Addr{netip.MustParseAddr("127.0.0.1")})
	if err != nil {
		t.Fatal(err)
	}
	hf, err := ca.IssueHost(dir, host)
	if err != nil {
		t.Fatal(err)
	}
	if server, err = mtls.Server(uf, unit); err != nil {
		t.Fatal(err)
	}
	if client, err = mtls.Client(hf, host); err != nil {
		t.Fatal(err)
	}
	return server, client
}
