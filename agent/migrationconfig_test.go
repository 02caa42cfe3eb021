package agent

import (
	"context"
	"encoding/json"
	"io"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rs/zerolog"
)

func TestMigrationConfigErrorsNameTheKey(t *testing.T) {
	on := tunnelStreams + "migration: {enabled: true, "
	cases := map[string][]string{
		"migration: {enabled: true}": {"migration.enabled", "needs streams.units"},
		"migration: {splice: [{vip: \"192.0.2.10:80\", to: \"127.0.0.1:8080\"}]}":                                      {"migration.splice", "needs migration.enabled"},
		on + "handoff_socket: run/h.sock}":                                                                             {"migration.handoff_socket", "run/h.sock", "absolute"},
		on + "handoff_socket: /run/tether-agent/agent.sock}":                                                           {"migration.handoff_socket", "api.socket"},
		on + "handoff_group: \"a b\"}":                                                                                 {"migration.handoff_group", "a b"},
		on + "splice: [{vip: \"[::ffff:192.0.2.10]:80\", to: \"127.0.0.1:8080\"}]}":                                    {"migration.splice[0].vip", "::ffff:192.0.2.10", "IPv4-mapped", "192.0.2.10:80"},
		on + "splice: [{vip: \"[2001:db8::1%eth0]:80\", to: \"127.0.0.1:8080\"}]}":                                     {"migration.splice[0].vip", "2001:db8::1%eth0", "without a zone"},
		on + "splice: [{vip: \"[fe80::1]:80\", to: \"127.0.0.1:8080\"}]}":                                              {"migration.splice[0].vip", "fe80::1", "link-local"},
		on + "splice: [{vip: \"[ff02::1]:80\", to: \"127.0.0.1:8080\"}]}":                                              {"migration.splice[0].vip", "ff02::1", "own address"},
		on + "splice: [{vip: \"[::]:80\", to: \"127.0.0.1:8080\"}]}":                                                   {"migration.splice[0].vip", "[::]:80", "own address"},
		on + "splice: [{vip: \"192.0.2.10\", to: \"127.0.0.1:8080\"}]}":                                                {"migration.splice[0].vip", "192.0.2.10", "address:port"},
		on + "splice: [{vip: \"192.0.2.10:80\", to: \"127.0.0.1\"}]}":                                                  {"migration.splice[0].to", "127.0.0.1", "address:port"},
		on + "splice: [{vip: \"192.0.2.10:80\", to: \"0.0.0.0:80\"}]}":                                                 {"migration.splice[0].to", "0.0.0.0:80"},
		on + "splice: [{vip: \"192.0.2.10:80\", to: \"127.0.0.1:1\", proxy_protocol: v1}]}":                            {"migration.splice[0].proxy_protocol", "v1", "v2 or none"},
		on + "splice: [{vip: \"192.0.2.10:80\", to: \"127.0.0.1:1\"}, {vip: \"192.0.2.10:80\", to: \"127.0.0.1:2\"}]}": {"migration.splice[1].vip", "also migration.splice[0].vip"},
		on + "splices: []}": {"splices"},
	}
	for y, want := range cases {
		_, err := ParseConfig([]byte(streamBase + y))
		for _, w := range want {
			if err == nil || !strings.Contains(err.Error(), w) {
				t.Errorf("%q: got %v, want it to say %s", y, err, w)
			}
		}
	}
	cfg, err := ParseConfig([]byte(streamBase + on + "splice: [{vip: \"192.0.2.10:80\", to: \"127.0.0.1:8080\"}, {vip: \"192.0.2.10:81\", to: \"[::1]:81\", proxy_protocol: none}, " +
		"{vip: \"[2001:db8::10]:80\", to: \"[::1]:8080\"}]}"))
	if err != nil {
		t.Fatal(err)
	}
	mc := cfg.Migration
	if mc.HandoffSocket != "/run/tether-agent/handoff.sock" || mc.HandoffGroup != "" || len(mc.splices) != 3 ||
		!mc.splices[0].ProxyProtocol || mc.splices[1].ProxyProtocol || mc.splices[1].To.String() != "[::1]:81" ||
		mc.splices[2].VIP != netip.MustParseAddrPort("[2001:db8::10]:80") || !mc.splices[2].ProxyProtocol {
		t.Errorf("defaults: %+v", mc)
	}
	t.Setenv("TETHER_AGENT_MIGRATION_HANDOFF_SOCKET", "/tmp/x.sock")
	if cfg, err := ParseConfig([]byte(streamBase + on + "}")); err != nil || cfg.Migration.HandoffSocket != "/tmp/x.sock" {
		t.Errorf("environment override: %v, %v", cfg, err)
	}
	off, err := ParseConfig([]byte(streamBase))
	if err != nil {
		t.Fatal(err)
	}
	if m, err := off.NewMigrator(zerolog.Nop(), nil); m != nil || err != nil {
		t.Errorf("migration off: %v, %v", m, err)
	}
}

// TestMigrationsView: an enabled migration opens its socket (mode 0600
// without a group) and shows at GET /v1/migrations with its splices.
func TestMigrationsView(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "handoff.sock")
	cfg, err := ParseConfig([]byte(streamBase + tunnelStreams + "migration: {enabled: true, handoff_socket: " + sock +
		", splice: [{vip: \"192.0.2.10:80\", to: \"127.0.0.1:8080\"}]}"))
	if err != nil {
		t.Fatal(err)
	}
	m, err := cfg.NewMigrator(zerolog.Nop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(sock)
	if err != nil || fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Fatalf("hand-off socket: %v, %v", fi, err)
	}
	a := &Agent{}
	a.AttachMigrator(m)
	for _, tc := range []struct {
		a       *Agent
		enabled bool
	}{{&Agent{}, false}, {a, true}} {
		w := httptest.NewRecorder()
		tc.a.routes(context.Background()).ServeHTTP(w, httptest.NewRequest("GET", "/v1/migrations", nil))
		body, _ := io.ReadAll(w.Result().Body)
		var v MigrationsView
		if err := json.Unmarshal(body, &v); err != nil || w.Code != 200 {
			t.Fatalf("%d %s: %v", w.Code, body, err)
		}
		if v.Enabled != tc.enabled || (tc.enabled && (v.Socket != sock || len(v.Splices) != 1 || !v.Splices[0].ProxyProtocol)) {
			t.Fatalf("view %s", body)
		}
	}
}
