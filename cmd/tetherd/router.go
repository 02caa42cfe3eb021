package main

import (
	"errors"
	"fmt"
	"hash/maphash"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"syscall"

	"github.com/rs/zerolog"
	"github.com/spf13/cobra"

	"github.com/tetherlb/tether/agent/shim"
	"github.com/tetherlb/tether/api/unit"
	"github.com/tetherlb/tether/config"
	"github.com/tetherlb/tether/ctlplane/l7/request"
	"github.com/tetherlb/tether/ctlplane/l7/router"
	"github.com/tetherlb/tether/ctlplane/l7/rules"
	"github.com/tetherlb/tether/internal/localapi"
)

// routerCommand runs the request router of an l7 VIP (seed S1 FIG. 25)
// on a host with an agent: the unit migrates to it the connections the
// VIP's handoff or a rule sends to routers, the agent hands them over
// through its listener shim, and the router reads each request of a
// connection, chooses its backend by the VIP's rules, and proxies it
// over reused connections from its own source address.
func routerCommand(log *zerolog.Logger) *cobra.Command {
	var cfgPath, vipName, source, socket, listen, adminSocket, adminGroup string
	cmd := &cobra.Command{
		Use:   "router",
		Short: "Run an l7 VIP's request router on a host with an agent",
		Long: `Run the request router of an l7 VIP: the unit sends it connections (the
VIP's l7.handoff proxy or migrate-or-proxy, or a rule's proxy: true) by
migrating them to this host, whose agent (migration.enabled) hands them
to the router's listener shim; the router routes each request of a
connection by the VIP's rules to the VIP's backends other than the
routers, at their address and port, over connections it keeps and
reuses, from --source (an address of this host the backends' replies
come back to). It reads the VIP from the unit's configuration file, and
takes the backends' weights and states from it: it does not see the
unit's health verdicts. It ejects failing backends itself: a backend
whose connections fail 3 times in a row (refused, timed out, or closed
before an answer) gets no requests for 10s; then one answer readmits it,
and one more failure ejects it for twice as long as the last time (at
most 2m). When every backend a request may go to is ejected, it tries
them still. A request without a body whose connection could not be made
is retried once on another backend. Ejections and readmissions are
logged.`,
		Example: `  tetherd router --config /etc/tether/tether.yaml --vip web --source 10.0.11.50`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, _, err := config.ReadFile(cfgPath)
			if err != nil {
				return err
			}
			v, err := l7VIPOf(cfg, vipName)
			if err != nil {
				return err
			}
			src, err := routerSource(v, source)
			if err != nil {
				return err
			}
			decide, err := routerDecide(v)
			if err != nil {
				return err
			}
			rt, err := router.New(router.Config{Decide: decide, Source: src, Log: log.With().Str("vip", v.Name).Logger()})
			if err != nil {
				return err
			}
			if listen == "" {
				listen = netip.AddrPortFrom(v.Addr(), uint16(v.Port)).String()
			}
			ln, err := shim.Listen("tcp", listen, shim.Options{Socket: socket})
			if err != nil {
				return err
			}
			if adminSocket == "" {
				adminSocket = filepath.Join(routerSocketDir, "router-"+v.Name+".sock")
			}
			admin, err := localapi.Listen("router admin", adminSocket, adminGroup, routerAdmin(rt))
			if err != nil {
				ln.Close()
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			go admin.Serve(ctx)
			log.Info().Str("vip", v.Name).Str("listen", listen).Str("source", source).Str("admin", adminSocket).Msg("request router running")
			return rt.Serve(ctx, ln)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfgPath, "config", "/etc/tether/tether.yaml", "the unit's configuration file")
	f.StringVar(&vipName, "vip", "", "the l7 VIP whose requests this router routes")
	f.StringVar(&source, "source", "", "the address connections to backends come from (default: the kernel's choice)")
	f.StringVar(&socket, "handoff-socket", shim.DefaultSocket, "the agent's hand-off socket (migration.handoff_socket)")
	f.StringVar(&listen, "listen", "", "the address the shim listens on for ordinary connections (default: the VIP's address and port)")
	f.StringVar(&adminSocket, "admin-socket", "", "the router's admin socket, which tetherctl --socket PATH router reads (default: /run/tether/router-VIP.sock)")
	f.StringVar(&adminGroup, "admin-group", "", "a group allowed on the admin socket besides root")
	cmd.MarkFlagRequired("vip")
	return cmd
}

// routerSource is --source (text) for VIP v: none, or an address of
// the VIP's family, which its backends are of.
func routerSource(v *config.VIP, text string) (netip.Addr, error) {
	if text == "" {
		return netip.Addr{}, nil
	}
	src, err := netip.ParseAddr(text)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("--source: %q: %w", text, err)
	}
	if src = src.Unmap(); src.Is4() != v.Addr().Is4() {
		return netip.Addr{}, fmt.Errorf("--source: %s is not of the family of VIP %s (%s), whose backends it would reach", src, v.Name, v.Addr())
	}
	return src, nil
}

// routerSocketDir is where the router's admin socket goes by default,
// beside the unit's (admin.socket's default).
const routerSocketDir = "/run/tether"

// routerAdmin serves the router's counters: GET /v1/router.
func routerAdmin(rt *router.Router) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/router", func(w http.ResponseWriter, _ *http.Request) {
		localapi.WriteJSON(w, http.StatusOK, rt.Stats())
	})
	return mux
}

// l7VIPOf is the configuration's l7 VIP of that name.
func l7VIPOf(cfg *config.Config, name string) (*config.VIP, error) {
	for i := range cfg.VIPs {
		if v := &cfg.VIPs[i]; v.Name == name {
			if v.ModeValue() != unit.ModeL7 {
				return nil, fmt.Errorf("--vip: %q has mode %s: a request router serves l7 VIPs", name, v.ModeValue())
			}
			return v, nil
		}
	}
	return nil, fmt.Errorf("--vip: %q: no such VIP", name)
}

// routerDecide chooses each request's backend among the VIP's backends
// that are not routers, by its rules and the configured weights (0 for
// a backend not active), hashing the client's address and port so that
// equal requests of one connection go to one backend while the set
// holds. A backend the router avoids (ejected, or already failed for
// this request) gets weight 0, unless that leaves the rule no backend
// with a weight: then the configured weights stand, so that a router
// whose every backend is ejected still tries them rather than answering
// 503 to every request.
func routerDecide(v *config.VIP) (func(*http.Request, func(string) bool) (router.Target, bool), error) {
	set, err := rules.Compile(v)
	if err != nil {
		return nil, err
	}
	var cands []rules.Candidate
	var addrs []netip.AddrPort
	var keys []string // cands[i].Key as text, as the router names it
	for i := range v.Backends {
		b := &v.Backends[i]
		if v.L7.IsRouter(b.Name) {
			continue
		}
		w := uint32(b.WeightValue())
		if b.StateValue() != unit.StateActive {
			w = 0
		}
		k := unit.BackendKey{VIP: v.Name, Backend: b.Name}
		cands = append(cands, rules.Candidate{Name: b.Name, Key: k, Weight: w})
		addrs = append(addrs, netip.AddrPortFrom(b.Addr(), uint16(b.Port)))
		keys = append(keys, k.String())
	}
	if len(cands) == 0 {
		return nil, errors.New("the VIP has no backend but routers")
	}
	seed := maphash.MakeSeed()
	return func(r *http.Request, avoid func(string) bool) (router.Target, bool) {
		req := request.FromHTTP(r)
		hash := maphash.String(seed, r.RemoteAddr)
		// Choose takes only candidates with a weight, so an avoided
		// one is given weight 0 in a copy (cands is shared by every
		// request); the copy is made only when something is avoided.
		var left []rules.Candidate
		for i := range cands {
			if cands[i].Weight == 0 || avoid == nil || !avoid(keys[i]) {
				continue
			}
			if left == nil {
				left = slices.Clone(cands)
			}
			left[i].Weight = 0
		}
		var choice rules.Choice
		ok := false
		if left != nil {
			choice, ok = set.Choose(&req, left, hash)
		}
		if !ok {
			// Nothing avoided, or nothing but avoided backends for
			// this request's rule: the configured weights decide.
			choice, ok = set.Choose(&req, cands, hash)
		}
		if !ok {
			return router.Target{Rule: choice.Rule}, false
		}
		return router.Target{Addr: addrs[choice.Index], Key: keys[choice.Index], Rule: choice.Rule}, true
	}, nil
}
