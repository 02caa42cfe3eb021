package migrate

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/tetherlb/tether/agent/shim"
	"github.com/tetherlb/tether/agent/shim/wire"
	pb "github.com/tetherlb/tether/api/hostpb"
	"github.com/tetherlb/tether/internal/nstest"
)

type ended struct {
	unit string
	e    *pb.MigrationEnded
}

// harness is a Migrator serving a hand-off socket of the test's own;
// its ended notices go to a channel.
type harness struct {
	m     *Migrator
	ended chan ended
	sock  string
}

func newHarness(t *testing.T, splices ...Splice) *harness {
	t.Helper()
	h := &harness{ended: make(chan ended, 16), sock: filepath.Join(t.TempDir(), "handoff.sock")}
	m, err := New(Config{Socket: h.sock, Splices: splices, Log: zerolog.Nop(),
		Ended: func(unit string, e *pb.MigrationEnded) { h.ended <- ended{unit, e} }})
	if err != nil {
		t.Fatal(err)
	}
	h.m = m
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { m.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return h
}

// nextEnded waits for the next ended notice (at most 10 s).
func (h *harness) nextEnded(t *testing.T) ended {
	t.Helper()
	select {
	case e := <-h.ended:
		return e
	case <-time.After(10 * time.Second):
		t.Fatal("no ended notice")
	}
	return ended{}
}

// registered waits until a shim registered addr.
func (h *harness) registered(t *testing.T, addr string, want bool) {
	t.Helper()
	until(t, "the shim's registration", func() bool {
		for _, s := range h.m.Status().Shims {
			for _, a := range s.Addrs {
				if a == addr {
					return want
				}
			}
		}
		return !want
	})
}

// migrateOne accepts a client's connection to f's VIP normally on
// accept's listener, lets the client send request, captures the
// connection's state and migrates it with h in namespace s.
func migrateOne(t *testing.T, h *harness, c, s string, f family, accept func() (net.Conn, error), request []byte) (*net.TCPConn, *pb.Migrate, result) {
	t.Helper()
	client, msg := acceptOne(t, c, f, accept, request)
	var res result
	nstest.In(t, s, func() { res.kind, res.err = h.m.Migrate("unit-a", msg) })
	return client, msg, res
}

// result is how a migration went: Migrate's answer.
type result struct {
	kind string
	err  error
}

// acceptOne is migrateOne up to the Migrate: the client's connection,
// accepted, its request in, captured.
func acceptOne(t *testing.T, c string, f family, accept func() (net.Conn, error), request []byte) (*net.TCPConn, *pb.Migrate) {
	t.Helper()
	client := dial(t, c, f.vip().String())
	sc, err := accept()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.Write(request); err != nil {
		t.Fatal(err)
	}
	settle(t, client, sc.(*net.TCPConn), len(request))
	st, data := capture(t, sc.(*net.TCPConn))
	return client, &pb.Migrate{Id: 42, FlowId: 1<<31 | 42, Seq: 1, State: st, Data: data}
}

func checkEnded(t *testing.T, e ended, msg *pb.Migrate, reason pb.EndReason) {
	t.Helper()
	st := msg.GetState()
	want := &pb.Tuple{Proto: pb.Proto_PROTO_TCP, Client: st.GetClient(), ClientPort: st.GetClientPort(), Vip: st.GetVip(), VipPort: st.GetVipPort()}
	if e.unit != "unit-a" || e.e.GetId() != msg.GetId() || e.e.GetReason() != reason || pb.MappingSum(&pb.Mapping{Tuple: e.e.GetTuple()}) != pb.MappingSum(&pb.Mapping{Tuple: want}) {
		t.Fatalf("ended %s %v, want unit-a id %d %v %v", e.unit, e.e, msg.GetId(), reason, want)
	}
	if err := pb.ValidateAgent(&pb.AgentMessage{Version: pb.Version, Body: &pb.AgentMessage_MigrationEnded{MigrationEnded: e.e}}); err != nil {
		t.Fatal(err)
	}
}

// TestMigrateToListener: the connection goes to the application through
// its shim listener, which accepted the same client's connections
// normally before; the application reads the request and answers; its
// Close ends the migration exactly once. In each family.
func TestMigrateToListener(t *testing.T) { forFamilies(t, testMigrateToListener) }

func testMigrateToListener(t *testing.T, f family) {
	c, s := pair(t)
	h := newHarness(t)
	var ln net.Listener
	var err error
	nstest.In(t, s, func() { ln, err = shim.Listen("tcp", f.vip().String(), shim.Options{Socket: h.sock}) })
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	h.registered(t, f.vip().String(), true)
	request := []byte("GET /a HTTP/1.1\r\nHost: vip\r\n\r\n")
	accepted := make(chan net.Conn, 1)
	client, msg, res := migrateOne(t, h, c, s, f, func() (net.Conn, error) {
		conn, err := ln.Accept()
		// The application goes on accepting: the migrated connection
		// arrives through the same Accept.
		go func() {
			if m, err := ln.Accept(); err == nil {
				accepted <- m
			}
		}()
		return conn, err
	}, request)
	if res.err != nil || res.kind != HandoffListener {
		t.Fatalf("result %q, %v", res.kind, res.err)
	}
	app := <-accepted
	mc, ok := app.(*shim.Conn)
	if !ok {
		t.Fatalf("accepted a %T, want a *shim.Conn", app)
	}
	if shim.TCPConn(app) == nil || addrPortOf(mc.LocalAddr()) != f.vip() || addrPortOf(mc.RemoteAddr()) != addrPortOf(client.LocalAddr()) {
		t.Fatalf("migrated conn %v→%v, client %v", mc.RemoteAddr(), mc.LocalAddr(), client.LocalAddr())
	}
	if st := h.m.Status(); st.Live != 1 || st.Uploaded != 1 || st.Handed[HandoffListener] != 1 || len(st.Connections) != 1 ||
		st.Upload.Count != 1 || st.Handoff.Count != 1 || st.Upload.P50 != st.Upload.Max || st.Handoff.P99 != st.Handoff.Max ||
		st.Connections[0].Client != addrPortOf(client.LocalAddr()).String() || st.Connections[0].VIP != f.vip().String() {
		t.Fatalf("status %+v", st)
	}
	exchange(t, client, app, request, pattern(3<<20))
	app.Close()
	checkEnded(t, h.nextEnded(t), msg, pb.EndReason_END_REASON_CLOSED)
	// The shim's going would end its outstanding connections: there is
	// none left, so nothing more is counted.
	ln.Close()
	h.registered(t, f.vip().String(), false)
	if st := h.m.Status(); st.Live != 0 || st.Ended["closed"] != 1 || len(st.Ended) != 1 {
		t.Fatalf("after close: %+v", st)
	}
	client.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := io.Copy(io.Discard, client); err != nil || n != 0 {
		t.Fatalf("client after the application's close: %d bytes, %v; want EOF", n, err)
	}
}

// TestShimGoneEndsConnections: an application whose shim connection
// drops (it died) leaves its migrated connections reported ended.
func TestShimGoneEndsConnections(t *testing.T) {
	c, s := pair(t)
	f := inet4()
	h := newHarness(t)
	var ln net.Listener
	var err error
	nstest.In(t, s, func() { ln, err = shim.Listen("tcp", f.vip().String(), shim.Options{Socket: h.sock}) })
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	h.registered(t, f.vip().String(), true)
	accepted := make(chan net.Conn, 1)
	_, msg, res := migrateOne(t, h, c, s, f, func() (net.Conn, error) {
		conn, err := ln.Accept()
		go func() {
			if m, err := ln.Accept(); err == nil {
				accepted <- m
			}
		}()
		return conn, err
	}, []byte("GET / HTTP/1.0\r\n\r\n"))
	if res.err != nil {
		t.Fatalf("result %v", res)
	}
	app := <-accepted
	defer app.Close()
	ln.Close() // the shim's connection to the agent goes
	checkEnded(t, h.nextEnded(t), msg, pb.EndReason_END_REASON_CLOSED)
	app.Close() // after the shim's end: no second notice
	h.registered(t, f.vip().String(), false)
	if st := h.m.Status(); st.Ended["closed"] != 1 || st.Live != 0 {
		t.Fatalf("status %+v", st)
	}
}

// TestMigrateSplice: with no shim, a configured splice connects the
// connection to a local server with a PROXY v2 header naming the
// client; the server answers; the splice ends when both directions
// are done, and only then. In each family, an IPv6 connection spliced
// to a server on the IPv6 loopback address.
func TestMigrateSplice(t *testing.T) {
	forFamilies(t, func(t *testing.T, f family) {
		for _, pp := range []bool{true, false} {
			t.Run(map[bool]string{true: "proxy-v2", false: "no-proxy"}[pp], func(t *testing.T) { testSplice(t, f, pp) })
		}
	})
}

func testSplice(t *testing.T, f family, proxy bool) {
	c, s := pair(t)
	vip := f.vip()
	to := netip.MustParseAddrPort("127.0.0.1:9000")
	if f.server.Is6() {
		to = netip.MustParseAddrPort("[::1]:9000")
	}
	h := newHarness(t, Splice{VIP: vip, To: to, ProxyProtocol: proxy})
	var ln, local net.Listener
	var err, err2 error
	nstest.In(t, s, func() {
		ln, err = net.Listen("tcp", vip.String())
		local, err2 = net.Listen("tcp", to.String())
	})
	if err != nil || err2 != nil {
		t.Fatal(err, err2)
	}
	defer ln.Close()
	defer local.Close()
	type proxied struct {
		conn net.Conn
		hdr  *ProxyHeader
		err  error
	}
	got := make(chan proxied, 1)
	go func() {
		conn, err := local.Accept()
		if err != nil {
			got <- proxied{err: err}
			return
		}
		if !proxy {
			got <- proxied{conn: conn}
			return
		}
		hdr, err := ReadProxyHeader(conn)
		got <- proxied{conn, hdr, err}
	}()
	request := []byte("POST /s HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
	client, msg, res := migrateOne(t, h, c, s, f, ln.Accept, request)
	if res.err != nil || res.kind != HandoffSplice {
		t.Fatalf("result %v", res)
	}
	p := <-got
	if p.err != nil {
		t.Fatal(p.err)
	}
	defer p.conn.Close()
	if proxy && (p.hdr.Local || p.hdr.Source != addrPortOf(client.LocalAddr()) || p.hdr.Destination != vip) {
		t.Fatalf("PROXY header %+v, want %v → %v", p.hdr, client.LocalAddr(), vip)
	}
	exchange(t, client, p.conn, request, pattern(3<<20))
	// The server closes its side; the client sees EOF but the splice
	// lives until the client closes too.
	p.conn.(*net.TCPConn).CloseWrite()
	client.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := io.Copy(io.Discard, client); err != nil || n != 0 {
		t.Fatalf("client: %d bytes, %v; want EOF", n, err)
	}
	if st := h.m.Status(); st.Live != 1 || st.Handed[HandoffSplice] != 1 || len(st.Ended) != 0 {
		t.Fatalf("half closed: status %+v", st)
	}
	client.CloseWrite()
	// The server sees the client's end through the splice.
	p.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := io.Copy(io.Discard, p.conn); err != nil || n != 0 {
		t.Fatalf("server: %d bytes, %v; want EOF", n, err)
	}
	checkEnded(t, h.nextEnded(t), msg, pb.EndReason_END_REASON_CLOSED)
	if st := h.m.Status(); st.Live != 0 || st.Ended["closed"] != 1 {
		t.Fatalf("status %+v", st)
	}
}

// TestMigrateNoHandoff: with neither a shim nor a splice, the uploaded
// connection is reset: the client's read fails with ECONNRESET (the
// RST's sequence numbers were the connection's), the result is not ok,
// and the unit hears HANDOFF_FAILED, never CLOSED.
func TestMigrateNoHandoff(t *testing.T) { forFamilies(t, testMigrateNoHandoff) }

func testMigrateNoHandoff(t *testing.T, f family) {
	c, s := pair(t)
	h := newHarness(t)
	ln := listen(t, s, f)
	client, msg, res := migrateOne(t, h, c, s, f, ln.Accept, []byte("GET / HTTP/1.0\r\n\r\n"))
	if res.err == nil {
		t.Fatalf("result %v, want a failure", res)
	}
	wantReset(t, client)
	checkEnded(t, h.nextEnded(t), msg, pb.EndReason_END_REASON_HANDOFF_FAILED)
	if st := h.m.Status(); st.Failed["no_handoff"] != 1 || st.Ended["closed"] != 0 || st.Live != 0 {
		t.Fatalf("status %+v", st)
	}
}

// TestMigrateShimDoesNotAccept: a shim whose application does not call
// Accept refuses the connection after its delivery bound; the client
// is reset and the unit hears HANDOFF_FAILED.
func TestMigrateShimDoesNotAccept(t *testing.T) { forFamilies(t, testMigrateShimDoesNotAccept) }

func testMigrateShimDoesNotAccept(t *testing.T, f family) {
	c, s := pair(t)
	h := newHarness(t)
	var ln net.Listener
	var err error
	nstest.In(t, s, func() {
		ln, err = shim.Listen("tcp", f.vip().String(), shim.Options{Socket: h.sock, DeliverTimeout: 100 * time.Millisecond})
	})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	h.registered(t, f.vip().String(), true)
	client, msg, res := migrateOne(t, h, c, s, f, ln.Accept, []byte("GET / HTTP/1.0\r\n\r\n"))
	if res.err == nil {
		t.Fatalf("result %v, want a failure", res)
	}
	wantReset(t, client)
	checkEnded(t, h.nextEnded(t), msg, pb.EndReason_END_REASON_HANDOFF_FAILED)
	if st := h.m.Status(); st.Failed["shim_refused"] != 1 {
		t.Fatalf("status %+v", st)
	}
}

// TestMigrateInvalid: a state the kernel cannot take (the VIP's
// port is in use by an established connection with the same 4-tuple
// would do; an invalid one is simpler) fails before any socket exists:
// no ended notice, the unit resets the client.
func TestMigrateInvalid(t *testing.T) {
	h := newHarness(t)
	if kind, err := h.m.Migrate("unit-a", &pb.Migrate{Id: 7, State: &pb.TCPState{}}); err == nil {
		t.Fatalf("result %q, want a failure", kind)
	}
	if st := h.m.Status(); st.Failed["invalid"] != 1 || st.Uploaded != 0 || len(st.Ended) != 0 {
		t.Fatalf("status %+v", st)
	}
}

// TestApplicationCloseSendsTheFIN: the application's copy of a migrated
// connection is its only one from the moment the agent sent it, so the
// application's close reaches the client as a FIN even while the agent
// has not heard the shim's answer. (Were the agent still holding its
// copy, the FIN would wait for it, and the client, which has the whole
// answer, would close first.) The test is the shim here: it withholds
// its answer until the client has read the end.
func TestApplicationCloseSendsTheFIN(t *testing.T) {
	c, s := pair(t)
	h := newHarness(t)
	sh, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: h.sock, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	defer sh.Close()
	vip := inet4().vip()
	reg, err := wire.Encode(nil, &wire.Frame{Type: wire.TypeRegister, Addrs: []netip.AddrPort{vip}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sh.Write(reg); err != nil {
		t.Fatal(err)
	}
	h.registered(t, vip.String(), true)
	var ln net.Listener
	nstest.In(t, s, func() { ln, err = net.Listen("tcp", vip.String()) })
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	request := []byte("GET / HTTP/1.0\r\n\r\n")
	client, msg := acceptOne(t, c, inet4(), ln.Accept, request)
	results := make(chan error, 1)
	nstest.In(t, s, func() {
		// Take uploads in the caller's namespace and returns; the
		// hand-off goes on without it.
		h.m.Take("unit-a", msg, func(err error) { results <- err })
	})

	// The hand-off, as a shim receives it; the descriptor is the
	// application's connection.
	buf := make([]byte, wire.MaxFrame+1)
	oob := make([]byte, unix.CmsgSpace(4))
	sh.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, oobn, _, _, err := sh.ReadMsgUnix(buf, oob)
	if err != nil {
		t.Fatal(err)
	}
	f, err := wire.Decode(buf[:n])
	if err != nil || f.Type != wire.TypeHandoff {
		t.Fatalf("frame %v, %v; want a handoff", f, err)
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		t.Fatalf("control messages %v, %v", msgs, err)
	}
	fds, err := unix.ParseUnixRights(&msgs[0])
	if err != nil || len(fds) != 1 {
		t.Fatalf("descriptors %v, %v", fds, err)
	}
	file := os.NewFile(uintptr(fds[0]), "migrated")
	app, err := net.FileConn(file)
	file.Close()
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(request))
	if _, err := io.ReadFull(app, got); err != nil || !bytes.Equal(got, request) {
		t.Fatalf("application read %q, %v", got, err)
	}
	answer := "HTTP/1.0 200 OK\r\n\r\nhello"
	if _, err := app.Write([]byte(answer)); err != nil {
		t.Fatal(err)
	}
	app.Close()

	// Without the agent's copy in the way, the client reads the answer
	// and then the end. (Were the agent still holding it, the read would
	// end only with the reset of the agent's timeout for the answer.)
	client.SetReadDeadline(time.Now().Add(10 * time.Second))
	all, err := io.ReadAll(client)
	if err != nil || string(all) != answer {
		t.Fatalf("client read %q, %v; want %q and EOF", all, err, answer)
	}
	select {
	case r := <-results:
		t.Fatalf("the migration ended (%v) before the shim answered", r)
	default:
	}
	ack, err := wire.Encode(nil, &wire.Frame{Type: wire.TypeAck, ID: f.ID, Accepted: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sh.Write(ack); err != nil {
		t.Fatal(err)
	}
	if err := <-results; err != nil {
		t.Fatalf("result %v", err)
	}
}

// TestRecentSteps: Status summarises the latest 512 steps only.
func TestRecentSteps(t *testing.T) {
	var r recent
	if v := r.view(); v != (StepTimes{}) {
		t.Fatalf("nothing recorded: %+v", v)
	}
	for i := 1; i <= 600; i++ {
		r.add(time.Duration(i) * time.Microsecond)
	}
	// The latest 512 are 89 µs to 600 µs.
	if v := r.view(); v.Count != 512 || v.P50 != 345 || v.P99 != 595 || v.Max != 600 {
		t.Fatalf("view %+v", v)
	}
}

// TestListening: what the host can hand migrated connections to is its
// splices' VIPs and its registered shims' addresses, each once, and a
// change signals ListeningChanged: a shim's registration, and its
// connection's end.
func TestListening(t *testing.T) {
	splice := netip.MustParseAddrPort("192.0.2.10:80")
	h := newHarness(t, Splice{VIP: splice, To: netip.MustParseAddrPort("127.0.0.1:8000")})
	want := func(eps ...netip.AddrPort) {
		t.Helper()
		select {
		case <-h.m.ListeningChanged():
		case <-time.After(10 * time.Second):
			t.Fatal("ListeningChanged not signalled")
		}
		if got := h.m.Listening(); !slices.Equal(got, eps) {
			t.Fatalf("Listening %v, want %v", got, eps)
		}
	}
	if got := h.m.Listening(); !slices.Equal(got, []netip.AddrPort{splice}) {
		t.Fatalf("before any shim: Listening %v, want the splice's VIP", got)
	}
	any4, any6 := netip.MustParseAddrPort("0.0.0.0:8080"), netip.MustParseAddrPort("[::]:8081")
	var shims []*net.UnixConn
	for _, addrs := range [][]netip.AddrPort{{any6, any4, splice}, {any4}} {
		sh, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: h.sock, Net: "unixpacket"})
		if err != nil {
			t.Fatal(err)
		}
		defer sh.Close()
		reg, err := wire.Encode(nil, &wire.Frame{Type: wire.TypeRegister, Addrs: addrs})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := sh.Write(reg); err != nil {
			t.Fatal(err)
		}
		want(any4, splice, any6)
		shims = append(shims, sh)
	}
	shims[0].Close()
	want(any4, splice)
	shims[1].Close()
	want(splice)
}
