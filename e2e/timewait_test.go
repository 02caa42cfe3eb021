package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// counter reads one of the kernel's TCP counters (nstat's name) in a
// namespace, as an absolute value since the namespace was made.
func counter(t *testing.T, lb *LB, ns, name string) uint64 {
	t.Helper()
	out, err := lb.Exec(ns, "nstat", "-az", name)
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.SplitSeq(out, "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == name {
			n, err := strconv.ParseUint(f[1], 10, 64)
			if err != nil {
				t.Fatalf("nstat %s: %q", name, line)
			}
			return n
		}
	}
	t.Fatalf("nstat printed no %s: %q", name, out)
	return 0
}

// TestConnectionCloseMeetsNoTimeWait: thousands of short nat connections
// whose server closes first (HTTP with Connection: close), so the
// backends hold TIME_WAIT for every SNAT port they saw, and the client
// reuses its own ports within seconds. No backend may refuse a SYN for
// meeting an older connection's TIME_WAIT (TcpExtPAWSTimewait), which
// costs the client a one-second retransmission (TcpExtTCPSynRetrans): a
// tuple the client reopens keeps its SNAT port, so the backend sees the
// same client. Before that, about one connection in a hundred stalled.
func TestConnectionCloseMeetsNoTimeWait(t *testing.T) {
	lb := newLB(t, "tw", 3, NewSwitchedLB)
	if err := lb.StartBackends(8080); err != nil {
		t.Fatal(err)
	}
	// 16,384 ports per backend: more than the client's tuples for each
	// (its 28,232 ephemeral ports over three backends), fewer than the
	// connections, so that ports come round while the backends still
	// hold them in TIME_WAIT, as they do at the full range under a
	// longer load.
	startTether(t, lb, lbConfig(lb, "nat", []int{1, 1, 1}, 8080, "    snat: [198.51.100.1]\n    snat_ports: 1024-17407\n"))
	const conns = 40_000
	r := client(t, lb, "http://192.0.2.10/", conns, 32)
	if r.Errors > 0 {
		t.Fatalf("%d of %d requests failed, first: %s", r.Errors, conns, r.FirstErr)
	}
	var paws uint64
	for _, ns := range lb.Backends {
		paws += counter(t, lb, ns, "TcpExtPAWSTimewait")
	}
	retrans := counter(t, lb, lb.Client, "TcpExtTCPSynRetrans")
	t.Logf("%d connections: %d segments refused in TIME_WAIT by the backends, %d SYN retransmissions by the client", conns, paws, retrans)
	// The counter counts every segment a TIME_WAIT socket refuses by
	// its timestamp; a refused SYN is answered with the old
	// connection's ACK, which the client resets, and it sends the SYN
	// again a second later. So a refusal the client paid for shows in
	// both counters. (On a slowed machine a late duplicate of an old
	// connection's last segments was refused once, 0 SYNs resent.)
	if paws > 0 && retrans > 0 {
		t.Fatalf("backends refused %d segments that met TIME_WAIT and the client resent %d SYNs", paws, retrans)
	}
}

// TestWorkerCoreIsTheWorkers: with forwarder.cores set, no thread of the
// control process or the forwarder but the worker may run on the
// worker's core.
func TestWorkerCoreIsTheWorkers(t *testing.T) {
	var all unix.CPUSet
	if err := unix.SchedGetaffinity(0, &all); err != nil || all.Count() < 2 || runtime.NumCPU() < 2 {
		t.Skip("needs two cores")
	}
	core := -1
	for c := range 1024 {
		if all.IsSet(c) {
			core = c // the last allowed core
		}
	}
	lb := newLB(t, "wc", 1, NewLB)
	if err := lb.StartBackends(8080); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cfg := strings.Replace(lbConfig(lb, "halfnat", []int{1}, 8080, ""), "  flows: {max: 65536}\n",
		fmt.Sprintf("  flows: {max: 65536}\n  cores: [%d]\nadmin: {socket: %s, run_dir: %s}\n", core, filepath.Join(dir, "admin.sock"), filepath.Join(dir, "run")), 1)
	path := filepath.Join(dir, "tether.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := lb.Start(lb.Unit, "tetherd", nil, tetherd, "run", "--config", path)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.WaitFor("forwarding", 15*time.Second); err != nil {
		t.Fatal(err)
	}
	if got := curl(t, lb, "http://192.0.2.10/"); !strings.HasPrefix(got, "b") {
		t.Fatalf("curl through the VIP got %q", got)
	}
	// Every thread of every tetherd: the control process and the
	// forwarder it started.
	onCore := map[string]int{}
	procs, _ := filepath.Glob("/proc/[0-9]*/exe")
	for _, exe := range procs {
		if target, err := os.Readlink(exe); err != nil || target != tetherd {
			continue
		}
		pid := filepath.Base(filepath.Dir(exe))
		cmdline, _ := os.ReadFile(filepath.Join("/proc", pid, "cmdline"))
		role := "control"
		if strings.Contains(string(cmdline), "forwarder") {
			role = "forwarder"
		}
		tasks, _ := os.ReadDir(filepath.Join("/proc", pid, "task"))
		for _, task := range tasks {
			tid, _ := strconv.Atoi(task.Name())
			var set unix.CPUSet
			if unix.SchedGetaffinity(tid, &set) == nil && set.IsSet(core) {
				onCore[role]++
			}
		}
	}
	if onCore["forwarder"] != 1 || onCore["control"] != 0 {
		t.Fatalf("threads that may run on the worker's core %d: %v; want the worker alone", core, onCore)
	}
}
