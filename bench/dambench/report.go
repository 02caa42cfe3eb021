package main

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"time"
)

// writeReport writes the markdown table, the ratios and the notes.
func writeReport(b *strings.Builder, o options, results []*result, started time.Time) {
	host, _ := os.Hostname()
	fmt.Fprintf(b, "## Several units sharing a nat VIP: replication window and takeover\n\n")
	fmt.Fprintf(b, "%s on %s (%d cores), `%s`, %s in all.\n\n", started.UTC().Format("2006-01-02 15:04 UTC"), host,
		runtime.NumCPU(), strings.Join(os.Args, " "), time.Since(started).Round(time.Second))
	fmt.Fprintf(b, "| | window median | window p99 | window max | probes replicated / probes | takeover (kill → last moved transfer moving again) | takeover, median transfer | unit 0's transfers moved again | transfers intact / transfers |\n")
	fmt.Fprintf(b, "|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range results {
		name := map[string]string{"tether": "Tether", "conntrackd": "conntrackd"}[r.side]
		w := sortedCopy(r.windows)
		if r.err != nil && len(w) == 0 && r.deadTransfers == 0 {
			fmt.Fprintf(b, "| %s | failed: %s | | | | | | | |\n", name, oneLine(r.err.Error()))
			continue
		}
		take, median := "–", "–"
		if r.moved > 0 {
			median = ms(percentile(sortedCopy(r.moves), 0.5))
			take = ms(r.takeover)
			if r.moved < r.deadTransfers {
				take += fmt.Sprintf(" (%d never moved)", r.deadTransfers-r.moved)
			}
		}
		fmt.Fprintf(b, "| %s | %s | %s | %s | %d / %d | %s | %s | %d / %d | %d / %d |\n", name,
			ms(percentile(w, 0.5)), ms(percentile(w, 0.99)), ms(percentile(w, 1)), len(w), r.probes,
			take, median, r.moved, r.deadTransfers, r.intact, r.transfers)
	}
	var t, p *result
	for _, r := range results {
		if r.side == "tether" {
			t = r
		} else {
			p = r
		}
	}
	if t != nil && p != nil {
		tw, pw := sortedCopy(t.windows), sortedCopy(p.windows)
		fmt.Fprintf(b, "\nTether / conntrackd (below 1: Tether is faster): window median %s, p99 %s, max %s; takeover %s, median transfer's %s.\n",
			ratio(percentile(tw, 0.5), percentile(pw, 0.5)), ratio(percentile(tw, 0.99), percentile(pw, 0.99)),
			ratio(percentile(tw, 1), percentile(pw, 1)), ratio(t.takeover, p.takeover),
			ratio(percentile(sortedCopy(t.moves), 0.5), percentile(sortedCopy(p.moves), 0.5)))
	}
	fmt.Fprintf(b, "\n* window: from just before the client's connect() to the moment the unit that did not carry the connection holds its state; %d probe connections to %s:80, one at a time from the client (after one uncounted warm-up), each closed once measured, bounded at %s each\n",
		o.probes, vip, probeTimeout)
	fmt.Fprintf(b, "* takeover: %d downloads of %d bytes at %d B/s in %d-byte writes (a transfer moves every %s: the figure's resolution); once each is under way and unit 0's are held by unit 1, unit 0 dies (the kill's instant: when the kill is done) and the router then sends the VIP range (ECMP over both units until then) and unit 0's SNAT address %s to unit 1; the figure is the latest first byte after the kill among the transfers unit 0 carried\n",
		o.transfers, o.pace*int64(o.seconds), o.pace, o.chunk, ms(time.Duration(int64(o.chunk)*int64(time.Second)/o.pace)), snatOf(0))
	for _, r := range results {
		if r.snatRouted > 0 {
			how := "ip commands (e2e's RouteSNAT and SpreadVIPs), both started at the kill"
			if o.router == "netlink" {
				how = "over netlink, one after the other from the kill"
			}
			fmt.Fprintf(b, "* %s: the router's changes (%s) were done %s (unit 0's SNAT address, which the replies of its connections need) and %s (the VIP range, which their ACKs need) after the kill; the takeover figures include them: the last moved transfer moved %s after both\n",
				r.side, how, ms(r.snatRouted), ms(r.vipRouted), ms(r.takeover-max(r.snatRouted, r.vipRouted)))
		}
		if r.deadCheck != "" {
			fmt.Fprintf(b, "* %s: unit 0 was not wholly dead after the kill: %s\n", r.side, oneLine(r.deadCheck))
		}
		if r.firstErr != "" {
			fmt.Fprintf(b, "* %s: first error: %s\n", r.side, oneLine(r.firstErr))
		}
		if r.err != nil {
			fmt.Fprintf(b, "* %s: the run failed: %s\n", r.side, oneLine(r.err.Error()))
		}
		for _, n := range r.notes {
			fmt.Fprintf(b, "* %s\n", n)
		}
	}
	fmt.Fprintf(b, "* topology: client → router (L4 ECMP over the units) → bridge with two units and ten backends (the e2e payload role); the backends route through the router, which sends each unit's SNAT address to it\n")
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
