package doccheck

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/viper"
)

// Block is a fenced code block.
type Block struct {
	// File and Line say where the opening fence is (Line counts from 1).
	File string
	Line int
	// Info is the fence's info string: "yaml unit", "sh", "" for none.
	Info string
	// Lines is the content, less the fence's own indentation (blocks
	// inside list items are indented).
	Lines []string
}

// Lang is the first word of the info string ("yaml" of "yaml unit").
func (b Block) Lang() string {
	lang, _, _ := strings.Cut(b.Info, " ")
	return lang
}

// Kind is the rest of the info string ("unit" of "yaml unit").
func (b Block) Kind() string {
	_, kind, _ := strings.Cut(b.Info, " ")
	return strings.TrimSpace(kind)
}

// Text is the content as one string.
func (b Block) Text() string { return strings.Join(b.Lines, "\n") + "\n" }

// Where names content line i (from 0) as file:line.
func (b Block) Where(i int) string { return fmt.Sprintf("%s:%d", b.File, b.Line+1+i) }

// String names the block by its opening fence.
func (b Block) String() string { return fmt.Sprintf("%s:%d (```%s)", b.File, b.Line, b.Info) }

// Read returns the fenced code blocks of the Markdown file at path.
func Read(path string) ([]Block, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var blocks []Block
	var cur *Block
	indent := 0
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		trimmed := strings.TrimLeft(line, " ")
		switch {
		case cur == nil && strings.HasPrefix(trimmed, "```"):
			indent = len(line) - len(trimmed)
			cur = &Block{File: path, Line: n, Info: strings.TrimSpace(strings.TrimPrefix(trimmed, "```"))}
		case cur != nil && strings.TrimSpace(line) == "```":
			blocks = append(blocks, *cur)
			cur = nil
		case cur != nil:
			// Strip the fence's indentation, and no more: YAML's own
			// indentation is meaningful.
			strip := min(indent, len(line)-len(trimmed))
			cur.Lines = append(cur.Lines, line[strip:])
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if cur != nil {
		return nil, fmt.Errorf("%s:%d: code block never closed", path, cur.Line)
	}
	return blocks, nil
}

// Command is one command line of a program found in a code block.
type Command struct {
	// Where is file:line of the line (its first, if continued).
	Where string
	// Line is the line as written.
	Line string
	// Args are the words after the program's name, up to the first
	// shell operator (a redirection, pipe or list) or comment.
	Args []string
}

// Commands returns the command lines of program in blocks:
//
//   - in ```sh blocks every line that runs it (after an optional sudo),
//     lines continued with a backslash joined;
//   - in ```console blocks the lines after a "# " or "$ " prompt, the
//     rest being output;
//   - in ```ini blocks (systemd units) the ExecStart= lines;
//
// "go run ./cmd/PROGRAM" counts as running PROGRAM.
func Commands(blocks []Block, program string) ([]Command, error) {
	var cmds []Command
	for _, b := range blocks {
		for i := 0; i < len(b.Lines); i++ {
			where, line := b.Where(i), b.Lines[i]
			for strings.HasSuffix(line, `\`) && i+1 < len(b.Lines) {
				i++
				line = strings.TrimSuffix(line, `\`) + " " + strings.TrimSpace(b.Lines[i])
			}
			var cmdline string
			switch b.Lang() {
			case "sh":
				cmdline = line
			case "console":
				for _, prompt := range []string{"# ", "$ "} {
					if rest, ok := strings.CutPrefix(line, prompt); ok {
						cmdline = rest
					}
				}
			case "ini":
				cmdline, _ = strings.CutPrefix(line, "ExecStart=")
			}
			words, err := split(cmdline)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", where, err)
			}
			if args, ok := runs(words, program); ok {
				cmds = append(cmds, Command{Where: where, Line: strings.TrimSpace(line), Args: args})
			}
		}
	}
	return cmds, nil
}

// runs reports whether words run program, and with which arguments.
func runs(words []string, program string) ([]string, bool) {
	if len(words) > 0 && words[0] == "sudo" {
		words = words[1:]
	}
	switch {
	case len(words) >= 3 && words[0] == "go" && words[1] == "run" && filepath.Base(words[2]) == program:
		return words[3:], true
	case len(words) >= 1 && filepath.Base(words[0]) == program:
		return words[1:], true
	}
	return nil, false
}

// split cuts a shell command line into words: quotes group, a word that
// starts with # begins a comment, and the command ends at the first
// operator (redirections, pipes, lists), which the check ignores.
func split(line string) ([]string, error) {
	var words []string
	var w strings.Builder
	inWord := false
	var quote rune
	flush := func() {
		if inWord {
			words = append(words, w.String())
		}
		w.Reset()
		inWord = false
	}
	for _, r := range line {
		switch {
		case quote != 0 && r == quote:
			quote = 0
		case quote != 0:
			w.WriteRune(r)
		case r == '\'' || r == '"':
			quote, inWord = r, true
		case r == ' ' || r == '\t':
			flush()
		case r == '#' && !inWord:
			flush()
			return words, nil
		case strings.ContainsRune("<>|;&", r):
			flush()
			return words, nil
		default:
			w.WriteRune(r)
			inWord = true
		}
	}
	if quote != 0 {
		return nil, errors.New("unterminated quote")
	}
	flush()
	return words, nil
}

// Check reports whether args would reach a command of the tree newRoot
// builds, with flags it defines and as many arguments as it takes,
// without running anything. newRoot is called for every check, so that
// flags parsed by one check cannot leak into the next.
func Check(newRoot func() *cobra.Command, args []string) error {
	root := newRoot()
	// Execute adds these lazily; a documented "help" or "completion"
	// is as real as any other command.
	root.InitDefaultHelpCmd()
	root.InitDefaultCompletionCmd()
	cmd, rest, err := root.Find(args)
	if err != nil {
		return err
	}
	cmd.InitDefaultHelpFlag()
	if err := cmd.ParseFlags(rest); err != nil {
		return fmt.Errorf("%s: %w", cmd.CommandPath(), err)
	}
	if !cmd.Runnable() {
		return fmt.Errorf("%s does nothing by itself: name one of its subcommands", cmd.CommandPath())
	}
	if help, _ := cmd.Flags().GetBool("help"); help {
		return nil
	}
	if err := cmd.ValidateArgs(cmd.Flags().Args()); err != nil {
		return fmt.Errorf("%s: %w", cmd.CommandPath(), err)
	}
	return nil
}

// ParseYAML reports whether text is YAML at all: what a deliberately
// partial example (```yaml fragment) must still be.
func ParseYAML(text string) error {
	v := viper.New()
	v.SetConfigType("yaml")
	return v.ReadConfig(strings.NewReader(text))
}
