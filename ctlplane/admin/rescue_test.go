package admin

import (
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tetherlb/tether/api/unit"
	"github.com/tetherlb/tether/internal/localapi"
)

// restarted reports whether r was told to restart, consuming the signal.
func restarted(r *Rescue) bool {
	select {
	case <-r.restart:
		return true
	default:
		return false
	}
}

func TestRescue(t *testing.T) {
	// A fresh config disk: neither the file nor its directory exists.
	path := filepath.Join(t.TempDir(), "config", "tether.yaml")
	r := newRescue(path, errors.New("config "+path+": open "+path+": no such file or directory"), zerolog.Nop())
	h := r.routes()

	code, body := send(t, h, "GET", "/v1/status", nil)
	if code != http.StatusOK || body["config"] != path || !strings.HasPrefix(body["problem"].(string), "no valid configuration: config "+path) {
		t.Fatalf("status: %d %v", code, body)
	}
	for _, p := range []string{"/v1/vips", "/v1/config", "/v1/health"} {
		code, body := send(t, h, "GET", p, nil)
		msg, _ := body["error"].(string)
		if code != http.StatusServiceUnavailable || !strings.HasPrefix(msg, "no valid configuration yet: config "+path) ||
			!strings.HasSuffix(msg, "fix it with tetherctl config apply FILE") {
			t.Fatalf("%s: %d %v", p, code, body)
		}
	}
	if code, body := send(t, h, "POST", "/v1/config/reload", nil); code != http.StatusServiceUnavailable {
		t.Fatalf("reload: %d %v", code, body)
	}
	if code, body := send(t, h, "POST", "/v1/config/validate", goodConfig("web")); code != http.StatusOK || body["result"] != "valid" {
		t.Fatalf("validate good: %d %v", code, body)
	}
	if code, body := send(t, h, "POST", "/v1/config/validate", badConfig); code != http.StatusUnprocessableEntity || !strings.Contains(body["error"].(string), "forwarder.workers") {
		t.Fatalf("validate bad: %d %v", code, body)
	}

	// An invalid apply changes nothing and restarts nothing.
	if code, body := send(t, h, "PUT", "/v1/config", badConfig); code != http.StatusUnprocessableEntity || !strings.Contains(body["error"].(string), "forwarder.workers") {
		t.Fatalf("apply bad: %d %v", code, body)
	}
	if code, body := send(t, h, "PUT", "/v1/config", nil); code != http.StatusBadRequest {
		t.Fatalf("apply empty: %d %v", code, body)
	}
	if _, err := os.Stat(filepath.Dir(path)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("invalid apply touched the disk: %v", err)
	}
	if restarted(r) {
		t.Fatal("invalid apply restarts")
	}

	// A valid one creates the directory and the file, then restarts.
	code, body = send(t, h, "PUT", "/v1/config", goodConfig("web"))
	if code != http.StatusOK || body["restarting"] != true || body["path"] != path {
		t.Fatalf("apply good: %d %v", code, body)
	}
	raw, err := os.ReadFile(path)
	if err != nil || string(raw) != string(goodConfig("web")) {
		t.Fatalf("file after apply: %q %v", raw, err)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o644 {
		t.Fatalf("new file has mode %v, want 0644", fi.Mode().Perm())
	}
	if !restarted(r) {
		t.Fatal("valid apply does not restart")
	}
}

// TestRescueRecheck: SIGHUP's re-read restarts only once the file is
// valid, and otherwise updates the problem.
func TestRescueRecheck(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tether.yaml")
	r := newRescue(path, errors.New("missing"), zerolog.Nop())
	r.Recheck()
	if restarted(r) || !strings.Contains(r.reason(), "no such file") {
		t.Fatalf("missing file: problem %q", r.reason())
	}
	if err := os.WriteFile(path, badConfig, 0o644); err != nil {
		t.Fatal(err)
	}
	r.Recheck()
	if restarted(r) || r.reason() != `config `+path+`: forwarder.workers: "0": must be between 1 and 64` {
		t.Fatalf("invalid file: problem %q", r.reason())
	}
	if err := os.WriteFile(path, goodConfig("web"), 0o644); err != nil {
		t.Fatal(err)
	}
	r.Recheck()
	if !restarted(r) {
		t.Fatal("valid file: no restart")
	}
}

// TestRescueServe: on a real socket, an apply is answered, then the
// socket is removed and Exec called; a stop does not Exec.
func TestRescueServe(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the socket's guard serves root only here")
	}
	dir := t.TempDir()
	socket, path := filepath.Join(dir, "run", "admin.sock"), filepath.Join(dir, "tether.yaml")
	r, err := ListenRescue(socket, "", path, errors.New("missing"), zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	execs := 0
	r.Exec = func() error {
		execs++
		if _, err := os.Stat(socket); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("socket still there at exec: %v", err)
		}
		return errors.New("exec refused")
	}
	done := make(chan error, 1)
	go func() { done <- r.Serve(context.Background()) }()
	var out unit.Applied
	if err := localapi.NewClient(socket, "tetherd").Do("PUT", "/v1/config", goodConfig("web"), &out); err != nil || !out.Restarting || out.Path != path {
		t.Fatalf("apply: %+v %v", out, err)
	}
	select {
	case err := <-done:
		if err == nil || err.Error() != "exec refused" || execs != 1 {
			t.Fatalf("Serve returned %v after %d execs; want Exec's error after 1", err, execs)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no restart after a valid apply")
	}

	r, err = ListenRescue(socket, "", path, errors.New("missing"), zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	r.Exec = func() error { t.Error("exec on stop"); return nil }
	ctx, cancel := context.WithCancel(context.Background())
	go func() { done <- r.Serve(ctx) }()
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("stop: %v", err)
	}
}
