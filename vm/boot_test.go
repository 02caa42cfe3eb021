package vm

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tetherlb/tether/e2e"
)

// imageEnv names the directory holding vmlinuz and initramfs.img (make
// vm writes vm/out). make test sets it; without it the test skips.
const imageEnv = "TETHER_VM_IMAGE"

// accelEnv forces qemu's accelerator: kvm or tcg (software emulation).
// Unset, the test uses KVM when /dev/kvm opens and a probe boot under
// KVM reaches the console within probeTimeout, and TCG otherwise: nested
// or paravirtual KVM can open /dev/kvm and yet never run the guest
// (qemu -accel kvm then prints nothing on the console, ever). The choice
// is made once per test process and logged by every test.
const accelEnv = "TETHER_VM_ACCEL"

// Bounds. Without KVM the kernel runs in qemu's software emulation,
// which boots in 10-30 s on the CI machine; the bounds leave room. Its
// first console line comes within 1-2 s, so a console silent for
// firstOutputTimeout (or probeTimeout in the KVM probe) means the guest
// is not running at all. Under emulation the guest always runs, however
// slowly: with the system tests' units busy-polling both cores beside
// it, CI once saw a console silent for 30 s. There the bound is
// firstOutputTCG, which only bounds a hung qemu.
//
// Every wait also ends cleanupReserve before go test's -timeout
// (t.Deadline): a stuck boot then fails its own test, and the cleanup
// still runs (qemu stopped, namespaces deleted, the console printed)
// instead of the whole binary panicking with everything left behind.
// minBudget is the least time worth starting a boot with.
const (
	bootTimeout        = 4 * time.Minute
	stepTimeout        = time.Minute
	powerTimeout       = time.Minute
	probeTimeout       = 20 * time.Second
	firstOutputTimeout = 30 * time.Second
	firstOutputTCG     = 2 * time.Minute
	cleanupReserve     = 30 * time.Second
	minBudget          = time.Minute
)

// tools are the host's tetherctl and tether-agent, talking to the VM
// through its admin channel.
var tools = struct {
	tetherctl, agent string
}{}

func TestMain(m *testing.M) {
	e2e.RunRoleFromEnv()
	code := func() int {
		if e2e.Root() == nil && os.Getenv(imageEnv) != "" {
			// A run killed by its timeout leaves namespaces with qemu
			// still inside: remove them before adding ours.
			if err := e2e.RemoveStale(); err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
			dir, err := os.MkdirTemp("", "tether-vm-")
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
			defer os.RemoveAll(dir)
			tools.tetherctl, tools.agent = filepath.Join(dir, "tetherctl"), filepath.Join(dir, "tether-agent")
			for _, bin := range []string{tools.tetherctl, tools.agent} {
				build := exec.Command("go", "build", "-o", bin, "./cmd/"+filepath.Base(bin))
				build.Dir = ".."
				if out, err := build.CombinedOutput(); err != nil {
					fmt.Fprintf(os.Stderr, "build %s: %v\n%s", bin, err, out)
					return 1
				}
			}
		}
		return m.Run()
	}()
	os.Exit(code)
}

// qemuAccel is the accelerator every boot of this process uses. Like
// tools, it is test-process state: the choice costs a probe boot, made
// once.
var qemuAccel accelerator

// world is the VM's network: one bridge in a host namespace joins the
// VM's tap device, a client and two backends.
//
//	client 10.0.0.2 ──┐
//	  VM eth0 10.0.0.1 ── tap0 ── br0 (namespace h)
//	backend bN 10.0.0.1N ─┘ (default route via the VM: NAT replies)
type world struct {
	*e2e.Net
	ctx          context.Context // ends cleanupReserve before go test's -timeout
	image        string          // the directory holding vmlinuz and initramfs.img
	accel        string          // qemu's -accel
	host, client string
	backends     []string
	dir          string
}

func newWorld(t *testing.T) *world {
	t.Helper()
	image := needImage(t)
	// A boot under software emulation takes a core for a minute: the
	// flood tests, whose margins it would break, wait for it, and it
	// for them.
	e2e.Exclusive(t, 3*time.Minute)
	ctx := testContext(t)
	n, err := e2e.New("vm")
	if err != nil {
		t.Fatal(err)
	}
	w := &world{Net: n, ctx: ctx, image: image, dir: t.TempDir()}
	t.Cleanup(func() {
		if err := w.Close(); err != nil {
			t.Error(err)
		}
	})
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	w.host, err = w.NS("h")
	must(err)
	for _, c := range [][]string{
		{"ip", "link", "add", "br0", "type", "bridge"},
		{"ip", "link", "set", "br0", "up"},
		{"ip", "tuntap", "add", "dev", "tap0", "mode", "tap"},
		{"ip", "link", "set", "tap0", "master", "br0", "up"},
	} {
		must(w.Run(w.host, c...))
	}
	attach := func(name, ip string) string {
		ns, err := w.NS(name)
		must(err)
		must(w.Veth(ns, "e0", []string{ip + "/24"}, w.host, "p"+name, nil))
		must(w.Run(w.host, "ip", "link", "set", "p"+name, "master", "br0"))
		// Locally made packets leave a veth with a partial checksum; the
		// tap hands them to the VM as such. Real clients send whole ones.
		must(w.Run(ns, "ethtool", "-K", "e0", "tx", "off", "tso", "off", "gso", "off"))
		return ns
	}
	w.client = attach("c", "10.0.0.2")
	must(w.Run(w.client, "ip", "route", "add", "192.0.2.0/24", "via", "10.0.0.1"))
	for i := range 2 {
		ns := attach(fmt.Sprintf("b%d", i), fmt.Sprintf("10.0.0.1%d", i))
		must(w.Run(ns, "ip", "route", "add", "default", "via", "10.0.0.1"))
		p, err := w.Start(ns, fmt.Sprintf("httpd b%d", i), e2e.RoleCommand("httpd", fmt.Sprintf("b%d", i), "0.0.0.0:8080"), e2e.Self())
		must(err)
		must(p.WaitFor(e2e.Ready, 10*time.Second))
		w.backends = append(w.backends, ns)
	}
	accel, why, err := qemuAccel.choose(w)
	must(err)
	t.Logf("qemu accelerator: %s (%s)", accel, why)
	w.accel = accel
	return w
}

// needImage skips the test unless it is asked to boot the appliance
// and can, and returns the image's directory.
func needImage(t *testing.T) string {
	t.Helper()
	image := os.Getenv(imageEnv)
	if image == "" {
		t.Skipf("set %s to the directory make vm writes (vm/out); make test does", imageEnv)
	}
	if err := e2e.Root(); err != nil {
		t.Skip(err)
	}
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		t.Fatalf("%s is set but qemu-system-x86_64 is not installed (Debian: qemu-system-x86)", imageEnv)
	}
	for _, f := range []string{"vmlinuz", "initramfs.img"} {
		if _, err := os.Stat(filepath.Join(image, f)); err != nil {
			t.Fatalf("%v: run make vm", err)
		}
	}
	return image
}

// images returns the kernel's and the initramfs's paths.
func (w *world) images() (kernel, initrd string) {
	return filepath.Join(w.image, "vmlinuz"), filepath.Join(w.image, "initramfs.img")
}

// testContext ends cleanupReserve before go test's -timeout would panic
// the binary, so that a stuck wait fails its test with time left to
// clean up. A test with less than minBudget left fails at once rather
// than start a boot it cannot finish.
func testContext(t *testing.T) context.Context {
	t.Helper()
	end, ok := t.Deadline()
	if !ok {
		return t.Context() // -timeout 0: the waits' own bounds apply
	}
	end = end.Add(-cleanupReserve)
	if left := time.Until(end); left < minBudget {
		t.Fatalf("go test's -timeout leaves %s (after %s for cleanup), less than the %s a boot needs", left.Round(time.Second), cleanupReserve, minBudget)
	}
	ctx, cancel := context.WithDeadline(t.Context(), end)
	t.Cleanup(cancel)
	return ctx
}

// within returns d, or the time left in ctx if that is less.
func within(ctx context.Context, d time.Duration) time.Duration {
	if end, ok := ctx.Deadline(); ok {
		return max(min(d, time.Until(end)), 0)
	}
	return d
}

const applianceYAML = `hostname: tether-vm
interfaces:
  - {name: eth0, addresses: [10.0.0.1/24]}
`

// unitYAML: AF_XDP on eth0 (the appliance's data path: an XDP program
// on the virtio NIC redirects VIP and SNAT traffic to Tether), one
// worker, no forwarder.cores: init pins it to the vCPU it keeps free of
// housekeeping. unitYAMLFor gives the same unit on another port.
const unitYAML = `unit:
  address4: 10.0.0.1
forwarder:
  port: {driver: afxdp, interface: eth0}
  workers: 1
  flows: {max: 65536}
vips:
  - name: web
    address: 192.0.2.10
    port: 80
    protocol: tcp
    mode: nat
    snat: [198.51.100.1]
    backends:
      - {name: b0, address: 10.0.0.10, port: 8080}
      - {name: b1, address: 10.0.0.11, port: 8080}
`

// unitYAMLFor: the same unit on the TUN port (the kernel routes VIP and
// SNAT traffic from eth0 into Tether's device).
func unitYAMLFor(driver string) string {
	if driver == "tun" {
		return strings.Replace(unitYAML, "{driver: afxdp, interface: eth0}", "{driver: tun, interface: tun0}", 1)
	}
	return unitYAML
}

// configDisk writes files into a fresh config disk image.
func (w *world) configDisk(t *testing.T, name string, files map[string]string) string {
	t.Helper()
	src := filepath.Join(w.dir, name)
	if err := os.MkdirAll(src, 0o755); err != nil {
		t.Fatal(err)
	}
	for f, body := range files {
		if err := os.WriteFile(filepath.Join(src, f), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	img := filepath.Join(w.dir, name+".img")
	if out, err := exec.Command("bash", "mkconfig.sh", src, img).CombinedOutput(); err != nil {
		t.Fatalf("mkconfig.sh: %v\n%s", err, out)
	}
	return img
}

// ansi matches the colour codes of tetherd's console log.
var ansi = regexp.MustCompile(`\x1b\[[0-9;]*m`)

// pinLine is a line of `uniq -c` over "process allowed-CPUs" lines.
var pinLine = regexp.MustCompile(`(?m)^\s*(\d+) (forwarder|control) (\S+)$`)

// vm is one qemu process and its serial console.
type vm struct {
	t       *testing.T
	ctx     context.Context // the world's: every wait ends with it
	proc    *e2e.Proc
	admin   string // the host end of the admin channel
	qmp     string // qemu's machine protocol socket: the "power button"
	console net.Conn
	mu      sync.Mutex
	out     strings.Builder
	grew    chan struct{}
}

// boot starts the appliance with disk (none if "") in the host
// namespace, with params added to the kernel command line.
func (w *world) boot(t *testing.T, name, disk string, params ...string) *vm {
	t.Helper()
	kernel, initrd := w.images()
	v := &vm{t: t, ctx: w.ctx, admin: filepath.Join(w.dir, name+"-admin.sock"), qmp: filepath.Join(w.dir, name+"-qmp.sock"), grew: make(chan struct{}, 1)}
	consoleSock := filepath.Join(w.dir, name+"-console.sock")
	args := []string{"qemu-system-x86_64", "-accel", w.accel, "-m", "512", "-smp", "2",
		"-display", "none", "-monitor", "none", "-no-reboot",
		"-kernel", kernel, "-initrd", initrd, "-append", strings.Join(append([]string{"console=ttyS0", "panic=-1"}, params...), " "),
		"-chardev", "socket,id=con,path=" + consoleSock + ",server=on,wait=on",
		"-serial", "chardev:con",
		"-netdev", "tap,id=n0,ifname=tap0,script=no,downscript=no",
		"-device", "virtio-net-pci,netdev=n0,mac=52:54:00:00:00:01",
		"-device", "virtio-serial-pci",
		"-chardev", "socket,id=adm,path=" + v.admin + ",server=on,wait=off",
		"-device", "virtserialport,chardev=adm,name=tether.admin",
		"-qmp", "unix:" + v.qmp + ",server=on,wait=off",
	}
	if disk != "" {
		args = append(args, "-drive", "file="+disk+",if=virtio,format=raw")
	}
	p, err := w.Start(w.host, "qemu "+name, nil, args...)
	if err != nil {
		t.Fatal(err)
	}
	v.proc = p
	t.Cleanup(func() {
		if v.console != nil {
			v.console.Close()
		}
		p.Stop()
		if t.Failed() {
			t.Logf("serial console of %s:\n%s\nqemu: %s", name, v.text(), p.Output())
		}
	})
	// qemu waits for the console's client before it starts the machine,
	// so nothing the console says is lost.
	deadline := time.Now().Add(within(w.ctx, 30*time.Second))
	for {
		c, err := net.Dial("unix", consoleSock)
		if err == nil {
			v.console = c
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("qemu's console socket: %v\n%s", err, p.Output())
		}
		time.Sleep(50 * time.Millisecond)
	}
	go v.read()
	v.waitOutput(w.accel)
	return v
}

// waitOutput waits for the console's first output. A guest silent for
// firstOutputTimeout is not running (its kernel speaks within seconds
// even under emulation): fail now rather than wait out bootTimeout.
func (v *vm) waitOutput(accel string) {
	v.t.Helper()
	bound := firstOutputTimeout
	if accel == "tcg" {
		bound = firstOutputTCG
	}
	bound = within(v.ctx, bound)
	timer := time.NewTimer(bound)
	defer timer.Stop()
	for v.text() == "" {
		select {
		case <-v.grew:
		case <-timer.C:
			v.t.Fatalf("the console said nothing within %s under -accel %s: the guest is not running (%s=tcg forces software emulation)", bound, accel, accelEnv)
		}
	}
}

func (v *vm) read() {
	r := bufio.NewReader(v.console)
	buf := make([]byte, 4096)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			v.mu.Lock()
			// The console is a terminal: drop carriage returns.
			v.out.WriteString(strings.ReplaceAll(string(buf[:n]), "\r", ""))
			v.mu.Unlock()
			select {
			case v.grew <- struct{}{}:
			default:
			}
		}
		if err != nil {
			return
		}
	}
}

func (v *vm) text() string {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.out.String()
}

// waitFor waits until the console has said a line holding text after
// offset from, and returns that line and the offset after it.
func (v *vm) waitFor(text string, from int, timeout time.Duration) (string, int) {
	v.t.Helper()
	deadline := time.After(timeout)
	for {
		s := v.text()
		// A whole line: the rest of it may still be on its way.
		from = min(max(from, 0), len(s))
		if i := strings.Index(s[from:], text); i >= 0 {
			i += from
			start := strings.LastIndexByte(s[:i], '\n') + 1
			if end := strings.IndexByte(s[i:], '\n'); end >= 0 {
				return s[start : i+end], i + end
			}
		}
		select {
		case <-v.grew:
		case <-time.After(time.Second):
		case <-deadline:
			v.t.Fatalf("the console did not say %q within %s", text, timeout)
		case <-v.ctx.Done():
			v.t.Fatalf("the console did not say %q before the test's end (%s before go test's -timeout, kept for cleanup)", text, cleanupReserve)
		}
	}
}

// type writes a line on the console, as an operator at it would.
func (v *vm) typeLine(line string) {
	v.t.Helper()
	if _, err := io.WriteString(v.console, line+"\n"); err != nil {
		v.t.Fatalf("console: %v", err)
	}
}

// ctl runs tetherctl on the host against the VM's admin channel.
func (v *vm) ctl(args ...string) (string, error) { return v.run(tools.tetherctl, args...) }

func (v *vm) run(bin string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(v.ctx, stepTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, append([]string{"--socket", v.admin}, args...)...).CombinedOutput()
	return string(out), err
}

// powerOff asks the appliance to stop from its console and waits for
// qemu to exit.
func (v *vm) powerOff() {
	v.t.Helper()
	v.typeLine("poweroff")
	v.waitFor("tether-init: powering off", 0, powerTimeout)
	// qemu exits (0) when the guest powers off.
	if err := v.proc.Wait(within(v.ctx, powerTimeout)); err != nil {
		v.t.Errorf("qemu after poweroff: %v", err)
	}
}

// acpiPowerOff presses the VM's ACPI power button, as virsh shutdown
// does, and waits for qemu to exit.
func (v *vm) acpiPowerOff() {
	v.t.Helper()
	c, err := net.Dial("unix", v.qmp)
	if err != nil {
		v.t.Fatalf("qmp: %v", err)
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(within(v.ctx, stepTimeout))); err != nil {
		v.t.Fatal(err)
	}
	r := bufio.NewReader(c)
	if _, err := r.ReadString('\n'); err != nil { // the greeting
		v.t.Fatalf("qmp: %v", err)
	}
	for _, cmd := range []string{"qmp_capabilities", "system_powerdown"} {
		if _, err := fmt.Fprintf(c, "{\"execute\": %q}\n", cmd); err != nil {
			v.t.Fatalf("qmp %s: %v", cmd, err)
		}
		// Events ("POWERDOWN") may come before the answer.
		for {
			line, err := r.ReadString('\n')
			if err != nil || strings.Contains(line, `"error"`) {
				v.t.Fatalf("qmp %s: %v %s", cmd, err, line)
			}
			if strings.Contains(line, `"return"`) {
				break
			}
		}
	}
	v.waitFor("tether-init: power button pressed", 0, powerTimeout)
	v.waitFor("tether-init: powering off", 0, powerTimeout)
	if err := v.proc.Wait(within(v.ctx, powerTimeout)); err != nil {
		v.t.Errorf("qemu after the power button: %v", err)
	}
}

// TestBootAndForward boots the appliance with a config disk, checks the
// admin API from the host and from the console, and sends real TCP
// connections from the client namespace through the VM's VIP.
func TestBootAndForward(t *testing.T) {
	for _, driver := range []string{"afxdp", "tun"} {
		t.Run(driver, func(t *testing.T) { bootAndForward(t, driver) })
	}
}

func bootAndForward(t *testing.T, driver string) {
	w := newWorld(t)
	disk := w.configDisk(t, "good", map[string]string{"appliance.yaml": applianceYAML, "tether.yaml": unitYAMLFor(driver)})
	start := time.Now()
	v := w.boot(t, "good", disk)
	line, _ := v.waitFor("TETHER READY", 0, bootTimeout)
	t.Logf("ready after %s: %s", time.Since(start).Round(time.Millisecond), line)
	for _, text := range []string{"xdp=", "driver="} {
		if driver == "afxdp" || text == "driver=" {
			line, _ = v.waitFor(text, 0, time.Second)
			t.Logf("forwarder: %s", ansi.ReplaceAllString(line, ""))
		}
	}
	v.waitFor("config disk /dev/vda mounted on /config", 0, time.Second)
	v.waitFor("CPUs [0 1]; init, the control process and the shell run on [0]", 0, time.Second)

	out, err := v.ctl("status")
	if err != nil || !strings.Contains(out, "forwarder    connected") {
		t.Fatalf("tetherctl status through the admin channel: %v\n%s", err, out)
	}

	seen := map[string]int{}
	for i := range 40 {
		out, err := w.Exec(w.client, "curl", "-sS", "--max-time", "10", "http://192.0.2.10/")
		if err != nil {
			t.Fatalf("request %d through the VIP: %v", i, err)
		}
		seen[strings.TrimSpace(out)]++
	}
	if len(seen) != 2 || seen["b0"] == 0 || seen["b1"] == 0 {
		t.Fatalf("40 connections through the VIP reached %v, want both b0 and b1", seen)
	}
	t.Logf("40 connections through the VM: %v", seen)

	out, err = v.ctl("vips")
	if err != nil || !strings.Contains(out, "192.0.2.10:80/tcp") {
		t.Fatalf("tetherctl vips: %v\n%s", err, out)
	}
	// Pinning: the forwarder's worker thread alone on vCPU 1, everything
	// else of tetherd on vCPU 0. The markers are computed so that the
	// console's echo of the command does not match them.
	from := len(v.text())
	v.typeLine(`echo CPUS-$((1+1)); for t in /proc/[0-9]*/task/*; do grep -q tetherd $t/cmdline 2>/dev/null && ` +
		`{ grep -q forwarder $t/cmdline && r=forwarder || r=control; echo "$r $(grep Cpus_allowed_list $t/status | cut -f2)"; }; done | sort | uniq -c; echo CPUS-$((1+2))`)
	_, begin := v.waitFor("CPUS-2", from, stepTimeout)
	_, end := v.waitFor("CPUS-3", begin, stepTimeout)
	// Only uniq's lines: a log line of tetherd's may land in between.
	got := map[string]string{} // "role cpus" → threads
	for _, m := range pinLine.FindAllStringSubmatch(v.text()[begin:end], -1) {
		got[m[2]+" "+m[3]] = m[1]
	}
	if got["forwarder 1"] != "1" || got["control 1"] != "" || got["forwarder 0"] == "" || got["control 0"] == "" || len(got) != 3 {
		t.Errorf("threads by process and allowed CPUs: %v; want one forwarder thread on 1 and the rest on 0", got)
	}
	t.Logf("threads by process and CPUs: %v", got)

	// The console's shell: tetherctl inside the VM over the admin socket.
	from = len(v.text())
	v.typeLine("tetherctl backends")
	line, _ = v.waitFor("10.0.0.11:8080", from, stepTimeout)
	t.Logf("console: %s", line)
	v.powerOff()
}

// TestBadConfig: a configuration the unit refuses, no config disk at
// all, and a disk with no filesystem each give a clear console message
// and an admin API that can fix it; a fix applied through the API brings
// the unit up.
func TestBadConfig(t *testing.T) {
	w := newWorld(t)
	bad := strings.Replace(unitYAML, "mode: nat", "mode: sideways", 1)
	disk := w.configDisk(t, "bad", map[string]string{"appliance.yaml": applianceYAML, "tether.yaml": bad})
	v := w.boot(t, "bad", disk)
	line, _ := v.waitFor("TETHER CONFIG ERROR", 0, bootTimeout)
	if !strings.Contains(line, "vips[0].mode") || !strings.Contains(line, "sideways") {
		t.Errorf("the console's error does not name the key and value: %s", line)
	}
	line, at := v.waitFor("TETHER RESCUE", 0, stepTimeout)
	t.Logf("console: %s", line)
	out, err := v.ctl("status")
	if err != nil || !strings.Contains(out, "sideways") {
		t.Fatalf("tetherctl status in rescue mode: %v\n%s", err, out)
	}
	good := filepath.Join(w.dir, "fixed.yaml")
	if err := os.WriteFile(good, []byte(unitYAML), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := v.ctl("config", "apply", good); err != nil {
		t.Fatalf("tetherctl config apply: %v\n%s", err, out)
	}
	v.waitFor("TETHER READY", at, bootTimeout)
	out, err = w.Exec(w.client, "curl", "-sS", "--max-time", "10", "http://192.0.2.10/")
	if err != nil {
		t.Fatalf("a connection after the fix: %v: %s", err, out)
	}
	v.powerOff()

	// No disk: the same rescue, saying so.
	v = w.boot(t, "nodisk", "")
	line, _ = v.waitFor("TETHER CONFIG ERROR: no config disk", 0, bootTimeout)
	t.Logf("console: %s", line)
	v.waitFor("TETHER RESCUE", 0, stepTimeout)
	if out, err := v.ctl("status"); err != nil || !strings.Contains(out, "tether.yaml") {
		t.Fatalf("tetherctl status with no config disk: %v\n%s", err, out)
	}
	v.powerOff()

	// A disk that holds no filesystem: said, and the same rescue.
	junk := filepath.Join(w.dir, "junk.img")
	if err := os.WriteFile(junk, bytes.Repeat([]byte("not a filesystem "), 1<<16), 0o644); err != nil {
		t.Fatal(err)
	}
	v = w.boot(t, "junk", junk)
	line, _ = v.waitFor("TETHER CONFIG ERROR: config disk", 0, bootTimeout)
	t.Logf("console: %s", line)
	v.waitFor("TETHER RESCUE", 0, stepTimeout)
	if out, err := v.ctl("status"); err != nil || !strings.Contains(out, "PROBLEM") {
		t.Fatalf("tetherctl status with a junk config disk: %v\n%s", err, out)
	}
	v.powerOff()
}

// TestAgentRole boots the image as a backend host's agent, configured
// from the kernel command line alone (no disk), and stops it with the
// ACPI power button.
func TestAgentRole(t *testing.T) {
	w := newWorld(t)
	agentYAML := `host: {id: 7, listen: "10.0.0.20:7311"}
units: ["10.0.0.1:7310"]
applications:
  - {name: web, endpoint: "10.0.0.20:8080", capacity: 50}
`
	v := w.boot(t, "agent", "", "tether.disk=none", "tether.role=agent", "tether.hostname=backend7",
		"tether.ip=eth0=10.0.0.20/24", "tether.route=default=10.0.0.1",
		"tether.agent="+base64.StdEncoding.EncodeToString([]byte(agentYAML)))
	line, _ := v.waitFor("TETHER READY", 0, bootTimeout)
	t.Logf("console: %s", line)
	if s := v.text(); strings.Contains(s, "TETHER CONFIG ERROR") {
		t.Errorf("a configuration error on a good command line:\n%s", s)
	}
	// The admin channel reaches the agent's API from the host…
	out, err := v.run(tools.agent, "status")
	if err != nil || !strings.Contains(out, "10.0.0.20:8080") {
		t.Fatalf("tether-agent status through the admin channel: %v\n%s", err, out)
	}
	// …and the console's shell reaches it inside.
	from := len(v.text())
	v.typeLine("tether-agent status")
	line, _ = v.waitFor("10.0.0.20:8080", from, stepTimeout)
	t.Logf("console: %s", line)
	v.acpiPowerOff()
}
