package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	pb "github.com/tetherlb/tether/api/healthpb"
)

// TestHealthKey: the command makes a master secret once and derives the
// key a unit holding that secret checks.
func TestHealthKey(t *testing.T) {
	dir := t.TempDir()
	master := filepath.Join(dir, "master")
	out := filepath.Join(dir, "host.key")
	run := func(args ...string) error {
		log := zerolog.Nop()
		root := newRoot(&log)
		root.SetArgs(append([]string{"health-key"}, args...))
		root.SetOut(&bytes.Buffer{})
		return root.Execute()
	}
	if err := run("--master", master, "--create-master", "--host", "11", "--endpoints", "10.0.10.2", "--out", out); err != nil {
		t.Fatal(err)
	}
	first, _ := os.ReadFile(master)
	if err := run("--master", master, "--create-master", "--host", "11", "--endpoints", "10.0.10.2", "--out", out); err != nil {
		t.Fatal(err)
	}
	if again, _ := os.ReadFile(master); !bytes.Equal(first, again) {
		t.Fatal("--create-master replaced an existing master secret")
	}
	b, _ := os.ReadFile(out)
	k, err := pb.ParseHostKey(b)
	if err != nil {
		t.Fatal(err)
	}
	if want := pb.DeriveKey([]byte(strings.TrimSpace(string(first))), 11, k.Grant); k.Host != 11 || k.Grant.String() != "10.0.10.2/32" || !bytes.Equal(k.Key, want) {
		t.Fatalf("key file %+v", k)
	}
	if fi, _ := os.Stat(out); fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v", fi.Mode())
	}
	if err := run("--master", master, "--host", "11", "--endpoints", "10.0.10.300"); err == nil || !strings.Contains(err.Error(), "--endpoints") {
		t.Fatalf("bad endpoints: %v", err)
	}
}
