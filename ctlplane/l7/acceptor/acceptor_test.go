package acceptor

import (
	"bytes"
	"encoding/binary"
	"maps"
	"net"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/gopacket/gopacket/layers"
	"github.com/tetherlb/tether/dataplane/syncookie"
)

func TestHandshakeWithTimestamps(t *testing.T) {
	families(t, testHandshakeWithTimestamps)
}

func testHandshakeWithTimestamps(t *testing.T, newClient func(testing.TB, *Acceptor, uint16) *client) {
	a := newTest(t, nil)
	c := newClient(t, a, 40000)
	c.checkNoShrink = true
	sa := c.syn()
	if got := binary.BigEndian.Uint16(sa.opts[layers.TCPOptionKindMSS]); got != 1400 {
		t.Errorf("SYN-ACK MSS %d, want 1400", got)
	}
	if ws := sa.opts[layers.TCPOptionKindWindowScale]; len(ws) != 1 || ws[0] != 7 {
		t.Errorf("SYN-ACK window scale %v, want 7", ws)
	}
	if _, ok := sa.opts[layers.TCPOptionKindSACKPermitted]; !ok {
		t.Error("SYN-ACK without SACK-permitted")
	}
	ts := sa.opts[layers.TCPOptionKindTimestamps]
	if len(ts) != 8 || binary.BigEndian.Uint32(ts[4:]) != 1000 {
		t.Fatalf("SYN-ACK timestamps %x, want TSecr 1000", ts)
	}
	if sa.tcp.Window != 4096 {
		t.Errorf("SYN-ACK window %d, want 4096 (MaxRequest, unscaled)", sa.tcp.Window)
	}
	if want := c.l3() + 20 + 20; len(sa.raw) != want {
		t.Errorf("SYN-ACK of %d bytes, want %d", len(sa.raw), want)
	}
	if s := a.Stats(); s.Conns != 0 || s.BytesHeld != 0 || s.Counters["syn_cookies_sent"] != 1 {
		t.Fatalf("after a SYN: %+v", s)
	}
	c.handshake2(t)
	r, ev := c.data("PA", []byte(request))
	if r == nil || !r.tcp.ACK || r.tcp.Ack != c.isn+1+uint32(len(request)) || r.tcp.Seq != c.serverISN+1 || len(r.tcp.Payload) != 0 {
		t.Fatalf("request answered with %v", r)
	}
	if ev.Kind != Ready || ev.HeadLen != len(request) || string(ev.Data) != request || ev.Key != c.key() {
		t.Fatalf("event %v head %d data %q", ev.Kind, ev.HeadLen, ev.Data)
	}
	st := ev.State
	rts := binary.BigEndian.Uint32(r.opts[layers.TCPOptionKindTimestamps])
	checks := []struct {
		name      string
		got, want any
	}{
		{"client", string(st.Client), string(c.ip)},
		{"client_port", st.ClientPort, uint32(c.port)},
		{"vip", string(st.Vip), string(c.vip)},
		{"vip_port", st.VipPort, uint32(80)},
		{"remote_isn", st.RemoteIsn, c.isn},
		{"local_isn", st.LocalIsn, c.serverISN},
		{"snd_nxt", st.SndNxt, c.serverISN + 1},
		{"rcv_nxt", st.RcvNxt, c.isn + 1 + uint32(len(request))},
		{"snd_wnd", st.SndWnd, uint32(502) << 8},
		{"snd_wl1", st.SndWl1, c.isn + 1},
		{"rcv_wnd", st.RcvWnd, uint32(r.tcp.Window) << 7},
		{"window_scaling", st.WindowScaling, true},
		{"snd_wscale", st.SndWscale, uint32(8)},
		{"rcv_wscale", st.RcvWscale, uint32(7)},
		{"mss", st.Mss, uint32(c.mss)},
		{"sack_permitted", st.SackPermitted, true},
		{"timestamps", st.Timestamps, true},
		{"ts_val", st.TsVal, rts},
		{"ts_recent", st.TsRecent, c.tsVal},
	}
	for _, ch := range checks {
		if ch.got != ch.want {
			t.Errorf("%s = %v, want %v", ch.name, ch.got, ch.want)
		}
	}
	if err := validMigrate(ev); err != nil {
		t.Fatal(err)
	}
	if s := a.Stats(); s.Conns != 1 || s.Counters["ready"] != 1 || s.Counters["accepted"] != 1 || s.BytesHeld > a.Bound() || s.RequestBytes < len(request) {
		t.Fatalf("after Ready: %+v", s)
	}
}

// handshake2 completes the handshake after syn.
func (c *client) handshake2(t *testing.T) {
	t.Helper()
	r, ev := c.data("A", nil)
	if r != nil || ev.Kind != None {
		t.Fatalf("cookie ACK answered with %v, %v", r, ev.Kind)
	}
}

func TestHandshakeWithoutTimestamps(t *testing.T) {
	a := newTest(t, nil)
	c := newClient(t, a, 40001)
	c.ts = false // window scale and SACK offered, but cannot survive
	sa := c.syn()
	if len(sa.opts) != 1 || sa.opts[layers.TCPOptionKindMSS] == nil {
		t.Fatalf("SYN-ACK options %v, want the MSS only", sa.opts)
	}
	_, ev := c.data("PA", []byte(request))
	if ev.Kind != Ready {
		t.Fatalf("event %v", ev.Kind)
	}
	st := ev.State
	if st.WindowScaling || st.SndWscale != 0 || st.RcvWscale != 0 || st.SackPermitted || st.Timestamps || st.TsVal != 0 || st.TsRecent != 0 {
		t.Fatalf("state %v, want no options", st)
	}
	if st.SndWnd != 502 || st.RcvWnd != 4096-uint32(len(request)) {
		t.Fatalf("windows %d/%d, want 502 and %d unscaled", st.SndWnd, st.RcvWnd, 4096-len(request))
	}
	if err := validMigrate(ev); err != nil {
		t.Fatal(err)
	}
}

func TestOptionCombinations(t *testing.T) {
	for _, tc := range []struct {
		name     string
		ws       int
		sack, ts bool
	}{
		{"ts only", -1, false, true},
		{"ts+sack", -1, true, true},
		{"ts+ws", 3, false, true},
		{"ts+ws14+sack", 14, true, true},
		{"ws over 14", 15, false, true},
		{"sack only", -1, true, false},
		{"nothing", -1, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := newTest(t, nil)
			c := newClient(t, a, 40002)
			c.ws, c.sack, c.ts = tc.ws, tc.sack, tc.ts
			sa := c.syn()
			_, hasWS := sa.opts[layers.TCPOptionKindWindowScale]
			_, hasSACK := sa.opts[layers.TCPOptionKindSACKPermitted]
			_, hasTS := sa.opts[layers.TCPOptionKindTimestamps]
			wantWS, wantSACK := tc.ts && tc.ws >= 0, tc.ts && tc.sack
			if hasWS != wantWS || hasSACK != wantSACK || hasTS != tc.ts {
				t.Fatalf("SYN-ACK ws %v sack %v ts %v", hasWS, hasSACK, hasTS)
			}
			_, ev := c.data("PA", []byte(request))
			st := ev.State
			if ev.Kind != Ready || st.WindowScaling != wantWS || st.SackPermitted != wantSACK || st.Timestamps != tc.ts {
				t.Fatalf("state %v", st)
			}
			if wantWS && st.SndWscale != uint32(min(tc.ws, 14)) {
				t.Fatalf("snd_wscale %d, want %d", st.SndWscale, min(tc.ws, 14))
			}
			if err := validMigrate(ev); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestMSSClasses(t *testing.T) {
	a := newTest(t, func(c *Config) { c.MaxConns = 1000 })
	port := uint16(1000)
	try := func(offer uint16, noOption bool, want uint16) {
		t.Helper()
		port++
		c := newClient(t, a, port)
		c.mss = offer
		if noOption {
			c.mss = 0
		}
		c.syn()
		_, ev := c.data("PA", []byte(request))
		if ev.Kind != Ready || ev.State.Mss != uint32(want) {
			t.Fatalf("MSS offered %d (option %v): got %v, want %d", offer, !noOption, ev.State.GetMss(), want)
		}
	}
	for i, m := range syncookie.MSSClasses {
		try(m, false, m)
		if i+1 < len(syncookie.MSSClasses) {
			try(syncookie.MSSClasses[i+1]-1, false, m)
		}
	}
	try(65535, false, 8960)
	try(100, false, 216) // below every class: the smallest
	try(0, true, 536)    // no option: RFC 9293's default
}

// TestAskUnknown: with AskUnknown, a segment of no connection and
// without a valid cookie is reported Unknown, answered and counted not
// at all, so that a unit of a cluster can look the connection up
// elsewhere; Reject then resets it as Handle would have. Valid cookies
// and known connections go on as before, and Reject leaves them alone.
func TestAskUnknown(t *testing.T) {
	a := newTest(t, func(cfg *Config) { cfg.AskUnknown = true })
	c := newClient(t, a, 40100)
	c.syn()
	stray := c.packet("PA", c.isn+1000, c.serverISN+5000, []byte("more of a moved download's acks"), c.dataOpts())
	before := a.Stats().Counters
	r, ev := c.send(stray)
	if r != nil || ev.Kind != Unknown || ev.Key != c.key() {
		t.Fatalf("a segment of no connection: %v, %+v; want no reply and Unknown", r, ev)
	}
	if after := a.Stats().Counters; !maps.Equal(after, before) {
		t.Fatalf("an Unknown segment changed the counters: %v, was %v", after, before)
	}
	rst, err := checkReply(t, a.Reject(c.now, stray, make([]byte, 0, MaxReply)))
	if err != nil || !rst.tcp.RST || rst.tcp.Seq != c.serverISN+5000 {
		t.Fatalf("Reject: %v, %v; want the reset Handle sends", rst, err)
	}
	if n := a.Stats().Counters; n["bad_cookie"] != 1 || n["rst_sent"] != 1 {
		t.Fatalf("after Reject: %v", n)
	}
	// The client's real connection is made as before, and Reject does
	// not reset a connection the acceptor holds.
	if _, ev := c.data("PA", []byte("GET / HT")); ev.Kind != None {
		t.Fatalf("a valid cookie's first data: %v", ev.Kind)
	}
	if out := a.Reject(c.now, c.packet("A", c.seq, c.serverISN+1, nil, c.dataOpts()), make([]byte, 0, MaxReply)); out != nil {
		t.Fatalf("Reject reset a known connection: %x", out)
	}
}

func TestCookieValidation(t *testing.T) {
	families(t, testCookieValidation)
}

func testCookieValidation(t *testing.T, newClient func(testing.TB, *Acceptor, uint16) *client) {
	a := newTest(t, nil)
	c := newClient(t, a, 40003)
	next := func(ip net.IP) net.IP { ip = bytes.Clone(ip); ip[len(ip)-1]++; return ip }
	c.syn()
	good := func(c *client) []byte { return c.packet("A", c.isn+1, c.serverISN+1, nil, c.dataOpts()) }
	other := func(f func(d *client)) *client { d := *c; f(&d); return &d }
	for _, tc := range []struct {
		name string
		from *client
		pkt  func(c *client) []byte
	}{
		{"wrong cookie", c, func(c *client) []byte { return c.packet("A", c.isn+1, c.serverISN+2, nil, c.dataOpts()) }},
		{"cookie off by the MSS class", c, func(c *client) []byte { return c.packet("A", c.isn+1, c.serverISN^1<<28+1, nil, c.dataOpts()) }},
		{"wrong client ISN", c, func(c *client) []byte { return c.packet("A", c.isn+2, c.serverISN+1, nil, c.dataOpts()) }},
		{"wrong client port", other(func(d *client) { d.port++ }), good},
		{"wrong client address", other(func(d *client) { d.ip = next(d.ip) }), good},
		{"wrong VIP", other(func(d *client) { d.vip = next(d.vip) }), good},
	} {
		pkt := tc.pkt(tc.from)
		r, ev := tc.from.send(pkt)
		ack := binary.BigEndian.Uint32(pkt[c.l3()+8:])
		if r == nil || !r.tcp.RST || r.tcp.ACK || r.tcp.Seq != ack || ev.Kind != None {
			t.Errorf("%s: answered %v, want a RST at seq %d", tc.name, r, ack)
		}
	}
	if s := a.Stats(); s.Counters["bad_cookie"] != 6 || s.Conns != 0 {
		t.Fatalf("%+v", s)
	}

	// One epoch later the previous secret still holds.
	c.now = t0.Add(64 * time.Second)
	if r, _ := c.send(good(c)); r != nil {
		t.Fatalf("a cookie of the previous epoch: %v", r)
	}
	if a.Stats().Conns != 1 {
		t.Fatal("a cookie of the previous epoch was refused")
	}

	// Two epochs later it has expired.
	c2 := newClient(t, a, 40004)
	c2.now = c.now // the clock does not go back
	c2.syn()
	c2.now = c2.now.Add(128 * time.Second)
	if r, _ := c2.send(good(c2)); r == nil || !r.tcp.RST {
		t.Fatalf("a cookie two epochs old: %v, want a RST", r)
	}

	// Another acceptor (another secret) refuses the cookie.
	b := newTest(t, func(c *Config) { c.Secrets = newSeeded(2) })
	c3 := newClient(t, a, 40005)
	c3.syn()
	c3.a = b
	if r, _ := c3.send(good(c3)); r == nil || !r.tcp.RST {
		t.Fatalf("another secret's cookie: %v, want a RST", r)
	}
}

func TestSegmentedHead(t *testing.T) {
	a := newTest(t, nil)
	c := newClient(t, a, 40010)
	c.checkNoShrink = true
	c.handshake()
	parts := []string{"GET / HT", "TP/1.1\r\nHost: a\r", "\n\r\n"}
	for i, p := range parts {
		r, ev := c.data("PA", []byte(p))
		if r == nil || r.tcp.Ack != c.seq {
			t.Fatalf("part %d: %v, want ACK %d", i, r, c.seq)
		}
		if want := i == len(parts)-1; (ev.Kind == Ready) != want {
			t.Fatalf("part %d: event %v", i, ev.Kind)
		}
		if ev.Kind == Ready && string(ev.Data) != strings.Join(parts, "") {
			t.Fatalf("data %q", ev.Data)
		}
	}
}

func TestOutOfOrderAndRetransmission(t *testing.T) {
	a := newTest(t, nil)
	c := newClient(t, a, 40011)
	c.handshake()
	p1, p2 := []byte("GET / HTTP/1.1\r\n"), []byte("Host: a\r\n\r\n")
	base := c.seq
	// The second part first: a duplicate ACK, nothing kept.
	r, ev := c.dataAt("PA", base+uint32(len(p1)), p2)
	if r == nil || r.tcp.Ack != base || ev.Kind != None {
		t.Fatalf("out of order: %v %v", r, ev.Kind)
	}
	if a.Stats().Counters["out_of_order"] != 1 {
		t.Fatal("not counted")
	}
	r, _ = c.dataAt("PA", base, p1)
	if r == nil || r.tcp.Ack != base+uint32(len(p1)) {
		t.Fatalf("first part: %v", r)
	}
	// A retransmission of the first part: the same ACK again.
	r, ev = c.dataAt("PA", base, p1)
	if r == nil || r.tcp.Ack != base+uint32(len(p1)) || ev.Kind != None {
		t.Fatalf("retransmission: %v", r)
	}
	// An overlapping segment: the first part's tail and the second part.
	r, ev = c.dataAt("PA", base+4, append(append([]byte{}, p1[4:]...), p2...))
	if r == nil || r.tcp.Ack != base+uint32(len(p1)+len(p2)) || ev.Kind != Ready {
		t.Fatalf("overlap: %v %v", r, ev.Kind)
	}
	if want := string(p1) + string(p2); string(ev.Data) != want {
		t.Fatalf("data %q, want %q", ev.Data, want)
	}
	// After Ready: old bytes re-acknowledged, new bytes and a FIN left
	// for the host.
	end := base + uint32(len(p1)+len(p2))
	if r, _ := c.dataAt("PA", base, p1); r == nil || r.tcp.Ack != end {
		t.Fatalf("retransmission after Ready: %v", r)
	}
	if r, _ := c.dataAt("PA", end, []byte("GET /2")); r != nil {
		t.Fatalf("new data after Ready: %v, want nothing", r)
	}
	if r, _ := c.dataAt("FA", end, nil); r != nil {
		t.Fatalf("FIN after Ready: %v, want nothing", r)
	}
	if r, _ := c.dataAt("A", end, nil); r != nil {
		t.Fatalf("bare ACK after Ready: %v, want nothing", r)
	}
	if got := a.Stats().Counters["held_while_ready"]; got != 2 {
		t.Fatalf("held_while_ready %d", got)
	}
}

func TestDataOnCookieACK(t *testing.T) {
	a := newTest(t, nil)
	c := newClient(t, a, 40012)
	c.syn()
	// The ACK that completes the handshake carries the request, as
	// Linux sends it when the application writes at once.
	r, ev := c.data("PA", []byte(request))
	if r == nil || ev.Kind != Ready || r.tcp.Ack != c.seq {
		t.Fatalf("%v %v", r, ev.Kind)
	}
}

func TestWindowAndTrim(t *testing.T) {
	a := newTest(t, func(c *Config) { c.MaxRequest = 1000 })
	c := newClient(t, a, 40013)
	c.checkNoShrink = true
	c.handshake()
	r, _ := c.data("PA", bytes.Repeat([]byte("x"), 100))
	// (1000-100) rounded up to 128: 8 × 128 = 1024.
	if r.tcp.Window != 8 {
		t.Fatalf("window %d, want 8 (×128)", r.tcp.Window)
	}
	// 950 more bytes: only 900 fit; the rest is not acknowledged, and
	// with the buffer full and no head, the answer is 431.
	r, ev := c.data("PA", bytes.Repeat([]byte("y"), 950))
	if ev.Kind != Dropped || ev.Status != 431 || a.Stats().Counters["trimmed"] != 1 {
		t.Fatalf("%v %+v", ev, a.Stats().Counters)
	}
	if r.tcp.Ack != c.isn+1+1000 {
		t.Fatalf("ACK %d, want %d (MaxRequest)", r.tcp.Ack-c.isn-1, 1000)
	}
}

func TestTooLarge(t *testing.T) {
	a := newTest(t, func(c *Config) { c.MaxRequest = 300; c.CloseLinger = time.Second })
	c := newClient(t, a, 40020)
	c.handshake()
	r, _ := c.data("PA", bytes.Repeat([]byte("a"), 200))
	if r == nil || r.tcp.FIN {
		t.Fatalf("%v", r)
	}
	r, ev := c.data("PA", bytes.Repeat([]byte("b"), 100))
	if r == nil || !r.tcp.FIN || !r.tcp.ACK || !bytes.HasPrefix(r.tcp.Payload, []byte("HTTP/1.1 431 ")) || ev.Kind != Dropped || ev.Status != 431 {
		t.Fatalf("%v %q %v", r, r.tcp.Payload, ev)
	}
	if r.tcp.Seq != c.serverISN+1 || r.tcp.Ack != c.seq {
		t.Fatalf("answer at seq %d ack %d", r.tcp.Seq, r.tcp.Ack)
	}
	answer := r.tcp.Payload
	if s := a.Stats(); s.Conns != 0 || s.Closing != 1 || s.RequestBytes != 0 {
		t.Fatalf("closing holds request bytes: %+v", s)
	}
	testClosing(t, c, answer)
}

// testClosing drives an actively closed connection to its end: the
// answer is retransmitted while unacknowledged, more data is discarded,
// the client's FIN acknowledged, and the state lingers then goes.
func testClosing(t *testing.T, c *client, answer []byte) {
	t.Helper()
	a := c.a
	finSeq := c.serverISN + 1 + uint32(len(answer))
	// The client retransmits its last segment: the same answer again.
	r, _ := c.dataAt("PA", c.seq-10, bytes.Repeat([]byte("b"), 10))
	if r == nil || !r.tcp.FIN || !bytes.Equal(r.tcp.Payload, answer) || r.tcp.Ack != c.seq {
		t.Fatalf("retransmission answered with %v", r)
	}
	// The client acknowledges the answer and FIN and sends more: it is
	// acknowledged and discarded.
	more := c.packet("PA", c.seq, finSeq+1, []byte("zzz"), c.dataOpts())
	c.seq += 3
	if r, _ := c.send(more); r == nil || r.tcp.FIN || r.tcp.Ack != c.seq || r.tcp.Seq != finSeq+1 {
		t.Fatalf("data after the answer: %v", r)
	}
	// Its FIN: acknowledged, the state lingers.
	if r, _ := c.send(c.packet("FA", c.seq, finSeq+1, nil, c.dataOpts())); r == nil || r.tcp.Ack != c.seq+1 {
		t.Fatalf("client FIN: %v", r)
	}
	// The FIN again (our ACK was lost): the same ACK.
	if r, _ := c.send(c.packet("FA", c.seq, finSeq+1, nil, c.dataOpts())); r == nil || r.tcp.Ack != c.seq+1 {
		t.Fatalf("client FIN again: %v", r)
	}
	if a.Stats().Closing != 1 {
		t.Fatal("closing state gone too early")
	}
	if n := a.Expire(c.now.Add(a.cfg.CloseLinger)); n != 1 || a.Stats().Closing != 0 {
		t.Fatalf("Expire dropped %d; %+v", n, a.Stats())
	}
}

func TestBadRequest(t *testing.T) {
	a := newTest(t, nil)
	c := newClient(t, a, 40021)
	c.handshake()
	r, ev := c.data("PA", []byte("GET / HTTP/9.9\r\n\r\n"))
	if r == nil || !r.tcp.FIN || !bytes.HasPrefix(r.tcp.Payload, []byte("HTTP/1.1 400 Bad Request\r\n")) || ev.Kind != Dropped || ev.Status != 400 {
		t.Fatalf("%v %v", r, ev)
	}
	testClosing(t, c, r.tcp.Payload)
}

func TestEarlyFIN(t *testing.T) {
	a := newTest(t, nil)
	c := newClient(t, a, 40022)
	c.handshake()
	r, ev := c.data("PA", []byte("GET / HTTP/1.1\r\n"))
	if ev.Kind != None || r == nil {
		t.Fatal(ev.Kind)
	}
	r, ev = c.data("FA", nil)
	if r == nil || !r.tcp.FIN || len(r.tcp.Payload) != 0 || r.tcp.Ack != c.seq+1 || ev.Kind != Dropped || ev.Status != 0 {
		t.Fatalf("FIN answered with %v, %v", r, ev)
	}
	// The FIN again (our FIN-ACK was lost): our FIN-ACK again.
	if r2, _ := c.send(c.packet("FA", c.seq, c.serverISN+1, nil, c.dataOpts())); r2 == nil || !r2.tcp.FIN || r2.tcp.Ack != c.seq+1 {
		t.Fatalf("FIN again: %v", r2)
	}
	// The client's last ACK ends it.
	if r2, _ := c.send(c.packet("A", c.seq+1, c.serverISN+2, nil, c.dataOpts())); r2 != nil {
		t.Fatalf("last ACK: %v", r2)
	}
	if s := a.Stats(); s.Closing != 0 || s.Conns != 0 || s.Counters["closed"] != 1 {
		t.Fatalf("%+v", s)
	}
}

func TestRST(t *testing.T) {
	a := newTest(t, nil)
	c := newClient(t, a, 40030)
	c.handshake()
	c.data("PA", []byte("GET"))
	// Data beyond the window: an ACK, the client's window not taken.
	wnd := a.conns[c.key()].sndWnd
	far := c.packet("PA", c.seq+5000, c.serverISN+1, []byte("x"), c.dataOpts())
	binary.BigEndian.PutUint16(far[34:], 1) // its window field
	if r, _ := c.send(far); r == nil || r.tcp.Ack != c.seq || a.conns[c.key()].sndWnd != wnd || a.Stats().Counters["out_of_window"] != 1 {
		t.Fatalf("beyond the window: %v", r)
	}
	// Out of the window: ignored.
	if r, ev := c.send(c.packet("R", c.seq+100000, 0, nil, nil)); r != nil || ev.Kind != None || a.Stats().Conns != 1 {
		t.Fatal("a RST out of the window was taken")
	}
	// In the window but not at rcv_nxt: a challenge ACK.
	if r, _ := c.send(c.packet("R", c.seq+5, 0, nil, nil)); r == nil || !r.tcp.ACK || r.tcp.Ack != c.seq || a.Stats().Conns != 1 {
		t.Fatalf("challenge ACK: %v", r)
	}
	// At rcv_nxt: the state is gone.
	if r, ev := c.send(c.packet("R", c.seq, 0, nil, nil)); r != nil || ev.Kind != Reset || ev.Key != c.key() {
		t.Fatalf("%v %v", r, ev)
	}
	if s := a.Stats(); s.Conns != 0 || s.RequestBytes != 0 {
		t.Fatalf("%+v", s)
	}
	// A RST for an unknown flow: nothing.
	if r, _ := c.send(c.packet("R", c.seq, 0, nil, nil)); r != nil || a.Stats().Counters["rst_unknown"] != 1 {
		t.Fatal(r)
	}
}

func TestMaxConns(t *testing.T) {
	a := newTest(t, func(c *Config) { c.MaxConns = 2 })
	for p := uint16(1); p <= 2; p++ {
		newClient(t, a, p).handshake()
	}
	c := newClient(t, a, 3)
	c.syn() // still answered: a SYN costs nothing
	r, _ := c.data("A", nil)
	if r == nil || !r.tcp.RST {
		t.Fatalf("third connection: %v, want a RST", r)
	}
	if s := a.Stats(); s.Conns != 2 || s.Counters["table_full"] != 1 {
		t.Fatalf("%+v", s)
	}
}

func TestForgetTombstone(t *testing.T) {
	a := newTest(t, func(c *Config) { c.MaxConns = 2; c.TombstoneTTL = 3 * time.Second })
	c := newClient(t, a, 40040)
	c.syn()
	first := c.packet("PA", c.seq, c.serverISN+1, []byte(request), c.dataOpts())
	_, ev := c.send(first)
	if ev.Kind != Ready {
		t.Fatal(ev.Kind)
	}
	if !a.Forget(c.key(), c.now) || a.Forget(c.key(), c.now) {
		t.Fatal("Forget")
	}
	// Its retransmission, before the forwarder's route exists: silence,
	// not a second acceptance.
	if r, ev := c.send(first); r != nil || ev.Kind != None || a.Stats().Conns != 0 || a.Stats().Counters["tombstone_drops"] != 1 {
		t.Fatalf("retransmission after Forget: %v %v", r, ev.Kind)
	}
	// The tombstone is bounded in time...
	c.now = c.now.Add(3 * time.Second)
	a.Expire(c.now)
	if a.Stats().Tombstones != 0 {
		t.Fatal("tombstone outlived its TTL")
	}
	if _, ev := c.send(first); ev.Kind != Ready {
		t.Fatalf("after the tombstone: %v", ev.Kind)
	}
	// Forgotten again, and accepted again once that tombstone lapsed but
	// before Expire removed it: the third Forget's tombstone must not go
	// with the lapsed one's queue entry.
	a.Forget(c.key(), c.now)
	c.now = c.now.Add(3 * time.Second)
	if _, ev := c.send(first); ev.Kind != Ready {
		t.Fatalf("after a lapsed tombstone: %v", ev.Kind)
	}
	a.Forget(c.key(), c.now)
	a.Expire(c.now.Add(time.Second))
	if r, ev := c.send(first); r != nil || ev.Kind != None {
		t.Fatalf("the fresh tombstone went with the lapsed one: %v %v", r, ev.Kind)
	}
	// ... and in count: the oldest goes first.
	a.Forget(c.key(), c.now)
	for p := uint16(1); p <= 2; p++ {
		d := newClient(t, a, p)
		d.now = c.now
		d.handshake()
		a.Forget(d.key(), d.now)
	}
	if s := a.Stats(); s.Tombstones != 2 || s.Counters["tombstones_evicted"] != 1 {
		t.Fatalf("%+v", s)
	}
}

// TestTupleReusedAfterForget: a client that reuses a forgotten
// connection's tuple (its port) opens a new connection the acceptor
// takes at once, not after the old one's tombstone lapses.
func TestTupleReusedAfterForget(t *testing.T) {
	for _, workerSYN := range []bool{false, true} {
		a := newTest(t, func(c *Config) { c.TombstoneTTL = 5 * time.Second })
		c := newClient(t, a, 40047)
		c.syn()
		first := c.packet("PA", c.seq, c.serverISN+1, []byte(request), c.dataOpts())
		if _, ev := c.send(first); ev.Kind != Ready {
			t.Fatal(ev.Kind)
		}
		a.Forget(c.key(), c.now)
		again := newClient(t, a, 40047) // the same tuple, a new ISN
		again.now = c.now.Add(time.Millisecond)
		again.isn += 1 << 20
		if workerSYN {
			// A worker answers the new SYN: the acceptor never sees it,
			// and the tombstone is still there when its ACK comes.
			again.workerSYN(a)
		} else {
			again.syn()
		}
		if _, ev := again.data("PA", []byte(request)); ev.Kind != Ready {
			t.Fatalf("worker SYN %v: the new connection on a forgotten tuple: %v, want Ready at once", workerSYN, ev.Kind)
		}
		if n := a.Stats().Counters["tombstone_drops"]; n != 0 {
			t.Fatalf("worker SYN %v: %d tombstone drops", workerSYN, n)
		}
	}
}

// TestTombstoneKeepsOldConnection: on a forgotten flow's tuple, the old
// connection's segments (its cookie ACK and first data, carrying its
// ISN, with a cookie that still validates) are dropped, or reset after
// Refuse, and never make a connection again; a cookie ACK with a new
// ISN is a new connection.
func TestTombstoneKeepsOldConnection(t *testing.T) {
	for _, refuse := range []bool{false, true} {
		a := newTest(t, func(c *Config) { c.TombstoneTTL = 5 * time.Second })
		c := newClient(t, a, 40048)
		c.syn()
		cookieACK := c.packet("A", c.seq, c.serverISN+1, nil, c.dataOpts())
		first := c.packet("PA", c.seq, c.serverISN+1, []byte(request), c.dataOpts())
		if _, ev := c.send(first); ev.Kind != Ready {
			t.Fatal(ev.Kind)
		}
		a.Forget(c.key(), c.now)
		if refuse {
			a.Refuse(c.key(), c.now)
		}
		for _, p := range [][]byte{cookieACK, first} {
			r, ev := c.send(p)
			if ev.Kind != None || refuse != (r != nil && r.tcp.RST) || !refuse && r != nil {
				t.Fatalf("refuse %v: the old connection's segment made %v, answered %v", refuse, ev.Kind, r)
			}
		}
		s := a.Stats()
		if s.Conns != 0 || s.Counters["accepted"] != 1 || s.Counters["tombstones_reused"] != 0 {
			t.Fatalf("refuse %v: %+v", refuse, s)
		}
		if refuse && s.Counters["refused"] != 2 || !refuse && s.Counters["tombstone_drops"] != 2 {
			t.Fatalf("refuse %v: counters %v", refuse, s.Counters)
		}
		again := newClient(t, a, 40048)
		again.now = c.now.Add(time.Second)
		again.isn -= 77
		again.workerSYN(a)
		if _, ev := again.data("PA", []byte(request)); ev.Kind != Ready {
			t.Fatalf("refuse %v: a new ISN's cookie ACK on the tombstoned tuple: %v", refuse, ev.Kind)
		}
		if n := a.Stats().Counters["tombstones_reused"]; n != 1 {
			t.Fatalf("refuse %v: tombstones_reused %d", refuse, n)
		}
	}
}

// TestRefuse: a flow whose migration failed with nobody to reset the
// client gets a reset for its next packet, with the sequence number
// the client expects, for the tombstone's time, not a silent drop.
func TestRefuse(t *testing.T) {
	a := newTest(t, func(c *Config) { c.TombstoneTTL = 3 * time.Second })
	c := newClient(t, a, 40045)
	c.syn()
	first := c.packet("PA", c.seq, c.serverISN+1, []byte(request), c.dataOpts())
	if _, ev := c.send(first); ev.Kind != Ready {
		t.Fatal(ev.Kind)
	}
	a.Forget(c.key(), c.now)
	a.Refuse(c.key(), c.now)
	r, _ := c.send(first)
	if r == nil || !r.tcp.RST || r.tcp.Seq != c.serverISN+1 || a.Stats().Counters["refused"] != 1 || a.Stats().Conns != 0 {
		t.Fatalf("after Refuse: %v, counters %v", r, a.Stats().Counters)
	}
}

func TestAnswer(t *testing.T) {
	a := newTest(t, nil)
	c := newClient(t, a, 40050)
	c.syn()
	_, ev := c.data("PA", []byte(request))
	if ev.Kind != Ready {
		t.Fatal(ev.Kind)
	}
	out := a.Answer(c.key(), 503, c.now)
	r, err := checkReply(t, out)
	if err != nil {
		t.Fatal(err)
	}
	if !r.tcp.FIN || !bytes.HasPrefix(r.tcp.Payload, []byte("HTTP/1.1 503 Service Unavailable\r\n")) || r.tcp.Ack != c.seq {
		t.Fatalf("%v %q", r, r.tcp.Payload)
	}
	if a.Answer(c.key(), 503, c.now) != nil || a.Forget(c.key(), c.now) != true {
		// Forget of a closing connection drops its closing state.
		t.Fatal("Answer twice")
	}
	// The data of the Ready event is still intact.
	if string(ev.Data) != request {
		t.Fatal("Ready data overwritten")
	}
}

func TestRequestTimeout(t *testing.T) {
	a := newTest(t, nil)
	c := newClient(t, a, 40060)
	c.handshake()
	c.data("PA", []byte("GET / HT"))
	c.now = c.now.Add(5 * time.Second)
	r, ev := c.data("PA", []byte("TP/1.1\r\n\r\n"))
	if r == nil || !r.tcp.FIN || !bytes.HasPrefix(r.tcp.Payload, []byte("HTTP/1.1 408 ")) || ev.Status != 408 {
		t.Fatalf("%v %v", r, ev)
	}
	// Another one is dropped by Expire alone.
	d := newClient(t, a, 40061)
	d.handshake()
	if n := a.Expire(t0.Add(5 * time.Second)); n != 1 {
		t.Fatalf("Expire dropped %d, want 1 (the other is closing)", n)
	}
	if s := a.Stats(); s.Conns != 0 || s.Counters["timeouts"] != 2 {
		t.Fatalf("%+v", s)
	}
	// A Ready connection nobody decided on goes too, leaving a tombstone.
	e := newClient(t, a, 40062)
	e.now = t0.Add(5 * time.Second)
	e.syn()
	e.data("PA", []byte(request))
	a.Expire(t0.Add(6 * time.Second))
	if s := a.Stats(); s.Conns != 1 {
		t.Fatal("Ready expired early")
	}
	a.Expire(t0.Add(10 * time.Second))
	if s := a.Stats(); s.Conns != 0 || s.Tombstones != 1 || s.Counters["ready_timeouts"] != 1 {
		t.Fatalf("%+v", s)
	}
}

func TestResetRateLimit(t *testing.T) {
	a := newTest(t, func(c *Config) { c.RSTPerSecond = 2 })
	c := newClient(t, a, 40070)
	bad := c.packet("A", 1, 2, nil, nil)
	for i, want := range []bool{true, true, false} {
		if r, _ := c.send(bad); (r != nil) != want {
			t.Fatalf("ACK %d: %v", i, r)
		}
	}
	c.now = c.now.Add(time.Second)
	if r, _ := c.send(bad); r == nil {
		t.Fatal("no RST in the next second")
	}
	if s := a.Stats(); s.Counters["rst_limited"] != 1 || s.Counters["rst_sent"] != 3 {
		t.Fatalf("%+v", s.Counters)
	}
}

func TestSYNRetransmission(t *testing.T) {
	a := newTest(t, nil)
	c := newClient(t, a, 40080)
	first := c.syn()
	// Stateless: the same SYN gets the same cookie.
	c.tsVal += 0
	if again := c.syn(); again.tcp.Seq != first.tcp.Seq {
		t.Fatal("a retransmitted SYN got another cookie")
	}
	c.handshake2(t)
	// With state: the SYN-ACK as it was.
	r, _ := c.send(c.packet("S", c.isn, 0, nil, c.synOpts()))
	if r == nil || !r.tcp.SYN || r.tcp.Seq != c.serverISN {
		t.Fatalf("%v", r)
	}
	// Another SYN on the connection: a challenge ACK.
	r, _ = c.send(c.packet("S", c.isn+77, 0, nil, c.synOpts()))
	if r == nil || r.tcp.SYN || !r.tcp.ACK {
		t.Fatalf("%v", r)
	}
}

func TestMalformed(t *testing.T) {
	a := newTest(t, nil)
	c := newClient(t, a, 40090)
	syn := c.packet("S", 1, 0, nil, c.synOpts())
	mut := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(syn)) }
	for _, tc := range []struct {
		reason string
		pkt    []byte
	}{
		{"malformed_short", nil},
		{"malformed_short", syn[:10]},
		{"malformed_ip", mut(func(b []byte) []byte { b[0] = 0x44; return b })},
		{"malformed_ip", mut(func(b []byte) []byte { b[0] = 0x5f; return b })},
		{"malformed_ip", mut(func(b []byte) []byte { binary.BigEndian.PutUint16(b[2:], 9999); return b })},
		{"malformed_ip", mut(func(b []byte) []byte { binary.BigEndian.PutUint16(b[2:], 10); return b })},
		{"fragment", mut(func(b []byte) []byte { b[6] |= 0x20; return b })},
		{"not_tcp", mut(func(b []byte) []byte { b[9] = 17; return b })},
		{"malformed_tcp", mut(func(b []byte) []byte { binary.BigEndian.PutUint16(b[2:], 30); return b[:30] })},
		{"malformed_tcp", mut(func(b []byte) []byte { b[32] = 0xf0; return b })},
		{"malformed_tcp", mut(func(b []byte) []byte { b[32] = 0x40; return b })},
		{"malformed_options", mut(func(b []byte) []byte { b[41] = 40; return b })},
		{"malformed_flags", mut(func(b []byte) []byte { b[33] |= 0x01; return b })},
		{"bad_address", mut(func(b []byte) []byte { b[12] = 224; return b })},
		{"bad_address", mut(func(b []byte) []byte { b[20], b[21] = 0, 0; return b })},
	} {
		before := a.Stats().Counters[tc.reason]
		if out, _ := a.Handle(t0, tc.pkt, nil); out != nil {
			t.Errorf("%s: a reply", tc.reason)
		}
		if a.Stats().Counters[tc.reason] != before+1 {
			t.Errorf("%s: not counted", tc.reason)
		}
	}
	// Padding after the datagram is not part of it.
	if out, _ := a.Handle(t0, append(bytes.Clone(syn), 0, 0, 0, 0), nil); out == nil {
		t.Error("a padded SYN got no answer")
	}
}

// TestMalformedIPv6: IPv6's own ways to be malformed or unfit, each
// dropped under its reason.
func TestMalformedIPv6(t *testing.T) {
	a := newTest(t, nil)
	c := newClient6(t, a, 40091)
	syn := c.packet("S", 1, 0, nil, c.synOpts())
	mut := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(syn)) }
	// withExt puts an 8-byte extension header of type next before the
	// TCP segment.
	withExt := func(next byte) []byte {
		p := append(append(append([]byte{}, syn[:40]...), 6, 0, 0, 0, 0, 0, 0, 0), syn[40:]...)
		p[6] = next
		binary.BigEndian.PutUint16(p[4:], uint16(len(p)-40))
		return p
	}
	for _, tc := range []struct {
		reason string
		pkt    []byte
	}{
		{"malformed_short", syn[:39]},
		{"malformed_ip", mut(func(b []byte) []byte { binary.BigEndian.PutUint16(b[4:], uint16(len(b))); return b })},
		{"malformed_tcp", mut(func(b []byte) []byte { binary.BigEndian.PutUint16(b[4:], 10); return b })},
		{"fragment", withExt(44)},
		{"source_routed", withExt(43)},
		{"ext_headers", withExt(0)},
		{"ext_headers", withExt(60)},
		{"not_tcp", mut(func(b []byte) []byte { b[6] = 17; return b })},
		{"bad_address", mut(func(b []byte) []byte { copy(b[8:], net.ParseIP("ff02::1")); return b })},
		{"bad_address", mut(func(b []byte) []byte { copy(b[8:], net.ParseIP("fe80::1")); return b })},
		{"bad_address", mut(func(b []byte) []byte { copy(b[8:], net.ParseIP("::1")); return b })},
		{"bad_address", mut(func(b []byte) []byte { copy(b[8:], net.ParseIP("::")); return b })},
		{"bad_address", mut(func(b []byte) []byte { copy(b[8:], net.ParseIP("::ffff:198.51.100.7")); return b })},
	} {
		before := a.Stats().Counters[tc.reason]
		if out, _ := a.Handle(t0, tc.pkt, nil); out != nil {
			t.Errorf("%s: a reply", tc.reason)
		}
		if a.Stats().Counters[tc.reason] != before+1 {
			t.Errorf("%s: not counted (%v)", tc.reason, a.Stats().Counters)
		}
	}
	// Padding after the datagram is not part of it.
	if out, _ := a.Handle(t0, append(bytes.Clone(syn), 0, 0, 0, 0), nil); out == nil {
		t.Error("a padded SYN got no answer")
	}
}

func TestNoAllocations(t *testing.T) {
	families(t, testNoAllocations)
}

func testNoAllocations(t *testing.T, newClient func(testing.TB, *Acceptor, uint16) *client) {
	a := newTest(t, nil)
	c := newClient(t, a, 40100)
	syn := c.packet("S", c.isn, 0, nil, c.synOpts())
	bad := c.packet("A", c.isn+1, 12345, nil, c.dataOpts())
	out := make([]byte, 0, MaxReply)
	a.Handle(t0, syn, out) // the first packet rotates the secret in
	if n := testing.AllocsPerRun(1000, func() { a.Handle(t0, syn, out) }); n != 0 {
		t.Errorf("SYN → SYN-ACK: %v allocations", n)
	}
	if n := testing.AllocsPerRun(1000, func() { a.Handle(t0, bad, out) }); n != 0 {
		t.Errorf("bad cookie ACK → RST: %v allocations", n)
	}
	// A SYN flood from many flows holds nothing.
	for i := range 20000 {
		binary.BigEndian.PutUint16(syn[c.l3():], uint16(i))
		binary.BigEndian.PutUint16(syn[c.l3()-6:], uint16(i>>16)) // the client address's last bytes
		a.Handle(t0, syn, out)
	}
	if s := a.Stats(); s.Conns != 0 || s.BytesHeld != 0 || s.Counters["syn_cookies_sent"] < 20000 {
		t.Fatalf("after a SYN flood: %+v", s)
	}
}

func TestMemoryBound(t *testing.T) {
	// The fixed costs the bound charges must cover the records: the
	// record (rounded up to an allocation class) and its map slot
	// counted twice, for the map's spare room.
	if s := (unsafe.Sizeof(conn{})+15)&^15 + 2*(unsafe.Sizeof(Key{})+8); s > ConnOverhead {
		t.Errorf("a connection costs about %d bytes; ConnOverhead is %d", s, ConnOverhead)
	}
	if s := unsafe.Sizeof(tombstone{}) + 2*(unsafe.Sizeof(Key{})+unsafe.Sizeof(tombMark{})); s > TombstoneOverhead {
		t.Errorf("a tombstone costs about %d bytes; TombstoneOverhead is %d", s, TombstoneOverhead)
	}
	// Fill the acceptor to its limits: it stays within the bound.
	a := newTest(t, func(c *Config) { c.MaxConns = 8; c.MaxRequest = 3000 })
	for p := uint16(1); p <= 20; p++ {
		c := newClient(t, a, p)
		c.handshake()
		for range 3 {
			c.data("PA", bytes.Repeat([]byte("h"), 1000))
		}
		if s := a.Stats(); s.BytesHeld > a.Bound() || s.Conns > 8 || s.Closing > 8 {
			t.Fatalf("%+v over %d", s, a.Bound())
		}
	}
}

func TestSecretRotation(t *testing.T) {
	a := newTest(t, nil)
	c := newClient(t, a, 40110)
	first := c.syn().tcp.Seq
	c.now = t0.Add(64 * time.Second)
	if again := c.syn().tcp.Seq; again == first || again>>31 == first>>31 {
		t.Fatalf("cookies %#x then %#x across an epoch", first, again)
	}
}

func TestConfig(t *testing.T) {
	for name, mod := range map[string]func(*Config){
		"no Complete":         func(c *Config) { c.Complete = nil },
		"MaxRequest too big":  func(c *Config) { c.MaxRequest = 64<<10 + 1 },
		"window scale 15":     func(c *Config) { c.WindowScale = 15 },
		"MSS 10":              func(c *Config) { c.MSS = 10 },
		"negative MaxConns":   func(c *Config) { c.MaxConns = -1 },
		"secrets that fail":   func(c *Config) { c.Secrets = bytes.NewReader(nil) },
		"a negative duration": func(c *Config) { c.CloseLinger = -1 },
	} {
		cfg := Config{Complete: testComplete}
		mod(&cfg)
		if _, err := New(cfg); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestCookieTSecrFromTheFuture(t *testing.T) {
	a := newTest(t, nil)
	c := newClient(t, a, 40120)
	c.syn()
	c.serverTS += 10_000 // ten seconds ahead of the acceptor's clock
	if r, _ := c.data("A", nil); r == nil || !r.tcp.RST {
		t.Fatalf("a TSecr from the future: %v, want a RST", r)
	}
}

// TestTSvalNeverAhead: whatever the clock's low bits, the SYN-ACK's
// TSval (with the options in its low bits) is not ahead of the clock,
// so the cookie ACK is accepted and later TSvals do not go back.
func TestTSvalNeverAhead(t *testing.T) {
	a := newTest(t, func(c *Config) { c.MaxConns = 200 })
	for ms := range 64 {
		for _, ws := range []int{-1, 0, 14} {
			c := newClient(t, a, uint16(1000+ms*3+ws+1))
			c.ws = ws
			c.now = t0.Add(time.Duration(ms) * time.Millisecond)
			c.syn()
			if int32(a.tsNow(c.now)-c.serverTS) < 0 {
				t.Fatalf("ms %d ws %d: TSval %d ahead of the clock %d", ms, ws, c.serverTS, a.tsNow(c.now))
			}
			if r, _ := c.data("A", nil); r != nil {
				t.Fatalf("ms %d ws %d: cookie ACK answered with %v", ms, ws, r)
			}
		}
	}
}

// TestCompleteAskedSparingly: a head sent a byte a segment is parsed
// when its first line ends and when it ends, not once per byte.
func TestCompleteAskedSparingly(t *testing.T) {
	calls := 0
	a := newTest(t, func(c *Config) {
		c.Complete = func(d []byte) (int, int) { calls++; return testComplete(d) }
	})
	c := newClient(t, a, 40130)
	c.handshake()
	head := "GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n\r\n"
	var ev Event
	for i := range len(head) {
		_, ev = c.data("PA", []byte{head[i]})
	}
	if ev.Kind != Ready || ev.HeadLen != len(head) {
		t.Fatalf("%v %d", ev.Kind, ev.HeadLen)
	}
	if calls != 2 {
		t.Fatalf("Complete asked %d times, want 2", calls)
	}
	// A bare-LF head ends too.
	d := newClient(t, a, 40131)
	d.handshake()
	if _, ev := d.data("PA", []byte("GET / HTTP/1.1\nHost: a\n\n")); ev.Kind != Ready {
		t.Fatalf("LF head: %v", ev.Kind)
	}
}

// TestIPOptions: a client's IP options are skipped by their length (the
// reply carries none); a source route is refused, since the reply's
// destination would not be the client.
func TestIPOptions(t *testing.T) {
	a := newTest(t, nil)
	c := newClient(t, a, 40140)
	syn := c.packet("S", c.isn, 0, nil, c.synOpts())
	withOpts := func(opts []byte) []byte {
		p := append(append(append([]byte{}, syn[:20]...), opts...), syn[20:]...)
		p[0] = 0x40 | byte((20+len(opts))/4)
		binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
		return p
	}
	r, _ := c.send(withOpts([]byte{148, 4, 0, 0})) // router alert
	if r == nil || !r.tcp.SYN || len(r.ip.Options) != 0 {
		t.Fatalf("SYN with IP options: %v", r)
	}
	if r, _ := c.send(withOpts([]byte{131, 7, 4, 10, 0, 0, 1, 0})); r != nil || a.Stats().Counters["source_routed"] != 1 {
		t.Fatalf("source-routed SYN: %v", r)
	}
	if r, _ := c.send(withOpts([]byte{148, 9, 0, 0})); r != nil || a.Stats().Counters["malformed_ip"] != 1 {
		t.Fatalf("an option past the header: %v", r)
	}
}
