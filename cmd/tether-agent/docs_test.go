package main

import (
	"testing"

	"github.com/rs/zerolog"
	"github.com/spf13/cobra"

	"github.com/tetherlb/tether/internal/doccheck"
)

// TestDocsCommands: every tether-agent command line in the documentation
// names a real command with real flags and as many arguments as it
// takes. (The agent configurations of the operator's guide are loaded
// by cmd/tetherd's TestDocsConfigurations, with the unit's.)
func TestDocsCommands(t *testing.T) {
	doccheck.CheckCommands(t, "../..", "tether-agent", func() *cobra.Command { return newRoot(zerolog.Nop()) })
}
