package channel

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Conn is one end of a channel: a connected SOCK_SEQPACKET socket. Send
// is safe for concurrent use; Recv is for one goroutine.
type Conn struct {
	c   *net.UnixConn
	mu  sync.Mutex // serialises Send
	buf []byte
}

// Listen opens the control side's socket at path, replacing a stale one.
func Listen(path string) (*net.UnixListener, error) {
	// A socket someone answers on is not stale: another control process
	// (another unit given the same run directory) owns it, and taking it
	// over would have one unit drive the other's forwarder.
	if c, err := net.Dial("unixpacket", path); err == nil {
		c.Close()
		return nil, fmt.Errorf("channel: %s is in use by a running control process (does another unit on this host share admin.run_dir?)", path)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("channel: remove stale socket %s: %w", path, err)
	}
	l, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		return nil, fmt.Errorf("channel: listen on %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, fmt.Errorf("channel: %s: %w", path, err)
	}
	return l, nil
}

// Accept waits for the forwarder to connect.
func Accept(l *net.UnixListener) (*Conn, error) {
	c, err := l.AcceptUnix()
	if err != nil {
		return nil, fmt.Errorf("channel: accept: %w", err)
	}
	return newConn(c), nil
}

// Dial connects to the control side's socket.
func Dial(path string) (*Conn, error) {
	c, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		return nil, fmt.Errorf("channel: connect to %s: %w", path, err)
	}
	return newConn(c), nil
}

func newConn(c *net.UnixConn) *Conn {
	_ = c.SetReadBuffer(4 << 20)
	_ = c.SetWriteBuffer(4 << 20)
	return &Conn{c: c, buf: make([]byte, MaxMessage+1)}
}

// Send sends one message.
func (c *Conn) Send(msg []byte) error {
	if len(msg) > MaxMessage {
		return fmt.Errorf("channel: message of %d bytes exceeds %d", len(msg), MaxMessage)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, err := c.c.Write(msg); err != nil {
		return fmt.Errorf("channel: send: %w", err)
	}
	return nil
}

// Recv returns the next message. The slice is valid until the next Recv.
// A message longer than MaxMessage is reported as an error (and dropped:
// a datagram socket truncates it).
func (c *Conn) Recv() ([]byte, error) {
	n, err := c.c.Read(c.buf)
	if err != nil {
		return nil, fmt.Errorf("channel: receive: %w", err)
	}
	if n == 0 {
		return nil, fmt.Errorf("channel: receive: %w", net.ErrClosed)
	}
	if n > MaxMessage {
		return nil, fmt.Errorf("channel: %w: message longer than %d bytes", ErrLength, MaxMessage)
	}
	return c.buf[:n], nil
}

// Close closes the connection.
func (c *Conn) Close() error { return c.c.Close() }

// TrySender returns a function that sends one message without blocking
// and without the Go scheduler, for a poll-mode worker's own thread, and
// reports whether it went whole: SOCK_SEQPACKET sends a message whole or
// not at all, and concurrent senders' messages never interleave. The
// function must not be called once the connection is closed (the
// descriptor's number could be another file's by then); the caller stops
// its senders first.
func (c *Conn) TrySender() (func(msg []byte) bool, error) {
	rc, err := c.c.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("channel: %w", err)
	}
	fd := -1
	if err := rc.Control(func(f uintptr) { fd = int(f) }); err != nil {
		return nil, fmt.Errorf("channel: %w", err)
	}
	return func(msg []byte) bool {
		if len(msg) == 0 || len(msg) > MaxMessage {
			return false
		}
		n, _, e := unix.RawSyscall6(unix.SYS_SENDTO, uintptr(fd), uintptr(unsafe.Pointer(&msg[0])), uintptr(len(msg)),
			unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL, 0, 0)
		return e == 0 && int(n) == len(msg)
	}, nil
}

// Assembler joins chunked calls or returns by sequence number.
type Assembler struct {
	parts map[uint32][][]byte
}

// Add records a chunk and returns the whole body once every chunk has
// arrived. Chunks of one body must agree on their count.
func (a *Assembler) Add(seq uint32, chunk, chunks uint16, body []byte) ([]byte, bool, error) {
	if chunks == 1 {
		return append([]byte(nil), body...), true, nil
	}
	if a.parts == nil {
		a.parts = map[uint32][][]byte{}
	}
	p := a.parts[seq]
	if p == nil {
		if len(a.parts) >= 64 {
			return nil, false, fmt.Errorf("channel: %w: too many bodies in flight", ErrValue)
		}
		p = make([][]byte, chunks)
		a.parts[seq] = p
	}
	if len(p) != int(chunks) || int(chunk) >= len(p) {
		delete(a.parts, seq)
		return nil, false, fmt.Errorf("channel: %w: chunk %d of %d does not fit", ErrValue, chunk, chunks)
	}
	p[chunk] = append([]byte(nil), body...)
	var whole []byte
	for _, c := range p {
		if c == nil {
			return nil, false, nil
		}
		whole = append(whole, c...)
	}
	delete(a.parts, seq)
	return whole, true, nil
}
