package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/tetherlb/tether/config"
	"github.com/tetherlb/tether/ctlplane/control"
	"github.com/tetherlb/tether/dataplane"
	"github.com/tetherlb/tether/forwarder"
)

// Backend is what the API serves from: the control process.
type Backend interface {
	Status(ctx context.Context) control.Status
	Report(ctx context.Context) (dataplane.Report, []int, error)
	Flows(ctx context.Context, req forwarder.FlowsRequest) (forwarder.FlowsReply, error)
	Config() []byte
	Reload(ctx context.Context) error
	SetState(ctx context.Context, vip, backend, state string) error
	Explain(ctx context.Context, proto string, src, dst netip.AddrPort) (control.Explanation, error)
}

var _ Backend = (*control.Control)(nil)

// Server serves the API.
type Server struct {
	b    Backend
	log  zerolog.Logger
	gid  int // admin group, -1 for none
	srv  *http.Server
	lis  net.Listener
	path string
}

// Listen creates the socket at path. group names the admin group ("" for
// root only).
func Listen(path, group string, b Backend, log zerolog.Logger) (*Server, error) {
	gid := -1
	if group != "" {
		g, err := user.LookupGroup(group)
		if err != nil {
			return nil, fmt.Errorf("admin: group %q: %w", group, err)
		}
		if gid, err = strconv.Atoi(g.Gid); err != nil {
			return nil, fmt.Errorf("admin: group %q: gid %q", group, g.Gid)
		}
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("admin: %w", err)
	}
	if gid >= 0 {
		_ = os.Chown(dir, 0, gid)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("admin: remove stale socket: %w", err)
	}
	lis, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("admin: listen on %s: %w", path, err)
	}
	mode := os.FileMode(0o600)
	if gid >= 0 {
		mode = 0o660
		if err := os.Chown(path, 0, gid); err != nil {
			lis.Close()
			return nil, fmt.Errorf("admin: %s: %w", path, err)
		}
	}
	if err := os.Chmod(path, mode); err != nil {
		lis.Close()
		return nil, fmt.Errorf("admin: %s: %w", path, err)
	}
	s := &Server{b: b, log: log, gid: gid, lis: lis, path: path}
	s.srv = &http.Server{Handler: s.routes(), ReadHeaderTimeout: 10 * time.Second, ConnContext: peerContext}
	return s, nil
}

// Serve serves until ctx ends.
func (s *Server) Serve(ctx context.Context) error {
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		s.srv.Shutdown(sctx)
	}()
	err := s.srv.Serve(s.lis)
	os.Remove(s.path)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
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

// allowed reports whether the peer may use the API: root, or a member
// of the admin group.
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
		return fmt.Errorf("uid %d is not root and not in the admin group (gid %d); ask an operator to add it", cred.Uid, s.gid)
	}
	return fmt.Errorf("uid %d is not root, and no admin group is configured (admin.group)", cred.Uid)
}

// apiError is every error's body.
type apiError struct {
	Error string `json:"error"`
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func fail(w http.ResponseWriter, code int, format string, args ...any) {
	writeJSON(w, code, apiError{Error: fmt.Sprintf(format, args...)})
}

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, s.b.Status(r.Context()))
	})
	mux.HandleFunc("GET /v1/vips", func(w http.ResponseWriter, r *http.Request) {
		rep, _, err := s.b.Report(r.Context())
		if err != nil {
			fail(w, http.StatusServiceUnavailable, "%v", err)
			return
		}
		writeJSON(w, http.StatusOK, rep.VIPs)
	})
	mux.HandleFunc("GET /v1/backends", func(w http.ResponseWriter, r *http.Request) {
		rep, conns, err := s.b.Report(r.Context())
		if err != nil {
			fail(w, http.StatusServiceUnavailable, "%v", err)
			return
		}
		type backend struct {
			dataplane.BackendReport
			Connections int `json:"connections"`
		}
		out := make([]backend, 0, len(rep.Backends))
		for i, b := range rep.Backends {
			out = append(out, backend{BackendReport: b, Connections: conns[i]})
		}
		writeJSON(w, http.StatusOK, out)
	})
	mux.HandleFunc("GET /v1/stats", func(w http.ResponseWriter, r *http.Request) {
		rep, _, err := s.b.Report(r.Context())
		if err != nil {
			fail(w, http.StatusServiceUnavailable, "%v", err)
			return
		}
		writeJSON(w, http.StatusOK, rep)
	})
	mux.HandleFunc("GET /v1/flows", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		req := forwarder.FlowsRequest{VIP: q.Get("vip"), Client: q.Get("client"), Backend: -1}
		var err error
		if v := q.Get("backend"); v != "" {
			if req.Backend, err = s.backendID(r.Context(), v); err != nil {
				fail(w, http.StatusBadRequest, "backend: %v", err)
				return
			}
		}
		for name, dst := range map[string]*int{"offset": &req.Offset, "limit": &req.Limit} {
			if v := q.Get(name); v != "" {
				if *dst, err = strconv.Atoi(v); err != nil || *dst < 0 {
					fail(w, http.StatusBadRequest, "%s: %q is not a non-negative number", name, v)
					return
				}
			}
		}
		if req.Limit == 0 {
			req.Limit = 100
		}
		page, err := s.b.Flows(r.Context(), req)
		if err != nil {
			fail(w, http.StatusBadRequest, "%v", err)
			return
		}
		writeJSON(w, http.StatusOK, page)
	})
	mux.HandleFunc("GET /v1/config", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/yaml")
		w.Write(s.b.Config())
	})
	mux.HandleFunc("POST /v1/config/validate", func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, 16<<20))
		if err != nil {
			fail(w, http.StatusBadRequest, "read body: %v", err)
			return
		}
		if err := control.Validate(body); err != nil {
			fail(w, http.StatusUnprocessableEntity, "%v", err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"result": "valid"})
	})
	mux.HandleFunc("POST /v1/config/reload", func(w http.ResponseWriter, r *http.Request) {
		if err := s.b.Reload(r.Context()); err != nil {
			fail(w, http.StatusUnprocessableEntity, "reload refused, the running configuration stays: %v", err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]uint64{"generation": s.b.Status(r.Context()).Generation})
	})
	for verb, state := range map[string]string{"drain": config.StateDraining, "disable": config.StateInactive, "undrain": "", "enable": ""} {
		mux.HandleFunc("POST /v1/backends/{vip}/{backend}/"+verb, func(w http.ResponseWriter, r *http.Request) {
			if err := s.b.SetState(r.Context(), r.PathValue("vip"), r.PathValue("backend"), state); err != nil {
				fail(w, http.StatusBadRequest, "%s: %v", verb, err)
				return
			}
			writeJSON(w, http.StatusOK, map[string]string{"backend": r.PathValue("vip") + "/" + r.PathValue("backend"), "state": stateName(state)})
		})
	}
	mux.HandleFunc("GET /v1/explain", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		src, err1 := netip.ParseAddrPort(q.Get("src"))
		dst, err2 := netip.ParseAddrPort(q.Get("dst"))
		if err1 != nil || err2 != nil {
			fail(w, http.StatusBadRequest, "src and dst must be address:port (IPv6 as [addr]:port)")
			return
		}
		e, err := s.b.Explain(r.Context(), q.Get("proto"), src, dst)
		if err != nil {
			fail(w, http.StatusBadRequest, "%v", err)
			return
		}
		writeJSON(w, http.StatusOK, e)
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := s.allowed(r); err != nil {
			fail(w, http.StatusForbidden, "permission denied: %v", err)
			return
		}
		mux.ServeHTTP(w, r)
	})
}

func stateName(s string) string {
	if s == "" {
		return "as configured"
	}
	return s
}

// backendID resolves "vip/backend" (or a numeric ID) to the forwarder's
// backend ID.
func (s *Server) backendID(ctx context.Context, v string) (int64, error) {
	if id, err := strconv.ParseInt(v, 10, 64); err == nil {
		return id, nil
	}
	vip, name, ok := strings.Cut(v, "/")
	if !ok {
		return 0, fmt.Errorf("%q: want VIP/BACKEND or a backend ID", v)
	}
	rep, _, err := s.b.Report(ctx)
	if err != nil {
		return 0, err
	}
	for _, b := range rep.Backends {
		if b.VIP == vip && b.Name == name && b.State != "removed" {
			return int64(b.ID), nil
		}
	}
	return 0, fmt.Errorf("no backend %q", v)
}
