package control

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// sleeperEnv makes the test binary a process that waits to be killed,
// with whatever arguments the test gave it: a stand-in forwarder.
const sleeperEnv = "CONTROL_TEST_SLEEPER"

func TestMain(m *testing.M) {
	if os.Getenv(sleeperEnv) == "1" {
		time.Sleep(time.Hour) // until the test kills it
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func sleeper(t *testing.T, bin string, args ...string) int {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), sleeperEnv+"=1")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd.Process.Pid
}

// TestAdoption: only this binary's forwarder on this run directory's
// socket is adopted; anything else the PID file names is not (and the
// file is removed), whatever its arguments say.
func TestAdoption(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	sock := filepath.Join(dir, ChannelSocket)
	ours := sleeper(t, self, "forwarder", "--config-stdin", "--control", sock)
	elsewhere := sleeper(t, self, "forwarder", "--control", "/run/other/forwarder.sock")
	agent := sleeper(t, self, "agent", "--control", sock)
	sleepBin, err := exec.LookPath("sleep")
	if err != nil {
		t.Skip("no sleep binary")
	}
	foreign := sleeper(t, sleepBin, "1000", "forwarder", "--control", sock)
	c := &Control{opts: Options{RunDir: dir, Tetherd: self}, log: zerolog.Nop()}
	for _, tc := range []struct {
		name    string
		content string
		want    int
	}{
		{"this unit's forwarder", strconv.Itoa(ours), ours},
		{"another run directory's forwarder", strconv.Itoa(elsewhere), 0},
		{"this binary, not a forwarder", strconv.Itoa(agent), 0},
		{"another binary with forwarder in its arguments", strconv.Itoa(foreign), 0},
		{"a process that is gone", "999999999", 0},
		{"not a number", "forwarder", 0},
	} {
		if err := os.WriteFile(c.pidPath(), []byte(tc.content+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if got := c.adoptable(); got != tc.want {
			t.Errorf("%s: adoptable %d, want %d", tc.name, got, tc.want)
		}
		_, err := os.Stat(c.pidPath())
		if kept := err == nil; kept != (tc.want != 0) {
			t.Errorf("%s: PID file kept %v", tc.name, kept)
		}
	}
	if got := describe(&exec.ExitError{ProcessState: killedState(t)}); got != "killed by SIGKILL" {
		t.Errorf("describe: %q", got)
	}
}

// killedState is the state of a process killed by SIGKILL.
func killedState(t *testing.T) *os.ProcessState {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), sleeperEnv+"=1")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	cmd.Process.Kill()
	cmd.Wait()
	return cmd.ProcessState
}
