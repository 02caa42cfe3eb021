package acceptor

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/tetherlb/tether/dataplane/header"
	"github.com/tetherlb/tether/dataplane/syncookie"
	"github.com/tetherlb/tether/internal/nstest"
)

// The real-kernel tests: a namespace whose route to the VIP goes into a
// TUN device, the acceptor on the device's other end, and the kernel's
// own TCP as the client.
const (
	kClientAddr  = "10.9.0.1"
	kVIP         = "192.0.2.80"
	kClientAddr6 = "fd00:9::1"
	kVIP6        = "2001:db8::80"
	kTUN         = "tacc0"
	kMaxRequest  = 4096
)

// kVIPs are the VIP of each family, as a dial and curl name them.
var kVIPs = []struct{ family, host string }{{"ipv4", kVIP}, {"ipv6", "[" + kVIP6 + "]"}}

// tcp_info's options bits (linux/tcp.h).
const (
	tcpiOptTimestamps = 1
	tcpiOptSACK       = 2
	tcpiOptWscale     = 4
)

// synSeen is what the loop saw in a client's SYN.
type synSeen struct {
	isn   uint32
	mss   uint16
	tsVal uint32
}

// tunAcceptor runs an acceptor on a TUN device in its own namespace.
type tunAcceptor struct {
	ns    string
	a     *Acceptor
	f     *os.File
	ready chan Event
	mu    sync.Mutex
	syns  map[Key]synSeen
	last  map[Key][]byte // the last reply to each flow
	// lastTS is the TSval of each flow's last segment from the client.
	lastTS map[Key]uint32
}

func startTUN(t *testing.T) *tunAcceptor {
	t.Helper()
	nstest.Require(t)
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Skipf("no TUN: %v", err)
	}
	ns := nstest.NS(t, "tacc", "c")
	var fd int
	var err error
	nstest.In(t, ns, func() { fd, err = openTUN(kTUN) })
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), kTUN) // non-blocking: the poller wakes Read on Close
	for _, args := range [][]string{
		{"ip", "-n", ns, "link", "set", "lo", "up"},
		{"ip", "-n", ns, "addr", "add", kClientAddr + "/24", "dev", kTUN},
		{"ip", "-n", ns, "addr", "add", kClientAddr6 + "/64", "dev", kTUN, "nodad"},
		{"ip", "-n", ns, "link", "set", kTUN, "up"},
		{"ip", "-n", ns, "route", "add", kVIP + "/32", "dev", kTUN, "src", kClientAddr},
		{"ip", "-n", ns, "-6", "route", "add", kVIP6 + "/128", "dev", kTUN, "src", kClientAddr6},
	} {
		nstest.Sh(t, args...)
	}
	a, err := New(Config{MaxConns: 64, MaxRequest: kMaxRequest, RequestTimeout: 10 * time.Second, Complete: testComplete})
	if err != nil {
		t.Fatal(err)
	}
	ta := &tunAcceptor{ns: ns, a: a, f: f, ready: make(chan Event, 16), syns: map[Key]synSeen{}, last: map[Key][]byte{}, lastTS: map[Key]uint32{}}
	done := make(chan struct{})
	go ta.loop(t, done)
	t.Cleanup(func() {
		f.Close()
		<-done
	})
	return ta
}

// openTUN makes an IFF_TUN|IFF_NO_PI device, as nic/tun does without
// offloads, in the calling thread's namespace.
func openTUN(name string) (int, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return -1, err
	}
	ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// loop reads packets, hands them to the acceptor and writes the
// replies. A Ready event goes to the test after its reply is written:
// a TUN write delivers the packet to the kernel's TCP before it
// returns, so the client has taken the ACK by then.
func (ta *tunAcceptor) loop(t *testing.T, done chan struct{}) {
	defer close(done)
	buf := make([]byte, 65536)
	out := make([]byte, 0, MaxReply)
	for {
		n, err := ta.f.Read(buf)
		if err != nil {
			return
		}
		pkt := buf[:n]
		ta.note(pkt)
		reply, ev := ta.a.Handle(time.Now(), pkt, out)
		if reply != nil {
			ta.mu.Lock()
			if ev.Key != (Key{}) {
				ta.last[ev.Key] = bytes.Clone(reply)
			}
			ta.mu.Unlock()
			if _, err := ta.f.Write(reply); err != nil {
				if !errors.Is(err, os.ErrClosed) { // the test is over
					t.Errorf("write to the TUN: %v", err)
				}
				return
			}
		}
		if ev.Kind == Ready {
			ta.mu.Lock()
			ta.last[ev.Key] = bytes.Clone(reply)
			ta.mu.Unlock()
			ta.ready <- ev
		}
	}
}

func (ta *tunAcceptor) note(pkt []byte) {
	var s seg
	if s.parse(pkt) != cNone {
		return
	}
	ta.mu.Lock()
	defer ta.mu.Unlock()
	ta.lastTS[s.key] = s.opt.TSVal
	if s.flags&(header.TCPFlagSYN|header.TCPFlagACK) == header.TCPFlagSYN {
		ta.syns[s.key] = synSeen{isn: s.seq, mss: s.mss(), tsVal: s.opt.TSVal}
	}
}

func (ta *tunAcceptor) waitReady(t *testing.T) Event {
	t.Helper()
	select {
	case ev := <-ta.ready:
		return ev
	case <-time.After(10 * time.Second):
		t.Fatal("no Ready within 10 s")
	}
	return Event{}
}

// dial connects to the VIP host (kVIP, or kVIP6 in brackets) from
// inside the namespace.
func (ta *tunAcceptor) dial(t *testing.T, host string) *net.TCPConn {
	t.Helper()
	var c net.Conn
	var err error
	nstest.In(t, ta.ns, func() {
		d := net.Dialer{Timeout: 10 * time.Second}
		c, err = d.Dial("tcp", host+":80")
	})
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return c.(*net.TCPConn)
}

// sockopt reads a raw socket option.
func sockopt(fd int, level, opt int, buf []byte) (int, error) {
	n := uint32(len(buf))
	_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), uintptr(level), uintptr(opt),
		uintptr(unsafe.Pointer(&buf[0])), uintptr(unsafe.Pointer(&n)), 0)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// clientView is the client socket's own idea of the connection.
type clientView struct {
	options                uint8 // TCPI_OPT_*
	sndWscale, rcvWscale   uint32
	advmss                 uint32
	writeSeq, rcvNxt       uint32
	sndWl1, sndWnd, rcvWnd uint32
	local                  *net.TCPAddr
}

// inspect reads c's state with TCP_INFO and, in repair mode, its
// sequence numbers and windows. It leaves c in repair mode, so that
// closing it afterwards sends nothing, as a migrated connection's
// first home must.
func inspect(t *testing.T, c *net.TCPConn) clientView {
	t.Helper()
	v := clientView{local: c.LocalAddr().(*net.TCPAddr)}
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var ferr error
	err = rc.Control(func(fd uintptr) {
		s := int(fd)
		info := make([]byte, 256)
		if _, ferr = sockopt(s, unix.IPPROTO_TCP, unix.TCP_INFO, info); ferr != nil {
			return
		}
		// struct tcp_info: options at byte 5; byte 6 holds
		// tcpi_snd_wscale (low nibble) and tcpi_rcv_wscale (high).
		v.options = info[5]
		v.sndWscale, v.rcvWscale = uint32(info[6]&0xf), uint32(info[6]>>4)
		var ti *unix.TCPInfo
		if ti, ferr = unix.GetsockoptTCPInfo(s, unix.IPPROTO_TCP, unix.TCP_INFO); ferr != nil {
			return
		}
		v.advmss = ti.Advmss
		if ferr = unix.SetsockoptInt(s, unix.IPPROTO_TCP, unix.TCP_REPAIR, 1); ferr != nil {
			return
		}
		for _, q := range []struct {
			queue int
			dst   *uint32
		}{{2 /* TCP_SEND_QUEUE */, &v.writeSeq}, {1 /* TCP_RECV_QUEUE */, &v.rcvNxt}} {
			if ferr = unix.SetsockoptInt(s, unix.IPPROTO_TCP, unix.TCP_REPAIR_QUEUE, q.queue); ferr != nil {
				return
			}
			var n int
			if n, ferr = unix.GetsockoptInt(s, unix.IPPROTO_TCP, unix.TCP_QUEUE_SEQ); ferr != nil {
				return
			}
			*q.dst = uint32(n)
		}
		// struct tcp_repair_window: snd_wl1, snd_wnd, max_window,
		// rcv_wnd, rcv_wup.
		w := make([]byte, 20)
		if _, ferr = sockopt(s, unix.IPPROTO_TCP, unix.TCP_REPAIR_WINDOW, w); ferr != nil {
			return
		}
		v.sndWl1 = binary.NativeEndian.Uint32(w[0:])
		v.sndWnd = binary.NativeEndian.Uint32(w[4:])
		v.rcvWnd = binary.NativeEndian.Uint32(w[12:])
	})
	if err == nil {
		err = ferr
	}
	if err != nil {
		t.Fatalf("inspect the client socket: %v", err)
	}
	return v
}

// TestKernelReady: a kernel client connects and sends a request; the
// TCPState of the Ready event must agree field by field with what the
// client's kernel holds, and hostpb must accept the Migrate it makes.
func TestKernelReady(t *testing.T) {
	ta := startTUN(t)
	for _, vip := range kVIPs {
		for _, tc := range []struct {
			name       string
			timestamps bool
		}{{"timestamps", true}, {"no timestamps", false}} {
			t.Run(vip.family+"/"+tc.name, func(t *testing.T) { testKernelReady(t, ta, vip.host, tc.name, tc.timestamps) })
		}
	}
}

func testKernelReady(t *testing.T, ta *tunAcceptor, host, name string, timestamps bool) {
	val := "1"
	if !timestamps {
		val = "0"
	}
	// The sysctl is IPv4's by name and both families' in effect.
	nstest.Sh(t, "ip", "netns", "exec", ta.ns, "sysctl", "-qw", "net.ipv4.tcp_timestamps="+val)
	c := ta.dial(t, host)
	defer c.Close()
	req := "GET /migrate HTTP/1.1\r\nHost: vip\r\nX-Test: " + name + "\r\n\r\n"
	if _, err := c.Write([]byte(req)); err != nil {
		t.Fatal(err)
	}
	ev := ta.waitReady(t)
	v := inspect(t, c)
	st := ev.State
	ta.mu.Lock()
	syn, ok := ta.syns[ev.Key]
	last := ta.last[ev.Key]
	clientTS := ta.lastTS[ev.Key]
	ta.mu.Unlock()
	if !ok {
		t.Fatal("the SYN was not seen")
	}
	if string(ev.Data) != req || ev.HeadLen != len(req) {
		t.Fatalf("data %q head %d", ev.Data, ev.HeadLen)
	}
	lr, err := checkReply(t, last)
	if err != nil {
		t.Fatal(err)
	}
	var opts uint8
	if st.Timestamps {
		opts |= tcpiOptTimestamps
	}
	if st.SackPermitted {
		opts |= tcpiOptSACK
	}
	if st.WindowScaling {
		opts |= tcpiOptWscale
	}
	tsLen := uint32(0)
	if timestamps {
		tsLen = 12
	}
	scaled := func(w uint32, shift uint32) uint32 { return w >> shift << shift }
	checks := []struct {
		name      string
		got, want any
	}{
		{"client", net.IP(st.Client).String(), v.local.IP.String()},
		{"client_port", st.ClientPort, uint32(v.local.Port)},
		{"vip", net.IP(st.Vip).String(), strings.Trim(host, "[]")},
		{"vip_port", st.VipPort, uint32(80)},
		{"remote_isn (the SYN's)", st.RemoteIsn, syn.isn},
		{"rcv_nxt (the client's write_seq)", st.RcvNxt, v.writeSeq},
		{"snd_nxt (the client's rcv_nxt)", st.SndNxt, v.rcvNxt},
		{"local_isn", st.LocalIsn, v.rcvNxt - 1},
		{"rcv_wnd (the client's snd_wnd)", st.RcvWnd, v.sndWnd},
		{"snd_wnd (the client's rcv_wnd)", st.SndWnd, scaled(v.rcvWnd, v.rcvWscale)},
		{"snd_wl1 (the request's seq)", st.SndWl1, v.writeSeq - uint32(len(req))},
		{"client's snd_wl1 (our ACK's seq)", v.sndWl1, st.SndNxt},
		{"options (TCP_INFO)", opts, v.options},
		{"window_scaling", st.WindowScaling, timestamps},
		{"sack_permitted", st.SackPermitted, timestamps},
		{"timestamps", st.Timestamps, timestamps},
		{"rcv_wscale (the client's snd_wscale)", st.RcvWscale, v.sndWscale},
		{"snd_wscale (the client's rcv_wscale)", st.SndWscale, v.rcvWscale},
		{"mss (the SYN's, by class)", st.Mss, uint32(syncookie.MSSClasses[syncookie.MSSIndex(syn.mss)])},
		{"the SYN's MSS is the client's advmss (less its timestamps)", uint32(syn.mss), v.advmss + tsLen},
	}
	if timestamps {
		checks = append(checks, []struct {
			name      string
			got, want any
		}{
			{"ts_val (the last TSval sent)", st.TsVal, binary.BigEndian.Uint32(lr.opts[8])},
			{"ts_recent after the SYN's", int32(st.TsRecent-syn.tsVal) >= 0, true},
			{"ts_recent (the TSval of the request's segment)", st.TsRecent, clientTS},
		}...)
	} else {
		checks = append(checks, struct {
			name      string
			got, want any
		}{"no TSval", st.TsVal, uint32(0)})
	}
	for _, ch := range checks {
		if ch.got != ch.want {
			t.Errorf("%s: %v, want %v", ch.name, ch.got, ch.want)
		}
	}
	if err := validMigrate(ev); err != nil {
		t.Fatal(err)
	}
	if !ta.a.Forget(ev.Key, time.Now()) {
		t.Fatal("Forget: unknown")
	}
	// c is in repair mode: closing it sends nothing.
}

// eachVIP runs f for the VIP of each family, named as a dial and curl
// name it.
func eachVIP(t *testing.T, f func(t *testing.T, host string)) {
	for _, vip := range kVIPs {
		t.Run(vip.family, func(t *testing.T) { f(t, vip.host) })
	}
}

// expectAnswer reads c to its end: an HTTP/1.1 response of status
// (code and reason), then EOF.
func expectAnswer(t *testing.T, c net.Conn, status string) {
	t.Helper()
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("read %q: %v", got, err)
	}
	if !strings.HasPrefix(string(got), "HTTP/1.1 "+status+"\r\n") {
		t.Fatalf("client read %q, want HTTP/1.1 %s", got, status)
	}
}

// TestKernelTooLarge: a head over MaxRequest reaches the client as a
// 431 and then EOF.
func TestKernelTooLarge(t *testing.T) {
	ta := startTUN(t)
	eachVIP(t, func(t *testing.T, host string) {
		c := ta.dial(t, host)
		defer c.Close()
		req := "GET / HTTP/1.1\r\nX-Big: " + strings.Repeat("b", 2*kMaxRequest) + "\r\n\r\n"
		if _, err := c.Write([]byte(req)); err != nil {
			t.Fatal(err)
		}
		expectAnswer(t, c, "431 Request Header Fields Too Large")
	})
}

// TestKernelAnswer: Answer(503) after Ready reaches the client as an
// HTTP response followed by EOF.
func TestKernelAnswer(t *testing.T) {
	ta := startTUN(t)
	eachVIP(t, func(t *testing.T, host string) {
		c := ta.dial(t, host)
		defer c.Close()
		if _, err := c.Write([]byte("GET / HTTP/1.1\r\nHost: vip\r\n\r\n")); err != nil {
			t.Fatal(err)
		}
		ev := ta.waitReady(t)
		reply := ta.a.Answer(ev.Key, 503, time.Now())
		if reply == nil {
			t.Fatal("no answer")
		}
		if _, err := ta.f.Write(reply); err != nil {
			t.Fatal(err)
		}
		expectAnswer(t, c, "503 Service Unavailable")
	})
}

// TestKernelCurl: curl, a client nobody wrote for this test, gets the
// 503 of Answer and the 431 of an oversized head.
func TestKernelCurl(t *testing.T) {
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("no curl")
	}
	ta := startTUN(t)
	eachVIP(t, func(t *testing.T, host string) {
		curl := func(extra ...string) (*exec.Cmd, *bytes.Buffer) {
			args := append([]string{"netns", "exec", ta.ns, "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10"}, extra...)
			cmd := exec.Command("ip", append(args, "http://"+host+"/")...)
			var out bytes.Buffer
			cmd.Stdout = &out
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			return cmd, &out
		}
		cmd, out := curl()
		ev := ta.waitReady(t)
		if !bytes.HasPrefix(ev.Data, []byte("GET / HTTP/1.1\r\n")) {
			t.Fatalf("curl sent %q", ev.Data)
		}
		if err := validMigrate(ev); err != nil {
			t.Fatal(err)
		}
		if _, err := ta.f.Write(ta.a.Answer(ev.Key, 503, time.Now())); err != nil {
			t.Fatal(err)
		}
		if err := cmd.Wait(); err != nil && !errors.As(err, new(*exec.ExitError)) {
			t.Fatal(err)
		}
		if out.String() != "503" {
			t.Fatalf("curl got %q, want 503", out.String())
		}

		cmd, out = curl("-H", "X-Big: "+strings.Repeat("c", 2*kMaxRequest))
		cmd.Wait()
		if out.String() != "431" {
			t.Fatalf("curl got %q, want 431", out.String())
		}
	})
}

// TestKernelLargeHead: a head just under MaxRequest, which the kernel
// sends as several full segments into the advertised window, is
// collected whole.
func TestKernelLargeHead(t *testing.T) {
	ta := startTUN(t)
	eachVIP(t, func(t *testing.T, host string) {
		c := ta.dial(t, host)
		defer c.Close()
		req := "GET / HTTP/1.1\r\nX-Fill: " + strings.Repeat("f", kMaxRequest-100) + "\r\n\r\n"
		if _, err := c.Write([]byte(req)); err != nil {
			t.Fatal(err)
		}
		ev := ta.waitReady(t)
		if string(ev.Data) != req || ev.HeadLen != len(req) {
			t.Fatalf("collected %d bytes, head %d; want %d", len(ev.Data), ev.HeadLen, len(req))
		}
		v := inspect(t, c)
		if ev.State.RcvNxt != v.writeSeq || ev.State.RcvWnd != v.sndWnd {
			t.Fatalf("rcv_nxt %d rcv_wnd %d; the client has write_seq %d snd_wnd %d", ev.State.RcvNxt, ev.State.RcvWnd, v.writeSeq, v.sndWnd)
		}
		if err := validMigrate(ev); err != nil {
			t.Fatal(err)
		}
		ta.a.Forget(ev.Key, time.Now())
	})
}

// TestKernelEarlyFIN: a client that half-closes before its head is
// complete gets the acceptor's FIN (EOF) and no response.
func TestKernelEarlyFIN(t *testing.T) {
	ta := startTUN(t)
	eachVIP(t, func(t *testing.T, host string) {
		c := ta.dial(t, host)
		defer c.Close()
		if _, err := c.Write([]byte("GET / HTTP/1.1\r\nHost: vip\r\n")); err != nil {
			t.Fatal(err)
		}
		if err := c.CloseWrite(); err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(c)
		if err != nil || len(got) != 0 {
			t.Fatalf("read %q, %v; want EOF at once", got, err)
		}
	})
}
