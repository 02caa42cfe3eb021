package main

import (
	"fmt"
	"html"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/tetherlb/tether/e2e"
)

// figure is one measured quantity: a column of the table and a panel of
// the chart.
type figure struct {
	key, title, unit string
	lowerBetter      bool
}

func figures(o options) []figure {
	var l7, other bool
	for _, s := range o.setups {
		l7, other = l7 || s.l7(), other || !s.l7()
	}
	l7figs := []figure{
		{key: figNewConn, title: "new conn/s", unit: "conn/s"},
		{key: figBulk, title: fmt.Sprintf("bulk MiB/s (%d × 1 MiB)", o.bulkConns), unit: "MiB/s"},
		{key: figTTFB50, title: "TTFB p50 µs", unit: "µs", lowerBetter: true},
		{key: figTTFB99, title: "TTFB p99 µs", unit: "µs", lowerBetter: true},
		{key: figDirect50, title: "direct TTFB p50 µs", unit: "µs", lowerBetter: true},
		{key: figDirect99, title: "direct TTFB p99 µs", unit: "µs", lowerBetter: true},
		{key: figAdded99, title: "p99 added to direct, µs", unit: "µs", lowerBetter: true},
	}
	if !other {
		return l7figs
	}
	figs := []figure{
		{key: figKeepAlive, title: "keep-alive req/s", unit: "req/s"},
		{key: figP50, title: "p50 ms", unit: "ms", lowerBetter: true},
		{key: figP99, title: "p99 ms", unit: "ms", lowerBetter: true},
		{key: figNewConn, title: "new conn/s", unit: "conn/s"},
		{key: figBulk, title: fmt.Sprintf("bulk MiB/s (%d × 1 MiB)", o.bulkConns), unit: "MiB/s"},
		{key: figStream, title: "one stream MiB/s", unit: "MiB/s"},
		{key: figUDPEst, title: "UDP 64 B pps, 256 flows", unit: "pps"},
		{key: figUDPNew, title: "UDP 64 B pps, new flow per packet", unit: "pps"},
	}
	if l7 {
		figs = append(figs, l7figs[2:]...)
	}
	return figs
}

// report turns the runs into the markdown table and the chart.
type report struct {
	opts    options
	results [][]*result // [run][setup]
	// wake is the machine's wake-up times before and after the loads
	// (e2e.WakeTimes).
	wake    [2]string
	elapsed time.Duration
	tetherd string
	date    string
	command string
}

// cell is one setup's figure over the runs.
type cell struct {
	vals     []float64 // successful runs
	failed   int
	na       bool // the figure does not apply to the setup
	min, max float64
}

func (c cell) median() float64 {
	if len(c.vals) == 0 {
		return math.NaN()
	}
	v := slices.Clone(c.vals)
	slices.Sort(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

func (rep report) cell(setup int, fig string) cell {
	var c cell
	applies := false
	for _, run := range rep.results {
		r := run[setup]
		if v, ok := r.vals[fig]; ok {
			applies = true
			c.vals = append(c.vals, v)
			continue
		}
		if _, ok := r.errs[fig]; ok || r.fatal != "" {
			applies = true
			c.failed++
		}
	}
	c.na = !applies
	if len(c.vals) > 0 {
		c.min, c.max = slices.Min(c.vals), slices.Max(c.vals)
	}
	return c
}

// ratio is the median over runs of setup a's figure divided by setup
// b's in the same run.
func (rep report) ratio(a, b int, fig string) (float64, bool) {
	var rs []float64
	for _, run := range rep.results {
		va, oka := run[a].vals[fig]
		vb, okb := run[b].vals[fig]
		if oka && okb && vb > 0 {
			rs = append(rs, va/vb)
		}
	}
	if len(rs) == 0 {
		return 0, false
	}
	return cell{vals: rs}.median(), true
}

func format(v float64) string {
	switch {
	case math.IsNaN(v):
		return "?"
	case v >= 100:
		s := fmt.Sprintf("%.0f", v)
		// Thousands separators, as in the table.
		for i := len(s) - 3; i > 0; i -= 3 {
			s = s[:i] + "," + s[i:]
		}
		return s
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}

func (c cell) String() string {
	switch {
	case c.na:
		return "–"
	case len(c.vals) == 0:
		return "failed"
	case c.failed > 0:
		return fmt.Sprintf("%s (%d failed)", format(c.median()), c.failed)
	}
	return format(c.median())
}

func (rep report) markdown(b *strings.Builder) {
	o := rep.opts
	figs := figures(o)
	fmt.Fprintf(b, "Whole system at defaults, %s; %d runs, medians; tetherd %s.\n\n", rep.date, o.runs, rep.tetherd)
	fmt.Fprintf(b, "Command: `%s` (took %s).\n\n", rep.command, rep.elapsed.Round(time.Second))
	fmt.Fprintf(b, "The machine: a thread's wake-up (a byte through a pipe, %d round trips) took %s before the loads and %s after.\n\n",
		e2e.WakeRounds, rep.wake[0], rep.wake[1])
	if figs[0].key == figNewConn { // the l7 comparison alone
		fmt.Fprintf(b, "Topology: client → router → unit (AF_XDP veth on the bridge) and three backends on a bridge, all veth in namespaces; the backends answer the client by way of the router. "+
			"Backends: the same Go HTTP server (lbbench's l7httpd role, on the agent's listener shim for Tether, on net.Listen for HAProxy), one per backend. "+
			"Pinning: the load balancer on core 1 (HAProxy; Tether's worker, and where the rest of the unit runs is in each row's notes); the client, the servers and the agents on core 0. "+
			"Loads: wrk -t1 for %d s each (new connections: %d, `Connection: close`, GET /; bulk: %d, GET %s1m.bin, 1 MiB, keep-alive); "+
			"time to first byte: %d s of new connections one at a time, alternately direct to backend b1 and through the VIP, connect(2) to the first response byte, GET / with Connection: close. "+
			"Other work is the CPU time processes outside the harness took while a setup's loads ran; "+
			"each setup waits up to %s for it to drop below %.0f%% of a core before it starts.\n\n",
			o.secs, o.conns, o.bulkConns, l7Rule, o.secs, quietWait, 100*quietShare)
	} else {
		rep.topology(b)
	}

	b.WriteString("| setup |")
	for _, f := range figs {
		if f.key == figNewConn {
			b.WriteString(" new conn/s | SYN retrans (per run) |")
			continue
		}
		fmt.Fprintf(b, " %s |", f.title)
	}
	b.WriteString(" other work, % of a core (per run) |")
	b.WriteString("\n|---|")
	for range len(figs) + 2 {
		b.WriteString("---|")
	}
	b.WriteString("\n")
	for i, s := range rep.opts.setups {
		fmt.Fprintf(b, "| %s |", s.name)
		for _, f := range figs {
			fmt.Fprintf(b, " %s |", rep.cell(i, f.key))
			if f.key == figNewConn {
				var retx []string
				for _, run := range rep.results {
					if v, ok := run[i].vals[figSynRetx]; ok {
						retx = append(retx, fmt.Sprint(int64(v)))
					} else {
						retx = append(retx, "?")
					}
				}
				fmt.Fprintf(b, " %s |", strings.Join(retx, " / "))
			}
		}
		var other []string
		for _, run := range rep.results {
			if o := run[i].other; o >= 0 {
				other = append(other, fmt.Sprintf("%.0f", 100*o))
			} else {
				other = append(other, "?")
			}
		}
		fmt.Fprintf(b, " %s |\n", strings.Join(other, " / "))
	}

	// Ratios of each Tether row to each peer, per run, then the median.
	var peers, tethers []int
	for i, s := range rep.opts.setups {
		if s.peer() {
			peers = append(peers, i)
		} else {
			tethers = append(tethers, i)
		}
	}
	if len(peers) > 0 && len(tethers) > 0 {
		b.WriteString("\nRatios, Tether to each peer in the same run (median of the per-run ratios; for p50 and p99 above 1 is worse):\n\n| setup | vs |")
		for _, f := range figs {
			fmt.Fprintf(b, " %s |", f.title)
		}
		b.WriteString("\n|---|---|")
		for range figs {
			b.WriteString("---|")
		}
		b.WriteString("\n")
		for _, t := range tethers {
			for _, p := range peers {
				fmt.Fprintf(b, "| %s | %s |", rep.opts.setups[t].name, rep.opts.setups[p].name)
				for _, f := range figs {
					if r, ok := rep.ratio(t, p, f.key); ok {
						fmt.Fprintf(b, " %.2f× |", r)
					} else {
						b.WriteString(" – |")
					}
				}
				b.WriteString("\n")
			}
		}
	}

	b.WriteString("\nNotes:\n\n")
	for i, s := range rep.opts.setups {
		var seen []string
		for r, run := range rep.results {
			res := run[i]
			if res.fatal != "" {
				fmt.Fprintf(b, "- %s, run %d: FAILED to start: %s\n", s.name, r+1, oneLine(res.fatal))
			}
			for _, n := range res.notes {
				if strings.HasPrefix(n, "UDP") {
					fmt.Fprintf(b, "- %s, run %d: %s\n", s.name, r+1, n)
				} else if !slices.Contains(seen, n) {
					seen = append(seen, n)
					fmt.Fprintf(b, "- %s: %s\n", s.name, n)
				}
			}
			for _, f := range figs {
				if e, ok := res.errs[f.key]; ok {
					fmt.Fprintf(b, "- %s, run %d: %s FAILED: %s\n", s.name, r+1, f.title, oneLine(e))
				}
			}
		}
	}
}

// topology describes the whole-system rows' topology and loads.
func (rep report) topology(b *strings.Builder) {
	o := rep.opts
	fmt.Fprintf(b, "Topology: client → router → unit → three nginx backends (one worker each) on a bridge, all veth in namespaces. "+
		"Pinning: the load balancer (Tether's worker, HAProxy) on core 1; the client (wrk, curl, the UDP sender), nginx and the UDP sinks on core 0; "+
		"the kernel's softirq work wherever it runs. Loads: wrk -t1 for %d s each (keep-alive: %d connections; new connections: %d, `Connection: close`; bulk: %d, "+
		"the 1 MiB file); one %d MiB stream with curl; 64-byte UDP frames for %d s from a raw socket, counted at the backends. "+
		"Other work is the CPU time processes outside the harness took while a setup's loads ran (the machine may be shared); "+
		"each setup waits up to %s for it to drop below %.0f%% of a core before it starts.\n\n",
		o.secs, o.conns, o.conns, o.bulkConns, o.stream>>20, o.secs, quietWait, 100*quietShare)
}

// oneLine keeps the first line of a long error for the table's notes.
func oneLine(s string) string {
	first, _, _ := strings.Cut(s, "\n")
	if len(first) > 300 {
		first = first[:300] + "…"
	}
	return first
}

// Chart layout: one panel per figure, four to a row.
const (
	panelW, panelH = 290, 250
	cols           = 4
	plotTop        = 46 // below the title and the value labels
	plotBottom     = 60 // room for the setup labels
)

var palette = []string{"#4e79a7", "#f28e2b", "#59a14f", "#8cd17d", "#b07aa1", "#d4a6c8", "#e15759", "#76b7b2"}

// svg draws every figure's median per setup as a bar, with the range
// over the runs as a whisker.
func (rep report) svg() string {
	figs := figures(rep.opts)
	var panels []figure
	for _, f := range figs {
		if f.key != figP50 {
			panels = append(panels, f)
		}
	}
	rows := (len(panels) + 1 + cols - 1) / cols // one more slot for the legend
	w, h := cols*panelW, rows*panelH+40
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="11">`+"\n", w, h, w, h)
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="white"/>`+"\n", w, h)
	fmt.Fprintf(&b, `<text x="10" y="22" font-size="15" font-weight="bold">%s</text>`+"\n",
		html.EscapeString(fmt.Sprintf("Tether whole-system benchmark, %s, median of %d runs (whiskers: min–max)", rep.date, rep.opts.runs)))
	n := len(rep.opts.setups)
	for p, f := range panels {
		x0, y0 := (p%cols)*panelW, 40+(p/cols)*panelH
		plotH := panelH - plotTop - plotBottom
		top := 0.0
		for i := range n {
			if c := rep.cell(i, f.key); len(c.vals) > 0 {
				top = max(top, c.max)
			}
		}
		if top == 0 {
			top = 1
		}
		top *= 1.08
		title := f.title
		if f.lowerBetter {
			title += " (lower is better)"
		}
		fmt.Fprintf(&b, `<g transform="translate(%d,%d)">`+"\n", x0, y0)
		fmt.Fprintf(&b, `<text x="%d" y="16" text-anchor="middle" font-weight="bold">%s</text>`+"\n", panelW/2, html.EscapeString(title))
		base := plotTop + plotH
		fmt.Fprintf(&b, `<line x1="20" y1="%d" x2="%d" y2="%d" stroke="#888"/>`+"\n", base, panelW-10, base)
		slot := float64(panelW-40) / float64(n)
		for i, s := range rep.opts.setups {
			c := rep.cell(i, f.key)
			cx := 25 + slot*(float64(i)+0.5)
			bw := slot * 0.7
			label := "n/a"
			switch {
			case c.na:
			case len(c.vals) == 0:
				label = "failed"
			default:
				m := c.median()
				bh := float64(plotH) * m / top
				fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"/>`+"\n", cx-bw/2, float64(base)-bh, bw, bh, palette[i%len(palette)])
				if len(c.vals) > 1 {
					y1, y2 := float64(base)-float64(plotH)*c.min/top, float64(base)-float64(plotH)*c.max/top
					fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="black"/>`+"\n", cx, y1, cx, y2)
				}
				label = shortNumber(m)
				fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle" font-size="10">%s</text>`+"\n", cx, float64(base)-max(bh, float64(plotH)*c.max/top)-4, label)
				label = ""
			}
			if label != "" {
				fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle" font-size="10" fill="#666">%s</text>`+"\n", cx, base-4, label)
			}
			fmt.Fprintf(&b, `<text transform="translate(%.1f,%d) rotate(35)" font-size="10">%s</text>`+"\n", cx-3, base+12, html.EscapeString(shortName(s.name)))
		}
		b.WriteString("</g>\n")
	}
	// The legend takes the slot after the last panel.
	p := len(panels)
	x0, y0 := (p%cols)*panelW, 40+(p/cols)*panelH
	fmt.Fprintf(&b, `<g transform="translate(%d,%d)">`+"\n", x0+20, y0+20)
	for i, s := range rep.opts.setups {
		fmt.Fprintf(&b, `<rect x="0" y="%d" width="12" height="12" fill="%s"/><text x="18" y="%d">%s</text>`+"\n", i*18, palette[i%len(palette)], i*18+10, html.EscapeString(s.name))
	}
	fmt.Fprintf(&b, `<text x="0" y="%d" fill="#444">LB on core 1; client, backends on core 0</text>`+"\n", n*18+14)
	b.WriteString("</g>\n</svg>\n")
	return b.String()
}

func shortNumber(v float64) string {
	switch {
	case v >= 10000:
		return fmt.Sprintf("%.0fk", v/1000)
	case v >= 1000:
		return fmt.Sprintf("%.1fk", v/1000)
	case v >= 10:
		return fmt.Sprintf("%.0f", v)
	}
	return fmt.Sprintf("%.2g", v)
}

// shortName fits a setup's name under its bar.
func shortName(name string) string {
	r := strings.NewReplacer("tether-", "", "halfnat", "half")
	return r.Replace(name)
}
