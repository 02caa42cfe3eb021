package nstest

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestNSRemovesStaleNamespaces: NS removes the namespaces NS made for a
// test binary that is gone (killed by go test's -timeout, its cleanups
// never run), and leaves those of running binaries and every namespace
// it did not name.
func TestNSRemovesStaleNamespaces(t *testing.T) {
	Require(t)
	gone := exec.Command("true")
	if err := gone.Run(); err != nil {
		t.Fatal(err)
	}
	dead := gone.Process.Pid
	stale := fmt.Sprintf("%s-tst-%d-a", marker, dead)
	foreign := fmt.Sprintf("tst%d", dead) // someone else's, with a dead PID in its name
	for _, name := range []string{stale, foreign} {
		Sh(t, "ip", "netns", "add", name)
		t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	}
	live := NS(t, "tst", "a")
	names := Sh(t, "ip", "netns", "list")
	if strings.Contains(names, stale) {
		t.Errorf("%s, left by PID %d which is gone, is still there", stale, dead)
	}
	for _, keep := range []string{foreign, live} {
		if !strings.Contains(names, keep) {
			t.Errorf("%s was removed", keep)
		}
	}
	if !strings.HasSuffix(live, fmt.Sprintf("-%d-a", os.Getpid())) {
		t.Errorf("NS named %s", live)
	}
}
