package request

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

const curl = "GET /api/v1/items?id=3 HTTP/1.1\r\nHost: api.example.com\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n\r\n"

func TestParseGood(t *testing.T) {
	for _, tc := range []struct {
		name, head string
		want       Request // Fields compared by count only
		fields     int
	}{
		{"curl", curl, Request{Method: "GET", Target: "/api/v1/items?id=3", Path: "/api/v1/items", Query: "id=3",
			Version: "HTTP/1.1", Minor: 1, Authority: "api.example.com", Host: "api.example.com", ContentLength: -1}, 3},
		{"host with port and case", "GET / HTTP/1.1\r\nHOST: WWW.Example.COM.:8080\r\n\r\n", Request{Method: "GET", Target: "/", Path: "/",
			Version: "HTTP/1.1", Minor: 1, Authority: "WWW.Example.COM.:8080", Host: "www.example.com", ContentLength: -1}, 1},
		{"ipv6 host", "GET / HTTP/1.1\r\nHost: [2001:DB8::1]:80\r\n\r\n", Request{Method: "GET", Target: "/", Path: "/",
			Version: "HTTP/1.1", Minor: 1, Authority: "[2001:DB8::1]:80", Host: "2001:db8::1", ContentLength: -1}, 1},
		{"absolute form wins over Host", "GET HTTP://Other.example/x/y?z HTTP/1.1\r\nHost: api.example.com\r\n\r\n", Request{Method: "GET",
			Target: "HTTP://Other.example/x/y?z", Path: "/x/y", Query: "z", Version: "HTTP/1.1", Minor: 1,
			Authority: "Other.example", Host: "other.example", ContentLength: -1}, 1},
		{"absolute form without path", "GET https://a.example HTTP/1.1\r\nHost: a.example\r\n\r\n", Request{Method: "GET",
			Target: "https://a.example", Path: "/", Version: "HTTP/1.1", Minor: 1, Authority: "a.example", Host: "a.example", ContentLength: -1}, 1},
		{"HTTP/1.0 without Host", "GET /x HTTP/1.0\r\n\r\n", Request{Method: "GET", Target: "/x", Path: "/x",
			Version: "HTTP/1.0", Minor: 0, ContentLength: -1}, 0},
		{"HTTP/1.2 reads as 1.1", "GET / HTTP/1.2\r\nHost: a\r\n\r\n", Request{Method: "GET", Target: "/", Path: "/",
			Version: "HTTP/1.1", Minor: 2, Authority: "a", Host: "a", ContentLength: -1}, 1},
		{"empty lines before the request line", "\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", Request{Method: "GET", Target: "/", Path: "/",
			Version: "HTTP/1.1", Minor: 1, Authority: "a", Host: "a", ContentLength: -1}, 1},
		{"identical lengths", "POST /f HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\ncontent-length: 5, 5\r\n\r\n", Request{Method: "POST", Target: "/f",
			Path: "/f", Version: "HTTP/1.1", Minor: 1, Authority: "a", Host: "a", ContentLength: 5}, 3},
		{"chunked", "POST /f HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: ,Chunked\r\n\r\n", Request{Method: "POST", Target: "/f",
			Path: "/f", Version: "HTTP/1.1", Minor: 1, Authority: "a", Host: "a", ContentLength: -1, Chunked: true}, 2},
		{"options asterisk", "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", Request{Method: "OPTIONS", Target: "*", Path: "*",
			Version: "HTTP/1.1", Minor: 1, Authority: "a", Host: "a", ContentLength: -1}, 1},
		{"connect", "CONNECT db.example:5432 HTTP/1.1\r\nHost: db.example:5432\r\n\r\n", Request{Method: "CONNECT", Target: "db.example:5432",
			Version: "HTTP/1.1", Minor: 1, Authority: "db.example:5432", Host: "db.example", ContentLength: -1}, 1},
		{"empty Host", "GET / HTTP/1.1\r\nHost:\r\n\r\n", Request{Method: "GET", Target: "/", Path: "/",
			Version: "HTTP/1.1", Minor: 1, ContentLength: -1}, 1},
		{"obs-text and tabs in a value", "GET / HTTP/1.1\r\nHost: a\r\nX-Name:\t caf\xc3\xa9 \t\r\n\r\n", Request{Method: "GET", Target: "/", Path: "/",
			Version: "HTTP/1.1", Minor: 1, Authority: "a", Host: "a", ContentLength: -1}, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := Parse([]byte(tc.head))
			if err != nil {
				t.Fatal(err)
			}
			if len(r.Fields) != tc.fields {
				t.Errorf("%d fields, want %d: %q", len(r.Fields), tc.fields, r.Fields)
			}
			r.Fields, tc.want.Fields = nil, nil
			if !reflect.DeepEqual(r, tc.want) {
				t.Errorf("got  %+v\nwant %+v", r, tc.want)
			}
			if n, st := Complete([]byte(tc.head), 0); n != len(tc.head) || st != 0 {
				t.Errorf("Complete = %d, %d; want %d, 0", n, st, len(tc.head))
			}
		})
	}
}

func TestParseBad(t *testing.T) {
	const host = "Host: a\r\n"
	for _, tc := range []struct {
		name, head string
		status     int
	}{
		{"obs-fold", "GET / HTTP/1.1\r\n" + host + "X-A: 1\r\n 2\r\n\r\n", 400},
		{"obs-fold with tab", "GET / HTTP/1.1\r\n" + host + "X-A: 1\r\n\t2\r\n\r\n", 400},
		{"bare CR in a value", "GET / HTTP/1.1\r\n" + host + "X-A: 1\r2\r\n\r\n", 400},
		{"bare CR in the request line", "GET /\r HTTP/1.1\r\n" + host + "\r\n", 400},
		{"bare LF", "GET / HTTP/1.1\n" + host + "\r\n", 400},
		{"bare LF ending the head", "GET / HTTP/1.1\r\n" + host + "\n", 400},
		{"NUL in a value", "GET / HTTP/1.1\r\n" + host + "X-A: \x00\r\n\r\n", 400},
		{"space before colon", "GET / HTTP/1.1\r\n" + host + "Content-Length : 5\r\n\r\n", 400},
		{"no colon", "GET / HTTP/1.1\r\n" + host + "X-A\r\n\r\n", 400},
		{"empty name", "GET / HTTP/1.1\r\n" + host + ": x\r\n\r\n", 400},
		{"bad name", "GET / HTTP/1.1\r\n" + host + "X(A): x\r\n\r\n", 400},
		{"lengths disagree", "POST / HTTP/1.1\r\n" + host + "Content-Length: 5\r\nContent-Length: 6\r\n\r\n", 400},
		{"length list disagrees", "POST / HTTP/1.1\r\n" + host + "Content-Length: 5, 6\r\n\r\n", 400},
		{"signed length", "POST / HTTP/1.1\r\n" + host + "Content-Length: +5\r\n\r\n", 400},
		{"huge length", "POST / HTTP/1.1\r\n" + host + "Content-Length: 1234567890123456789\r\n\r\n", 400},
		{"empty length", "POST / HTTP/1.1\r\n" + host + "Content-Length:\r\n\r\n", 400},
		{"length and chunked", "POST / HTTP/1.1\r\n" + host + "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", 400},
		{"chunked in HTTP/1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400},
		{"chunked not last", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked, gzip\r\n\r\n", 400},
		{"chunked twice", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 400},
		{"empty coding", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: \r\n\r\n", 400},
		{"coding with junk", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: \"chunked\"\r\n\r\n", 400},
		{"coding with a space", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: x chunked\r\n\r\n", 400},
		{"gzip then chunked", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: gzip, chunked\r\n\r\n", 501},
		{"no Host", "GET / HTTP/1.1\r\n\r\n", 400},
		{"two Hosts", "GET / HTTP/1.1\r\n" + host + "host: b\r\n\r\n", 400},
		{"Host with userinfo", "GET / HTTP/1.1\r\nHost: u@a\r\n\r\n", 400},
		{"Host with a path", "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400},
		{"Host with a bad port", "GET / HTTP/1.1\r\nHost: a:8x\r\n\r\n", 400},
		{"Host with a port too large", "GET / HTTP/1.1\r\nHost: a:65536\r\n\r\n", 400},
		{"Host with an unclosed bracket", "GET / HTTP/1.1\r\nHost: [::1\r\n\r\n", 400},
		{"Host with a bracketed name", "GET / HTTP/1.1\r\nHost: [a.b]\r\n\r\n", 400},
		{"two spaces", "GET  / HTTP/1.1\r\n" + host + "\r\n", 400},
		{"trailing space", "GET / HTTP/1.1 \r\n" + host + "\r\n", 400},
		{"tab separator", "GET\t/ HTTP/1.1\r\n" + host + "\r\n", 400},
		{"no version", "GET /\r\n\r\n", 400},
		{"lowercase version", "GET / http/1.1\r\n" + host + "\r\n", 400},
		{"long version", "GET / HTTP/1.10\r\n" + host + "\r\n", 400},
		{"HTTP/2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505},
		{"HTTP/0.9", "GET / HTTP/0.9\r\n\r\n", 505},
		{"HTTP/3", "GET / HTTP/3.0\r\n" + host + "\r\n", 505},
		{"bad method", "G(T / HTTP/1.1\r\n" + host + "\r\n", 400},
		{"fragment", "GET /a#b HTTP/1.1\r\n" + host + "\r\n", 400},
		{"non-ASCII target", "GET /caf\xc3\xa9 HTTP/1.1\r\n" + host + "\r\n", 400},
		{"relative target", "GET a/b HTTP/1.1\r\n" + host + "\r\n", 400},
		{"ftp target", "GET ftp://a/b HTTP/1.1\r\n" + host + "\r\n", 400},
		{"absolute target without host", "GET http:///b HTTP/1.1\r\n" + host + "\r\n", 400},
		{"absolute target with userinfo", "GET http://u@a/b HTTP/1.1\r\n" + host + "\r\n", 400},
		{"asterisk with GET", "GET * HTTP/1.1\r\n" + host + "\r\n", 400},
		{"connect without port", "CONNECT a HTTP/1.1\r\n" + host + "\r\n", 400},
		{"too many fields", "GET / HTTP/1.1\r\n" + host + strings.Repeat("X-A: 1\r\n", MaxFields) + "\r\n", 431},
		{"too large", "GET / HTTP/1.1\r\n" + host + "X-A: " + strings.Repeat("a", MaxHead) + "\r\n\r\n", 431},
		{"bytes after the head", "GET / HTTP/1.1\r\n" + host + "\r\nbody", 400},
		{"incomplete", "GET / HTTP/1.1\r\n" + host, 400},
		{"empty", "", 400},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.head))
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("error %v, want an *Error", err)
			}
			if e.Status != tc.status || StatusOf(err) != tc.status {
				t.Fatalf("status %d (%v), want %d", e.Status, err, tc.status)
			}
		})
	}
}

// TestComplete feeds heads a byte at a time, as a slow client sends
// them: a good head is incomplete until its last byte, and a bad one is
// refused at the first byte that makes it bad, never before.
func TestComplete(t *testing.T) {
	for _, tc := range []struct {
		name, data string
		max        int
		n, status  int // what the whole data gives
		from       int // the length of the shortest prefix refused (status != 0)
	}{
		{"curl", curl, 0, len(curl), 0, 0},
		{"curl with a body after it", curl + "{\"a\":1}", 0, len(curl), 0, 0},
		{"pipelined", curl + curl, 0, len(curl), 0, 0},
		{"TLS ClientHello", "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 0, 0, 400, 1},
		{"HTTP/2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 0, 0, 505, 16},
		{"bare LF", "GET / HTTP/1.1\nHost: a\r\n\r\n", 0, 0, 400, 15},
		{"bare CR", "GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n", 0, 0, 400, 25},
		{"obs-fold", "GET / HTTP/1.1\r\nHost: a\r\n b\r\n\r\n", 0, 0, 400, 26},
		{"NUL", "GET / HTTP/1.1\r\nHost: \x00\r\n\r\n", 0, 0, 400, 23},
		{"head at the bound", curl, len(curl), len(curl), 0, 0},
		{"head past the bound", curl, len(curl) - 1, 0, 431, len(curl) - 1},
		{"too many fields", "GET / HTTP/1.1\r\n" + strings.Repeat("A: 1\r\n", MaxFields+1), 0, 0, 431, 16 + 6*(MaxFields+1)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if n, st := Complete([]byte(tc.data), tc.max); n != tc.n || st != tc.status {
				t.Fatalf("Complete = %d, %d; want %d, %d", n, st, tc.n, tc.status)
			}
			for k := 0; k < len(tc.data); k++ {
				n, st := Complete([]byte(tc.data[:k]), tc.max)
				refused := tc.status != 0 && k >= tc.from
				switch {
				case refused && (n != 0 || st != tc.status):
					t.Fatalf("prefix of %d bytes: %d, %d; want 0, %d", k, n, st, tc.status)
				case !refused && tc.n > 0 && k >= tc.n && (n != tc.n || st != 0):
					t.Fatalf("prefix of %d bytes: %d, %d; want %d, 0", k, n, st, tc.n)
				case !refused && (tc.n == 0 || k < tc.n) && (n != 0 || st != 0):
					t.Fatalf("prefix of %d bytes: %d, %d; want 0, 0 (more bytes)", k, n, st)
				}
			}
		})
	}
}

func TestCompleteBound(t *testing.T) {
	long := []byte("GET / HTTP/1.1\r\nHost: a\r\nX-A: " + strings.Repeat("a", 100))
	if _, st := Complete(long, 64); st != 431 {
		t.Errorf("past a 64-byte bound: status %d, want 431", st)
	}
	if n, st := Complete(long, 1<<20); n != 0 || st != 0 {
		t.Errorf("a bound above MaxHead is MaxHead: %d, %d; want 0, 0", n, st)
	}
	huge := []byte("GET / HTTP/1.1\r\nX-A: " + strings.Repeat("a", MaxHead))
	if _, st := Complete(huge, 0); st != 431 {
		t.Errorf("past MaxHead: status %d, want 431", st)
	}
}

func TestCookieAndHeader(t *testing.T) {
	r, err := Parse([]byte("GET / HTTP/1.1\r\nHost: a\r\nCookie: a=1; backend=b\r\nX-Tenant: blue\r\ncookie: c=\"q\";d;e=;backend=z\r\n\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, value string
		ok          bool
	}{
		{"a", "1", true}, {"backend", "b", true}, {"c", "q", true}, {"e", "", true},
		{"d", "", false}, {"Backend", "", false}, {"x", "", false},
	} {
		if v, ok := r.Cookie(tc.name); v != tc.value || ok != tc.ok {
			t.Errorf("Cookie(%q) = %q, %v; want %q, %v", tc.name, v, ok, tc.value, tc.ok)
		}
	}
	if v, ok := r.Header("x-tenant"); v != "blue" || !ok {
		t.Errorf("Header(x-tenant) = %q, %v", v, ok)
	}
	if _, ok := r.Header("X-Missing"); ok {
		t.Error("Header found a field that is not there")
	}
}

func TestStatusOf(t *testing.T) {
	if StatusOf(nil) != 0 || StatusOf(errors.New("x")) != 400 || StatusOf(&Error{Status: 505}) != 505 {
		t.Error("StatusOf")
	}
}

func BenchmarkParseCurl(b *testing.B) {
	head := []byte(curl)
	b.ReportAllocs()
	b.SetBytes(int64(len(head)))
	for b.Loop() {
		if _, err := Parse(head); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCompleteCurl(b *testing.B) {
	head := []byte(curl)
	b.ReportAllocs()
	b.SetBytes(int64(len(head)))
	for b.Loop() {
		if n, _ := Complete(head, 0); n != len(head) {
			b.Fatal(n)
		}
	}
}

// TestParseAllocs: a curl head costs two allocations (the copy of the
// head and the fields), Complete none.
func TestParseAllocs(t *testing.T) {
	head := []byte(curl)
	if n := testing.AllocsPerRun(100, func() { _, _ = Parse(head) }); n > 2 {
		t.Errorf("Parse: %v allocations, want at most 2", n)
	}
	if n := testing.AllocsPerRun(100, func() { _, _ = Complete(head, 0) }); n != 0 {
		t.Errorf("Complete: %v allocations, want 0", n)
	}
}
