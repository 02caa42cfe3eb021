package request

import (
	"bytes"
	"testing"
)

// FuzzRequest: nothing panics, and Complete and Parse agree. A head
// Parse accepts is complete exactly at its end and never refused by a
// prefix; a head Complete finds is one Parse accepts or refuses with a
// status, never one it cannot frame; and data Complete refuses holds no
// head Parse would accept.
func FuzzRequest(f *testing.F) {
	for _, s := range []string{
		curl,
		"POST /f HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
		"GET http://a.example:8080/x?y HTTP/1.1\r\nHost: b\r\nCookie: backend=b; x=\"1\"\r\n\r\n",
		"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\n b\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
		"\r\nGET / HTTP/1.0\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		n, st := Complete(data, 0)
		if n < 0 || n > len(data) || (n > 0 && st != 0) {
			t.Fatalf("Complete = %d, %d for %d bytes", n, st, len(data))
		}
		if n > 0 {
			if !bytes.HasSuffix(data[:n], []byte("\r\n\r\n")) {
				t.Fatalf("head %q does not end with an empty line", data[:n])
			}
			if m, st2 := Complete(data[:n], 0); m != n || st2 != 0 {
				t.Fatalf("the head alone: Complete = %d, %d; want %d, 0", m, st2, n)
			}
			if _, err := Parse(data[:n]); err != nil {
				switch StatusOf(err) {
				case StatusBadRequest, StatusNotImplemented, StatusHeaderTooLarge, StatusVersionNotSupported:
				default:
					t.Fatalf("Parse: %v", err)
				}
			}
		}
		r, err := Parse(data)
		if err != nil {
			return
		}
		if st != 0 || n != len(data) {
			t.Fatalf("Parse accepted %q, Complete said %d, %d", data, n, st)
		}
		for k := 0; k < len(data); k++ {
			if m, st := Complete(data[:k], 0); m != 0 || st != 0 {
				t.Fatalf("prefix of %d bytes of an accepted head: %d, %d", k, m, st)
			}
		}
		if r.Host != "" && bytes.ContainsAny([]byte(r.Host), "ABCDEFGHIJKLMNOPQRSTUVWXYZ[]") {
			t.Fatalf("Host %q is not normalized", r.Host)
		}
		if len(r.Fields) > MaxFields {
			t.Fatalf("%d fields", len(r.Fields))
		}
	})
}
