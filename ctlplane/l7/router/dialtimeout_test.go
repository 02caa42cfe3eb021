package router

import (
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"
)

// fullListener returns the address of a listening socket whose accept
// queue is full: Linux drops further SYNs, so a dial to it hangs until
// its timeout, as a dial to a host that is down or filtered does.
func fullListener(t *testing.T) netip.AddrPort {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	// Backlog 0: the queue is full once it holds one connection.
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	ap := netip.AddrPortFrom(netip.AddrFrom4(sa.(*syscall.SockaddrInet4).Addr), uint16(sa.(*syscall.SockaddrInet4).Port))
	// Fill the queue; the connection is complete (and never accepted).
	c, err := net.DialTimeout("tcp", ap.String(), testTimeout)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	// Prove that a further dial hangs, or the test below proves nothing.
	if c2, err := net.DialTimeout("tcp", ap.String(), 100*time.Millisecond); err == nil {
		c2.Close()
		t.Skip("this kernel completes connections beyond a full accept queue")
	}
	return ap
}

func TestDialTimeout(t *testing.T) {
	ap := fullListener(t)
	rt, addr := startRouter(t, Config{Decide: to(ap, "r"), DialTimeout: 200 * time.Millisecond})
	c, _ := client(t, true)
	res, err := c.Get("http://" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusGatewayTimeout || !strings.Contains(string(b), "connection") {
		t.Errorf("answer %d %q, want 504 naming the connection", res.StatusCode, b)
	}
	if n := rt.Stats().Errors[ErrDialTimeout]; n != 1 {
		t.Errorf("Stats().Errors = %v, want dial_timeout: 1", rt.Stats().Errors)
	}
}
