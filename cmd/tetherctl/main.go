// Command tetherctl is the operator's tool: it talks to a unit's admin
// API over its Unix socket.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
)

// defaultSocket is where tetherd serves the admin API by default.
const defaultSocket = "/run/tether/admin.sock"

type client struct {
	socket string
	output string
	http   *http.Client
}

func newClient(socket, output string) *client {
	return &client{socket: socket, output: output, http: &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", socket)
		}},
	}}
}

// do calls the API and decodes a JSON answer into out.
func (c *client) do(method, path string, body []byte, out any) error {
	req, err := http.NewRequest(method, "http://tether"+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		switch {
		case errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ENOENT):
			return fmt.Errorf("no admin socket at %s: is tetherd running? (start it with tetherd run, or pass --socket)", c.socket)
		case errors.Is(err, os.ErrPermission) || errors.Is(err, syscall.EACCES):
			return fmt.Errorf("permission denied on %s: run as root or as a member of the unit's admin group", c.socket)
		case errors.Is(err, syscall.ECONNREFUSED):
			return fmt.Errorf("nothing answers on %s: tetherd is not running (a stale socket)", c.socket)
		}
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error string `json:"error"`
		}
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

// show prints v as JSON with -o json, else calls table.
func (c *client) show(v any, table func(w *tabwriter.Writer)) error {
	if c.output == "json" {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	table(w)
	return w.Flush()
}

func main() {
	var socket, output string
	var c *client
	root := &cobra.Command{
		Use:           "tetherctl",
		Short:         "Operate a Tether unit through its admin socket",
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			if output != "table" && output != "json" {
				return fmt.Errorf("-o %q: want table or json", output)
			}
			c = newClient(socket, output)
			return nil
		},
	}
	if s := os.Getenv("TETHER_ADMIN_SOCKET"); s != "" {
		socket = s
	}
	def := socket
	if def == "" {
		def = defaultSocket
	}
	root.PersistentFlags().StringVar(&socket, "socket", def, "the unit's admin socket (env TETHER_ADMIN_SOCKET)")
	root.PersistentFlags().StringVarP(&output, "output", "o", "table", "output format: table or json")
	root.AddCommand(commands(func() *client { return c })...)
	if err := root.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "tetherctl:", err)
		os.Exit(1)
	}
}

func query(params ...string) string {
	v := url.Values{}
	for i := 0; i+1 < len(params); i += 2 {
		if params[i+1] != "" {
			v.Set(params[i], params[i+1])
		}
	}
	if len(v) == 0 {
		return ""
	}
	return "?" + v.Encode()
}
