// Command mkimage assembles the appliance's initramfs from a staging
// tree: the project's static binaries, busybox and the kernel modules the
// appliance needs with everything they depend on. It writes a gzipped
// newc cpio archive whose bytes depend only on its inputs: entries are
// sorted, owned by root, and stamped with one fixed time, so `make vm`
// run twice gives the same image.
//
// vm/build.sh drives it; see docs/appliance.md.
package main

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

func main() {
	kroot := flag.String("kernel-root", "", "the extracted kernel package (holds lib/modules/VERSION)")
	kver := flag.String("kernel-version", "", "the kernel's version (the lib/modules directory)")
	busybox := flag.String("busybox", "", "the static busybox binary")
	bins := flag.String("bin", "", "directory of the static Go binaries to install in /usr/sbin")
	mods := flag.String("modules", "", "comma-separated modules to load at boot (their dependencies follow)")
	files := flag.String("files", "", "directory copied as is into the image root (etc/…)")
	out := flag.String("out", "", "the initramfs to write")
	epoch := flag.Int64("epoch", 0, "modification time of every entry (seconds since 1970)")
	flag.Parse()
	if *kroot == "" || *kver == "" || *busybox == "" || *bins == "" || *out == "" {
		fmt.Fprintln(os.Stderr, "mkimage: --kernel-root, --kernel-version, --busybox, --bin and --out are required")
		os.Exit(2)
	}
	img := &image{mtime: *epoch, entries: map[string]entry{}}
	if err := build(img, *kroot, *kver, *busybox, *bins, *files, strings.Split(*mods, ",")); err != nil {
		fmt.Fprintln(os.Stderr, "mkimage:", err)
		os.Exit(1)
	}
	if err := img.write(*out); err != nil {
		fmt.Fprintln(os.Stderr, "mkimage:", err)
		os.Exit(1)
	}
}

func build(img *image, kroot, kver, busybox, bins, files string, mods []string) error {
	for _, d := range []string{"dev", "proc", "sys", "run", "tmp", "config", "root", "etc", "bin", "sbin", "usr/bin", "usr/sbin"} {
		img.dir(d)
	}
	// /dev/console must exist before devtmpfs is mounted: the kernel
	// opens it for init's standard streams.
	img.add("dev/console", entry{mode: 0o020600, rdev: [2]uint32{5, 1}})

	bb, err := os.ReadFile(busybox)
	if err != nil {
		return fmt.Errorf("busybox: %w", err)
	}
	img.file("bin/busybox", bb, 0o755)
	for _, applet := range applets {
		img.symlink("bin/"+applet, "busybox")
	}

	entries, err := os.ReadDir(bins)
	if err != nil {
		return fmt.Errorf("binaries: %w", err)
	}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(bins, e.Name()))
		if err != nil {
			return err
		}
		if !isStatic(b) {
			return fmt.Errorf("%s is not a static executable (build with CGO_ENABLED=0)", e.Name())
		}
		img.file("usr/sbin/"+e.Name(), b, 0o755)
	}
	// The kernel runs /init.
	img.symlink("init", "usr/sbin/tether-init")

	if files != "" {
		if err := img.tree(files); err != nil {
			return err
		}
	}

	modDir := filepath.Join(kroot, "lib/modules", kver)
	order, err := resolveModules(modDir, mods)
	if err != nil {
		return err
	}
	var list bytes.Buffer
	for _, rel := range order {
		b, err := os.ReadFile(filepath.Join(modDir, rel))
		if err != nil {
			return err
		}
		img.file(path.Join("lib/modules", kver, rel), b, 0o644)
		fmt.Fprintln(&list, rel)
	}
	img.file(path.Join("lib/modules", kver, "load.list"), list.Bytes(), 0o644)
	return nil
}

// applets are the busybox commands linked in /bin: what an operator on
// the serial console needs, no more.
var applets = []string{"sh", "ash", "cat", "ls", "ps", "top", "free", "df", "du", "dmesg", "ip", "ping", "mount", "umount",
	"vi", "less", "grep", "sed", "awk", "head", "tail", "cp", "mv", "rm", "mkdir", "ln", "chmod", "sync", "sleep", "kill",
	"poweroff", "reboot", "halt", "taskset", "nproc", "uname", "date", "hostname", "sysctl", "tar", "wc", "sort", "uniq",
	"echo", "printf", "test", "[", "true", "false", "env", "which", "clear", "stty", "nc", "wget", "sha256sum", "xxd",
	"hexdump", "lsmod", "pidof", "killall", "tee", "find", "xargs", "tr", "cut", "uptime", "watch", "netstat"}

// isStatic reports whether an ELF executable needs no interpreter.
func isStatic(b []byte) bool {
	f, err := elf.NewFile(bytes.NewReader(b))
	if err != nil {
		return false
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return false
		}
	}
	return true
}

// resolveModules finds each named module under modDir and every module
// it depends on (the "depends=" of its .modinfo section, which is what
// depmod reads), and returns their paths relative to modDir in an order
// where dependencies come first.
func resolveModules(modDir string, names []string) ([]string, error) {
	byName := map[string]string{}
	err := filepath.WalkDir(filepath.Join(modDir, "kernel"), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if n, ok := strings.CutSuffix(d.Name(), ".ko"); ok && !d.IsDir() {
			rel, _ := filepath.Rel(modDir, p)
			byName[canon(n)] = rel
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("modules: %w", err)
	}
	builtin, _ := os.ReadFile(filepath.Join(modDir, "modules.builtin"))
	isBuiltin := map[string]bool{}
	for _, l := range strings.Fields(string(builtin)) {
		isBuiltin[canon(strings.TrimSuffix(path.Base(l), ".ko"))] = true
	}
	var order []string
	state := map[string]int{} // 1 visiting, 2 done
	var visit func(name, from string) error
	visit = func(name, from string) error {
		name = canon(name)
		switch state[name] {
		case 1:
			return fmt.Errorf("module %s: dependency cycle through %s", name, from)
		case 2:
			return nil
		}
		rel, ok := byName[name]
		if !ok {
			if isBuiltin[name] {
				state[name] = 2
				return nil
			}
			if from == "" {
				return fmt.Errorf("module %s: not in %s", name, modDir)
			}
			return fmt.Errorf("module %s (needed by %s): not in %s", name, from, modDir)
		}
		state[name] = 1
		deps, err := moduleDeps(filepath.Join(modDir, rel))
		if err != nil {
			return err
		}
		for _, d := range deps {
			if err := visit(d, name); err != nil {
				return err
			}
		}
		state[name] = 2
		order = append(order, rel)
		return nil
	}
	for _, n := range names {
		if n = strings.TrimSpace(n); n == "" {
			continue
		}
		if err := visit(n, ""); err != nil {
			return nil, err
		}
	}
	return order, nil
}

// canon spells a module name the way the kernel compares them.
func canon(n string) string { return strings.ReplaceAll(n, "-", "_") }

func moduleDeps(file string) ([]string, error) {
	f, err := elf.Open(file)
	if err != nil {
		return nil, fmt.Errorf("module %s: %w", file, err)
	}
	defer f.Close()
	s := f.Section(".modinfo")
	if s == nil {
		return nil, fmt.Errorf("module %s: no .modinfo section", file)
	}
	info, err := s.Data()
	if err != nil {
		return nil, fmt.Errorf("module %s: %w", file, err)
	}
	for _, kv := range bytes.Split(info, []byte{0}) {
		if v, ok := bytes.CutPrefix(kv, []byte("depends=")); ok {
			if len(v) == 0 {
				return nil, nil
			}
			return strings.Split(string(v), ","), nil
		}
	}
	return nil, nil
}

// entry is one file, directory, link or device node of the archive.
type entry struct {
	mode uint32 // type bits included
	data []byte
	rdev [2]uint32
}

type image struct {
	mtime   int64
	entries map[string]entry
}

func (img *image) add(name string, e entry) {
	// Parents first: the kernel's unpacker does not create them.
	for d := path.Dir(name); d != "." && d != "/"; d = path.Dir(d) {
		if _, ok := img.entries[d]; !ok {
			img.entries[d] = entry{mode: 0o040755}
		}
	}
	img.entries[name] = e
}

func (img *image) dir(name string) { img.add(name, entry{mode: 0o040755}) }
func (img *image) file(name string, b []byte, perm uint32) {
	img.add(name, entry{mode: 0o100000 | perm, data: b})
}
func (img *image) symlink(name, target string) {
	img.add(name, entry{mode: 0o120777, data: []byte(target)})
}

// tree copies a directory into the image root, keeping permissions but
// not owners or times.
func (img *image) tree(root string) error {
	return filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if rel == "." {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			img.add(rel, entry{mode: 0o040000 | uint32(info.Mode().Perm())})
		case info.Mode().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			img.file(rel, b, uint32(info.Mode().Perm()))
		default:
			return fmt.Errorf("%s: only files and directories are copied", p)
		}
		return nil
	})
}

// write stores the archive, gzipped with no name or time in its header,
// and prints its SHA-256.
func (img *image) write(out string) error {
	names := make([]string, 0, len(img.entries))
	for n := range img.entries {
		names = append(names, n)
	}
	slices.Sort(names)
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	if err != nil {
		return err
	}
	zw.ModTime = time.Time{}
	w := &cpioWriter{w: zw}
	for i, n := range names {
		e := img.entries[n]
		w.entry(uint32(i+1), n, e, img.mtime)
	}
	w.entry(0, "TRAILER!!!", entry{}, 0)
	if w.err != nil {
		return w.err
	}
	if err := zw.Close(); err != nil {
		return err
	}
	if err := os.WriteFile(out, buf.Bytes(), 0o644); err != nil {
		return err
	}
	sum := sha256.Sum256(buf.Bytes())
	fmt.Printf("%s  %s (%d entries, %.1f MiB)\n", hex.EncodeToString(sum[:]), out, len(names), float64(buf.Len())/(1<<20))
	return nil
}

// cpioWriter writes the "newc" format the kernel unpacks: a 110-byte
// ASCII header, the NUL-terminated name and the data, each padded to four
// bytes.
type cpioWriter struct {
	w   io.Writer
	n   int64
	err error
}

func (c *cpioWriter) entry(ino uint32, name string, e entry, mtime int64) {
	nlink := uint32(1)
	if e.mode&0o170000 == 0o040000 {
		nlink = 2
	}
	hdr := fmt.Sprintf("070701%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x",
		ino, e.mode, 0, 0, nlink, uint32(mtime), len(e.data), 0, 0, e.rdev[0], e.rdev[1], len(name)+1, 0)
	c.put([]byte(hdr))
	c.put(append([]byte(name), 0))
	c.pad()
	c.put(e.data)
	c.pad()
}

func (c *cpioWriter) put(b []byte) {
	if c.err != nil {
		return
	}
	n, err := c.w.Write(b)
	c.n += int64(n)
	if err != nil {
		c.err = errors.Join(errors.New("write the archive"), err)
	}
}

func (c *cpioWriter) pad() {
	if r := c.n % 4; r != 0 {
		c.put(make([]byte, 4-r))
	}
}
