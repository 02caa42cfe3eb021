package sessionclient

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"time"

	"github.com/tetherlb/tether/agent/sessions"
)

// Client reports sessions to the agent. It is safe for concurrent use.
type Client struct {
	socket string
	http   *http.Client
}

// timeout bounds one call when the caller's context has no deadline:
// an agent that hangs must not hang the application.
const timeout = 5 * time.Second

// New returns a client of the agent's API on socketPath (the agent's
// api.socket).
func New(socketPath string) *Client {
	return &Client{socket: socketPath, http: &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", socketPath)
		}},
	}}
}

// Established reports that s is established. Reporting a session the
// agent holds refreshes it (a client-IP session's idle timeout starts
// again), so an application keeps a client-IP session by establishing
// it again within its timeout.
func (c *Client) Established(ctx context.Context, s sessions.Session) error {
	s = s.Canonical()
	if err := s.Validate(); err != nil {
		return fmt.Errorf("session established: %w", err)
	}
	return c.call(ctx, http.MethodPost, s)
}

// Terminated reports that s ended; only its identity counts.
func (c *Client) Terminated(ctx context.Context, s sessions.Session) error {
	s = s.Canonical()
	if err := s.ValidIdentity(); err != nil {
		return fmt.Errorf("session terminated: %w", err)
	}
	return c.call(ctx, http.MethodDelete, s)
}

func (c *Client) call(ctx context.Context, method string, s sessions.Session) error {
	what := map[string]string{http.MethodPost: "session established", http.MethodDelete: "session terminated"}[method]
	body, err := json.Marshal(s)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://agent/v1/sessions", bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("%s: the agent at %s: %w", what, c.socket, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	if resp.StatusCode == http.StatusOK {
		return nil
	}
	var e struct {
		Error string `json:"error"`
	}
	msg := string(bytes.TrimSpace(data))
	if json.Unmarshal(data, &e) == nil && e.Error != "" {
		msg = e.Error
	}
	var sentinel error
	switch resp.StatusCode {
	case http.StatusBadRequest:
		sentinel = sessions.ErrInvalid
	case http.StatusNotFound:
		sentinel = sessions.ErrUnknown
	case http.StatusInsufficientStorage:
		sentinel = sessions.ErrFull
	default:
		return fmt.Errorf("%s: the agent answered %s: %s", what, resp.Status, msg)
	}
	return fmt.Errorf("%s: %w (the agent: %s)", what, sentinel, msg)
}

// TCP is the session of a TCP connection the application accepted: the
// client is the connection's remote address, the VIP its local one (on
// a host behind Tether, a connection to a VIP arrives with the VIP as
// its local address).
func TCP(conn net.Conn, application string) (sessions.Session, error) {
	remote, err := addrPort(conn.RemoteAddr())
	if err != nil {
		return sessions.Session{}, fmt.Errorf("remote address: %w", err)
	}
	local, err := addrPort(conn.LocalAddr())
	if err != nil {
		return sessions.Session{}, fmt.Errorf("local address: %w", err)
	}
	return sessions.TCP(remote, local, application), nil
}

// ClientIP is the client-IP session of a connection's client (scoped to
// the VIP the connection reached when scoped is true), idle for at most
// timeout.
func ClientIP(conn net.Conn, scoped bool, timeout time.Duration, application string) (sessions.Session, error) {
	if timeout < time.Millisecond || timeout > sessions.MaxIdleTimeout {
		return sessions.Session{}, fmt.Errorf("%w: idle timeout %v, want 1ms to %v", sessions.ErrInvalid, timeout, sessions.MaxIdleTimeout)
	}
	remote, err := addrPort(conn.RemoteAddr())
	if err != nil {
		return sessions.Session{}, fmt.Errorf("remote address: %w", err)
	}
	s := sessions.Session{Kind: sessions.KindClientIP, Client: remote.Addr(), IdleTimeoutMS: uint32(timeout / time.Millisecond), Application: application}
	if scoped {
		if s.VIP, err = addrPort(conn.LocalAddr()); err != nil {
			return sessions.Session{}, fmt.Errorf("local address: %w", err)
		}
	}
	return s.Canonical(), nil
}

// errNotTCP is addrPort's error for an address that is not TCP's.
var errNotTCP = errors.New("not a TCP address")

func addrPort(a net.Addr) (netip.AddrPort, error) {
	t, ok := a.(*net.TCPAddr)
	if !ok {
		return netip.AddrPort{}, fmt.Errorf("%v (%T): %w", a, a, errNotTCP)
	}
	return t.AddrPort(), nil
}
