package appliance

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// service is a process init keeps running.
type service struct {
	name string
	argv []string
	env  []string // added to the supervisor's
	// tty, when set, is the terminal the process gets as its standard
	// streams and controlling terminal (the console shell).
	tty     string
	pid     int
	started time.Time
	backoff time.Duration
}

// supervisor starts services, restarts those that exit, and reaps every
// process that ends up a child of PID 1 (the forwarder outlives a killed
// control process and is re-parented here).
type supervisor struct {
	log  func(format string, args ...any)
	env  []string
	mu   sync.Mutex
	pids map[int]*service
	// stopping: no more restarts.
	stopping bool
	// exited is signalled on every reaped known service, for stop.
	exited chan struct{}
}

func newSupervisor(log func(string, ...any), env []string) *supervisor {
	return &supervisor{log: log, env: env, pids: map[int]*service{}, exited: make(chan struct{}, 16)}
}

// start runs s now.
func (sv *supervisor) start(s *service) error {
	sv.mu.Lock()
	defer sv.mu.Unlock()
	if sv.stopping {
		return errors.New("stopping")
	}
	return sv.spawnLocked(s)
}

func (sv *supervisor) spawnLocked(s *service) error {
	files := []uintptr{0, 1, 2}
	attr := &syscall.SysProcAttr{Setsid: true}
	var tty *os.File
	if s.tty != "" {
		var err error
		if tty, err = os.OpenFile(s.tty, os.O_RDWR, 0); err != nil {
			return fmt.Errorf("%s: open %s: %w", s.name, s.tty, err)
		}
		defer tty.Close()
		fd := tty.Fd()
		files = []uintptr{fd, fd, fd}
		attr.Setctty, attr.Ctty = true, 0
	} else {
		null, err := os.Open(os.DevNull)
		if err != nil {
			return err
		}
		defer null.Close()
		files[0] = null.Fd()
	}
	env := append(slices.Clone(sv.env), s.env...)
	pid, err := syscall.ForkExec(s.argv[0], s.argv, &syscall.ProcAttr{Env: env, Files: files, Sys: attr})
	if err != nil {
		return fmt.Errorf("%s: start %s: %w", s.name, s.argv[0], err)
	}
	s.pid, s.started = pid, time.Now()
	sv.pids[pid] = s
	return nil
}

// reap collects exited children until stop closes, restarting services.
// A service that ran less than a minute waits longer each time (1 s up
// to 30 s), so that a crash loop does not flood the console.
func (sv *supervisor) reap(stop <-chan struct{}) {
	sig := make(chan os.Signal, 8)
	signal.Notify(sig, syscall.SIGCHLD)
	defer signal.Stop(sig)
	for {
		for {
			var ws unix.WaitStatus
			pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
			sv.exitedPID(pid, ws)
		}
		select {
		case <-sig:
		case <-time.After(time.Second):
		case <-stop:
			return
		}
	}
}

func (sv *supervisor) exitedPID(pid int, ws unix.WaitStatus) {
	sv.mu.Lock()
	defer sv.mu.Unlock()
	s, ok := sv.pids[pid]
	if !ok {
		return // an orphan re-parented to init
	}
	delete(sv.pids, pid)
	select {
	case sv.exited <- struct{}{}:
	default:
	}
	if sv.stopping {
		return
	}
	how := "exited with status " + strconv.Itoa(ws.ExitStatus())
	if ws.Signaled() {
		how = "killed by " + ws.Signal().String()
	}
	if time.Since(s.started) > time.Minute {
		s.backoff = 0
	}
	s.backoff = min(max(2*s.backoff, time.Second), 30*time.Second)
	if s.tty == "" {
		sv.log("%s (pid %d) %s; restarting in %s", s.name, pid, how, s.backoff)
	}
	time.AfterFunc(s.backoff, func() {
		sv.mu.Lock()
		defer sv.mu.Unlock()
		if sv.stopping {
			return
		}
		if err := sv.spawnLocked(s); err != nil {
			sv.log("%v", err)
		}
	})
}

// stop ends every service (SIGTERM, then SIGKILL after grace) and then
// every other process, before power-off.
func (sv *supervisor) stop(grace time.Duration) {
	sv.mu.Lock()
	sv.stopping = true
	for pid, s := range sv.pids {
		// An interactive shell ignores SIGTERM; a hang-up ends it.
		sig := syscall.SIGTERM
		if s.tty != "" {
			sig = syscall.SIGHUP
		}
		_ = syscall.Kill(pid, sig)
	}
	sv.mu.Unlock()
	deadline := time.After(grace)
	for {
		sv.mu.Lock()
		n := len(sv.pids)
		sv.mu.Unlock()
		if n == 0 {
			break
		}
		select {
		case <-sv.exited:
			continue
		case <-deadline:
		}
		break
	}
	// Everything left, the forwarder included: SIGTERM lets it detach its
	// XDP program, then SIGKILL.
	_ = syscall.Kill(-1, syscall.SIGTERM)
	time.Sleep(500 * time.Millisecond)
	_ = syscall.Kill(-1, syscall.SIGKILL)
}

// pinProcess restricts every thread of this process to cpus; processes
// it starts inherit the restriction. Forwarder workers set their own
// affinity (forwarder.cores), which this does not limit.
func pinProcess(cpus []int) error {
	var set unix.CPUSet
	for _, c := range cpus {
		set.Set(c)
	}
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return err
	}
	var errs []error
	for _, t := range tasks {
		tid, err := strconv.Atoi(t.Name())
		if err != nil {
			continue
		}
		if err := unix.SchedSetaffinity(tid, &set); err != nil {
			errs = append(errs, fmt.Errorf("thread %d: %w", tid, err))
		}
	}
	return errors.Join(errs...)
}
