package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rs/zerolog"
)

// TestReplayCutShort: a capture that ends inside a record replays what
// it holds, counts the lost record and fails, unless --keep-going.
func TestReplayCutShort(t *testing.T) {
	sample := filepath.Join("..", "..", "dataplane", "replay", "testdata", "sample")
	in, err := os.ReadFile(filepath.Join(sample, "in.pcap"))
	if err != nil {
		t.Fatal(err)
	}
	cut := filepath.Join(t.TempDir(), "cut.pcap")
	if err := os.WriteFile(cut, in[:len(in)-5], 0o644); err != nil {
		t.Fatal(err)
	}
	for _, keep := range []bool{false, true} {
		log := zerolog.Nop()
		root := newRoot(&log)
		var out bytes.Buffer
		root.SetOut(&out)
		args := []string{"replay", "--config", filepath.Join(sample, "config.yaml"), cut}
		if keep {
			args = append(args, "--keep-going")
		}
		root.SetArgs(args)
		err := root.Execute()
		if keep && err != nil || !keep && (err == nil || !strings.Contains(err.Error(), "ends inside record")) {
			t.Errorf("keep-going %v: %v", keep, err)
		}
		if !strings.Contains(out.String(), "1 unreadable") {
			t.Errorf("keep-going %v: the summary does not count the lost record:\n%s", keep, out.String())
		}
	}
}
