package admin

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"sync"

	"github.com/rs/zerolog"

	"github.com/tetherlb/tether/api/unit"
	"github.com/tetherlb/tether/config"
	"github.com/tetherlb/tether/internal/localapi"
)

// Backend is what the API serves from: the control process
// (ctlplane/control), in the contract's types.
type Backend interface {
	Status(ctx context.Context) unit.Status
	Report(ctx context.Context) (unit.Report, []int, error)
	Flows(ctx context.Context, req unit.FlowsRequest) (unit.FlowsReply, error)
	Config() []byte
	// ConfigPath is the file Reload reads, which PUT /v1/config
	// replaces.
	ConfigPath() string
	Reload(ctx context.Context) error
	// SetState sets an operator's state; the unset state clears it.
	SetState(ctx context.Context, key unit.BackendKey, state unit.State) error
	// BackendID is the forwarder's ID of a backend.
	BackendID(key unit.BackendKey) (uint32, bool)
	Explain(ctx context.Context, proto string, src, dst netip.AddrPort) (unit.Explanation, error)
	Health(ctx context.Context) unit.HealthView
	// Streams is the host streams (issue 13).
	Streams(ctx context.Context) unit.StreamsView
	// L7 is the l7 VIPs' acceptors and migrations (issue 14).
	L7(ctx context.Context) unit.L7View
	// Members is the cluster of units as this one sees it (issue 15).
	Members(ctx context.Context) unit.MembersView
	// Atoms is the distributed atom manager and a page of this unit's
	// portion (issue 15).
	Atoms(ctx context.Context, req unit.AtomsRequest) unit.AtomsView
	// BGP is the VIPs' announcement to routers; SetBGPDrained withdraws
	// them all (drained) or lets them be announced again.
	BGP(ctx context.Context) unit.BGPView
	SetBGPDrained(ctx context.Context, drained bool) error
}

// Server serves the API.
type Server struct {
	b   Backend
	log zerolog.Logger
	api *localapi.Server

	// applyMu serialises PUT /v1/config: each apply must put back the
	// file it replaced, not one another apply wrote meanwhile.
	applyMu sync.Mutex
}

// maxConfig bounds a configuration sent to the API.
const maxConfig = 16 << 20

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
		out := make([]unit.BackendStatus, 0, len(rep.Backends))
		for i, b := range rep.Backends {
			out = append(out, unit.BackendStatus{BackendReport: b, Connections: conns[i]})
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
		req := unit.FlowsRequest{VIP: q.Get("vip"), Client: q.Get("client"), Backend: -1}
		var err error
		if v := q.Get("backend"); v != "" {
			if req.Backend, err = s.backendID(v); err != nil {
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
	mux.HandleFunc("POST /v1/config/validate", validate)
	mux.HandleFunc("PUT /v1/config", s.apply)
	mux.HandleFunc("POST /v1/config/reload", func(w http.ResponseWriter, r *http.Request) {
		if err := s.b.Reload(r.Context()); err != nil {
			fail(w, http.StatusUnprocessableEntity, "reload refused, the running configuration stays: %v", err)
			return
		}
		writeJSON(w, http.StatusOK, unit.Reloaded{Generation: s.b.Status(r.Context()).Generation})
	})
	// undrain and enable clear the operator's state: the configuration's
	// (made stricter by health) applies again.
	for verb, state := range map[string]unit.State{"drain": unit.StateDraining, "disable": unit.StateInactive, "undrain": 0, "enable": 0} {
		mux.HandleFunc("POST /v1/backends/{vip}/{backend}/"+verb, func(w http.ResponseWriter, r *http.Request) {
			key := unit.BackendKey{VIP: r.PathValue("vip"), Backend: r.PathValue("backend")}
			if err := s.b.SetState(r.Context(), key, state); err != nil {
				fail(w, http.StatusBadRequest, "%s: %v", verb, err)
				return
			}
			writeJSON(w, http.StatusOK, unit.StateChange{Backend: key, State: state})
		})
	}
	mux.HandleFunc("GET /v1/health", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, s.b.Health(r.Context()))
	})
	mux.HandleFunc("GET /v1/streams", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, s.b.Streams(r.Context()))
	})
	mux.HandleFunc("GET /v1/l7", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, s.b.L7(r.Context()))
	})
	mux.HandleFunc("GET /v1/members", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, s.b.Members(r.Context()))
	})
	mux.HandleFunc("GET /v1/bgp", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, s.b.BGP(r.Context()))
	})
	for verb, drained := range map[string]bool{"drain": true, "undrain": false} {
		mux.HandleFunc("POST /v1/bgp/"+verb, func(w http.ResponseWriter, r *http.Request) {
			if err := s.b.SetBGPDrained(r.Context(), drained); err != nil {
				fail(w, http.StatusBadRequest, "bgp %s: %v", verb, err)
				return
			}
			writeJSON(w, http.StatusOK, s.b.BGP(r.Context()))
		})
	}
	mux.HandleFunc("GET /v1/atoms", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		req := unit.AtomsRequest{Prefix: q.Get("prefix"), Host: q.Get("host")}
		if l := q.Get("limit"); l != "" {
			n, err := strconv.Atoi(l)
			if err != nil || n < 1 || n > unit.MaxAtomsPage {
				fail(w, http.StatusBadRequest, "limit: %q: want 1 to %d", l, unit.MaxAtomsPage)
				return
			}
			req.Limit = n
		}
		writeJSON(w, http.StatusOK, s.b.Atoms(r.Context(), req))
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

// validate answers POST /v1/config/validate: whether the body is a
// valid configuration, changing nothing.
func validate(w http.ResponseWriter, r *http.Request) {
	body, ok := readConfig(w, r)
	if !ok {
		return
	}
	if err := validateConfig(body); err != nil {
		fail(w, http.StatusUnprocessableEntity, "%v", err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"result": "valid"})
}

// readConfig reads a request's body, a configuration. One larger than
// maxConfig is refused whole: cut short it might still parse, and must
// be neither judged nor written in place of the one sent.
func readConfig(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxConfig))
	if err != nil {
		if tooBig := (*http.MaxBytesError)(nil); errors.As(err, &tooBig) {
			fail(w, http.StatusRequestEntityTooLarge, "the configuration is larger than %d MiB", maxConfig>>20)
			return nil, false
		}
		fail(w, http.StatusBadRequest, "read body: %v", err)
		return nil, false
	}
	return body, true
}

// readNewConfig is readConfig for a configuration to be written, which
// must not be empty: an empty file is valid (every key has a default)
// but comes from an empty pipe by mistake far more often than from a
// wish to run no VIP.
func readNewConfig(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	body, ok := readConfig(w, r)
	if ok && len(bytes.TrimSpace(body)) == 0 {
		fail(w, http.StatusBadRequest, "the body is empty: send the configuration's YAML")
		return nil, false
	}
	return body, ok
}

// readValidConfig is readNewConfig for a body that must also pass the
// configuration's checks before anything is written.
func readValidConfig(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	body, ok := readNewConfig(w, r)
	if !ok {
		return nil, false
	}
	if err := validateConfig(body); err != nil {
		fail(w, http.StatusUnprocessableEntity, "%v", err)
		return nil, false
	}
	return body, true
}

// apply answers PUT /v1/config: a valid body replaces the configuration
// file and is reloaded; if the reload is refused (the forwarder cannot
// take it without a restart, say) the previous file is put back, so the
// file does not claim a configuration that is not running.
func (s *Server) apply(w http.ResponseWriter, r *http.Request) {
	body, ok := readValidConfig(w, r)
	if !ok {
		return
	}
	s.applyMu.Lock()
	defer s.applyMu.Unlock()
	// Once the file is written the apply runs to its end even if the
	// client goes away: stopping halfway would leave the file and the
	// running configuration disagreeing.
	ctx := context.WithoutCancel(r.Context())
	path := s.b.ConfigPath()
	prev, err := os.ReadFile(path)
	existed := err == nil
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		fail(w, http.StatusInternalServerError, "keep a copy of %s: %v; nothing changed", path, err)
		return
	}
	if err := writeFileAtomic(path, body); err != nil {
		fail(w, http.StatusInternalServerError, "%v; nothing changed", err)
		return
	}
	if err := s.b.Reload(ctx); err != nil {
		if rerr := restoreFile(path, prev, existed); rerr != nil {
			s.log.Error().Err(rerr).Str("config", path).Msg("reload refused and the previous file could not be put back")
			fail(w, http.StatusInternalServerError, "reload refused, the running configuration stays: %v; but putting the previous file back failed (%v), so %s holds the refused configuration: apply a good one", err, rerr, path)
			return
		}
		s.log.Warn().Err(err).Str("config", path).Msg("configuration apply refused by the reload; previous file put back")
		fail(w, http.StatusUnprocessableEntity, "reload refused, the previous file was put back and the running configuration stays: %v", err)
		return
	}
	gen := s.b.Status(ctx).Generation
	s.log.Info().Str("config", path).Uint64("generation", gen).Msg("configuration applied through the admin API")
	writeJSON(w, http.StatusOK, unit.Applied{Generation: gen, Path: path})
}

// restoreFile puts back what path held before an apply: prev, or no file
// at all.
func restoreFile(path string, prev []byte, existed bool) error {
	if !existed {
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("remove %s: %w", path, err)
		}
		return nil
	}
	return writeFileAtomic(path, prev)
}

// validateConfig checks a candidate configuration without applying it:
// every check a running unit makes of a file (config.Check covers all
// the forwarder's build refuses).
func validateConfig(body []byte) error {
	_, err := config.Parse(body)
	return err
}

// backendID resolves "vip/backend" (or a numeric ID) to the forwarder's
// backend ID.
func (s *Server) backendID(v string) (int64, error) {
	if id, err := strconv.ParseInt(v, 10, 64); err == nil {
		return id, nil
	}
	key, err := unit.ParseBackendKey(v)
	if err != nil {
		return 0, fmt.Errorf("%q: want VIP/BACKEND or a backend ID", v)
	}
	id, ok := s.b.BackendID(key)
	if !ok {
		return 0, fmt.Errorf("no backend %q", v)
	}
	return int64(id), nil
}
