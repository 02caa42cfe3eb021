package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/tetherlb/tether/agent/shim"
	"github.com/tetherlb/tether/e2e"
)

// The l7 comparison's own roles, run by this binary in a namespace the
// way the e2e roles are (e2e.RoleCommand's environment names them).
const (
	roleL7HTTPD = "lbbench-l7httpd"
	roleTTFB    = "lbbench-ttfb"
)

// runBenchRole runs this command's own role named in the environment, if
// any, and exits.
func runBenchRole() {
	role := os.Getenv(e2e.RoleEnv)
	if role != roleL7HTTPD && role != roleTTFB {
		return
	}
	var args []string
	err := json.Unmarshal([]byte(os.Getenv(e2e.RoleArgsEnv)), &args)
	if err == nil {
		if role == roleL7HTTPD {
			err = serveL7(args)
		} else {
			err = measureTTFB(args)
		}
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", role, err)
		os.Exit(1)
	}
	os.Exit(0)
}

// serveL7 is the backend program of both l7 rows, HAProxy mode http's
// and Tether l7's: the same Go HTTP server answers GET / with the index
// page nginx serves in the other rows, and any path under /big/ with the
// 1 MiB file's bytes, from memory. Args: listen address, and the agent's
// hand-off socket or "". With a socket it listens through the agent's
// listener shim, which accepts ordinary connections as net.Listen does
// and also the connections migrated to this host; without one (HAProxy's
// row: no agent runs) through net.Listen. The handler is the same.
func serveL7(args []string) error {
	if len(args) != 2 {
		return errors.New("want: listen-address handoff-socket-or-empty")
	}
	var ln net.Listener
	var err error
	if args[1] == "" {
		ln, err = net.Listen("tcp", args[0])
	} else {
		ln, err = shim.Listen("tcp", args[0], shim.Options{Socket: args[1], MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond})
	}
	if err != nil {
		return err
	}
	index := []byte(indexPage)
	big := bulkBytes()
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		body := index
		if strings.HasPrefix(r.URL.Path, "/big/") {
			body = big
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		_, _ = w.Write(body)
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		c := make(chan os.Signal, 1)
		signal.Notify(c, syscall.SIGTERM, os.Interrupt)
		<-c
		srv.Close()
	}()
	fmt.Println(e2e.Ready)
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// TTFB is what the ttfb role prints per address, as JSON: the time from
// connect(2) on a new connection to the first byte of the response to
// the request written as soon as it is established, in microseconds.
type TTFB struct {
	Addr   string  `json:"addr"`
	Count  int     `json:"count"`
	Errors int     `json:"errors"`
	First  string  `json:"first_error,omitempty"`
	P50    float64 `json:"p50_us"`
	P99    float64 `json:"p99_us"`
	Max    float64 `json:"max_us"`
	// ConnP50 and ConnP99 are the handshake's share: connect(2) alone.
	ConnP50 float64 `json:"connect_p50_us"`
	ConnP99 float64 `json:"connect_p99_us"`
}

// measureTTFB: args seconds, path, then addresses (host:port). Round
// after round until the time is up, it opens one new connection to each
// address in turn (one connection at a time, so that no address's
// connection queues behind another's and noise on the machine falls on
// every address alike), sends GET path with Connection: close, times the
// first response byte, reads the response to its end and checks its
// status.
func measureTTFB(args []string) error {
	if len(args) < 3 {
		return errors.New("want: seconds, path, then addresses")
	}
	secs, err := strconv.ParseFloat(args[0], 64)
	if err != nil || secs <= 0 || secs > 50 {
		return errors.New("seconds: want 0 to 50")
	}
	path, addrs := args[1], args[2:]
	req := []byte("GET " + path + " HTTP/1.1\r\nHost: lbbench\r\nUser-Agent: lbbench-ttfb\r\nConnection: close\r\n\r\n")
	times := make([][]time.Duration, len(addrs))
	conns := make([][]time.Duration, len(addrs))
	res := make([]TTFB, len(addrs))
	end := time.Now().Add(time.Duration(secs * float64(time.Second)))
	// One reader and buffer for every connection: the client shares
	// core 0 with the hosts, and garbage of its own would have its
	// collector run there while a response is on its way.
	buf := make([]byte, 64<<10)
	r := bufio.NewReaderSize(nil, len(buf))
	for time.Now().Before(end) {
		for i, a := range addrs {
			c, d, err := ttfbOnce(a, req, r, buf)
			if err != nil {
				res[i].Errors++
				if res[i].First == "" {
					res[i].First = err.Error()
				}
				continue
			}
			times[i] = append(times[i], d)
			conns[i] = append(conns[i], c)
		}
	}
	for i, a := range addrs {
		ts, cs := times[i], conns[i]
		slices.Sort(ts)
		slices.Sort(cs)
		res[i].Addr, res[i].Count = a, len(ts)
		if len(ts) > 0 {
			us := func(ts []time.Duration, q float64) float64 {
				return float64(ts[min(len(ts)-1, int(q*float64(len(ts))))].Nanoseconds()) / 1e3
			}
			res[i].P50, res[i].P99, res[i].Max = us(ts, 0.5), us(ts, 0.99), us(ts, 1)
			res[i].ConnP50, res[i].ConnP99 = us(cs, 0.5), us(cs, 0.99)
		}
	}
	return json.NewEncoder(os.Stdout).Encode(res)
}

// ttfbOnce opens one connection, sends req, reads the response with r
// and buf, and returns the time connect(2) took and the time from its
// start to the response's first byte; every step is bounded by 2 s.
func ttfbOnce(addr string, req []byte, r *bufio.Reader, buf []byte) (time.Duration, time.Duration, error) {
	start := time.Now()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return 0, 0, err
	}
	connected := time.Since(start)
	defer c.Close()
	if err := c.SetDeadline(start.Add(2 * time.Second)); err != nil {
		return 0, 0, err
	}
	if _, err := c.Write(req); err != nil {
		return 0, 0, err
	}
	r.Reset(c)
	if _, err := r.Peek(1); err != nil {
		return 0, 0, fmt.Errorf("first byte: %w", err)
	}
	d := time.Since(start)
	status, err := r.ReadString('\n')
	if err != nil {
		return 0, 0, fmt.Errorf("status line: %w", err)
	}
	if !strings.HasPrefix(status, "HTTP/1.1 200 ") {
		return 0, 0, fmt.Errorf("status %q", strings.TrimSpace(status))
	}
	if _, err := io.CopyBuffer(io.Discard, r, buf); err != nil {
		return 0, 0, fmt.Errorf("response: %w", err)
	}
	return connected, d, nil
}
