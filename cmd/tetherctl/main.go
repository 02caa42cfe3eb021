// Command tetherctl is the operator's tool: it talks to a unit's admin
// API over its Unix socket.
package main

import (
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"github.com/tetherlb/tether/internal/localapi"
)

// defaultSocket is where tetherd serves the admin API by default.
const defaultSocket = "/run/tether/admin.sock"

type client struct {
	*localapi.Client
	output string
}

func newClient(socket, output string) *client {
	return &client{Client: localapi.NewClient(socket, "tetherd"), output: output}
}

// do calls the API and decodes a JSON answer into out.
func (c *client) do(method, path string, body []byte, out any) error {
	return c.Do(method, path, body, out)
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
	if err := newRoot().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "tetherctl:", err)
		os.Exit(1)
	}
}

// newRoot builds the command tree (the documentation's test checks its
// examples against it).
func newRoot() *cobra.Command {
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
	return root
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
