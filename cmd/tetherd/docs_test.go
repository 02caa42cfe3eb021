package main

import (
	"os"
	"strings"
	"testing"

	"github.com/rs/zerolog"
	"github.com/spf13/cobra"

	"github.com/tetherlb/tether/agent"
	"github.com/tetherlb/tether/config"
	"github.com/tetherlb/tether/internal/doccheck"
)

// guide is the operator's guide, whose every code block is checked.
const guide = "../../docs/operations.md"

// TestDocsCommands: every tetherd command line in the documentation names
// a real command with real flags and as many arguments as it takes.
func TestDocsCommands(t *testing.T) {
	doccheck.CheckCommands(t, "../..", "tetherd", func() *cobra.Command {
		log := zerolog.Nop()
		return newRoot(&log)
	})
}

// TestDocsConfigurations: every configuration in the operator's guide
// loads as the programs load their files. A code block says what it
// holds in its info string: ```yaml unit (tether.yaml, checked whole),
// ```yaml agent (the host agent's file), ```yaml fragment (deliberately
// partial: it must still be YAML), sh, console, ini, or text (diagrams);
// any other block fails, so that an example cannot escape the check by
// being unlabelled.
func TestDocsConfigurations(t *testing.T) {
	// The loaders apply TETHER_* overrides; the documentation's
	// examples must stand on their own.
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "TETHER_") {
			t.Setenv(k, "")
		}
	}
	blocks, err := doccheck.Read(guide)
	if err != nil {
		t.Fatal(err)
	}
	counts := map[string]int{}
	for _, b := range blocks {
		counts[b.Info]++
		var err error
		switch b.Info {
		case "yaml unit":
			_, err = config.Parse([]byte(b.Text()))
		case "yaml agent":
			_, err = agent.ParseConfig([]byte(b.Text()))
		case "yaml fragment":
			err = doccheck.ParseYAML(b.Text())
		case "sh", "console", "ini", "text":
			// Command lines are checked by each program's
			// TestDocsCommands; diagrams by readers.
		default:
			t.Errorf("%s: unknown kind of block: label it yaml unit, yaml agent, yaml fragment, sh, console, ini or text", b)
			continue
		}
		if err != nil {
			t.Errorf("%s does not load:\n%v", b, err)
		}
	}
	if counts["yaml unit"] == 0 || counts["yaml agent"] == 0 {
		t.Errorf("no unit or no agent configuration found in %s (blocks: %v)", guide, counts)
	}
	t.Logf("blocks checked: %v", counts)
}
