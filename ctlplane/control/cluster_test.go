package control

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tetherlb/tether/api/unit"
	"github.com/tetherlb/tether/config"
	"github.com/tetherlb/tether/internal/mtls"
)

// TestClusterStart: a unit with a cluster section is a member while it
// runs; a reload that changes the section is refused naming the key, and
// a key file it cannot use stops the start.
func TestClusterStart(t *testing.T) {
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "cluster.key")
	if err := os.WriteFile(keyFile, bytes.Repeat([]byte{7}, 32), 0o600); err != nil {
		t.Fatal(err)
	}
	// cluster.bind takes no port 0 (peers could not find it): take a
	// free one.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	ca, _, err := mtls.OpenCA(dir, "test")
	if err != nil {
		t.Fatal(err)
	}
	u1, err := ca.IssueUnit(dir, "u1", nil)
	if err != nil {
		t.Fatal(err)
	}
	u9, err := ca.IssueUnit(dir, "u9", nil)
	if err != nil {
		t.Fatal(err)
	}
	text := func(keyFile, extra string) string {
		return fmt.Sprintf("unit: {name: u1, address4: 10.0.0.1}\ncluster: {bind: %q, listen: \"127.0.0.1:0\", pull_wait: 100ms, "+
			"tls: {ca: %s, cert: %s, key: %s}, key_file: %s%s}\n", addr, u1.CA, u1.Cert, u1.Key, keyFile, extra)
	}
	c, path := startControl(t, text(keyFile, ""))
	deadline := time.Now().Add(10 * time.Second)
	var v unit.MembersView
	for v = c.Members(t.Context()); len(v.Members) != 1; v = c.Members(t.Context()) {
		if time.Now().After(deadline) {
			t.Fatalf("the unit never saw itself: %+v", v)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if m := v.Members[0]; !v.Enabled || v.Address != addr || m.Name != "u1" || !m.Self || m.State != unit.MemberAlive ||
		m.Boot != v.Boot || len(m.TunnelSources) != 1 || m.TunnelSources[0] != "10.0.0.1" {
		t.Errorf("members: %+v", v)
	}
	for a := c.Atoms(t.Context(), unit.AtomsRequest{}); !a.Ready; a = c.Atoms(t.Context(), unit.AtomsRequest{}) {
		if !a.Enabled || a.Self != "u1" || a.Level != 1 {
			t.Fatalf("atoms: %+v", a)
		}
		if time.Now().After(deadline) {
			t.Fatalf("a unit alone never became ready: %+v", a)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if s := c.Status(t.Context()); s.Cluster == nil || !s.Cluster.Ready || s.Cluster.Members != 1 {
		t.Errorf("status: %+v", s.Cluster)
	}
	for _, tc := range []struct{ text, want string }{
		{text(keyFile, ", probe_interval: 2s"), "cluster.probe_interval"},
		{text(keyFile, ", replication: 2"), "cluster.replication"},
		{text(keyFile, ", peers: [10.0.0.9]"), "cluster.peers"},
		{"unit: {name: u1, address4: 10.0.0.1}\n", "cluster: a running unit keeps its cluster membership"},
	} {
		if err := os.WriteFile(path, []byte(tc.text), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := c.Reload(context.Background()); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("reload of %q: %v, want an error naming %s", tc.text, err, tc.want)
		}
	}
	if err := os.WriteFile(path, []byte(text(keyFile, "")), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := c.Reload(context.Background()); err != nil {
		t.Errorf("reload of the same cluster section: %v", err)
	}

	short := filepath.Join(dir, "short.key")
	if err := os.WriteFile(short, make([]byte, 16), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse([]byte(text(short, "")))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := New(Options{Config: cfg, RunDir: t.TempDir(), Log: zerolog.Nop()}); err == nil || !strings.Contains(err.Error(), "cluster.key_file") {
		t.Errorf("a 16-byte key: %v, want an error naming cluster.key_file", err)
	}

	cfg, err = config.Parse([]byte(strings.NewReplacer(u1.Cert, u9.Cert, u1.Key, u9.Key).Replace(text(keyFile, ""))))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := New(Options{Config: cfg, RunDir: t.TempDir(), Log: zerolog.Nop()}); err == nil || !strings.Contains(err.Error(), `cluster.tls: cert: "`+u9.Cert+`": names unit "u9"`) {
		t.Errorf("another unit's certificate: %v", err)
	}

	alone, _ := startControl(t, "unit: {name: u2}\n")
	if v := alone.Members(t.Context()); v.Enabled || v.Members == nil {
		t.Errorf("without a cluster section: %+v", v)
	}
}
