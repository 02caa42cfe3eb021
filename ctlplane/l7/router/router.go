package router

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/http/httputil"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
)

// Router is an HTTP/1.1 request router. Its methods are safe for
// concurrent use; Serve may run on several listeners at once, and they
// share the host connections and the counters.
type Router struct {
	cfg       Config
	log       zerolog.Logger
	transport *http.Transport
	proxy     *httputil.ReverseProxy
	stats     counters
	health    *health
}

// New returns a router for cfg; it opens nothing until Serve.
func New(cfg Config) (*Router, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	rt := &Router{cfg: cfg, log: cfg.Log.With().Str("part", "l7-router").Logger(), health: newHealth(cfg)}
	dialer := &net.Dialer{Timeout: cfg.DialTimeout, KeepAlive: 30 * time.Second}
	if cfg.Source.IsValid() {
		dialer.LocalAddr = &net.TCPAddr{IP: cfg.Source.AsSlice()}
	}
	rt.transport = &http.Transport{
		// Never the environment's proxy: the target is the host.
		Proxy: nil,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			rt.stats.dials.Add(1)
			c, err := dialer.DialContext(ctx, network, addr)
			if err != nil {
				return nil, &dialError{err: err}
			}
			return c, nil
		},
		MaxIdleConns:          0, // no bound across hosts; MaxIdleConnsPerHost bounds each
		MaxIdleConnsPerHost:   cfg.MaxIdleConnsPerHost,
		MaxConnsPerHost:       cfg.MaxConnsPerHost,
		IdleConnTimeout:       cfg.HostIdleTimeout,
		ResponseHeaderTimeout: cfg.ResponseHeaderTimeout,
		ExpectContinueTimeout: time.Second,
		// The client's Accept-Encoding goes to the host as it came; the
		// transport must not ask for gzip on its own and then unpack it.
		DisableCompression: true,
		ForceAttemptHTTP2:  false,
		WriteBufferSize:    bufSize,
		ReadBufferSize:     bufSize,
	}
	rt.proxy = &httputil.ReverseProxy{
		Rewrite:   rt.rewrite,
		Transport: rt.transport,
		// Flush every write: a slow body of known length (a long
		// poll, a progress report) must not wait in the server's
		// buffer for the next write. It costs one write call per
		// copied buffer, which a body already costs.
		FlushInterval:  -1,
		BufferPool:     bufferPool{},
		ModifyResponse: rt.modifyResponse,
		ErrorHandler:   rt.proxyError,
		ErrorLog:       log.New(debugWriter{rt.log}, "", 0),
	}
	return rt, nil
}

// Serve serves client connections from l until ctx is done or l fails,
// then closes l. Once ctx is done, requests in flight get
// ShutdownTimeout to finish; then every client connection still open is
// closed (upgraded ones at once: they have no end the router could wait
// for) and Serve returns nil. If l fails instead, Serve closes every client
// connection at once and returns l's error.
func (rt *Router) Serve(ctx context.Context, l net.Listener) error {
	srv := &http.Server{
		Handler:           http.HandlerFunc(rt.serveHTTP),
		ReadHeaderTimeout: rt.cfg.ReadHeaderTimeout,
		IdleTimeout:       rt.cfg.IdleTimeout,
		MaxHeaderBytes:    rt.cfg.MaxHeaderBytes,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			if cc, ok := c.(*clientConn); ok {
				return context.WithValue(ctx, connKey{}, cc)
			}
			return ctx
		},
		ErrorLog: log.New(debugWriter{rt.log}, "", 0),
	}
	// HTTP/1.1 only, said outright: the router terminates no TLS, and
	// cleartext HTTP/2 would need its own limits.
	srv.Protocols = new(http.Protocols)
	srv.Protocols.SetHTTP1(true)

	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		select {
		case <-ctx.Done():
		case <-done:
			return
		}
		sctx, cancel := context.WithTimeout(context.Background(), rt.cfg.ShutdownTimeout)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			srv.Close()
		}
	}()
	ll := newLimitListener(l, rt)
	err := srv.Serve(ll)
	close(done)
	wg.Wait()
	ll.closeAll()
	rt.transport.CloseIdleConnections()
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return fmt.Errorf("router: serve %s: %w", l.Addr(), err)
}

type connKey struct{}

// reqKey keys a request's *reqState in its context.
type reqKey struct{}

// reqState is what the router knows of one attempt at a request (a
// request retried on another host has two) between deciding it and
// answering it.
type reqState struct {
	target    Target
	rule      *rowCounters
	backend   *rowCounters // nil until a host is chosen
	connTimer *time.Timer  // bounds getting a host connection

	// retryable is set when a failed dial may be retried on another
	// host: the request has no body, and this is its first attempt.
	retryable bool
	// held is the answer proxyError held back for a retryable failure;
	// serveHTTP retries or sends it. The proxy calls proxyError on
	// serveHTTP's goroutine, so it needs no lock.
	held *heldAnswer

	// mu guards what the transport's and the body's goroutines note
	// for classify and for the passive health check.
	mu sync.Mutex
	// dialing is set once the transport starts a dial for this request,
	// to tell a dial that timed out from a wait for a busy host.
	dialing bool
	// fresh is set when the transport got a connection it dialed for
	// this request: a reused one the host closed while idle says
	// nothing about the host's health.
	fresh bool
	// responded is set once the host's response header came; a later
	// failure (an upgrade cut short) is not the host's failing to take
	// the request.
	responded bool
	// bodyTimeout is set when the client's body passed
	// RequestBodyTimeout; bodyFailed when reading it failed otherwise
	// (the client left): either is the client's failure, not the host's.
	bodyTimeout bool
	bodyFailed  bool
}

// heldAnswer is one of the router's own answers, not sent yet.
type heldAnswer struct {
	status int
	msg    string
}

// errNoConn cancels a request that got no host connection within
// DialTimeout.
var errNoConn = errors.New("no host connection within the dial timeout")

func (rt *Router) serveHTTP(w http.ResponseWriter, r *http.Request) {
	rt.stats.requests.Add(1)
	if cc, ok := r.Context().Value(connKey{}).(*clientConn); ok {
		cc.beginRequest()
		defer cc.endRequest()
	}
	now := rt.cfg.now()
	t, ok := rt.cfg.Decide(r, func(key string) bool { return rt.health.ejected(key, now) })
	st := &reqState{target: t, rule: row(&rt.stats.rules, t.Rule)}
	st.rule.requests.Add(1)
	if !ok || !validTarget(t) {
		// A target without an address is a rule's mistake; the client
		// sees the same as for no rule at all.
		rt.stats.fail(ErrNoTarget)
		rt.answer(w, st, http.StatusServiceUnavailable, "no host for this request", hasBody(r))
		return
	}

	if hasBody(r) {
		// The whole body within RequestBodyTimeout; the deadline is
		// lifted at its end, so that it cannot cut the response.
		rc := http.NewResponseController(w)
		if err := rc.SetReadDeadline(time.Now().Add(rt.cfg.RequestBodyTimeout)); err == nil {
			r.Body = &deadlineBody{ReadCloser: r.Body, rc: rc, st: st}
		}
	} else {
		// Only a request without a body is retried: one with a body
		// may have had part of it read into a failed attempt, and
		// the router keeps no copy to send again.
		st.retryable = true
	}
	rt.attempt(w, r, st)
	if st.held == nil {
		return
	}

	// The dial failed, so nothing of the request reached the host: try
	// once more, on another host if Decide has one.
	failed := st.target.Key
	now = rt.cfg.now()
	t2, ok := rt.cfg.Decide(r, func(key string) bool { return key == failed || rt.health.ejected(key, now) })
	if !ok || !validTarget(t2) || t2.Key == failed {
		rt.answer(w, st, st.held.status, st.held.msg, false)
		return
	}
	rt.stats.retries.Add(1)
	// The request counted once under its rule, when first decided.
	rt.attempt(w, r, &reqState{target: t2, rule: row(&rt.stats.rules, t2.Rule)})
}

// validTarget: t has an address a connection can go to.
func validTarget(t Target) bool { return t.Addr.IsValid() && t.Addr.Port() != 0 }

// attempt sends r to st's host through the proxy, which answers the
// client, unless proxyError holds the answer back in st.held.
func (rt *Router) attempt(w http.ResponseWriter, r *http.Request, st *reqState) {
	st.backend = row(&rt.stats.backends, st.target.Key)
	st.backend.requests.Add(1)

	ctx, cancel := context.WithCancelCause(r.Context())
	defer cancel(nil)
	// Getting a host connection, dialed or freed, is bounded by
	// DialTimeout for each attempt; the timer stops when the transport
	// has one.
	st.connTimer = time.AfterFunc(rt.cfg.DialTimeout, func() { cancel(errNoConn) })
	defer st.connTimer.Stop()
	ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		ConnectStart: func(string, string) {
			st.mu.Lock()
			st.dialing = true
			st.mu.Unlock()
		},
		GotConn: func(info httptrace.GotConnInfo) {
			st.connTimer.Stop()
			if info.Reused {
				rt.stats.reuses.Add(1)
			}
			st.mu.Lock()
			st.fresh = !info.Reused
			st.mu.Unlock()
		},
	})
	ctx = context.WithValue(ctx, reqKey{}, st)
	rt.proxy.ServeHTTP(w, r.WithContext(ctx))
}

// rewrite implements the ReverseProxy's Rewrite: the request goes to the
// decided host as it came, less its hop-by-hop headers (ReverseProxy
// removes those) and any forwarding headers the client wrote, which it
// could have forged; the router adds its own.
func (rt *Router) rewrite(pr *httputil.ProxyRequest) {
	st := pr.In.Context().Value(reqKey{}).(*reqState)
	pr.Out.URL.Scheme = "http"
	pr.Out.URL.Host = st.target.Addr.String()
	// The Host header stays the client's: virtual hosts on the host
	// must see the name the client asked for.
	pr.Out.Host = pr.In.Host
	pr.SetXForwarded()
	if ap, err := netip.ParseAddrPort(pr.In.RemoteAddr); err == nil {
		pr.Out.Header.Set("Forwarded", forwardedFor(ap.Addr().Unmap(), pr.In.Host))
	}
	pr.Out.Header.Add("Via", "1.1 tether")
}

// forwardedFor is an RFC 7239 Forwarded element for a client.
func forwardedFor(a netip.Addr, host string) string {
	var b strings.Builder
	b.WriteString("for=")
	if a.Is6() {
		b.WriteString(`"[` + a.String() + `]"`)
	} else {
		b.WriteString(a.String())
	}
	if host != "" {
		b.WriteString(";host=" + strconv.Quote(host))
	}
	b.WriteString(";proto=http")
	return b.String()
}

func (rt *Router) modifyResponse(res *http.Response) error {
	st, _ := res.Request.Context().Value(reqKey{}).(*reqState)
	st.count(&rt.stats, res.StatusCode)
	st.mu.Lock()
	st.responded = true
	st.mu.Unlock()
	// Any response header, a 5xx too, shows the host takes requests:
	// whether it serves them well is for the health checks to say.
	if rt.health.success(st.target.Key, rt.cfg.now()) {
		rt.log.Info().Str("backend", st.target.Key).Stringer("host", st.target.Addr).Msg("backend readmitted after probation")
	}
	res.Header.Add("Via", "1.1 tether")
	return nil
}

// proxyError answers a request the router could not complete: it names
// the failure for the client and counts it.
func (rt *Router) proxyError(w http.ResponseWriter, r *http.Request, err error) {
	st, _ := r.Context().Value(reqKey{}).(*reqState)
	kind, status, msg := rt.classify(r, st, err)
	rt.stats.fail(kind)
	ev := rt.log.Debug().Str("kind", string(kind)).Str("path", r.URL.Path).Err(err)
	if st != nil {
		ev = ev.Str("rule", st.target.Rule).Str("backend", st.target.Key).Stringer("host", st.target.Addr)
	}
	ev.Msg("request failed")
	if st != nil {
		rt.noteFailure(st, kind)
	}
	if status == 0 {
		return // the client is gone
	}
	if st != nil && st.retryable && (kind == ErrDialFailed || kind == ErrDialTimeout) {
		st.held = &heldAnswer{status: status, msg: msg}
		return
	}
	rt.answer(w, st, status, msg, hasBody(r))
}

// noteFailure tells the passive health check about a failure that says
// the host is unreachable or broken: the dial failed or timed out, or
// the host closed or reset a connection dialed for this request before
// a response header. A slow answer (ErrResponseTimeout) is not one: a
// host may be slow for one request and fine for the next.
func (rt *Router) noteFailure(st *reqState, kind ErrorKind) {
	st.mu.Lock()
	fresh, responded, bodyFailed := st.fresh, st.responded, st.bodyFailed
	st.mu.Unlock()
	switch kind {
	case ErrDialFailed, ErrDialTimeout:
	case ErrHostFailed:
		if !fresh || responded || bodyFailed {
			return
		}
	default:
		return
	}
	if d := rt.health.failure(st.target.Key, rt.cfg.now()); d > 0 {
		rt.log.Warn().Str("backend", st.target.Key).Stringer("host", st.target.Addr).Dur("for", d).Msg("backend ejected")
	}
}

func (rt *Router) classify(r *http.Request, st *reqState, err error) (ErrorKind, int, string) {
	var dialing, bodyTimeout bool
	if st != nil {
		st.mu.Lock()
		dialing, bodyTimeout = st.dialing, st.bodyTimeout
		st.mu.Unlock()
	}
	var de *dialError
	switch {
	case bodyTimeout:
		return ErrBodyTimeout, http.StatusRequestTimeout, "request body timed out"
	case errors.Is(context.Cause(r.Context()), errNoConn) && dialing:
		return ErrDialTimeout, http.StatusGatewayTimeout, "host did not accept a connection in time"
	case errors.Is(context.Cause(r.Context()), errNoConn):
		return ErrHostBusy, http.StatusServiceUnavailable, "host busy: no free connection"
	case r.Context().Err() != nil:
		return ErrClientGone, 0, ""
	case errors.As(err, &de) && isTimeout(de.err):
		return ErrDialTimeout, http.StatusGatewayTimeout, "host did not accept a connection in time"
	case errors.As(err, &de):
		return ErrDialFailed, http.StatusBadGateway, "cannot connect to host"
	case isTimeout(err):
		// The transport's ResponseHeaderTimeout is the only timeout
		// left once the dial is done.
		return ErrResponseTimeout, http.StatusGatewayTimeout, "host did not answer in time"
	default:
		return ErrHostFailed, http.StatusBadGateway, "host failed before answering"
	}
}

// answer writes one of the router's own answers. If the request has a
// body the router did not read, the connection is closed after the
// answer rather than drained for the next request.
func (rt *Router) answer(w http.ResponseWriter, st *reqState, status int, msg string, unreadBody bool) {
	st.count(&rt.stats, status)
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	if status == http.StatusRequestTimeout || unreadBody {
		h.Set("Connection", "close")
	}
	w.WriteHeader(status)
	fmt.Fprintln(w, msg)
}

// count counts an answer's status in the router's, the rule's and the
// backend's rows; st may be nil.
func (st *reqState) count(c *counters, status int) {
	c.status.add(status)
	if st == nil {
		return
	}
	st.rule.status.add(status)
	if st.backend != nil {
		st.backend.status.add(status)
	}
}

func hasBody(r *http.Request) bool { return r.Body != nil && r.Body != http.NoBody }

// dialError marks an error as the dial's, for classify.
type dialError struct{ err error }

func (e *dialError) Error() string { return "dial host: " + e.err.Error() }
func (e *dialError) Unwrap() error { return e.err }
