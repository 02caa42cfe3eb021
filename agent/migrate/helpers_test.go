package migrate

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	pb "github.com/tetherlb/tether/api/hostpb"
	"github.com/tetherlb/tether/internal/nstest"
)

// family is the pair's addresses in one address family: the client's
// and the server's (the host the connection migrates to), on the veth
// pair.
type family struct {
	name           string
	client, server netip.Addr
	bits           int // the veth pair's prefix length
}

// families are the pair's two; the migration tests run in each.
func families() []family {
	return []family{
		{"ipv4", netip.MustParseAddr("10.9.0.1"), netip.MustParseAddr("10.9.0.2"), 24},
		{"ipv6", netip.MustParseAddr("2001:db8:9::1"), netip.MustParseAddr("2001:db8:9::2"), 64},
	}
}

// inet4 is the IPv4 family, for the tests that need one family only.
func inet4() family { return families()[0] }

// vip is the server's address at port 8080, where the tests' servers
// listen and their connections migrate to.
func (f family) vip() netip.AddrPort { return netip.AddrPortFrom(f.server, 8080) }

// forFamilies runs test as a subtest for each family.
func forFamilies(t *testing.T, test func(t *testing.T, f family)) {
	for _, f := range families() {
		t.Run(f.name, func(t *testing.T) { test(t, f) })
	}
}

// pair makes namespaces c (the client) and s (the server, the host the
// connection migrates to), joined by a veth pair with both families'
// addresses (IPv6 without duplicate address detection, so that they are
// usable at once).
func pair(t *testing.T) (c, s string) {
	t.Helper()
	nstest.Require(t)
	c, s = nstest.NS(t, "tmig", "c"), nstest.NS(t, "tmig", "s")
	nstest.Sh(t, "ip", "link", "add", "c0", "netns", c, "type", "veth", "peer", "name", "s0", "netns", s)
	for _, f := range families() {
		var nodad []string
		if f.server.Is6() {
			nodad = []string{"nodad"}
		}
		nstest.Sh(t, append([]string{"ip", "-n", c, "addr", "add", fmt.Sprintf("%v/%d", f.client, f.bits), "dev", "c0"}, nodad...)...)
		nstest.Sh(t, append([]string{"ip", "-n", s, "addr", "add", fmt.Sprintf("%v/%d", f.server, f.bits), "dev", "s0"}, nodad...)...)
	}
	for _, args := range [][]string{
		{"ip", "-n", c, "link", "set", "lo", "up"},
		{"ip", "-n", s, "link", "set", "lo", "up"},
		{"ip", "-n", c, "link", "set", "c0", "up"},
		{"ip", "-n", s, "link", "set", "s0", "up"},
	} {
		nstest.Sh(t, args...)
	}
	// The veth pair's carrier comes up a moment after the links; a SYN
	// sent before may be lost (IPv6's are), and its retransmission
	// comes a second later.
	for _, end := range [][2]string{{c, "c0"}, {s, "s0"}} {
		until(t, end[1]+"'s carrier", func() bool {
			return !strings.Contains(nstest.Sh(t, "ip", "-n", end[0], "link", "show", end[1]), "NO-CARRIER")
		})
	}
	return c, s
}

// noOptions turns off timestamps, window scaling and SACK for the
// client's connections, so the state carries none of them (the
// net.ipv4.tcp_ settings are TCP's, over IPv6 too).
func noOptions(t *testing.T, c string) {
	nstest.Sh(t, "ip", "netns", "exec", c, "sysctl", "-q", "-w", "net.ipv4.tcp_timestamps=0",
		"net.ipv4.tcp_window_scaling=0", "net.ipv4.tcp_sack=0")
}

// listen listens on f's VIP (the server's address, port 8080) in
// namespace s; the listener closes with the test.
func listen(t *testing.T, s string, f family) net.Listener {
	t.Helper()
	var ln net.Listener
	var err error
	nstest.In(t, s, func() { ln, err = net.Listen("tcp", f.vip().String()) })
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

// domain is the address family of conn's socket (SO_DOMAIN).
func domain(t *testing.T, conn syscall.Conn) int {
	t.Helper()
	sc, err := conn.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var d int
	var derr error
	sc.Control(func(fd uintptr) { d, derr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_DOMAIN) })
	if derr != nil {
		t.Fatal(derr)
	}
	return d
}

// tuple is a connection's ends as the host sees them.
type tuple struct{ client, vip netip.AddrPort }

func tupleOf(st *pb.TCPState) tuple {
	c, v := tupleAddrs(st.GetClient(), st.GetClientPort(), st.GetVip(), st.GetVipPort())
	return tuple{c, v}
}

// tcpOpts is what a connection negotiated, as tcp_info or a state says
// it.
type tcpOpts struct {
	timestamps, sack, wscale bool
	sndWscale, rcvWscale     uint32
}

func tcpOptions(ti *unix.TCPInfo) tcpOpts {
	o := tcpOpts{timestamps: ti.Options&tcpiOptTimestamps != 0, sack: ti.Options&tcpiOptSack != 0, wscale: ti.Options&tcpiOptWscale != 0}
	if o.wscale {
		o.sndWscale, o.rcvWscale = wscales(ti)
	}
	return o
}

func tcpOptionsOf(st *pb.TCPState) tcpOpts {
	return tcpOpts{timestamps: st.GetTimestamps(), sack: st.GetSackPermitted(), wscale: st.GetWindowScaling(),
		sndWscale: st.GetSndWscale(), rcvWscale: st.GetRcvWscale()}
}

// tcpInfo is conn's TCP_INFO.
func tcpInfo(t *testing.T, conn syscall.Conn) *unix.TCPInfo {
	t.Helper()
	sc, err := conn.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var ti *unix.TCPInfo
	var terr error
	sc.Control(func(fd uintptr) { ti, terr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO) })
	if terr != nil {
		t.Fatal(terr)
	}
	return ti
}
