package appliance

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// portPair stands in for the virtio-serial port: the relay gets one end
// as a file, the test plays the host on the other.
func portPair(t *testing.T) (*os.File, net.Conn) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	guest := os.NewFile(uintptr(fds[0]), "port")
	hostFile := os.NewFile(uintptr(fds[1]), "host")
	host, err := net.FileConn(hostFile)
	hostFile.Close()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { guest.Close(); host.Close() })
	return guest, host
}

func TestRelay(t *testing.T) {
	socket := filepath.Join(t.TempDir(), "api.sock")
	l, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintln(w, `{"unit":"vm"}`)
	})
	mux.HandleFunc("PUT /v1/config", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %d bytes", r.Header.Get("Content-Type"), len(b))
	})
	srv := &http.Server{Handler: mux}
	go srv.Serve(l)

	guest, host := portPair(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { newRelay("port", socket, t.Logf).serve(ctx, guest); close(done) }()
	t.Cleanup(func() { cancel(); host.Close(); <-done })

	br := bufio.NewReader(host)
	ask := func(raw string) (int, string) {
		t.Helper()
		if _, err := io.WriteString(host, raw); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("answer to %q: %v", raw, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := ask("GET /v1/status HTTP/1.1\r\nHost: tether\r\n\r\n"); code != 200 || !strings.Contains(body, `"unit":"vm"`) {
		t.Errorf("status: %d %q", code, body)
	}
	// Several requests on one connection, with a body.
	if code, body := ask("PUT /v1/config HTTP/1.1\r\nHost: tether\r\nContent-Type: application/yaml\r\nContent-Length: 5\r\n\r\nvips:"); code != 200 || body != "application/yaml 5 bytes" {
		t.Errorf("config: %d %q", code, body)
	}
	if code, body := ask("GET /nothing HTTP/1.1\r\nHost: tether\r\n\r\n"); code != 404 {
		t.Errorf("unknown path: %d %q", code, body)
	}
	// Garbage gets an error, and the channel still serves afterwards.
	if code, body := ask("HELLO\r\n\r\n"); code != http.StatusBadRequest || !strings.Contains(body, "malformed request") {
		t.Errorf("garbage: %d %q", code, body)
	}
	if code, _ := ask("GET /v1/status HTTP/1.1\r\nHost: tether\r\n\r\n"); code != 200 {
		t.Errorf("status after garbage: %d", code)
	}
	// The API gone: a clear error, not a hang.
	srv.Close()
	if code, body := ask("GET /v1/status HTTP/1.1\r\nHost: tether\r\n\r\n"); code != http.StatusBadGateway || !strings.Contains(body, "does not answer") {
		t.Errorf("API down: %d %q", code, body)
	}
}
