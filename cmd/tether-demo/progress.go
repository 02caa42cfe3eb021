package main

import (
	"fmt"
	"os"
)

// progress shows one VIP's traffic as it goes: on a terminal one line
// rewritten in place at each of the client's reports (at most every
// progressEvery); otherwise, for logs, a line at each quarter done, so
// that a VIP never prints more than five.
type progress struct {
	label string
	total int
	tty   bool
	shown int // quarters printed, without a terminal
	done  int
	fail  int
}

func newProgress(label string, total int) *progress {
	fi, err := os.Stdout.Stat()
	p := &progress{label: label, total: total, tty: err == nil && fi.Mode()&os.ModeCharDevice != 0}
	if p.tty {
		p.update(0, 0) // the line appears before the first report
	}
	return p
}

func (p *progress) line() string {
	s := fmt.Sprintf("    %s %*d/%d connections", p.label, len(fmt.Sprint(p.total)), p.done, p.total)
	if p.fail > 0 {
		s += fmt.Sprintf(", %d failed", p.fail)
	}
	return s
}

// update records a report from the client.
func (p *progress) update(done, failed int) {
	p.done, p.fail = done, failed
	if p.tty {
		fmt.Printf("\r\033[K%s", p.line())
		return
	}
	if q := 4 * done / p.total; q > p.shown {
		p.shown = q
		fmt.Println(p.line())
	}
}

// finish ends the VIP's line.
func (p *progress) finish() {
	switch {
	case p.tty:
		fmt.Println()
	case p.shown == 0:
		fmt.Println(p.line())
	}
}
