package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tetherlb/tether/agent/sessionclient"
	"github.com/tetherlb/tether/agent/sessions"
	"github.com/tetherlb/tether/internal/localapi"
)

// apiAgent runs an agent's local API (and nothing else) on a socket in
// a temporary directory, with a table of at most max sessions.
func apiAgent(t *testing.T, ctx context.Context, max int) (*Agent, string) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "agent.sock")
	cfg := agentConfig(t, 7, []string{`"127.0.0.1:9"`}, fmt.Sprintf("sessions: {max: %d}\n", max))
	cfg.API.Socket = sock
	a, err := New(cfg, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.conn.Close() })
	actx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- a.ServeAPI(actx) }()
	t.Cleanup(func() { cancel(); <-done })
	// The socket exists once ServeAPI listens.
	for {
		c, err := net.Dial("unix", sock)
		if err == nil {
			c.Close()
			return a, sock
		}
		select {
		case err := <-done:
			t.Fatalf("API stopped: %v", err)
		case <-ctx.Done():
			t.Fatalf("no API on %s: %v", sock, err)
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// TestSessionAPI: an application's client library reports sessions over
// the agent's real socket; the agent holds them, lists them in pages,
// and answers every refusal with the error the library maps back.
func TestSessionAPI(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	a, sock := apiAgent(t, ctx, 3)
	c := sessionclient.New(sock)

	// A real TCP connection's session, from its addresses.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	dialed, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer dialed.Close()
	conn, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	s, err := sessionclient.TCP(conn, "web")
	if err != nil {
		t.Fatal(err)
	}
	if s.VIP != l.Addr().(*net.TCPAddr).AddrPort() || s.Client != netip.MustParseAddr("127.0.0.1") {
		t.Fatalf("session of the connection %v", s)
	}
	for range 2 { // idempotent
		if err := c.Established(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	ip, err := sessionclient.ClientIP(conn, true, time.Minute, "web")
	if err != nil {
		t.Fatal(err)
	}
	key := sessions.Session{Kind: sessions.KindAppKey, Key: []byte("user=joe"), VIP: netip.MustParseAddrPort("[2001:db8::10]:443")}
	for _, x := range []sessions.Session{ip, key} {
		if err := c.Established(ctx, x); err != nil {
			t.Fatal(err)
		}
	}
	if n := a.Sessions().Len(); n != 3 {
		t.Fatalf("the agent holds %d sessions, want 3", n)
	}
	extra := key
	extra.Key = []byte("user=ann")
	if err := c.Established(ctx, extra); !errors.Is(err, sessions.ErrFull) || !strings.Contains(err.Error(), "sessions.max") {
		t.Fatalf("a fourth session: %v, want ErrFull naming sessions.max", err)
	}
	if err := c.Terminated(ctx, extra); !errors.Is(err, sessions.ErrUnknown) {
		t.Fatalf("terminating an unknown session: %v, want ErrUnknown", err)
	}

	// The listing, in pages.
	api := localapi.NewClient(sock, "tether-agent")
	var page SessionsView
	if err := api.Do("GET", "/v1/sessions?limit=2", nil, &page); err != nil {
		t.Fatal(err)
	}
	if page.Total != 3 || page.Max != 3 || len(page.Sessions) != 2 || page.Next != 2 {
		t.Fatalf("first page %+v", page)
	}
	var rest SessionsView
	if err := api.Do("GET", "/v1/sessions?offset=2&limit=2", nil, &rest); err != nil {
		t.Fatal(err)
	}
	if len(rest.Sessions) != 1 || rest.Next != 0 {
		t.Fatalf("last page %+v", rest)
	}
	var kinds []string
	for _, v := range append(page.Sessions, rest.Sessions...) {
		kinds = append(kinds, v.Kind.String())
		if v.Kind == sessions.KindClientIP && v.Expires == nil {
			t.Errorf("a client_ip session without its expiry: %+v", v)
		}
	}
	if strings.Join(kinds, " ") != "tcp client_ip app_key" {
		t.Fatalf("listed kinds %v", kinds)
	}
	if page.Stats.Established != 3 || page.Stats.Refreshed != 1 || page.Stats.Refused != 2 {
		t.Fatalf("stats %+v", page.Stats)
	}
	if err := api.Do("GET", fmt.Sprintf("/v1/sessions?limit=%d", MaxSessionPage+1), nil, nil); err == nil {
		t.Fatal("a page beyond the bound was answered")
	}

	// Terminated, by identity alone.
	if err := c.Terminated(ctx, sessions.Session{Kind: sessions.KindTCP, Client: s.Client, ClientPort: s.ClientPort, VIP: s.VIP}); err != nil {
		t.Fatal(err)
	}
	if err := c.Terminated(ctx, s); !errors.Is(err, sessions.ErrUnknown) {
		t.Fatalf("terminated twice: %v, want ErrUnknown", err)
	}
}

// TestSessionAPIRefusesMalformed: what the library would not send, the
// agent refuses too (the library is not the only client), with nothing
// held.
func TestSessionAPIRefusesMalformed(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	a, sock := apiAgent(t, ctx, 10)
	api := localapi.NewClient(sock, "tether-agent")
	for name, body := range map[string]string{
		"not json":        `{`,
		"unknown field":   `{"kind":"tcp","client":"192.0.2.1","client_port":1,"vip":"10.0.0.1:80","color":"red"}`,
		"unknown kind":    `{"kind":"udp","client":"192.0.2.1"}`,
		"no client port":  `{"kind":"tcp","client":"192.0.2.1","vip":"10.0.0.1:80"}`,
		"bad address":     `{"kind":"tcp","client":"192.0.2.300","client_port":1,"vip":"10.0.0.1:80"}`,
		"ip no timeout":   `{"kind":"client_ip","client":"192.0.2.1"}`,
		"key too long":    fmt.Sprintf(`{"kind":"app_key","key":"%s","vip":"10.0.0.1:80"}`, strings.Repeat("QUFB", 100)),
		"key without vip": `{"kind":"app_key","key":"QUFB"}`,
	} {
		err := api.Do("POST", "/v1/sessions", []byte(body), nil)
		if err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if n := a.Sessions().Len(); n != 0 {
		t.Fatalf("%d sessions held after malformed requests", n)
	}
	// The library refuses before it sends.
	c := sessionclient.New(sock)
	if err := c.Established(ctx, sessions.Session{Kind: sessions.KindClientIP, Client: netip.MustParseAddr("192.0.2.1")}); !errors.Is(err, sessions.ErrInvalid) {
		t.Fatalf("library: %v, want ErrInvalid", err)
	}
	// And says where the agent is not.
	gone := sessionclient.New(filepath.Join(t.TempDir(), "none.sock"))
	if err := gone.Established(ctx, sessions.TCP(netip.MustParseAddrPort("192.0.2.1:1"), netip.MustParseAddrPort("10.0.0.1:80"), "")); err == nil || !strings.Contains(err.Error(), "none.sock") {
		t.Fatalf("no agent: %v", err)
	}
}
