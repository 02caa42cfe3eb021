// Command tether-agent is the host agent: it runs on each backend host,
// owns the health-and-load table of the host's applications and keeps
// the Tether units' caches in step with it. "run" starts it; the other
// commands talk to a running agent through its local API.
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/rs/zerolog"
	"github.com/spf13/cobra"

	"github.com/tetherlb/tether/agent"
	"github.com/tetherlb/tether/agent/migrate"
	"github.com/tetherlb/tether/agent/streams"
	"github.com/tetherlb/tether/agent/tunnel"
	"github.com/tetherlb/tether/api/hostpb"
	"github.com/tetherlb/tether/internal/localapi"
)

const defaultSocket = "/run/tether-agent/agent.sock"

func main() {
	fi, err := os.Stderr.Stat()
	tty := err == nil && fi.Mode()&os.ModeCharDevice != 0
	log := zerolog.New(zerolog.ConsoleWriter{Out: os.Stderr, TimeFormat: time.TimeOnly, NoColor: !tty}).With().Timestamp().Logger()
	if err := newRoot(log).Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "tether-agent:", err)
		os.Exit(1)
	}
}

// newRoot builds the command tree (the documentation's test checks its
// examples against it).
func newRoot(log zerolog.Logger) *cobra.Command {
	var socket, output string
	root := &cobra.Command{
		Use:           "tether-agent",
		Short:         "Tether host agent: health and load of this host's applications",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	socket = os.Getenv("TETHER_AGENT_SOCKET")
	if socket == "" {
		socket = defaultSocket
	}
	root.PersistentFlags().StringVar(&socket, "socket", socket, "the agent's API socket (env TETHER_AGENT_SOCKET)")
	root.PersistentFlags().StringVarP(&output, "output", "o", "table", "output format: table or json")
	client := func() *localapi.Client { return localapi.NewClient(socket, "tether-agent") }
	show := func(v agent.TableView) error {
		if output == "json" {
			enc := json.NewEncoder(os.Stdout)
			enc.SetIndent("", "  ")
			return enc.Encode(v)
		}
		fmt.Printf("host %d (%s) listening on %s, generation %d, units %v\n", v.Host, v.Name, v.Listen, v.Generation, v.Units)
		if v.Leader != 0 {
			fmt.Printf("group leader %d, members %v\n", v.Leader, v.Members)
		}
		if v.Granted != "" {
			fmt.Printf("authenticated: this host's key grants endpoints in %s\n", v.Granted)
		} else {
			fmt.Println("unauthenticated: no auth.key_file")
		}
		if len(v.Stats.Refused) > 0 {
			fmt.Printf("refused %v\n", v.Stats.Refused)
		}
		w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(w, "APPLICATION\tPROTO\tVIP\tENDPOINT\tHEALTH\tLOAD\tCAPACITY\tTARGET\tCURRENT\tCHECK")
		for _, a := range v.Apps {
			chk := "-"
			if a.Check != nil {
				chk = fmt.Sprintf("%s %s", a.Check.Health, a.Check.Detail)
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%d%%\t%d\t%s\t%s\t%s\n", a.Name, a.Proto, dash(a.VIP), dash(a.Endpoint),
				a.Health, a.Load, a.Capacity, a.Target, a.Current, chk)
		}
		return w.Flush()
	}

	var cfgPath string
	run := &cobra.Command{
		Use:   "run --config FILE",
		Short: "Run the agent",
		Long: `Run the agent: it checks the applications its configuration lists,
serves the local API on api.socket, and sends the table's changes and
heartbeats to the units. With tunnel configured it attaches the XDP
program that restores tunnel packets and fills it with the mappings the
units send over the host streams. With migration enabled it takes the
units' migrated connections and hands them to the applications' listener
shims or splices them to local servers. SIGINT/SIGTERM stop it and send the
units a goodbye so they clear this host at once; the tunnel program
stays attached, restoring packets, until the next agent takes it over.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cfgPath == "" {
				return errors.New("--config is required")
			}
			raw, err := os.ReadFile(cfgPath)
			if err != nil {
				return err
			}
			cfg, err := agent.ParseConfig(raw)
			if err != nil {
				return fmt.Errorf("%s: %w", cfgPath, err)
			}
			a, err := agent.New(cfg, log)
			if err != nil {
				return err
			}
			// The tunnel opens before the streams: their first resync
			// goes to the kernel (issue 13). Close leaves the program
			// attached and pinned, restoring packets, until the next
			// agent takes it over; it runs after the streams stopped.
			tun, err := cfg.OpenTunnel(log.With().Str("part", "tunnel").Logger())
			if err != nil {
				return fmt.Errorf("%s: %w", cfgPath, err)
			}
			// The host's sessions (issue 15) go to the units over the
			// streams.
			sopts := streams.Options{Log: log.With().Str("part", "streams").Logger(), Sessions: a.Sessions()}
			if tun != nil {
				defer tun.Close()
				a.AttachTunnel(tun)
				sopts.Sink = tun
			}
			// Migrated connections (issue 14) come over the streams, and
			// their ends go back over them: the Migrator's callback
			// reaches the streams made just below.
			var st *streams.Streams
			mlog := log.With().Str("part", "migration").Logger()
			mig, err := cfg.NewMigrator(mlog, func(unit string, e *hostpb.MigrationEnded) { agent.EndedTo(st, mlog)(unit, e) })
			if err != nil {
				return fmt.Errorf("%s: %w", cfgPath, err)
			}
			if mig != nil {
				// The units also hear what the migrated connections can
				// be handed to, and pass the host over when nothing
				// would take them.
				sopts.Migrator, sopts.Listeners = mig, mig
			}
			st, err = cfg.NewStreams(sopts)
			if err != nil {
				return fmt.Errorf("%s: %w", cfgPath, err)
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			if mig != nil && st != nil {
				a.AttachMigrator(mig)
				done := make(chan struct{})
				go func() { mig.Run(ctx); close(done) }()
				defer func() { stop(); <-done }()
			}
			if st != nil {
				a.AttachStreams(st)
				done := make(chan struct{})
				go func() { st.Run(ctx); close(done) }()
				defer func() { stop(); <-done }()
			}
			go func() {
				if err := a.ServeAPI(ctx); err != nil {
					log.Error().Err(err).Msg("agent API stopped")
					stop()
				}
			}()
			return a.Run(ctx)
		},
	}
	run.Flags().StringVar(&cfgPath, "config", "", "configuration file (YAML)")

	status := &cobra.Command{
		Use:   "status",
		Short: "Show the host's health-and-load table",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			var v agent.TableView
			if err := client().Do("GET", "/v1/table", nil, &v); err != nil {
				return err
			}
			return show(v)
		},
	}

	streamsCmd := &cobra.Command{
		Use:   "streams",
		Short: "Show the host's streams to the units and their state",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			var v agent.StreamsView
			if err := client().Do("GET", "/v1/streams", nil, &v); err != nil {
				return err
			}
			if output == "json" {
				enc := json.NewEncoder(os.Stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(v)
			}
			fmt.Printf("host %d, boot %016x\n", v.Host, v.Boot)
			w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "UNIT\tADDRESS\tSTATE\tSINCE\tCONNECTS\tRESYNC\tSEQ\tMAPPINGS\tSESSIONS\tIN\tOUT\tREFUSED\tSINK FAILURES\tLAST ERROR")
			for _, s := range v.Streams {
				state := s.State
				if s.Retry != "" {
					state += " " + s.Retry
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%d\t%s\t%d\t%d\t%s\t%d\t%d\t%d\t%d\t%s\n", s.Unit, s.Address, state,
					time.Since(s.Since).Round(time.Second), s.Connects, dash(s.LastResync), s.Seq, s.Mappings, dash(s.Sessions),
					s.MessagesIn, s.MessagesOut, s.Refused, s.SinkFailures, dash(s.LastError))
			}
			return w.Flush()
		},
	}

	tunnelCmd := &cobra.Command{
		Use:   "tunnel",
		Short: "Show the host side of the tunnels: the XDP program, its counters, the mappings per unit",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			var v agent.TunnelView
			if err := client().Do("GET", "/v1/tunnel", nil, &v); err != nil {
				return err
			}
			return showTunnel(v, output)
		},
	}
	var limit int
	tunnelMappings := &cobra.Command{
		Use:   "mappings [--limit N]",
		Short: "List the mappings the host's kernel holds: unit and flow ID → the connection it restores",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			var v agent.MappingsView
			if err := client().Do("GET", fmt.Sprintf("/v1/tunnel/mappings?limit=%d", limit), nil, &v); err != nil {
				return err
			}
			if output == "json" {
				enc := json.NewEncoder(os.Stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(v)
			}
			w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "UNIT\tFLOW ID\tPROTO\tCLIENT\tVIP")
			for _, m := range v.Mappings {
				fmt.Fprintf(w, "%s\t%#08x\t%s\t%s\t%s\n", m.Unit, m.FlowID, m.Proto, m.Client, m.VIP)
			}
			if err := w.Flush(); err != nil {
				return err
			}
			if v.Total > len(v.Mappings) {
				fmt.Printf("(%d of %d: --limit shows more)\n", len(v.Mappings), v.Total)
			}
			return nil
		},
	}
	tunnelMappings.Flags().IntVar(&limit, "limit", 1000, "at most this many")
	var removeCfg string
	tunnelRemove := &cobra.Command{
		Use:   "remove --config FILE",
		Short: "Detach and unpin the tunnel program an agent left (stop the agent first)",
		Long: `Detach the XDP program from tunnel.interface and remove its pins under
tunnel.pin_dir, with every mapping: for a host that is retired, or to
make a new tunnel.max_flows take effect. A stopped agent leaves the
program restoring packets on purpose; after this, tunnel packets reach
the host's stack unrestored and find no socket. The tunnel addresses
stay on the interface.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if removeCfg == "" {
				return errors.New("--config is required")
			}
			raw, err := os.ReadFile(removeCfg)
			if err != nil {
				return err
			}
			cfg, err := agent.ParseConfig(raw)
			if err != nil {
				return fmt.Errorf("%s: %w", removeCfg, err)
			}
			if cfg.Tunnel.Interface == "" {
				return fmt.Errorf("%s: tunnel.interface: not set: no tunnel to remove", removeCfg)
			}
			// A running agent holds the program: removing its pins now
			// would detach it only when that agent stops.
			if resp, err := localapi.HTTPClient(cfg.API.Socket, 2*time.Second).Get("http://local/v1/tunnel"); err == nil {
				resp.Body.Close()
				return fmt.Errorf("the agent answers on %s: stop it first", cfg.API.Socket)
			}
			found, err := tunnel.RemovePinned(cfg.Tunnel.Interface, cfg.Tunnel.PinDir)
			if err != nil {
				return err
			}
			if !found {
				fmt.Printf("no tunnel program pinned for %s under %s\n", cfg.Tunnel.Interface, cfg.Tunnel.PinDir)
				return nil
			}
			fmt.Printf("tunnel program on %s detached; pins under %s removed\n", cfg.Tunnel.Interface, cfg.Tunnel.PinDir)
			return nil
		},
	}
	tunnelRemove.Flags().StringVar(&removeCfg, "config", "", "the agent's configuration file (YAML)")
	tunnelCmd.AddCommand(tunnelRemove, tunnelMappings)

	var health, state string
	var load, capacity int
	set := &cobra.Command{
		Use:   "set APPLICATION [--health H] [--load N] [--capacity N] [--state S]",
		Short: "Change an application's health, load, capacity or directive",
		Long: `Change an application's row. --state draining (or inactive) starts the
directive handshake: the units stop sending new connections at once, and
the row's current state follows when every unit has confirmed.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var c agent.Change
			if cmd.Flags().Changed("health") {
				c.Health = &health
			}
			if cmd.Flags().Changed("state") {
				c.State = &state
			}
			if cmd.Flags().Changed("load") {
				if load < 0 || load > 100 {
					return fmt.Errorf("--load %d: want 0 to 100", load)
				}
				l := uint32(load)
				c.Load = &l
			}
			if cmd.Flags().Changed("capacity") {
				if capacity < 0 || capacity > 99 {
					return fmt.Errorf("--capacity %d: want 0 to 99", capacity)
				}
				k := uint32(capacity)
				c.Capacity = &k
			}
			if c == (agent.Change{}) {
				return errors.New("nothing to change: give --health, --load, --capacity or --state")
			}
			body, _ := json.Marshal(c)
			var v agent.TableView
			if err := client().Do("PATCH", "/v1/apps/"+args[0], body, &v); err != nil {
				return err
			}
			return show(v)
		},
	}
	set.Flags().StringVar(&health, "health", "", "healthy, failing or unknown")
	set.Flags().StringVar(&state, "state", "", "active, draining or inactive")
	set.Flags().IntVar(&load, "load", 0, "load, % of capacity")
	set.Flags().IntVar(&capacity, "capacity", 0, "capacity, 0-99, relative among applications of its type")

	var spec agent.AppSpec
	add := &cobra.Command{
		Use:   "add APPLICATION --endpoint ADDR:PORT [--vip ADDR:PORT] [--proto P] [--capacity N]",
		Short: "Add an application to the table (an application starting up)",
		Args:  cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			body, _ := json.Marshal(spec)
			var v agent.TableView
			if err := client().Do("PUT", "/v1/apps/"+args[0], body, &v); err != nil {
				return err
			}
			return show(v)
		},
	}
	add.Flags().StringVar(&spec.Proto, "proto", "tcp", "transport or application protocol")
	add.Flags().StringVar(&spec.VIP, "vip", "", "the VIP address:port the application serves")
	add.Flags().StringVar(&spec.Endpoint, "endpoint", "", "the address:port the application listens on")
	add.Flags().StringVar(&spec.URL, "url", "", "URL pattern narrowing the application")
	add.Flags().IntVar(&spec.Capacity, "capacity", 50, "capacity, 0-99")
	add.Flags().StringVar(&spec.State, "state", "active", "initial directive")
	add.Flags().StringVar(&spec.Health, "health", "healthy", "initial health")

	remove := &cobra.Command{
		Use:   "remove APPLICATION",
		Short: "Remove an application from the table (an application shutting down)",
		Args:  cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			var v agent.TableView
			if err := client().Do("DELETE", "/v1/apps/"+args[0], nil, &v); err != nil {
				return err
			}
			return show(v)
		},
	}
	migrationsCmd := &cobra.Command{
		Use:   "migrations",
		Short: "Show migrated connections: the hand-off socket, the listener shims, the splices, the counters, the live connections",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			var v agent.MigrationsView
			if err := client().Do("GET", "/v1/migrations", nil, &v); err != nil {
				return err
			}
			return showMigrations(v, output)
		},
	}
	var sessionOffset, sessionLimit int
	sessionsCmd := &cobra.Command{
		Use:   "sessions [--offset N] [--limit N]",
		Short: "List the sessions the host's applications reported, which the agent sends to a unit",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			var v agent.SessionsView
			if err := client().Do("GET", fmt.Sprintf("/v1/sessions?offset=%d&limit=%d", sessionOffset, sessionLimit), nil, &v); err != nil {
				return err
			}
			return showSessions(v, output)
		},
	}
	sessionsCmd.Flags().IntVar(&sessionOffset, "offset", 0, "the first session to list")
	sessionsCmd.Flags().IntVar(&sessionLimit, "limit", agent.DefaultSessionPage, fmt.Sprintf("sessions to list, at most %d", agent.MaxSessionPage))
	root.AddCommand(run, status, streamsCmd, tunnelCmd, migrationsCmd, sessionsCmd, set, add, remove)
	return root
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// showTunnel prints GET /v1/tunnel.
func showTunnel(v agent.TunnelView, output string) error {
	if output == "json" {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	if !v.Enabled {
		fmt.Println("no tunnel configured (tunnel.interface)")
		return nil
	}
	fmt.Printf("interface %s (%s), tunnel addresses %v, pinned under %s, at most %d mappings\n",
		v.Interface, v.Mode, v.Addresses, v.PinDir, v.MaxFlows)
	fmt.Printf("units accepted: %v\n", v.Units)
	c := v.Counters
	if v.CountersError != "" {
		fmt.Printf("counters: %s\n", v.CountersError)
	} else {
		fmt.Printf("restored %d, ipip %d; dropped: unknown_flow %d, unknown_unit %d, not_tunnel %d, malformed %d\n",
			c.Decapsulated, c.IPIP, c.UnknownFlow, c.UnknownUnit, c.NotTunnel, c.Malformed)
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "UNIT\tSOURCES\tMAPPINGS\tRESYNCS\tBATCHES\tADDED\tREMOVED\tNO SOURCE\tFAILURES\tLAST ERROR")
	for _, u := range v.ByUnit {
		fmt.Fprintf(w, "%s\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%s\n", u.Unit, dash(strings.Join(u.Sources, ",")), u.Mappings, u.Resyncs, u.Batches,
			u.Added, u.Removed, u.NoSource, u.Failures, dash(u.LastError))
	}
	return w.Flush()
}

// showMigrations prints GET /v1/migrations.
func showMigrations(v agent.MigrationsView, output string) error {
	if output == "json" {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	if !v.Enabled {
		fmt.Println("migration off (migration.enabled)")
		return nil
	}
	fmt.Printf("hand-off socket %s\n", v.Socket)
	for _, s := range v.Shims {
		fmt.Printf("listener shim %s: %v\n", s.Peer, s.Addrs)
	}
	for _, s := range v.Splices {
		pp := "none"
		if s.ProxyProtocol {
			pp = "v2"
		}
		fmt.Printf("splice %s → %s (PROXY %s)\n", s.VIP, s.To, pp)
	}
	fmt.Printf("uploaded %d, handed %v, failed %v, ended %v, live %d\n", v.Uploaded, v.Handed, v.Failed, v.Ended, v.Live)
	for _, s := range []struct {
		what string
		t    migrate.StepTimes
	}{{"upload", v.Upload}, {"hand-off", v.Handoff}} {
		if s.t.Count > 0 {
			fmt.Printf("%s: p50 %.0f µs, p99 %.0f µs, max %.0f µs (the latest %d)\n", s.what, s.t.P50, s.t.P99, s.t.Max, s.t.Count)
		}
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "UNIT\tID\tCLIENT\tVIP\tHANDOFF\tAGE")
	for _, c := range v.Connections {
		fmt.Fprintf(w, "%s\t%d\t%s\t%s\t%s\t%s\n", c.Unit, c.ID, c.Client, c.VIP, c.Handoff, time.Since(c.Since).Round(time.Second))
	}
	return w.Flush()
}

// showSessions prints GET /v1/sessions.
func showSessions(v agent.SessionsView, output string) error {
	if output == "json" {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	st := v.Stats
	fmt.Printf("%d sessions of at most %d; established %d, refreshed %d, terminated %d, expired %d, refused %d\n",
		v.Total, v.Max, st.Established, st.Refreshed, st.Terminated, st.Expired, st.Refused)
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "KIND\tCLIENT\tVIP\tKEY\tAPPLICATION\tAGE\tEXPIRES IN")
	for _, s := range v.Sessions {
		client := "-"
		if s.Client.IsValid() {
			client = s.Client.String()
			if s.ClientPort != 0 {
				client = netip.AddrPortFrom(s.Client, s.ClientPort).String()
			}
		}
		vip, expires := "-", "-"
		if s.VIP.IsValid() {
			vip = s.VIP.String()
		}
		if s.Expires != nil {
			expires = time.Until(*s.Expires).Round(time.Second).String()
		}
		key := "-"
		if len(s.Key) > 0 {
			key = fmt.Sprintf("%q", s.Key)
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", s.Kind, client, vip, key, dash(s.Application),
			time.Since(s.Since).Round(time.Second), expires)
	}
	if err := w.Flush(); err != nil {
		return err
	}
	if v.Next != 0 {
		fmt.Printf("more: --offset %d\n", v.Next)
	}
	return nil
}
