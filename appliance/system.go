package appliance

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// mountBase mounts what every program expects. Each mount that is
// already there (a second init, a test) is left alone.
func mountBase() error {
	var errs []error
	for _, m := range []struct {
		fstype, target string
		flags          uintptr
		data           string
	}{
		{"proc", "/proc", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
		{"sysfs", "/sys", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
		{"devtmpfs", "/dev", unix.MS_NOSUID, "mode=0755"},
		{"devpts", "/dev/pts", unix.MS_NOSUID | unix.MS_NOEXEC, "gid=5,mode=0620,ptmxmode=0666"},
		{"tmpfs", "/dev/shm", unix.MS_NOSUID | unix.MS_NODEV, "mode=1777"},
		{"tmpfs", "/run", unix.MS_NOSUID | unix.MS_NODEV, "mode=0755"},
		{"tmpfs", "/tmp", unix.MS_NOSUID | unix.MS_NODEV, "mode=1777"},
		{"bpf", "/sys/fs/bpf", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, "mode=0700"},
	} {
		if err := os.MkdirAll(m.target, 0o755); err != nil {
			errs = append(errs, fmt.Errorf("mkdir %s: %w", m.target, err))
			continue
		}
		if err := unix.Mount(m.fstype, m.target, m.fstype, m.flags, m.data); err != nil && !errors.Is(err, unix.EBUSY) {
			errs = append(errs, fmt.Errorf("mount %s on %s: %w", m.fstype, m.target, err))
		}
	}
	return errors.Join(errs...)
}

// loadModules loads, in order, the modules listed in the image's
// load.list (written by vm/mkimage with dependencies first). A module
// that is already loaded is fine; one that fails is reported and the
// rest are still tried, since the appliance may not need it.
func loadModules(dir string) ([]string, error) {
	list, err := os.ReadFile(filepath.Join(dir, "load.list"))
	if err != nil {
		return nil, fmt.Errorf("modules: %w", err)
	}
	var loaded []string
	var errs []error
	for _, rel := range strings.Fields(string(list)) {
		f, err := os.Open(filepath.Join(dir, rel))
		if err != nil {
			errs = append(errs, fmt.Errorf("module %s: %w", rel, err))
			continue
		}
		err = unix.FinitModule(int(f.Fd()), "", 0)
		f.Close()
		if err != nil && !errors.Is(err, unix.EEXIST) {
			errs = append(errs, fmt.Errorf("module %s: %w", rel, err))
			continue
		}
		loaded = append(loaded, strings.TrimSuffix(filepath.Base(rel), ".ko"))
	}
	return loaded, errors.Join(errs...)
}

// kernelVersion is the running kernel's release, the lib/modules
// directory.
func kernelVersion() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return ""
	}
	return unix.ByteSliceToString(u.Release[:])
}

// waitBlock waits for a block device to appear: virtio disks are probed
// asynchronously after their module loads.
func waitBlock(name string, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for {
		if _, err := os.Stat("/sys/class/block/" + name); err == nil {
			if _, err := os.Stat("/dev/" + name); err == nil {
				return true
			}
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// mountConfigDisk mounts the config disk read-write at dir: an ext4
// filesystem (mke2fs -d builds one from a directory; vm/mkconfig.sh does
// it) on the whole device.
func mountConfigDisk(dev, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	err := unix.Mount("/dev/"+dev, dir, "ext4", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "")
	if errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("/dev/%s holds no ext4 filesystem (%w); vm/mkconfig.sh makes a config disk", dev, err)
	}
	if err != nil {
		return fmt.Errorf("mount /dev/%s (ext4) on %s: %w", dev, dir, err)
	}
	return nil
}

// applyNetwork configures the machine: host name, loopback, sysctls,
// interface addresses and MTUs, routes. It goes on past a failure and
// returns them all.
func applyNetwork(c *Config) error {
	var errs []error
	if c.Hostname != "" {
		if err := unix.Sethostname([]byte(c.Hostname)); err != nil {
			errs = append(errs, fmt.Errorf("hostname %q: %w", c.Hostname, err))
		}
	}
	for k, v := range c.Sysctl {
		p := "/proc/sys/" + strings.ReplaceAll(k, ".", "/")
		if err := os.WriteFile(p, []byte(v), 0o644); err != nil {
			errs = append(errs, fmt.Errorf("sysctl %s=%s: %w", k, v, err))
		}
	}
	links := append([]Interface{{Name: "lo"}}, c.Interfaces...)
	for _, ifc := range links {
		l, err := netlink.LinkByName(ifc.Name)
		if err != nil {
			errs = append(errs, fmt.Errorf("interface %s: %w (present: %s)", ifc.Name, err, linkNames()))
			continue
		}
		if ifc.MTU != 0 {
			if err := netlink.LinkSetMTU(l, ifc.MTU); err != nil {
				errs = append(errs, fmt.Errorf("interface %s: mtu %d: %w", ifc.Name, ifc.MTU, err))
			}
		}
		for _, a := range ifc.Addresses {
			pfx, err := netip.ParsePrefix(a)
			if err != nil {
				errs = append(errs, fmt.Errorf("interface %s: address %q: %w", ifc.Name, a, err))
				continue
			}
			addr := &netlink.Addr{IPNet: &net.IPNet{IP: pfx.Addr().AsSlice(), Mask: net.CIDRMask(pfx.Bits(), pfx.Addr().BitLen())}}
			if pfx.Addr().Is6() {
				addr.Flags = unix.IFA_F_NODAD
			}
			if err := netlink.AddrReplace(l, addr); err != nil {
				errs = append(errs, fmt.Errorf("interface %s: address %s: %w", ifc.Name, a, err))
			}
		}
		if err := netlink.LinkSetUp(l); err != nil {
			errs = append(errs, fmt.Errorf("interface %s: up: %w", ifc.Name, err))
		}
	}
	for _, r := range c.Routes {
		dst, err := r.Prefix()
		if err != nil {
			errs = append(errs, fmt.Errorf("route %q: %w", r.To, err))
			continue
		}
		route := &netlink.Route{Dst: &net.IPNet{IP: dst.Addr().AsSlice(), Mask: net.CIDRMask(dst.Bits(), dst.Addr().BitLen())}}
		if r.Via != "" {
			via, err := netip.ParseAddr(r.Via)
			if err != nil {
				errs = append(errs, fmt.Errorf("route %s: via %q: %w", r.To, r.Via, err))
				continue
			}
			route.Gw = net.IP(via.AsSlice())
		}
		if r.Dev != "" {
			l, err := netlink.LinkByName(r.Dev)
			if err != nil {
				errs = append(errs, fmt.Errorf("route %s: dev %s: %w", r.To, r.Dev, err))
				continue
			}
			route.LinkIndex = l.Attrs().Index
		}
		if err := netlink.RouteReplace(route); err != nil {
			errs = append(errs, fmt.Errorf("route %s via %s: %w", r.To, r.Via, err))
		}
	}
	return errors.Join(errs...)
}

func linkNames() string {
	ls, err := netlink.LinkList()
	if err != nil {
		return "?"
	}
	var names []string
	for _, l := range ls {
		names = append(names, l.Attrs().Name)
	}
	return strings.Join(names, ", ")
}

// virtioPort finds the virtio-serial port the host named (qemu's
// virtserialport name=…) and returns its device path.
func virtioPort(name string) (string, bool) {
	ports, _ := filepath.Glob("/sys/class/virtio-ports/*/name")
	for _, p := range ports {
		b, err := os.ReadFile(p)
		if err == nil && strings.TrimSpace(string(b)) == name {
			return "/dev/" + filepath.Base(filepath.Dir(p)), true
		}
	}
	return "", false
}

// onlineCPUs returns the CPUs the kernel runs.
func onlineCPUs() []int {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		return []int{0}
	}
	var cpus []int
	for i := 0; i < 1024 && len(cpus) < set.Count(); i++ {
		if set.IsSet(i) {
			cpus = append(cpus, i)
		}
	}
	return cpus
}

// readCmdline returns the kernel command line.
func readCmdline() string {
	f, err := os.Open("/proc/cmdline")
	if err != nil {
		return ""
	}
	defer f.Close()
	line, _ := bufio.NewReader(f).ReadString('\n')
	return strings.TrimSpace(line)
}
