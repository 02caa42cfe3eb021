package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"

	pb "github.com/tetherlb/tether/api/healthpb"
	"github.com/tetherlb/tether/api/unit"
	"github.com/tetherlb/tether/internal/localapi"
)

// AppView is one application as the API shows it.
type AppView struct {
	Name string `json:"name"`
	// The row, as a unit's admin API shows it too.
	unit.RowView
	// Check is the local check's last result, when there is a check.
	Check *CheckView `json:"check,omitempty"`
	// LoadCommand is the load command's state, when there is one.
	LoadCommand *LoadView `json:"load_command,omitempty"`
	// Handshake says where a directive change stands.
	Handshake string `json:"handshake,omitempty"`
}

// CheckView is a check's state.
type CheckView struct {
	Health   string `json:"health"`
	Detail   string `json:"detail"`
	Checks   uint64 `json:"checks"`
	Failures uint64 `json:"failures"`
	Since    string `json:"since"`
}

// LoadView is a load command's state. Measured can differ from the row's
// load: the row moves only when the measurement moved by load.step.
type LoadView struct {
	Measured     uint32 `json:"measured"`     // the last percentage printed
	Measurements uint64 `json:"measurements"` // runs that printed a percentage
	Failures     uint64 `json:"failures"`     // runs that failed or printed none
}

// TableView is the whole table.
type TableView struct {
	Host       uint32   `json:"host"`
	Name       string   `json:"name"`
	Listen     string   `json:"listen"`
	Units      []string `json:"units"`
	Generation uint64   `json:"generation"`
	Leader     uint32   `json:"group_leader,omitempty"`
	Members    []uint32 `json:"group_members,omitempty"`
	// Granted is the endpoints this host's key may report on ("" when
	// it runs without a key).
	Granted string    `json:"endpoints_granted,omitempty"`
	Apps    []AppView `json:"applications"`
	Stats   Stats     `json:"stats"`
}

// View returns the table as the API shows it.
func (a *Agent) View() TableView {
	gen, _ := a.table.Integrity()
	v := TableView{Host: a.host, Name: a.cfg.Host.Name, Listen: a.Addr().String(), Units: a.cfg.Units, Generation: gen}
	if a.key != nil {
		v.Granted = a.key.Grant.String()
	}
	for _, name := range a.table.Names() {
		r, ok := a.table.Row(name)
		if !ok {
			continue
		}
		av := AppView{Name: name, RowView: pb.View(r)}
		a.mu.Lock()
		if c := a.checks[name]; c != nil {
			st := c.Status()
			av.Check = &CheckView{Health: st.Health.String(), Detail: st.Last.Detail, Checks: st.Checks, Failures: st.Failures,
				Since: time.Since(st.Since).Round(time.Millisecond).String()}
		}
		if l := a.loads[name]; l != nil {
			lv := *l
			av.LoadCommand = &lv
		}
		if h := a.shakes[name]; h != nil {
			if h.done {
				av.Handshake = fmt.Sprintf("confirmed %s after %d rounds", pb.StateName(h.state), h.rounds)
			} else {
				av.Handshake = fmt.Sprintf("postulating %s (round %d)", pb.StateName(h.state), h.rounds)
			}
		}
		a.mu.Unlock()
		v.Apps = append(v.Apps, av)
	}
	a.mu.Lock()
	v.Stats = Stats{Sent: copyCounts(a.stats.Sent), Received: copyCounts(a.stats.Received), Refused: copyCounts(a.stats.Refused)}
	g := a.group
	a.mu.Unlock()
	if g != nil {
		v.Leader, v.Members = g.Leader(), g.Members()
	}
	return v
}

func copyCounts(m map[string]uint64) map[string]uint64 {
	out := make(map[string]uint64, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// AppSpec is the body that adds an application at run time (an
// application starting up registers itself).
type AppSpec struct {
	Proto    string `json:"proto"`
	VIP      string `json:"vip"`
	Endpoint string `json:"endpoint"`
	URL      string `json:"url"`
	Capacity int    `json:"capacity"`
	State    string `json:"state"`
	Health   string `json:"health"`
}

// Change is the body that changes an application: any of its fields.
type Change struct {
	Health   *string `json:"health,omitempty"`
	Load     *uint32 `json:"load,omitempty"`
	Capacity *uint32 `json:"capacity,omitempty"`
	State    *string `json:"state,omitempty"`
}

// ServeAPI serves the local API until ctx ends.
func (a *Agent) ServeAPI(ctx context.Context) error {
	srv, err := localapi.Listen("api", a.cfg.API.Socket, a.cfg.API.Group, a.routes(ctx))
	if err != nil {
		return err
	}
	return srv.Serve(ctx)
}

func (a *Agent) routes(ctx context.Context) http.Handler {
	mux := http.NewServeMux()
	a.streamRoutes(mux)    // the host streams (streamconfig.go)
	a.tunnelRoutes(mux)    // the tunnel (tunnelconfig.go)
	a.migrationRoutes(mux) // connection migration (migrationconfig.go)
	a.sessionRoutes(mux)   // the session table (sessions.go)
	mux.HandleFunc("GET /v1/table", func(w http.ResponseWriter, r *http.Request) {
		localapi.WriteJSON(w, http.StatusOK, a.View())
	})
	mux.HandleFunc("PUT /v1/apps/{name}", func(w http.ResponseWriter, r *http.Request) {
		var spec AppSpec
		if err := decode(r.Body, &spec); err != nil {
			localapi.Fail(w, http.StatusBadRequest, "%v", err)
			return
		}
		if err := a.AddApp(r.PathValue("name"), spec); err != nil {
			localapi.Fail(w, http.StatusBadRequest, "%v", err)
			return
		}
		localapi.WriteJSON(w, http.StatusOK, a.View())
	})
	mux.HandleFunc("DELETE /v1/apps/{name}", func(w http.ResponseWriter, r *http.Request) {
		if err := a.table.Remove(r.PathValue("name")); err != nil {
			localapi.Fail(w, http.StatusNotFound, "%v", err)
			return
		}
		a.log.Info().Str("application", r.PathValue("name")).Msg("application removed")
		localapi.WriteJSON(w, http.StatusOK, a.View())
	})
	mux.HandleFunc("PATCH /v1/apps/{name}", func(w http.ResponseWriter, r *http.Request) {
		var c Change
		if err := decode(r.Body, &c); err != nil {
			localapi.Fail(w, http.StatusBadRequest, "%v", err)
			return
		}
		if err := a.apply(ctx, r.PathValue("name"), c); err != nil {
			localapi.Fail(w, http.StatusBadRequest, "%v", err)
			return
		}
		localapi.WriteJSON(w, http.StatusOK, a.View())
	})
	return mux
}

func decode(r io.Reader, v any) error {
	dec := json.NewDecoder(io.LimitReader(r, 1<<16))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("request body: %w", err)
	}
	return nil
}

// AddApp adds an application at run time.
func (a *Agent) AddApp(name string, s AppSpec) error {
	app := App{Name: name, Proto: s.Proto, VIP: s.VIP, Endpoint: s.Endpoint, URL: s.URL, Capacity: s.Capacity, State: s.State}
	var p problems
	app.check(&p, "application")
	if len(p) > 0 {
		return p[0]
	}
	if a.key != nil && !a.key.Grant.Allows(app.Endpoint) {
		return fmt.Errorf("endpoint %q: outside the endpoints this host's key grants (%s): units would refuse it", app.Endpoint, a.key.Grant)
	}
	st, _ := pb.ParseState(app.State)
	r := &pb.Row{App: app.AppID(), Health: pb.Health_HEALTH_HEALTHY, Capacity: uint32(app.Capacity), Target: st, Current: st}
	if s.Health != "" {
		h, ok := pb.ParseHealth(s.Health)
		if !ok {
			return fmt.Errorf("health %q: want healthy, failing or unknown", s.Health)
		}
		r.Health = h
	}
	if err := a.table.Add(name, r); err != nil {
		return err
	}
	a.log.Info().Str("application", name).Str("endpoint", app.Endpoint).Msg("application added")
	return nil
}

// apply carries out a Change.
func (a *Agent) apply(ctx context.Context, name string, c Change) error {
	var health *pb.Health
	var state *pb.State
	if c.Health != nil {
		h, ok := pb.ParseHealth(*c.Health)
		if !ok {
			return fmt.Errorf("health %q: want healthy, failing or unknown", *c.Health)
		}
		health = &h
	}
	if c.State != nil {
		s, ok := pb.ParseState(*c.State)
		if !ok {
			return fmt.Errorf("state %q: want active, draining or inactive", *c.State)
		}
		state = &s
	}
	if c.Load != nil && *c.Load > pb.MaxLoad {
		return fmt.Errorf("load %d: want a percentage, 0 to 100", *c.Load)
	}
	if c.Capacity != nil && *c.Capacity > pb.MaxCapacity {
		return fmt.Errorf("capacity %d: want 0 to %d", *c.Capacity, pb.MaxCapacity)
	}
	if err := a.Set(ctx, name, health, c.Load, c.Capacity, state); err != nil {
		return err
	}
	a.log.Info().Str("application", name).Interface("change", c).Msg("application changed")
	return nil
}
