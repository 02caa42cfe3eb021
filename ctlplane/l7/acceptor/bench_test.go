package acceptor

import (
	"encoding/binary"
	"testing"
	"time"
)

// BenchmarkSYN: a SYN in, a SYN-ACK with a cookie out; what a SYN
// flood costs per packet.
func BenchmarkSYN(b *testing.B) {
	a := newTest(b, nil)
	c := newClient(b, a, 40000)
	syn := c.packet("S", c.isn, 0, nil, c.synOpts())
	out := make([]byte, 0, MaxReply)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		binary.BigEndian.PutUint16(syn[20:], uint16(i)|1) // a new flow each time
		if r, _ := a.Handle(t0, syn, out); r == nil {
			b.Fatal("no SYN-ACK")
		}
	}
}

// BenchmarkHandshakeAndRequest: SYN, then the cookie ACK carrying a
// request, to Ready, then Forget: one accepted connection.
func BenchmarkHandshakeAndRequest(b *testing.B) {
	a := newTest(b, func(c *Config) { c.MaxConns = 1 << 16 })
	c := newClient(b, a, 40000)
	syn := c.packet("S", c.isn, 0, nil, c.synOpts())
	req := c.packet("PA", c.isn+1, 0, []byte(request), c.dataOpts())
	out := make([]byte, 0, MaxReply)
	now := t0
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		// A new flow each time: client port and address.
		port := uint16(i%60000 + 1)
		for _, p := range [][]byte{syn, req} {
			binary.BigEndian.PutUint16(p[20:], port)
			binary.BigEndian.PutUint16(p[14:], uint16(i/60000))
		}
		sa, _ := a.Handle(now, syn, out)
		if sa == nil {
			b.Fatal("no SYN-ACK")
		}
		binary.BigEndian.PutUint32(req[28:], binary.BigEndian.Uint32(sa[24:])+1)
		// The SYN-ACK's TSval (after MSS and SACK-permitted, kind and
		// length) into the request's TSecr (after NOP NOP TSval).
		binary.BigEndian.PutUint32(req[48:], binary.BigEndian.Uint32(sa[48:]))
		_, ev := a.Handle(now, req, out)
		if ev.Kind != Ready {
			b.Fatalf("event %v", ev.Kind)
		}
		a.Forget(ev.Key, now)
		if i%4096 == 0 {
			now = now.Add(time.Millisecond)
		}
	}
}

// TestBenchmarksRun keeps the benchmarks from rotting unseen: each must
// get through its loop (a failed benchmark reports no iterations).
func TestBenchmarksRun(t *testing.T) {
	if testing.Short() {
		t.Skip("runs each benchmark for a second")
	}
	for name, bf := range map[string]func(*testing.B){"SYN": BenchmarkSYN, "HandshakeAndRequest": BenchmarkHandshakeAndRequest} {
		if r := testing.Benchmark(bf); r.N == 0 {
			t.Errorf("Benchmark%s failed", name)
		}
	}
}
