package main

import (
	"bytes"
	"compress/gzip"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

// newcEntry is one parsed record of a newc archive.
type newcEntry struct {
	name        string
	mode, mtime uint64
	data        []byte
}

// parseNewc reads a newc archive the way the kernel's unpacker does.
func parseNewc(t *testing.T, b []byte) []newcEntry {
	t.Helper()
	var out []newcEntry
	off := 0
	field := func(i int) uint64 {
		v, err := strconv.ParseUint(string(b[off+6+8*i:off+14+8*i]), 16, 32)
		if err != nil {
			t.Fatalf("header at %d field %d: %v", off, i, err)
		}
		return v
	}
	align := func(n int) int { return (n + 3) &^ 3 }
	for {
		if string(b[off:off+6]) != "070701" {
			t.Fatalf("no newc magic at %d", off)
		}
		mode, mtime, size, namesize := field(1), field(5), int(field(6)), int(field(11))
		name := string(b[off+110 : off+110+namesize-1])
		off = align(off + 110 + namesize)
		data := b[off : off+size]
		off = align(off + size)
		if name == "TRAILER!!!" {
			return out
		}
		out = append(out, newcEntry{name, mode, mtime, data})
	}
}

func TestImageArchive(t *testing.T) {
	write := func(out string) []byte {
		img := &image{mtime: 1700000000, entries: map[string]entry{}}
		img.file("usr/sbin/tetherd", []byte("binary"), 0o755)
		img.symlink("init", "usr/sbin/tether-init")
		img.dir("config")
		img.add("dev/console", entry{mode: 0o020600, rdev: [2]uint32{5, 1}})
		if err := img.write(out); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	dir := t.TempDir()
	a, b := write(filepath.Join(dir, "a")), write(filepath.Join(dir, "b"))
	if !bytes.Equal(a, b) {
		t.Fatal("two archives of the same entries differ")
	}
	zr, err := gzip.NewReader(bytes.NewReader(a))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	entries := parseNewc(t, raw)
	var names []string
	for _, e := range entries {
		names = append(names, e.name)
		if e.mtime != 1700000000 {
			t.Errorf("%s: mtime %d", e.name, e.mtime)
		}
	}
	// Sorted, with every parent directory before its children.
	want := []string{"config", "dev", "dev/console", "init", "usr", "usr/sbin", "usr/sbin/tetherd"}
	if len(names) != len(want) {
		t.Fatalf("entries %v, want %v", names, want)
	}
	for i := range want {
		if names[i] != want[i] {
			t.Fatalf("entries %v, want %v", names, want)
		}
	}
	if e := entries[6]; string(e.data) != "binary" || e.mode != 0o100755 {
		t.Errorf("tetherd: mode %o data %q", e.mode, e.data)
	}
	if e := entries[3]; string(e.data) != "usr/sbin/tether-init" || e.mode != 0o120777 {
		t.Errorf("init link: mode %o target %q", e.mode, e.data)
	}
}

func TestIsStatic(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	// The test binary is built with cgo (race detector) or without: only
	// check the answer agrees with the interpreter header.
	if isStatic(b) == bytes.Contains(b[:min(len(b), 4096)], []byte("ld-linux")) {
		t.Errorf("isStatic(%s) = %v disagrees with its interpreter", self, isStatic(b))
	}
	if isStatic([]byte("#!/bin/sh\n")) {
		t.Error("a script counted as a static executable")
	}
}
