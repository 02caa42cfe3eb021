package main

import (
	"testing"

	"github.com/tetherlb/tether/internal/doccheck"
)

// TestDocsCommands: every tetherctl command line in the documentation
// names a real command with real flags and as many arguments as it
// takes.
func TestDocsCommands(t *testing.T) {
	doccheck.CheckCommands(t, "../..", "tetherctl", newRoot)
}
