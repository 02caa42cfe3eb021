package migrate

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// TCP states (include/net/tcp_states.h) in which the host's side of a
// connection has sent its FIN: its application is done with it.
const (
	tcpFinWait1 = 4
	tcpFinWait2 = 5
	tcpTimeWait = 6
	tcpLastAck  = 9
	tcpClosing  = 11
)

// endClosed ends the host's socket on the tuple local–remote when the
// host's side of it is closed (FIN sent: FIN_WAIT1/2, CLOSING, LAST_ACK
// or TIME_WAIT), and reports whether it did.
//
// A client that reuses its port opens a connection on a tuple whose
// previous connection, migrated to this host and closed by its server
// first, the host may still hold: in TIME_WAIT for a minute, or in
// FIN_WAIT2 when the client's FIN went to the unit's acceptor (the new
// SYN had made the tuple the acceptor's again). A listener's kernel
// takes a TIME_WAIT tuple over when the client's SYN comes (RFC 6191);
// here the acceptor saw the SYN, and a repaired socket's connect finds
// the tuple taken (the kernel lets it take a TIME_WAIT over only with
// timestamps). The client completed a handshake for the new connection,
// so the old incarnation is over for it: ending the host's side
// (SOCK_DESTROY, as `ss -K` does) is what the listener would have done.
// A socket whose host side is open (ESTABLISHED, CLOSE_WAIT) is left
// alone: an application's connection is never destroyed to make room.
func endClosed(local, remote netip.AddrPort) (bool, error) {
	state, err := tcpState(local, remote)
	if errors.Is(err, unix.ENOENT) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("sock_diag lookup: %w", err)
	}
	switch state {
	case tcpFinWait1, tcpFinWait2, tcpTimeWait, tcpLastAck, tcpClosing:
	default:
		return false, nil
	}
	// netlink.SocketDestroy would do, for IPv4 only: the request is the
	// lookup's, so that both name the socket the same way.
	req := nl.NewNetlinkRequest(nl.SOCK_DESTROY, unix.NLM_F_ACK)
	req.AddRawData(diagRequest(local, remote))
	if _, err := req.Execute(unix.NETLINK_INET_DIAG, 0); err != nil && !errors.Is(err, unix.ENOENT) {
		return false, fmt.Errorf("sock_diag destroy: %w", err)
	}
	return true, nil
}

// diagRequest is the inet_diag request naming the TCP socket on one
// exact tuple, IPv4 or IPv6 by the addresses' family (both are of one,
// unmapped, as a validated state's are).
func diagRequest(local, remote netip.AddrPort) []byte {
	// struct inet_diag_req_v2: family, protocol, ext, pad, states, then
	// struct inet_diag_sockid: ports (network order), the addresses (16
	// bytes each; an IPv4 address in the first 4), the interface (0:
	// any, as a global address needs none) and the cookie
	// (INET_DIAG_NOCOOKIE: any).
	b := make([]byte, 56)
	b[0], b[1] = unix.AF_INET, unix.IPPROTO_TCP
	if local.Addr().Is6() {
		b[0] = unix.AF_INET6
	}
	binary.NativeEndian.PutUint32(b[4:], ^uint32(0))
	binary.BigEndian.PutUint16(b[8:], local.Port())
	binary.BigEndian.PutUint16(b[10:], remote.Port())
	copy(b[12:28], local.Addr().AsSlice())
	copy(b[28:44], remote.Addr().AsSlice())
	binary.NativeEndian.PutUint32(b[48:], ^uint32(0))
	binary.NativeEndian.PutUint32(b[52:], ^uint32(0))
	return b
}

// tcpState looks up the TCP socket on one exact tuple (an inet_diag
// request without NLM_F_DUMP: the kernel answers with that socket or
// ENOENT) and returns its state. netlink.SocketGet dumps instead, which
// matches every socket on the two ports.
func tcpState(local, remote netip.AddrPort) (uint8, error) {
	req := nl.NewNetlinkRequest(nl.SOCK_DIAG_BY_FAMILY, 0)
	req.AddRawData(diagRequest(local, remote))
	msgs, err := req.Execute(unix.NETLINK_INET_DIAG, nl.SOCK_DIAG_BY_FAMILY)
	if err != nil {
		return 0, err
	}
	// struct inet_diag_msg begins with the family and the state.
	if len(msgs) != 1 || len(msgs[0]) < 2 {
		return 0, fmt.Errorf("sock_diag: %d answers", len(msgs))
	}
	return msgs[0][1], nil
}
