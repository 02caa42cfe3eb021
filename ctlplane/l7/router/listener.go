package router

import (
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// overLimitAnswer is what a client connection beyond MaxClientConns
// reads before the router closes it.
const overLimitAnswer = "HTTP/1.1 503 Service Unavailable\r\n" +
	"Content-Type: text/plain; charset=utf-8\r\n" +
	"Connection: close\r\n" +
	"Retry-After: 1\r\n" +
	"Content-Length: 29\r\n" +
	"\r\n" +
	"too many client connections\r\n"

// headerTimeoutAnswer is what a client that stalled inside a request
// header reads before the router closes it.
const headerTimeoutAnswer = "HTTP/1.1 408 Request Timeout\r\n" +
	"Content-Type: text/plain; charset=utf-8\r\n" +
	"Connection: close\r\n" +
	"Content-Length: 25\r\n" +
	"\r\n" +
	"request header timed out\n"

// answerTimeout bounds writing one of the router's own answers above
// and, for the over-limit answer, reading what the client sent before
// closing (see reject).
const answerTimeout = time.Second

// maxRejecting bounds the over-limit connections being answered at
// once; beyond it they are closed without an answer, so a flood cannot
// make the answers themselves a cost without bound.
const maxRejecting = 256

// limitListener counts the client connections and keeps them below
// MaxClientConns; each connection it hands out is a *clientConn. It
// also keeps the connections it handed out, for closeAll: the server
// forgets a connection once a handler hijacks it for an upgrade.
type limitListener struct {
	net.Listener
	rt        *Router
	max       int64
	rejecting atomic.Int64

	mu    sync.Mutex
	conns map[*clientConn]struct{}
}

func newLimitListener(l net.Listener, rt *Router) *limitListener {
	return &limitListener{Listener: l, rt: rt, max: int64(rt.cfg.MaxClientConns), conns: map[*clientConn]struct{}{}}
}

// closeAll closes every connection still open, upgraded ones included.
func (l *limitListener) closeAll() {
	l.mu.Lock()
	conns := make([]*clientConn, 0, len(l.conns))
	for c := range l.conns {
		conns = append(conns, c)
	}
	l.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
}

// Accept implements net.Listener.Accept.
func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		st := &l.rt.stats
		st.clientConns.Add(1)
		if st.activeConns.Add(1) > l.max {
			st.activeConns.Add(-1)
			st.fail(ErrOverLimit)
			st.status.add(503)
			l.reject(c)
			continue
		}
		cc := &clientConn{Conn: c, rt: l.rt, l: l}
		l.mu.Lock()
		l.conns[cc] = struct{}{}
		l.mu.Unlock()
		return cc, nil
	}
}

// reject answers c 503 and closes it, on its own goroutine so that a
// slow client does not hold up Accept. It half-closes first and reads
// what the client sent, briefly: closing a socket with unread data
// resets it, and the reset can destroy the answer before the client has
// read it.
func (l *limitListener) reject(c net.Conn) {
	if l.rejecting.Add(1) > maxRejecting {
		l.rejecting.Add(-1)
		c.Close()
		return
	}
	go func() {
		defer l.rejecting.Add(-1)
		defer c.Close()
		c.SetDeadline(time.Now().Add(answerTimeout))
		if _, err := io.WriteString(c, overLimitAnswer); err != nil {
			return
		}
		if cw, ok := c.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		}
		io.Copy(io.Discard, io.LimitReader(c, 64<<10))
	}()
}

// clientConn is one client connection. It gives the slot back on Close,
// and answers 408 for the standard library, which closes a connection
// silently when a header read times out.
type clientConn struct {
	net.Conn
	rt        *Router
	l         *limitListener
	closeOnce sync.Once

	// inRequest is set while the handler runs; pending counts the bytes
	// read while it is not, that is, of a header not yet complete.
	inRequest atomic.Bool
	pending   atomic.Int64
	answered  atomic.Bool
}

// Read implements net.Conn.Read.
func (c *clientConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if c.inRequest.Load() {
		return n, err
	}
	if c.pending.Add(int64(n)) > 0 && isTimeout(err) && c.answered.CompareAndSwap(false, true) {
		// Part of a header came and then nothing until the deadline
		// the server set for the header: the client is slow or stuck,
		// and gets told so. The server's goroutine is the one reading
		// here and writes nothing until the read returns, so the
		// answer cannot interleave with another.
		c.rt.stats.fail(ErrHeaderTimeout)
		c.rt.stats.status.add(408)
		c.Conn.SetWriteDeadline(time.Now().Add(answerTimeout))
		io.WriteString(c.Conn, headerTimeoutAnswer)
	}
	return n, err
}

// beginRequest and endRequest bracket the handler of each request.
func (c *clientConn) beginRequest() { c.inRequest.Store(true) }
func (c *clientConn) endRequest() {
	c.pending.Store(0)
	c.inRequest.Store(false)
}

// Close implements net.Conn.Close.
func (c *clientConn) Close() error {
	err := c.Conn.Close()
	c.closeOnce.Do(func() {
		c.rt.stats.activeConns.Add(-1)
		c.l.mu.Lock()
		delete(c.l.conns, c)
		c.l.mu.Unlock()
	})
	return err
}

func isTimeout(err error) bool {
	var ne net.Error
	return err != nil && errors.As(err, &ne) && ne.Timeout()
}
