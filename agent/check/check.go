package check

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Check types.
const (
	TypeTCP  = "tcp"
	TypeHTTP = "http"
	TypeExec = "exec"
)

// Spec describes one check.
type Spec struct {
	Type string
	// Target is the address:port to connect to (tcp, http).
	Target string
	// Path is the HTTP request's path; Host its Host header (default
	// Target); Expect the status that means healthy.
	Path   string
	Host   string
	Expect int
	// Command runs for exec; exit status 0 means healthy.
	Command []string
	// Interval between probes; Timeout of each, at most Interval.
	Interval time.Duration
	Timeout  time.Duration
	// Rise consecutive successes make it healthy, Fall consecutive
	// failures failing.
	Rise int
	Fall int
}

// Defaults returns s with its zero fields set to the defaults: path /,
// expect 200, interval 250ms, timeout 200ms, rise 2, fall 2. The short
// interval is what lets a failure reach the units within a second: a
// local probe costs a connect.
func (s Spec) Defaults() Spec {
	if s.Type == TypeHTTP && s.Path == "" {
		s.Path = "/"
	}
	if s.Type == TypeHTTP && s.Expect == 0 {
		s.Expect = http.StatusOK
	}
	if s.Interval == 0 {
		s.Interval = 250 * time.Millisecond
	}
	if s.Timeout == 0 {
		s.Timeout = min(200*time.Millisecond, s.Interval)
	}
	if s.Rise == 0 {
		s.Rise = 2
	}
	if s.Fall == 0 {
		s.Fall = 2
	}
	return s
}

// Validate reports the first problem of a spec (after Defaults), naming
// the field, the value and why.
func (s Spec) Validate() error {
	bad := func(field string, v any, why string, args ...any) error {
		return fmt.Errorf("check.%s: %q: %s", field, fmt.Sprint(v), fmt.Sprintf(why, args...))
	}
	switch s.Type {
	case TypeTCP, TypeHTTP:
		host, port, err := net.SplitHostPort(s.Target)
		if p, perr := strconv.Atoi(port); err != nil || host == "" || perr != nil || p < 1 || p > 65535 {
			return bad("target", s.Target, "want host:port with a port from 1 to 65535")
		}
	case TypeExec:
		if len(s.Command) == 0 || s.Command[0] == "" {
			return bad("command", strings.Join(s.Command, " "), "an exec check needs a command")
		}
	default:
		return bad("type", s.Type, "must be tcp, http or exec")
	}
	if s.Type == TypeHTTP {
		if !strings.HasPrefix(s.Path, "/") {
			return bad("path", s.Path, "must start with /")
		}
		if s.Expect < 100 || s.Expect > 599 {
			return bad("expect", s.Expect, "must be an HTTP status from 100 to 599")
		}
	}
	if s.Interval < 10*time.Millisecond || s.Interval > time.Hour {
		return bad("interval", s.Interval, "must be between 10ms and 1h")
	}
	if s.Timeout <= 0 || s.Timeout > s.Interval {
		return bad("timeout", s.Timeout, "must be above 0 and not exceed check.interval (%s)", s.Interval)
	}
	if s.Rise < 1 || s.Rise > 100 {
		return bad("rise", s.Rise, "must be between 1 and 100")
	}
	if s.Fall < 1 || s.Fall > 100 {
		return bad("fall", s.Fall, "must be between 1 and 100")
	}
	return nil
}

// Health is a checked state.
type Health int

// Healths.
const (
	Unknown Health = iota
	Healthy
	Failing
)

func (h Health) String() string {
	switch h {
	case Healthy:
		return "healthy"
	case Failing:
		return "failing"
	}
	return "unknown"
}

// Result is one probe's outcome.
type Result struct {
	OK bool
	// Detail says why, briefly: "status 503, want 200".
	Detail  string
	Latency time.Duration
	At      time.Time
}

// prober runs one probe of a spec.
type prober struct {
	spec   Spec
	client *http.Client
}

func newProber(s Spec) *prober {
	p := &prober{spec: s}
	if s.Type == TypeHTTP {
		p.client = &http.Client{
			// A probe is one fresh connection: reusing one would test
			// the connection, not whether the server accepts new ones.
			Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil,
				DialContext: (&net.Dialer{}).DialContext},
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}
	return p
}

// Once runs a single probe with the spec's timeout.
func Once(ctx context.Context, s Spec) Result {
	return newProber(s.Defaults()).probe(ctx)
}

func (p *prober) probe(ctx context.Context) Result {
	s := p.spec
	ctx, cancel := context.WithTimeout(ctx, s.Timeout)
	defer cancel()
	start := time.Now()
	var detail string
	switch s.Type {
	case TypeTCP:
		detail = p.tcp(ctx)
	case TypeHTTP:
		detail = p.http(ctx)
	case TypeExec:
		detail = p.exec(ctx)
	default:
		detail = "unknown check type " + s.Type
	}
	r := Result{OK: detail == "", Detail: detail, Latency: time.Since(start), At: start}
	if r.OK {
		r.Detail = "ok"
	} else if ctx.Err() == context.DeadlineExceeded {
		r.Detail = fmt.Sprintf("timeout after %s: %s", s.Timeout, detail)
	}
	return r
}

func (p *prober) tcp(ctx context.Context) string {
	c, err := (&net.Dialer{}).DialContext(ctx, "tcp", p.spec.Target)
	if err != nil {
		return short(err)
	}
	c.Close()
	return ""
}

func (p *prober) http(ctx context.Context) string {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.spec.Target+p.spec.Path, nil)
	if err != nil {
		return err.Error()
	}
	if p.spec.Host != "" {
		req.Host = p.spec.Host
	}
	req.Header.Set("User-Agent", "tether-check")
	resp, err := p.client.Do(req)
	if err != nil {
		return short(err)
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode != p.spec.Expect {
		return fmt.Sprintf("status %d, want %d", resp.StatusCode, p.spec.Expect)
	}
	return ""
}

func (p *prober) exec(ctx context.Context) string {
	cmd := exec.CommandContext(ctx, p.spec.Command[0], p.spec.Command[1:]...)
	// Its own process group, killed whole on timeout: a shell script's
	// children must not outlive the probe.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 100 * time.Millisecond
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &capped{b: &out, n: 4096}, &capped{b: &out, n: 4096}
	if err := cmd.Run(); err != nil {
		line, _, _ := strings.Cut(strings.TrimSpace(out.String()), "\n")
		if line != "" {
			return fmt.Sprintf("%v: %s", err, line)
		}
		return err.Error()
	}
	return ""
}

// capped keeps the first n bytes written and accepts the rest unseen:
// failing the write would kill the command with SIGPIPE.
type capped struct {
	b *bytes.Buffer
	n int
}

func (c *capped) Write(p []byte) (int, error) {
	if room := c.n - c.b.Len(); room > 0 {
		c.b.Write(p[:min(room, len(p))])
	}
	return len(p), nil
}

// short trims an error to what an operator needs: "connect: connection
// refused" rather than the whole dial chain.
func short(err error) string {
	var op *net.OpError
	if errors.As(err, &op) && op.Err != nil {
		return op.Op + ": " + op.Err.Error()
	}
	return err.Error()
}

// Status is a checker's state.
type Status struct {
	Health           Health
	Last             Result
	Checks, Failures uint64
	// Since is the last change of Health.
	Since time.Time
}

// Checker probes a spec every interval and applies rise and fall.
type Checker struct {
	p        *prober
	onChange func(Health, Result)

	mu     sync.Mutex
	status Status
	streak int // consecutive results against the current health
}

// New returns a checker of s (defaults filled); onChange is called from
// the checker's goroutine whenever the health changes.
func New(s Spec, onChange func(Health, Result)) (*Checker, error) {
	s = s.Defaults()
	if err := s.Validate(); err != nil {
		return nil, err
	}
	if onChange == nil {
		onChange = func(Health, Result) {}
	}
	return &Checker{p: newProber(s), onChange: onChange, status: Status{Since: time.Now()}}, nil
}

// Run probes at once, then every interval, until ctx ends. Probes never
// overlap: a slow one delays the next.
func (c *Checker) Run(ctx context.Context) {
	t := time.NewTicker(c.p.spec.Interval)
	defer t.Stop()
	for ctx.Err() == nil {
		r := c.p.probe(ctx)
		if ctx.Err() != nil {
			return // a probe cut short by shutdown says nothing
		}
		if h, changed := c.record(r); changed {
			c.onChange(h, r)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// record applies one result; it returns the health and whether it
// changed.
func (c *Checker) record(r Result) (Health, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := &c.status
	st.Checks++
	if !r.OK {
		st.Failures++
	}
	st.Last = r
	want, need := Failing, c.p.spec.Fall
	if r.OK {
		want, need = Healthy, c.p.spec.Rise
	}
	switch {
	case st.Health == want:
		c.streak = 0
		return st.Health, false
	case st.Health == Unknown:
		need = 1 // the first result decides
	}
	if c.streak++; c.streak < need {
		return st.Health, false
	}
	st.Health, st.Since, c.streak = want, r.At, 0
	return want, true
}

// Status returns the checker's state.
func (c *Checker) Status() Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.status
}
