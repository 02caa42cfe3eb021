package admin

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"strconv"
	"strings"

	"github.com/rs/zerolog"

	"github.com/tetherlb/tether/config"
	"github.com/tetherlb/tether/ctlplane/control"
	"github.com/tetherlb/tether/dataplane"
	"github.com/tetherlb/tether/forwarder"
	"github.com/tetherlb/tether/internal/localapi"
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
	Health(ctx context.Context) control.HealthView
}

var _ Backend = (*control.Control)(nil)

// Server serves the API.
type Server struct {
	b   Backend
	log zerolog.Logger
	api *localapi.Server
}

// Listen creates the socket at path. group names the admin group ("" for
// root only).
func Listen(path, group string, b Backend, log zerolog.Logger) (*Server, error) {
	s := &Server{b: b, log: log}
	api, err := localapi.Listen("admin", path, group, s.routes())
	if err != nil {
		return nil, err
	}
	s.api = api
	return s, nil
}

// Serve serves until ctx ends.
func (s *Server) Serve(ctx context.Context) error { return s.api.Serve(ctx) }

var (
	writeJSON = localapi.WriteJSON
	fail      = localapi.Fail
)

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
	mux.HandleFunc("GET /v1/health", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, s.b.Health(r.Context()))
	})
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
	return mux
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
