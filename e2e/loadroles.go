package e2e

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/net/ipv4"
)

// Load-generation roles for the throughput benchmark: a UDP flood with a
// sink that counts, and an HTTP load that runs for a fixed time.

// LoadResult is what the load roles print, as JSON.
type LoadResult struct {
	Sent     int64 `json:"sent,omitempty"`
	Received int64 `json:"received,omitempty"`
	Requests int64 `json:"requests,omitempty"`
	Errors   int64 `json:"errors,omitempty"`
	// Wrapped counts packets of a new-flow UDP flood sent after its
	// tuples ran out (they repeat a flow).
	Wrapped int64   `json:"wrapped,omitempty"`
	Seconds float64 `json:"seconds"`
}

// udpFlood: args target-addr:port, source-ports, payload-size, seconds,
// and optionally a source mode. Without one it sends from a range of
// source ports (one socket and one flow each) in batches (sendmmsg) for
// the given time. With a mode it writes whole IPv4/UDP packets through a
// raw socket, so that it chooses every packet's source freely at the
// same cost per packet:
//
//	fixed:ADDR     source-ports flows from ADDR (ports 20000 and up),
//	               cycled: an established load
//	new:PREFIX     a new flow per packet: every address of PREFIX, then
//	               every port from 1024, so that no tuple repeats until
//	               all of them were used (Wrapped counts packets after)
func udpFlood(args []string) error {
	if len(args) != 4 && len(args) != 5 {
		return errors.New("want: target ports size seconds [fixed:ADDR|new:PREFIX]")
	}
	dst, err := net.ResolveUDPAddr("udp4", args[0])
	if err != nil {
		return err
	}
	nports, _ := strconv.Atoi(args[1])
	size, _ := strconv.Atoi(args[2])
	secs, err := strconv.ParseFloat(args[3], 64)
	if err != nil || secs <= 0 || secs > 600 {
		return errors.New("seconds must be between 0 and 600")
	}
	if len(args) == 5 {
		return udpFloodRaw(dst, max(nports, 1), size, secs, args[4])
	}
	var conns []*ipv4.PacketConn
	for i := range max(nports, 1) {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{Port: 20000 + i})
		if err != nil {
			return err
		}
		defer c.Close()
		conns = append(conns, ipv4.NewPacketConn(c))
	}
	payload := make([]byte, size)
	msgs := make([]ipv4.Message, 64)
	for i := range msgs {
		msgs[i] = ipv4.Message{Buffers: [][]byte{payload}, Addr: dst}
	}
	deadline := time.Now().Add(time.Duration(secs * float64(time.Second)))
	var sent int64
	start := time.Now()
	for i := 0; time.Now().Before(deadline); i++ {
		n, err := conns[i%len(conns)].WriteBatch(msgs, 0)
		if err != nil && !errors.Is(err, syscall.ENOBUFS) && !errors.Is(err, syscall.EAGAIN) {
			return err
		}
		sent += int64(n)
	}
	return json.NewEncoder(os.Stdout).Encode(LoadResult{Sent: sent, Seconds: time.Since(start).Seconds()})
}

// udpFloodRaw is udpFlood's raw-socket sender (see udpFlood for mode).
func udpFloodRaw(dst *net.UDPAddr, nports, size int, secs float64, mode string) error {
	kind, arg, _ := strings.Cut(mode, ":")
	var base, naddr uint32
	switch kind {
	case "fixed":
		a, err := netip.ParseAddr(arg)
		if err != nil || !a.Is4() {
			return fmt.Errorf("fixed source %q: want an IPv4 address", arg)
		}
		base, naddr = binary.BigEndian.Uint32(a.AsSlice()), 1
	case "new":
		p, err := netip.ParsePrefix(arg)
		if err != nil || !p.Addr().Is4() {
			return fmt.Errorf("new-flow sources %q: want an IPv4 prefix", arg)
		}
		base, naddr = binary.BigEndian.Uint32(p.Masked().Addr().AsSlice()), uint32(1)<<(32-p.Bits())
	default:
		return fmt.Errorf("source mode %q: want fixed:ADDR or new:PREFIX", mode)
	}
	d4 := dst.IP.To4()
	if d4 == nil {
		return fmt.Errorf("target %s: want IPv4", dst)
	}
	c, err := net.ListenPacket("ip4:udp", "0.0.0.0")
	if err != nil {
		return fmt.Errorf("raw socket: %w", err)
	}
	defer c.Close()
	rc, err := ipv4.NewRawConn(c)
	if err != nil {
		return fmt.Errorf("raw socket: %w", err)
	}
	const batch, firstPort, lastPort = 64, 1024, 65535
	msgs := make([]ipv4.Message, batch)
	to := &net.IPAddr{IP: d4}
	for i := range msgs {
		pkt := make([]byte, 28+size)
		pkt[0], pkt[8], pkt[9] = 0x45, 64, 17 // IPv4, no options; TTL; UDP
		binary.BigEndian.PutUint16(pkt[2:], uint16(len(pkt)))
		copy(pkt[16:20], d4)
		binary.BigEndian.PutUint16(pkt[22:], uint16(dst.Port))
		binary.BigEndian.PutUint16(pkt[24:], uint16(8+size))
		msgs[i] = ipv4.Message{Buffers: [][]byte{pkt}, Addr: to}
	}
	perAddr := uint64(lastPort - firstPort + 1)
	deadline := time.Now().Add(time.Duration(secs * float64(time.Second)))
	var sent, seq, wrapped int64
	start := time.Now()
	for time.Now().Before(deadline) {
		for i := range msgs {
			var src uint32
			var sport uint16
			if kind == "fixed" {
				src, sport = base, uint16(20000+seq%int64(nports))
			} else {
				// Addresses first, so that consecutive packets also
				// differ in source address; then ports.
				k := uint64(seq)
				src = base + uint32(k%uint64(naddr))
				sport = uint16(firstPort + (k/uint64(naddr))%perAddr)
				if k >= uint64(naddr)*perAddr {
					wrapped++
				}
			}
			seq++
			pkt := msgs[i].Buffers[0]
			binary.BigEndian.PutUint32(pkt[12:], src)
			binary.BigEndian.PutUint16(pkt[10:], 0)
			binary.BigEndian.PutUint16(pkt[10:], ^onesSum(pkt[:20], 0))
			binary.BigEndian.PutUint16(pkt[20:], sport)
			binary.BigEndian.PutUint16(pkt[26:], 0)
			// Pseudo-header: addresses, protocol, UDP length.
			sum := onesSum(pkt[12:20], uint32(17)+uint32(8+size))
			if ck := ^onesSum(pkt[20:], uint32(sum)); ck != 0 {
				binary.BigEndian.PutUint16(pkt[26:], ck)
			} else {
				binary.BigEndian.PutUint16(pkt[26:], 0xffff)
			}
		}
		n, err := rc.WriteBatch(msgs, 0)
		if err != nil && !errors.Is(err, syscall.ENOBUFS) && !errors.Is(err, syscall.EAGAIN) {
			return err
		}
		sent += int64(max(n, 0))
		// Packets the kernel did not take are not sent: their tuples are
		// skipped, not retried, so that no tuple repeats either way.
	}
	return json.NewEncoder(os.Stdout).Encode(LoadResult{Sent: sent, Wrapped: wrapped, Seconds: time.Since(start).Seconds()})
}

// onesSum adds b to sum in ones' complement, 16 bits at a time, and
// folds the result.
func onesSum(b []byte, sum uint32) uint16 {
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return uint16(sum)
}

// udpSink: args listen-addr. It counts datagrams until SIGTERM, then
// prints the count.
func udpSink(args []string) error {
	if len(args) != 1 {
		return errors.New("want: listen-address")
	}
	c, err := net.ListenPacket("udp4", args[0])
	if err != nil {
		return err
	}
	_ = c.(*net.UDPConn).SetReadBuffer(8 << 20)
	pc := ipv4.NewPacketConn(c)
	var count atomic.Int64
	go func() {
		msgs := make([]ipv4.Message, 64)
		for i := range msgs {
			msgs[i].Buffers = [][]byte{make([]byte, 2048)}
		}
		for {
			n, err := pc.ReadBatch(msgs, 0)
			if err != nil {
				return
			}
			count.Add(int64(n))
		}
	}()
	fmt.Println(Ready)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGUSR1, os.Interrupt)
	for s := range sig {
		fmt.Printf("received %d\n", count.Load())
		if s != syscall.SIGUSR1 {
			c.Close()
			return nil
		}
	}
	return nil
}

// httpLoad: args url, parallel, seconds, keepalive (true/false). Each of
// the parallel workers requests the URL in a loop for the given time and
// reads the whole body.
func httpLoad(args []string) error {
	if len(args) != 4 {
		return errors.New("want: url parallel seconds keepalive")
	}
	par, _ := strconv.Atoi(args[1])
	secs, _ := strconv.ParseFloat(args[2], 64)
	keep := args[3] == "true"
	tr := &http.Transport{DisableKeepAlives: !keep, MaxIdleConnsPerHost: par,
		DialContext: (&net.Dialer{Timeout: 5 * time.Second}).DialContext}
	client := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(secs*float64(time.Second)))
	defer cancel()
	var reqs, errs atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for range max(par, 1) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, args[0], nil)
				resp, err := client.Do(req)
				if err != nil {
					if ctx.Err() == nil {
						errs.Add(1)
					}
					continue
				}
				_, err = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if err != nil || resp.StatusCode != http.StatusOK {
					if ctx.Err() == nil {
						errs.Add(1)
					}
					continue
				}
				reqs.Add(1)
			}
		}()
	}
	wg.Wait()
	return json.NewEncoder(os.Stdout).Encode(LoadResult{Requests: reqs.Load(), Errors: errs.Load(), Seconds: time.Since(start).Seconds()})
}
