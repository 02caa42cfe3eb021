package request

import (
	"net"
	"net/http"
	"strings"
)

// FromHTTP is the Request the rules see for a request net/http has
// already parsed (the request router's, which reads each request of a
// connection itself): the same fields, with the target and path as the
// client sent them.
func FromHTTP(r *http.Request) Request {
	out := Request{Method: r.Method, Target: r.RequestURI, Version: r.Proto, Minor: r.ProtoMinor,
		Authority: r.Host, ContentLength: r.ContentLength}
	if len(r.TransferEncoding) > 0 && r.TransferEncoding[0] == "chunked" {
		out.Chunked, out.ContentLength = true, -1
	}
	out.Path, out.Query, _ = strings.Cut(r.RequestURI, "?")
	if i := strings.Index(out.Path, "://"); i >= 0 {
		// An absolute target: the path starts after the authority.
		rest := out.Path[i+3:]
		if j := strings.IndexByte(rest, '/'); j >= 0 {
			out.Path = rest[j:]
		} else {
			out.Path = "/"
		}
	}
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	out.Host = strings.TrimSuffix(strings.ToLower(strings.Trim(host, "[]")), ".")
	for name, values := range r.Header {
		for _, v := range values {
			out.Fields = append(out.Fields, Field{Name: name, Value: v})
		}
	}
	if r.Host != "" {
		// net/http moves Host out of the header.
		out.Fields = append(out.Fields, Field{Name: "Host", Value: r.Host})
	}
	return out
}
