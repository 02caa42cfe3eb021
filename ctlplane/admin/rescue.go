package admin

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/tetherlb/tether/api/unit"
	"github.com/tetherlb/tether/internal/localapi"
)

// Rescue is the admin API of a unit that cannot start because its
// configuration file is missing or invalid (tetherd run --rescue). In an
// appliance nobody can edit or copy in a file, and exiting would only
// have the unit restarted into the same failure; so tetherd serves just
// enough of the API, on the same kind of guarded socket, to be given a
// configuration:
//
//   - GET /v1/status: the usual unit.Status, with Problem saying why
//     nothing runs;
//   - POST /v1/config/validate: as in a running unit;
//   - PUT /v1/config: a valid body is written to the configuration file
//     (its directory created if need be), and tetherd restarts with it;
//   - anything else under /v1/: 503, with the problem and how to fix it.
//
// Restarting re-executes the same binary with the same arguments once
// the socket is closed and removed, so the unit starts exactly as it
// would have with a good file in the first place (and comes back here if
// that start fails too). Recheck does the same for a file fixed by other
// means (SIGHUP).
type Rescue struct {
	path    string // the configuration file
	log     zerolog.Logger
	started time.Time
	api     *localapi.Server
	restart chan struct{} // a valid file is in place: Serve should Exec

	// Exec replaces the process with a fresh tetherd; it returns only
	// on failure. It defaults to re-executing os.Args; tests replace it
	// to see the restart happen.
	Exec func() error

	mu      sync.Mutex // serialises writes of the file; guards problem
	problem string
}

// ListenRescue creates the rescue API's socket at path; group names the
// admin group ("" for root only). configPath is the configuration file,
// problem why it cannot be used.
func ListenRescue(path, group, configPath string, problem error, log zerolog.Logger) (*Rescue, error) {
	r := newRescue(configPath, problem, log)
	api, err := localapi.Listen("admin", path, group, r.routes())
	if err != nil {
		return nil, err
	}
	r.api = api
	return r, nil
}

func newRescue(configPath string, problem error, log zerolog.Logger) *Rescue {
	why := "the configuration could not be used"
	if problem != nil {
		why = problem.Error()
	}
	return &Rescue{path: configPath, log: log, started: time.Now(), restart: make(chan struct{}, 1),
		Exec: reexec, problem: why}
}

// reexec replaces the process with a new run of the same binary and
// arguments.
func reexec() error {
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("restart: find tetherd's binary: %w", err)
	}
	if err := syscall.Exec(exe, os.Args, os.Environ()); err != nil {
		return fmt.Errorf("restart: exec %s: %w", exe, err)
	}
	return nil
}

// Serve serves until ctx ends (nil), or until a valid configuration is
// in place: then it stops serving, removes the socket and calls Exec,
// returning only if that fails.
func (r *Rescue) Serve(ctx context.Context) error {
	sctx, stop := context.WithCancel(ctx)
	defer stop()
	served := make(chan error, 1)
	go func() { served <- r.api.Serve(sctx) }()
	select {
	case err := <-served:
		return err
	case <-r.restart:
	}
	// Serve returns once the answer to the request that brought the
	// file is delivered, and the socket is gone, so that the new
	// process can create it again.
	stop()
	if err := <-served; err != nil {
		r.log.Warn().Err(err).Msg("rescue admin API")
	}
	if ctx.Err() != nil {
		return nil // told to stop meanwhile: stop rather than restart
	}
	r.log.Info().Str("config", r.path).Msg("configuration valid: restarting tetherd with it")
	return r.Exec()
}

// Recheck reads the configuration file again, for an operator who fixed
// it by other means and sent SIGHUP: valid, tetherd restarts with it;
// still not, the problem is updated and logged.
func (r *Rescue) Recheck() {
	r.mu.Lock()
	defer r.mu.Unlock()
	raw, err := os.ReadFile(r.path)
	if err == nil {
		err = validateConfig(raw)
	}
	if err != nil {
		// The same form as config.LoadFile's errors, which the problem
		// at start had.
		err = fmt.Errorf("config %s: %w", r.path, err)
		r.problem = err.Error()
		r.log.Error().Str("config", r.path).Str("reason", OneLine(err)).Msg("configuration re-read: still not valid, still in rescue mode")
		return
	}
	r.log.Info().Str("config", r.path).Msg("configuration re-read: valid")
	r.restartSoon()
}

// restartSoon tells Serve to restart; a restart already asked for
// covers this one too, as it reads the file afresh.
func (r *Rescue) restartSoon() {
	select {
	case r.restart <- struct{}{}:
	default:
	}
}

func (r *Rescue) reason() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.problem
}

func (r *Rescue) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, req *http.Request) {
		writeJSON(w, http.StatusOK, unit.Status{Config: r.path, ControlPID: os.Getpid(),
			Uptime: time.Since(r.started).Round(time.Second).String(), Problem: "no valid configuration: " + r.reason()})
	})
	mux.HandleFunc("POST /v1/config/validate", validate)
	mux.HandleFunc("PUT /v1/config", r.apply)
	mux.HandleFunc("/v1/", func(w http.ResponseWriter, req *http.Request) {
		fail(w, http.StatusServiceUnavailable, "no valid configuration yet: %s; fix it with tetherctl config apply FILE", r.reason())
	})
	return mux
}

// apply answers PUT /v1/config: a valid body becomes the configuration
// file, and tetherd restarts with it once the answer is delivered.
func (r *Rescue) apply(w http.ResponseWriter, req *http.Request) {
	body, ok := readValidConfig(w, req)
	if !ok {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	// A fresh config disk may not have the directory yet.
	if err := os.MkdirAll(filepath.Dir(r.path), 0o755); err != nil {
		fail(w, http.StatusInternalServerError, "create the configuration's directory: %v; nothing changed", err)
		return
	}
	if err := writeFileAtomic(r.path, body); err != nil {
		fail(w, http.StatusInternalServerError, "%v; nothing changed", err)
		return
	}
	r.log.Info().Str("config", r.path).Msg("valid configuration written through the admin API")
	writeJSON(w, http.StatusOK, unit.Applied{Path: r.path, Restarting: true})
	r.restartSoon()
}

// OneLine is err's message on one line (the config package joins its
// problems with newlines), for a log line.
func OneLine(err error) string {
	return strings.ReplaceAll(err.Error(), "\n", "; ")
}
