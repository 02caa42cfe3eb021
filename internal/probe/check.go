package probe

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Check types.
const (
	TypeTCP  = "tcp"
	TypeHTTP = "http"
	TypeExec = "exec"
)

// Defaults and limits. The short default interval is what lets a failure
// reach the units within about a second (fall 2 × 250ms plus delivery):
// a local probe costs one connect, so checking often is cheap.
const (
	DefaultInterval = 250 * time.Millisecond
	DefaultTimeout  = 200 * time.Millisecond
	DefaultRise     = 2
	DefaultFall     = 2
	DefaultPath     = "/"
	DefaultExpect   = http.StatusOK

	MinInterval = 10 * time.Millisecond
	MaxInterval = time.Hour
	MaxRiseFall = 100
)

// Spec describes one check.
type Spec struct {
	// Type is TypeTCP, TypeHTTP or TypeExec.
	Type string
	// Target is the host:port to connect to (tcp, http); the host is an
	// IP address or a name. Exec ignores it.
	Target string
	// Path is the HTTP request's path (and query), default "/".
	Path string
	// Host is the HTTP Host header; empty means Target.
	Host string
	// Expect is the HTTP status that means healthy, default 200. It is
	// compared with the status as answered: redirects are not followed.
	Expect int
	// Command is an exec check's argv; exit status 0 means healthy.
	Command []string
	// Interval is the time between the starts of two probes.
	Interval time.Duration
	// Timeout bounds each probe; at most Interval, so probes never
	// overlap and never queue.
	Timeout time.Duration
	// Rise consecutive successes turn the health Healthy, Fall
	// consecutive failures turn it Failing.
	Rise int
	Fall int
}

// Defaults returns s with its zero fields set to the defaults: interval
// 250ms, timeout 200ms (or the interval, if that is shorter, so that a
// short interval alone is a valid spec), rise 2, fall 2, and for http
// path "/" and expect 200. Host stays empty: it then follows Target.
// Negative values are left for Validate to reject.
func (s Spec) Defaults() Spec {
	if s.Type == TypeHTTP {
		if s.Path == "" {
			s.Path = DefaultPath
		}
		if s.Expect == 0 {
			s.Expect = DefaultExpect
		}
	}
	if s.Interval == 0 {
		s.Interval = DefaultInterval
	}
	if s.Timeout == 0 {
		s.Timeout = DefaultTimeout
		if s.Interval > 0 && s.Interval < s.Timeout {
			s.Timeout = s.Interval
		}
	}
	if s.Rise == 0 {
		s.Rise = DefaultRise
	}
	if s.Fall == 0 {
		s.Fall = DefaultFall
	}
	return s
}

// Validate reports the first problem of s as an error naming the field,
// the value and why, e.g.
//
//	check.timeout: "5s": must not exceed check.interval (1s)
//
// Call it on a spec that went through Defaults: zero values are errors
// here.
func (s Spec) Validate() error {
	switch s.Type {
	case TypeTCP, TypeHTTP:
		if why := targetProblem(s.Target); why != "" {
			return invalid("target", s.Target, why)
		}
	case TypeExec:
		if len(s.Command) == 0 || s.Command[0] == "" {
			return invalid("command", strings.Join(s.Command, " "), "an exec check needs a command")
		}
		for _, arg := range s.Command {
			if strings.IndexByte(arg, 0) >= 0 {
				return invalid("command", strings.Join(s.Command, " "), "must not contain NUL bytes")
			}
		}
	default:
		return invalid("type", s.Type, "must be tcp, http or exec")
	}
	if s.Type == TypeHTTP {
		if !strings.HasPrefix(s.Path, "/") {
			return invalid("path", s.Path, "must start with /")
		}
		if _, err := requestURL(s.Target, s.Path); err != nil {
			return invalid("path", s.Path, fmt.Sprintf("not a valid request path: %v", err))
		}
		if s.Host != "" && !validHostHeader(s.Host) {
			return invalid("host", s.Host, "must be a host or host:port without spaces or control characters")
		}
		if s.Expect < 100 || s.Expect > 599 {
			return invalid("expect", s.Expect, "must be an HTTP status from 100 to 599")
		}
	}
	if s.Interval < MinInterval || s.Interval > MaxInterval {
		return invalid("interval", s.Interval, fmt.Sprintf("must be between %s and %s", MinInterval, MaxInterval))
	}
	if s.Timeout <= 0 {
		return invalid("timeout", s.Timeout, "must be positive")
	}
	if s.Timeout > s.Interval {
		return invalid("timeout", s.Timeout, fmt.Sprintf("must not exceed check.interval (%s)", s.Interval))
	}
	if s.Rise < 1 || s.Rise > MaxRiseFall {
		return invalid("rise", s.Rise, fmt.Sprintf("must be between 1 and %d", MaxRiseFall))
	}
	if s.Fall < 1 || s.Fall > MaxRiseFall {
		return invalid("fall", s.Fall, fmt.Sprintf("must be between 1 and %d", MaxRiseFall))
	}
	return nil
}

// invalid formats a validation error the way the configuration reports
// its own: key, quoted value, reason.
func invalid(field string, value any, why string) error {
	return fmt.Errorf("check.%s: %q: %s", field, fmt.Sprint(value), why)
}

// targetProblem says what is wrong with a tcp or http target, or "".
// The target must be in canonical host:port form (what net.JoinHostPort
// would write) because it is used verbatim, both to dial and in the URL.
func targetProblem(target string) string {
	const want = "want host:port with an IP address or name and a port from 1 to 65535"
	host, port, err := net.SplitHostPort(target)
	if err != nil {
		return want
	}
	if net.JoinHostPort(host, port) != target {
		return want + " (brackets only around an IPv6 address)"
	}
	if len(port) == 0 || len(port) > 5 || strings.Trim(port, "0123456789") != "" {
		return want
	}
	if p, _ := strconv.Atoi(port); p < 1 || p > 65535 {
		return want
	}
	if !validHost(host) {
		return want
	}
	return ""
}

// validHost reports whether h is an IP address (an IPv6 one may carry a
// zone) or a DNS name: dot-separated labels of letters, digits, '-' and
// '_', whose last label is not all digits (that would be a mistyped
// IPv4 address, which a resolver might otherwise try to look up).
func validHost(h string) bool {
	if _, err := netip.ParseAddr(h); err == nil {
		return true
	}
	name := strings.TrimSuffix(h, ".")
	if name == "" || len(name) > 253 {
		return false
	}
	labels := strings.Split(name, ".")
	for _, l := range labels {
		if l == "" || len(l) > 63 {
			return false
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return strings.Trim(labels[len(labels)-1], "0123456789") != ""
}

// validHostHeader reports whether h can be sent as a Host header: printable
// ASCII without spaces, and not absurdly long.
func validHostHeader(h string) bool {
	if len(h) > 255 {
		return false
	}
	for i := 0; i < len(h); i++ {
		if h[i] <= ' ' || h[i] >= 0x7f || h[i] == '/' {
			return false
		}
	}
	return true
}

// requestURL is the URL an http check requests. Building it from parts
// rather than by concatenation keeps an IPv6 zone ("%eth0") from being
// read as a percent escape.
func requestURL(target, path string) (string, error) {
	u, err := url.ParseRequestURI(path)
	if err != nil {
		return "", err
	}
	u.Scheme, u.Host = "http", target
	return u.String(), nil
}

// Health is a checked state.
type Health int

// Healths. The zero value is Unknown: nothing has been checked yet.
const (
	Unknown Health = iota
	Healthy
	Failing
)

func (h Health) String() string {
	switch h {
	case Unknown:
		return "unknown"
	case Healthy:
		return "healthy"
	case Failing:
		return "failing"
	}
	return "health(" + strconv.Itoa(int(h)) + ")"
}

// Result is one probe's outcome.
type Result struct {
	OK bool
	// Detail says why, briefly: "ok", "connect: connection refused",
	// "status 503, want 200", "exit status 1: not ready",
	// "timeout after 200ms".
	Detail string
	// Latency is how long the probe took.
	Latency time.Duration
	// At is when the probe started.
	At time.Time
}
