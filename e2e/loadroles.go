package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
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
	Sent     int64   `json:"sent,omitempty"`
	Received int64   `json:"received,omitempty"`
	Requests int64   `json:"requests,omitempty"`
	Errors   int64   `json:"errors,omitempty"`
	Seconds  float64 `json:"seconds"`
}

// udpFlood: args target-addr:port, source-ports, payload-size, seconds.
// It sends from a range of source ports (one flow each) in batches
// (sendmmsg) for the given time.
func udpFlood(args []string) error {
	if len(args) != 4 {
		return errors.New("want: target ports size seconds")
	}
	dst, err := net.ResolveUDPAddr("udp4", args[0])
	if err != nil {
		return err
	}
	nports, _ := strconv.Atoi(args[1])
	size, _ := strconv.Atoi(args[2])
	secs, _ := strconv.ParseFloat(args[3], 64)
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
