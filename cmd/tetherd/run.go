package main

import (
	"context"
	"errors"
	"os"
	"os/signal"
	"syscall"

	"github.com/rs/zerolog"
	"github.com/spf13/cobra"

	"github.com/tetherlb/tether/config"
	"github.com/tetherlb/tether/ctlplane/admin"
	"github.com/tetherlb/tether/ctlplane/control"
	"github.com/tetherlb/tether/ctlplane/metrics"
)

// runCommand is the unit: the control process, which starts and
// supervises the forwarder process. controlCommand is the control process
// alone, for debugging with a forwarder started by hand.
func runCommand(log *zerolog.Logger, spawn bool) *cobra.Command {
	var cfgPath string
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
it. SIGHUP reloads the configuration file; SIGINT/SIGTERM stop the unit.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cfgPath == "" {
				return errors.New("--config is required")
			}
			c, err := config.LoadFile(cfgPath)
			if err != nil {
				return err
			}
			opts := control.Options{ConfigPath: cfgPath, RunDir: c.Admin.RunDir, Log: *log}
			if spawn {
				if opts.Tetherd, err = os.Executable(); err != nil {
					return err
				}
			}
			ctl, err := control.New(opts)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			srv, err := admin.Listen(c.Admin.Socket, c.Admin.Group, ctl, *log)
			if err != nil {
				return err
			}
			go func() {
				if err := srv.Serve(ctx); err != nil {
					log.Error().Err(err).Msg("admin API stopped")
				}
			}()
			if c.Admin.Metrics != "" {
				go func() {
					if err := metrics.Serve(ctx, c.Admin.Metrics, ctl); err != nil {
						log.Error().Err(err).Str("listen", c.Admin.Metrics).Msg("metrics listener stopped")
					}
				}()
			}
			onHangup(ctx, func() {
				if err := ctl.Reload(context.Background()); err != nil {
					log.Error().Err(err).Msg("reload refused, running configuration kept")
				}
			})
			log.Info().Str("admin", c.Admin.Socket).Msg("unit running")
			return ctl.Run(ctx)
		},
	}
	cmd.Flags().StringVarP(&cfgPath, "config", "c", "", "configuration file (YAML)")
	return cmd
}
