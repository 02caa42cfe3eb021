package agent

import (
	"errors"
	"net/http"
	"strconv"

	"github.com/tetherlb/tether/agent/sessions"
	"github.com/tetherlb/tether/api/hostpb"
	"github.com/tetherlb/tether/internal/localapi"
)

// SessionsConfig is the host's session table (issue 15): the sessions
// the host's applications report, which the agent holds and sends to a
// unit over the host streams.
type SessionsConfig struct {
	// Max bounds the sessions the host holds; an application's
	// establish beyond it is refused.
	Max int `mapstructure:"max"`
}

func (s *SessionsConfig) check(p *problems) {
	if s.Max < 1 || s.Max > hostpb.MaxHostSessions {
		p.Add("sessions.max", s.Max, "want 1 to %d sessions", hostpb.MaxHostSessions)
	}
}

// Sessions returns the agent's session table, which its streams report
// to the units (streams.Options.Sessions).
func (a *Agent) Sessions() *sessions.Table { return a.sessions }

// Bounds of GET /v1/sessions.
const (
	// DefaultSessionPage is the page when the request names no limit.
	DefaultSessionPage = 1000
	// MaxSessionPage bounds a page.
	MaxSessionPage = 10000
)

// SessionsView is GET /v1/sessions: one page of the table, in a stable
// order, and the table's counters.
type SessionsView struct {
	// Total is how many sessions the table holds; Max how many it may.
	Total int `json:"total"`
	Max   int `json:"max"`
	// Offset is where the page starts; Next where the next one does
	// (0 when this is the last).
	Offset   int             `json:"offset"`
	Next     int             `json:"next,omitempty"`
	Sessions []sessions.View `json:"sessions"`
	Stats    sessions.Stats  `json:"stats"`
}

// EstablishedView answers POST /v1/sessions.
type EstablishedView struct {
	// Created is false when the session was held already (refreshed).
	Created bool `json:"created"`
}

// sessionRoutes serves the applications' session reports (S1's
// SessionEstablished and SessionTerminated) and the table's listing.
// Errors: 400 for a malformed session (sessions.ErrInvalid), 404 for
// terminating a session the table does not hold, 507 when the table is
// full (sessions.max); agent/sessionclient maps them back.
func (a *Agent) sessionRoutes(mux *http.ServeMux) {
	mux.HandleFunc("POST /v1/sessions", func(w http.ResponseWriter, r *http.Request) {
		var s sessions.Session
		if err := decode(r.Body, &s); err != nil {
			localapi.Fail(w, http.StatusBadRequest, "%v", err)
			return
		}
		created, err := a.sessions.Establish(s)
		if err != nil {
			localapi.Fail(w, sessionStatus(err), "%v", err)
			return
		}
		localapi.WriteJSON(w, http.StatusOK, EstablishedView{Created: created})
	})
	mux.HandleFunc("DELETE /v1/sessions", func(w http.ResponseWriter, r *http.Request) {
		var s sessions.Session
		if err := decode(r.Body, &s); err != nil {
			localapi.Fail(w, http.StatusBadRequest, "%v", err)
			return
		}
		if err := a.sessions.Terminate(s); err != nil {
			localapi.Fail(w, sessionStatus(err), "%v", err)
			return
		}
		localapi.WriteJSON(w, http.StatusOK, struct{}{})
	})
	mux.HandleFunc("GET /v1/sessions", func(w http.ResponseWriter, r *http.Request) {
		offset, limit := 0, DefaultSessionPage
		for _, q := range []struct {
			name string
			v    *int
			max  int
		}{{"offset", &offset, hostpb.MaxHostSessions}, {"limit", &limit, MaxSessionPage}} {
			if s := r.URL.Query().Get(q.name); s != "" {
				n, err := strconv.Atoi(s)
				if err != nil || n < 0 || n > q.max {
					localapi.Fail(w, http.StatusBadRequest, "%s %q: want 0 to %d", q.name, s, q.max)
					return
				}
				*q.v = n
			}
		}
		page, total := a.sessions.List(offset, limit)
		v := SessionsView{Total: total, Max: a.sessions.Max(), Offset: offset, Sessions: page, Stats: a.sessions.Stats()}
		if offset+len(page) < total {
			v.Next = offset + len(page)
		}
		localapi.WriteJSON(w, http.StatusOK, v)
	})
}

func sessionStatus(err error) int {
	switch {
	case errors.Is(err, sessions.ErrUnknown):
		return http.StatusNotFound
	case errors.Is(err, sessions.ErrFull):
		return http.StatusInsufficientStorage
	}
	return http.StatusBadRequest
}
