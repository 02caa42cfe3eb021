// Command tetherd is the Tether daemon: "run" starts a unit (the control
// process, which starts and supervises the forwarder process), "control"
// and "forwarder" run either process alone, "replay" runs a packet
// capture through the forwarder's pipeline, and "health-key" derives a
// host's key for the health protocol.
package main

import (
	"fmt"
	"os"
	"time"

	"github.com/rs/zerolog"
	"github.com/spf13/cobra"
)

func main() {
	// Colour only for a terminal: logs redirected to a file or journal
	// must stay plain text.
	fi, err := os.Stderr.Stat()
	tty := err == nil && fi.Mode()&os.ModeCharDevice != 0
	log := zerolog.New(zerolog.ConsoleWriter{Out: os.Stderr, TimeFormat: time.TimeOnly, NoColor: !tty}).With().Timestamp().Logger()
	if err := newRoot(&log).Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "tetherd:", err)
		os.Exit(1)
	}
}

// newRoot builds the command tree (the documentation's test checks its
// examples against it).
func newRoot(log *zerolog.Logger) *cobra.Command {
	root := &cobra.Command{
		Use:           "tetherd",
		Short:         "Tether load balancer daemon",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(replayCommand(log), forwarderCommand(log), runCommand(log, true), runCommand(log, false), certsCommand())
	root.AddCommand(healthKeyCommand(), routerCommand(log))
	return root
}
