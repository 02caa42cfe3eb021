package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/rs/zerolog"
	"github.com/spf13/cobra"

	"github.com/tetherlb/tether/config"
	"github.com/tetherlb/tether/ctlplane/admin"
	"github.com/tetherlb/tether/ctlplane/control"
	"github.com/tetherlb/tether/ctlplane/metrics"
	"github.com/tetherlb/tether/internal/cpuset"
)

// runCommand is the unit: the control process, which starts and
// supervises the forwarder process. controlCommand is the control process
// alone, for debugging with a forwarder started by hand.
func runCommand(log *zerolog.Logger, spawn bool) *cobra.Command {
	var cfgPath, rescueSocket, rescueGroup string
	var rescue bool
	use, short := "run --config FILE", "Run the unit: the control process, which starts and supervises the forwarder"
	if !spawn {
		use, short = "control --config FILE", "Run the control process alone (start the forwarder yourself with --control)"
	}
	cmd := &cobra.Command{
		Use:   use,
		Short: short,
		Long: `The control process owns the configuration, serves the admin API on
admin.socket (tetherctl), optionally Prometheus metrics on admin.metrics,
decides punted flows and keeps the connection inventory. "run" also starts
the forwarder process and restarts it if it dies; killing the control
process leaves the forwarder forwarding, and a new control process adopts
it through the PID file in admin.run_dir (so two units on one host need
different admin.run_dir and admin.socket). "control" alone expects a
forwarder started with --control admin.run_dir/forwarder.sock. SIGHUP
reloads the configuration file; SIGINT/SIGTERM stop the unit.

With --rescue, a configuration file that is missing or invalid (or that
the unit cannot start with) does not stop tetherd: it logs why and serves
a minimal admin API on --admin-socket (status, config validate, config
apply) until it is given a valid file with "tetherctl config apply FILE",
or the file is fixed and tetherd gets SIGHUP; then it re-executes itself
and starts normally.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cfgPath == "" {
				return errors.New("--config is required")
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			u, err := startUnit(cfgPath, spawn, log)
			if err != nil {
				if !rescue {
					return err
				}
				return runRescue(ctx, cfgPath, rescueSocket, rescueGroup, err, log)
			}
			return u.run(ctx, log)
		},
	}
	cmd.Flags().StringVarP(&cfgPath, "config", "c", "", "configuration file (YAML)")
	cmd.Flags().BoolVar(&rescue, "rescue", false, "if the configuration is missing or invalid, serve a minimal admin API to fix it instead of exiting")
	// The rescue socket cannot come from the file it rescues; its
	// default is admin.socket's, so tetherctl finds both at the same
	// place.
	cmd.Flags().StringVar(&rescueSocket, "admin-socket", "/run/tether/admin.sock", "the admin socket in rescue mode (a running unit uses admin.socket)")
	cmd.Flags().StringVar(&rescueGroup, "admin-group", "", "the group that may use the admin socket in rescue mode besides root (a running unit uses admin.group)")
	return cmd
}

// daemon is a control process ready to run: its configuration loaded and
// its admin socket listening.
type daemon struct {
	cfg *config.Config
	ctl *control.Control
	srv *admin.Server
}

// startUnit loads the configuration and prepares the control process;
// every error here is one --rescue can help with.
func startUnit(cfgPath string, spawn bool, log *zerolog.Logger) (*daemon, error) {
	c, raw, err := config.ReadFile(cfgPath)
	if err != nil {
		return nil, err
	}
	opts := control.Options{ConfigPath: cfgPath, Config: c, Raw: raw, RunDir: c.Admin.RunDir, Log: *log}
	if spawn {
		if opts.Tetherd, err = os.Executable(); err != nil {
			return nil, fmt.Errorf("find tetherd's binary to start the forwarder: %w", err)
		}
	}
	ctl, err := control.New(opts)
	if err != nil {
		return nil, err
	}
	var backend admin.Backend = ctl // the control process serves the admin API
	srv, err := admin.Listen(c.Admin.Socket, c.Admin.Group, backend, *log)
	if err != nil {
		return nil, err
	}
	return &daemon{cfg: c, ctl: ctl, srv: srv}, nil
}

// run serves the admin API and metrics and runs the control process
// until ctx ends.
func (u *daemon) run(ctx context.Context, log *zerolog.Logger) error {
	if cores := u.cfg.Forwarder.Cores; len(cores) > 0 {
		// The control process keeps off the forwarder's worker cores
		// too (and so does the forwarder it starts, which inherits
		// this): a poll-mode worker loses to anything scheduled
		// beside it.
		if left, err := cpuset.Avoid(cores); err != nil {
			log.Warn().Err(err).Ints("worker_cores", cores).Msg("the control process may share the workers' cores")
		} else if left != nil {
			log.Info().Ints("cores", left).Msg("control process cores")
		}
	}
	go func() {
		if err := u.srv.Serve(ctx); err != nil {
			log.Error().Err(err).Msg("admin API stopped")
		}
	}()
	if addr := u.cfg.Admin.Metrics; addr != "" {
		go func() {
			if err := metrics.Serve(ctx, addr, u.ctl); err != nil {
				log.Error().Err(err).Str("listen", addr).Msg("metrics listener stopped")
			}
		}()
	}
	onHangup(ctx, func() {
		if err := u.ctl.Reload(context.Background()); err != nil {
			log.Error().Err(err).Msg("reload refused, running configuration kept")
		}
	})
	log.Info().Str("admin", u.cfg.Admin.Socket).Msg("unit running")
	return u.ctl.Run(ctx)
}

// runRescue serves the rescue admin API until tetherd re-executes itself
// with a valid configuration, or ctx ends.
func runRescue(ctx context.Context, cfgPath, socket, group string, problem error, log *zerolog.Logger) error {
	r, err := admin.ListenRescue(socket, group, cfgPath, problem, *log)
	if err != nil {
		return fmt.Errorf("%w (and rescue mode could not start: %v)", problem, err)
	}
	log.Error().Str("config", cfgPath).Str("reason", admin.OneLine(problem)).Str("admin", socket).
		Msg("no valid configuration: rescue mode until one is applied (tetherctl config apply FILE, or fix the file and send SIGHUP)")
	onHangup(ctx, r.Recheck)
	return r.Serve(ctx)
}
