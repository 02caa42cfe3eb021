package router

import (
	"io"
	"net/http"
	"testing"
)

// benchHost answers every request with a short body, as small as the
// request, so that the benchmarks measure the router's per-request cost.
func benchHost(b *testing.B) *host {
	return startHost(b, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	}))
}

func runRequests(b *testing.B, c *http.Client, url string) {
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		res, err := c.Get(url)
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusOK {
			b.Fatalf("status %d", res.StatusCode)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "req/s")
}

// BenchmarkProxyKeepAlive: requests one after another on one client
// connection, through the router, over one host connection.
func BenchmarkProxyKeepAlive(b *testing.B) {
	h := benchHost(b)
	_, addr := startRouter(b, Config{Decide: to(h.addrPort(), "r")})
	c, dials := client(b, true)
	runRequests(b, c, "http://"+addr+"/")
	if n := dials.Load(); n != 1 {
		b.Errorf("client dialed %d connections, want 1", n)
	}
}

// BenchmarkProxyNewConns: every request on a new client connection, the
// host connection reused.
func BenchmarkProxyNewConns(b *testing.B) {
	h := benchHost(b)
	_, addr := startRouter(b, Config{Decide: to(h.addrPort(), "r")})
	c, _ := client(b, false)
	runRequests(b, c, "http://"+addr+"/")
}

// BenchmarkDirectKeepAlive is the baseline for BenchmarkProxyKeepAlive:
// the same client and host, no router.
func BenchmarkDirectKeepAlive(b *testing.B) {
	h := benchHost(b)
	c, _ := client(b, true)
	runRequests(b, c, h.URL+"/")
}
