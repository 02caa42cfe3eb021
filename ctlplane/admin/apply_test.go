package admin

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/rs/zerolog"
)

// goodConfig is a valid configuration with one VIP named name.
func goodConfig(name string) []byte {
	return fmt.Appendf(nil, `
vips:
  - name: %s
    address: 192.0.2.10
    port: 80
    protocol: tcp
    mode: halfnat
    backends: [{address: 10.1.0.1}]
`, name)
}

// badConfig fails the config package's checks with a key/value/reason.
var badConfig = []byte("forwarder: {workers: 0}\n")

// send calls h with a body and decodes the JSON answer.
func send(t *testing.T, h http.Handler, method, path string, body []byte) (int, map[string]any) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(method, path, bytes.NewReader(body)))
	var out map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
		t.Fatalf("%s %s: answer is not JSON: %q", method, path, rec.Body.String())
	}
	return rec.Code, out
}

// configFile writes data to a configuration file with mode 0640, to see
// that applies keep the mode.
func configFile(t *testing.T, data []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "tether.yaml")
	if err := os.WriteFile(path, data, 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o640); err != nil { // whatever the umask
		t.Fatal(err)
	}
	return path
}

// checkFile fails unless path holds want with mode 0640 and is alone in
// its directory (no temporary file left behind).
func checkFile(t *testing.T, path string, want []byte) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s holds %q, want %q", path, got, want)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o640 {
		t.Fatalf("%s has mode %v, want 0640 kept", path, fi.Mode().Perm())
	}
	if ents, _ := os.ReadDir(filepath.Dir(path)); len(ents) != 1 {
		t.Fatalf("%d files beside the configuration: %v", len(ents)-1, ents)
	}
}

func TestApplyValid(t *testing.T) {
	path := configFile(t, goodConfig("old"))
	fb := &fakeBackend{path: path}
	s := &Server{b: fb, log: zerolog.Nop()}
	code, body := send(t, s.routes(), "PUT", "/v1/config", goodConfig("new"))
	if code != http.StatusOK || body["generation"].(float64) != 2 || body["path"] != path || body["restarting"] != nil {
		t.Fatalf("apply: %d %v", code, body)
	}
	if fb.reloads != 1 {
		t.Fatalf("%d reloads, want 1", fb.reloads)
	}
	checkFile(t, path, goodConfig("new"))
}

func TestApplyInvalid(t *testing.T) {
	path := configFile(t, goodConfig("old"))
	fb := &fakeBackend{path: path}
	s := &Server{b: fb, log: zerolog.Nop()}
	code, body := send(t, s.routes(), "PUT", "/v1/config", badConfig)
	if code != http.StatusUnprocessableEntity || !strings.Contains(body["error"].(string), `forwarder.workers: "0": must be between 1 and`) {
		t.Fatalf("invalid: %d %v", code, body)
	}
	for _, tc := range []struct {
		body []byte
		code int
		want string
	}{
		{nil, http.StatusBadRequest, "empty"},
		{[]byte(" \n"), http.StatusBadRequest, "empty"},
		{bytes.Repeat([]byte("#"), maxConfig+1), http.StatusRequestEntityTooLarge, "larger than 16 MiB"},
	} {
		if code, body := send(t, s.routes(), "PUT", "/v1/config", tc.body); code != tc.code || !strings.Contains(body["error"].(string), tc.want) {
			t.Fatalf("%d-byte body: %d %v", len(tc.body), code, body)
		}
	}
	if fb.reloads != 0 {
		t.Fatalf("%d reloads of an invalid configuration", fb.reloads)
	}
	// Validate still judges an empty body (valid: all defaults) and
	// refuses an oversized one rather than judging a truncated one.
	if code, body := send(t, s.routes(), "POST", "/v1/config/validate", nil); code != http.StatusOK {
		t.Fatalf("validate empty: %d %v", code, body)
	}
	if code, _ := send(t, s.routes(), "POST", "/v1/config/validate", bytes.Repeat([]byte("#"), maxConfig+1)); code != http.StatusRequestEntityTooLarge {
		t.Fatalf("validate oversized: %d", code)
	}
	checkFile(t, path, goodConfig("old"))
}

func TestApplyReloadRefused(t *testing.T) {
	path := configFile(t, goodConfig("old"))
	fb := &fakeBackend{path: path, reloadErr: errors.New("forwarder.workers: changing the number of workers needs a restart")}
	s := &Server{b: fb, log: zerolog.Nop()}
	code, body := send(t, s.routes(), "PUT", "/v1/config", goodConfig("new"))
	msg, _ := body["error"].(string)
	if code != http.StatusUnprocessableEntity || !strings.Contains(msg, "previous file was put back") || !strings.Contains(msg, "needs a restart") {
		t.Fatalf("refused reload: %d %v", code, body)
	}
	if fb.reloads != 1 {
		t.Fatalf("%d reloads, want 1", fb.reloads)
	}
	checkFile(t, path, goodConfig("old"))
}

// TestApplySymlink: a configuration reached through a symlink is written
// where the link points, and the link stays.
func TestApplySymlink(t *testing.T) {
	target := configFile(t, goodConfig("old"))
	link := filepath.Join(t.TempDir(), "tether.yaml")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	s := &Server{b: &fakeBackend{path: link}, log: zerolog.Nop()}
	if code, body := send(t, s.routes(), "PUT", "/v1/config", goodConfig("new")); code != http.StatusOK {
		t.Fatalf("apply: %d %v", code, body)
	}
	if fi, err := os.Lstat(link); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Fatalf("the link was replaced: %v %v", fi, err)
	}
	checkFile(t, target, goodConfig("new"))
}

// TestApplyConcurrent: applies take turns, each reload reading a whole
// file (the race detector also watches the fake's counter).
func TestApplyConcurrent(t *testing.T) {
	path := configFile(t, goodConfig("old"))
	var inside atomic.Bool
	fb := &fakeBackend{path: path, onReload: func() error {
		if !inside.CompareAndSwap(false, true) {
			t.Error("two applies at once")
		}
		defer inside.Store(false)
		if raw, err := os.ReadFile(path); err != nil || !bytes.Contains(raw, []byte("name: c")) {
			t.Errorf("reload read %q, %v", raw, err)
		}
		return nil
	}}
	h := (&Server{b: fb, log: zerolog.Nop()}).routes()
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest("PUT", "/v1/config", bytes.NewReader(goodConfig(fmt.Sprintf("c%d", i)))))
			if rec.Code != http.StatusOK {
				t.Errorf("apply %d: %d %s", i, rec.Code, rec.Body)
			}
		})
	}
	wg.Wait()
	if fb.reloads != 8 {
		t.Fatalf("%d reloads, want 8", fb.reloads)
	}
}
