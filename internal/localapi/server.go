package localapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// Server serves a handler on a Unix socket to root and, optionally, the
// members of one group.
type Server struct {
	name string // for messages: "admin", "agent"
	gid  int    // -1: root only
	srv  *http.Server
	lis  net.Listener
	path string
}

// Listen creates the socket at path (replacing a stale one) with mode
// 0600, or 0660 and group ownership when group is set. name prefixes
// errors and names the configuration key in refusals (name.group).
func Listen(name, path, group string, h http.Handler) (*Server, error) {
	gid := -1
	if group != "" {
		g, err := user.LookupGroup(group)
		if err != nil {
			return nil, fmt.Errorf("%s: group %q: %w", name, group, err)
		}
		if gid, err = strconv.Atoi(g.Gid); err != nil {
			return nil, fmt.Errorf("%s: group %q: gid %q", name, group, g.Gid)
		}
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if gid >= 0 {
		_ = os.Chown(dir, 0, gid)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%s: remove stale socket: %w", name, err)
	}
	lis, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("%s: listen on %s: %w", name, path, err)
	}
	mode := os.FileMode(0o600)
	if gid >= 0 {
		mode = 0o660
		if err := os.Chown(path, 0, gid); err != nil {
			lis.Close()
			return nil, fmt.Errorf("%s: %s: %w", name, path, err)
		}
	}
	if err := os.Chmod(path, mode); err != nil {
		lis.Close()
		return nil, fmt.Errorf("%s: %s: %w", name, path, err)
	}
	s := &Server{name: name, gid: gid, lis: lis, path: path}
	s.srv = &http.Server{Handler: s.guard(h), ReadHeaderTimeout: 10 * time.Second, ConnContext: peerContext}
	return s, nil
}

// Serve serves until ctx ends, then removes the socket. It returns only
// once the requests in flight have been answered (or 2 s have passed):
// http.Server.Serve returns as soon as shutdown starts, and a caller
// that exits or execs right after would cut those answers off.
func (s *Server) Serve(ctx context.Context) error {
	shutdown := make(chan struct{})
	go func() {
		defer close(shutdown)
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		s.srv.Shutdown(sctx)
	}()
	err := s.srv.Serve(s.lis)
	if errors.Is(err, http.ErrServerClosed) {
		<-shutdown
		err = nil
	}
	os.Remove(s.path)
	return err
}

type credKey struct{}

// peerContext records the connecting process's credentials.
func peerContext(ctx context.Context, c net.Conn) context.Context {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return ctx
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return ctx
	}
	var cred *unix.Ucred
	raw.Control(func(fd uintptr) { cred, _ = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED) })
	if cred == nil {
		return ctx
	}
	return context.WithValue(ctx, credKey{}, *cred)
}

func (s *Server) guard(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := s.allowed(r); err != nil {
			Fail(w, http.StatusForbidden, "permission denied: %v", err)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// allowed reports whether the peer may use the API: root, or a member
// of the group.
func (s *Server) allowed(r *http.Request) error {
	cred, ok := r.Context().Value(credKey{}).(unix.Ucred)
	if !ok {
		return errors.New("peer credentials unavailable")
	}
	if cred.Uid == 0 {
		return nil
	}
	if s.gid >= 0 {
		if int(cred.Gid) == s.gid {
			return nil
		}
		if u, err := user.LookupId(strconv.Itoa(int(cred.Uid))); err == nil {
			if gids, err := u.GroupIds(); err == nil {
				for _, g := range gids {
					if g == strconv.Itoa(s.gid) {
						return nil
					}
				}
			}
		}
		return fmt.Errorf("uid %d is not root and not in the %s group (gid %d); ask an operator to add it", cred.Uid, s.name, s.gid)
	}
	return fmt.Errorf("uid %d is not root, and no %s group is configured (%s.group)", cred.Uid, s.name, s.name)
}

// apiError is every error's body.
type apiError struct {
	Error string `json:"error"`
}

// WriteJSON writes v, indented, with status code.
func WriteJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// Fail writes an error body with status code.
func Fail(w http.ResponseWriter, code int, format string, args ...any) {
	WriteJSON(w, code, apiError{Error: fmt.Sprintf(format, args...)})
}
