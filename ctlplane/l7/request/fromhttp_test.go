package request

import (
	"bufio"
	"net/http"
	"strings"
	"testing"
)

// TestFromHTTP: a head read by net/http gives the rules what Parse
// gives them for the same bytes.
func TestFromHTTP(t *testing.T) {
	for _, head := range []string{
		"GET /api/v1?x=1 HTTP/1.1\r\nHost: API.Example.com:8080\r\nCookie: a=1; backend=b\r\nX-Tenant: blue\r\n\r\n",
		"GET http://other.example/p/q HTTP/1.1\r\nHost: ignored.example\r\n\r\n",
		"POST /up HTTP/1.1\r\nHost: a.example.\r\nTransfer-Encoding: chunked\r\n\r\n",
	} {
		want, err := Parse([]byte(head))
		if err != nil {
			t.Fatalf("%q: %v", head, err)
		}
		hr, err := http.ReadRequest(bufio.NewReader(strings.NewReader(head)))
		if err != nil {
			t.Fatal(err)
		}
		got := FromHTTP(hr)
		if got.Method != want.Method || got.Path != want.Path || got.Query != want.Query || got.Host != want.Host || got.Chunked != want.Chunked {
			t.Errorf("%q:\n got %+v\nwant %+v", head, got, want)
		}
		for _, name := range []string{"x-tenant", "cookie"} {
			g, gok := got.Header(name)
			w, wok := want.Header(name)
			if g != w || gok != wok {
				t.Errorf("%q: field %s %q, want %q", head, name, g, w)
			}
		}
		g, gok := got.Cookie("backend")
		w, wok := want.Cookie("backend")
		if g != w || gok != wok {
			t.Errorf("%q: cookie %q, want %q", head, g, w)
		}
	}
}
