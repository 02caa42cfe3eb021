package e2e

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tetherlb/tether/dataplane/header"
)

// Roles for the flood test: a SYN flood from forged sources, and a probe
// that counts how many legitimate connections get through meanwhile.

// synFlood: args targets (comma-separated addr:port, all of one IP
// version), source prefix (of the same version), packets per second,
// seconds. It sends TCP SYNs from random addresses of the prefix and
// random ports, at the given rate for the given time, through a raw
// socket that writes the IP header (the kernel routes them; the sources
// are forged, so nothing answers the sender). It prints a LoadResult.
func synFlood(args []string) error {
	if len(args) != 4 {
		return errors.New("want: targets prefix rate seconds")
	}
	prefix, err := netip.ParsePrefix(args[1])
	if err != nil || prefix.Bits() > prefix.Addr().BitLen()-2 {
		return fmt.Errorf("source prefix %q: want an IPv4 /30 or an IPv6 /126, or wider", args[1])
	}
	var targets []netip.AddrPort
	for _, t := range strings.Split(args[0], ",") {
		ap, err := netip.ParseAddrPort(t)
		if err != nil || ap.Addr().Is4() != prefix.Addr().Is4() || ap.Addr().Is4In6() {
			return fmt.Errorf("target %q: want an address:port of the source prefix's IP version", t)
		}
		targets = append(targets, ap)
	}
	rate, err1 := strconv.Atoi(args[2])
	secs, err2 := strconv.ParseFloat(args[3], 64)
	if err1 != nil || err2 != nil || rate < 1 || secs <= 0 || secs > 60 {
		return errors.New("rate must be a positive integer and seconds between 0 and 60")
	}
	// IPPROTO_RAW implies the header is the sender's, in both families.
	family, ipLen := unix.AF_INET, header.IPv4MinSize
	if prefix.Addr().Is6() {
		family, ipLen = unix.AF_INET6, header.IPv6Size
	}
	fd, err := unix.Socket(family, unix.SOCK_RAW, unix.IPPROTO_RAW)
	if err != nil {
		return fmt.Errorf("raw socket: %w", err)
	}
	defer unix.Close(fd)
	rng := rand.New(rand.NewPCG(1, 2))
	pkt := make([]byte, ipLen+24)
	var sent int64
	start := time.Now()
	total := time.Duration(secs * float64(time.Second))
	for {
		elapsed := time.Since(start)
		if elapsed >= total {
			break
		}
		due := int64(elapsed.Seconds()*float64(rate)) + 1
		for ; sent < due; sent++ {
			dst := targets[sent%int64(len(targets))]
			src := randomHost(rng, prefix)
			buildSYN(pkt, src, dst, uint16(1024+rng.Uint32N(64512)), rng.Uint32())
			var sa unix.Sockaddr
			if dst.Addr().Is4() {
				sa = &unix.SockaddrInet4{Addr: dst.Addr().As4()}
			} else {
				sa = &unix.SockaddrInet6{Addr: dst.Addr().As16()}
			}
			if err := unix.Sendto(fd, pkt, 0, sa); err != nil && !errors.Is(err, unix.ENOBUFS) {
				return fmt.Errorf("send: %w", err)
			}
		}
		time.Sleep(time.Millisecond)
	}
	return json.NewEncoder(os.Stdout).Encode(LoadResult{Sent: sent, Seconds: time.Since(start).Seconds()})
}

// randomHost is a random address of p other than its first and last
// (an IPv4 prefix's network and broadcast addresses): the prefix's bits
// kept, the rest (up to its last 64) drawn from rng.
func randomHost(rng *rand.Rand, p netip.Prefix) netip.Addr {
	a := p.Masked().Addr().As16()
	host := min(p.Addr().BitLen()-p.Bits(), 64)
	var r uint64
	if host == 64 {
		r = 1 + rng.Uint64N(^uint64(0)-1)
	} else {
		r = 1 + rng.Uint64N(uint64(1)<<host-2)
	}
	binary.BigEndian.PutUint64(a[8:], binary.BigEndian.Uint64(a[8:])|r)
	if p.Addr().Is4() {
		return netip.AddrFrom16(a).Unmap()
	}
	return netip.AddrFrom16(a)
}

// buildSYN writes a TCP SYN with an MSS option from src to dst into b
// (44 bytes for IPv4, 64 for IPv6), checksums included.
func buildSYN(b []byte, src netip.Addr, dst netip.AddrPort, sport uint16, seq uint32) {
	var t []byte
	s, d := src.AsSlice(), dst.Addr().AsSlice()
	if src.Is4() {
		f := header.IPv4Fields{TotalLength: uint16(len(b)), TTL: 64, Protocol: header.IPProtoTCP, Src: src.As4(), Dst: dst.Addr().As4()}
		header.EncodeIPv4(b, &f)
		t = b[header.IPv4MinSize:]
	} else {
		f := header.IPv6Fields{PayloadLength: uint16(len(b) - header.IPv6Size), NextHeader: header.IPProtoTCP, HopLimit: 64, Src: src.As16(), Dst: dst.Addr().As16()}
		header.EncodeIPv6(b, &f)
		t = b[header.IPv6Size:]
	}
	clear(t)
	binary.BigEndian.PutUint16(t[0:], sport)
	binary.BigEndian.PutUint16(t[2:], dst.Port())
	binary.BigEndian.PutUint32(t[4:], seq)
	t[12] = 6 << 4 // 24-byte header
	t[13] = 0x02   // SYN
	binary.BigEndian.PutUint16(t[14:], 64240)
	copy(t[20:], []byte{2, 4, 0x05, 0xb4}) // MSS 1460
	binary.BigEndian.PutUint16(t[16:], header.Checksum(t, header.PseudoHeaderSum(header.IPProtoTCP, s, d, uint32(len(t)))))
}

// ProbeResult is what the probe role prints: per URL, connections
// attempted and completed in time.
type ProbeResult struct {
	Attempts map[string]int `json:"attempts"`
	OK       map[string]int `json:"ok"`
	FirstErr string         `json:"first_error,omitempty"`
}

// probe: args urls (comma-separated), interval-ms, seconds, timeout-ms.
// Every interval it requests each URL on a new connection; a request
// counts as OK when the whole answer arrived within the timeout.
func probe(args []string) error {
	if len(args) != 4 {
		return errors.New("want: urls interval-ms seconds timeout-ms")
	}
	urls := strings.Split(args[0], ",")
	every, err1 := strconv.Atoi(args[1])
	secs, err2 := strconv.ParseFloat(args[2], 64)
	limit, err3 := strconv.Atoi(args[3])
	if err1 != nil || err2 != nil || err3 != nil || every < 1 || secs <= 0 || secs > 120 || limit < 1 {
		return errors.New("interval and timeout must be positive integers, seconds between 0 and 120")
	}
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	res := ProbeResult{Attempts: map[string]int{}, OK: map[string]int{}}
	var mu sync.Mutex
	var wg sync.WaitGroup
	tick := time.NewTicker(time.Duration(every) * time.Millisecond)
	defer tick.Stop()
	end := time.After(time.Duration(secs * float64(time.Second)))
	for running := true; running; {
		select {
		case <-end:
			running = false
		case <-tick.C:
			for _, u := range urls {
				wg.Add(1)
				go func() {
					defer wg.Done()
					ctx, cancel := context.WithTimeout(context.Background(), time.Duration(limit)*time.Millisecond)
					defer cancel()
					err := fetch(ctx, client, u)
					mu.Lock()
					defer mu.Unlock()
					res.Attempts[u]++
					if err == nil {
						res.OK[u]++
					} else if res.FirstErr == "" {
						res.FirstErr = err.Error()
					}
				}()
			}
		}
	}
	wg.Wait()
	return json.NewEncoder(os.Stdout).Encode(res)
}

func fetch(ctx context.Context, c *http.Client, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %s", resp.Status)
	}
	return nil
}
