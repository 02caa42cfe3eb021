package control

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/tetherlb/tether/api/unit"
	"github.com/tetherlb/tether/config"
	"golang.org/x/sys/unix"
)

// Supervision: the control process starts the forwarder, restarts it with
// back-off when it dies (saying why), and stops it when told to stop. It
// records the forwarder's PID so that a control process started after a
// crash adopts the running forwarder instead of starting another.

const (
	backoffMin    = 100 * time.Millisecond
	backoffMax    = 5 * time.Second
	backoffReset  = 30 * time.Second // a forwarder up this long starts the back-off afresh
	adoptPoll     = 200 * time.Millisecond
	stopGrace     = 5 * time.Second
	forwarderVerb = "forwarder"
)

func (c *Control) pidPath() string { return filepath.Join(c.opts.RunDir, PIDFile) }

// adoptable returns the PID of a forwarder a previous control process
// of this unit started, if it still runs. The PID file is only a hint: a
// PID is adopted (and later stopped) only if the process is this
// tetherd binary running the forwarder on this run directory's channel
// socket; a file naming anything else is stale, and is removed.
func (c *Control) adoptable() int {
	b, err := os.ReadFile(c.pidPath())
	if err != nil {
		return 0
	}
	why := "not a process ID"
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err == nil && pid > 1 {
		if why = ourForwarder(pid, c.opts.Tetherd, filepath.Join(c.opts.RunDir, ChannelSocket)); why == "" {
			return pid
		}
	}
	c.log.Warn().Str("pid_file", c.pidPath()).Str("content", strings.TrimSpace(string(b))).Str("why", why).Msg("not adopting what the PID file names; removed it")
	_ = os.Remove(c.pidPath())
	return 0
}

// ourForwarder says why process pid is not a forwarder that binary runs
// for the channel socket sock, or "" when it is one.
func ourForwarder(pid int, binary, sock string) string {
	exe, err := os.Stat(fmt.Sprintf("/proc/%d/exe", pid))
	if err != nil {
		return "no such process"
	}
	if want, err := os.Stat(binary); err != nil || !os.SameFile(exe, want) {
		return "not this tetherd binary"
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return "no such process"
	}
	args := strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00")
	if len(args) < 2 || args[1] != forwarderVerb {
		return "not a forwarder"
	}
	for i := 2; i+1 < len(args); i++ {
		if args[i] == "--control" && args[i+1] == sock {
			return ""
		}
	}
	return "the forwarder of another run directory"
}

func (c *Control) supervise(ctx context.Context) {
	backoff := backoffMin
	if pid := c.adoptable(); pid != 0 {
		c.setSup(func(s *unit.SupervisorState) { s.PID, s.Adopted, s.Since = pid, true, time.Now() })
		c.log.Info().Int("pid", pid).Msg("adopted the running forwarder")
		c.watchAdopted(ctx, pid)
		if ctx.Err() != nil {
			c.stopPID(pid)
			os.Remove(c.pidPath())
			return
		}
		c.log.Warn().Int("pid", pid).Msg("adopted forwarder died; starting a new one")
	}
	for ctx.Err() == nil {
		start := time.Now()
		err := c.runForwarder(ctx)
		if ctx.Err() != nil {
			return
		}
		if time.Since(start) > backoffReset {
			backoff = backoffMin
		}
		c.setSup(func(s *unit.SupervisorState) { s.Restarts++; s.LastExit = describe(err) })
		c.log.Error().Str("exit", describe(err)).Dur("restart_in", backoff).Msg("forwarder died")
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, backoffMax)
	}
}

func describe(err error) string {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return "killed by " + unix.SignalName(ws.Signal())
		}
		return fmt.Sprintf("exit status %d", ee.ExitCode())
	}
	if err == nil {
		return "exited"
	}
	return err.Error()
}

// runForwarder starts the forwarder and waits for it; on ctx's end it
// stops it.
func (c *Control) runForwarder(ctx context.Context) error {
	// The forwarder starts with the configuration this process runs, on
	// its standard input: the file is not read twice, and TETHER_*
	// environment overrides are not applied a second time by another
	// process with another environment.
	c.mu.Lock()
	running := c.running
	c.mu.Unlock()
	cfg, err := config.Encode(running)
	if err != nil {
		return err
	}
	// With the configuration, the connections this process knows: the
	// forwarder puts them back before its first packet (unit.ForwarderStart).
	start := unit.ForwarderStart{Config: cfg}
	for _, e := range c.inv.all() {
		start.Flows = append(start.Flows, unit.FlowRecord{Worker: int(e.Worker), Key: e.Key, Action: e.Action})
	}
	body, err := json.Marshal(start)
	if err != nil {
		return err
	}
	cmd := exec.Command(c.opts.Tetherd, forwarderVerb, "--config-stdin",
		"--control", filepath.Join(c.opts.RunDir, ChannelSocket))
	cmd.Stdin = bytes.NewReader(body)
	// The forwarder shares our output, and gets its own process group so
	// that a signal meant for this process (a terminal's ^C, a kill of
	// the control process) does not reach it: it outlives us on purpose.
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start forwarder: %w", err)
	}
	pid := cmd.Process.Pid
	c.mu.Lock()
	c.startedWithFlows = uint32(pid)
	c.mu.Unlock()
	if err := os.WriteFile(c.pidPath(), []byte(strconv.Itoa(pid)+"\n"), 0o644); err != nil {
		c.log.Warn().Err(err).Msg("write forwarder PID file")
	}
	c.setSup(func(s *unit.SupervisorState) { s.PID, s.Adopted, s.Since = pid, false, time.Now() })
	c.log.Info().Int("pid", pid).Msg("forwarder started")
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		c.stopPID(pid)
		<-done
		os.Remove(c.pidPath())
		return nil
	}
}

// watchAdopted waits until the adopted forwarder dies or ctx ends.
func (c *Control) watchAdopted(ctx context.Context, pid int) {
	t := time.NewTicker(adoptPoll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if syscall.Kill(pid, 0) != nil {
				return
			}
			if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err != nil {
				return
			}
			if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); strings.Contains(string(b), ") Z ") {
				return // a zombie: dead, not yet reaped by its parent
			}
		}
	}
}

// stopPID asks a forwarder to stop, then kills it after a grace period.
func (c *Control) stopPID(pid int) {
	if syscall.Kill(pid, syscall.SIGTERM) != nil {
		return
	}
	deadline := time.Now().Add(stopGrace)
	for time.Now().Before(deadline) {
		if syscall.Kill(pid, 0) != nil {
			return
		}
		if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); strings.Contains(string(b), ") Z ") {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	_ = syscall.Kill(pid, syscall.SIGKILL)
}

func (c *Control) setSup(fn func(*unit.SupervisorState)) {
	c.mu.Lock()
	fn(&c.sup)
	c.mu.Unlock()
}
