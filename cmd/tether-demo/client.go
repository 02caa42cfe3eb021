package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/tetherlb/tether/e2e"
)

// The demo's client runs inside the client namespace as this binary
// started again with the clientVerb argument. Unlike e2e's client role it
// opens every connection from a source port the demo chose, so that the
// demo can ask Tether beforehand which backend each connection will get
// (Maglev hashes the client's address and port), and it reports its
// progress while it runs.
const clientVerb = "client"

// clientLine is one line the client prints: progress at most every
// progressEvery, then one final line with every connection's outcome.
type clientLine struct {
	Done   int          `json:"done"`
	Failed int          `json:"failed"`
	Final  bool         `json:"final,omitempty"`
	Conns  []connResult `json:"conns,omitempty"`
}

// connResult is one connection's outcome.
type connResult struct {
	Port    int    `json:"port"`
	Backend string `json:"backend,omitempty"` // the X-Backend header of the answer
	Bytes   int64  `json:"bytes"`
	SHA256  string `json:"sha256,omitempty"`
	Err     string `json:"error,omitempty"`
}

const progressEvery = 250 * time.Millisecond

// runClient is the client: GET url once per connection, each from its
// own source port first, first+1, ..., parallel at a time.
func runClient(args []string) error {
	fs := flag.NewFlagSet(clientVerb, flag.ContinueOnError)
	url := fs.String("url", "", "URL to GET")
	from := fs.String("from", "", "local address to connect from")
	first := fs.Int("first-port", 0, "source port of the first connection")
	n := fs.Int("n", 1, "connections")
	par := fs.Int("parallel", 1, "connections at a time")
	if err := fs.Parse(args); err != nil {
		return err
	}
	local := net.ParseIP(*from)
	if *url == "" || local == nil || *first < 1 || *n < 1 || *first+*n > 65536 || *par < 1 {
		return errors.New("want -url URL -from ADDR -first-port P -n N -parallel K with ports in 1..65535")
	}
	out := json.NewEncoder(os.Stdout)
	results := make([]connResult, *n)
	var mu sync.Mutex
	var line clientLine
	jobs := make(chan int)
	var wg sync.WaitGroup
	for range *par {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				r := getFrom(&net.TCPAddr{IP: local, Port: *first + i}, *url)
				mu.Lock()
				results[i] = r
				line.Done++
				if r.Err != "" {
					line.Failed++
				}
				mu.Unlock()
			}
		}()
	}
	stop := make(chan struct{})
	reported := make(chan struct{})
	go func() {
		defer close(reported)
		t := time.NewTicker(progressEvery)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				mu.Lock()
				l := line
				mu.Unlock()
				_ = out.Encode(l)
			}
		}
	}()
	for i := range *n {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	close(stop)
	<-reported
	line.Final, line.Conns = true, results
	return out.Encode(line)
}

// getFrom makes one HTTP/1.1 request on a new connection from local and
// reads the whole answer, hashing the body.
func getFrom(local *net.TCPAddr, url string) connResult {
	r := connResult{Port: local.Port}
	fail := func(err error) connResult {
		r.Err = err.Error()
		return r
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fail(err)
	}
	req.Close = true // one request per connection: each is a new flow
	port := req.URL.Port()
	if port == "" {
		port = "80"
	}
	d := net.Dialer{LocalAddr: local, Timeout: 5 * time.Second}
	conn, err := d.DialContext(ctx, "tcp", net.JoinHostPort(req.URL.Hostname(), port))
	if err != nil {
		return fail(err)
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	if err := req.Write(conn); err != nil {
		return fail(fmt.Errorf("send request: %w", err))
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), req)
	if err != nil {
		return fail(fmt.Errorf("read answer: %w", err))
	}
	defer resp.Body.Close()
	h := sha256.New()
	r.Bytes, err = io.Copy(h, resp.Body)
	r.Backend = resp.Header.Get("X-Backend")
	if err != nil {
		return fail(fmt.Errorf("read body after %d bytes: %w", r.Bytes, err))
	}
	if resp.StatusCode != http.StatusOK {
		return fail(fmt.Errorf("status %s", resp.Status))
	}
	r.SHA256 = hex.EncodeToString(h.Sum(nil))
	return r
}

// clientRun runs the client in the client namespace and returns every
// connection's outcome; progress gets each progress report.
func clientRun(lb *e2e.LB, url string, first, n, par int, progress func(done, failed int)) ([]connResult, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", lb.Client, e2e.Self(), clientVerb,
		"-url", url, "-from", e2e.ClientAddr, "-first-port", strconv.Itoa(first), "-n", strconv.Itoa(n), "-parallel", strconv.Itoa(par))
	// The client dies with the demo rather than outlive an interrupt.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start the client: %w", err)
	}
	sc := bufio.NewScanner(stdout)
	// The final line holds every connection's outcome: about 150 bytes
	// each.
	sc.Buffer(make([]byte, 64<<10), 1<<20+n*256)
	var final *clientLine
	for sc.Scan() {
		var l clientLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			cancel() // it would block writing to a pipe nobody reads
			cmd.Wait()
			return nil, fmt.Errorf("client printed %q: %w", sc.Text(), err)
		}
		progress(l.Done, l.Failed)
		if l.Final {
			final = &l
		}
	}
	scanErr := sc.Err()
	if scanErr != nil {
		cancel() // it would block writing to a pipe nobody reads
	}
	waitErr := cmd.Wait()
	if scanErr != nil {
		return nil, fmt.Errorf("client output: %w", scanErr)
	}
	if waitErr != nil {
		return nil, fmt.Errorf("client: %w: %s", waitErr, bytes.TrimSpace(stderr.Bytes()))
	}
	if final == nil || len(final.Conns) != n {
		return nil, fmt.Errorf("client ended without reporting its %d connections: %s", n, bytes.TrimSpace(stderr.Bytes()))
	}
	return final.Conns, nil
}
