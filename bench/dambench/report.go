package main

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"time"
)

// summary is one side's runs taken together: the probes and the moved
// transfers pooled, each run's takeover kept.
type summary struct {
	side                 string
	windows, moves       []time.Duration
	origins, connects    []time.Duration
	takeovers            []time.Duration
	probes               int
	moved, deadTransfers int
	intact, transfers    int
	ran                  int
}

func summarize(side string, runs []*result) summary {
	s := summary{side: side}
	for _, r := range runs {
		s.windows = append(s.windows, r.windows...)
		s.origins = append(s.origins, r.origins...)
		s.connects = append(s.connects, r.connects...)
		s.probes += r.probes
		if r.err != nil {
			continue
		}
		s.ran++
		s.moves = append(s.moves, r.moves...)
		s.moved += r.moved
		s.deadTransfers += r.deadTransfers
		s.intact += r.intact
		s.transfers += r.transfers
		if r.moved > 0 {
			s.takeovers = append(s.takeovers, r.takeover)
		}
	}
	return s
}

// sideName is a side's name in the table.
func sideName(side string) string {
	return map[string]string{"tether": "Tether", "conntrackd": "conntrackd"}[side]
}

// writeReport writes the markdown table, the ratios and the notes;
// results are [side][run].
func writeReport(b *strings.Builder, o options, results [][]*result, started time.Time) {
	host, _ := os.Hostname()
	fmt.Fprintf(b, "## Several units sharing a nat VIP: replication window and takeover\n\n")
	fmt.Fprintf(b, "%s on %s (%d cores), `%s`, %d run(s), %s in all.\n\n", started.UTC().Format("2006-01-02 15:04 UTC"), host,
		runtime.NumCPU(), strings.Join(os.Args, " "), o.runs, time.Since(started).Round(time.Second))
	fmt.Fprintf(b, "| | window median | window p99 | window max | probes replicated / probes | takeover (kill → last moved transfer moving again), median of runs | takeover, median transfer | unit 0's transfers moved again | transfers intact / transfers |\n")
	fmt.Fprintf(b, "|---|---|---|---|---|---|---|---|---|\n")
	sums := map[string]summary{}
	for i, side := range o.sides {
		s := summarize(side, results[i])
		sums[side] = s
		w := sortedCopy(s.windows)
		if s.ran == 0 && len(w) == 0 {
			fmt.Fprintf(b, "| %s | failed | | | | | | | |\n", sideName(side))
			continue
		}
		take, median := "–", "–"
		if len(s.takeovers) > 0 {
			take = ms(percentile(sortedCopy(s.takeovers), 0.5))
			if len(s.takeovers) > 1 {
				var each []string
				for _, t := range s.takeovers {
					each = append(each, fmt.Sprintf("%.1f", float64(t.Nanoseconds())/1e6))
				}
				take += " (runs: " + strings.Join(each, ", ") + ")"
			}
			median = ms(percentile(sortedCopy(s.moves), 0.5))
		}
		fmt.Fprintf(b, "| %s | %s | %s | %s | %d / %d | %s | %s | %d / %d | %d / %d |\n", sideName(side),
			ms(percentile(w, 0.5)), ms(percentile(w, 0.99)), ms(percentile(w, 1)), len(w), s.probes,
			take, median, s.moved, s.deadTransfers, s.intact, s.transfers)
	}
	t, okT := sums["tether"]
	p, okP := sums["conntrackd"]
	if okT && okP {
		tw, pw := sortedCopy(t.windows), sortedCopy(p.windows)
		fmt.Fprintf(b, "\nTether / conntrackd (below 1: Tether is faster): window median %s, p99 %s, max %s; takeover %s, median transfer's %s.\n",
			ratio(percentile(tw, 0.5), percentile(pw, 0.5)), ratio(percentile(tw, 0.99), percentile(pw, 0.99)),
			ratio(percentile(tw, 1), percentile(pw, 1)),
			ratio(percentile(sortedCopy(t.takeovers), 0.5), percentile(sortedCopy(p.takeovers), 0.5)),
			ratio(percentile(sortedCopy(t.moves), 0.5), percentile(sortedCopy(p.moves), 0.5)))
	}
	fmt.Fprintf(b, "\n* window: from just before the client's connect() to the moment the unit that did not carry the connection holds its state; %d probe connections a run to %s:80, one at a time from the client (after one uncounted warm-up), each closed once measured, bounded at %s each; median, p99 and max over every run's probes\n",
		o.probes, vip, probeTimeout)
	how := "over a netlink socket in the router's namespace, one after the other"
	if o.router == "ip" {
		how = "with e2e's RouteSNAT and SpreadVIPs (ip commands), both started at the kill"
	}
	fmt.Fprintf(b, "* takeover: %d downloads a run of %d bytes at %d B/s in %d-byte writes (a transfer moves every %s: the figure's resolution); once each is under way and unit 0's are held by unit 1, unit 0 dies (the kill's instant: when the kill is done) and the router then sends the VIP range (ECMP over both units until then) and unit 0's SNAT address %s to unit 1 (%s); a run's figure is the latest first byte after the kill among the transfers unit 0 carried; the median transfer's is over every run's\n",
		o.transfers, o.pace*int64(o.seconds), o.pace, o.chunk, ms(time.Duration(int64(o.chunk)*int64(time.Second)/o.pace)), snatOf(0), how)
	for _, side := range o.sides {
		s := sums[side]
		if len(s.origins) > 0 {
			ow := sortedCopy(s.origins)
			fmt.Fprintf(b, "* %s: from connect() until the unit that carried the probe was seen holding it (by the same means, %d probes): median %s, p99 %s, max %s\n",
				sideName(side), len(ow), ms(percentile(ow, 0.5)), ms(percentile(ow, 0.99)), ms(percentile(ow, 1)))
		}
		if len(s.connects) > 0 {
			c := sortedCopy(s.connects)
			fmt.Fprintf(b, "* %s: the probes' connect() (the handshake through the unit) took median %s, p99 %s, max %s\n",
				sideName(side), ms(percentile(c, 0.5)), ms(percentile(c, 0.99)), ms(percentile(c, 1)))
		}
	}
	fmt.Fprintf(b, "* topology: client → router (L4 ECMP over the units) → bridge with two units and ten backends (the e2e payload role); the backends route through the router, which sends each unit's SNAT address to it\n")
	for i, side := range o.sides {
		runs := results[i]
		if len(runs) > 0 {
			for _, n := range runs[0].static {
				fmt.Fprintf(b, "* %s\n", n)
			}
		}
		for k, r := range runs {
			prefix := fmt.Sprintf("%s, run %d", sideName(side), k+1)
			if r.snatRouted > 0 {
				fmt.Fprintf(b, "* %s: the router's changes were done %s (unit 0's SNAT address, which the replies of its connections need) and %s (the VIP range, which their ACKs need) after the kill, inside the takeover figures; the last moved transfer moved %s after both\n",
					prefix, ms(r.snatRouted), ms(r.vipRouted), ms(r.takeover-max(r.snatRouted, r.vipRouted)))
			}
			if r.deadCheck != "" {
				fmt.Fprintf(b, "* %s: unit 0 was not wholly dead after the kill: %s\n", prefix, oneLine(r.deadCheck))
			}
			if r.firstErr != "" {
				fmt.Fprintf(b, "* %s: first error: %s\n", prefix, oneLine(r.firstErr))
			}
			if r.err != nil {
				fmt.Fprintf(b, "* %s: the run failed: %s\n", prefix, oneLine(r.err.Error()))
			}
			for _, n := range r.notes {
				fmt.Fprintf(b, "* %s: %s\n", prefix, n)
			}
		}
	}
}

func ms(d time.Duration) string {
	return fmt.Sprintf("%.2f ms", float64(d.Nanoseconds())/1e6)
}

func ratio(a, b time.Duration) string {
	if a <= 0 || b <= 0 {
		return "–"
	}
	return fmt.Sprintf("%.2f", float64(a)/float64(b))
}

func oneLine(s string) string {
	s = strings.ReplaceAll(s, "\n", " ")
	s = strings.ReplaceAll(s, "|", "\\|")
	if len(s) > 300 {
		s = s[:300] + "…"
	}
	return s
}
