package doccheck

import (
	"path/filepath"
	"testing"

	"github.com/spf13/cobra"
)

// Docs lists the Markdown files whose command lines the programs' tests
// check, relative to the module's root.
func Docs() []string {
	return []string{"README.md", "docs/operations.md", "docs/appliance.md"}
}

// CheckCommands checks every command line of program in Docs (under
// root, the module's directory) against the tree newRoot builds, and
// fails t for each that does not parse, naming its file and line. It
// also fails when it finds none: a parser that matches nothing checks
// nothing.
func CheckCommands(t *testing.T, root, program string, newRoot func() *cobra.Command) {
	t.Helper()
	found := 0
	for _, doc := range Docs() {
		blocks, err := Read(filepath.Join(root, doc))
		if err != nil {
			t.Fatal(err)
		}
		cmds, err := Commands(blocks, program)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range cmds {
			found++
			if err := Check(newRoot, c.Args); err != nil {
				t.Errorf("%s: %s: %v", c.Where, c.Line, err)
			}
		}
	}
	if found == 0 {
		t.Fatalf("no %s command lines found in %v", program, Docs())
	}
	t.Logf("%d %s command lines checked", found, program)
}
