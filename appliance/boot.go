package appliance

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tetherlb/tether/agent"
	"github.com/tetherlb/tether/api/unit"
	"github.com/tetherlb/tether/config"
	"github.com/tetherlb/tether/internal/localapi"
)

// Paths inside the appliance.
const (
	ConfigDir = "/config" // the config disk
	// cmdlineDir holds configurations that came on the kernel command
	// line (tmpfs: an applied change lasts until the next boot).
	cmdlineDir = "/run/tether-init"
	// Console lines the boot test and operators look for.
	ReadyLine  = "TETHER READY"
	RescueLine = "TETHER RESCUE"
	ErrorLine  = "TETHER CONFIG ERROR"
)

// Init is PID 1.
type Init struct {
	out io.Writer
}

// New returns an init that writes its console lines to out.
func New(out io.Writer) *Init { return &Init{out: out} }

func (in *Init) logf(format string, args ...any) {
	fmt.Fprintf(in.out, "tether-init: "+format+"\n", args...)
}

// Run boots the appliance and returns only to power off or reboot.
func (in *Init) Run() {
	// First, so that no request to stop is lost: busybox's reboot, halt
	// and poweroff signal init, and with ctrl-alt-del handed to init the
	// kernel sends SIGINT instead of resetting.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT, syscall.SIGUSR1, syscall.SIGUSR2)
	if err := unix.Reboot(unix.LINUX_REBOOT_CMD_CAD_OFF); err != nil {
		in.logf("ctrl-alt-del: %v", err)
	}
	if err := mountBase(); err != nil {
		in.logf("%v", err)
	}
	kver := kernelVersion()
	if mods, err := loadModules(filepath.Join("/lib/modules", kver)); err != nil {
		in.logf("kernel %s: %v", kver, err)
	} else {
		in.logf("kernel %s, modules: %s", kver, strings.Join(mods, " "))
	}
	cl, err := ParseCmdline(readCmdline())
	if err != nil {
		in.logf("kernel command line: %v (the other parameters apply)", err)
	}
	cfg, files := in.configure(cl)

	cpus := onlineCPUs()
	housekeeping := cfg.HousekeepingCPUs
	if len(housekeeping) == 0 && len(cpus) > 1 {
		housekeeping = cpus[:1]
	}
	workers := workerCPUs(cpus, housekeeping)
	if len(housekeeping) > 0 {
		if err := pinProcess(housekeeping); err != nil {
			in.logf("housekeeping CPUs %v: %v", housekeeping, err)
		} else {
			in.logf("CPUs %v; init, the control process and the shell run on %v; forwarder workers on %v unless forwarder.cores says otherwise", cpus, housekeeping, workers)
		}
	}
	if err := applyNetwork(cfg); err != nil {
		in.logf("network: %v", err)
	}
	in.logf("host %s, interfaces: %s", cfg.Hostname, linkNames())

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	env := []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "TERM=linux", "PS1=\\h# "}
	sv := newSupervisor(in.logf, env)
	stop := make(chan struct{})
	go sv.reap(stop)

	socket, svc := in.roleService(cfg.Role, files)
	if len(workers) > 0 {
		svc.env = append(svc.env, config.WorkerCPUsEnv+"="+joinInts(workers))
	}
	if err := sv.start(svc); err != nil {
		in.logf("%v", err)
	}
	if dev, ok := virtioPort(AdminPortName); ok {
		in.logf("admin channel: virtio-serial port %s (%s) relays to %s", AdminPortName, dev, socket)
		go newRelay(dev, socket, in.logf).run(ctx)
	} else {
		in.logf("admin channel: no virtio-serial port named %s; the API is reachable from the console only", AdminPortName)
	}
	if cfg.Shell {
		if tty := consoleTTY(); tty != "" {
			if err := sv.start(&service{name: "shell", argv: []string{"/bin/sh", "-l"}, tty: tty}); err != nil {
				in.logf("console shell: %v", err)
			}
		}
	}
	go in.watchReady(ctx, cfg.Role, socket)
	for _, dev := range powerButtons() {
		go func() {
			err := watchPowerButton(dev, func() {
				in.logf("power button pressed")
				select {
				case sig <- syscall.SIGUSR2:
				default:
				}
			})
			in.logf("power button %s: %v", dev, err)
		}()
	}

	s := <-sig
	cmd, what := unix.LINUX_REBOOT_CMD_RESTART, "rebooting"
	switch s {
	case syscall.SIGUSR1:
		cmd, what = unix.LINUX_REBOOT_CMD_HALT, "halting"
	case syscall.SIGUSR2:
		cmd, what = unix.LINUX_REBOOT_CMD_POWER_OFF, "powering off"
	}
	in.logf("%s: stopping services", what)
	cancel()
	sv.stop(10 * time.Second)
	close(stop)
	unix.Sync()
	if err := unix.Unmount(ConfigDir, 0); err != nil && !errors.Is(err, unix.EINVAL) {
		in.logf("unmount %s: %v", ConfigDir, err)
	}
	in.logf("%s", what)
	if err := unix.Reboot(cmd); err != nil {
		in.logf("reboot: %v", err)
	}
	select {}
}

// roleFiles are where the role's configuration files are.
type roleFiles struct {
	tether, agent string
}

// configure finds the configuration: the config disk (tether.disk, vda
// unless "none") mounted on /config with appliance.yaml, tether.yaml and
// agent.yaml; the kernel command line's tether.config and tether.agent
// override the disk's files, and its other parameters appliance.yaml.
// Every problem is said on the console; none stops the boot.
func (in *Init) configure(cl *Cmdline) (*Config, roleFiles) {
	cfg := Defaults()
	files := roleFiles{tether: filepath.Join(ConfigDir, "tether.yaml"), agent: filepath.Join(ConfigDir, "agent.yaml")}
	disk := cl.Disk
	if disk == "" {
		disk = "vda"
	}
	if disk != "none" {
		switch {
		case !waitBlock(disk, 5*time.Second):
			if cl.Config == nil && cl.Agent == nil {
				in.logf("%s: no config disk: /dev/%s is not there. Attach one (vm/mkconfig.sh makes it) or pass tether.config= on the kernel command line; starting with no configuration", ErrorLine, disk)
			}
		default:
			if err := mountConfigDisk(disk, ConfigDir); err != nil {
				in.logf("%s: config disk: %v; starting with no configuration", ErrorLine, err)
				break
			}
			in.logf("config disk /dev/%s mounted on %s", disk, ConfigDir)
			b, err := os.ReadFile(filepath.Join(ConfigDir, "appliance.yaml"))
			switch {
			case err == nil:
				c, err := ParseConfig(b)
				if err != nil {
					in.logf("%s: %s: %v; using the defaults", ErrorLine, filepath.Join(ConfigDir, "appliance.yaml"), err)
					break
				}
				cfg = c
			case !errors.Is(err, os.ErrNotExist):
				in.logf("%s: %v", ErrorLine, err)
			}
		}
	}
	good := *cfg
	if err := cl.Apply(cfg); err != nil {
		in.logf("%s: kernel command line: %v; ignoring its network settings", ErrorLine, err)
		*cfg = good
	}
	for _, f := range []struct {
		b    []byte
		path *string
		name string
	}{{cl.Config, &files.tether, "tether.yaml"}, {cl.Agent, &files.agent, "agent.yaml"}} {
		if f.b == nil {
			continue
		}
		p := filepath.Join(cmdlineDir, f.name)
		err := os.MkdirAll(cmdlineDir, 0o700)
		if err == nil {
			err = os.WriteFile(p, f.b, 0o600)
		}
		if err != nil {
			in.logf("%s: %s from the kernel command line: %v", ErrorLine, f.name, err)
			continue
		}
		*f.path = p
		in.logf("%s from the kernel command line (%s)", f.name, p)
	}
	return cfg, files
}

// roleService returns the role's API socket and its service.
func (in *Init) roleService(role string, files roleFiles) (string, *service) {
	if role == RoleAgent {
		socket := "/run/tether-agent/agent.sock"
		if b, err := os.ReadFile(files.agent); err != nil {
			in.logf("%s: %v: tether-agent cannot start until it exists", ErrorLine, err)
		} else if c, err := agent.ParseConfig(b); err != nil {
			in.logf("%s: %s: %v", ErrorLine, files.agent, err)
		} else {
			socket = c.API.Socket
		}
		return socket, &service{name: "tether-agent", argv: []string{"/usr/sbin/tether-agent", "run", "--config", files.agent}}
	}
	socket := "/run/tether/admin.sock"
	if c, err := config.LoadFile(files.tether); err != nil {
		in.logf("%s: %v", ErrorLine, err)
	} else {
		socket = c.Admin.Socket
	}
	return socket, &service{name: "tetherd", argv: []string{"/usr/sbin/tetherd", "run", "--config", files.tether, "--rescue", "--admin-socket", socket}}
}

// watchReady says on the console when the role's API answers, and
// again whenever that changes: the ready line with what runs, or the
// rescue line with why nothing does.
func (in *Init) watchReady(ctx context.Context, role, socket string) {
	c := localapi.NewClient(socket, role)
	last := ""
	for ctx.Err() == nil {
		line := ""
		if role == RoleAgent {
			var t map[string]any
			if err := c.Do("GET", "/v1/table", nil, &t); err == nil {
				line = fmt.Sprintf("%s: tether-agent running, API on %s", ReadyLine, socket)
			}
		} else {
			var st unit.Status
			if err := c.Do("GET", "/v1/status", nil, &st); err == nil {
				switch {
				case st.Problem != "":
					line = fmt.Sprintf("%s: %s. The admin API is up on %s: fix it with tetherctl config apply FILE", RescueLine, st.Problem, socket)
				case st.Forwarder.Connected:
					line = fmt.Sprintf("%s: unit %s forwarding (configuration generation %d), admin API on %s", ReadyLine, st.Unit, st.Generation, socket)
				}
			}
		}
		if line != "" && line != last {
			in.logf("%s", line)
		}
		// Eagerly until the API first answers, then only to notice a
		// change.
		pause := 250 * time.Millisecond
		if line != "" {
			last = line
			pause = 2 * time.Second
		}
		sleepCtx(ctx, pause)
	}
}

// consoleTTY is the kernel's primary console device (the last console=
// on the command line), for the shell.
func consoleTTY() string {
	b, err := os.ReadFile("/sys/class/tty/console/active")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return ""
	}
	return "/dev/" + f[len(f)-1]
}

// workerCPUs are the online CPUs housekeeping leaves free, for forwarder
// workers (config.WorkerCPUsEnv).
func workerCPUs(online, housekeeping []int) []int {
	var free []int
	for _, c := range online {
		if !slices.Contains(housekeeping, c) {
			free = append(free, c)
		}
	}
	return free
}

func joinInts(v []int) string {
	s := make([]string, len(v))
	for i, n := range v {
		s[i] = strconv.Itoa(n)
	}
	return strings.Join(s, ",")
}
