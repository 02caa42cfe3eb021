package localapi

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func call(t *testing.T, s *Server, uid, gid uint32) (int, string) {
	t.Helper()
	h := s.guard(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { WriteJSON(w, http.StatusOK, "hello") }))
	req := httptest.NewRequest("GET", "/", nil)
	req = req.WithContext(context.WithValue(req.Context(), credKey{}, unix.Ucred{Uid: uid, Gid: gid}))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	var e apiError
	json.Unmarshal(rec.Body.Bytes(), &e)
	return rec.Code, e.Error
}

func TestGuard(t *testing.T) {
	rootOnly := &Server{name: "admin", gid: -1}
	if code, _ := call(t, rootOnly, 0, 0); code != http.StatusOK {
		t.Fatalf("root refused: %d", code)
	}
	if code, msg := call(t, rootOnly, 1000, 1000); code != http.StatusForbidden || !strings.Contains(msg, "uid 1000") || !strings.Contains(msg, "admin.group") {
		t.Fatalf("stranger: %d %q", code, msg)
	}
	group := &Server{name: "admin", gid: 1000}
	if code, _ := call(t, group, 1000, 1000); code != http.StatusOK {
		t.Fatalf("group member refused: %d", code)
	}
	if code, _ := call(t, group, 1001, 1001); code != http.StatusForbidden {
		t.Fatalf("non-member served: %d", code)
	}
	// No credentials at all (not a Unix socket): refused.
	h := group.guard(http.NotFoundHandler())
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
	if rec.Code != http.StatusForbidden {
		t.Fatalf("credential-less request: %d", rec.Code)
	}
}

// TestRoundTrip: a real socket, served and called.
func TestRoundTrip(t *testing.T) {
	if unix.Geteuid() != 0 {
		t.Skip("the guard serves root only here")
	}
	path := filepath.Join(t.TempDir(), "api.sock")
	srv, err := Listen("test", path, "", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/fail" {
			Fail(w, http.StatusBadRequest, "no %s", "way")
			return
		}
		WriteJSON(w, http.StatusOK, map[string]int{"n": 7})
	}))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- srv.Serve(ctx) }()
	c := NewClient(path, "testd")
	var out map[string]int
	if err := c.Do("GET", "/", nil, &out); err != nil || out["n"] != 7 {
		t.Fatalf("call: %v %v", out, err)
	}
	if err := c.Do("GET", "/fail", nil, nil); err == nil || err.Error() != "no way" {
		t.Fatalf("error body: %v", err)
	}
	cancel()
	<-done
	if err := NewClient(path, "testd").Do("GET", "/", nil, nil); err == nil || !strings.Contains(err.Error(), "is testd running") {
		t.Fatalf("no socket: %v", err)
	}
}
