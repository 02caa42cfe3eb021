package shim

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tetherlb/tether/agent/shim/wire"
)

// fakeAgent is the agent's end of the hand-off socket.
type fakeAgent struct {
	t   *testing.T
	lis *net.UnixListener
}

func newFakeAgent(t *testing.T) (*fakeAgent, string) {
	sock := filepath.Join(t.TempDir(), "handoff.sock")
	lis, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: sock, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lis.Close() })
	return &fakeAgent{t: t, lis: lis}, sock
}

// accept takes the shim's next connection and its registration.
func (a *fakeAgent) accept() (*net.UnixConn, []netip.AddrPort) {
	a.t.Helper()
	a.lis.SetDeadline(time.Now().Add(10 * time.Second))
	c, err := a.lis.AcceptUnix()
	if err != nil {
		a.t.Fatal(err)
	}
	a.t.Cleanup(func() { c.Close() })
	f := read(a.t, c)
	if f.Type != wire.TypeRegister {
		a.t.Fatalf("first frame %v, want a registration", f.Type)
	}
	return c, f.Addrs
}

func read(t *testing.T, c *net.UnixConn) *wire.Frame {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, wire.MaxFrame+1)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	f, err := wire.Decode(buf[:n])
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// handoff passes fd to the shim with the frame's addresses.
func handoff(t *testing.T, c *net.UnixConn, id uint64, client, vip netip.AddrPort, fd int) {
	t.Helper()
	b, err := wire.Encode(nil, &wire.Frame{Type: wire.TypeHandoff, ID: id, Client: client, VIP: vip})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.WriteMsgUnix(b, unix.UnixRights(fd), nil); err != nil {
		t.Fatal(err)
	}
}

func addrPortOf(a net.Addr) netip.AddrPort { return addrPort(a) }

// dupOf is a copy of an accepted connection's descriptor: a "migrated"
// connection the test hands back to the shim (its local address is the
// listener's, as a real one's is).
func dupOf(t *testing.T, c net.Conn) int {
	t.Helper()
	sc, _ := c.(*net.TCPConn).SyscallConn()
	var fd int
	var err error
	sc.Control(func(u uintptr) { fd, err = unix.Dup(int(u)) })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

// TestHandoffAndClose: a passed descriptor comes out of Accept as a
// *Conn with the client's and the VIP's addresses, the agent gets an
// accepting ack, and Close sends the agent a closed notice, once.
func TestHandoffAndClose(t *testing.T) {
	agent, sock := newFakeAgent(t)
	ln, err := Listen("tcp", "127.0.0.1:0", Options{Socket: sock})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, addrs := agent.accept()
	vip := addrPortOf(ln.Addr())
	if len(addrs) != 1 || addrs[0] != vip {
		t.Fatalf("registered %v, want %v", addrs, vip)
	}
	client, err := net.Dial("tcp", vip.String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	ordinary, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := ordinary.(*net.TCPConn); !ok {
		t.Fatalf("an ordinary connection is a %T", ordinary)
	}
	fd := dupOf(t, ordinary)
	ordinary.(*net.TCPConn).SetLinger(-1)
	handoff(t, c, 9, addrPortOf(client.LocalAddr()), vip, fd)
	got, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	mc, ok := got.(*Conn)
	if !ok || !mc.Migrated() || TCPConn(got) == nil {
		t.Fatalf("a migrated connection is a %T", got)
	}
	if addrPortOf(mc.RemoteAddr()) != addrPortOf(client.LocalAddr()) || addrPortOf(mc.LocalAddr()) != vip {
		t.Fatalf("migrated %v→%v", mc.RemoteAddr(), mc.LocalAddr())
	}
	if f := read(t, c); f.Type != wire.TypeAck || f.ID != 9 || !f.Accepted {
		t.Fatalf("%+v, want an accepting ack of 9", f)
	}
	if _, err := mc.Write([]byte("hi")); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 2)
	if _, err := io.ReadFull(client, b); err != nil || string(b) != "hi" {
		t.Fatalf("client read %q, %v", b, err)
	}
	mc.Close()
	mc.Close()
	if f := read(t, c); f.Type != wire.TypeClosed || f.ID != 9 {
		t.Fatalf("%+v, want closed 9", f)
	}
	// Only one notice: the next frame is the next hand-off's ack.
	handoff(t, c, 10, netip.MustParseAddrPort("192.0.2.1:1"), vip, fd)
	if f := read(t, c); f.Type != wire.TypeAck || f.ID != 10 || f.Accepted {
		t.Fatalf("%+v, want a refusing ack of 10 (the descriptor is not 192.0.2.1's)", f)
	}
	ln.Close()
	if _, err := ln.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Accept after Close: %v", err)
	}
}

// TestReconnect: when the agent's connection drops (a restart), the
// shim connects again and registers again.
func TestReconnect(t *testing.T) {
	agent, sock := newFakeAgent(t)
	ln, err := Listen("tcp", "127.0.0.1:0", Options{Socket: sock, MinBackoff: time.Millisecond, MaxBackoff: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, _ := agent.accept()
	c.Close()
	_, addrs := agent.accept()
	if len(addrs) != 1 || addrs[0] != addrPortOf(ln.Addr()) {
		t.Fatalf("registered again %v", addrs)
	}
}

// TestProtocolError: a frame the shim does not expect from the agent
// (or with no descriptor) ends the connection, and the shim comes back.
func TestProtocolError(t *testing.T) {
	agent, sock := newFakeAgent(t)
	ln, err := Listen("tcp", "127.0.0.1:0", Options{Socket: sock, MinBackoff: time.Millisecond, MaxBackoff: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, _ := agent.accept()
	b, _ := wire.Encode(nil, &wire.Frame{Type: wire.TypeHandoff, ID: 1, Client: netip.MustParseAddrPort("192.0.2.1:1"), VIP: addrPortOf(ln.Addr())})
	if _, err := c.Write(b); err != nil { // no descriptor
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Read(make([]byte, 64)); err == nil {
		t.Fatal("the shim answered a hand-off without a descriptor")
	}
	agent.accept()
}

func TestListenRefusesOtherNetworks(t *testing.T) {
	if _, err := Listen("udp", "127.0.0.1:0", Options{}); err == nil {
		t.Fatal("udp accepted")
	}
}

// TestAgentLater: Listen succeeds with no agent, serves ordinary
// connections meanwhile, and registers once the agent's socket
// appears.
func TestAgentLater(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "handoff.sock")
	ln, err := Listen("tcp", "127.0.0.1:0", Options{Socket: sock, MinBackoff: time.Millisecond, MaxBackoff: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	lis, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: sock, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	agent := &fakeAgent{t: t, lis: lis}
	t.Cleanup(func() { lis.Close() })
	if _, addrs := agent.accept(); len(addrs) != 1 || addrs[0] != addrPortOf(ln.Addr()) {
		t.Fatalf("registered %v", addrs)
	}
}
