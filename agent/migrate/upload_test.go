package migrate

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	pb "github.com/tetherlb/tether/api/hostpb"
	"github.com/tetherlb/tether/internal/nstest"
)

// TestUploadRoundTrip: a connection the server's kernel accepted is
// taken apart in repair mode with the client's request unread, closed
// silently, and recreated by Upload from the state alone; the
// application reads the request from the new socket and answers with a
// few MiB, the client writes again and reads the end, with no reset.
// In each family, and for an IPv4 connection a dual-stack listener
// accepted (an AF_INET6 socket), which migrates as IPv4.
func TestUploadRoundTrip(t *testing.T) {
	type tc struct {
		name    string
		f       family
		options bool
		// dual listens on the unspecified IPv6 address, dual-stack.
		dual bool
	}
	var cases []tc
	for _, f := range families() {
		cases = append(cases, tc{f.name + "/options", f, true, false}, tc{f.name + "/no-options", f, false, false})
	}
	cases = append(cases, tc{"ipv4-on-dual-stack", inet4(), true, true})
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, s := pair(t)
			if !tc.options {
				noOptions(t, c)
			}
			var ln net.Listener
			if tc.dual {
				var err error
				nstest.In(t, s, func() {
					ln, err = net.Listen("tcp", netip.AddrPortFrom(netip.IPv6Unspecified(), tc.f.vip().Port()).String())
				})
				if err != nil {
					t.Fatal(err)
				}
				defer ln.Close()
			} else {
				ln = listen(t, s, tc.f)
			}
			client := dial(t, c, tc.f.vip().String())
			sc, err := ln.Accept()
			if err != nil {
				t.Fatal(err)
			}
			if tc.dual && domain(t, sc.(*net.TCPConn)) != unix.AF_INET6 {
				t.Fatal("the dual-stack listener's connection is not an AF_INET6 socket")
			}
			request := []byte("GET /migrated HTTP/1.1\r\nHost: vip\r\n\r\n")
			if _, err := client.Write(request); err != nil {
				t.Fatal(err)
			}
			settle(t, client, sc.(*net.TCPConn), len(request))
			accepted := tcpInfo(t, sc.(*net.TCPConn))
			st, data := capture(t, sc.(*net.TCPConn))
			if st.GetTimestamps() != tc.options || st.GetWindowScaling() != tc.options || st.GetSackPermitted() != tc.options {
				t.Fatalf("options in the state: %v", st)
			}
			// The state's addresses are the family's own: 4 bytes for
			// IPv4, also from a dual-stack socket (IPv4-mapped there).
			if got, want := tupleOf(st), (tuple{addrPortOf(client.LocalAddr()), tc.f.vip()}); got != want {
				t.Fatalf("the state's tuple %v, want %v", got, want)
			}
			if n := len(st.GetVip()); n != len(tc.f.server.AsSlice()) {
				t.Fatalf("the state's addresses are %d bytes, want %d", n, len(tc.f.server.AsSlice()))
			}
			var f *os.File
			nstest.In(t, s, func() { f, err = Upload(st, data) })
			if err != nil {
				t.Fatal(err)
			}
			fd := int(f.Fd())
			// Nothing was sent on the way: no window probe, whose
			// answer would cross the unit for every connection.
			ti, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
			if err != nil || ti.Segs_out != 0 {
				t.Fatalf("the uploaded socket sent %d segments (%v); want none", ti.Segs_out, err)
			}
			// The options the connection negotiated, as the state has
			// them (window scales included).
			if got, want := tcpOptions(ti), tcpOptionsOf(st); got != want {
				t.Fatalf("the uploaded socket's options %+v, the state's %+v", got, want)
			}
			// The first segments go out at the client's MSS, as the
			// accepted socket's did, not at the family's default (536
			// or 1220 bytes less options). The kernel counts the
			// timestamp option against the segment size when the host
			// uses timestamps, whether or not the connection does (the
			// segments then carry 12 bytes more).
			if ti.Snd_mss > st.GetMss() || ti.Snd_mss < accepted.Snd_mss-tcpTimestampOption {
				t.Fatalf("the uploaded socket's segment size %d, the accepted one's %d (the client's MSS %d)",
					ti.Snd_mss, accepted.Snd_mss, st.GetMss())
			}
			// An IPv4 state makes an AF_INET socket, whatever socket it
			// was captured from; an IPv6 one an IPv6-only AF_INET6 one.
			if tc.f.server.Is4() {
				if d := domain(t, f); d != unix.AF_INET {
					t.Fatalf("an IPv4 connection uploaded as a socket of family %d", d)
				}
			} else if v6only, err := unix.GetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY); err != nil || v6only != 1 {
				t.Fatalf("IPV6_V6ONLY %d, %v; want 1", v6only, err)
			}
			if tc.options {
				// The host's TSval continues from the state's (a socket
				// of its own would start from its own random offset):
				// at most a few seconds later, never earlier.
				ts, err := unix.GetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_TIMESTAMP)
				if err != nil {
					t.Fatal(err)
				}
				if d := uint32(ts) - st.GetTsVal(); d > 5000 {
					t.Fatalf("the host's TSval %d, the state's %d", uint32(ts), st.GetTsVal())
				}
			}
			app, err := net.FileConn(f)
			f.Close()
			if err != nil {
				t.Fatal(err)
			}
			defer app.Close()
			if got := (tuple{addrPortOf(app.RemoteAddr()), addrPortOf(app.LocalAddr())}); got != tupleOf(st) {
				t.Fatalf("uploaded socket %v, want %v", got, tupleOf(st))
			}
			exchange(t, client, app, request, pattern(4<<20))
			// A restarted application listens on the port while the
			// migrated connection lives, as beside its own.
			ln.Close()
			var again net.Listener
			nstest.In(t, s, func() { again, err = net.Listen("tcp", tc.f.vip().String()) })
			if err != nil {
				t.Fatalf("listening beside a migrated connection: %v", err)
			}
			again.Close()
		})
	}
}

// tcpTimestampOption is the timestamp option's bytes in a segment,
// padding included (TCPOLEN_TSTAMP_ALIGNED).
const tcpTimestampOption = 12

// TestUploadFailureResets: an upload the kernel refuses after the
// socket is connected (here a window the kernel finds inconsistent)
// resets the client itself, since in repair mode a close sends nothing:
// the client's read fails with ECONNRESET, and the error names the step.
func TestUploadFailureResets(t *testing.T) {
	forFamilies(t, func(t *testing.T, f family) {
		c, s := pair(t)
		ln := listen(t, s, f)
		client := dial(t, c, f.vip().String())
		sc, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		request := []byte("GET / HTTP/1.0\r\n\r\n")
		if _, err := client.Write(request); err != nil {
			t.Fatal(err)
		}
		settle(t, client, sc.(*net.TCPConn), len(request))
		st, data := capture(t, sc.(*net.TCPConn))
		// snd_wl1 beyond rcv_nxt + rcv_wnd: TCP_REPAIR_WINDOW refuses it.
		st.SndWl1 = st.GetRcvNxt() + st.GetRcvWnd() + 1<<20
		nstest.In(t, s, func() { _, err = Upload(st, data) })
		var ue *UploadError
		if !errors.As(err, &ue) || ue.Step != "TCP_REPAIR_WINDOW" || !ue.Connected {
			t.Fatalf("Upload: %v, want a connected failure at TCP_REPAIR_WINDOW", err)
		}
		wantReset(t, client)
	})
}

// TestUploadNeedsALocalVIP: a state whose VIP is not one of the host's
// addresses fails at the bind, before any packet leaves: a unit cannot
// have the host send from an address it does not own.
func TestUploadNeedsALocalVIP(t *testing.T) {
	forFamilies(t, func(t *testing.T, f family) {
		_, s := pair(t)
		other := netip.MustParseAddr("192.0.2.99")
		if f.server.Is6() {
			other = netip.MustParseAddr("2001:db8:99::99")
		}
		st := &pb.TCPState{Client: f.client.AsSlice(), ClientPort: 4000, Vip: other.AsSlice(), VipPort: 80,
			RemoteIsn: 100, LocalIsn: 200, SndNxt: 201, RcvNxt: 101, Mss: 1460}
		var err error
		nstest.In(t, s, func() { _, err = Upload(st, nil) })
		var ue *UploadError
		if !errors.As(err, &ue) || !strings.HasPrefix(ue.Step, "bind") || ue.Connected || !errors.Is(err, unix.EADDRNOTAVAIL) {
			t.Fatalf("Upload to a VIP the host does not have: %v, want a failure at the bind, unconnected", err)
		}
	})
}

// TestUploadRefusesWhatTheStateCannotSay: a state the host stream would
// refuse is refused before any socket exists, whichever family: here an
// IPv4-mapped IPv6 VIP (an IPv4 connection is 4 bytes) and a link-local
// client (the state carries no zone).
func TestUploadRefusesWhatTheStateCannotSay(t *testing.T) {
	for name, st := range map[string]*pb.TCPState{
		"mapped":     {Client: netip.MustParseAddr("::ffff:10.9.0.1").AsSlice(), Vip: netip.MustParseAddr("::ffff:10.9.0.2").AsSlice()},
		"link-local": {Client: netip.MustParseAddr("fe80::1").AsSlice(), Vip: netip.MustParseAddr("2001:db8:9::2").AsSlice()},
		"mixed":      {Client: netip.MustParseAddr("10.9.0.1").AsSlice(), Vip: netip.MustParseAddr("2001:db8:9::2").AsSlice()},
	} {
		st.ClientPort, st.VipPort, st.RemoteIsn, st.LocalIsn, st.SndNxt, st.RcvNxt, st.Mss = 4000, 80, 100, 200, 201, 101, 1460
		_, err := Upload(st, nil)
		var ue *UploadError
		if !errors.As(err, &ue) || ue.Step != "validate" || !errors.Is(err, pb.ErrInvalid) {
			t.Errorf("%s: %v, want a validation failure", name, err)
		}
	}
}

// TestUploadEndsAClosedConnection: a tuple on which the host still holds
// an earlier connection its server closed first (TIME_WAIT, which the
// kernel alone takes over only with timestamps, so the client here has
// none; FIN_WAIT2, the client's FIN not come) is taken over, as a
// listener takes a TIME_WAIT over for the client's new SYN; a tuple a
// live connection holds is not: the upload fails at the connect and the
// live connection goes on.
func TestUploadEndsAClosedConnection(t *testing.T) {
	forFamilies(t, testEndsAClosedConnection)
}

func testEndsAClosedConnection(t *testing.T, f family) {
	c, s := pair(t)
	noOptions(t, c)
	ln := listen(t, s, f)
	var err error
	server := f.vip()
	dialFrom := func(port int) (*net.TCPConn, *net.TCPConn) {
		t.Helper()
		var conn net.Conn
		d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(f.client, uint16(port))), Timeout: 5 * time.Second}
		nstest.In(t, c, func() { conn, err = d.Dial("tcp", server.String()) })
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		sc, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { sc.Close() })
		return conn.(*net.TCPConn), sc.(*net.TCPConn)
	}
	stateOf := func(port uint16) uint8 {
		t.Helper()
		var st uint8
		nstest.In(t, s, func() { st, err = tcpState(server, netip.AddrPortFrom(f.client, port)) })
		if errors.Is(err, unix.ENOENT) {
			return 0
		}
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	// A state to upload, from a connection of its own, put on other
	// tuples below.
	_, sc := dialFrom(41000)
	st, data := capture(t, sc)
	upload := func(port uint16) error {
		st.ClientPort = uint32(port)
		var f *os.File
		nstest.In(t, s, func() { f, err = Upload(st, data) })
		if err == nil {
			f.Close()
		}
		return err
	}

	// TIME_WAIT: the server closed first, then the client.
	old, oldServer := dialFrom(41001)
	oldServer.Close()
	if _, err := old.Read(make([]byte, 1)); err == nil {
		t.Fatal("the old connection's client read data, want the end")
	}
	old.Close()
	until(t, "the host's side of the first tuple in TIME_WAIT", func() bool { return stateOf(41001) == tcpTimeWait })
	if err := upload(41001); err != nil {
		t.Fatalf("Upload onto a TIME_WAIT tuple: %v", err)
	}

	// FIN_WAIT2: the server closed, the client has not.
	_, halfServer := dialFrom(41002)
	halfServer.Close()
	until(t, "the host's side of the second tuple in FIN_WAIT2", func() bool { return stateOf(41002) == tcpFinWait2 })
	if err := upload(41002); err != nil {
		t.Fatalf("Upload onto a FIN_WAIT2 tuple: %v", err)
	}

	// A live connection's tuple is not taken.
	live, liveServer := dialFrom(41003)
	err = upload(41003)
	var ue *UploadError
	if !errors.As(err, &ue) || ue.Step != stepConnect || !errors.Is(err, unix.EADDRNOTAVAIL) || ue.Connected {
		t.Fatalf("Upload onto a live connection's tuple: %v, want a failure at the connect", err)
	}
	if _, err := live.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(liveServer, make([]byte, 1)); err != nil {
		t.Fatalf("the live connection after the refused upload: %v", err)
	}
}
