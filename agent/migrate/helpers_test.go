package migrate

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"syscall"
	"testing"
	"time"
	"unsafe"

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
	sc, err := conn.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var st *pb.TCPState
	var data []byte
	var cerr error
	sc.Control(func(u uintptr) { st, data, cerr = captureFD(int(u)) })
	if cerr != nil {
		t.Fatal(cerr)
	}
	conn.Close()
	return st, data
}

func captureFD(fd int) (*pb.TCPState, []byte, error) {
	tcp := func(opt, val int) error { return unix.SetsockoptInt(fd, unix.IPPROTO_TCP, opt, val) }
	get := func(opt int) (uint32, error) {
		v, err := unix.GetsockoptInt(fd, unix.IPPROTO_TCP, opt)
		return uint32(v), err
	}
	info, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
	if err != nil {
		return nil, nil, fmt.Errorf("TCP_INFO: %w", err)
	}
	inq, err := unix.IoctlGetInt(fd, unix.SIOCINQ)
	if err != nil {
		return nil, nil, err
	}
	if err := tcp(unix.TCP_REPAIR, unix.TCP_REPAIR_ON); err != nil {
		return nil, nil, fmt.Errorf("TCP_REPAIR: %w", err)
	}
	if err := tcp(unix.TCP_REPAIR_QUEUE, tcpSendQueue); err != nil {
		return nil, nil, err
	}
	sndNxt, err := get(unix.TCP_QUEUE_SEQ)
	if err != nil {
		return nil, nil, err
	}
	if err := tcp(unix.TCP_REPAIR_QUEUE, tcpRecvQueue); err != nil {
		return nil, nil, err
	}
	rcvNxt, err := get(unix.TCP_QUEUE_SEQ)
	if err != nil {
		return nil, nil, err
	}
	data := make([]byte, inq)
	if inq > 0 {
		n, _, err := unix.Recvfrom(fd, data, unix.MSG_PEEK)
		if err != nil || n != inq {
			return nil, nil, fmt.Errorf("peek the receive queue: %d of %d bytes: %v", n, inq, err)
		}
	}
	// In repair mode TCP_MAXSEG is mss_clamp: the client's MSS.
	mss, err := get(unix.TCP_MAXSEG)
	if err != nil {
		return nil, nil, err
	}
	var w TCPRepairWindow
	wl := uint32(unsafe.Sizeof(w))
	if _, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.IPPROTO_TCP, unix.TCP_REPAIR_WINDOW,
		uintptr(unsafe.Pointer(&w)), uintptr(unsafe.Pointer(&wl)), 0); e != 0 {
		return nil, nil, fmt.Errorf("TCP_REPAIR_WINDOW: %w", e)
	}
	ts, err := get(unix.TCP_TIMESTAMP)
	if err != nil {
		return nil, nil, err
	}
	local, err := unix.Getsockname(fd)
	if err != nil {
		return nil, nil, err
	}
	peer, err := unix.Getpeername(fd)
	if err != nil {
		return nil, nil, err
	}
	l4, p4 := local.(*unix.SockaddrInet4), peer.(*unix.SockaddrInet4)
	st := &pb.TCPState{
		Client: p4.Addr[:], ClientPort: uint32(p4.Port), Vip: l4.Addr[:], VipPort: uint32(l4.Port),
		// No unsent data: snd_nxt is write_seq; the state's contract
		// has the acceptor send nothing, so local_isn is one before.
		LocalIsn: sndNxt - 1, SndNxt: sndNxt,
		RemoteIsn: rcvNxt - uint32(inq) - 1, RcvNxt: rcvNxt,
		SndWnd: w.SndWnd, SndWl1: w.SndWl1, RcvWnd: w.RcvWnd,
		Mss:           mss,
		SackPermitted: info.Options&tcpiOptSack != 0,
		Timestamps:    info.Options&tcpiOptTimestamps != 0,
	}
	if info.Options&tcpiOptWscale != 0 {
		// tcpi_snd_wscale:4, tcpi_rcv_wscale:4 sit in the byte after
		// tcpi_options, which x/sys/unix leaves as padding.
		ws := *(*uint8)(unsafe.Add(unsafe.Pointer(info), unsafe.Offsetof(info.Options)+1))
		st.WindowScaling, st.SndWscale, st.RcvWscale = true, uint32(ws&0xf), uint32(ws>>4)
	}
	if st.Timestamps {
		st.TsVal = ts
	}
	return st, data, nil
}

// tcp_info's option bits (linux/tcp.h).
const (
	tcpiOptTimestamps = 1
	tcpiOptSack       = 2
	tcpiOptWscale     = 4
)

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

var _ = os.Getpid
