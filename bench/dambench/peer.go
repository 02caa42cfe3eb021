package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/tetherlb/tether/e2e"
)

// peerSide is the kernel's NAT on each unit (one nftables table) with
// conntrackd replicating the conntrack tables between the units.
type peerSide struct {
	lb    *e2e.LB
	units []*unitNode
	dir   string
	logf  func(string, ...any)
	ctds  []*e2e.Proc
	// listeners are the `conntrack -E` processes, one per unit.
	listeners []*exec.Cmd
	mu        sync.Mutex
	// arrived is when a replica's NEW event for a client port was read;
	// wake is closed and replaced on every arrival, own or injected.
	arrived map[int]time.Time
	wake    chan struct{}
	// ownAt is when the carrying unit's own NEW event was read.
	ownAt map[int]time.Time
	// events counts NEW events read per unit, own and injected.
	own, injected []int
}

// markOf is the conntrack mark unit i gives the connections it carries
// itself: conntrackd carries the mark along, so that a replica's entry
// says which unit it came from.
func markOf(i int) int { return i + 1 }

// nftRules is unit u's table: DNAT from the VIP to the backends by a
// hash of the client's address and port (a fixed seed, so that both
// units choose alike), the unit's mark on a new connection, and SNAT to
// the unit's own address toward the backends.
func (p *peerSide) nftRules(u *unitNode) string {
	var m []string
	for i := range nBackends {
		m = append(m, fmt.Sprintf("%d : %s", i, p.lb.BackendIP(i)))
	}
	return fmt.Sprintf(`table ip dambench {
  chain tag {
    type filter hook prerouting priority mangle; policy accept;
    ip daddr %[1]s tcp dport 80 ct state new ct mark set %[2]d
  }
  chain pre {
    type nat hook prerouting priority dstnat; policy accept;
    ip daddr %[1]s tcp dport 80 dnat to jhash ip saddr . tcp sport mod %[3]d seed 0x7e7e map { %[4]s }
  }
  chain post {
    type nat hook postrouting priority srcnat; policy accept;
    ct status dnat ip daddr 10.0.0.0/24 snat to %[5]s
  }
}
`, vip, markOf(u.i), nBackends, strings.Join(m, ", "), snatOf(u.i))
}

// conntrackdConfig is unit u's conntrackd: FTFW over unicast UDP on the
// bridge to the other unit, the external cache off (the other unit's
// entries go straight into this unit's kernel table, so a takeover needs
// no commit), TCP only, every file in the unit's own directory.
func (p *peerSide) conntrackdConfig(u *unitNode, dir string) string {
	other := p.units[1-u.i]
	return fmt.Sprintf(`Sync {
	Mode FTFW {
		DisableExternalCache On
	}
	UDP {
		IPv4_address %[1]s
		IPv4_Destination_Address %[2]s
		Port 3780
		Interface %[3]s
		SndSocketBuffer 1249280
		RcvSocketBuffer 1249280
		Checksum on
	}
}
General {
	Systemd off
	HashSize 32768
	HashLimit 131072
	LogFile %[4]s/conntrackd.log
	Syslog off
	LockFile %[4]s/conntrackd.lock
	UNIX {
		Path %[4]s/conntrackd.ctl
	}
	NetlinkBufferSize 2097152
	NetlinkBufferSizeMaxGrowth 8388608
	Filter From Userspace {
		Protocol Accept {
			TCP
		}
		Address Ignore {
			IPv4_address 127.0.0.1
			IPv4_address %[1]s
		}
	}
}
`, u.ip, other.ip, u.ifc, dir)
}

func (p *peerSide) start() error {
	p.arrived, p.wake, p.ownAt = map[int]time.Time{}, make(chan struct{}), map[int]time.Time{}
	p.own, p.injected = make([]int, len(p.units)), make([]int, len(p.units))
	for _, u := range p.units {
		dir := filepath.Join(p.dir, fmt.Sprintf("unit%d", u.i))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("conntrackd directory: %w", err)
		}
		rules := filepath.Join(dir, "rules.nft")
		if err := os.WriteFile(rules, []byte(p.nftRules(u)), 0o644); err != nil {
			return fmt.Errorf("nft rules: %w", err)
		}
		if err := p.lb.Run(u.ns, "nft", "-f", rules); err != nil {
			return err
		}
		conf := filepath.Join(dir, "conntrackd.conf")
		if err := os.WriteFile(conf, []byte(p.conntrackdConfig(u, dir)), 0o644); err != nil {
			return fmt.Errorf("conntrackd config: %w", err)
		}
		ctd, err := p.lb.Start(u.ns, fmt.Sprintf("conntrackd unit%d", u.i), nil, "conntrackd", "-C", conf)
		if err != nil {
			return err
		}
		p.ctds = append(p.ctds, ctd)
		err = poll(10*time.Second, func() error {
			select {
			case <-ctd.Done():
				return stop(fmt.Errorf("conntrackd on unit %d exited:\n%s", u.i, ctd.Output()))
			default:
			}
			return p.lb.Run(u.ns, "conntrackd", "-C", conf, "-s")
		})
		if err != nil {
			return fmt.Errorf("conntrackd on unit %d: %w", u.i, err)
		}
	}
	for _, u := range p.units {
		if err := p.listen(u); err != nil {
			return err
		}
	}
	time.Sleep(300 * time.Millisecond) // the listeners subscribe
	p.logf("nftables and conntrackd on both units, event listeners started")
	return nil
}

// listen runs `conntrack -E` for new TCP entries in unit u's namespace
// (line-buffered) and timestamps each line as it arrives.
func (p *peerSide) listen(u *unitNode) error {
	cmd := exec.Command("ip", "netns", "exec", u.ns, "stdbuf", "-oL", "conntrack", "-E", "-e", "NEW", "-p", "tcp")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return fmt.Errorf("conntrack -E on unit %d: %w", u.i, err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("conntrack -E on unit %d: %w", u.i, err)
	}
	p.listeners = append(p.listeners, cmd)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			at := time.Now()
			e, ok := parseEntry(sc.Text())
			if !ok || e.dst != vip || e.src != e2e.ClientAddr {
				continue
			}
			p.mu.Lock()
			if e.mark == markOf(u.i) {
				p.own[u.i]++
				if _, seen := p.ownAt[e.sport]; !seen {
					p.ownAt[e.sport] = at
					close(p.wake)
					p.wake = make(chan struct{})
				}
			} else {
				p.injected[u.i]++
				if _, seen := p.arrived[e.sport]; !seen {
					p.arrived[e.sport] = at
					close(p.wake)
					p.wake = make(chan struct{})
				}
			}
			p.mu.Unlock()
		}
	}()
	return nil
}

// entry is the original direction of a conntrack line, with its state
// and mark.
type entry struct {
	src, dst, state string
	sport, mark     int
}

// parseEntry reads a line of `conntrack -L` or `-E`: the first src=,
// dst= and sport= are the original direction's.
func parseEntry(line string) (entry, bool) {
	var e entry
	var sawSport bool
	for _, f := range strings.Fields(line) {
		k, v, ok := strings.Cut(f, "=")
		if !ok {
			switch f {
			case "SYN_SENT", "SYN_RECV", "ESTABLISHED", "FIN_WAIT", "CLOSE_WAIT", "LAST_ACK", "TIME_WAIT", "CLOSE":
				e.state = f
			}
			continue
		}
		switch {
		case k == "src" && e.src == "":
			e.src = v
		case k == "dst" && e.dst == "":
			e.dst = v
		case k == "sport" && !sawSport:
			e.sport, _ = strconv.Atoi(v)
			sawSport = true
		case k == "mark":
			e.mark, _ = strconv.Atoi(v)
		}
	}
	return e, sawSport && e.src != ""
}

// replicated waits until the listener of a unit reads the injected NEW
// entry of the client's connection from port.
// The carrying unit's own line may be read after the replica's (two
// listeners, two pipes): it is waited for a little longer.
func (p *peerSide) replicated(ctx context.Context, port int) (origin, replica time.Time, err error) {
	var grace <-chan time.Time
	for {
		p.mu.Lock()
		at, ok := p.arrived[port]
		origin = p.ownAt[port]
		wake := p.wake
		p.mu.Unlock()
		if ok && !origin.IsZero() {
			return origin, at, nil
		}
		if ok && grace == nil {
			grace = time.After(100 * time.Millisecond)
		}
		select {
		case <-wake:
		case <-grace:
			return origin, at, nil
		case <-ctx.Done():
			if ok {
				return origin, at, nil
			}
			return origin, time.Time{}, fmt.Errorf("no replica's conntrack -E printed port %d: %w", port, ctx.Err())
		}
	}
}

// entries lists unit u's conntrack entries toward the VIP.
func (p *peerSide) entries(u *unitNode) ([]entry, error) {
	out, err := p.lb.Exec(u.ns, "conntrack", "-L", "-p", "tcp", "--orig-dst", vip)
	if err != nil {
		return nil, err
	}
	var es []entry
	for _, line := range strings.Split(out, "\n") {
		if e, ok := parseEntry(line); ok && e.src == e2e.ClientAddr {
			es = append(es, e)
		}
	}
	return es, nil
}

// carried lists the client ports of unit u's own established entries
// (its mark).
func (p *peerSide) carried(u *unitNode) (map[int]bool, error) {
	es, err := p.entries(u)
	if err != nil {
		return nil, err
	}
	ports := map[int]bool{}
	for _, e := range es {
		if e.mark == markOf(u.i) && e.state == "ESTABLISHED" {
			ports[e.sport] = true
		}
	}
	return ports, nil
}

// holds counts the ports unit u has an established entry for.
func (p *peerSide) holds(u *unitNode, ports map[int]bool) (int, error) {
	es, err := p.entries(u)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, e := range es {
		if ports[e.sport] && e.state == "ESTABLISHED" {
			n++
		}
	}
	return n, nil
}

// kill makes unit u dead: its interface down, so that it neither
// forwards nor answers, and its conntrackd killed.
func (p *peerSide) kill(u *unitNode) error {
	if err := p.lb.Run(u.ns, "ip", "link", "set", u.ifc, "down"); err != nil {
		return err
	}
	if err := p.ctds[u.i].Signal(syscall.SIGKILL); err != nil {
		return fmt.Errorf("kill conntrackd on unit %d: %w", u.i, err)
	}
	return nil
}

// afterProbes reports the NEW events read.
func (p *peerSide) afterProbes() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return []string{fmt.Sprintf("NEW events read toward the VIP: each unit's own %v, injected by conntrackd %v", p.own, p.injected)}
}

// afterTakeover reports the survivor's conntrack statistics.
func (p *peerSide) afterTakeover(u *unitNode) []string {
	out, err := p.lb.Exec(u.ns, "conntrack", "-S")
	if err != nil {
		return []string{fmt.Sprintf("the survivor's conntrack -S: %v", err)}
	}
	return []string{"the survivor's conntrack -S after the takeover: " + strings.Join(strings.Fields(out), " ")}
}

// deadCheck checks that unit u's interface is down and its conntrackd
// gone.
func (p *peerSide) deadCheck(u *unitNode) string {
	var alive []string
	if err := p.ctds[u.i].Wait(5 * time.Second); err == nil || !strings.Contains(err.Error(), "killed") {
		alive = append(alive, fmt.Sprintf("conntrackd: %v", err))
	}
	if out, err := p.lb.Exec(u.ns, "ip", "-o", "link", "show", u.ifc); err != nil || !strings.Contains(out, "state DOWN") {
		alive = append(alive, fmt.Sprintf("%s not down: %s %v", u.ifc, strings.TrimSpace(out), err))
	}
	return strings.Join(alive, "; ")
}

func (p *peerSide) notes() []string {
	return []string{
		"conntrackd: nftables NAT in each unit (DNAT by jhash of the client's address and port over the ten backends, SNAT to the unit's own address), conntrackd FTFW over unicast UDP on the bridge with DisableExternalCache On (the other unit's entries go straight into the kernel table: no commit at takeover), TCP only, active-active behind the same ECMP router; the kernel has no IPVS (CONFIG_IP_VS unset), hence conntrackd and not IPVS's sync daemon",
		"conntrackd's window ends when a `conntrack -E -e NEW -p tcp` listener in the replica's namespace (through stdbuf -oL, read line by line by this process) prints the entry conntrackd injected (an entry whose mark is the other unit's); the CLI's and the pipe's latency are included",
		"the peer's unit death: its bridge interface down and its conntrackd SIGKILLed",
	}
}

func (p *peerSide) diagnose() string {
	var b strings.Builder
	p.mu.Lock()
	fmt.Fprintf(&b, "NEW events read, own per unit %v, injected per unit %v\n", p.own, p.injected)
	p.mu.Unlock()
	for i, c := range p.ctds {
		log, _ := os.ReadFile(filepath.Join(p.dir, fmt.Sprintf("unit%d", i), "conntrackd.log"))
		fmt.Fprintf(&b, "conntrackd unit %d output:\n%s\nlog (tail):\n%s\n", i, c.Output(), tail(string(log), 2000))
	}
	return b.String()
}

// close ends the listeners (the network's Close stops conntrackd).
func (p *peerSide) close() {
	for _, c := range p.listeners {
		_ = syscall.Kill(-c.Process.Pid, syscall.SIGKILL) // it may be gone already
		_ = c.Wait()
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
