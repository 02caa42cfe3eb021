package agent

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/tetherlb/tether/agent/migrate"
	"github.com/tetherlb/tether/agent/shim"
	"github.com/tetherlb/tether/agent/streams"
	hostpb "github.com/tetherlb/tether/api/hostpb"
	"github.com/tetherlb/tether/internal/mtls/mtlstest"
	"github.com/tetherlb/tether/internal/nstest"
)

// migUnit is a unit's end of a host stream: hello with an empty full
// resync, then whatever the test sends; what the agent sends comes out
// of in.
type migUnit struct {
	hostpb.UnimplementedHostStreamServer
	out chan *hostpb.UnitMessage
	in  chan *hostpb.AgentMessage
}

func (u *migUnit) Connect(s grpc.BidiStreamingServer[hostpb.AgentMessage, hostpb.UnitMessage]) error {
	if _, err := s.Recv(); err != nil {
		return err
	}
	for _, m := range []*hostpb.UnitMessage{
		{Version: hostpb.Version, Body: &hostpb.UnitMessage_Hello{Hello: &hostpb.UnitHello{Unit: "unit-a", Boot: 9, Host: 7, Resync: hostpb.Resync_RESYNC_FULL}}},
		{Version: hostpb.Version, Body: &hostpb.UnitMessage_ResyncEnd{ResyncEnd: &hostpb.ResyncEnd{}}},
	} {
		if err := s.Send(m); err != nil {
			return err
		}
	}
	go func() {
		for {
			m, err := s.Recv()
			if err != nil {
				return
			}
			u.in <- m
		}
	}()
	for {
		select {
		case m := <-u.out:
			if err := s.Send(m); err != nil {
				return err
			}
		case <-s.Context().Done():
			return nil
		}
	}
}

// inNamespace runs the Migrator in the host's namespace: the agent
// runs in the host's own, the test in the test's.
type inNamespace struct {
	t  *testing.T
	ns string
	m  *migrate.Migrator
}

func (n inNamespace) Take(unit string, m *hostpb.Migrate, done func(error)) {
	nstest.In(n.t, n.ns, func() { n.m.Take(unit, m, done) })
}

// TestMigrationOverTheStream: a unit's Migrate over a real host stream
// reaches the Migrator, the connection (a real one, captured from the
// host's kernel) comes out of the application's shim listener with the
// client's request first, the unit gets the Ack of the Migrate's seq
// (the migration's success: no result follows) and, when the
// application closes the connection, MigrationEnded, in that order. An
// IPv4 connection and an IPv6 one.
func TestMigrationOverTheStream(t *testing.T) {
	for _, f := range []struct {
		name, client, server string
		bits                 int
	}{{"ipv4", "10.9.1.1", "10.9.1.2", 24}, {"ipv6", "2001:db8:9:1::1", "2001:db8:9:1::2", 64}} {
		t.Run(f.name, func(t *testing.T) {
			testMigrationOverTheStream(t, netip.MustParseAddr(f.client), netip.MustParseAddr(f.server), f.bits)
		})
	}
}

func testMigrationOverTheStream(t *testing.T, clientAddr, serverAddr netip.Addr, bits int) {
	nstest.Require(t)
	c, s := nstest.NS(t, "tagm", "c"), nstest.NS(t, "tagm", "s")
	// No duplicate address detection: the addresses are usable at once.
	for _, args := range [][]string{
		{"ip", "link", "add", "c0", "netns", c, "type", "veth", "peer", "name", "s0", "netns", s},
		{"ip", "-n", c, "addr", "add", fmt.Sprintf("%v/%d", clientAddr, bits), "dev", "c0", "nodad"},
		{"ip", "-n", s, "addr", "add", fmt.Sprintf("%v/%d", serverAddr, bits), "dev", "s0", "nodad"},
		{"ip", "-n", c, "link", "set", "c0", "up"},
		{"ip", "-n", s, "link", "set", "s0", "up"},
	} {
		nstest.Sh(t, args...)
	}
	// A SYN sent before the veth pair's carrier is up may be lost (IPv6's
	// are), and its retransmission comes a second later.
	for _, end := range [][2]string{{c, "c0"}, {s, "s0"}} {
		eventually(t, end[1]+"'s carrier", func() bool {
			return !strings.Contains(nstest.Sh(t, "ip", "-n", end[0], "link", "show", end[1]), "NO-CARRIER")
		})
	}
	vip := netip.AddrPortFrom(serverAddr, 8080)
	dir := t.TempDir()
	scfg, ccfg := mtlstest.UnitAndHost(t, dir, "unit-a", 7)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	unit := &migUnit{out: make(chan *hostpb.UnitMessage, 4), in: make(chan *hostpb.AgentMessage, 16)}
	gs := grpc.NewServer(grpc.Creds(credentials.NewTLS(scfg)))
	hostpb.RegisterHostStreamServer(gs, unit)
	go gs.Serve(lis)
	defer gs.Stop()

	sock := filepath.Join(dir, "handoff.sock")
	var st *streams.Streams
	mig, err := migrate.New(migrate.Config{Socket: sock, Log: zerolog.Nop(),
		Ended: func(u string, e *hostpb.MigrationEnded) { EndedTo(st, zerolog.Nop())(u, e) }})
	if err != nil {
		t.Fatal(err)
	}
	st, err = streams.New(streams.Options{Host: 7, Units: []streams.Unit{{Name: "unit-a", Address: lis.Addr().String()}},
		TLS: ccfg, Log: zerolog.Nop(), Migrator: inNamespace{t, s, mig}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); mig.Run(ctx) }()
	go func() { defer wg.Done(); st.Run(ctx) }()
	defer func() { cancel(); wg.Wait() }()
	next := func() *hostpb.AgentMessage {
		t.Helper()
		select {
		case m := <-unit.in:
			return m
		case <-time.After(10 * time.Second):
			t.Fatal("nothing from the agent")
		}
		return nil
	}
	if next().GetAck() == nil {
		t.Fatal("want the resync's ack first")
	}

	var ln net.Listener
	nstest.In(t, s, func() { ln, err = shim.Listen("tcp", vip.String(), shim.Options{Socket: sock}) })
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	eventually(t, "the shim's registration", func() bool { return len(mig.Status().Shims) == 1 && len(mig.Status().Shims[0].Addrs) == 1 })
	var client net.Conn
	nstest.In(t, c, func() { client, err = net.DialTimeout("tcp", vip.String(), 5*time.Second) })
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	first, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	request := []byte("GET /over-the-stream HTTP/1.1\r\n\r\n")
	if _, err := client.Write(request); err != nil {
		t.Fatal(err)
	}
	queue := func(conn net.Conn, req uint) int {
		rc, _ := conn.(*net.TCPConn).SyscallConn()
		n := -1
		rc.Control(func(fd uintptr) { n, _ = unix.IoctlGetInt(int(fd), req) })
		return n
	}
	eventually(t, "the request acknowledged and queued", func() bool {
		return queue(client, unix.SIOCOUTQ) == 0 && queue(first, unix.SIOCINQ) == len(request)
	})
	state, data, err := migrate.Capture(first.(*net.TCPConn))
	if err != nil {
		t.Fatal(err)
	}
	first.Close() // silent: in repair mode
	accepted := make(chan net.Conn, 1)
	go func() {
		if m, err := ln.Accept(); err == nil {
			accepted <- m
		}
	}()
	unit.out <- &hostpb.UnitMessage{Version: hostpb.Version, Body: &hostpb.UnitMessage_Migrate{Migrate: &hostpb.Migrate{Id: 77, FlowId: 1<<31 | 5, Seq: 1, State: state, Data: data}}}
	if m := next(); m.GetAck().GetSeq() != 1 {
		t.Fatalf("got %v, want the Ack of the Migrate's seq 1", m)
	}
	var app net.Conn
	select {
	case app = <-accepted:
	case <-time.After(10 * time.Second):
		t.Fatal("the application did not get the migrated connection")
	}
	got := make([]byte, len(request))
	if _, err := io.ReadFull(app, got); err != nil || string(got) != string(request) {
		t.Fatalf("application read %q, %v", got, err)
	}
	if _, err := app.Write([]byte("HTTP/1.1 204 No Content\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	client.SetReadDeadline(time.Now().Add(10 * time.Second))
	answer := make([]byte, 27)
	if _, err := io.ReadFull(client, answer); err != nil || string(answer) != "HTTP/1.1 204 No Content\r\n\r\n" {
		t.Fatalf("client read %q, %v", answer, err)
	}
	app.Close()
	e := next().GetMigrationEnded()
	if e.GetId() != 77 || e.GetReason() != hostpb.EndReason_END_REASON_CLOSED || e.GetTuple().GetVipPort() != 8080 ||
		!bytes.Equal(e.GetTuple().GetVip(), serverAddr.AsSlice()) || !bytes.Equal(e.GetTuple().GetClient(), clientAddr.AsSlice()) {
		t.Fatalf("ended %v", e)
	}
	// The count follows the shim's answer, which the agent reads on its
	// own goroutine: the end above may overtake it.
	eventually(t, "the migration counted as done", func() bool {
		v := st.Status()[0]
		return v.Migrations == 1 && v.MigrationsFailed == 0
	})
}
