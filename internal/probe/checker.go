package probe

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// Status is a checker's state.
type Status struct {
	Health Health
	// Last is the latest result; zero before the first probe.
	Last Result
	// Checks counts probes, Failures the failed ones.
	Checks, Failures uint64
	// Since is when Health last changed (the checker's creation while
	// it is Unknown).
	Since time.Time
}

// Monitor probes a spec every interval and applies rise and fall (see the
// package comment). Make one with New.
type Monitor struct {
	p        *prober
	onChange func(Health, Result)
	running  atomic.Bool // guards against concurrent Runs

	mu     sync.Mutex
	status Status
	streak int // consecutive results disagreeing with the current health
}

// New returns a checker of s with its defaults filled, or an error if the
// spec is invalid. onChange, which may be nil, is called every time the
// health changes, with the new health and the result that changed it. It
// is called from Run's goroutine, so never concurrently for one checker,
// and the next probe waits for it; it may call Status.
func New(s Spec, onChange func(Health, Result)) (*Monitor, error) {
	s = s.Defaults()
	if err := s.Validate(); err != nil {
		// Not wrapped again: it names the field and value already, and
		// callers prefix where the spec came from ("applications[2].check").
		return nil, err
	}
	if onChange == nil {
		onChange = func(Health, Result) {}
	}
	return &Monitor{p: newProber(s), onChange: onChange, status: Status{Since: time.Now()}}, nil
}

// Spec returns the checker's spec, defaults filled.
func (c *Monitor) Spec() Spec {
	if c.p == nil {
		return Spec{}
	}
	return c.p.spec
}

// Run probes at once, then every interval, until ctx ends. Probes never
// overlap: each ends within the timeout, which is at most the interval,
// and a late one delays the next rather than running beside it. A probe
// cut short because ctx ended is not counted: it says nothing about the
// target. Run may be called again after it returned; a call made while
// another Run of the same checker is active returns at once, since two
// loops would overlap probes and call onChange concurrently.
func (c *Monitor) Run(ctx context.Context) {
	if c.p == nil || ctx == nil {
		return // not made by New, or nothing to bound the loop: a bug, not a panic
	}
	if !c.running.CompareAndSwap(false, true) {
		return
	}
	defer c.running.Store(false)
	defer c.p.close()
	t := time.NewTicker(c.p.spec.Interval)
	defer t.Stop()
	for ctx.Err() == nil {
		r := c.p.probe(ctx)
		if ctx.Err() != nil {
			return
		}
		if h, changed := c.record(r); changed {
			c.onChange(h, r)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// record applies one result; it returns the health and whether it
// changed.
func (c *Monitor) record(r Result) (Health, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := &c.status
	st.Checks++
	if !r.OK {
		st.Failures++
	}
	st.Last = r
	want, need := Failing, c.p.spec.Fall
	if r.OK {
		want, need = Healthy, c.p.spec.Rise
	}
	switch st.Health {
	case want:
		c.streak = 0 // agreement breaks any opposite streak
		return st.Health, false
	case Unknown:
		need = 1 // the first result decides
	}
	if c.streak++; c.streak < need {
		return st.Health, false
	}
	st.Health, st.Since, c.streak = want, r.At, 0
	return want, true
}

// Status returns the checker's current state. It is safe to call at any
// time, including from onChange and concurrently with Run.
func (c *Monitor) Status() Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.status
}
