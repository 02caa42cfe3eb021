package floors

import (
	"bufio"
	"bytes"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
)

// Floors maps package patterns to floor numbers. A pattern is a path
// relative to the module ("config"), or a folder followed by "/*",
// which stands for every package below that folder ("cmd/*").
type Floors struct {
	exact  map[string]int
	prefix map[string]int // "cmd/" → floor
}

// Parse reads the floors table of docs/architecture.md: the first
// Markdown table after the heading "## Floors", whose rows are
// | floor number | name | patterns in backquotes, comma-separated |.
func Parse(doc []byte) (Floors, error) {
	f := Floors{exact: map[string]int{}, prefix: map[string]int{}}
	sc := bufio.NewScanner(bytes.NewReader(doc))
	in, rows := false, 0
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		switch {
		case strings.HasPrefix(text, "## "):
			if in && rows > 0 {
				return f, nil
			}
			in = text == "## Floors"
			continue
		case !in || !strings.HasPrefix(text, "|"):
			if in && rows > 0 && text != "" {
				return f, nil // the table ended
			}
			continue
		}
		cells := strings.Split(strings.Trim(text, "|"), "|")
		if len(cells) < 3 {
			return f, fmt.Errorf("floors: line %d: want | floor | name | packages |", line)
		}
		n, err := strconv.Atoi(strings.TrimSpace(cells[0]))
		if err != nil {
			continue // the header and its rule
		}
		for _, p := range strings.Split(cells[2], ",") {
			p = strings.Trim(strings.TrimSpace(p), "`")
			if p == "" {
				return f, fmt.Errorf("floors: line %d: an empty package pattern", line)
			}
			if err := f.add(p, n); err != nil {
				return f, fmt.Errorf("floors: line %d: %w", line, err)
			}
		}
		rows++
	}
	if rows == 0 {
		return f, fmt.Errorf("floors: no table under \"## Floors\"")
	}
	return f, sc.Err()
}

func (f *Floors) add(pattern string, n int) error {
	if dir, ok := strings.CutSuffix(pattern, "/*"); ok {
		if old, dup := f.prefix[dir+"/"]; dup {
			return fmt.Errorf("%s is on floors %d and %d", pattern, old, n)
		}
		f.prefix[dir+"/"] = n
		return nil
	}
	if old, dup := f.exact[pattern]; dup {
		return fmt.Errorf("%s is on floors %d and %d", pattern, old, n)
	}
	f.exact[pattern] = n
	return nil
}

// Of returns the floor of a package (a path relative to the module): its
// own entry, else the entry of the closest folder pattern above it.
func (f Floors) Of(pkg string) (int, bool) {
	if n, ok := f.exact[pkg]; ok {
		return n, true
	}
	best, floor := "", 0
	for p, n := range f.prefix {
		if strings.HasPrefix(pkg, p) && len(p) > len(best) {
			best, floor = p, n
		}
	}
	return floor, best != ""
}

// Check returns a line for every import that does not point down, and
// for every package on no floor. imports maps each of the module's
// packages (relative paths) to the module packages it imports; tests'
// imports are not included, since tests may reach anywhere.
func Check(f Floors, imports map[string][]string) []string {
	var out []string
	for _, pkg := range slices.Sorted(maps.Keys(imports)) {
		floor, ok := f.Of(pkg)
		if !ok {
			out = append(out, fmt.Sprintf("%s is on no floor: add it to the table in docs/architecture.md", pkg))
			continue
		}
		for _, imp := range imports[pkg] {
			if g, ok := f.Of(imp); ok && g >= floor {
				out = append(out, fmt.Sprintf("%s (floor %d) imports %s (floor %d): imports must point to lower floors", pkg, floor, imp, g))
			}
		}
	}
	return out
}
