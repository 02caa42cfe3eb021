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
func TestUploadRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name    string
		options bool
	}{{"options", true}, {"no-options", false}} {
		t.Run(tc.name, func(t *testing.T) {
			c, s := pair(t)
			if !tc.options {
				noOptions(t, c)
			}
			ln := listen(t, s)
			client := dial(t, c, serverAddr+":8080")
			sc, err := ln.Accept()
			if err != nil {
				t.Fatal(err)
			}
			request := []byte("GET /migrated HTTP/1.1\r\nHost: vip\r\n\r\n")
			if _, err := client.Write(request); err != nil {
				t.Fatal(err)
			}
			settle(t, client, sc.(*net.TCPConn), len(request))
			st, data := capture(t, sc.(*net.TCPConn))
			if st.GetTimestamps() != tc.options || st.GetWindowScaling() != tc.options || st.GetSackPermitted() != tc.options {
				t.Fatalf("options in the state: %v", st)
			}
			var f *os.File
			nstest.In(t, s, func() { f, err = Upload(st, data) })
			if err != nil {
				t.Fatal(err)
			}
			// Nothing was sent on the way: no window probe, whose
			// answer would cross the unit for every connection.
			if ti, err := unix.GetsockoptTCPInfo(int(f.Fd()), unix.IPPROTO_TCP, unix.TCP_INFO); err != nil || ti.Segs_out != 0 {
				t.Fatalf("the uploaded socket sent %d segments (%v); want none", ti.Segs_out, err)
			}
			if tc.options {
				// The host's TSval continues from the state's (a socket
				// of its own would start from its own random offset):
				// at most a few seconds later, never earlier.
				ts, err := unix.GetsockoptInt(int(f.Fd()), unix.IPPROTO_TCP, unix.TCP_TIMESTAMP)
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
			if got := addrPortOf(app.RemoteAddr()); got != addrPortOf(client.LocalAddr()) {
				t.Fatalf("uploaded socket's peer %v, want %v", got, client.LocalAddr())
			}
			exchange(t, client, app, request, pattern(4<<20))
			// A restarted application listens on the port while the
			// migrated connection lives, as beside its own.
			ln.Close()
			var again net.Listener
			nstest.In(t, s, func() { again, err = net.Listen("tcp", serverAddr+":8080") })
			if err != nil {
				t.Fatalf("listening beside a migrated connection: %v", err)
			}
			again.Close()
		})
	}
}

// TestUploadFailureResets: an upload the kernel refuses after the
// socket is connected (here a window the kernel finds inconsistent)
// resets the client itself, since in repair mode a close sends nothing:
// the client's read fails with ECONNRESET, and the error names the step.
func TestUploadFailureResets(t *testing.T) {
	c, s := pair(t)
	ln := listen(t, s)
	client := dial(t, c, serverAddr+":8080")
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
}

// TestUploadNeedsALocalVIP: a state whose VIP is not one of the host's
// addresses fails at the bind, before any packet leaves: a unit cannot
// have the host send from an address it does not own.
func TestUploadNeedsALocalVIP(t *testing.T) {
	_, s := pair(t)
	st := &pb.TCPState{Client: []byte{10, 9, 0, 1}, ClientPort: 4000, Vip: []byte{192, 0, 2, 99}, VipPort: 80,
		RemoteIsn: 100, LocalIsn: 200, SndNxt: 201, RcvNxt: 101, Mss: 1460}
	var err error
	nstest.In(t, s, func() { _, err = Upload(st, nil) })
	var ue *UploadError
	if !errors.As(err, &ue) || !strings.HasPrefix(ue.Step, "bind") || ue.Connected {
		t.Fatalf("Upload to a VIP the host does not have: %v, want a failure at the bind, unconnected", err)
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
	c, s := pair(t)
	noOptions(t, c)
	ln := listen(t, s)
	var err error
	server := netip.MustParseAddrPort(serverAddr + ":8080")
	dialFrom := func(port int) (*net.TCPConn, *net.TCPConn) {
		t.Helper()
		var conn net.Conn
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(clientAddr), Port: port}, Timeout: 5 * time.Second}
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
		nstest.In(t, s, func() { st, err = tcpState(server, netip.AddrPortFrom(netip.MustParseAddr(clientAddr), port)) })
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
