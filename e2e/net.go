package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// namePrefix starts every namespace this package creates; the process ID
// follows, so that namespaces left by a killed run can be recognised and
// removed by the next one.
const namePrefix = "tte"

// Net is a set of namespaces and the processes running in them.
type Net struct {
	id     string
	mu     sync.Mutex
	nss    []string
	procs  []*Proc
	bpfDir string
}

// Root reports whether this process can build networks, and why not.
func Root() error {
	if os.Geteuid() != 0 {
		return errors.New("needs root (network namespaces, veth pairs, TUN devices)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return errors.New("needs the ip command (iproute2)")
	}
	return nil
}

// New starts a network. tag distinguishes several networks of one
// process (at most 4 characters: interface names are short).
func New(tag string) (*Net, error) {
	if err := Root(); err != nil {
		return nil, err
	}
	// A leftover that cannot be removed is a leak on the machine: say so
	// rather than add to it.
	if err := RemoveStale(); err != nil {
		return nil, err
	}
	return &Net{id: fmt.Sprintf("%s%d%s", namePrefix, os.Getpid(), tag)}, nil
}

// staleKillTimeout bounds the wait for killed processes of a stale
// namespace to go: SIGKILL takes effect at once unless a process is
// stuck in the kernel, and that should be reported, not waited out.
const staleKillTimeout = 10 * time.Second

// RemoveStale deletes the namespaces of runs whose process is gone. A run
// killed by go test's -timeout leaves processes in them (qemu, helper
// roles); they are killed first, because a deleted namespace lives on as
// long as a process is inside it. Namespaces of live processes belong to
// runs still going (other test binaries on the machine) and are left
// alone.
func RemoveStale() error {
	entries, err := os.ReadDir("/run/netns")
	if errors.Is(err, fs.ErrNotExist) {
		return nil // no namespace was ever named on this machine
	}
	if err != nil {
		return fmt.Errorf("e2e: list namespaces: %w", err)
	}
	var errs []error
	for _, e := range entries {
		if pid, ok := ownerPID(e.Name()); ok && !processAlive(pid) {
			errs = append(errs, removeNS(e.Name()))
		}
	}
	stale, _ := filepath.Glob(filepath.Join(os.TempDir(), namePrefix+"*-bpf"))
	for _, dir := range stale {
		if pid, ok := ownerPID(strings.TrimSuffix(filepath.Base(dir), "-bpf")); ok && !processAlive(pid) {
			errs = append(errs, removeBPFDir(dir))
		}
	}
	return errors.Join(errs...)
}

// BPFDir returns a BPF filesystem mounted for this network in the test's
// own mount namespace, for forwarder.port.pin_dir: a unit started by ip
// netns exec gets a /sys of its own, and a link it pins there dies with
// its processes, where on a real host /sys/fs/bpf outlives them. Close
// unmounts it.
func (n *Net) BPFDir() (string, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.bpfDir != "" {
		return n.bpfDir, nil
	}
	dir := filepath.Join(os.TempDir(), n.id+"-bpf")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("e2e: %w", err)
	}
	if out, err := exec.Command("mount", "-t", "bpf", "bpf", dir).CombinedOutput(); err != nil {
		os.Remove(dir)
		return "", fmt.Errorf("e2e: mount a BPF filesystem on %s: %v: %s", dir, err, out)
	}
	n.bpfDir = dir
	return dir, nil
}

// removeBPFDir unmounts a BPF filesystem of BPFDir (releasing what is
// pinned in it) and removes its directory.
func removeBPFDir(dir string) error {
	if out, err := exec.Command("umount", "-l", dir).CombinedOutput(); err != nil && !strings.Contains(string(out), "not mounted") {
		return fmt.Errorf("e2e: unmount %s: %v: %s", dir, err, out)
	}
	if err := os.Remove(dir); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("e2e: %w", err)
	}
	return nil
}

// ownerPID returns the process ID in a namespace name this package made
// (namePrefix, the PID, the tag).
func ownerPID(name string) (int, bool) {
	rest, ok := strings.CutPrefix(name, namePrefix)
	if !ok {
		return 0, false
	}
	tag := strings.TrimLeft(rest, "0123456789")
	pid, err := strconv.Atoi(rest[:len(rest)-len(tag)])
	return pid, err == nil
}

// removeNS kills every process in a namespace, waits until none is
// left and deletes it. Another run may be removing the same namespace:
// one that is already gone is not an error.
func removeNS(name string) error {
	deadline := time.Now().Add(staleKillTimeout)
	for {
		pids, err := nsPIDs(name)
		if err != nil {
			if !nsExists(name) {
				return nil
			}
			return err
		}
		if len(pids) == 0 {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("e2e: stale namespace %s: processes %v still there %s after SIGKILL", name, pids, staleKillTimeout)
		}
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL) // it may have exited meanwhile
		}
		time.Sleep(20 * time.Millisecond) // poll: a killed process leaves asynchronously
	}
	if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil && nsExists(name) {
		return fmt.Errorf("e2e: delete stale namespace %s: %w: %s", name, err, bytes.TrimSpace(out))
	}
	return nil
}

// nsPIDs lists the processes inside a namespace. Zombies are not listed:
// they hold no namespace.
func nsPIDs(name string) ([]int, error) {
	out, err := exec.Command("ip", "netns", "pids", name).Output()
	if err != nil {
		return nil, fmt.Errorf("e2e: ip netns pids %s: %w", name, err)
	}
	var pids []int
	for _, f := range strings.Fields(string(out)) {
		pid, err := strconv.Atoi(f)
		if err != nil {
			return nil, fmt.Errorf("e2e: ip netns pids %s: %q is not a PID", name, f)
		}
		pids = append(pids, pid)
	}
	return pids, nil
}

func nsExists(name string) bool {
	_, err := os.Stat(filepath.Join("/run/netns", name))
	return err == nil
}

func processAlive(pid int) bool {
	if pid == os.Getpid() {
		return true
	}
	return syscall.Kill(pid, 0) == nil
}

// NS creates a namespace with its loopback up and returns its full name.
func (n *Net) NS(name string) (string, error) {
	full := n.id + name
	if out, err := exec.Command("ip", "netns", "add", full).CombinedOutput(); err != nil {
		return "", fmt.Errorf("e2e: create namespace %s: %v: %s", full, err, out)
	}
	n.mu.Lock()
	n.nss = append(n.nss, full)
	n.mu.Unlock()
	// No duplicate address detection on the namespace's interfaces: it
	// holds an IPv6 address (the link-local ones too, which neighbour
	// discovery needs) unusable for a second or two after it is made.
	if _, err := n.Exec(full, "sh", "-c", "ip link set lo up && sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0"); err != nil {
		return "", err
	}
	return full, nil
}

// Exec runs a command in a namespace and returns its combined output.
func (n *Net) Exec(ns string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns}, args...)...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("e2e: in %s: %s: %v: %s", ns, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return string(out), nil
}

// MustExec is Exec for setup steps: it returns only the error.
func (n *Net) Run(ns string, args ...string) error {
	_, err := n.Exec(ns, args...)
	return err
}

// Veth connects two namespaces with a veth pair and gives each end its
// addresses (CIDR notation).
func (n *Net) Veth(nsA, ifA string, addrsA []string, nsB, ifB string, addrsB []string) error {
	return n.VethQueues(nsA, ifA, addrsA, nsB, ifB, addrsB, 0)
}

// VethQueues is Veth with queues RX and TX queues on each end (0: the
// kernel's default, one), for a port that binds several device queues.
func (n *Net) VethQueues(nsA, ifA string, addrsA []string, nsB, ifB string, addrsB []string, queues int) error {
	args := []string{"link", "add", ifA, "netns", nsA}
	peer := []string{"peer", "name", ifB, "netns", nsB}
	if queues > 0 {
		q := []string{"numtxqueues", fmt.Sprint(queues), "numrxqueues", fmt.Sprint(queues)}
		args, peer = append(args, q...), append(peer, q...)
	}
	args = append(append(args, "type", "veth"), peer...)
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		return fmt.Errorf("e2e: veth %s/%s - %s/%s: %v: %s", nsA, ifA, nsB, ifB, err, out)
	}
	for _, end := range []struct {
		ns, ifc string
		addrs   []string
	}{{nsA, ifA, addrsA}, {nsB, ifB, addrsB}} {
		for _, a := range end.addrs {
			args := []string{"ip", "addr", "add", a, "dev", end.ifc}
			if strings.Contains(a, ":") {
				args = append(args, "nodad") // no 2-second duplicate address detection
			}
			if err := n.Run(end.ns, args...); err != nil {
				return err
			}
		}
		if err := n.Run(end.ns, "ip", "link", "set", end.ifc, "up"); err != nil {
			return err
		}
	}
	return nil
}

// Sysctl sets kernel parameters in a namespace: "net.ipv4.ip_forward=1".
func (n *Net) Sysctl(ns string, settings ...string) error {
	for _, s := range settings {
		if err := n.Run(ns, "sysctl", "-qw", s); err != nil {
			return err
		}
	}
	return nil
}

// Close stops every process and deletes every namespace (with its veth
// ends and TUN devices). It is safe to call more than once.
func (n *Net) Close() error {
	n.mu.Lock()
	procs, nss, bpfDir := n.procs, n.nss, n.bpfDir
	n.procs, n.nss, n.bpfDir = nil, nil, ""
	n.mu.Unlock()
	for _, p := range procs {
		p.Stop()
	}
	var errs []error
	for _, ns := range nss {
		if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("e2e: delete namespace %s: %v: %s", ns, err, out))
		}
	}
	if bpfDir != "" {
		errs = append(errs, removeBPFDir(bpfDir))
	}
	return errors.Join(errs...)
}

// Self returns the path of the running executable, for starting helper
// roles of it inside namespaces.
func Self() string {
	p, err := os.Executable()
	if err != nil {
		return os.Args[0]
	}
	abs, _ := filepath.Abs(p)
	return abs
}
