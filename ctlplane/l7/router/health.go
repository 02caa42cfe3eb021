package router

import (
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// health is the router's passive health check (outlier ejection): it
// watches what happens to the requests it sends to each backend key and
// ejects a key that keeps failing to take them, since the router does
// not see the unit's health verdicts. Its methods are safe for
// concurrent use.
type health struct {
	after       int
	first, most time.Duration

	hosts     sync.Map // Target.Key → *hostHealth
	ejections atomic.Uint64
}

// hostHealth is one key's state. A key is healthy (until zero), ejected
// (now before until) or on probation (until passed, no success since).
type hostHealth struct {
	// until is the end of the key's last ejection in Unix nanoseconds,
	// 0 once a success cleared it. It is written under mu and read
	// without it, so that avoid, called for every candidate of every
	// request, takes no lock.
	until atomic.Int64

	mu sync.Mutex
	// fails is the consecutive failures while healthy.
	fails int
	// period is how long the last ejection lasted; the next one after a
	// failure on probation lasts twice as long.
	period time.Duration
}

func newHealth(cfg Config) *health {
	return &health{after: cfg.EjectAfter, first: cfg.EjectFor, most: cfg.MaxEjectFor}
}

// host returns key's state, made on first use.
func (h *health) host(key string) *hostHealth {
	if v, ok := h.hosts.Load(key); ok {
		return v.(*hostHealth)
	}
	v, _ := h.hosts.LoadOrStore(key, new(hostHealth))
	return v.(*hostHealth)
}

// ejected reports whether key is ejected at now.
func (h *health) ejected(key string, now time.Time) bool {
	v, ok := h.hosts.Load(key)
	return ok && now.UnixNano() < v.(*hostHealth).until.Load()
}

// failure notes that a request to key failed in a way that says the host
// is unreachable or broken; it reports the ejection it caused, if any.
func (h *health) failure(key string, now time.Time) (ejectedFor time.Duration) {
	hh := h.host(key)
	hh.mu.Lock()
	defer hh.mu.Unlock()
	until := hh.until.Load()
	switch {
	case now.UnixNano() < until:
		// Ejected: a request decided before the ejection, or sent
		// because every host is ejected. The host is already paying
		// for its failures; this one must not lengthen the penalty.
		return 0
	case until != 0:
		// On probation: one failure ejects again, for longer.
		hh.period = min(2*hh.period, h.most)
	default:
		hh.fails++
		if hh.fails < h.after {
			return 0
		}
		hh.fails = 0
		hh.period = h.first
	}
	hh.until.Store(now.Add(hh.period).UnixNano())
	h.ejections.Add(1)
	return hh.period
}

// success notes that key answered a request (a response header came);
// it reports whether that ended the key's probation.
func (h *health) success(key string, now time.Time) (readmitted bool) {
	hh := h.host(key)
	hh.mu.Lock()
	defer hh.mu.Unlock()
	until := hh.until.Load()
	if now.UnixNano() < until {
		// Ejected: an answer to a request sent before the ejection
		// proves little about the host now; probation will tell.
		return false
	}
	hh.fails = 0
	if until == 0 {
		return false
	}
	hh.until.Store(0)
	hh.period = 0
	return true
}

// ejectedKeys returns the keys ejected at now, sorted.
func (h *health) ejectedKeys(now time.Time) []string {
	keys := []string{}
	h.hosts.Range(func(k, v any) bool {
		if now.UnixNano() < v.(*hostHealth).until.Load() {
			keys = append(keys, k.(string))
		}
		return true
	})
	slices.Sort(keys)
	return keys
}
