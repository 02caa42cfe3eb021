package router

import (
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"time"

	"github.com/rs/zerolog"
)

// Target is where one request goes.
type Target struct {
	// Addr is the host's address and port.
	Addr netip.AddrPort
	// Key names the backend (a unit.BackendKey's text, "vip/backend");
	// Stats counts requests by it, and the logs name it.
	Key string
	// Rule names the rule that chose the host; Stats counts requests by
	// it. Keep the sets of rule names and keys bounded: each one is a
	// row of counters kept for the router's life.
	Rule string
}

// Config is a router's configuration. Zero durations and counts take the
// defaults named on each field (see [DefaultConfig]); negative ones are
// errors.
type Config struct {
	// Decide chooses the host for one request. It runs on the request's
	// own goroutine, once per request and once more for a retry (see
	// the package doc), and must not read the body. avoid reports
	// whether the router would rather not send this request to a
	// backend key: the key is ejected, or this request already failed
	// to reach it. Decide should choose among the keys avoid does not
	// name, and fall back to the others when that leaves none, so that
	// a router whose every host is ejected still tries them. false
	// answers the client 503. Required.
	Decide func(r *http.Request, avoid func(key string) bool) (Target, bool)

	// Source is the address the router's connections to hosts come
	// from: an address dedicated to this router, not the VIP, so that a
	// host's answers come back to the unit that asked (S1 §4). The zero
	// Addr lets the kernel choose.
	Source netip.Addr

	// ReadHeaderTimeout bounds reading one request's header once its
	// first byte arrived. Default 10s.
	ReadHeaderTimeout time.Duration
	// IdleTimeout bounds the wait for the next request on a keep-alive
	// client connection. Default 60s.
	IdleTimeout time.Duration
	// RequestBodyTimeout bounds reading a whole request body, from the
	// end of its header. Default 5m: long enough for a large upload on
	// a slow link, short enough that a client that stops sending frees
	// its host connection.
	RequestBodyTimeout time.Duration
	// MaxHeaderBytes bounds a request header (request line included).
	// Default 64 KiB.
	MaxHeaderBytes int
	// MaxClientConns bounds the client connections open at once,
	// upgraded ones included. A connection beyond it is accepted,
	// answered 503 and closed, so the client learns why instead of
	// waiting in the listen backlog. Default 10,000.
	MaxClientConns int

	// MaxIdleConnsPerHost bounds the idle connections kept open to each
	// host for reuse. Default 64.
	MaxIdleConnsPerHost int
	// MaxConnsPerHost bounds the connections open to each host, busy or
	// idle; a request beyond it waits for one (at most DialTimeout).
	// Default 512.
	MaxConnsPerHost int
	// HostIdleTimeout closes a host connection idle this long.
	// Default 90s.
	HostIdleTimeout time.Duration
	// DialTimeout bounds getting a connection to the host for one
	// request: dialing one, or waiting for one when the host is at
	// MaxConnsPerHost. Default 5s.
	DialTimeout time.Duration
	// ResponseHeaderTimeout bounds the wait for the host's response
	// header once the request (body included) is sent. Default 60s.
	ResponseHeaderTimeout time.Duration

	// EjectAfter is the consecutive failures (a dial that failed or
	// timed out, a connection dialed for the request closed before a
	// response header) after which a backend key is ejected (see the
	// package doc). Default 3.
	EjectAfter int
	// EjectFor is how long a key stays ejected the first time. Each
	// ejection that follows a failure on probation lasts twice the one
	// before, up to MaxEjectFor. Default 10s.
	EjectFor time.Duration
	// MaxEjectFor caps an ejection; it is raised to EjectFor if below
	// it. Default 2m.
	MaxEjectFor time.Duration

	// ShutdownTimeout is how long Serve lets requests in flight finish
	// once its context is done, before it closes every connection.
	// Default 10s.
	ShutdownTimeout time.Duration

	// Log receives the router's events; per-request failures are logged
	// at debug level (they are counted in Stats), ejections at warn.
	Log zerolog.Logger

	// now is the clock ejections are timed by; nil is time.Now. Tests
	// set it so that they can end an ejection without waiting for it.
	now func() time.Time
}

// DefaultConfig returns the defaults; Decide and Source are left zero.
func DefaultConfig() Config {
	return Config{
		ReadHeaderTimeout:     10 * time.Second,
		IdleTimeout:           60 * time.Second,
		RequestBodyTimeout:    5 * time.Minute,
		MaxHeaderBytes:        64 << 10,
		MaxClientConns:        10000,
		MaxIdleConnsPerHost:   64,
		MaxConnsPerHost:       512,
		HostIdleTimeout:       90 * time.Second,
		DialTimeout:           5 * time.Second,
		ResponseHeaderTimeout: 60 * time.Second,
		EjectAfter:            3,
		EjectFor:              10 * time.Second,
		MaxEjectFor:           2 * time.Minute,
		ShutdownTimeout:       10 * time.Second,
		Log:                   zerolog.Nop(),
	}
}

// withDefaults checks c and fills its zero fields from DefaultConfig.
func (c Config) withDefaults() (Config, error) {
	if c.Decide == nil {
		return c, errors.New("router: config: Decide is required")
	}
	if c.Source.IsValid() {
		c.Source = c.Source.Unmap()
		if c.Source.IsUnspecified() || c.Source.IsMulticast() {
			return c, fmt.Errorf("router: config: source %s is not a unicast address", c.Source)
		}
	}
	d := DefaultConfig()
	durations := []struct {
		name string
		v    *time.Duration
		def  time.Duration
	}{
		{"ReadHeaderTimeout", &c.ReadHeaderTimeout, d.ReadHeaderTimeout},
		{"IdleTimeout", &c.IdleTimeout, d.IdleTimeout},
		{"RequestBodyTimeout", &c.RequestBodyTimeout, d.RequestBodyTimeout},
		{"HostIdleTimeout", &c.HostIdleTimeout, d.HostIdleTimeout},
		{"DialTimeout", &c.DialTimeout, d.DialTimeout},
		{"ResponseHeaderTimeout", &c.ResponseHeaderTimeout, d.ResponseHeaderTimeout},
		{"EjectFor", &c.EjectFor, d.EjectFor},
		{"MaxEjectFor", &c.MaxEjectFor, d.MaxEjectFor},
		{"ShutdownTimeout", &c.ShutdownTimeout, d.ShutdownTimeout},
	}
	for _, f := range durations {
		switch {
		case *f.v < 0:
			return c, fmt.Errorf("router: config: %s %v is negative", f.name, *f.v)
		case *f.v == 0:
			*f.v = f.def
		}
	}
	counts := []struct {
		name string
		v    *int
		def  int
	}{
		{"MaxHeaderBytes", &c.MaxHeaderBytes, d.MaxHeaderBytes},
		{"MaxClientConns", &c.MaxClientConns, d.MaxClientConns},
		{"MaxIdleConnsPerHost", &c.MaxIdleConnsPerHost, d.MaxIdleConnsPerHost},
		{"MaxConnsPerHost", &c.MaxConnsPerHost, d.MaxConnsPerHost},
		{"EjectAfter", &c.EjectAfter, d.EjectAfter},
	}
	for _, f := range counts {
		switch {
		case *f.v < 0:
			return c, fmt.Errorf("router: config: %s %d is negative", f.name, *f.v)
		case *f.v == 0:
			*f.v = f.def
		}
	}
	if c.MaxIdleConnsPerHost > c.MaxConnsPerHost {
		c.MaxIdleConnsPerHost = c.MaxConnsPerHost
	}
	// A cap below the first period would shorten it; the period
	// never shrinks below EjectFor instead.
	if c.MaxEjectFor < c.EjectFor {
		c.MaxEjectFor = c.EjectFor
	}
	if c.now == nil {
		c.now = time.Now
	}
	return c, nil
}
