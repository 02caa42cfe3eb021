package request

import (
	"errors"
	"fmt"
	"strings"
)

// Bounds.
const (
	// MaxHead is the largest head Complete and Parse take: the
	// acceptor's window, which is also the most a Migrate carries to the
	// host (hostpb.MaxMigrateData).
	MaxHead = 64 << 10
	// MaxFields bounds a head's field lines. More is 431, not a reason
	// to grow a slice without end.
	MaxFields = 100
)

// The statuses a bad head gets.
const (
	StatusBadRequest          = 400
	StatusHeaderTooLarge      = 431
	StatusNotImplemented      = 501 // a transfer coding other than chunked
	StatusVersionNotSupported = 505 // not HTTP/1.x, HTTP/2's preface included
)

// Error is why a head is refused, and the status to answer with.
type Error struct {
	Status int
	Reason string
}

func (e *Error) Error() string { return fmt.Sprintf("http request: %d: %s", e.Status, e.Reason) }

// StatusOf is the status to answer err with: its Error's, 400 for any
// other error, 0 for nil.
func StatusOf(err error) int {
	var e *Error
	switch {
	case err == nil:
		return 0
	case errors.As(err, &e):
		return e.Status
	}
	return StatusBadRequest
}

func fail(status int, format string, args ...any) error {
	return &Error{Status: status, Reason: fmt.Sprintf(format, args...)}
}

// Complete reports whether data, the bytes a client has sent so far,
// holds a whole request head: headLen > 0 is its length through the
// blank line (bytes after it are the body or a pipelined request, and
// stay the caller's). status is 0 while more bytes are needed, or the
// status to answer a head that can never be good: 400 for bad syntax,
// 431 when no head ends within max bytes (or it has more than MaxFields
// fields), 505 for another HTTP version. max ≤ 0 or above MaxHead means
// MaxHead.
//
// Complete checks each line as it arrives, so a bad request is refused
// early, but it does not check what needs the whole head (Host, the
// framing fields): a complete head still goes through Parse. Complete
// keeps no state; call it again with the longer data.
func Complete(data []byte, max int) (headLen int, status int) {
	if max <= 0 || max > MaxHead {
		max = MaxHead
	}
	b := data
	if len(b) > max {
		b = b[:max]
	}
	n, _, st := scan(b)
	switch {
	case st != 0:
		return 0, st
	case n > 0:
		return n, 0
	case len(data) >= max:
		return 0, StatusHeaderTooLarge
	}
	return 0, 0
}

// Request is a parsed request head. Every string is a substring of one
// copy of the head, except Host when it had to be lowercased.
type Request struct {
	Method string
	// Target is the request target as sent; Path is its path (no
	// query; "*" for OPTIONS *, "" for CONNECT) and Query what follows
	// the first '?', both as sent: not percent-decoded nor normalized,
	// so that rules see the bytes the host will see.
	Target, Path, Query string
	// Version is "HTTP/1.0" or "HTTP/1.1" (any HTTP/1.x is read as
	// 1.1, RFC 9110 §2.5); Minor its minor number.
	Version string
	Minor   int
	// Authority is the Host field's value, or the target's authority
	// when the target has one (RFC 9112 §3.2.2: it wins over Host).
	Authority string
	// Host is Authority's host for matching: lowercase, without port,
	// brackets or a trailing dot. "" when the request named none
	// (HTTP/1.0 without Host, or an empty Host).
	Host string
	// Fields are the field lines in order, names as sent, values
	// without surrounding whitespace.
	Fields []Field
	// ContentLength is the body's length, -1 when the request has no
	// Content-Length. Chunked: the body is chunked.
	ContentLength int64
	Chunked       bool
}

// Field is one field line.
type Field struct {
	Name, Value string
}

// Header returns the value of the first field named name (in any case).
func (r *Request) Header(name string) (string, bool) {
	for i := range r.Fields {
		if strings.EqualFold(r.Fields[i].Name, name) {
			return r.Fields[i].Value, true
		}
	}
	return "", false
}

// Cookie returns the value of the first cookie named name (names are
// case-sensitive) in any Cookie field, without the double quotes a
// value may be wrapped in (RFC 6265 §4.2.1). Pairs are separated by
// ';' and optional whitespace; a pair without '=' is skipped.
func (r *Request) Cookie(name string) (string, bool) {
	for i := range r.Fields {
		if !strings.EqualFold(r.Fields[i].Name, "Cookie") {
			continue
		}
		for pair := range strings.SplitSeq(r.Fields[i].Value, ";") {
			k, v, ok := strings.Cut(strings.Trim(pair, " \t"), "=")
			if !ok || k != name {
				continue
			}
			if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
				v = v[1 : len(v)-1]
			}
			return v, true
		}
	}
	return "", false
}

// Parse parses a complete head, as Complete found it: through its blank
// line, nothing after. The error is an *Error with the status to answer.
//
// Beyond what Complete checks, it refuses (RFC 9112 §3.2, §6): an
// HTTP/1.1 request without exactly one Host, a Host or target authority
// that is not host[:port]; a Content-Length that is not digits, or
// several that disagree; Transfer-Encoding together with Content-Length,
// in an HTTP/1.0 request, not ending in chunked, or with chunked twice
// (400); and a transfer coding other than chunked (501: the unit cannot
// know how the host would frame it).
func Parse(head []byte) (Request, error) {
	if len(head) > MaxHead {
		return Request{}, fail(StatusHeaderTooLarge, "head of %d bytes, at most %d", len(head), MaxHead)
	}
	s := string(head) // the one copy every field is a substring of
	n, nf, st := scan(s)
	switch {
	case st != 0:
		return Request{}, fail(st, "%s", scanReason(st))
	case n == 0:
		return Request{}, fail(StatusBadRequest, "the head does not end with an empty line")
	case n != len(s):
		return Request{}, fail(StatusBadRequest, "%d bytes after the head", len(s)-n)
	}
	s = strings.TrimLeft(s, "\r\n") // empty lines before the request line
	eol := strings.Index(s, "\r\n")
	rl, _ := parseRequestLine(s[:eol])
	r := Request{Method: rl.method, Target: rl.target, Path: rl.path, Query: rl.query,
		Version: s[eol-8 : eol], Minor: rl.minor, ContentLength: -1, Fields: make([]Field, 0, nf)}
	if r.Minor > 1 {
		r.Version = "HTTP/1.1"
	}
	rest := s[eol+2 : len(s)-2]
	for rest != "" {
		line := rest
		if i := strings.Index(rest, "\r\n"); i >= 0 {
			line, rest = rest[:i], rest[i+2:]
		} else {
			rest = ""
		}
		name, value, _ := strings.Cut(line, ":")
		r.Fields = append(r.Fields, Field{Name: name, Value: strings.Trim(value, " \t")})
	}
	if err := r.host(rl.authority, rl.hasAuthority); err != nil {
		return Request{}, err
	}
	if err := r.framing(); err != nil {
		return Request{}, err
	}
	return r, nil
}

func scanReason(st int) string {
	switch st {
	case StatusHeaderTooLarge:
		return fmt.Sprintf("more than %d field lines", MaxFields)
	case StatusVersionNotSupported:
		return "not an HTTP/1.x request"
	}
	return "malformed request line or field line"
}

// host sets Authority and Host from the Host field and the target.
func (r *Request) host(authority string, fromTarget bool) error {
	count := 0
	for i := range r.Fields {
		f := &r.Fields[i]
		if !strings.EqualFold(f.Name, "Host") {
			continue
		}
		if count++; count > 1 {
			return fail(StatusBadRequest, "more than one Host field")
		}
		if _, _, ok := splitAuthority(f.Value); !ok {
			return fail(StatusBadRequest, "Host %q is not host[:port]", f.Value)
		}
		if !fromTarget {
			authority = f.Value
		}
	}
	if count == 0 && r.Minor >= 1 {
		return fail(StatusBadRequest, "an HTTP/1.1 request without Host")
	}
	r.Authority = authority
	host, _, _ := splitAuthority(authority)
	host = strings.TrimSuffix(host, ".")
	if strings.IndexFunc(host, func(c rune) bool { return 'A' <= c && c <= 'Z' }) >= 0 {
		host = strings.ToLower(host)
	}
	r.Host = host
	return nil
}

// framing reads Content-Length and Transfer-Encoding, refusing every
// combination two parsers could frame differently.
func (r *Request) framing() error {
	var te []string
	for i := range r.Fields {
		f := &r.Fields[i]
		switch {
		case strings.EqualFold(f.Name, "Content-Length"):
			// RFC 9110 §8.6: a list of identical values may stand
			// for one; anything else is an invalid length.
			for v := range strings.SplitSeq(f.Value, ",") {
				n, ok := parseLength(strings.Trim(v, " \t"))
				if !ok {
					return fail(StatusBadRequest, "Content-Length %q is not a length", f.Value)
				}
				if r.ContentLength >= 0 && n != r.ContentLength {
					return fail(StatusBadRequest, "Content-Length %d and %d disagree", r.ContentLength, n)
				}
				r.ContentLength = n
			}
		case strings.EqualFold(f.Name, "Transfer-Encoding"):
			te = append(te, f.Value)
		}
	}
	if te == nil {
		return nil
	}
	switch {
	case r.Minor == 0:
		return fail(StatusBadRequest, "Transfer-Encoding in an HTTP/1.0 request (RFC 9112 §6.1)")
	case r.ContentLength >= 0:
		return fail(StatusBadRequest, "both Transfer-Encoding and Content-Length (RFC 9112 §6.1)")
	}
	var codings []string
	for _, v := range te {
		for c := range strings.SplitSeq(v, ",") {
			if c = strings.Trim(c, " \t"); c == "" {
				continue // empty list elements are allowed (RFC 9110 §5.6.1)
			}
			if !isToken(c) {
				return fail(StatusBadRequest, "Transfer-Encoding %q: %q is not a coding", v, c)
			}
			codings = append(codings, c)
		}
	}
	chunked := 0
	for _, c := range codings {
		if strings.EqualFold(c, "chunked") {
			chunked++
		}
	}
	switch {
	case len(codings) == 0 || !strings.EqualFold(codings[len(codings)-1], "chunked"):
		return fail(StatusBadRequest, "Transfer-Encoding does not end with chunked: the body's length is unknown (RFC 9112 §6.3)")
	case chunked > 1:
		return fail(StatusBadRequest, "chunked applied more than once (RFC 9112 §7)")
	case len(codings) > 1:
		return fail(StatusNotImplemented, "transfer coding %q: only chunked is supported", codings[0])
	}
	r.Chunked = true
	return nil
}

// parseLength parses 1*DIGIT, at most 18 digits (so it fits an int64).
func parseLength(s string) (int64, bool) {
	if s == "" || len(s) > 18 {
		return 0, false
	}
	var n int64
	for i := 0; i < len(s); i++ {
		if !isDigit(s[i]) {
			return 0, false
		}
		n = n*10 + int64(s[i]-'0')
	}
	return n, true
}
