package e2e

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestDemo runs the README's main command's program end to end, on both
// ports.
func TestDemo(t *testing.T) {
	if err := Root(); err != nil {
		t.Skipf("system test skipped: %v", err)
	}
	demo := filepath.Join(t.TempDir(), "tether-demo")
	build := exec.Command("go", "build", "-o", demo, "./cmd/tether-demo")
	build.Dir = ".."
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build tether-demo: %v\n%s", err, out)
	}
	for _, port := range []string{"afxdp", "tun"} {
		t.Run(port, func(t *testing.T) {
			out, err := exec.Command(demo, "--tetherd", tetherd, "--port", port, "--connections", "60").CombinedOutput()
			if err != nil {
				t.Fatalf("demo: %v\n%s", err, out)
			}
			for _, want := range []string{"arrived intact", "vip web-nat", "vip web-dsr", "removing the demo network"} {
				if !strings.Contains(string(out), want) {
					t.Errorf("demo output lacks %q:\n%s", want, out)
				}
			}
		})
	}
}
