package localapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"syscall"
	"time"
)

// Client calls a local API.
type Client struct {
	socket string
	// what names the server in messages: "tetherd", "tether-agent".
	what string
	http *http.Client
}

// NewClient returns a client of the API on socket; what names the
// daemon serving it, for error messages.
func NewClient(socket, what string) *Client {
	return &Client{socket: socket, what: what, http: HTTPClient(socket, 30*time.Second)}
}

// HTTPClient returns a plain HTTP client whose every request goes to the
// Unix socket, whatever the URL's host, for callers that relay requests
// rather than decode answers.
func HTTPClient(socket string, timeout time.Duration) *http.Client {
	return &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", socket)
		}},
	}
}

// Do calls the API and decodes a JSON answer into out (a *[]byte gets
// the raw body). A non-200 answer becomes an error with the server's
// message.
func (c *Client) Do(method, path string, body []byte, out any) error {
	req, err := http.NewRequest(method, "http://local"+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		switch {
		case errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ENOENT):
			return fmt.Errorf("no socket at %s: is %s running? (or pass --socket)", c.socket, c.what)
		case errors.Is(err, os.ErrPermission) || errors.Is(err, syscall.EACCES):
			return fmt.Errorf("permission denied on %s: run as root or as a member of the group %s allows", c.socket, c.what)
		case errors.Is(err, syscall.ECONNREFUSED):
			return fmt.Errorf("nothing answers on %s: %s is not running (a stale socket)", c.socket, c.what)
		}
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		var e apiError
		if json.Unmarshal(data, &e) == nil && e.Error != "" {
			return errors.New(e.Error)
		}
		return fmt.Errorf("%s: %s", resp.Status, bytes.TrimSpace(data))
	}
	if raw, ok := out.(*[]byte); ok {
		*raw = data
		return nil
	}
	if out != nil {
		return json.Unmarshal(data, out)
	}
	return nil
}
