package shim

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tetherlb/tether/agent/shim/wire"
)

// DefaultSocket is the agent's default hand-off socket
// (migration.handoff_socket).
const DefaultSocket = "/run/tether-agent/handoff.sock"

// Options configure a shim listener.
type Options struct {
	// Socket is the agent's hand-off socket; "" is DefaultSocket.
	Socket string
	// Log, when not nil, hears about the agent's connection coming and
	// going and about refused hand-offs.
	Log *slog.Logger
	// MinBackoff and MaxBackoff bound the wait between attempts to reach
	// the agent (defaults 100 ms and 5 s).
	MinBackoff, MaxBackoff time.Duration
	// DeliverTimeout bounds how long a migrated connection waits for the
	// application's Accept before the shim refuses it (default 500 ms;
	// the agent waits 1 s for the answer).
	DeliverTimeout time.Duration
}

// Listener is a TCP listener that also accepts migrated connections.
type Listener struct {
	ln   *net.TCPListener
	addr netip.AddrPort
	opts Options
	log  *slog.Logger

	conns     chan net.Conn // accepted connections of both kinds
	done      chan struct{}
	closeOnce sync.Once
	wg        sync.WaitGroup

	mu    sync.Mutex
	agent *agentConn // the current connection to the agent, nil when down
	err   error      // the ordinary listener's accept error, once it failed
}

// agentConn is one connection to the agent: hand-off IDs are its own.
type agentConn struct {
	c    *net.UnixConn
	wmu  sync.Mutex
	gone chan struct{}
}

func (a *agentConn) send(f *wire.Frame) error {
	b, err := wire.Encode(make([]byte, 0, wire.MaxFrame), f)
	if err != nil {
		return err
	}
	a.wmu.Lock()
	defer a.wmu.Unlock()
	a.c.SetWriteDeadline(time.Now().Add(time.Second))
	_, err = a.c.Write(b)
	return err
}

// Listen listens on addr (network "tcp", "tcp4" or "tcp6") for ordinary
// connections and registers addr with the agent for migrated ones.
func Listen(network, addr string, opts Options) (net.Listener, error) {
	if opts.Socket == "" {
		opts.Socket = DefaultSocket
	}
	if opts.MinBackoff <= 0 {
		opts.MinBackoff = 100 * time.Millisecond
	}
	if opts.MaxBackoff < opts.MinBackoff {
		opts.MaxBackoff = max(5*time.Second, opts.MinBackoff)
	}
	if opts.DeliverTimeout <= 0 {
		opts.DeliverTimeout = 500 * time.Millisecond
	}
	log := opts.Log
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	switch network {
	case "tcp", "tcp4", "tcp6":
	default:
		return nil, fmt.Errorf("shim: network %q: want tcp, tcp4 or tcp6", network)
	}
	ln, err := net.Listen(network, addr)
	if err != nil {
		return nil, fmt.Errorf("shim: %w", err)
	}
	tl := ln.(*net.TCPListener)
	ap := tl.Addr().(*net.TCPAddr).AddrPort()
	l := &Listener{ln: tl, addr: netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), opts: opts, log: log,
		conns: make(chan net.Conn), done: make(chan struct{})}
	l.wg.Add(2)
	go func() { defer l.wg.Done(); l.acceptOrdinary() }()
	go func() { defer l.wg.Done(); l.keepAgent() }()
	return l, nil
}

// Accept waits for the next connection, ordinary or migrated.
func (l *Listener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err != nil {
		return nil, l.err
	}
	return nil, net.ErrClosed
}

// Addr is the listening address.
func (l *Listener) Addr() net.Addr { return l.ln.Addr() }

// Close stops both kinds of accepting and leaves the agent; connections
// already accepted stay open.
func (l *Listener) Close() error {
	var err error
	l.closeOnce.Do(func() {
		close(l.done)
		err = l.ln.Close()
		l.mu.Lock()
		if l.agent != nil {
			l.agent.c.Close()
		}
		l.mu.Unlock()
		l.wg.Wait()
	})
	return err
}

func (l *Listener) acceptOrdinary() {
	for {
		c, err := l.ln.Accept()
		if err != nil {
			select {
			case <-l.done:
				return
			default:
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			// A listener that failed for good ends Accept with its error.
			l.mu.Lock()
			l.err = err
			l.mu.Unlock()
			l.closeOnce.Do(func() {
				close(l.done)
				l.mu.Lock()
				if l.agent != nil {
					l.agent.c.Close()
				}
				l.mu.Unlock()
			})
			return
		}
		select {
		case l.conns <- c:
		case <-l.done:
			c.Close()
			return
		}
	}
}

// keepAgent keeps a connection to the agent until Close, with bounded
// exponential back-off with jitter between attempts.
func (l *Listener) keepAgent() {
	failures := 0
	for {
		up := l.serveAgent()
		select {
		case <-l.done:
			return
		default:
		}
		if up {
			failures = 0
		}
		failures++
		d := l.opts.MinBackoff
		for i := 1; i < failures && d < l.opts.MaxBackoff; i++ {
			d *= 2
		}
		d = min(d, l.opts.MaxBackoff)
		t := time.NewTimer(d/2 + rand.N(d/2+1))
		select {
		case <-l.done:
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// serveAgent runs one connection to the agent to its end; up says
// whether it got as far as registering.
func (l *Listener) serveAgent() (up bool) {
	c, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: l.opts.Socket, Net: "unixpacket"})
	if err != nil {
		l.log.Debug("tether agent not reachable", "socket", l.opts.Socket, "err", err)
		return false
	}
	a := &agentConn{c: c, gone: make(chan struct{})}
	defer close(a.gone)
	l.mu.Lock()
	select {
	case <-l.done:
		l.mu.Unlock()
		c.Close()
		return false
	default:
	}
	l.agent = a
	l.mu.Unlock()
	defer func() {
		l.mu.Lock()
		l.agent = nil
		l.mu.Unlock()
		c.Close()
	}()
	if err := a.send(&wire.Frame{Type: wire.TypeRegister, Addrs: []netip.AddrPort{l.addr}}); err != nil {
		l.log.Warn("tether agent: register", "socket", l.opts.Socket, "err", err)
		return false
	}
	l.log.Info("registered with the tether agent", "socket", l.opts.Socket, "addr", l.addr)
	buf := make([]byte, wire.MaxFrame+1)
	oob := make([]byte, unix.CmsgSpace(4*4))
	for {
		n, oobn, flags, _, err := c.ReadMsgUnix(buf, oob)
		fds := rights(oob[:oobn])
		if err != nil {
			closeFDs(fds)
			select {
			case <-l.done:
			default:
				l.log.Warn("tether agent connection lost", "socket", l.opts.Socket, "err", err)
			}
			return true
		}
		f, err := wire.Decode(buf[:n])
		if err == nil && (flags&(unix.MSG_TRUNC|unix.MSG_CTRUNC) != 0) {
			err = errors.New("truncated record")
		}
		if err == nil && f.Type != wire.TypeHandoff {
			err = fmt.Errorf("%s from the agent", f.Type)
		}
		if err == nil && len(fds) != 1 {
			err = fmt.Errorf("handoff %d with %d descriptors", f.ID, len(fds))
		}
		if err != nil {
			closeFDs(fds)
			l.log.Warn("tether agent: protocol error: reconnecting", "err", err)
			return true
		}
		l.handoff(a, f, fds[0])
	}
}

// handoff turns a passed descriptor into a connection and offers it to
// Accept; the agent hears whether the application took it.
func (l *Listener) handoff(a *agentConn, f *wire.Frame, fd int) {
	conn, err := l.migrated(a, f, fd)
	accepted := false
	if err != nil {
		l.log.Warn("migrated connection refused", "id", f.ID, "client", f.Client, "err", err)
	} else {
		t := time.NewTimer(l.opts.DeliverTimeout)
		select {
		case l.conns <- conn:
			accepted = true
		case <-t.C:
			l.log.Warn("migrated connection refused: the application did not accept in time", "id", f.ID, "client", f.Client)
		case <-l.done:
		}
		t.Stop()
		if !accepted {
			// Not the application's. The agent let go of its copy
			// when it sent this one: closing the only copy with no
			// linger resets the client. It goes without a notice.
			conn.once.Do(func() {})
			resetClose(conn.TCPConn)
		}
	}
	if err := a.send(&wire.Frame{Type: wire.TypeAck, ID: f.ID, Accepted: accepted}); err != nil {
		l.log.Warn("tether agent: ack", "id", f.ID, "err", err)
	}
}

func (l *Listener) migrated(a *agentConn, f *wire.Frame, fd int) (*Conn, error) {
	file := os.NewFile(uintptr(fd), fmt.Sprintf("tether-migrated-%d", f.ID))
	defer file.Close() // FileConn holds its own descriptor
	nc, err := net.FileConn(file)
	if err != nil {
		return nil, fmt.Errorf("file conn: %w", err)
	}
	tc, ok := nc.(*net.TCPConn)
	if !ok {
		nc.Close()
		return nil, fmt.Errorf("a %T, not a TCP connection", nc)
	}
	local, remote := addrPort(tc.LocalAddr()), addrPort(tc.RemoteAddr())
	if local != f.VIP || remote != f.Client {
		resetClose(tc)
		return nil, fmt.Errorf("the descriptor is %v→%v, the frame says %v→%v", remote, local, f.Client, f.VIP)
	}
	if local.Port() != l.addr.Port() || (!l.addr.Addr().IsUnspecified() && local.Addr() != l.addr.Addr()) {
		resetClose(tc)
		return nil, fmt.Errorf("connection to %v, not this listener's %v", local, l.addr)
	}
	return &Conn{TCPConn: tc, id: f.ID, agent: a, l: l}, nil
}

// resetClose closes a migrated connection this listener refuses with
// an RST: the shim holds its only copy (the agent closes its own once it
// has sent it), so the client hears at once that nobody took it.
func resetClose(tc *net.TCPConn) {
	tc.SetLinger(0)
	tc.Close()
}

func addrPort(a net.Addr) netip.AddrPort {
	t, ok := a.(*net.TCPAddr)
	if !ok {
		return netip.AddrPort{}
	}
	ap := t.AddrPort()
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

func rights(oob []byte) []int {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil
	}
	var fds []int
	for _, m := range msgs {
		if r, err := unix.ParseUnixRights(&m); err == nil {
			fds = append(fds, r...)
		}
	}
	return fds
}

func closeFDs(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}

// Conn is a migrated connection. It is a *net.TCPConn (embedded) whose
// Close also tells the agent the connection ended.
type Conn struct {
	*net.TCPConn
	id    uint64
	agent *agentConn
	l     *Listener
	once  sync.Once
}

// Close closes the connection and tells the agent, when the agent that
// handed it over is still connected (a restarted agent never knew it).
func (c *Conn) Close() error {
	err := c.TCPConn.Close()
	c.once.Do(func() {
		select {
		case <-c.agent.gone:
			return
		default:
		}
		if serr := c.agent.send(&wire.Frame{Type: wire.TypeClosed, ID: c.id}); serr != nil {
			c.l.log.Warn("tether agent: closed notice", "id", c.id, "err", serr)
		}
	})
	return err
}

// Migrated reports whether c came from the agent; it is always true
// (ordinary connections are plain *net.TCPConn).
func (c *Conn) Migrated() bool { return true }

// TCPConn returns the *net.TCPConn behind a connection Accept returned,
// ordinary or migrated, or nil.
func TCPConn(c net.Conn) *net.TCPConn {
	switch t := c.(type) {
	case *net.TCPConn:
		return t
	case *Conn:
		return t.TCPConn
	}
	return nil
}
