package doccheck

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

const sample = "# Guide\n" +
	"\n" +
	"```sh\n" +
	"sudo tool run --config a.yaml   # comment\n" +
	"make demo\n" +
	"go run ./cmd/tool show 'two words' \\\n" +
	"  --flag x\n" +
	"```\n" +
	"\n" +
	"* item:\n" +
	"\n" +
	"  ```yaml unit\n" +
	"  unit:\n" +
	"    name: x\n" +
	"  ```\n" +
	"\n" +
	"```console\n" +
	"# tool show - < in.yaml\n" +
	"output # tool show\n" +
	"$ tool run --config b.yaml\n" +
	"```\n" +
	"\n" +
	"```ini\n" +
	"ExecStart=/usr/local/bin/tool run --config /etc/c.yaml\n" +
	"```\n"

func TestReadAndCommands(t *testing.T) {
	path := filepath.Join(t.TempDir(), "guide.md")
	if err := os.WriteFile(path, []byte(sample), 0o644); err != nil {
		t.Fatal(err)
	}
	blocks, err := Read(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(blocks) != 4 {
		t.Fatalf("%d blocks, want 4: %v", len(blocks), blocks)
	}
	y := blocks[1]
	if y.Lang() != "yaml" || y.Kind() != "unit" || y.Line != 12 || y.Text() != "unit:\n  name: x\n" {
		t.Errorf("indented yaml block: %q %q line %d %q", y.Lang(), y.Kind(), y.Line, y.Text())
	}
	cmds, err := Commands(blocks, "tool")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, c := range cmds {
		got = append(got, c.Where[len(path):]+" "+strings.Join(c.Args, "|"))
	}
	want := []string{
		":4 run|--config|a.yaml",
		":6 show|two words|--flag|x",
		":18 show|-",
		":20 run|--config|b.yaml",
		":24 run|--config|/etc/c.yaml",
	}
	if !slices.Equal(got, want) {
		t.Errorf("commands\n%q\nwant\n%q", got, want)
	}
	if _, err := Read(filepath.Join(t.TempDir(), "missing.md")); err == nil {
		t.Error("a missing file read")
	}
	if err := os.WriteFile(path, []byte("```sh\nopen\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Read(path); err == nil || !strings.Contains(err.Error(), ":1: code block never closed") {
		t.Errorf("unclosed block: %v", err)
	}
}

func toolTree() *cobra.Command {
	root := &cobra.Command{Use: "tool"}
	root.PersistentFlags().StringP("output", "o", "table", "")
	run := &cobra.Command{Use: "run", Args: cobra.NoArgs, RunE: func(*cobra.Command, []string) error { return nil }}
	run.Flags().String("config", "", "")
	show := &cobra.Command{Use: "show FILE", Args: cobra.ExactArgs(1), RunE: func(*cobra.Command, []string) error { return nil }}
	group := &cobra.Command{Use: "group"}
	group.AddCommand(&cobra.Command{Use: "list", Run: func(*cobra.Command, []string) {}})
	root.AddCommand(run, show, group)
	return root
}

func TestCheck(t *testing.T) {
	for _, tc := range []struct {
		args []string
		err  string // "" for none
	}{
		{[]string{"run", "--config", "a.yaml"}, ""},
		{[]string{"-o", "json", "show", "x"}, ""},
		{[]string{"show", "--help"}, ""},
		{[]string{"group", "list"}, ""},
		{[]string{"completion", "bash"}, ""},
		{[]string{"help", "run"}, ""},
		{[]string{"runn"}, `unknown command "runn"`},
		{[]string{"run", "--cfg", "a.yaml"}, "unknown flag: --cfg"},
		{[]string{"run", "extra"}, `unknown command "extra"`},
		{[]string{"show"}, "accepts 1 arg"},
		{[]string{"group"}, "name one of its subcommands"},
	} {
		err := Check(toolTree, tc.args)
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("%q: %v", tc.args, err)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%q: got %v, want an error with %q", tc.args, err, tc.err)
		}
	}
}

func TestParseYAML(t *testing.T) {
	if err := ParseYAML("a:\n  b: [1, 2]\n"); err != nil {
		t.Error(err)
	}
	if err := ParseYAML("a: [\n"); err == nil {
		t.Error("broken YAML parsed")
	}
}
