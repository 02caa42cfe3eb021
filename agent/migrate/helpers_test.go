package migrate

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	pb "github.com/tetherlb/tether/api/hostpb"
	"github.com/tetherlb/tether/internal/nstest"
)

// The pair's addresses: the client's namespace and the server's (the
// "host"), joined by a veth pair.
const (
	clientAddr = "10.9.0.1"
	serverAddr = "10.9.0.2"
)

// pair makes namespaces c (the client) and s (the server, the host the
// connection migrates to), joined by a veth pair.
func pair(t *testing.T) (c, s string) {
	t.Helper()
	nstest.Require(t)
	c, s = nstest.NS(t, "tmig", "c"), nstest.NS(t, "tmig", "s")
	for _, args := range [][]string{
		{"ip", "link", "add", "c0", "netns", c, "type", "veth", "peer", "name", "s0", "netns", s},
		{"ip", "-n", c, "addr", "add", clientAddr + "/24", "dev", "c0"},
		{"ip", "-n", s, "addr", "add", serverAddr + "/24", "dev", "s0"},
		{"ip", "-n", c, "link", "set", "lo", "up"},
		{"ip", "-n", s, "link", "set", "lo", "up"},
		{"ip", "-n", c, "link", "set", "c0", "up"},
		{"ip", "-n", s, "link", "set", "s0", "up"},
	} {
		nstest.Sh(t, args...)
	}
	return c, s
}

// noOptions turns off timestamps, window scaling and SACK for the
// client's connections, so the state carries none of them.
func noOptions(t *testing.T, c string) {
	nstest.Sh(t, "ip", "netns", "exec", c, "sysctl", "-q", "-w", "net.ipv4.tcp_timestamps=0",
		"net.ipv4.tcp_window_scaling=0", "net.ipv4.tcp_sack=0")
}

// listen listens on the server's address, port 8080, in namespace s;
// the listener closes with the test.
func listen(t *testing.T, s string) net.Listener {
	t.Helper()
	var ln net.Listener
	var err error
	nstest.In(t, s, func() { ln, err = net.Listen("tcp", serverAddr+":8080") })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// dial connects from namespace ns.
func dial(t *testing.T, ns, addr string) *net.TCPConn {
	t.Helper()
	var c net.Conn
	var err error
	nstest.In(t, ns, func() { c, err = net.DialTimeout("tcp", addr, 5*time.Second) })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c.(*net.TCPConn)
}

// until waits for cond, at most 5 s: it polls what the kernel says,
// and orders nothing by time.
func until(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func ioctl(t *testing.T, c syscall.Conn, req uint) int {
	t.Helper()
	sc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var n int
	var ierr error
	sc.Control(func(fd uintptr) { n, ierr = unix.IoctlGetInt(int(fd), req) })
	if ierr != nil {
		t.Fatal(ierr)
	}
	return n
}

// settle waits until the client's request is acknowledged and all of
// it is in the server's receive queue: nothing of it is in flight when
// the server's socket goes.
func settle(t *testing.T, client, server *net.TCPConn, n int) {
	t.Helper()
	until(t, "the client's request acknowledged", func() bool { return ioctl(t, client, unix.SIOCOUTQ) == 0 })
	until(t, "the request in the server's receive queue", func() bool { return ioctl(t, server, unix.SIOCINQ) == n })
}

// capture takes conn's state in repair mode, as a unit's acceptor
// would send it, and closes conn silently (a close in repair mode sends
// nothing): the client does not notice.
func capture(t *testing.T, conn *net.TCPConn) (*pb.TCPState, []byte) {
	t.Helper()
	var st *pb.TCPState
	var data []byte
	var cerr error
	st, data, cerr = Capture(conn)
	if cerr != nil {
		t.Fatal(cerr)
	}
	conn.Close()
	return st, data
}

// pattern is n bytes the client can check byte for byte.
func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i>>11)
	}
	return b
}

// exchange has the application answer the request on conn with a
// header and body, then read what the client sends next and echo its
// length; the client checks everything and that it saw no reset.
func exchange(t *testing.T, client net.Conn, app net.Conn, request []byte, body []byte) {
	t.Helper()
	appErr := make(chan error, 1)
	go func() {
		appErr <- func() error {
			got := make([]byte, len(request))
			if _, err := io.ReadFull(app, got); err != nil {
				return fmt.Errorf("application: read the request: %w", err)
			}
			if !bytes.Equal(got, request) {
				return fmt.Errorf("application: request %q, want %q", got, request)
			}
			if _, err := app.Write(body); err != nil {
				return fmt.Errorf("application: write: %w", err)
			}
			more := make([]byte, 5)
			if _, err := io.ReadFull(app, more); err != nil {
				return fmt.Errorf("application: read after migration: %w", err)
			}
			if string(more) != "again" {
				return fmt.Errorf("application: %q after migration", more)
			}
			_, err := app.Write([]byte("bye"))
			return err
		}()
	}()
	client.SetDeadline(time.Now().Add(20 * time.Second))
	got := make([]byte, len(body))
	if _, err := io.ReadFull(client, got); err != nil {
		t.Fatalf("client: read the answer: %v", err)
	}
	if !bytes.Equal(got, body) {
		t.Fatalf("client: the answer's %d bytes differ", len(body))
	}
	if _, err := client.Write([]byte("again")); err != nil {
		t.Fatalf("client: write after migration: %v", err)
	}
	bye := make([]byte, 3)
	if _, err := io.ReadFull(client, bye); err != nil || string(bye) != "bye" {
		t.Fatalf("client: %q, %v", bye, err)
	}
	if err := <-appErr; err != nil {
		t.Fatal(err)
	}
}

// wantReset reads from client until its read fails: with ECONNRESET,
// the RST's sequence numbers were right.
func wantReset(t *testing.T, client net.Conn) {
	t.Helper()
	client.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err := io.Copy(io.Discard, client)
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("client: read ended with %v, want ECONNRESET", err)
	}
}

func addrPortOf(a net.Addr) netip.AddrPort {
	ap := a.(*net.TCPAddr).AddrPort()
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}
