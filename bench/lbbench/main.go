// Command lbbench is the whole-system benchmark: on one namespace
// topology (client → router → unit → three nginx backends on a bridge) it
// runs each load balancer in turn (nftables DNAT and HAProxy at the
// hosts' defaults, Tether on AF_XDP and on TUN with whatever it needs
// changed on the hosts, said in its row), drives it with real clients
// (wrk, curl) and the e2e UDP roles, and prints a markdown table of
// medians over several runs, the ratios of each Tether row to each peer,
// and an SVG chart of every figure per setup.
//
// The load balancer (Tether's worker, HAProxy) is pinned to core 1; the
// client, the backends and the UDP sinks to core 0. It needs root.
package main

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/tetherlb/tether/e2e"
)

// options are the command's flags.
type options struct {
	tetherd string
	// agent and tetherctl: the l7 rows' (default: beside tetherd).
	agent, tetherctl string
	runs             int
	secs             int
	conns            int
	bulkConns        int
	stream           int64
	setups           []setup
	out, svg         string
	// offloadsOff turns the senders' offloads off for the AF_XDP rows.
	offloadsOff bool
	// hops: split the l7 rows' time to first byte into hops (l7Hops).
	hops bool
}

func main() {
	runBenchRole()
	e2e.RunRoleFromEnv()
	var o options
	var setups string
	flag.StringVar(&o.tetherd, "tetherd", "bin/tetherd", "tetherd binary")
	flag.StringVar(&o.agent, "agent", "", "tether-agent binary for the tether-l7 setup (default: beside --tetherd)")
	flag.StringVar(&o.tetherctl, "tetherctl", "", "tetherctl binary for the tether-l7 setup (default: beside --tetherd)")
	flag.IntVar(&o.runs, "runs", 3, "runs of every setup; the table reports medians")
	flag.IntVar(&o.secs, "seconds", 5, "seconds of each timed load (wrk, UDP)")
	flag.IntVar(&o.conns, "conns", 16, "wrk connections for keep-alive requests and new connections")
	flag.IntVar(&o.bulkConns, "bulk-conns", 8, "wrk connections downloading the 1 MiB file in parallel")
	flag.Int64Var(&o.stream, "stream", 1<<30, "bytes of the one long stream (a sparse file)")
	flag.StringVar(&setups, "setups", strings.Join(defaultSetups(), ","), "setups to measure, comma-separated (not by default: haproxy-http, tether-l7, tether-l7-1core, tether-l7-procs2, the l7 comparison)")
	flag.BoolVar(&o.offloadsOff, "afxdp-offloads-off", false,
		"turn TX checksum offload, TSO and GSO off on the senders' veths for the AF_XDP rows: what a tetherd that cannot finish partial checksums needs (4ac06d4 and older)")
	flag.BoolVar(&o.hops, "hops", false, "for Tether's l7 rows, capture the time-to-first-byte load (tcpdump at the client and the hosts) and split the migrated connections' time into hops (a diagnosis: the captures cost CPU, so that run's time to first byte is not for comparison)")
	flag.StringVar(&o.out, "out", "", "also write the markdown table to this file")
	flag.StringVar(&o.svg, "svg", "bench/system.svg", "write the chart here (\"\" for none)")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: %s [flags]\n\nWhole-system benchmark of Tether against nftables DNAT and HAProxy (needs root,\nnginx, wrk, haproxy, curl, nft, ethtool, nstat: scripts/deps.sh bench).\n\n", os.Args[0])
		flag.PrintDefaults()
	}
	flag.Parse()
	if err := run(o, setups); err != nil {
		fmt.Fprintln(os.Stderr, "lbbench:", err)
		os.Exit(1)
	}
}

func run(o options, setups string) error {
	if err := e2e.Root(); err != nil {
		return err
	}
	for _, name := range strings.Split(setups, ",") {
		s, ok := findSetup(strings.TrimSpace(name))
		if !ok {
			return fmt.Errorf("unknown setup %q (known: %s)", name, strings.Join(setupNames(), ", "))
		}
		o.setups = append(o.setups, s)
	}
	if o.runs < 1 || o.secs <= 0 || o.secs > 50 || o.conns < 1 || o.bulkConns < 1 || o.stream < 1<<20 {
		return errors.New("want --runs ≥ 1, 0 < --seconds ≤ 50 (commands in a namespace are bounded at 60 s), --conns and --bulk-conns ≥ 1, --stream ≥ 1 MiB")
	}
	for _, c := range []string{"nginx", "wrk", "curl", "taskset", "nstat", "ethtool", "nft", "haproxy"} {
		if _, err := exec.LookPath(c); err != nil {
			return fmt.Errorf("needs %s on PATH (make bench-system installs it: scripts/deps.sh bench): %w", c, err)
		}
	}
	var err error
	if o.tetherd, err = filepath.Abs(o.tetherd); err != nil {
		return fmt.Errorf("tetherd path: %w", err)
	}
	for _, p := range []*string{&o.agent, &o.tetherctl} {
		name := "tether-agent"
		if p == &o.tetherctl {
			name = "tetherctl"
		}
		if *p == "" {
			*p = filepath.Join(filepath.Dir(o.tetherd), name)
		}
		if *p, err = filepath.Abs(*p); err != nil {
			return fmt.Errorf("%s path: %w", name, err)
		}
	}
	sum, err := fileSHA256(o.tetherd)
	if err != nil {
		return fmt.Errorf("tetherd: %w", err)
	}
	dir, err := os.MkdirTemp("", "lbbench-")
	if err != nil {
		return fmt.Errorf("temporary directory: %w", err)
	}
	defer os.RemoveAll(dir)
	site, err := writeSite(dir, o.stream)
	if err != nil {
		return err
	}

	started := time.Now()
	fmt.Fprintf(os.Stderr, "lbbench: %d runs of %s; load balancer on core 1, client and backends on core 0\n",
		o.runs, strings.Join(names(o.setups), ", "))
	wakeBefore := e2e.WakeTimes()
	fmt.Fprintf(os.Stderr, "lbbench: a thread's wake-up: %s\n", wakeBefore)
	results := make([][]*result, o.runs) // [run][setup]
	for r := range o.runs {
		for i, s := range o.setups {
			prefix := fmt.Sprintf("run %d/%d: %s", r+1, o.runs, s.name)
			res := measure(o, s, site, r, i, func(format string, args ...any) {
				fmt.Fprintf(os.Stderr, "%s: %s\n", prefix, fmt.Sprintf(format, args...))
			})
			results[r] = append(results[r], res)
		}
	}
	wakeAfter := e2e.WakeTimes()
	fmt.Fprintf(os.Stderr, "lbbench: a thread's wake-up after the loads: %s\n", wakeAfter)
	rep := report{
		opts:    o,
		results: results,
		wake:    [2]string{wakeBefore, wakeAfter},
		elapsed: time.Since(started),
		tetherd: fmt.Sprintf("%s (sha256 %s)", o.tetherd, sum[:12]),
		date:    started.UTC().Format("2006-01-02 15:04 UTC"),
		command: strings.Join(os.Args, " "),
	}
	var md strings.Builder
	rep.markdown(&md)
	fmt.Print(md.String())
	if o.out != "" {
		if err := os.WriteFile(o.out, []byte(md.String()), 0o644); err != nil {
			return fmt.Errorf("write table: %w", err)
		}
	}
	if o.svg != "" {
		if err := os.WriteFile(o.svg, []byte(rep.svg()), 0o644); err != nil {
			return fmt.Errorf("write chart: %w", err)
		}
		fmt.Fprintf(os.Stderr, "lbbench: chart written to %s\n", o.svg)
	}
	fmt.Fprintf(os.Stderr, "lbbench: done in %s\n", time.Since(started).Round(time.Second))
	return nil
}

func names(ss []setup) []string {
	var n []string
	for _, s := range ss {
		n = append(n, s.name)
	}
	return n
}

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
