package control

import (
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/tetherlb/tether/config"
	"github.com/tetherlb/tether/internal/mtls"
)

// TestHostsStart: a unit with hosts.listen serves the streams and shows
// them; files it cannot use stop the start with the key that names them.
func TestHostsStart(t *testing.T) {
	dir := t.TempDir()
	ca, _, err := mtls.OpenCA(dir, "test")
	if err != nil {
		t.Fatal(err)
	}
	f, err := ca.IssueUnit(dir, "u1", nil)
	if err != nil {
		t.Fatal(err)
	}
	// hosts.listen takes no port 0 (agents could not find it): take a
	// free one.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	text := func(name, caFile, cert string) string {
		return fmt.Sprintf("unit: {name: %s}\nhosts: {listen: %q, tls: {ca: %s, cert: %s, key: %s}}\n", name, addr, caFile, cert, f.Key)
	}
	c, _ := startControl(t, text("u1", f.CA, f.Cert))
	if v := c.Streams(t.Context()); v.Listen != addr || v.Boot == 0 {
		t.Errorf("streams view: %+v", v)
	}
	for _, bad := range []struct{ text, want string }{
		{text("u1", filepath.Join(dir, "nope.crt"), f.Cert), "hosts.tls.ca"},
		{text("u2", f.CA, f.Cert), "hosts.tls.cert"},
	} {
		cfg, err := config.Parse([]byte(bad.text))
		if err != nil {
			t.Fatal(err)
		}
		_, err = New(Options{Config: cfg, RunDir: t.TempDir(), Log: zerolog.Nop()})
		if err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("%q: got %v, want an error naming %s", bad.text, err, bad.want)
		} else {
			t.Log(err)
		}
	}
	none, _ := startControl(t, "unit: {name: u1}\n")
	if v := none.Streams(t.Context()); v.Listen != "" || v.Streams == nil {
		t.Errorf("without hosts.listen: %+v", v)
	}
}
