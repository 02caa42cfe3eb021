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

// synFlood: args targets (comma-separated addr:port), source prefix,
// packets per second, seconds. It sends TCP SYNs from random addresses
// of the prefix and random ports, at the given rate for the given time,
// through a raw socket (the kernel routes them; the sources are forged,
// so nothing answers the sender). It prints a LoadResult.
func synFlood(args []string) error {
	if len(args) != 4 {
		return errors.New("want: targets prefix rate seconds")
	}
	var targets []netip.AddrPort
	for _, t := range strings.Split(args[0], ",") {
		ap, err := netip.ParseAddrPort(t)
		if err != nil || !ap.Addr().Is4() {
			return fmt.Errorf("target %q: want an IPv4 address:port", t)
		}
		targets = append(targets, ap)
	}
	prefix, err := netip.ParsePrefix(args[1])
	if err != nil || !prefix.Addr().Is4() || prefix.Bits() > 30 {
		return fmt.Errorf("source prefix %q: want IPv4, /30 or wider", args[1])
	}
	rate, err1 := strconv.Atoi(args[2])
	secs, err2 := strconv.ParseFloat(args[3], 64)
	if err1 != nil || err2 != nil || rate < 1 || secs <= 0 || secs > 60 {
		return errors.New("rate must be a positive integer and seconds between 0 and 60")
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_RAW)
	if err != nil {
		return fmt.Errorf("raw socket: %w", err)
	}
	defer unix.Close(fd)
	rng := rand.New(rand.NewPCG(1, 2))
	base := binary.BigEndian.Uint32(prefix.Masked().Addr().AsSlice())
	span := uint32(1) << (32 - prefix.Bits())
	pkt := make([]byte, header.IPv4MinSize+24)
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
			src := base + 1 + rng.Uint32N(span-2)
			buildSYN(pkt, src, dst, uint16(1024+rng.Uint32N(64512)), rng.Uint32())
			sa := &unix.SockaddrInet4{Addr: dst.Addr().As4()}
			if err := unix.Sendto(fd, pkt, 0, sa); err != nil && !errors.Is(err, unix.ENOBUFS) {
				return fmt.Errorf("send: %w", err)
			}
		}
		time.Sleep(time.Millisecond)
	}
	return json.NewEncoder(os.Stdout).Encode(LoadResult{Sent: sent, Seconds: time.Since(start).Seconds()})
}

// buildSYN writes an IPv4 TCP SYN with an MSS option into b (44 bytes),
// checksums included.
func buildSYN(b []byte, src uint32, dst netip.AddrPort, sport uint16, seq uint32) {
	f := header.IPv4Fields{TotalLength: uint16(len(b)), TTL: 64, Protocol: header.IPProtoTCP, Dst: dst.Addr().As4()}
	binary.BigEndian.PutUint32(f.Src[:], src)
	header.EncodeIPv4(b, &f)
	t := b[header.IPv4MinSize:]
	clear(t)
	binary.BigEndian.PutUint16(t[0:], sport)
	binary.BigEndian.PutUint16(t[2:], dst.Port())
	binary.BigEndian.PutUint32(t[4:], seq)
	t[12] = 6 << 4 // 24-byte header
	t[13] = 0x02   // SYN
	binary.BigEndian.PutUint16(t[14:], 64240)
	copy(t[20:], []byte{2, 4, 0x05, 0xb4}) // MSS 1460
	binary.BigEndian.PutUint16(t[16:], header.Checksum(t, header.PseudoHeaderSum(header.IPProtoTCP, f.Src[:], f.Dst[:], uint32(len(t)))))
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
