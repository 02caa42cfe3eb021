package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"

	"github.com/rs/zerolog"
	"github.com/tetherlb/tether/api/unit"
)

type fakeBackend struct {
	// bgpDrained is what SetBGPDrained set; with noBGP it fails.
	bgpDrained, noBGP bool
	states            map[unit.BackendKey]unit.State
	// path is ConfigPath; reloadErr is what Reload answers, unless
	// onReload is set; reloads counts Reload's calls.
	path      string
	reloadErr error
	onReload  func() error
	reloads   int
}

func (f *fakeBackend) Status(context.Context) unit.Status {
	return unit.Status{Unit: "u", Generation: 2}
}
func (f *fakeBackend) Report(context.Context) (unit.Report, []int, error) {
	return unit.Report{Backends: []unit.BackendReport{{ID: 4, VIP: "web", Name: "b0", State: unit.StateActive}}}, []int{7}, nil
}
func (f *fakeBackend) Flows(_ context.Context, req unit.FlowsRequest) (unit.FlowsReply, error) {
	if req.Backend != 4 || req.Limit != 100 {
		return unit.FlowsReply{}, errors.New("unexpected request")
	}
	return unit.FlowsReply{Matched: 3}, nil
}
func (f *fakeBackend) Config() []byte     { return []byte("unit: {}\n") }
func (f *fakeBackend) ConfigPath() string { return f.path }
func (f *fakeBackend) Reload(context.Context) error {
	f.reloads++
	if f.onReload != nil {
		return f.onReload()
	}
	return f.reloadErr
}
func (f *fakeBackend) SetState(_ context.Context, key unit.BackendKey, s unit.State) error {
	f.states[key] = s
	return nil
}
func (f *fakeBackend) BackendID(key unit.BackendKey) (uint32, bool) {
	return 4, key == unit.BackendKey{VIP: "web", Backend: "b0"}
}
func (f *fakeBackend) Explain(context.Context, string, netip.AddrPort, netip.AddrPort) (unit.Explanation, error) {
	return unit.Explanation{Backend: "b0"}, nil
}

// do calls the API's routes; who may call them is internal/localapi's
// business, tested there.
func (f *fakeBackend) Health(context.Context) unit.HealthView {
	return unit.HealthView{Unit: 5}
}

func (f *fakeBackend) L7(context.Context) unit.L7View {
	return unit.L7View{Stats: unit.L7Stats{Migrated: 3}}
}

func (f *fakeBackend) Streams(context.Context) unit.StreamsView {
	return unit.StreamsView{Listen: "10.0.0.1:7320", Streams: []unit.HostStream{{Host: 7, State: unit.StreamUp}}}
}

func (f *fakeBackend) Members(context.Context) unit.MembersView {
	return unit.MembersView{Enabled: true, Name: "u", Members: []unit.Member{{Name: "u", State: unit.MemberAlive, Boot: 9, Self: true},
		{Name: "v", State: unit.MemberDead, TunnelSources: []string{"10.0.0.2"}}}, Refused: map[string]uint64{"decrypt": 2}}
}

func (f *fakeBackend) BGP(context.Context) unit.BGPView {
	return unit.BGPView{Enabled: true, ASN: 65001, Drained: f.bgpDrained, Announced: []string{"192.0.2.10/32"}}
}

func (f *fakeBackend) SetBGPDrained(_ context.Context, drained bool) error {
	if f.noBGP {
		return errors.New("the unit has no bgp section")
	}
	f.bgpDrained = drained
	return nil
}

func (f *fakeBackend) Atoms(_ context.Context, req unit.AtomsRequest) unit.AtomsView {
	return unit.AtomsView{Enabled: true, Self: "u", Ready: true, Atoms: 2, Matched: req.Limit,
		Page: []unit.AtomView{{Key: req.Prefix + "x", Host: req.Host}}}
}

func do(t *testing.T, s *Server, method, path string) (int, map[string]any) {
	t.Helper()
	req := httptest.NewRequest(method, path, nil)
	rec := httptest.NewRecorder()
	s.routes().ServeHTTP(rec, req)
	var body map[string]any
	json.Unmarshal(rec.Body.Bytes(), &body)
	return rec.Code, body
}

func TestAPI(t *testing.T) {
	fb := &fakeBackend{states: map[unit.BackendKey]unit.State{}, reloadErr: errors.New("vips[0].mtu: \"12\": must be between 576 and 9216")}
	s := &Server{b: fb, log: zerolog.Nop()}
	if code, body := do(t, s, "GET", "/v1/status"); code != http.StatusOK || body["unit"] != "u" {
		t.Fatalf("status: %d %v", code, body)
	}
	if code, body := do(t, s, "GET", "/v1/flows?backend=web/b0"); code != http.StatusOK || body["matched"].(float64) != 3 {
		t.Fatalf("flows by name: %d %v", code, body)
	}
	if code, body := do(t, s, "GET", "/v1/flows?limit=-1"); code != http.StatusBadRequest || !strings.Contains(body["error"].(string), "limit") {
		t.Fatalf("bad limit: %d %v", code, body)
	}
	if code, body := do(t, s, "POST", "/v1/config/reload"); code != http.StatusUnprocessableEntity || !strings.Contains(body["error"].(string), "vips[0].mtu") {
		t.Fatalf("refused reload: %d %v", code, body)
	}
	if code, body := do(t, s, "POST", "/v1/backends/web/b0/drain"); code != http.StatusOK || fb.states[unit.BackendKey{VIP: "web", Backend: "b0"}] != unit.StateDraining ||
		body["backend"] != "web/b0" || body["state"] != "draining" {
		t.Fatalf("drain: %d %v %v", code, body, fb.states)
	}
	if code, body := do(t, s, "POST", "/v1/backends/web/b0/undrain"); code != http.StatusOK || fb.states[unit.BackendKey{VIP: "web", Backend: "b0"}] != 0 || body["state"] != "" {
		t.Fatalf("undrain: %d %v %v", code, body, fb.states)
	}
	if code, _ := do(t, s, "GET", "/v1/flows?backend=web/nope"); code != http.StatusBadRequest {
		t.Fatalf("flows of an unknown backend: %d", code)
	}
	if code, body := do(t, s, "GET", "/v1/health"); code != http.StatusOK || body["unit_id"].(float64) != 5 {
		t.Fatalf("health: %d %v", code, body)
	}
	if code, body := do(t, s, "GET", "/v1/streams"); code != http.StatusOK || body["listen"] != "10.0.0.1:7320" {
		t.Fatalf("streams: %d %v", code, body)
	}
	if code, body := do(t, s, "GET", "/v1/atoms?prefix=route/&host=10.0.0.9&limit=7"); code != http.StatusOK || body["matched"] != 7.0 ||
		body["page"].([]any)[0].(map[string]any)["key"] != "route/x" || body["page"].([]any)[0].(map[string]any)["host"] != "10.0.0.9" {
		t.Fatalf("atoms: %d %v", code, body)
	}
	if code, _ := do(t, s, "GET", "/v1/atoms?limit=0"); code != http.StatusBadRequest {
		t.Fatalf("atoms with limit 0: %d", code)
	}
	if code, body := do(t, s, "GET", "/v1/members"); code != http.StatusOK || body["name"] != "u" ||
		len(body["members"].([]any)) != 2 || body["members"].([]any)[1].(map[string]any)["state"] != "dead" ||
		body["refused"].(map[string]any)["decrypt"].(float64) != 2 {
		t.Fatalf("members: %d %v", code, body)
	}
	if code, body := do(t, s, "POST", "/v1/bgp/drain"); code != http.StatusOK || body["drained"] != true || !fb.bgpDrained {
		t.Fatalf("bgp drain: %d %v", code, body)
	}
	if code, body := do(t, s, "POST", "/v1/bgp/undrain"); code != http.StatusOK || body["drained"] != false || fb.bgpDrained {
		t.Fatalf("bgp undrain: %d %v", code, body)
	}
	fb.noBGP = true
	if code, body := do(t, s, "POST", "/v1/bgp/drain"); code != http.StatusBadRequest || !strings.Contains(fmt.Sprint(body["error"]), "no bgp section") {
		t.Fatalf("bgp drain without bgp: %d %v", code, body)
	}
	if code, body := do(t, s, "GET", "/v1/bgp"); code != http.StatusOK || body["asn"].(float64) != 65001 {
		t.Fatalf("bgp: %d %v", code, body)
	}
	if code, body := do(t, s, "GET", "/v1/explain?proto=tcp&src=bad&dst=1.2.3.4:80"); code != http.StatusBadRequest || body["error"] == nil {
		t.Fatalf("bad explain: %d %v", code, body)
	}
}
