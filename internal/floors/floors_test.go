package floors

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const sample = `# Architecture

## Floors

| floor | name | packages |
|---|---|---|
| 0 | ground | ` + "`api/unit`, `internal/*`" + ` |
| 1 | schemas | ` + "`config`" + ` |
| 2 | dataplane | ` + "`dataplane`, `dataplane/replay`" + ` |
| 3 | programs | ` + "`cmd/*`" + ` |

## Next
`

// TestCheck is the check on a small tree: downward imports pass, and an
// upward import, a sideways one and a package on no floor are each
// reported.
func TestCheck(t *testing.T) {
	f, err := Parse([]byte(sample))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name    string
		imports map[string][]string
		want    []string // substrings of the reported lines, in order
	}{
		{"downward", map[string][]string{
			"config": {"api/unit", "internal/confcheck"}, "dataplane": {"config"}, "cmd/tetherd": {"dataplane", "config"},
		}, nil},
		{"upward: config imports the dataplane", map[string][]string{
			"config": {"api/unit", "dataplane"}, "dataplane": {"config"},
		}, []string{"config (floor 1) imports dataplane (floor 2)"}},
		{"sideways: same floor", map[string][]string{
			"dataplane": {"dataplane/replay"},
		}, []string{"dataplane (floor 2) imports dataplane/replay (floor 2)"}},
		{"a package on no floor", map[string][]string{
			"nic/afxdp": nil,
		}, []string{"nic/afxdp is on no floor"}},
	}
	for _, c := range cases {
		got := Check(f, c.imports)
		if len(got) != len(c.want) {
			t.Errorf("%s: got %q, want %d lines", c.name, got, len(c.want))
			continue
		}
		for i, w := range c.want {
			if !strings.Contains(got[i], w) {
				t.Errorf("%s: got %q, want it to say %q", c.name, got[i], w)
			}
		}
	}
	if n, ok := f.Of("internal/probe"); !ok || n != 0 {
		t.Errorf("internal/probe is on floor %d (%v), want 0 through internal/*", n, ok)
	}
	if _, ok := f.Of("internal"); ok {
		t.Error("internal/* matched internal itself")
	}
}

func TestParseRefusesDuplicates(t *testing.T) {
	doc := strings.Replace(sample, "| 3 | programs |", "| 3 | programs | `config`, ", 1)
	if _, err := Parse([]byte(doc)); err == nil || !strings.Contains(err.Error(), "config is on floors 1 and 3") {
		t.Fatalf("got %v, want config named on two floors", err)
	}
	if _, err := Parse([]byte("# nothing\n")); err == nil {
		t.Fatal("a document without a floors table parsed")
	}
}

// TestTreeImportsPointDown runs the check over the module's packages,
// with the floors of docs/architecture.md.
func TestTreeImportsPointDown(t *testing.T) {
	root := moduleRoot(t)
	doc, err := os.ReadFile(filepath.Join(root, "docs", "architecture.md"))
	if err != nil {
		t.Fatal(err)
	}
	f, err := Parse(doc)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("go", "list", "-json=ImportPath,Imports,Module", "./...")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	imports := map[string][]string{}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	var mod string
	for dec.More() {
		var p struct {
			ImportPath string
			Imports    []string
			Module     struct{ Path string }
		}
		if err := dec.Decode(&p); err != nil {
			t.Fatal(err)
		}
		mod = p.Module.Path
		rel := strings.TrimPrefix(strings.TrimPrefix(p.ImportPath, mod), "/")
		var own []string
		for _, imp := range p.Imports {
			if r, ok := strings.CutPrefix(imp, mod+"/"); ok {
				own = append(own, r)
			}
		}
		imports[rel] = own
	}
	if len(imports) < 20 {
		t.Fatalf("go list found %d packages; the module has more", len(imports))
	}
	for _, line := range Check(f, imports) {
		t.Error(line)
	}
	// The contract stays on the ground floor: tools that only talk to a
	// unit link it and nothing of the dataplane.
	for _, tool := range []string{"cmd/tetherctl", "cmd/tether-init"} {
		deps := goListDeps(t, root, "./"+tool)
		for _, bad := range []string{mod + "/dataplane", mod + "/forwarder", mod + "/nic"} {
			if i := slices.IndexFunc(deps, func(d string) bool { return d == bad || strings.HasPrefix(d, bad+"/") }); i >= 0 {
				t.Errorf("%s links %s", tool, deps[i])
			}
		}
	}
}

func moduleRoot(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatalf("go env GOMOD: %v", err)
	}
	return filepath.Dir(strings.TrimSpace(string(out)))
}

func goListDeps(t *testing.T, root, pkg string) []string {
	t.Helper()
	cmd := exec.Command("go", "list", "-deps", pkg)
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list -deps %s: %v", pkg, err)
	}
	return strings.Fields(string(out))
}
