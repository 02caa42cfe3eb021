package migrate

import (
	"fmt"
	"net/netip"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	pb "github.com/tetherlb/tether/api/hostpb"
)

// Capture is Upload's inverse for a socket of this host's kernel: it
// puts an ESTABLISHED IPv4 or IPv6 connection whose sent data is all
// acknowledged into repair mode and reads its state and its unread
// received bytes, as a Migrate carries them. A dual-stack socket's IPv4
// connection (IPv4-mapped addresses) is captured as the IPv4 connection
// it is, with 4-byte addresses; a link-local IPv6 connection is refused
// untouched, as the state has no room for its zone. The socket stays in
// repair mode (also after most errors): closing it then sends nothing,
// so the client does not notice (the migration's silent teardown).
// Tests and tools use it to migrate a connection the kernel accepted.
//
// The state's local_isn is snd_nxt - 1 (a Migrate's acceptor sends no
// data, and the kernel keeps no ISN), and remote_isn is the first
// unread byte's sequence number - 1. ts_recent is not read: the kernel
// offers no way to read or to set it.
func Capture(c syscall.Conn) (*pb.TCPState, []byte, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, nil, fmt.Errorf("capture: %w", err)
	}
	var st *pb.TCPState
	var data []byte
	if cerr := rc.Control(func(fd uintptr) { st, data, err = captureFD(int(fd)) }); cerr != nil {
		return nil, nil, fmt.Errorf("capture: %w", cerr)
	}
	return st, data, err
}

func captureFD(fd int) (*pb.TCPState, []byte, error) {
	tcp := func(opt, val int) error { return unix.SetsockoptInt(fd, unix.IPPROTO_TCP, opt, val) }
	get := func(opt int) (uint32, error) {
		v, err := unix.GetsockoptInt(fd, unix.IPPROTO_TCP, opt)
		return uint32(v), err
	}
	info, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
	if err != nil {
		return nil, nil, fmt.Errorf("capture: TCP_INFO: %w", err)
	}
	if info.State != unix.BPF_TCP_ESTABLISHED {
		return nil, nil, fmt.Errorf("capture: state %d, not ESTABLISHED", info.State)
	}
	inq, err := unix.IoctlGetInt(fd, unix.SIOCINQ)
	if err != nil {
		return nil, nil, fmt.Errorf("capture: SIOCINQ: %w", err)
	}
	if inq > pb.MaxMigrateData {
		return nil, nil, fmt.Errorf("capture: %d unread bytes, a Migrate carries at most %d", inq, pb.MaxMigrateData)
	}
	if outq, err := unix.IoctlGetInt(fd, unix.SIOCOUTQ); err != nil || outq != 0 {
		return nil, nil, fmt.Errorf("capture: %d bytes sent and not acknowledged (%v): the state carries none", outq, err)
	}
	// The addresses before repair mode: a connection the state cannot
	// carry is left as it is.
	local, err := unix.Getsockname(fd)
	if err != nil {
		return nil, nil, fmt.Errorf("capture: getsockname: %w", err)
	}
	peer, err := unix.Getpeername(fd)
	if err != nil {
		return nil, nil, fmt.Errorf("capture: getpeername: %w", err)
	}
	vip, err := stateAddr(local)
	if err != nil {
		return nil, nil, fmt.Errorf("capture: local address: %w", err)
	}
	client, err := stateAddr(peer)
	if err != nil {
		return nil, nil, fmt.Errorf("capture: peer address: %w", err)
	}
	if err := tcp(unix.TCP_REPAIR, unix.TCP_REPAIR_ON); err != nil {
		return nil, nil, fmt.Errorf("capture: TCP_REPAIR: %w", err)
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
		return nil, nil, fmt.Errorf("capture: TCP_REPAIR_WINDOW: %w", e)
	}
	ts, err := get(unix.TCP_TIMESTAMP)
	if err != nil {
		return nil, nil, err
	}
	st := &pb.TCPState{
		Client: client.Addr().AsSlice(), ClientPort: uint32(client.Port()), Vip: vip.Addr().AsSlice(), VipPort: uint32(vip.Port()),
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
		st.WindowScaling = true
		st.SndWscale, st.RcvWscale = wscales(info)
	}
	if st.Timestamps {
		st.TsVal = ts
	}
	return st, data, nil
}

// stateAddr is a socket's address as a state carries it: IPv4 in 4
// bytes, also when an AF_INET6 socket holds it IPv4-mapped; IPv6 in 16,
// unless it has a scope (a link-local address), which the state has no
// room for.
func stateAddr(sa unix.Sockaddr) (netip.AddrPort, error) {
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(sa.Port)), nil
	case *unix.SockaddrInet6:
		a := netip.AddrFrom16(sa.Addr).Unmap()
		if sa.ZoneId != 0 {
			return netip.AddrPort{}, fmt.Errorf("%v in scope %d: a state carries no zone", a, sa.ZoneId)
		}
		return netip.AddrPortFrom(a, uint16(sa.Port)), nil
	}
	return netip.AddrPort{}, fmt.Errorf("a %T, not an IP address", sa)
}

// wscales are tcp_info's window scales, tcpi_snd_wscale:4 and
// tcpi_rcv_wscale:4, which sit in the byte after tcpi_options that
// x/sys/unix leaves as padding.
func wscales(info *unix.TCPInfo) (snd, rcv uint32) {
	ws := *(*uint8)(unsafe.Add(unsafe.Pointer(info), unsafe.Offsetof(info.Options)+1))
	return uint32(ws & 0xf), uint32(ws >> 4)
}

// tcp_info's option bits (linux/tcp.h).
const (
	tcpiOptTimestamps = 1
	tcpiOptSack       = 2
	tcpiOptWscale     = 4
)
