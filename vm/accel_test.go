package vm

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"syscall"
)

// accelerator is qemu's accelerator for the boots of one test process,
// chosen by the first boot (see accelEnv).
type accelerator struct {
	once sync.Once
	name string // "kvm" or "tcg"
	why  string // for the log
	err  error  // a bad accelEnv
}

// choose returns the accelerator and why it was chosen, deciding on the
// first call, with w's host namespace for the KVM probe.
func (a *accelerator) choose(w *world) (name, why string, err error) {
	a.once.Do(func() { a.name, a.why, a.err = chooseAccel(w) })
	return a.name, a.why, a.err
}

func chooseAccel(w *world) (name, why string, err error) {
	switch forced := os.Getenv(accelEnv); forced {
	case "kvm", "tcg":
		return forced, accelEnv + " says so", nil
	case "":
	default:
		return "", "", fmt.Errorf("%s=%q: want kvm or tcg", accelEnv, forced)
	}
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	if err != nil {
		return "tcg", fmt.Sprintf("no KVM: %v", err), nil
	}
	f.Close()
	if err := w.probeKVM(); err != nil {
		return "tcg", fmt.Sprintf("/dev/kvm opens but KVM does not run the image: %v", err), nil
	}
	return "kvm", "a probe boot under KVM reached the console", nil
}

// probeKVM boots the image under KVM with no disk and no NIC and waits
// up to probeTimeout for the console's first output, then stops it. It
// runs in the host namespace so that, were the test killed meanwhile,
// e2e.RemoveStale would find and kill it.
func (w *world) probeKVM() error {
	kernel, initrd := w.images()
	bound := within(w.ctx, probeTimeout)
	ctx, cancel := context.WithTimeout(w.ctx, bound)
	defer cancel()
	console := &firstWrite{said: make(chan struct{})}
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", w.host,
		"qemu-system-x86_64", "-accel", "kvm", "-m", "512", "-smp", "2",
		"-display", "none", "-monitor", "none", "-nic", "none", "-no-reboot",
		"-kernel", kernel, "-initrd", initrd, "-append", "console=ttyS0 panic=-1",
		"-serial", "stdio")
	cmd.Stdout, cmd.Stderr = console, &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start qemu: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case <-console.said:
		cancel() // ip execs qemu in place: this kills qemu
		<-exited
		return nil
	case err := <-exited:
		if console.spoke() {
			return nil // it spoke, then stopped (a panic=-1 reboot): KVM runs it
		}
		return fmt.Errorf("qemu exited (%v) before its console said anything: %s", err, bytes.TrimSpace(stderr.Bytes()))
	case <-ctx.Done():
		<-exited
		return fmt.Errorf("its console said nothing within %s", bound)
	}
}

// firstWrite closes said when the first bytes are written to it.
type firstWrite struct {
	once sync.Once
	said chan struct{}
}

func (f *firstWrite) spoke() bool {
	select {
	case <-f.said:
		return true
	default:
		return false
	}
}

func (f *firstWrite) Write(p []byte) (int, error) {
	if len(p) > 0 {
		f.once.Do(func() { close(f.said) })
	}
	return len(p), nil
}
