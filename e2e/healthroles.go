package e2e

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	pb "github.com/tetherlb/tether/api/healthpb"
)

// Roles for the health protocol's security test: a capture of what an
// agent sends, its replay from elsewhere, a rogue host's forgeries, and
// connections held open across all of it.

// udpCapture receives datagrams on an address and appends each to a file
// as one hex line, as a tap on the wire would record them.
// args: listen-address file
func udpCapture(args []string) error {
	if len(args) != 2 {
		return errors.New("want: listen-address file")
	}
	conn, err := net.ListenPacket("udp", args[0])
	if err != nil {
		return err
	}
	f, err := os.OpenFile(args[1], os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	go stopOnSignal(func() { conn.Close() })
	fmt.Println(Ready)
	buf := make([]byte, 65536)
	for {
		n, _, err := conn.ReadFrom(buf)
		if err != nil {
			return nil // closed by the signal
		}
		if _, err := fmt.Fprintln(f, hex.EncodeToString(buf[:n])); err != nil {
			return err
		}
	}
}

// udpReplay sends every datagram of a capture file to a target.
// args: file target-address
func udpReplay(args []string) error {
	if len(args) != 2 {
		return errors.New("want: file target-address")
	}
	b, err := os.ReadFile(args[0])
	if err != nil {
		return err
	}
	conn, err := net.Dial("udp", args[1])
	if err != nil {
		return err
	}
	defer conn.Close()
	n := 0
	for line := range strings.Lines(string(b)) {
		d, err := hex.DecodeString(strings.TrimSpace(line))
		if err != nil || len(d) == 0 {
			continue
		}
		if _, err := conn.Write(d); err != nil {
			return err
		}
		n++
	}
	fmt.Printf("replayed %d\n", n)
	return nil
}

// healthForge is a rogue host that holds a valid key of its own and
// tries to speak for another host: as that host (its own key, the other
// host's ID), about that host (a goodbye naming it), and about that
// host's endpoint (its own row naming the endpoint inactive).
// args: key-file target-address victim-host victim-endpoint
func healthForge(args []string) error {
	if len(args) != 4 {
		return errors.New("want: key-file target-address victim-host victim-endpoint")
	}
	b, err := os.ReadFile(args[0])
	if err != nil {
		return err
	}
	key, err := pb.ParseHostKey(b)
	if err != nil {
		return err
	}
	victim, err := strconv.ParseUint(args[2], 10, 32)
	if err != nil {
		return err
	}
	target, err := netip.ParseAddrPort(args[1])
	if err != nil {
		return err
	}
	conn, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(target))
	if err != nil {
		return err
	}
	defer conn.Close()
	codec, err := pb.NewCodec()
	if err != nil {
		return err
	}
	seq := pb.NewSequencer(time.Now())
	inactive := &pb.Row{App: &pb.AppID{Proto: "tcp", Endpoint: args[3]}, Health: pb.Health_HEALTH_HEALTHY,
		Target: pb.State_STATE_INACTIVE, Current: pb.State_STATE_INACTIVE}
	send := func(host uint32, env *pb.Envelope) error {
		now := time.Now()
		h := &pb.Header{Host: host, Sender: host, Seq: seq.Next(now), Time: uint64(now.UnixMilli()), Grant: key.Grant}
		f, err := codec.Encode(env, h, key.Key, false)
		if err != nil {
			return err
		}
		_, err = conn.Write(f)
		return err
	}
	for _, m := range []struct {
		host uint32
		env  *pb.Envelope
	}{
		{uint32(victim), &pb.Envelope{Body: &pb.Envelope_RowChange{RowChange: &pb.RowChange{Host: uint32(victim), Generation: 1 << 62,
			Ops: []*pb.RowOp{{Op: pb.RowOp_OP_UPDATE, Row: inactive}}}}}},
		{key.Host, &pb.Envelope{Body: &pb.Envelope_Goodbye{Goodbye: &pb.Goodbye{Host: uint32(victim)}}}},
		{key.Host, &pb.Envelope{Body: &pb.Envelope_RowChange{RowChange: &pb.RowChange{Host: key.Host, Generation: 1,
			Ops: []*pb.RowOp{{Op: pb.RowOp_OP_ADD, Row: inactive}}}}}},
	} {
		if err := send(m.host, m.env); err != nil {
			return err
		}
	}
	fmt.Println("forged 3")
	return nil
}

// waitGoAhead waits until the test creates file, 60 s at most.
func waitGoAhead(file string) error {
	deadline := time.Now().Add(60 * time.Second)
	for {
		if _, err := os.Stat(file); err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return errors.New("the go-ahead file never appeared")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// preconnect opens n connections (default 1), as a browser does before
// it knows its requests, prints "connected N", waits until a file
// exists (60 s at most), then sends GET path on each and prints each
// answer's body, then "answered K of N" and the first error.
// args: host:port path file [n]
func preconnect(args []string) error {
	if len(args) != 3 && len(args) != 4 {
		return errors.New("want: host:port path file [n]")
	}
	n := 1
	if len(args) == 4 {
		var err error
		if n, err = strconv.Atoi(args[3]); err != nil || n < 1 {
			return errors.New("n: want a positive count")
		}
	}
	conns := make([]net.Conn, 0, n)
	for i := range n {
		// Long enough for SYNs resent at 1, 3 and 7 s: a loaded test
		// machine has lost a SYN and its first retransmissions.
		c, err := net.DialTimeout("tcp", args[0], 20*time.Second)
		if err != nil {
			return fmt.Errorf("connection %d of %d: %w", i+1, n, err)
		}
		defer c.Close()
		conns = append(conns, c)
	}
	fmt.Printf("connected %d\n", n)
	if err := waitGoAhead(args[2]); err != nil {
		return err
	}
	bodies, errs := make([]string, n), make([]error, n)
	var wg sync.WaitGroup
	for i, c := range conns {
		wg.Go(func() {
			c.SetDeadline(time.Now().Add(20 * time.Second))
			if _, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: vip\r\nConnection: close\r\n\r\n", args[1]); err != nil {
				errs[i] = err
				return
			}
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				errs[i] = fmt.Errorf("the answer: %w", err)
				return
			}
			defer resp.Body.Close()
			b, err := io.ReadAll(resp.Body)
			bodies[i], errs[i] = string(b), err
		})
	}
	wg.Wait()
	ok := 0
	for i := range conns {
		if errs[i] == nil {
			ok++
			fmt.Print(bodies[i])
		}
	}
	fmt.Printf("answered %d of %d", ok, n)
	if err := errors.Join(errs...); err != nil {
		fmt.Printf("; first error: %v", err)
	}
	fmt.Println()
	return nil
}

// holdConns opens n keep-alive connections to a URL, makes one request
// on each, prints "connected", waits until a file exists (60 s at most),
// then makes a second request on every same connection and prints
// "held n": the connections lived through whatever happened meanwhile.
// args: host:port n file
func holdConns(args []string) error {
	if len(args) != 3 {
		return errors.New("want: host:port n file")
	}
	n, err := strconv.Atoi(args[1])
	if err != nil || n < 1 {
		return errors.New("n: want a positive count")
	}
	type held struct {
		c net.Conn
		r *bufio.Reader
	}
	get := func(h held) (string, error) {
		h.c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := fmt.Fprintf(h.c, "GET / HTTP/1.1\r\nHost: vip\r\n\r\n"); err != nil {
			return "", err
		}
		resp, err := http.ReadResponse(h.r, nil)
		if err != nil {
			return "", err
		}
		var body bytes.Buffer
		_, err = body.ReadFrom(resp.Body)
		resp.Body.Close()
		return resp.Header.Get("X-Backend"), err
	}
	var conns []held
	backends := map[string]int{}
	for range n {
		c, err := net.DialTimeout("tcp", args[0], 5*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		h := held{c, bufio.NewReader(c)}
		name, err := get(h)
		if err != nil {
			return fmt.Errorf("first request: %w", err)
		}
		backends[name]++
		conns = append(conns, h)
	}
	fmt.Printf("connected %v\n", backends)
	if err := waitGoAhead(args[2]); err != nil {
		return err
	}
	var wg sync.WaitGroup
	errs := make([]error, len(conns))
	for i, h := range conns {
		wg.Go(func() {
			if _, err := get(h); err != nil {
				errs[i] = fmt.Errorf("connection %d, second request: %w", i, err)
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	fmt.Printf("held %d\n", len(conns))
	return nil
}
