// Command dambench is the whole-system benchmark of issue 15 (several
// units sharing a nat VIP): on one namespace topology (client → ECMP
// router → two units and ten backends on a bridge) it runs Tether's
// cluster and then a kernel peer, and measures for each:
//
//  1. The first-packet-to-replicated window. K probe connections are
//     opened to the nat VIP 192.0.2.13:80 one at a time from the client
//     (a thread of this process in the client's namespace, which binds
//     the port first, so that the watch starts just before connect());
//     for each, the time from just before connect() until the other
//     unit (the replica, not the one the router sent it to) holds the
//     connection's state, and by the same means the time until the unit
//     that carried it did (the notes: what the replica adds). For Tether that is the moment the replica's
//     admin API (GET /v1/atoms on its unix socket, polled in a tight
//     loop) lists the route atom route/tcp/CLIENT>192.0.2.13:80; for the
//     peer, the moment a `conntrack -E -e NEW` listener in the replica's
//     namespace prints the entry conntrackd injected. Each probe is
//     closed once measured.
//  2. Takeover. N paced downloads through the VIP (the e2e client and
//     payload roles, SHA-256-checked) run at once; when every one is
//     under way and the dead unit's are present at the survivor, unit 0
//     dies (Tether: SIGKILL to both its processes; peer: its interface
//     down and its conntrackd killed) and the router at once sends the
//     VIP range and unit 0's SNAT address to the survivor (over a
//     netlink socket in the router's namespace, in microseconds; with
//     --router ip through e2e's SpreadVIPs and RouteSNAT, ip commands
//     of several milliseconds each, which then dominate). The figure is the
//     time from the kill until the last transfer that passed through
//     unit 0 receives its next byte (the client role marks the instant
//     on SIGUSR1 and reports each transfer's first read after it), and
//     how many transfers end intact.
//
// The peer is Linux nftables NAT (DNAT by a hash of the client's address
// and port, SNAT to the unit's own address) with conntrackd syncing the
// conntrack tables between the units (FTFW over UDP on the bridge, the
// external cache disabled so that the replica's kernel holds the entries
// at once). The kernel of the machine this was written on has no IPVS
// (CONFIG_IP_VS unset), which is why the peer is conntrackd and not
// IPVS with its sync daemon.
//
// It prints a markdown table (medians, p99, max; the ratio Tether/peer)
// and needs root, conntrackd, conntrack, nft and stdbuf
// (scripts/deps.sh bench), and a built tetherd (make bin).
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/tetherlb/tether/e2e"
)

// options are the command's flags.
type options struct {
	tetherd   string
	runs      int
	probes    int
	transfers int
	seconds   int
	pace      int64
	chunk     int
	settle    time.Duration
	router    string
	pollGap   time.Duration
	// hops captures the probes' handshakes at the router and the hosts
	// and splits them into hops (hops.go).
	hops  bool
	sides []string
	out   string
}

func main() {
	e2e.RunRoleFromEnv()
	var o options
	var sides string
	flag.StringVar(&o.tetherd, "tetherd", "bin/tetherd", "tetherd binary")
	flag.IntVar(&o.runs, "runs", 3, "runs of every side, each on a fresh topology; the table pools the probes and takes the median run's takeover")
	flag.IntVar(&o.probes, "probes", 200, "probe connections for the replication window, one at a time")
	flag.IntVar(&o.transfers, "transfers", 60, "concurrent paced downloads across the kill")
	flag.IntVar(&o.seconds, "seconds", 20, "length of each download at its pace")
	flag.Int64Var(&o.pace, "pace", 256<<10, "bytes a second of each download (at least 65536)")
	flag.IntVar(&o.chunk, "chunk", 1024, "bytes of each paced write: a transfer moves every chunk/pace seconds, the takeover figure's resolution")
	flag.DurationVar(&o.settle, "settle", time.Second, "wait between every download being under way and the kill")
	flag.StringVar(&o.router, "router", "netlink", "how the router is switched at the kill: ip (e2e's SpreadVIPs and RouteSNAT, ip commands: milliseconds each) or netlink (the same routes over a netlink socket in the router's namespace: microseconds)")
	flag.DurationVar(&o.pollGap, "poll-gap", 100*time.Microsecond, "pause between two polls of a Tether unit's admin API during a probe (0: back to back; at most 100µs): back-to-back polls of both units compete for the CPU with the units carrying the probe's handshake")
	flag.BoolVar(&o.hops, "hops", false, "also capture the probes' handshakes (tcpdump at the router's client side and on every host) and split them into hops: toward the host through the unit, the host, and back")
	flag.StringVar(&sides, "sides", "tether,conntrackd", "what to measure, comma-separated: tether, conntrackd")
	flag.StringVar(&o.out, "out", "", "also write the markdown table to this file")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: %s [flags]\n\nBenchmark of several units sharing a nat VIP (issue 15): Tether's cluster against\nnftables NAT with conntrackd, the replication window and the takeover after a\nunit's death (needs root, a built tetherd, conntrackd, conntrack, nft, stdbuf:\nscripts/deps.sh bench).\n\n", os.Args[0])
		flag.PrintDefaults()
	}
	flag.Parse()
	o.sides = strings.Split(sides, ",")
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "dambench:", err)
		os.Exit(1)
	}
}

func run(o options) error {
	if err := e2e.Root(); err != nil {
		return err
	}
	if o.runs < 1 || o.probes < 1 || o.transfers < 2 || o.seconds < 5 || o.seconds > 600 || o.pace < 64<<10 || o.chunk < 512 || o.chunk > 64<<10 {
		return errors.New("want --runs ≥ 1, --probes ≥ 1, --transfers ≥ 2, 5 ≤ --seconds ≤ 600, --pace ≥ 65536, 512 ≤ --chunk ≤ 65536")
	}
	if o.pollGap < 0 || o.pollGap > 100*time.Microsecond {
		return errors.New("want 0 ≤ --poll-gap ≤ 100µs")
	}
	if o.router != "ip" && o.router != "netlink" {
		return fmt.Errorf("--router %q: want ip or netlink", o.router)
	}
	for _, s := range o.sides {
		if s != "tether" && s != "conntrackd" {
			return fmt.Errorf("unknown side %q (known: tether, conntrackd)", s)
		}
		if s == "conntrackd" {
			for _, c := range []string{"conntrackd", "conntrack", "nft", "stdbuf"} {
				if _, err := exec.LookPath(c); err != nil {
					return fmt.Errorf("needs %s on PATH (scripts/deps.sh bench installs it): %w", c, err)
				}
			}
		}
	}
	var err error
	if o.tetherd, err = filepath.Abs(o.tetherd); err != nil {
		return fmt.Errorf("tetherd path: %w", err)
	}
	if _, err := os.Stat(o.tetherd); err != nil {
		return fmt.Errorf("tetherd (make bin builds it): %w", err)
	}
	started := time.Now()
	results := make([][]*result, len(o.sides)) // [side][run]
	for r := range o.runs {
		for i, s := range o.sides {
			logf := func(format string, args ...any) {
				fmt.Fprintf(os.Stderr, "dambench: run %d/%d: %s: %s\n", r+1, o.runs, s, fmt.Sprintf(format, args...))
			}
			res := measure(o, s, logf)
			if res.err != nil {
				logf("failed: %v", res.err)
			}
			results[i] = append(results[i], res)
		}
	}
	var md strings.Builder
	writeReport(&md, o, results, started)
	fmt.Print(md.String())
	if o.out != "" {
		if err := os.WriteFile(o.out, []byte(md.String()), 0o644); err != nil {
			return fmt.Errorf("write table: %w", err)
		}
	}
	fmt.Fprintf(os.Stderr, "dambench: done in %s\n", time.Since(started).Round(time.Second))
	for _, runs := range results {
		for _, r := range runs {
			if r.err != nil {
				return fmt.Errorf("%s: %w", r.side, r.err)
			}
		}
	}
	return nil
}
