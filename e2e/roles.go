package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/tetherlb/tether/agent/shim"

	"golang.org/x/sys/unix"

	"github.com/tetherlb/tether/dataplane/header"
	"github.com/tetherlb/tether/nic/tun"
)

// The helper roles run inside namespaces as the test binary (or the demo
// binary) started again with RoleEnv set. They are small real programs:
// an HTTP server that names itself, an HTTP client that counts which
// backend answered, and an IP-in-IP decapsulator for backends whose
// kernel has no ipip module.

// RoleEnv selects a helper role; its arguments follow in RoleArgsEnv.
const (
	RoleEnv     = "TETHER_E2E_ROLE"
	RoleArgsEnv = "TETHER_E2E_ARGS"
)

// RoleCommand returns the environment that makes Self() run role.
func RoleCommand(role string, args ...string) []string {
	b, _ := json.Marshal(args)
	return []string{RoleEnv + "=" + role, RoleArgsEnv + "=" + string(b)}
}

// RunRoleFromEnv runs the role named in the environment, if any, and
// exits; call it first thing in TestMain or main.
func RunRoleFromEnv() {
	role := os.Getenv(RoleEnv)
	if role == "" {
		return
	}
	var args []string
	if err := json.Unmarshal([]byte(os.Getenv(RoleArgsEnv)), &args); err != nil {
		fmt.Fprintln(os.Stderr, "e2e role:", err)
		os.Exit(2)
	}
	var err error
	switch role {
	case "httpd":
		err = serveHTTP(args)
	case "shimhttpd":
		err = serveShimHTTP(args)
	case "client":
		err = runClient(args)
	case "ipipd":
		err = decapIPIP(args)
	case "udpflood":
		err = udpFlood(args)
	case "udpsink":
		err = udpSink(args)
	case "load":
		err = httpLoad(args)
	case "synflood":
		err = synFlood(args)
	case "probe":
		err = probe(args)
	case "udpcapture":
		err = udpCapture(args)
	case "udpreplay":
		err = udpReplay(args)
	case "healthforge":
		err = healthForge(args)
	case "holdconns":
		err = holdConns(args)
	case "preconnect":
		err = preconnect(args)
	case "connlat":
		err = connLatency(args)
	case "udpecho":
		err = udpEcho(args)
	case "udpclient":
		err = udpClient(args)
	default:
		err = fmt.Errorf("unknown role %q", role)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e role", role+":", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// Ready is printed by a role once it serves.
const Ready = "role ready"

// Payload returns n deterministic bytes: what /bytes?n= serves, so that a
// client can check a transfer without the server sending a digest.
func Payload(w io.Writer, n int64) error {
	rng := rand.New(rand.NewPCG(uint64(n), 0x7e7e))
	buf := make([]byte, 64<<10)
	for n > 0 {
		for i := 0; i+8 <= len(buf); i += 8 {
			v := rng.Uint64()
			buf[i], buf[i+1], buf[i+2], buf[i+3] = byte(v), byte(v>>8), byte(v>>16), byte(v>>24)
			buf[i+4], buf[i+5], buf[i+6], buf[i+7] = byte(v>>32), byte(v>>40), byte(v>>48), byte(v>>56)
		}
		chunk := min(n, int64(len(buf)))
		if _, err := w.Write(buf[:chunk]); err != nil {
			return err
		}
		n -= chunk
	}
	return nil
}

// PayloadSHA256 is the hex SHA-256 of Payload(n), computed once per n
// in a process (tests built with -race compute slowly).
func PayloadSHA256(n int64) string {
	if v, ok := payloadSums.Load(n); ok {
		return v.(string)
	}
	h := sha256.New()
	_ = Payload(h, n)
	sum := hex.EncodeToString(h.Sum(nil))
	payloadSums.Store(n, sum)
	return sum
}

var payloadSums sync.Map

// serveHTTP: args name, listen address and optionally a health file.
// GET / answers "NAME\n"; GET /bytes?n=N streams Payload(N), at most
// R bytes a second with &pace=R (a transfer a test must catch in the
// middle lasts as long on a fast machine as on a slow one), in writes of
// C bytes, each sent at once, with &chunk=C (default: Payload's 64 KiB,
// so that a paced transfer moves every 64 KiB / R seconds), and so
// does GET /NAME/bytes, for a rule that routes by path; POST
// /upload answers "BYTES SHA256\n" of what it was sent. With a
// health file, GET /healthz answers 503 while that file exists and 200
// otherwise, so that a benchmark or test can fail a health check at will
// while the application keeps serving everything else. Every answer
// carries X-Backend: NAME.
func serveHTTP(args []string) error {
	if len(args) != 2 && len(args) != 3 {
		return errors.New("want: name listen-address [health-file]")
	}
	ln, err := net.Listen("tcp", args[1])
	if err != nil {
		return err
	}
	return serveMux(ln, httpMux(args[0], args[2:]))
}

// httpMux is serveHTTP's handler for backend name, with the health file
// if one is given.
func httpMux(name string, healthFile []string) *http.ServeMux {
	mux := http.NewServeMux()
	if len(healthFile) == 1 {
		healthFile := healthFile[0]
		mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Backend", name)
			// Stat on every request: the check must see the file's
			// creation at once, with no cache between it and the answer.
			if _, err := os.Stat(healthFile); err == nil {
				http.Error(w, name+" failing", http.StatusServiceUnavailable)
				return
			}
			fmt.Fprintln(w, name)
		})
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Backend", name)
		if r.URL.Query().Has("peer") {
			// The address the connection came from: a proxy's source
			// address, for tests of the request router.
			host, _, _ := net.SplitHostPort(r.RemoteAddr)
			fmt.Fprintln(w, name, host)
			return
		}
		fmt.Fprintln(w, name)
	})
	serveBytes := func(w http.ResponseWriter, r *http.Request) {
		n, err := strconv.ParseInt(r.URL.Query().Get("n"), 10, 64)
		if err != nil || n < 0 || n > 1<<34 {
			http.Error(w, "n: want a byte count", http.StatusBadRequest)
			return
		}
		var pace int64
		if s := r.URL.Query().Get("pace"); s != "" {
			if pace, err = strconv.ParseInt(s, 10, 64); err != nil || pace < 64<<10 {
				http.Error(w, "pace: want bytes a second, at least 65536", http.StatusBadRequest)
				return
			}
		}
		var chunk int64
		if s := r.URL.Query().Get("chunk"); s != "" {
			if chunk, err = strconv.ParseInt(s, 10, 64); err != nil || chunk < 512 || chunk > 64<<10 || pace == 0 {
				http.Error(w, "chunk: want bytes a write, 512 to 65536, with pace", http.StatusBadRequest)
				return
			}
		}
		w.Header().Set("X-Backend", name)
		w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
		fmt.Printf("serving %d bytes to %s\n", n, r.RemoteAddr)
		if pace == 0 {
			_ = Payload(w, n)
			return
		}
		pw := &pacedWriter{w: w, rate: pace, start: time.Now(), chunk: int(chunk)}
		if f, ok := w.(http.Flusher); ok && chunk > 0 {
			pw.flush = f.Flush
		}
		_ = Payload(pw, n)
	}
	mux.HandleFunc("/bytes", serveBytes)
	mux.HandleFunc("/"+name+"/bytes", serveBytes)
	mux.HandleFunc("/upload", func(w http.ResponseWriter, r *http.Request) {
		// An upload's bytes and SHA-256, for traffic toward the backend.
		h := sha256.New()
		n, err := io.Copy(h, r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("X-Backend", name)
		fmt.Fprintf(w, "%d %s\n", n, hex.EncodeToString(h.Sum(nil)))
	})
	return mux
}

// serveShimHTTP: args name, listen address, the agent's hand-off
// socket. serveHTTP's server on the agent's listener shim, which yields
// ordinary connections and the connections migrated to this host alike.
func serveShimHTTP(args []string) error {
	if len(args) != 3 {
		return errors.New("want: name listen-address handoff-socket")
	}
	ln, err := shim.Listen("tcp", args[1], shim.Options{Socket: args[2], MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond})
	if err != nil {
		return err
	}
	return serveMux(ln, httpMux(args[0], nil))
}

// serveMux serves mux on ln until SIGTERM.
func serveMux(ln net.Listener, mux *http.ServeMux) error {
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go stopOnSignal(func() { srv.Close() })
	fmt.Println(Ready)
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func stopOnSignal(stop func()) {
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGTERM, os.Interrupt)
	<-c
	stop()
}

// ClientResult is what the client role prints, as JSON.
type ClientResult struct {
	Backends map[string]int `json:"backends"` // answers per backend name
	Errors   int            `json:"errors"`
	Resets   int            `json:"resets,omitempty"` // errors that were a reset by the peer
	FirstErr string         `json:"first_error,omitempty"`
	// FirstOther is the first error that was not a reset.
	FirstOther string `json:"first_other,omitempty"`
	SHA256     string `json:"sha256,omitempty"`
	Bytes      int64  `json:"bytes,omitempty"`
	// Failed are the local address:port of failed requests' connections
	// (at most maxFailed), for tests that predict which fail.
	Failed []string `json:"failed,omitempty"`
	// MaxStallMS is the longest any body stood still between two reads.
	MaxStallMS int64 `json:"max_stall_ms,omitempty"`
	// Transfers are the requests one by one, in the order they ended;
	// only with ClientTransfersEnv set in the role's environment.
	Transfers []ClientTransfer `json:"transfers,omitempty"`
}

// ClientTransfersEnv, set to 1 in the client role's environment, has it
// report every request (ClientResult.Transfers). SIGUSR1 then marks an
// instant (a unit's death): each transfer reports the gap between reads
// that spans it. Times are wall-clock Unix nanoseconds, comparable
// across the machine's processes.
const ClientTransfersEnv = "TETHER_E2E_CLIENT_TRANSFERS"

// ClientTransfer is one request of the client role.
type ClientTransfer struct {
	// Local is the connection's local address:port ("" when none was
	// made).
	Local string `json:"local,omitempty"`
	Bytes int64  `json:"bytes"`
	// OK: the answer was complete (and intact, for a payload).
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
	// StallNS is the longest the body stood still between two reads
	// that returned bytes (or from the answer's headers to the first),
	// and StallEndNS the read that ended it.
	StallNS    int64 `json:"stall_ns,omitempty"`
	StallEndNS int64 `json:"stall_end_ns,omitempty"`
	// MarkNS is when the role received SIGUSR1 (0: never, or after the
	// transfer ended); BeforeMarkNS is the last read with bytes before
	// it and AfterMarkNS the first after it (0: none, the transfer
	// ended or failed first).
	MarkNS       int64 `json:"mark_ns,omitempty"`
	BeforeMarkNS int64 `json:"before_mark_ns,omitempty"`
	AfterMarkNS  int64 `json:"after_mark_ns,omitempty"`
}

// clientMark is when the client role received SIGUSR1, in Unix
// nanoseconds (0: not yet).
var clientMark atomic.Int64

// maxFailed bounds ClientResult.Failed.
const maxFailed = 1000

// runClient: args url, connections, parallelism, and optionally source
// addresses (comma-separated) the connections take in turn. Each request
// uses a new connection (keep-alive off), so each is a new flow; for a
// URL ending in /bytes?n=N the body's SHA-256 is reported instead of
// counting names.
func runClient(args []string) error {
	if len(args) != 3 && len(args) != 4 {
		return errors.New("want: url connections parallelism [sources]")
	}
	url := args[0]
	conns, err1 := strconv.Atoi(args[1])
	par, err2 := strconv.Atoi(args[2])
	if err1 != nil || err2 != nil || conns < 1 || par < 1 {
		return errors.New("connections and parallelism must be positive integers")
	}
	var sources []net.Addr
	if len(args) == 4 {
		for a := range strings.SplitSeq(args[3], ",") {
			ip := net.ParseIP(a)
			if ip == nil {
				return fmt.Errorf("source %q: not an address", a)
			}
			sources = append(sources, &net.TCPAddr{IP: ip})
		}
	}
	// A request's bound is long: a download across a unit's restart
	// waits for the host's retransmission back-off (doubling from
	// 200 ms: 25, 51, then 102 s into an outage), and a test bounds
	// such a download itself (3 minutes).
	clients := []*http.Client{{
		Timeout:   170 * time.Second,
		Transport: &http.Transport{DisableKeepAlives: true, DialContext: (&net.Dialer{Timeout: 5 * time.Second}).DialContext},
	}}
	if len(sources) > 0 {
		clients = clients[:0]
		for _, src := range sources {
			clients = append(clients, &http.Client{
				Timeout:   170 * time.Second,
				Transport: &http.Transport{DisableKeepAlives: true, DialContext: (&net.Dialer{Timeout: 5 * time.Second, LocalAddr: src}).DialContext},
			})
		}
	}
	res := ClientResult{Backends: map[string]int{}}
	// A transfer of the payload role's bytes must arrive whole and
	// intact: anything else counts as an error.
	// The digest is computed when the first transfer ends, not before
	// the first dial: that of a large payload takes seconds in a race
	// build, which would delay every transfer that a test waits for.
	var wantN int64 = -1
	wantSum := func() string { return "" }
	if _, q, ok := strings.Cut(url, "/bytes?n="); ok {
		q, _, _ = strings.Cut(q, "&")
		if n, err := strconv.ParseInt(q, 10, 64); err == nil {
			wantN, wantSum = n, sync.OnceValue(func() string { return PayloadSHA256(n) })
		}
	}
	detail := os.Getenv(ClientTransfersEnv) == "1"
	if detail {
		marks := make(chan os.Signal, 1)
		signal.Notify(marks, syscall.SIGUSR1)
		go func() {
			for range marks {
				clientMark.CompareAndSwap(0, time.Now().UnixNano())
			}
		}()
	}
	var mu sync.Mutex
	jobs := make(chan int)
	var wg sync.WaitGroup
	for range par {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				rec := &transferRec{}
				name, sum, n, local, err := getRec(clients[i%len(clients)], url, rec)
				stall := rec.stall
				if err == nil && wantN >= 0 && (n != wantN || sum != wantSum()) {
					err = fmt.Errorf("transfer from %s: %d bytes, sha256 %s: want %d intact", name, n, sum, wantN)
				}
				mu.Lock()
				if detail {
					t := ClientTransfer{Local: local, Bytes: n, OK: err == nil, StallNS: stall.Nanoseconds(), StallEndNS: rec.stallEnd,
						MarkNS: rec.mark, BeforeMarkNS: rec.beforeMark, AfterMarkNS: rec.afterMark}
					if err != nil {
						t.Error = err.Error()
					}
					res.Transfers = append(res.Transfers, t)
				}
				res.MaxStallMS = max(res.MaxStallMS, stall.Milliseconds())
				if err != nil {
					res.Errors++
					if local != "" && len(res.Failed) < maxFailed {
						res.Failed = append(res.Failed, local)
					}
					if errors.Is(err, syscall.ECONNRESET) {
						res.Resets++
					} else if res.FirstOther == "" {
						res.FirstOther = err.Error()
					}
					if res.FirstErr == "" {
						res.FirstErr = err.Error()
					}
				} else {
					res.Backends[name]++
					res.SHA256, res.Bytes = sum, n
				}
				mu.Unlock()
			}
		}()
	}
	for i := range conns {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	return json.NewEncoder(os.Stdout).Encode(res)
}

// getRec fetches url and says the backend that answered (X-Backend),
// the body's SHA-256 and length and the connection's local address:port
// ("" when none was made); rec gets the body's stalls.
func getRec(c *http.Client, url string, rec *transferRec) (name, sum string, n int64, local string, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 170*time.Second) // see runClient
	defer cancel()
	ctx = context.WithValue(ctx, stallKey{}, rec)
	ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) {
		local = i.Conn.LocalAddr().String()
	}})
	name, sum, n, err = getCtx(ctx, c, url)
	return name, sum, n, local, err
}

func getCtx(ctx context.Context, c *http.Client, url string) (name, sum string, n int64, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", "", 0, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return "", "", 0, err
	}
	defer resp.Body.Close()
	h := sha256.New()
	n, err = io.Copy(h, &stallReader{r: resp.Body, last: time.Now(), rec: stallOf(ctx)})
	if err != nil {
		return "", "", n, err
	}
	if resp.StatusCode != http.StatusOK {
		return "", "", n, fmt.Errorf("status %s", resp.Status)
	}
	return resp.Header.Get("X-Backend"), hex.EncodeToString(h.Sum(nil)), n, nil
}

// stallKey carries a request's *transferRec, where its body's stalls
// go.
type stallKey struct{}

func stallOf(ctx context.Context) *transferRec {
	if d, ok := ctx.Value(stallKey{}).(*transferRec); ok {
		return d
	}
	return new(transferRec)
}

// transferRec is what a stallReader records of a body: its longest wait
// between two reads and when it ended, and the reads around the client
// role's mark (clientMark), in Unix nanoseconds.
type transferRec struct {
	stall                       time.Duration
	stallEnd                    int64
	mark, beforeMark, afterMark int64
}

// stallReader records the longest wait between reads that returned
// bytes: how long a transfer stood still (a unit's death, until a
// survivor carries the connection on).
type stallReader struct {
	r    io.Reader
	last time.Time
	rec  *transferRec
}

func (s *stallReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if n > 0 {
		now := time.Now()
		if d := now.Sub(s.last); d > s.rec.stall {
			s.rec.stall, s.rec.stallEnd = d, now.UnixNano()
		}
		if m := clientMark.Load(); m != 0 && s.rec.afterMark == 0 {
			if now.UnixNano() >= m {
				s.rec.mark, s.rec.beforeMark, s.rec.afterMark = m, s.last.UnixNano(), now.UnixNano()
			}
		}
		s.last = now
	}
	return n, err
}

// decapIPIP: args tun-name. It receives IPv4-in-IPv4 packets addressed to
// this namespace on a raw socket and writes the inner packet to a TUN
// device, so that the namespace's kernel receives what the client sent,
// as an ipip-capable kernel would. (The agent of a later issue grows from
// this.)
func decapIPIP(args []string) error {
	if len(args) != 1 {
		return errors.New("want: tun-name")
	}
	// IPv4-in-IPv4 arrives on an IPv4 raw socket with its outer header,
	// IPv6-in-IPv6 on an IPv6 one without it (an IPv6 raw socket never
	// sees the IPv6 header).
	fd4, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_IPIP)
	if err != nil {
		return fmt.Errorf("raw socket: %w", err)
	}
	defer unix.Close(fd4)
	fd6, err := unix.Socket(unix.AF_INET6, unix.SOCK_RAW, unix.IPPROTO_IPV6)
	if err != nil {
		return fmt.Errorf("raw IPv6 socket: %w", err)
	}
	defer unix.Close(fd6)
	dev, err := tun.Open(tun.Config{Name: args[0]})
	if err != nil {
		return err
	}
	defer dev.Close()
	go stopOnSignal(func() { unix.Close(fd4); unix.Close(fd6); os.Exit(0) })
	fmt.Println(Ready)
	var mu sync.Mutex // one write to the device at a time
	decap := func(fd int, inner func(p []byte) []byte) error {
		buf := make([]byte, 65536)
		for {
			n, _, err := unix.Recvfrom(fd, buf, 0)
			if err != nil {
				if err == unix.EINTR {
					continue
				}
				return err
			}
			p := inner(buf[:n])
			if p == nil {
				continue
			}
			finishPartial(p)
			mu.Lock()
			err = dev.WriteRaw(p)
			mu.Unlock()
			if err != nil {
				return err
			}
		}
	}
	errc := make(chan error, 2)
	go func() {
		errc <- decap(fd4, func(p []byte) []byte {
			if len(p) < 20 {
				return nil
			}
			hl := int(p[0]&0x0f) * 4
			if hl < 20 || hl >= len(p) {
				return nil
			}
			return p[hl:]
		})
	}()
	go func() {
		errc <- decap(fd6, func(p []byte) []byte {
			if len(p) < header.IPv6Size || p[0]>>4 != 6 {
				return nil
			}
			return p
		})
	}()
	return <-errc
}

// finishPartial completes an inner TCP or UDP checksum left partial: the
// unit's packets keep a sender's partial checksum (nic.Offload), which a
// real ipip device leaves for the next one to finish but a raw socket
// hands over as it is. A raw socket does not say which packets are
// partial, so a checksum field holding exactly the pseudo-header's sum is
// taken for one; a complete checksum that happens to equal it is finished
// to the same value. A fragment is never partial (its sender finished the
// datagram's checksum before cutting it), and finishing one would corrupt
// it: a later fragment's bytes are data, and a first fragment's sum
// covers the whole datagram. Each try of a datagram is the same bytes, so
// such a mistake would lose every try.
func finishPartial(p []byte) {
	var proto uint8
	var src, dst, seg []byte
	switch {
	case len(p) >= header.IPv4MinSize && p[0]>>4 == 4:
		hl := int(p[0]&0x0f) * 4
		if hl > len(p) {
			return
		}
		if binary.BigEndian.Uint16(p[6:])&0x3fff != 0 {
			return // more fragments, or an offset
		}
		proto, src, dst, seg = p[9], p[12:16], p[16:20], p[hl:]
	case len(p) >= header.IPv6Size && p[0]>>4 == 6:
		// The unit's packets carry no extension headers; a fragment
		// header is one, so a fragment's next header is not TCP or UDP.
		proto, src, dst, seg = p[6], p[8:24], p[24:40], p[header.IPv6Size:]
	default:
		return
	}
	off := map[uint8]int{header.IPProtoTCP: 16, header.IPProtoUDP: 6}[proto]
	if off == 0 || off+2 > len(seg) {
		return
	}
	if binary.BigEndian.Uint16(seg[off:]) != header.Fold(header.PseudoHeaderSum(proto, src, dst, uint32(len(seg)))) {
		return
	}
	c := header.Checksum(seg, 0)
	if c == 0 && proto == header.IPProtoUDP {
		// UDP sends a zero sum as all ones: zero means no checksum,
		// which IPv6 receivers drop (RFC 8200 §8.1).
		c = 0xffff
	}
	binary.BigEndian.PutUint16(seg[off:], c)
}

// ConnLatency is what the connlat role prints, as JSON: the time from
// connect(2) to an established connection (a SYN out, its SYN-ACK back),
// in microseconds, per address, in the order the role was given them.
type ConnLatency struct {
	Addr   string  `json:"addr"`
	Count  int     `json:"count"`
	Errors int     `json:"errors"`
	P50    float64 `json:"p50_us"`
	P99    float64 `json:"p99_us"`
	Max    float64 `json:"max_us"`
}

// connLatency: args count, then addresses (host:port). It connects to
// each address in turn, count times, one connection at a time (so that
// one address's connections never queue behind another's), and closes
// each at once.
func connLatency(args []string) error {
	if len(args) < 2 {
		return errors.New("want: count, then addresses")
	}
	n, err := strconv.Atoi(args[0])
	if err != nil || n < 1 || n > 100000 {
		return errors.New("count: want 1 to 100000")
	}
	addrs := args[1:]
	times := make([][]time.Duration, len(addrs))
	errs := make([]int, len(addrs))
	for range n {
		for i, a := range addrs {
			start := time.Now()
			c, err := net.DialTimeout("tcp", a, 5*time.Second)
			d := time.Since(start)
			if err != nil {
				errs[i]++
				continue
			}
			times[i] = append(times[i], d)
			c.Close()
		}
	}
	var out []ConnLatency
	for i, a := range addrs {
		ts := times[i]
		slices.Sort(ts)
		r := ConnLatency{Addr: a, Count: len(ts), Errors: errs[i]}
		if len(ts) > 0 {
			us := func(q float64) float64 {
				return float64(ts[min(len(ts)-1, int(q*float64(len(ts))))].Nanoseconds()) / 1e3
			}
			r.P50, r.P99, r.Max = us(0.5), us(0.99), float64(ts[len(ts)-1].Nanoseconds())/1e3
		}
		out = append(out, r)
	}
	return json.NewEncoder(os.Stdout).Encode(out)
}

// pacedWriter writes at most rate bytes a second on average, in writes
// of at most chunk bytes (0: as they come), each flushed (when flush is
// set) before the pause that paces it.
type pacedWriter struct {
	w     io.Writer
	rate  int64
	start time.Time
	sent  int64
	chunk int
	flush func()
}

func (p *pacedWriter) Write(b []byte) (int, error) {
	total := 0
	for len(b) > 0 {
		part := b
		if p.chunk > 0 && len(part) > p.chunk {
			part = part[:p.chunk]
		}
		n, err := p.w.Write(part)
		total += n
		p.sent += int64(n)
		if err != nil {
			return total, err
		}
		if p.flush != nil {
			p.flush()
		}
		if due := time.Duration(p.sent * int64(time.Second) / p.rate); due > time.Since(p.start) {
			time.Sleep(due - time.Since(p.start))
		}
		b = b[n:]
	}
	return total, nil
}
