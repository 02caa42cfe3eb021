package sessions

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"
)

var (
	// ErrFull is Establish's error when the table holds its maximum.
	ErrFull = errors.New("session table full")
	// ErrUnknown is Terminate's error for a session the table does not
	// hold (never established, already terminated, or expired).
	ErrUnknown = errors.New("unknown session")
)

// DefaultMax is the sessions a table holds unless told otherwise.
const DefaultMax = 65536

// Options configure a Table.
type Options struct {
	// Max bounds the sessions held (DefaultMax when 0).
	Max int
	// Now is the clock (time.Now when nil); tests inject their own.
	Now func() time.Time
}

// Stats count what a table did.
type Stats struct {
	Established uint64 `json:"established"` // new sessions
	Refreshed   uint64 `json:"refreshed"`   // establishes of held sessions
	Terminated  uint64 `json:"terminated"`
	Expired     uint64 `json:"expired"` // client_ip sessions idle past their timeout
	// Refused counts establishes and terminates refused: invalid, full
	// or unknown.
	Refused uint64 `json:"refused"`
}

// Table is the host's authoritative session table. It also keeps what
// changed since its holder last sent the table to a unit (Resync,
// Drain), so that only changes travel while a unit is in step.
type Table struct {
	max int
	now func() time.Time

	mu      sync.Mutex
	m       map[id]*entry
	expiry  deadlines
	stats   Stats
	pending map[id]change
	// tracking is true between Resync and Untrack: a unit holds what was
	// sent, and pending is what it lacks. Otherwise nothing is pending:
	// the next Resync sends everything.
	tracking bool
	// changed wakes the sender (Changes); rearm wakes the expiry loop
	// (Run) when a deadline is added, which may be its earliest.
	changed chan struct{}
	rearm   chan struct{}
}

type entry struct {
	s     Session
	since time.Time
	// deadline is when a client_ip session expires (zero otherwise).
	deadline time.Time
	// sent: the unit being tracked has been sent this session (by a
	// resync or a change), so its end must be sent too.
	sent bool
}

// change is a session's latest change not yet sent: up (established or
// changed) or down.
type change struct {
	s  Session
	up bool
}

// New makes an empty table.
func New(opts Options) *Table {
	if opts.Max <= 0 {
		opts.Max = DefaultMax
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Table{max: opts.Max, now: opts.Now, m: map[id]*entry{}, pending: map[id]change{},
		changed: make(chan struct{}, 1), rearm: make(chan struct{}, 1)}
}

// Max is the most sessions the table holds.
func (t *Table) Max() int { return t.max }

func poke(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// Establish records that s is established. Establishing a held session
// refreshes it (a client_ip session's idle timeout starts again) and
// takes its new application name and timeout; created says whether it
// is new. Errors: ErrInvalid (wrapped), ErrFull.
func (t *Table) Establish(s Session) (created bool, err error) {
	s = s.Canonical()
	s.Key = slices.Clone(s.Key) // the table's own copy
	if err := s.Validate(); err != nil {
		t.refused()
		return false, err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	k := s.id()
	e := t.m[k]
	if e == nil {
		if len(t.m) >= t.max {
			t.stats.Refused++
			return false, fmt.Errorf("%w: %d sessions (sessions.max)", ErrFull, t.max)
		}
		e = &entry{s: s, since: now}
		// A down not sent yet means the unit still holds the session:
		// it must hear of this one's end as well.
		if c, ok := t.pending[k]; ok && !c.up {
			e.sent = true
		}
		t.m[k] = e
		created = true
		t.stats.Established++
		t.record(k, e, true)
	} else {
		t.stats.Refreshed++
		if e.s.Application != s.Application || e.s.IdleTimeoutMS != s.IdleTimeoutMS {
			e.s = s
			t.record(k, e, true)
		}
	}
	if s.Kind == KindClientIP {
		e.deadline = now.Add(s.IdleTimeout())
		heap.Push(&t.expiry, deadline{at: e.deadline, k: k})
		t.compact()
		poke(t.rearm)
	}
	return created, nil
}

func (t *Table) refused() {
	t.mu.Lock()
	t.stats.Refused++
	t.mu.Unlock()
}

// record notes a change for the tracked unit; under mu.
func (t *Table) record(k id, e *entry, up bool) {
	if !t.tracking {
		return
	}
	if !up && !e.sent {
		// The unit never heard of it: nothing to take back.
		delete(t.pending, k)
		return
	}
	t.pending[k] = change{s: e.s, up: up}
	poke(t.changed)
}

// Terminate records that s ended. Only its identity counts. Errors:
// ErrInvalid (wrapped), ErrUnknown.
func (t *Table) Terminate(s Session) error {
	s = s.Canonical()
	if err := s.ValidIdentity(); err != nil {
		t.refused()
		return err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	k := s.id()
	e := t.m[k]
	if e == nil {
		t.stats.Refused++
		return fmt.Errorf("%w: %v", ErrUnknown, s)
	}
	t.remove(k, e)
	t.stats.Terminated++
	return nil
}

func (t *Table) remove(k id, e *entry) {
	delete(t.m, k)
	t.record(k, e, false)
}

// Expire ends the client_ip sessions whose idle timeout has passed and
// returns how many it ended.
func (t *Table) Expire() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	n := 0
	for len(t.expiry) > 0 && !t.expiry[0].at.After(now) {
		d := heap.Pop(&t.expiry).(deadline)
		// A refreshed session left its older deadlines behind: only its
		// current one counts.
		if e := t.m[d.k]; e != nil && e.deadline.Equal(d.at) {
			t.remove(d.k, e)
			t.stats.Expired++
			n++
		}
	}
	return n
}

// Next is the earliest deadline of a client_ip session, if any (it may
// be one a refresh made stale: Expire then ends nothing).
func (t *Table) Next() (time.Time, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.expiry) == 0 {
		return time.Time{}, false
	}
	return t.expiry[0].at, true
}

// compact drops stale deadlines once they outnumber the live sessions,
// so that refreshing a session often does not grow the heap without
// bound; under mu.
func (t *Table) compact() {
	if len(t.expiry) <= 2*len(t.m)+1024 {
		return
	}
	live := t.expiry[:0]
	for _, d := range t.expiry {
		if e := t.m[d.k]; e != nil && e.deadline.Equal(d.at) {
			live = append(live, d)
		}
	}
	clear(t.expiry[len(live):])
	t.expiry = live
	heap.Init(&t.expiry)
}

// Run expires client_ip sessions on time (with the real clock) until ctx
// ends.
func (t *Table) Run(ctx context.Context) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		t.Expire()
		wait := time.Hour
		if at, ok := t.Next(); ok {
			wait = max(time.Until(at), time.Millisecond)
		}
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		case <-t.rearm:
			if !timer.Stop() {
				select {
				case <-timer.C:
				default:
				}
			}
		}
	}
}

// View is one held session as the agent's API lists it.
type View struct {
	Session
	Since time.Time `json:"since"`
	// Expires is when a client_ip session ends unless established
	// again.
	Expires *time.Time `json:"expires,omitempty"`
}

// List returns up to limit sessions from offset, in a stable order (by
// kind, VIP, client, port, key), and how many the table holds.
func (t *Table) List(offset, limit int) ([]View, int) {
	t.mu.Lock()
	keys := make([]id, 0, len(t.m))
	for k := range t.m {
		keys = append(keys, k)
	}
	t.mu.Unlock()
	slices.SortFunc(keys, id.compare)
	total := len(keys)
	keys = keys[min(max(offset, 0), len(keys)):]
	keys = keys[:min(max(limit, 0), len(keys))]
	out := make([]View, 0, len(keys))
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, k := range keys {
		e := t.m[k]
		if e == nil {
			continue // ended between the two locks
		}
		v := View{Session: e.s, Since: e.since}
		if !e.deadline.IsZero() {
			d := e.deadline
			v.Expires = &d
		}
		out = append(out, v)
	}
	return out, total
}

// Len is the number of sessions held.
func (t *Table) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.m)
}

// Stats returns the counters.
func (t *Table) Stats() Stats {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.stats
}

// Resync returns every session (in List's order), forgets what was
// pending and starts tracking: from now on the caller holds a unit that
// has exactly these, and Drain returns what changes.
func (t *Table) Resync() []Session {
	t.mu.Lock()
	defer t.mu.Unlock()
	keys := make([]id, 0, len(t.m))
	for k, e := range t.m {
		keys = append(keys, k)
		e.sent = true
	}
	slices.SortFunc(keys, id.compare)
	out := make([]Session, len(keys))
	for i, k := range keys {
		out[i] = t.m[k].s
	}
	clear(t.pending)
	t.tracking = true
	return out
}

// Untrack stops tracking: no unit holds the table, so changes need not
// be kept apart; the next Resync sends everything.
func (t *Table) Untrack() {
	t.mu.Lock()
	defer t.mu.Unlock()
	clear(t.pending)
	t.tracking = false
}

// Drain returns up to max pending changes (each session at most once,
// with its latest change) and forgets them.
func (t *Table) Drain(max int) (up, down []Session) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for k, c := range t.pending {
		if len(up)+len(down) >= max {
			poke(t.changed) // more remain
			break
		}
		delete(t.pending, k)
		if c.up {
			up = append(up, c.s)
			if e := t.m[k]; e != nil {
				e.sent = true
			}
		} else {
			down = append(down, c.s)
		}
	}
	return up, down
}

// Changes is signalled (at most one signal waits) when a change is
// pending for the tracked unit.
func (t *Table) Changes() <-chan struct{} { return t.changed }

// deadline is a client_ip session's expiry in the heap.
type deadline struct {
	at time.Time
	k  id
}

type deadlines []deadline

func (d deadlines) Len() int           { return len(d) }
func (d deadlines) Less(i, j int) bool { return d[i].at.Before(d[j].at) }
func (d deadlines) Swap(i, j int)      { d[i], d[j] = d[j], d[i] }
func (d *deadlines) Push(x any)        { *d = append(*d, x.(deadline)) }
func (d *deadlines) Pop() any {
	old := *d
	x := old[len(old)-1]
	old[len(old)-1] = deadline{}
	*d = old[:len(old)-1]
	return x
}
