package main

import (
	"fmt"
	"os"

	"github.com/rs/zerolog"
	"github.com/spf13/cobra"

	"github.com/tetherlb/tether/config"
	"github.com/tetherlb/tether/dataplane/replay"
	"github.com/tetherlb/tether/nic/pcapio"
)

func replayCommand(log *zerolog.Logger) *cobra.Command {
	var cfgPath string
	var keepGoing bool
	cmd := &cobra.Command{
		Use:   "replay --config FILE IN.pcap [OUT.pcap]",
		Short: "Run a capture through the forwarder and write what it sends",
		Long: `Replay reads frames from a pcap or pcapng capture (Ethernet, raw IP,
Linux cooked or BSD loopback: the last two are replayed as raw IP;
compressed with gzip or zstd, or not),
runs them through one forwarder worker configured by --config, writes the
frames the worker forwards to OUT.pcap (if given) and prints what happened
per VIP, per backend and per drop reason. The capture's timestamps drive
the worker's clock, so a replay is deterministic. A capture that ends
inside a record (cut short) replays what it holds, counts the lost
record as unreadable and exits with an error, unless --keep-going.

Environment variables TETHER_<KEY> override scalar configuration keys,
for example TETHER_FORWARDER_BATCH=64.`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if cfgPath == "" {
				return fmt.Errorf("replay: --config is required")
			}
			c, err := config.LoadFile(cfgPath)
			if err != nil {
				return err
			}
			in, err := os.Open(args[0])
			if err != nil {
				return fmt.Errorf("replay: %w", err)
			}
			defer in.Close()
			var out *os.File
			if len(args) == 2 {
				if out, err = os.Create(args[1]); err != nil {
					return fmt.Errorf("replay: %w", err)
				}
				defer out.Close()
			}
			port, err := pcapio.New(args[0], in, fileOrNil(out))
			if err != nil {
				return fmt.Errorf("replay: %s: %w", args[0], err)
			}
			log.Info().Str("config", cfgPath).Str("in", args[0]).Str("link", port.LinkType().String()).Msg("replaying")
			res, err := replay.Run(c, port)
			if cerr := port.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return fmt.Errorf("replay: %w", err)
			}
			if out != nil {
				if err := out.Close(); err != nil {
					return fmt.Errorf("replay: %w", err)
				}
				log.Info().Str("out", args[1]).Uint64("frames", res.Port.TxFrames).Msg("wrote forwarded frames")
			}
			if _, err = res.WriteTo(cmd.OutOrStdout()); err != nil {
				return err
			}
			if n := port.NotIP(); n > 0 {
				log.Info().Uint64("frames", n).Msg("frames that are not IP, in a capture replayed as raw IP, counted as unreadable")
			}
			if n := port.Truncated(); n > 0 && !keepGoing {
				return fmt.Errorf("replay: %s ends inside record %d, which is lost (the summary counts it as unreadable); --keep-going accepts a capture cut short", args[0], n)
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&cfgPath, "config", "c", "", "configuration file (YAML)")
	cmd.Flags().BoolVar(&keepGoing, "keep-going", false, "accept a capture that ends inside a record (replay what it holds, exit 0)")
	return cmd
}

// fileOrNil keeps a nil *os.File from becoming a non-nil io.Writer.
func fileOrNil(f *os.File) interface{ Write([]byte) (int, error) } {
	if f == nil {
		return nil
	}
	return f
}
