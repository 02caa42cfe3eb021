package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"
)

// Roles for UDP through a VIP: an echo server that names itself and the
// peer it saw, and a client that counts which backend answered its flows
// and checks every datagram both ways.
//
// A request is a line "echo SEQ" or "sum SEQ", then the payload. The
// answer is a line "NAME PEER SEQ BYTES SHA256" (what the server
// received: its sender and the payload's length and digest), then, for
// echo, the payload again. sum lets a test send a large request and get
// a small answer, so that each direction can be checked on its own.

// udpEchoBuf holds the largest UDP datagram.
const udpEchoBuf = 65536

// udpEcho: args name, listen address (e.g. [::]:5353, which takes IPv4
// too, or 0.0.0.0:5353). It answers each datagram from the address the
// datagram was sent to, as a service behind direct server return must:
// there the destination is the VIP on the loopback device, and a reply
// from the address the route toward the client would pick (the
// backend's own) is not what the client's connected socket accepts.
func udpEcho(args []string) error {
	if len(args) != 2 {
		return errors.New("want: name listen-address")
	}
	ap, err := netip.ParseAddrPort(args[1])
	if err != nil {
		return fmt.Errorf("listen address %q: %w", args[1], err)
	}
	// The unspecified IPv6 address takes IPv4 on a socket of its own:
	// x/net/ipv6 leaves an IPv4-mapped source out of the control
	// message, so a dual-stack socket would answer IPv4 from the
	// route's address.
	addrs := []netip.AddrPort{ap}
	if ap.Addr() == netip.IPv6Unspecified() {
		addrs = append(addrs, netip.AddrPortFrom(netip.IPv4Unspecified(), ap.Port()))
	}
	var conns []net.PacketConn
	serves := make([]func() error, 0, len(addrs))
	for _, a := range addrs {
		c, serve, err := udpEchoOn(args[0], a)
		if err != nil {
			for _, c := range conns {
				c.Close()
			}
			return err
		}
		conns = append(conns, c)
		serves = append(serves, serve)
	}
	go stopOnSignal(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	fmt.Println(Ready)
	errc := make(chan error, len(serves))
	for _, serve := range serves {
		go func() { errc <- serve() }()
	}
	for range serves {
		if err := <-errc; err != nil {
			return err
		}
	}
	return nil
}

// udpEchoOn opens udpEcho's socket on ap (IPv6 only, for an IPv6
// address) and returns it and the loop that serves it until it is
// closed.
func udpEchoOn(name string, ap netip.AddrPort) (net.PacketConn, func() error, error) {
	network := "udp6"
	if ap.Addr().Is4() {
		network = "udp4"
	}
	c, err := net.ListenPacket(network, ap.String())
	if err != nil {
		return nil, nil, err
	}
	_ = c.(*net.UDPConn).SetReadBuffer(4 << 20)
	// read returns a datagram, its sender and the address it was sent
	// to; write answers from that address.
	var read func(b []byte) (int, netip.Addr, net.Addr, error)
	var write func(b []byte, src netip.Addr, to net.Addr) error
	if network == "udp4" {
		pc := ipv4.NewPacketConn(c)
		err = pc.SetControlMessage(ipv4.FlagDst, true)
		read = func(b []byte) (int, netip.Addr, net.Addr, error) {
			n, cm, from, err := pc.ReadFrom(b)
			if err != nil || cm == nil {
				return n, netip.Addr{}, from, err
			}
			dst, _ := netip.AddrFromSlice(cm.Dst)
			return n, dst.Unmap(), from, nil
		}
		write = func(b []byte, src netip.Addr, to net.Addr) error {
			_, err := pc.WriteTo(b, &ipv4.ControlMessage{Src: src.AsSlice()}, to)
			return err
		}
	} else {
		pc := ipv6.NewPacketConn(c)
		err = pc.SetControlMessage(ipv6.FlagDst, true)
		read = func(b []byte) (int, netip.Addr, net.Addr, error) {
			n, cm, from, err := pc.ReadFrom(b)
			if err != nil || cm == nil {
				return n, netip.Addr{}, from, err
			}
			dst, _ := netip.AddrFromSlice(cm.Dst)
			return n, dst, from, nil
		}
		write = func(b []byte, src netip.Addr, to net.Addr) error {
			_, err := pc.WriteTo(b, &ipv6.ControlMessage{Src: src.AsSlice()}, to)
			return err
		}
	}
	if err != nil {
		c.Close()
		return nil, nil, err
	}
	serve := func() error {
		buf := make([]byte, udpEchoBuf)
		for {
			n, dst, from, err := read(buf)
			if err != nil {
				if errors.Is(err, net.ErrClosed) {
					return nil
				}
				return err
			}
			line, payload, ok := bytes.Cut(buf[:n], []byte("\n"))
			f := strings.Fields(string(line))
			if !ok || len(f) != 2 || (f[0] != "echo" && f[0] != "sum") || !dst.IsValid() {
				fmt.Printf("bad datagram from %s: %q\n", from, line)
				continue
			}
			peer, err := netip.ParseAddrPort(from.String())
			if err != nil {
				return err
			}
			sum := sha256.Sum256(payload)
			reply := fmt.Appendf(nil, "%s %s %s %d %s\n", name, peer, f[1], len(payload), hex.EncodeToString(sum[:]))
			if f[0] == "echo" {
				reply = append(reply, payload...)
			}
			if err := write(reply, dst, from); err != nil {
				// A reply the kernel refuses (a full buffer, a route
				// that went) is the client's lost datagram, not the
				// server's end.
				fmt.Printf("reply to %s: %v\n", from, err)
			}
		}
	}
	return c, serve, nil
}

// UDPResult is what the udpclient role prints, as JSON.
type UDPResult struct {
	// Backends counts the flows each backend answered, every datagram
	// of them intact.
	Backends map[string]int `json:"backends"`
	// Peers counts answers by the address the backend saw the
	// datagram come from.
	Peers map[string]int `json:"peers"`
	// PortKept counts answers whose backend saw the flow's own source
	// port (halfnat and ipip keep it; nat picks its own).
	PortKept int `json:"port_kept"`
	Answers  int `json:"answers"`
	// Retries counts datagrams sent again after no answer came in time.
	Retries int `json:"retries"`
	// Errors counts flows that failed: a datagram unanswered after
	// every retry, or answered with other bytes than were sent.
	Errors   int    `json:"errors"`
	FirstErr string `json:"first_error,omitempty"`
	// Switched counts flows whose datagrams more than one backend
	// answered (also counted in Errors).
	Switched int `json:"switched"`
}

// Bounds of the udpclient role: an unanswered datagram is sent again
// after udpWait, udpTries times in all (unless the role is told
// otherwise), and the whole run gives up after udpRunBound, so that a
// broken path fails the test in seconds rather than the harness's
// minute.
const (
	udpWait     = time.Second
	udpTries    = 4
	udpRunBound = 25 * time.Second
	udpParallel = 16
)

// udpClient: args address:port, flows, datagrams per flow, payload size,
// echo or sum (the answer carries the payload back, or only its digest),
// and the tries a datagram gets. Each flow is a socket of its own (its
// own source port), connected to the address, so that only answers from
// that address reach it; its datagrams go one at a time, each waiting
// for its answer. It prints a UDPResult.
func udpClient(args []string) error {
	if len(args) != 6 {
		return errors.New("want: address:port flows datagrams size echo|sum tries")
	}
	addr := args[0]
	flows, err1 := strconv.Atoi(args[1])
	per, err2 := strconv.Atoi(args[2])
	size, err3 := strconv.Atoi(args[3])
	tries, err4 := strconv.Atoi(args[5])
	if err1 != nil || err2 != nil || err3 != nil || err4 != nil || flows < 1 || per < 1 || size < 0 || size > 60000 || tries < 1 || tries > 10 {
		return errors.New("flows and datagrams must be positive, size 0 to 60000, tries 1 to 10")
	}
	if args[4] != "echo" && args[4] != "sum" {
		return errors.New("answer: want echo or sum")
	}
	ctx, cancel := context.WithTimeout(context.Background(), udpRunBound)
	defer cancel()
	res := UDPResult{Backends: map[string]int{}, Peers: map[string]int{}}
	var mu sync.Mutex
	jobs := make(chan int)
	var wg sync.WaitGroup
	for range udpParallel {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				f := udpFlow(ctx, addr, i, per, size, args[4] == "echo", tries)
				mu.Lock()
				res.Retries += f.retries
				res.Answers += len(f.peers)
				for _, p := range f.peers {
					res.Peers[p.Addr().String()]++
					if p.Port() == f.local.Port() {
						res.PortKept++
					}
				}
				if f.switched {
					res.Switched++
				}
				if f.err != nil {
					res.Errors++
					if res.FirstErr == "" {
						res.FirstErr = f.err.Error()
					}
				} else {
					res.Backends[f.backend]++
				}
				mu.Unlock()
			}
		}()
	}
	for i := range flows {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	return json.NewEncoder(os.Stdout).Encode(res)
}

// udpFlowResult is one flow of the udpclient role.
type udpFlowResult struct {
	local    netip.AddrPort
	backend  string           // the backend that answered first
	peers    []netip.AddrPort // what the backend saw, per answer
	retries  int
	switched bool
	err      error
}

// socketMTU reports the path MTU a connected socket's route holds.
func socketMTU(c net.Conn) string {
	sc, err := c.(*net.UDPConn).SyscallConn()
	if err != nil {
		return err.Error()
	}
	var mtu int
	var serr error
	err = sc.Control(func(fd uintptr) {
		mtu, serr = unix.GetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_MTU)
		if serr != nil {
			mtu, serr = unix.GetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_MTU)
		}
	})
	if err == nil {
		err = serr
	}
	if err != nil {
		return err.Error()
	}
	return strconv.Itoa(mtu)
}

// udpFlow runs flow i: per datagrams of size bytes, each answered
// before the next goes, each sent at most tries times.
func udpFlow(ctx context.Context, addr string, i, per, size int, echo bool, tries int) (r udpFlowResult) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "udp", addr)
	if err != nil {
		r.err = err
		return r
	}
	defer c.Close()
	r.local, _ = netip.ParseAddrPort(c.LocalAddr().String())
	kind := "sum"
	if echo {
		kind = "echo"
	}
	buf := make([]byte, udpEchoBuf)
	for seq := range per {
		// Each datagram's bytes are its own, so that an answer carrying
		// another datagram's payload (another flow's, say) is caught.
		payload := make([]byte, size)
		rng := rand.New(rand.NewPCG(uint64(i), uint64(seq)))
		for j := range payload {
			payload[j] = byte(rng.Uint32())
		}
		sum := sha256.Sum256(payload)
		want := fmt.Sprintf("%d %d %s", seq, size, hex.EncodeToString(sum[:]))
		req := append(fmt.Appendf(nil, "%s %d\n", kind, seq), payload...)
		var answer []string
		var last error
		var failed []string // each failed try's error, for the report
		for try := 0; try < tries && answer == nil; try++ {
			if last != nil {
				failed = append(failed, last.Error())
			}
			if ctx.Err() != nil {
				last = fmt.Errorf("run bound (%s) reached", udpRunBound)
				break
			}
			if try > 0 {
				r.retries++
			}
			if _, err := c.Write(req); err != nil {
				last = err
				continue
			}
			answer, last = udpAwait(c, buf, seq)
			if errors.Is(last, unix.EMSGSIZE) {
				last = fmt.Errorf("%w (socket's path MTU now %s)", last, socketMTU(c))
			}
		}
		if answer == nil {
			failed = append(failed, last.Error())
			r.err = fmt.Errorf("flow %d (%s), datagram %d of %d bytes: no answer after %d tries: %s", i, r.local, seq, size, tries, strings.Join(failed, "; "))
			return r
		}
		// answer: name, peer, then what the server received, then the
		// echoed payload as one field.
		name, got, echoed := answer[0], answer[2], answer[3]
		if got != want {
			r.err = fmt.Errorf("flow %d (%s), datagram %d: %s received %q, sent %q", i, r.local, seq, name, got, want)
			return r
		}
		if echo && echoed != string(payload) {
			r.err = fmt.Errorf("flow %d (%s), datagram %d: %s echoed %d bytes, not the %d sent", i, r.local, seq, name, len(echoed), size)
			return r
		}
		peer, err := netip.ParseAddrPort(answer[1])
		if err != nil {
			r.err = fmt.Errorf("flow %d: %s says it saw %q: %v", i, name, answer[1], err)
			return r
		}
		r.peers = append(r.peers, peer)
		if r.backend == "" {
			r.backend = name
		} else if name != r.backend && !r.switched {
			r.switched = true
			r.err = fmt.Errorf("flow %d (%s): datagram %d answered by %s, earlier ones by %s", i, r.local, seq, name, r.backend)
		}
	}
	return r
}

// udpAwait reads answers on c for up to udpWait until one for seq comes
// (a late answer to an earlier try of an earlier datagram is skipped),
// and returns its fields: name, peer, "SEQ BYTES SHA256" and the echoed
// payload.
func udpAwait(c net.Conn, buf []byte, seq int) ([]string, error) {
	if err := c.SetReadDeadline(time.Now().Add(udpWait)); err != nil {
		return nil, err
	}
	for {
		n, err := c.Read(buf)
		if err != nil {
			return nil, err
		}
		line, payload, ok := bytes.Cut(buf[:n], []byte("\n"))
		f := strings.Fields(string(line))
		if !ok || len(f) != 5 {
			return nil, fmt.Errorf("malformed answer %q", line)
		}
		if f[2] != strconv.Itoa(seq) {
			continue
		}
		return []string{f[0], f[1], strings.Join(f[2:], " "), string(payload)}, nil
	}
}
