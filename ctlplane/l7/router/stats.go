package router

import (
	"sync"
	"sync/atomic"

	"github.com/tetherlb/tether/api/unit"
)

// ErrorKind names a kind of failure in Stats.Errors.
type ErrorKind = unit.RouterError

// The kinds of failure the router counts.
const (
	// ErrNoTarget: Decide found no host (the client got 503).
	ErrNoTarget ErrorKind = "no_target"
	// ErrDialFailed: a dial to a host failed other than by timing out
	// (refused, unreachable, source address unusable); 502.
	ErrDialFailed ErrorKind = "dial_failed"
	// ErrDialTimeout: a host did not accept a connection within
	// DialTimeout; 504.
	ErrDialTimeout ErrorKind = "dial_timeout"
	// ErrHostBusy: the host was at MaxConnsPerHost and no connection
	// came free within DialTimeout; 503.
	ErrHostBusy ErrorKind = "host_busy"
	// ErrResponseTimeout: no response header within
	// ResponseHeaderTimeout; 504.
	ErrResponseTimeout ErrorKind = "response_header_timeout"
	// ErrHostFailed: the host closed or reset the connection, or sent
	// something that is not HTTP, before a response header; 502.
	ErrHostFailed ErrorKind = "host_failed"
	// ErrBodyTimeout: the client did not send its body within
	// RequestBodyTimeout; 408.
	ErrBodyTimeout ErrorKind = "request_body_timeout"
	// ErrHeaderTimeout: a client stalled within a request header; 408.
	ErrHeaderTimeout ErrorKind = "request_header_timeout"
	// ErrClientGone: the client closed its connection before the
	// response; nothing to answer.
	ErrClientGone ErrorKind = "client_gone"
	// ErrOverLimit: a client connection beyond MaxClientConns; 503.
	ErrOverLimit ErrorKind = "client_conns_over_limit"
)

// Stats is a snapshot of a router's counters (the contract's type: the
// router's admin socket serves it, tetherctl shows it).
type Stats = unit.RouterStats

// Counts is the counters of one rule or one backend.
type Counts = unit.RouterCounts

// statusClasses is the number of rows in a status counter: 1xx … 5xx.
const statusClasses = 5

var classNames = [statusClasses]string{"1xx", "2xx", "3xx", "4xx", "5xx"}

// classCounters counts answers by status class.
type classCounters [statusClasses]atomic.Uint64

func (c *classCounters) add(status int) {
	if i := status/100 - 1; i >= 0 && i < statusClasses {
		c[i].Add(1)
	}
}

func (c *classCounters) snapshot() map[string]uint64 {
	m := make(map[string]uint64, statusClasses)
	for i := range c {
		if n := c[i].Load(); n > 0 {
			m[classNames[i]] = n
		}
	}
	return m
}

type rowCounters struct {
	requests atomic.Uint64
	status   classCounters
}

// counters are the router's live counters. Every field is updated
// without a lock; rules and backends are sync.Maps because their keys
// are written once and then only read.
type counters struct {
	activeConns atomic.Int64
	clientConns atomic.Uint64
	requests    atomic.Uint64
	status      classCounters
	rules       sync.Map // string → *rowCounters
	backends    sync.Map // string → *rowCounters
	dials       atomic.Uint64
	reuses      atomic.Uint64
	retries     atomic.Uint64
	errors      [len(errorKindsArray)]atomic.Uint64
}

// errorKindsArray lists every kind once; its length sizes
// counters.errors at compile time.
var errorKindsArray = [...]ErrorKind{
	ErrNoTarget, ErrDialFailed, ErrDialTimeout, ErrHostBusy, ErrResponseTimeout,
	ErrHostFailed, ErrBodyTimeout, ErrHeaderTimeout, ErrClientGone, ErrOverLimit,
}

// row returns name's counters in m, made on first use.
func row(m *sync.Map, name string) *rowCounters {
	if v, ok := m.Load(name); ok {
		return v.(*rowCounters)
	}
	v, _ := m.LoadOrStore(name, new(rowCounters))
	return v.(*rowCounters)
}

func rows(m *sync.Map) map[string]Counts {
	out := map[string]Counts{}
	m.Range(func(k, v any) bool {
		r := v.(*rowCounters)
		out[k.(string)] = Counts{Requests: r.requests.Load(), ByStatus: r.status.snapshot()}
		return true
	})
	return out
}

func (c *counters) fail(k ErrorKind) {
	for i, kk := range errorKindsArray {
		if kk == k {
			c.errors[i].Add(1)
			return
		}
	}
}

// Stats returns a snapshot of the router's counters. Each counter is
// read atomically; the snapshot as a whole is not (a request may show
// in Requests and not yet in ByStatus).
func (rt *Router) Stats() Stats {
	c := &rt.stats
	s := Stats{
		ActiveClientConns: c.activeConns.Load(),
		ClientConns:       c.clientConns.Load(),
		Requests:          c.requests.Load(),
		ByStatus:          c.status.snapshot(),
		ByRule:            rows(&c.rules),
		ByBackend:         rows(&c.backends),
		HostDials:         c.dials.Load(),
		HostReuses:        c.reuses.Load(),
		Errors:            map[ErrorKind]uint64{},
		Retries:           c.retries.Load(),
		Ejected:           rt.health.ejectedKeys(rt.cfg.now()),
		Ejections:         rt.health.ejections.Load(),
	}
	for i, k := range errorKindsArray {
		if n := c.errors[i].Load(); n > 0 {
			s.Errors[k] = n
		}
	}
	return s
}
