package main

import (
	"fmt"
	"io"
	"maps"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/tetherlb/tether/api/unit"
)

type backendView struct {
	unit.BackendReport
	Connections int `json:"connections"`
}

// commands is the command tree; cl returns the client once flags are
// parsed.
func commands(cl func() *client) []*cobra.Command {
	status := &cobra.Command{Use: "status", Short: "Show the unit, its forwarder and its configuration generation", Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			var s unit.Status
			if err := cl().do("GET", "/v1/status", nil, &s); err != nil {
				return err
			}
			return cl().show(s, func(w *tabwriter.Writer) {
				if s.Problem != "" {
					printProblem(w, &s)
					return
				}
				up := "down"
				if s.Forwarder.Connected {
					up = fmt.Sprintf("connected (pid %d, %d workers)", s.Forwarder.PID, s.Forwarder.Workers)
				}
				fmt.Fprintf(w, "unit\t%s\n", s.Unit)
				fmt.Fprintf(w, "config\t%s (generation %d)\n", s.Config, s.Generation)
				fmt.Fprintf(w, "control\tpid %d, up %s\n", s.ControlPID, s.Uptime)
				fmt.Fprintf(w, "forwarder\t%s\n", up)
				sup := s.Forwarder.Supervisor
				if sup.PID != 0 {
					how := "started"
					if sup.Adopted {
						how = "adopted"
					}
					fmt.Fprintf(w, "supervisor\t%s pid %d, %d restarts%s\n", how, sup.PID, sup.Restarts, map[bool]string{true: ", last: " + sup.LastExit, false: ""}[sup.LastExit != ""])
				}
				fmt.Fprintf(w, "connections\t%d\n", s.Flows)
				if s.EventsLost > 0 {
					fmt.Fprintf(w, "flow events lost\t%d (the inventory was re-read from the forwarder)\n", s.EventsLost)
				}
				fmt.Fprintf(w, "punts\t%d decided, %d without backend, %d refused\n", s.Punts.Decided, s.Punts.NoBackend, s.Punts.Refused)
				if s.Punts.MidFlow+s.Punts.MidFlowRefused > 0 {
					fmt.Fprintf(w, "mid-flow punts\t%d routed (%d by the atom manager), %d refused (reset)\n", s.Punts.MidFlow, s.Punts.MidFlowFound, s.Punts.MidFlowRefused)
				}
				if c := s.Cluster; c != nil {
					ready := "not ready (pulling its atoms from the other units)"
					if c.Ready {
						ready = "ready"
					}
					fmt.Fprintf(w, "cluster\t%s, %d live units, %d atoms\n", ready, c.Members, c.Atoms)
				}
				keys := slices.SortedFunc(maps.Keys(s.States), func(a, b unit.BackendKey) int { return strings.Compare(a.String(), b.String()) })
				for _, k := range keys {
					fmt.Fprintf(w, "override\t%s %s\n", k, s.States[k])
				}
			})
		}}
	vips := &cobra.Command{Use: "vips", Short: "List VIPs with their traffic", Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			var vs []unit.VIPReport
			if err := cl().do("GET", "/v1/vips", nil, &vs); err != nil {
				return err
			}
			return cl().show(vs, func(w *tabwriter.Writer) {
				fmt.Fprintln(w, "NAME\tSERVICE\tMODE\tPACKETS\tBYTES\tNEW FLOWS")
				for _, v := range vs {
					if v.Removed {
						continue
					}
					mode := v.Mode.String()
					if v.Punt {
						mode += "+punt"
					}
					fmt.Fprintf(w, "%s\t%s:%d/%s\t%s\t%d\t%d\t%d\n", v.Name, v.Address, v.Port, v.Protocol, mode, v.Packets, v.Bytes, v.NewFlows)
				}
			})
		}}
	backends := &cobra.Command{Use: "backends", Short: "List backends with state, weight, connections and traffic", Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			var bs []backendView
			if err := cl().do("GET", "/v1/backends", nil, &bs); err != nil {
				return err
			}
			return cl().show(bs, func(w *tabwriter.Writer) {
				fmt.Fprintln(w, "VIP\tBACKEND\tADDRESS\tSTATE\tWEIGHT\tCONNECTIONS\tNEW FLOWS\tPACKETS\tREPLIES")
				for _, b := range bs {
					fmt.Fprintf(w, "%s\t%s\t%s:%d\t%s\t%d\t%d\t%d\t%d\t%d\n", b.VIP, b.Name, b.Address, b.Port, b.State, b.Weight, b.Connections, b.NewFlows, b.Packets, b.ReplyPackets)
				}
			})
		}}
	var fVIP, fBackend, fClient string
	var fOffset, fLimit int
	flows := &cobra.Command{Use: "flows", Short: "List connections, filtered and paginated", Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			var page unit.FlowsReply
			q := query("vip", fVIP, "backend", fBackend, "client", fClient, "offset", fmt.Sprint(fOffset), "limit", fmt.Sprint(fLimit))
			if err := cl().do("GET", "/v1/flows"+q, nil, &page); err != nil {
				return err
			}
			return cl().show(page, func(w *tabwriter.Writer) {
				fmt.Fprintln(w, "CLIENT\tVIP\tPROTO\tBACKEND ID\tMODE\tIDLE\tWORKER")
				for _, f := range page.Flows {
					fmt.Fprintf(w, "%s:%d\t%s:%d\t%s\t%d\t%s\t%dms\t%d\n", f.Key.SrcAddr(), f.Key.SrcPort, f.Key.DstAddr(), f.Key.DstPort,
						protoName(f.Key.Proto), f.Action.Backend, unit.Mode(f.Action.Mode), f.IdleMS, f.Worker)
				}
				fmt.Fprintf(w, "(%d shown of %d matching, from offset %d)\n", len(page.Flows), page.Matched, fOffset)
			})
		}}
	flows.Flags().StringVar(&fVIP, "vip", "", "VIP address or address:port")
	flows.Flags().StringVar(&fBackend, "backend", "", "backend as VIP/BACKEND (or its ID)")
	flows.Flags().StringVar(&fClient, "client", "", "client address")
	flows.Flags().IntVar(&fOffset, "offset", 0, "matches to skip")
	flows.Flags().IntVar(&fLimit, "limit", 100, "flows to show (at most 10000)")
	stats := &cobra.Command{Use: "stats", Short: "Show packet counters and drops by reason", Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			var r unit.Report
			if err := cl().do("GET", "/v1/stats", nil, &r); err != nil {
				return err
			}
			return cl().show(r, func(w *tabwriter.Writer) {
				fmt.Fprintf(w, "received\t%d packets\t%d bytes\n", r.RxPackets, r.RxBytes)
				fmt.Fprintf(w, "sent\t%d packets\t%d bytes\n", r.TxPackets, r.TxBytes)
				fmt.Fprintf(w, "flows\t%d entries\t%d new (%d reusing a closed flow's tuple)\t%d SNAT ports taken back from half-open handshakes\n",
					r.Flows, r.NewFlows, r.Reopened, r.HalfOpenReclaimed)
				if r.Recovered > 0 {
					fmt.Fprintf(w, "recovered\t%d half-NAT flows made again from a backend's reply\n", r.Recovered)
				}
				if r.ChecksumsFinished > 0 {
					fmt.Fprintf(w, "checksums finished\t%d partial checksums completed by the forwarder\n", r.ChecksumsFinished)
				}
				if r.TooBigAnswered+r.TooBigFragmented > 0 {
					fmt.Fprintf(w, "too big for a tunnel\t%d packets answered with ICMP\t%d sent in fragments\n", r.TooBigAnswered, r.TooBigFragmented)
				}
				if r.ResetsSent > 0 {
					fmt.Fprintf(w, "resets sent\t%d segments of connections the unit does not know\n", r.ResetsSent)
				}
				if r.PuntedMidFlow > 0 {
					fmt.Fprintf(w, "mid-flow punts\t%d segments of connections without a flow, held for the control process\t%d of them refused\n",
						r.PuntedMidFlow, r.MidFlowRefused)
				}
				if r.Punted+r.PuntsSentDirect+r.EventsSentDirect > 0 {
					fmt.Fprintf(w, "to the control process\t%d packets held for its decision\t%d punts and %d flow events sent by the workers themselves\n",
						r.Punted, r.PuntsSentDirect, r.EventsSentDirect)
				}
				if r.SYNAnswers+r.ToAcceptor > 0 {
					fmt.Fprintf(w, "l7 acceptor\t%d SYNs answered and %d handshake ACKs taken by the workers\t%d packets handed to the acceptor, %d of its answers sent\n",
						r.SYNAnswers, r.HandshakeACKs, r.ToAcceptor, r.AcceptorAnswers)
				}
				fmt.Fprintf(w, "lost before the workers\t%d by the kernel (AF_XDP rings, TUN queue)\t%d by the port (no buffer, a worker's queue full)\n",
					r.PortDropped.Kernel, r.PortDropped.Port)
				if r.PortDropped.HandOff > 0 {
					fmt.Fprintf(w, "lost between workers\t%d (a hand-off ring full, or longer than the MTU)\n", r.PortDropped.HandOff)
				}
				for _, wr := range r.Workers {
					fmt.Fprintf(w, "worker %d\t%d packets\t%d new flows, %d entries\t%d handed to other workers, %d from them\n",
						wr.Worker, wr.RxPackets, wr.NewFlows, wr.Flows, wr.HandedOut, wr.HandedIn)
				}
				// The report lists every reason; the table shows those that
				// happened.
				for _, k := range sortedKeys(r.Drops) {
					if r.Drops[k] > 0 {
						fmt.Fprintf(w, "drop\t%s\t%d\n", k, r.Drops[k])
					}
				}
				for _, k := range sortedKeys(r.Passes) {
					if r.Passes[k] > 0 {
						fmt.Fprintf(w, "pass\t%s\t%d\n", k, r.Passes[k])
					}
				}
			})
		}}
	setState := func(verb, help string) *cobra.Command {
		return &cobra.Command{Use: verb + " VIP/BACKEND", Short: help, Args: cobra.ExactArgs(1),
			RunE: func(_ *cobra.Command, args []string) error {
				key, err := unit.ParseBackendKey(args[0])
				if err != nil {
					return fmt.Errorf("%w (see tetherctl backends)", err)
				}
				var out unit.StateChange
				if err := cl().do("POST", "/v1/backends/"+url.PathEscape(key.VIP)+"/"+url.PathEscape(key.Backend)+"/"+verb, nil, &out); err != nil {
					return err
				}
				return cl().show(out, func(w *tabwriter.Writer) {
					state := out.State.String()
					if out.State == 0 {
						state = "as configured"
					}
					fmt.Fprintf(w, "%s\t%s\n", out.Backend, state)
				})
			}}
	}
	reload := &cobra.Command{Use: "reload", Short: "Reload the configuration file; an invalid one is refused whole", Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			var out unit.Reloaded
			if err := cl().do("POST", "/v1/config/reload", nil, &out); err != nil {
				return err
			}
			return cl().show(out, func(w *tabwriter.Writer) { fmt.Fprintf(w, "reloaded\tgeneration %d\n", out.Generation) })
		}}
	cfg := &cobra.Command{Use: "config", Short: "Show, validate or apply configuration"}
	cfg.AddCommand(&cobra.Command{Use: "show", Short: "Print the running configuration", Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			var raw []byte
			if err := cl().do("GET", "/v1/config", nil, &raw); err != nil {
				return err
			}
			_, err := os.Stdout.Write(raw)
			return err
		}}, &cobra.Command{Use: "validate FILE", Short: "Check a candidate configuration without applying it", Args: cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			body, err := os.ReadFile(args[0])
			if err != nil {
				return err
			}
			var out map[string]string
			if err := cl().do("POST", "/v1/config/validate", body, &out); err != nil {
				return fmt.Errorf("%s is not valid:\n%w", args[0], err)
			}
			return cl().show(out, func(w *tabwriter.Writer) { fmt.Fprintf(w, "%s\tvalid\n", args[0]) })
		}}, &cobra.Command{Use: "apply FILE", Short: "Validate a configuration, write it over the unit's file and reload (FILE - reads standard input)", Args: cobra.ExactArgs(1),
		Long: `Apply sends FILE (- for standard input) to the unit, which checks it as
"config validate" does, writes it over its configuration file (atomically,
keeping the file's mode) and reloads. An invalid file changes nothing; a
reload the unit refuses puts the previous file back, and the running
configuration stays. A unit in rescue mode (no valid configuration yet)
writes the file and restarts with it: follow with tetherctl status.`,
		RunE: func(_ *cobra.Command, args []string) error {
			name := args[0]
			var body []byte
			var err error
			if name == "-" {
				name = "standard input"
				body, err = io.ReadAll(os.Stdin)
			} else {
				body, err = os.ReadFile(name)
			}
			if err != nil {
				return fmt.Errorf("read %s: %w", name, err)
			}
			var out unit.Applied
			if err := cl().do("PUT", "/v1/config", body, &out); err != nil {
				return fmt.Errorf("%s not applied:\n%w", name, err)
			}
			return cl().show(out, func(w *tabwriter.Writer) {
				if out.Restarting {
					fmt.Fprintf(w, "written\t%s: tetherd restarts with it (see tetherctl status)\n", out.Path)
					return
				}
				fmt.Fprintf(w, "applied\t%s (generation %d)\n", out.Path, out.Generation)
			})
		}})
	explain := &cobra.Command{Use: "explain PROTO SRC:PORT DST:PORT", Short: "Say which backend a flow would get, why, and how its packets are rewritten", Args: cobra.ExactArgs(3),
		RunE: func(_ *cobra.Command, args []string) error {
			var e unit.Explanation
			if err := cl().do("GET", "/v1/explain"+query("proto", args[0], "src", args[1], "dst", args[2]), nil, &e); err != nil {
				return err
			}
			return cl().show(e, func(w *tabwriter.Writer) {
				if e.VIP != "" {
					fmt.Fprintf(w, "vip\t%s (%s)\n", e.VIP, e.Mode)
				}
				if e.Backend != "" {
					fmt.Fprintf(w, "backend\t%s\n", e.Backend)
				}
				fmt.Fprintf(w, "why\t%s\n", e.Reason)
				if e.Rewritten != "" {
					fmt.Fprintf(w, "rewritten\t%s\n", e.Rewritten)
				}
			})
		}}
	healthCmd := &cobra.Command{Use: "health", Short: "Show the health-and-load cache: hosts, their applications, verdicts and allotments", Args: cobra.NoArgs,
		Long: `Show what this unit knows from host agents and its own probes: every host
(last heartbeat, generation, group leader) with its application rows
(health, load, capacity, target and current directive); then every
backend of a VIP whose health source is agent or probe, with the verdict
(the state the forwarder is told and why) and its share of new
connections; then each VIP's current token allotment.`,
		RunE: func(*cobra.Command, []string) error {
			var h unit.HealthView
			if err := cl().do("GET", "/v1/health", nil, &h); err != nil {
				return err
			}
			return cl().show(h, func(w *tabwriter.Writer) { printHealth(w, &h) })
		}}
	streamsCmd := &cobra.Command{Use: "streams", Short: "Show the host agents' streams to this unit", Args: cobra.NoArgs,
		Long: `Show the unit's end of the host streams (hosts.listen): every host that
connected since the unit started, with its address, state and since when,
the resync its last hello got, the sequence and acknowledged sequence of
its flow-ID mappings, messages in and out and why its last stream ended;
then the connections and messages refused, by reason.`,
		RunE: func(*cobra.Command, []string) error {
			var v unit.StreamsView
			if err := cl().do("GET", "/v1/streams", nil, &v); err != nil {
				return err
			}
			return cl().show(v, func(w *tabwriter.Writer) { printStreams(w, &v) })
		}}
	l7Cmd := &cobra.Command{Use: "l7", Short: "Show the l7 VIPs' acceptors and the connections they migrated", Args: cobra.NoArgs,
		Long: `Show what became of the connections the l7 VIPs' acceptors took: migrated
to a host, taken there (uploaded), failed (the host reset the client),
never answered, ended; those the acceptor answered itself (no host, host
down, bad request); the connections each rule decided; and per VIP the
acceptor's connections in progress, the request bytes it holds against
its bound, and its counters.`,
		RunE: func(*cobra.Command, []string) error {
			var v unit.L7View
			if err := cl().do("GET", "/v1/l7", nil, &v); err != nil {
				return err
			}
			return cl().show(v, func(w *tabwriter.Writer) { printL7(w, &v) })
		}}
	routerCmd := &cobra.Command{Use: "router", Short: "Show a request router's counters (tetherctl --socket /run/tether/router-VIP.sock router)", Args: cobra.NoArgs,
		Long: `Show the counters of a request router (tetherd router), read from its own
admin socket, which --socket names (tetherd router --admin-socket; by
default /run/tether/router-VIP.sock): client connections and requests,
answers by status class, requests by rule and by backend, the host
connections it dialed and reused, failures by kind, the requests it
retried on another backend, and the backends it ejects now.`,
		RunE: func(*cobra.Command, []string) error {
			var v unit.RouterStats
			if err := cl().do("GET", "/v1/router", nil, &v); err != nil {
				return err
			}
			return cl().show(v, func(w *tabwriter.Writer) { printRouter(w, &v) })
		}}
	membersCmd := &cobra.Command{Use: "members", Short: "Show the cluster of units as this unit sees it", Args: cobra.NoArgs,
		Long: `Show the units of this unit's cluster (the cluster section): each unit seen
since this one started, itself included, with its gossip address, state
(alive, suspect, dead, left) and since when, its boot ID and tunnel
sources; then the membership events counted, and the gossip refused by
reason (decrypt: a stranger or a unit with another key; unencrypted;
meta: a unit whose metadata is malformed or of another version).`,
		RunE: func(*cobra.Command, []string) error {
			var v unit.MembersView
			if err := cl().do("GET", "/v1/members", nil, &v); err != nil {
				return err
			}
			return cl().show(v, func(w *tabwriter.Writer) { printMembers(w, &v) })
		}}
	bgpCmd := &cobra.Command{Use: "bgp", Short: "Show the VIPs' announcement to routers over BGP", Args: cobra.NoArgs,
		Long: `Show the unit's BGP speaker (the bgp section): each router's session with
its state (established, or idle, connect, active, opensent, openconfirm
while it comes up), since when it is established, how often it went
down and why last; then the prefixes announced (VIPs, and nat VIPs'
own SNAT addresses), those announced as backups (other units' SNAT
addresses, with the AS prepended), and those withheld with why (no
backend takes new connections, no forwarder, the cluster's atoms not
pulled yet, the unit is drained).`,
		RunE: func(*cobra.Command, []string) error {
			var v unit.BGPView
			if err := cl().do("GET", "/v1/bgp", nil, &v); err != nil {
				return err
			}
			return cl().show(v, func(w *tabwriter.Writer) { printBGP(w, &v) })
		}}
	for _, d := range []struct{ verb, short string }{
		{"drain", "Withdraw every VIP from the routers, so that they send this unit nothing new (kept across restarts)"},
		{"undrain", "Undo bgp drain: announce the VIPs that can be served again"},
	} {
		bgpCmd.AddCommand(&cobra.Command{Use: d.verb, Short: d.short, Args: cobra.NoArgs,
			RunE: func(*cobra.Command, []string) error {
				var v unit.BGPView
				if err := cl().do("POST", "/v1/bgp/"+d.verb, nil, &v); err != nil {
					return err
				}
				return cl().show(v, func(w *tabwriter.Writer) { printBGP(w, &v) })
			}})
	}
	var atomsReq unit.AtomsRequest
	atomsCmd := &cobra.Command{Use: "atoms", Short: "Show the distributed atom manager: replication and this unit's atoms", Args: cobra.NoArgs,
		Long: `Show this unit's portion of the distributed atom manager (the cluster
section): whether the unit is ready (it pulled its atoms from the other
units), the replication level, the counts of atoms, zombies, caches and
orphans; then each stream to another unit with its replication status
(connected, pulled, atoms queued, sent, acknowledged, dropped, resyncs)
and lag (add to acknowledgement, median and p99); then the atoms whose
key starts with --prefix (route/ for flows, session/ for sessions) and
whose host is --host, at most --limit of them in key order.`,
		RunE: func(*cobra.Command, []string) error {
			q := url.Values{}
			if atomsReq.Prefix != "" {
				q.Set("prefix", atomsReq.Prefix)
			}
			if atomsReq.Host != "" {
				q.Set("host", atomsReq.Host)
			}
			if atomsReq.Limit != 0 {
				q.Set("limit", strconv.Itoa(atomsReq.Limit))
			}
			path := "/v1/atoms"
			if len(q) > 0 {
				path += "?" + q.Encode()
			}
			var v unit.AtomsView
			if err := cl().do("GET", path, nil, &v); err != nil {
				return err
			}
			return cl().show(v, func(w *tabwriter.Writer) { printAtoms(w, &v) })
		}}
	atomsCmd.Flags().StringVar(&atomsReq.Prefix, "prefix", "", "list atoms whose key starts with this")
	atomsCmd.Flags().StringVar(&atomsReq.Host, "host", "", "list atoms of this host (its address)")
	atomsCmd.Flags().IntVar(&atomsReq.Limit, "limit", unit.DefaultAtomsPage, "list at most this many atoms")
	return []*cobra.Command{status, vips, backends, flows, stats, healthCmd, streamsCmd, l7Cmd, routerCmd, membersCmd, atomsCmd, bgpCmd,
		setState("drain", "Send no new flows to a backend; its connections finish"),
		setState("undrain", "Undo drain (back to the configured state)"),
		setState("disable", "Make a backend inactive: its flows are dropped"),
		setState("enable", "Undo disable (back to the configured state)"),
		reload, cfg, explain}
}

// printProblem shows the status of a unit that runs no configuration
// (tetherd run --rescue): why first, then how to fix it; the forwarder's
// and traffic's lines would only be zeros.
func printProblem(w *tabwriter.Writer, s *unit.Status) {
	for i, line := range strings.Split(s.Problem, "\n") {
		key := ""
		if i == 0 {
			key = "PROBLEM"
		}
		fmt.Fprintf(w, "%s\t%s\n", key, line)
	}
	fmt.Fprintf(w, "\tfix it: tetherctl config apply FILE (or correct %s and send tetherd SIGHUP)\n", s.Config)
	fmt.Fprintf(w, "config\t%s\n", s.Config)
	fmt.Fprintf(w, "control\tpid %d, up %s, rescue mode: only status, config validate and config apply work\n", s.ControlPID, s.Uptime)
}

func protoName(p uint8) string {
	switch p {
	case 6:
		return "tcp"
	case 17:
		return "udp"
	}
	return fmt.Sprint(p)
}

func sortedKeys[K ~string, V any](m map[K]V) []K {
	return slices.Sorted(maps.Keys(m))
}

func printHealth(w *tabwriter.Writer, h *unit.HealthView) {
	listen := h.Listen
	if listen == "" {
		listen = "no listener (health.listen unset)"
	}
	fmt.Fprintf(w, "unit %d, listening on %s", h.Unit, listen)
	if h.Grace {
		fmt.Fprint(w, " (startup grace: unreported backends keep their configured state)")
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "\nHOST\tNAME\tADDRESS\tVIA\tGENERATION\tINTERVAL\tLAST HEARD")
	for _, ho := range h.Hosts {
		via := "-"
		if ho.Leader != 0 {
			via = fmt.Sprintf("leader %d", ho.Leader)
		}
		fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%d\t%s\t%s ago\n", ho.ID, dash(ho.Name), dash(ho.Address), via, ho.Generation, ho.Interval, ho.LastHeard)
		for _, r := range ho.Rows {
			fmt.Fprintf(w, "  %s %s\tvip %s\t%s\tload %d%%\tcapacity %d\t%s / %s\t\n", r.Proto, dash(r.Endpoint), dash(r.VIP),
				r.Health, r.Load, r.Capacity, r.Target, r.Current)
		}
	}
	fmt.Fprintln(w, "\nVIP\tBACKEND\tSOURCE\tHEALTH\tDIRECTIVE\tLOAD\tCAPACITY\tSHARE\tWEIGHT\tVERDICT")
	for _, b := range h.Backends {
		verdict := "takes new connections"
		if b.State != 0 {
			verdict = b.State.String() + ": " + b.Reason
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%d%%\t%d\t%.1f%%\t%d\t%s\n", b.VIP, b.Backend, b.Source, b.Health, b.Directive,
			b.Load, b.Capacity, b.Percent, b.Weight, verdict)
	}
	for _, vip := range sortedKeys(h.Allot) {
		a := h.Allot[vip]
		var parts []string
		for _, be := range sortedKeys(a.Tokens) {
			parts = append(parts, fmt.Sprintf("%s %d", be, a.Tokens[be]))
		}
		fmt.Fprintf(w, "\nallotment %s\t%d tokens, expires in %s\tleft: %s\n", vip, a.Total, a.Expires, strings.Join(parts, ", "))
	}
	st := h.Stats
	fmt.Fprintf(w, "\nreceived\t%v\nrefused\t%v\nsnapshots\t%d asked, %d applied\nhosts aged out\t%d\ngoodbyes\t%d\n",
		st.Received, st.Refused, st.SnapshotsAsked, st.SnapshotsIn, st.AgedOut, st.Goodbyes)
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func printL7(w *tabwriter.Writer, v *unit.L7View) {
	if len(v.VIPs) == 0 {
		fmt.Fprintln(w, "no l7 VIP")
		return
	}
	s := v.Stats
	fmt.Fprintf(w, "migrated %d\tuploaded %d\tfailed %d\ttimed out %d\tended %d\taged out %d\tlive %d\n",
		s.Migrated, s.Uploaded, s.UploadFailed, s.UploadTimeouts, s.Ended, s.AgedOut, v.Live)
	fmt.Fprintf(w, "answered: no host %d\thost down %d\troute failed %d\tbad request %d\n", s.NoHost, s.HostDown, s.RouteFailed, s.BadRequests)
	if len(s.ByRule) > 0 {
		fmt.Fprint(w, "by rule")
		for _, k := range sortedKeys(s.ByRule) {
			fmt.Fprintf(w, "\t%s %d", k, s.ByRule[k])
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintln(w, "\nVIP\tCONNS\tBYTES\tMAX BYTES\tCOUNTERS")
	for _, a := range v.VIPs {
		var cs []string
		for _, k := range sortedKeys(a.Counters) {
			if a.Counters[k] != 0 {
				cs = append(cs, fmt.Sprintf("%s %d", k, a.Counters[k]))
			}
		}
		fmt.Fprintf(w, "%s\t%d\t%d\t%d\t%s\n", a.VIP, a.Conns, a.Bytes, a.MaxBytes, strings.Join(cs, ", "))
	}
}

func printRouter(w *tabwriter.Writer, v *unit.RouterStats) {
	fmt.Fprintf(w, "client connections %d (open %d)\trequests %d\thost dials %d\thost reuses %d\tretries %d\tejections %d\n",
		v.ClientConns, v.ActiveClientConns, v.Requests, v.HostDials, v.HostReuses, v.Retries, v.Ejections)
	classes := func(m map[string]uint64) string {
		var cs []string
		for _, k := range sortedKeys(m) {
			cs = append(cs, fmt.Sprintf("%s %d", k, m[k]))
		}
		if len(cs) == 0 {
			return "-"
		}
		return strings.Join(cs, ", ")
	}
	fmt.Fprintf(w, "answers\t%s\n", classes(v.ByStatus))
	if len(v.Ejected) > 0 {
		fmt.Fprintf(w, "ejected now\t%s\n", strings.Join(v.Ejected, ", "))
	}
	if len(v.Errors) > 0 {
		fmt.Fprint(w, "errors")
		for _, k := range sortedKeys(v.Errors) {
			fmt.Fprintf(w, "\t%s %d", k, v.Errors[k])
		}
		fmt.Fprintln(w)
	}
	for _, part := range []struct {
		head string
		rows map[string]unit.RouterCounts
	}{{"RULE", v.ByRule}, {"BACKEND", v.ByBackend}} {
		fmt.Fprintf(w, "\n%s\tREQUESTS\tANSWERS\n", part.head)
		for _, k := range sortedKeys(part.rows) {
			name := k
			if name == "" {
				name = "(none)"
			}
			fmt.Fprintf(w, "%s\t%d\t%s\n", name, part.rows[k].Requests, classes(part.rows[k].ByStatus))
		}
	}
}

func printStreams(w *tabwriter.Writer, v *unit.StreamsView) {
	if v.Listen == "" {
		fmt.Fprintln(w, "no host stream listener (hosts.listen unset)")
		return
	}
	fmt.Fprintf(w, "listening on %s, boot %016x\n", v.Listen, v.Boot)
	fmt.Fprintln(w, "\nHOST\tADDRESS\tSTATE\tSINCE\tCONNECTS\tRESYNC\tSEQ\tACKED\tMAPPINGS\tIN\tOUT\tSESSIONS UP/DOWN/RESYNCS/REFUSED\tLISTENERS\tLAST ERROR")
	for _, h := range v.Streams {
		last := h.LastError
		if last == "" {
			last = "-"
		}
		// Not said: the unit takes the host to listen everywhere.
		listeners := "(not said)"
		if h.Listeners != nil {
			listeners = strings.Join(h.Listeners, ",")
			if listeners == "" {
				listeners = "none"
			}
		}
		fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%d\t%s\t%d\t%d\t%d\t%d\t%d\t%d/%d/%d/%d\t%s\t%s\n", h.Host, h.Address, h.State,
			time.Since(h.Since).Round(time.Second), h.Connects, h.Resync, h.Seq, h.Acked, h.Mappings, h.MessagesIn, h.MessagesOut,
			h.SessionsUp, h.SessionsDown, h.SessionResyncs, h.SessionsRefused, listeners, last)
	}
	if len(v.Refused) > 0 {
		fmt.Fprint(w, "\nrefused")
		for _, k := range sortedKeys(v.Refused) {
			fmt.Fprintf(w, "\t%s %d", k, v.Refused[k])
		}
		fmt.Fprintln(w)
	}
	if t := v.Tunnel; t != (unit.TunnelStats{}) {
		fmt.Fprintf(w, "\ntunnel mappings\tpublished %d\tremoved %d\treleased %d\tno host %d\thost down %d\trefused %d\n",
			t.Published, t.Removed, t.Released, t.NoHost, t.HostDown, t.Refused)
	}
}

func printAtoms(w *tabwriter.Writer, v *unit.AtomsView) {
	if !v.Enabled {
		fmt.Fprintln(w, "no cluster (the cluster section is unset): this unit shares no atoms")
		return
	}
	ready := "not ready: pulling its atoms"
	if v.Ready {
		ready = "ready"
	}
	level := strconv.Itoa(v.Level)
	if v.Level < 0 {
		level = "full"
	}
	fmt.Fprintf(w, "unit %s: %s, replication %s\n", v.Self, ready, level)
	fmt.Fprintf(w, "atoms\t%d (zombies %d, cached %d, orphans %d)\n", v.Atoms, v.Zombies, v.Cached, v.Orphans)
	c := v.Counts
	fmt.Fprintf(w, "counts\tadded %d\tdeleted %d\treceived %d\tstale %d\tfull %d\texpired %d\torphaned %d\trereplicated %d\n",
		c.Added, c.Deleted, c.Received, c.Stale, c.Full, c.Expired, c.Orphaned, c.Rereplicated)
	fmt.Fprintf(w, "queries\tlocal %d\tremote %d\tmissed %d\n", c.QueryLocal, c.QueryRemote, c.QueryMisses)
	if len(v.Refused) > 0 {
		fmt.Fprint(w, "refused")
		for _, k := range sortedKeys(v.Refused) {
			fmt.Fprintf(w, "\t%s %d", k, v.Refused[k])
		}
		fmt.Fprintln(w)
	}
	if len(v.Peers) > 0 {
		fmt.Fprintln(w, "\nPEER\tADDRESS\tSTREAM\tPULLED\tQUEUED\tSENT\tACKED\tDROPPED\tRESYNCS\tLAG MEDIAN\tLAG P99\tERROR")
		for _, p := range v.Peers {
			st := "down"
			if p.Connected {
				st = "up"
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%v\t%d\t%d\t%d\t%d\t%d\t%.2fms\t%.2fms\t%s\n", p.Name, p.Address, st, p.Pulled,
				p.Queued, p.Sent, p.Acked, p.Dropped, p.Resyncs, p.LagMedian, p.LagP99, dash(p.Error))
		}
	}
	if len(v.Page) > 0 {
		fmt.Fprintf(w, "\nKEY\tHOST\tADDER\tSTATE\tEXPIRES\t(%d of %d matched)\n", len(v.Page), v.Matched)
		for _, a := range v.Page {
			state := "live"
			switch {
			case a.Zombie:
				state = "zombie"
			case a.Cached:
				state = "cached"
			}
			exp := "-"
			if a.Expires != nil {
				exp = time.Until(*a.Expires).Round(time.Second).String()
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", a.Key, a.Host, a.Adder, state, exp)
		}
	}
}

func printBGP(w *tabwriter.Writer, v *unit.BGPView) {
	if !v.Enabled {
		fmt.Fprintln(w, "no bgp section: the unit announces nothing")
		return
	}
	fmt.Fprintf(w, "AS %d, router ID %s", v.ASN, v.RouterID)
	if v.Drained {
		fmt.Fprint(w, ", drained by an operator (tetherctl bgp undrain)")
	}
	fmt.Fprintln(w, "\n\nROUTER\tAS\tSTATE\tUP FOR\tFLAPS\tLAST ERROR")
	for _, p := range v.Peers {
		up := "-"
		if !p.Since.IsZero() {
			up = time.Since(p.Since).Round(time.Second).String()
		}
		fmt.Fprintf(w, "%s\t%d\t%s\t%s\t%d\t%s\n", p.Address, p.ASN, p.State, up, p.Flaps, dash(p.LastError))
	}
	fmt.Fprintf(w, "\nannounced\t%s\n", dash(strings.Join(v.Announced, " ")))
	if len(v.Backup) > 0 {
		fmt.Fprintf(w, "backup\t%s\n", strings.Join(v.Backup, " "))
	}
	for _, a := range sortedKeys(v.Withheld) {
		fmt.Fprintf(w, "withheld\t%s\t%s\n", a, v.Withheld[a])
	}
}

func printMembers(w *tabwriter.Writer, v *unit.MembersView) {
	if !v.Enabled {
		fmt.Fprintln(w, "no cluster (the cluster section is unset): this unit is alone")
		return
	}
	fmt.Fprintf(w, "unit %s at %s, boot %016x\n", v.Name, v.Address, v.Boot)
	fmt.Fprintln(w, "\nNAME\tADDRESS\tSTATE\tSINCE\tBOOT\tTUNNEL SOURCES\tUPDATES")
	for _, m := range v.Members {
		name := m.Name
		if m.Self {
			name += " (self)"
		}
		src := strings.Join(m.TunnelSources, ",")
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%016x\t%s\t%d\n", name, m.Address, m.State,
			time.Since(m.Since).Round(time.Second), m.Boot, dash(src), m.Updates)
	}
	e := v.Events
	fmt.Fprintf(w, "\nevents\tjoins %d\tleaves %d\tfailures %d\tupdates %d\n", e.Joins, e.Leaves, e.Fails, e.Updates)
	if len(v.Refused) > 0 {
		fmt.Fprint(w, "refused")
		for _, k := range sortedKeys(v.Refused) {
			fmt.Fprintf(w, "\t%s %d", k, v.Refused[k])
		}
		fmt.Fprintln(w)
	}
}
