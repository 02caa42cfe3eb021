package migrate

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"

	pb "github.com/tetherlb/tether/api/hostpb"
)

// Repair queue selectors (linux/tcp.h; x/sys/unix has no names for
// them).
const (
	tcpNoQueue   = 0
	tcpRecvQueue = 1
	tcpSendQueue = 2
)

// tcpMinMSS is the smallest MSS TCP_MAXSEG takes (TCP_MIN_MSS,
// include/net/tcp.h).
const tcpMinMSS = 88

// tcpRepairOpt is struct tcp_repair_opt.
type tcpRepairOpt struct {
	Code, Val uint32
}

// TCPRepairWindow is struct tcp_repair_window.
type TCPRepairWindow struct {
	SndWl1, SndWnd, MaxWindow, RcvWnd, RcvWup uint32
}

// UploadError is a failed upload: Step names what the kernel refused,
// and Connected says whether the socket got as far as ESTABLISHED (the
// client is then reset by Upload; before it, the caller's unit resets
// it).
type UploadError struct {
	Step      string
	Connected bool
	Err       error
}

func (e *UploadError) Error() string { return fmt.Sprintf("upload: %s: %v", e.Step, e.Err) }
func (e *UploadError) Unwrap() error { return e.Err }

// Upload recreates a connection the unit accepted in this host's
// kernel (TCP_REPAIR), bound to st's VIP and connected to its client,
// with data in its receive queue, and returns it out of repair mode, an
// ordinary ESTABLISHED socket (no window probe is sent: see below): an
// AF_INET socket for an IPv4 state, an IPv6-only AF_INET6 one for an
// IPv6 state. The socket is created in the calling thread's network
// namespace.
//
// A failure is an *UploadError. When it comes after the socket was
// connected, Upload has reset the client (an RST with the connection's
// sequence numbers) before returning.
func Upload(st *pb.TCPState, data []byte) (*os.File, error) {
	// The state and data are checked as a Migrate's, with placeholders
	// for the message's own fields.
	if err := pb.ValidateUnit(&pb.UnitMessage{Version: pb.Version,
		Body: &pb.UnitMessage_Migrate{Migrate: &pb.Migrate{Id: 1, FlowId: 1, Seq: 1, State: st, Data: data}}}); err != nil {
		return nil, &UploadError{Step: "validate", Err: err}
	}
	f, err := upload(st, data)
	var ue *UploadError
	if errors.As(err, &ue) && ue.Step == stepConnect && errors.Is(ue.Err, unix.EADDRNOTAVAIL) {
		// The tuple is taken; when by the closed side of an earlier
		// connection, that is ended and the upload tried once more
		// (endClosed says why).
		vip, _ := netip.AddrFromSlice(st.GetVip())
		client, _ := netip.AddrFromSlice(st.GetClient())
		ended, terr := endClosed(netip.AddrPortFrom(vip, uint16(st.GetVipPort())), netip.AddrPortFrom(client, uint16(st.GetClientPort())))
		if terr != nil {
			ue.Err = fmt.Errorf("%w (and the tuple's owner: %w)", ue.Err, terr)
		}
		if ended {
			f, err = upload(st, data)
			if err == nil {
				return f, nil
			}
			if errors.As(err, &ue) {
				ue.Err = fmt.Errorf("after ending the closed connection on the tuple: %w", ue.Err)
			}
		}
	}
	return f, err
}

// stepConnect names the step whose failure means the tuple is taken.
const stepConnect = "connect"

// upload is Upload after validation, once.
func upload(st *pb.TCPState, data []byte) (*os.File, error) {
	vipAddr, _ := netip.AddrFromSlice(st.GetVip())
	clientAddr, _ := netip.AddrFromSlice(st.GetClient())
	vip := netip.AddrPortFrom(vipAddr, uint16(st.GetVipPort()))
	client := netip.AddrPortFrom(clientAddr, uint16(st.GetClientPort()))
	family := unix.AF_INET
	if vipAddr.Is6() {
		family = unix.AF_INET6
	}
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, &UploadError{Step: "socket", Err: err}
	}
	connected := false
	fail := func(step string, err error) (*os.File, error) {
		if connected {
			// Out of repair mode first: in it, a close sends nothing.
			unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR, unix.TCP_REPAIR_OFF_NO_WP)
			reset(fd)
		}
		unix.Close(fd)
		return nil, &UploadError{Step: step, Connected: connected, Err: err}
	}
	tcp := func(opt, val int) error { return unix.SetsockoptInt(fd, unix.IPPROTO_TCP, opt, val) }

	if family == unix.AF_INET6 {
		// IPv6 only, whatever default net.ipv6.bindv6only gives: the
		// connection is IPv6 end to end (a state's IPv6 addresses are
		// never IPv4-mapped), and the application's socket says so.
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 1); err != nil {
			return fail("IPV6_V6ONLY", err)
		}
	}
	// Repair mode also sets SK_FORCE_REUSE: the bind below succeeds
	// beside the application's listener on the same VIP:port.
	if err := tcp(unix.TCP_REPAIR, unix.TCP_REPAIR_ON); err != nil {
		return fail("TCP_REPAIR on", err)
	}
	// The VIP must be one of the host's addresses (on its lo): no
	// IP_FREEBIND, so that a unit cannot have the host send from an
	// address it does not own, and a VIP not configured fails here,
	// before any packet, rather than at the client.
	if err := unix.Bind(fd, sockaddr(vip)); err != nil {
		return fail(fmt.Sprintf("bind %v", vip), err)
	}
	// The queues' sequence numbers can only be set while the socket is
	// closed: connect in repair mode takes them as snd_nxt/snd_una and
	// rcv_nxt/copied_seq.
	if err := tcp(unix.TCP_REPAIR_QUEUE, tcpSendQueue); err != nil {
		return fail("TCP_REPAIR_QUEUE send", err)
	}
	if err := tcp(unix.TCP_QUEUE_SEQ, int(int32(st.GetSndNxt()))); err != nil {
		return fail("TCP_QUEUE_SEQ send", err)
	}
	if err := tcp(unix.TCP_REPAIR_QUEUE, tcpRecvQueue); err != nil {
		return fail("TCP_REPAIR_QUEUE receive", err)
	}
	if err := tcp(unix.TCP_QUEUE_SEQ, int(int32(st.GetRemoteIsn()+1))); err != nil {
		return fail("TCP_QUEUE_SEQ receive", err)
	}
	// The segment size the socket sends with is worked out at the
	// connect, from the path's MTU and the MSS clamp, and again only when
	// the path's MTU changes; the clamp is then a default (536 bytes for
	// IPv4, 1220 for IPv6) that TCP_REPAIR_OPTIONS corrects too late. So
	// the client's MSS is the clamp at the connect already, as a user
	// MSS (cleared again below); one below the smallest the kernel takes
	// there is raised to it, the nearest it allows.
	if err := tcp(unix.TCP_MAXSEG, int(max(st.GetMss(), tcpMinMSS))); err != nil {
		return fail("TCP_MAXSEG", err)
	}
	// In repair mode connect sends no SYN, in either family (the kernel's
	// tcp_connect finishes the connection at once): the socket is
	// ESTABLISHED.
	if err := unix.Connect(fd, sockaddr(client)); err != nil {
		return fail(stepConnect, fmt.Errorf("to %v: %w", client, err))
	}
	connected = true
	// The user MSS has done its work; the application's socket keeps no
	// setting it did not make.
	if err := tcp(unix.TCP_MAXSEG, 0); err != nil {
		return fail("TCP_MAXSEG clear", err)
	}
	// The negotiated options need an ESTABLISHED socket.
	opts := []tcpRepairOpt{{unix.TCPOPT_MAXSEG, st.GetMss()}}
	if st.GetWindowScaling() {
		opts = append(opts, tcpRepairOpt{unix.TCPOPT_WINDOW, st.GetSndWscale() | st.GetRcvWscale()<<16})
	}
	if st.GetSackPermitted() {
		opts = append(opts, tcpRepairOpt{unix.TCPOPT_SACK_PERMITTED, 0})
	}
	if st.GetTimestamps() {
		opts = append(opts, tcpRepairOpt{unix.TCPOPT_TIMESTAMP, 0})
	}
	if err := setsockoptBytes(fd, unix.TCP_REPAIR_OPTIONS, unsafe.Pointer(&opts[0]), len(opts)*int(unsafe.Sizeof(opts[0]))); err != nil {
		return fail("TCP_REPAIR_OPTIONS", err)
	}
	// The acknowledged bytes: a write in repair mode with the receive
	// queue selected puts them in the receive queue and moves rcv_nxt.
	for rest := data; len(rest) > 0; {
		n, err := unix.Write(fd, rest)
		if err != nil {
			return fail(fmt.Sprintf("write %d bytes to the receive queue", len(data)), err)
		}
		rest = rest[n:]
	}
	if got, err := unix.GetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_QUEUE_SEQ); err != nil {
		return fail("TCP_QUEUE_SEQ read back", err)
	} else if uint32(got) != st.GetRcvNxt() {
		return fail("receive queue", fmt.Errorf("rcv_nxt %d after %d bytes, want %d", uint32(got), len(data), st.GetRcvNxt()))
	}
	// The window after the data: the kernel refuses an rcv_wup beyond
	// its rcv_nxt, which only the data moved to the state's.
	w := TCPRepairWindow{SndWl1: st.GetSndWl1(), SndWnd: st.GetSndWnd(), MaxWindow: st.GetSndWnd(),
		RcvWnd: st.GetRcvWnd(), RcvWup: st.GetRcvNxt()}
	if err := setsockoptBytes(fd, unix.TCP_REPAIR_WINDOW, unsafe.Pointer(&w), int(unsafe.Sizeof(w))); err != nil {
		return fail("TCP_REPAIR_WINDOW", err)
	}
	if st.GetTimestamps() {
		// The low bit of the value switches the socket to microsecond
		// timestamps (Linux 6.7+); the unit's are milliseconds-like, so
		// it stays clear, rounding up: TSvals must not go backwards.
		ts := (st.GetTsVal() + 1) &^ 1
		if err := tcp(unix.TCP_TIMESTAMP, int(int32(ts))); err != nil {
			return fail("TCP_TIMESTAMP", err)
		}
	}
	if err := tcp(unix.TCP_REPAIR_QUEUE, tcpNoQueue); err != nil {
		return fail("TCP_REPAIR_QUEUE none", err)
	}
	// Out of repair mode without a window probe. The state's window is
	// the client's latest (that of the request's last segment), and the
	// kernel cannot be given the client's last TSval (ts_recent), so the
	// host's first segments echo none (TSecr 0, which a peer takes as
	// no RTT sample) until the client's next segment, and PAWS skips a
	// ts_recent of 0. A probe would learn both at once, at the price of
	// a segment to the client and its ACK back through the unit (held
	// there until the flow's mapping is on this host) for every
	// connection: about a sixth of the agent's work per migration.
	if err := tcp(unix.TCP_REPAIR, unix.TCP_REPAIR_OFF_NO_WP); err != nil {
		return fail("TCP_REPAIR off", err)
	}
	// Leaving repair mode leaves the socket without SO_REUSEADDR (the
	// kernel's SK_NO_REUSE): bound to the VIP's port, it and its
	// TIME_WAIT would keep a restarted application from listening
	// there, as the application's own accepted connections do not.
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
		return fail("SO_REUSEADDR", err)
	}
	return os.NewFile(uintptr(fd), fmt.Sprintf("tcp %v→%v", vip, client)), nil
}

// sockaddr is ap as a socket address of its family. A validated state's
// IPv6 addresses are never link-local, so none needs a zone (scope ID).
func sockaddr(ap netip.AddrPort) unix.Sockaddr {
	if ap.Addr().Is4() {
		return &unix.SockaddrInet4{Addr: ap.Addr().As4(), Port: int(ap.Port())}
	}
	return &unix.SockaddrInet6{Addr: ap.Addr().As16(), Port: int(ap.Port())}
}

func setsockoptBytes(fd, opt int, p unsafe.Pointer, n int) error {
	_, _, e := unix.Syscall6(unix.SYS_SETSOCKOPT, uintptr(fd), unix.IPPROTO_TCP, uintptr(opt), uintptr(p), uintptr(n), 0)
	if e != 0 {
		return e
	}
	return nil
}

// reset sends the client an RST with the connection's sequence numbers
// and leaves the socket closed (still to be released). A connect to
// AF_UNSPEC is the kernel's tcp_disconnect, which resets an
// ESTABLISHED connection even when another process (a shim that was
// too late) holds a copy of the descriptor, where a close with
// SO_LINGER {on, 0} would only drop this copy; the linger is set as
// well so that the final close of an unshared socket resets too.
func reset(fd int) error {
	unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
	sa := unix.RawSockaddr{Family: unix.AF_UNSPEC}
	_, _, e := unix.Syscall(unix.SYS_CONNECT, uintptr(fd), uintptr(unsafe.Pointer(&sa)), unsafe.Sizeof(sa))
	if e != 0 {
		return e
	}
	return nil
}

// Reset resets the client of an uploaded connection and closes f.
func Reset(f *os.File) error {
	sc, err := f.SyscallConn()
	if err != nil {
		return errors.Join(err, f.Close())
	}
	var rerr error
	if err := sc.Control(func(fd uintptr) { rerr = reset(int(fd)) }); err != nil {
		rerr = err
	}
	return errors.Join(rerr, f.Close())
}
