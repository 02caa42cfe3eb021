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
	"github.com/tetherlb/tether/forwarder"
)

func forwarderCommand(log *zerolog.Logger) *cobra.Command {
	var cfgPath, control string
	cmd := &cobra.Command{
		Use:   "forwarder --config FILE [--control SOCKET]",
		Short: "Run the forwarder on the configured port until stopped",
		Long: `Forwarder opens the port forwarder.port names and forwards with
forwarder.workers workers (each pinned to its core of forwarder.cores,
when that lists cores). Its driver is tun or afxdp: a tun port creates a
TUN device, routes the VIP and SNAT addresses into it and adds the policy
rules (forwarder.port.table) that route half-NAT backends' replies into
it too; an afxdp port binds AF_XDP sockets to an existing interface and
attaches an XDP program that takes only traffic to VIP and SNAT addresses
and half-NAT backends' replies, leaving the rest to the kernel. SIGHUP
reloads the configuration file without dropping flows (a bad file is
refused and the running configuration stays); SIGINT or SIGTERM stops
it, removes what it added to the kernel, and prints what it did per VIP,
backend and drop reason. With --control it connects to a control process
(tetherd run starts it that way, with admin.run_dir/forwarder.sock) and
keeps forwarding when that goes away.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cfgPath == "" {
				return errors.New("forwarder: --config is required")
			}
			c, err := config.LoadFile(cfgPath)
			if err != nil {
				return err
			}
			f, err := forwarder.New(c, *log)
			if err != nil {
				return err
			}
			defer f.Close()
			if control != "" {
				f.EnableControl(control)
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			onHangup(ctx, func() { reload(ctx, f, cfgPath, log) })
			runErr := f.Run(ctx)
			s := f.StoppedSummary()
			if _, err := s.WriteTo(cmd.OutOrStdout()); err != nil {
				return err
			}
			if runErr != nil {
				return runErr
			}
			log.Info().Msg("stopped")
			return nil
		},
	}
	cmd.Flags().StringVarP(&cfgPath, "config", "c", "", "configuration file (YAML)")
	cmd.Flags().StringVar(&control, "control", "", "the control process's channel socket; the forwarder works alone until it connects")
	return cmd
}

// reload applies the configuration file again, or logs why it cannot and
// keeps the running one.
func reload(ctx context.Context, f *forwarder.Forwarder, path string, log *zerolog.Logger) {
	c, err := config.LoadFile(path)
	if err == nil {
		err = f.Reload(ctx, c)
	}
	if err != nil {
		log.Error().Err(fmt.Errorf("reload refused, running configuration kept: %w", err)).Msg("reload")
	}
}

// onHangup calls fn on every SIGHUP until ctx ends.
func onHangup(ctx context.Context, fn func()) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		defer signal.Stop(hup)
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				fn()
			}
		}
	}()
}
