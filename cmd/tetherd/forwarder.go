package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/rs/zerolog"
	"github.com/spf13/cobra"

	"github.com/tetherlb/tether/api/unit"
	"github.com/tetherlb/tether/config"
	"github.com/tetherlb/tether/forwarder"
)

func forwarderCommand(log *zerolog.Logger) *cobra.Command {
	var cfgPath, control string
	var fromStdin bool
	cmd := &cobra.Command{
		Use:   "forwarder (--config FILE | --config-stdin) [--control SOCKET]",
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
(tetherd run starts it that way, with admin.run_dir/forwarder.sock, and
passes the checked configuration on standard input: --config-stdin) and
keeps forwarding when that goes away.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if (cfgPath == "") == !fromStdin {
				return errors.New("forwarder: give --config FILE, or --config-stdin")
			}
			var c *config.Config
			var flows []unit.FlowRecord
			var err error
			if fromStdin {
				c, flows, err = readStart(cmd.InOrStdin())
			} else {
				c, err = config.LoadFile(cfgPath)
			}
			if err != nil {
				return err
			}
			f, err := forwarder.New(c, *log)
			if err != nil {
				return err
			}
			defer f.Close()
			if len(flows) > 0 {
				n, err := f.Restore(flows)
				if err != nil {
					log.Warn().Err(err).Msg("some connections could not be put back")
				}
				log.Info().Int("flows", n).Msg("connections put back before forwarding")
			}
			if control != "" {
				f.ConnectControl(control)
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			onHangup(ctx, func() {
				if fromStdin {
					log.Warn().Msg("SIGHUP ignored: this forwarder's configuration comes from its control process; reload that (tetherctl reload)")
					return
				}
				reload(ctx, f, cfgPath, log)
			})
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
	cmd.Flags().BoolVar(&fromStdin, "config-stdin", false, "read the checked configuration the control process sends on standard input (tetherd run starts the forwarder so)")
	cmd.Flags().StringVar(&control, "control", "", "the control process's channel socket; the forwarder works alone until it connects")
	return cmd
}

// reload applies the configuration file again, or logs why it cannot and
// keeps the running one.
func reload(ctx context.Context, f *forwarder.Forwarder, path string, log *zerolog.Logger) {
	c, err := config.LoadFile(path)
	if err == nil {
		_, err = f.Reload(ctx, c)
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

// maxStart bounds what a control process passes on standard input: the
// configuration and up to a few million connections.
const maxStart = 1 << 30

// readStart reads what a control process passed on standard input
// (unit.ForwarderStart) and checks the configuration.
func readStart(r io.Reader) (*config.Config, []unit.FlowRecord, error) {
	b, err := io.ReadAll(io.LimitReader(r, maxStart+1))
	if err != nil {
		return nil, nil, fmt.Errorf("forwarder: read standard input: %w", err)
	}
	if len(b) > maxStart {
		return nil, nil, fmt.Errorf("forwarder: standard input is larger than %d MiB", maxStart>>20)
	}
	var st unit.ForwarderStart
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, nil, fmt.Errorf("forwarder: standard input: %w", err)
	}
	c, err := config.Decode(st.Config)
	if err != nil {
		return nil, nil, err
	}
	return c, st.Flows, nil
}
