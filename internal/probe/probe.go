package probe

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
	"unicode"
)

const (
	// maxBody is how much of an HTTP answer is read: enough for any
	// health page, bounded so a misdirected check cannot stream a file.
	maxBody = 64 << 10
	// maxHeader bounds the HTTP response header for the same reason.
	maxHeader = 64 << 10
	// maxOutput is how much of an exec probe's output is kept.
	maxOutput = 4 << 10
	// maxLine is how much of that output goes into a Detail.
	maxLine = 200
	// waitDelay is how long an exec probe waits for its output pipes to
	// close after the process exited or was killed: a grandchild that
	// left the process group could otherwise hold them open forever.
	waitDelay = 100 * time.Millisecond
)

// prober runs the probes of one valid spec.
type prober struct {
	spec   Spec
	url    string       // http: the request URL
	client *http.Client // http: nil otherwise
}

// newProber returns a prober of s, which must be valid.
func newProber(s Spec) *prober {
	p := &prober{spec: s}
	if s.Type == TypeHTTP {
		p.url, _ = requestURL(s.Target, s.Path) // Validate checked it
		p.client = &http.Client{
			Transport: &http.Transport{
				// Proxies from the environment are for the operator's
				// shell, not for probing a backend: a probe through a
				// proxy tests the proxy.
				Proxy:       nil,
				DialContext: (&net.Dialer{Timeout: s.Timeout, KeepAlive: -1}).DialContext,
				// Every probe is a fresh connection: reusing one would
				// test that connection, not whether the server still
				// accepts new ones, which is what clients need.
				DisableKeepAlives:      true,
				DisableCompression:     true,
				MaxResponseHeaderBytes: maxHeader,
			},
			// The status is compared as answered: a redirect to a login
			// page is not a healthy health page.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}
	return p
}

// close releases the prober's resources. With keep-alives off there are
// no idle connections, but closing says so explicitly and costs nothing.
func (p *prober) close() {
	if p.client != nil {
		p.client.CloseIdleConnections()
	}
}

// Once runs a single probe of s (after Defaults) with its timeout. An
// invalid spec is a failed result saying why, not a panic.
func Once(ctx context.Context, s Spec) Result {
	if ctx == nil {
		ctx = context.Background() // a probe still has its own timeout
	}
	s = s.Defaults()
	if err := s.Validate(); err != nil {
		return Result{Detail: err.Error(), At: time.Now()}
	}
	p := newProber(s)
	defer p.close()
	return p.probe(ctx)
}

// probe runs one probe bounded by the spec's timeout.
func (p *prober) probe(parent context.Context) Result {
	ctx, cancel := context.WithTimeout(parent, p.spec.Timeout)
	defer cancel()
	start := time.Now()
	var err error
	switch p.spec.Type {
	case TypeTCP:
		err = p.tcp(ctx)
	case TypeHTTP:
		err = p.http(ctx)
	case TypeExec:
		err = p.exec(ctx)
	default:
		err = fmt.Errorf("unknown check type %q", p.spec.Type)
	}
	r := Result{OK: err == nil, Detail: "ok", Latency: time.Since(start), At: start}
	switch {
	case err == nil:
	case errors.Is(ctx.Err(), context.DeadlineExceeded) && parent.Err() == nil:
		// Whatever the error says ("i/o timeout", "signal: killed",
		// "context deadline exceeded"), the cause is the timeout.
		r.Detail = fmt.Sprintf("timeout after %s", p.spec.Timeout)
	default:
		r.Detail = describe(err)
	}
	return r
}

func (p *prober) tcp(ctx context.Context) error {
	c, err := (&net.Dialer{Timeout: p.spec.Timeout, KeepAlive: -1}).DialContext(ctx, "tcp", p.spec.Target)
	if err != nil {
		return err
	}
	// Connecting is the whole check; the close error says nothing about
	// the target's health.
	_ = c.Close()
	return nil
}

func (p *prober) http(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.url, nil)
	if err != nil {
		return fmt.Errorf("request: %w", err)
	}
	if p.spec.Host != "" {
		req.Host = p.spec.Host
	}
	req.Close = true // "Connection: close", matching DisableKeepAlives
	req.Header.Set("User-Agent", "tether-check")
	resp, err := p.client.Do(req)
	if err != nil {
		return err
	}
	// The status decides; the body is read (a little) only so that the
	// server sees its answer consumed rather than a reset, and not
	// checked, so a read error here is not a failure.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxBody))
	_ = resp.Body.Close()
	if resp.StatusCode != p.spec.Expect {
		return fmt.Errorf("status %d, want %d", resp.StatusCode, p.spec.Expect)
	}
	return nil
}

func (p *prober) exec(ctx context.Context) error {
	argv := p.spec.Command
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	// Its own process group, so that the whole group can be killed: a
	// shell script's children must not outlive the probe.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		// Cancel runs only after a successful Start, so Process is set;
		// with Setpgid the group's id is the leader's pid.
		err := syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		if errors.Is(err, syscall.ESRCH) {
			// Everyone already exited: tell exec so, and it reports
			// the exit status rather than the cancellation.
			return os.ErrProcessDone
		}
		return err
	}
	cmd.WaitDelay = waitDelay
	// Stdin is nil: the command reads /dev/null, not the daemon's stdin.
	// One writer for both streams: exec then uses a single pipe and a
	// single copying goroutine, so the buffer needs no lock.
	out := &capped{max: maxOutput}
	cmd.Stdout, cmd.Stderr = out, out
	err := cmd.Run()
	if cmd.Process != nil {
		// The leader is gone now (reaped by Run); anything it left
		// running in its group goes too. The kernel does not reuse a
		// pid while it names a live group, so this reaches the
		// stragglers; if there are none it is ESRCH (barring the pid
		// wrapping around within microseconds into a new group leader).
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	if errors.Is(err, exec.ErrWaitDelay) {
		// The command exited 0 but a child kept its output open: the
		// exit status is the verdict, the straggler has been killed.
		err = nil
	}
	if err == nil {
		return nil
	}
	if line := firstLine(out.buf); line != "" {
		return fmt.Errorf("%w: %s", err, line)
	}
	return err
}

// capped keeps the first max bytes written and accepts and drops the
// rest: failing the write would break the command's pipe and could kill
// it with SIGPIPE, changing the verdict.
type capped struct {
	buf []byte
	max int
}

func (c *capped) Write(p []byte) (int, error) {
	if room := c.max - len(c.buf); room > 0 {
		c.buf = append(c.buf, p[:min(room, len(p))]...)
	}
	return len(p), nil
}

// firstLine is the first non-blank line of out, made printable and cut to
// maxLine bytes, for a Detail.
func firstLine(out []byte) string {
	s := strings.TrimSpace(strings.ToValidUTF8(string(out), "?"))
	s, _, _ = strings.Cut(s, "\n")
	s = strings.Map(func(r rune) rune {
		if unicode.IsPrint(r) {
			return r
		}
		return '?'
	}, strings.TrimSpace(s))
	if len(s) > maxLine {
		s = strings.ToValidUTF8(s[:maxLine], "") + "..."
	}
	return s
}

// describe trims an error to what an operator needs: "connect: connection
// refused" rather than the URL and the whole dial chain.
func describe(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Err != nil {
		var sys *os.SyscallError
		if errors.As(op.Err, &sys) {
			return op.Err.Error() // names its syscall: "connect: ..."
		}
		return op.Op + ": " + op.Err.Error()
	}
	return err.Error()
}
