package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/tetherlb/tether/e2e"
)

// Addresses both sides share.
const (
	vip       = "192.0.2.13" // the nat VIP, port 80
	nBackends = 10
	nUnits    = 2
	// probeTimeout bounds one probe's wait for its replica.
	probeTimeout = 5 * time.Second
)

// snatOf is unit i's SNAT address: the router sends it to that unit.
func snatOf(i int) string { return fmt.Sprintf("198.51.100.%d", 11+i) }

// unitNode is one unit of the topology.
type unitNode struct {
	i           int
	ns, ifc, ip string
}

// side is one clustered load balancer on the topology.
type side interface {
	// start runs it on the units and waits until it serves and its
	// units replicate to each other.
	start() error
	// replicated waits until the unit that did not carry the client's
	// connection from port holds its state, and says when, and when the
	// unit that carried it was first seen holding it (zero if not seen).
	// It is called just before connect().
	replicated(ctx context.Context, port int) (origin, replica time.Time, err error)
	// carried lists the client ports of the VIP's connections unit u
	// carries itself (not its replicas of the other's).
	carried(u *unitNode) (map[int]bool, error)
	// holds reports which of ports unit u holds state for.
	holds(u *unitNode, ports map[int]bool) (int, error)
	// kill makes unit u dead.
	kill(u *unitNode) error
	// notes say how it ran, for the report.
	notes() []string
	// afterProbes returns notes on the probes from the side's own
	// view, read while both units live.
	afterProbes() []string
	// afterTakeover returns notes on unit u, the survivor, after the
	// transfers ended.
	afterTakeover(u *unitNode) []string
	// deadCheck says whether the killed unit u is wholly dead ("" if
	// so), checked after the router's change.
	deadCheck(u *unitNode) string
	// diagnose returns what to show when a measure goes wrong.
	diagnose() string
}

// result is one side's figures.
type result struct {
	side string
	err  error
	// windows are the probes' first-packet-to-replicated times;
	// probes counts them all, replicated or not.
	windows []time.Duration
	probes  int
	// origins are the probes' times until the unit that carried them
	// was seen holding their state; connects how long their connect()
	// took (the handshake through the unit).
	origins, connects []time.Duration
	// takeover is the kill to the last dead-unit transfer moving again;
	// moved and deadTransfers count those transfers that moved and all
	// of them; neverMoved lists the ones that did not.
	takeover      time.Duration
	moved         int
	deadTransfers int
	// intact and transfers count the downloads.
	intact, transfers int
	// moves are each moved dead-unit transfer's first byte after the
	// kill, from the kill.
	moves []time.Duration
	// snatRouted and vipRouted are when the router's two changes were
	// done, from the kill: replies toward unit 0's SNAT address, and the
	// VIP range (the clients' side).
	snatRouted, vipRouted time.Duration
	// dead: whether the kill left no process of unit 0 running, and
	// what did.
	deadCheck string
	firstErr  string
	// static say how the side runs; notes what happened in this run.
	static, notes []string
}

// measure builds the topology, runs the side on it and measures it.
func measure(o options, name string, logf func(string, ...any)) *result {
	res := &result{side: name, probes: o.probes, transfers: o.transfers}
	tag := map[string]string{"tether": "dt", "conntrackd": "dc"}[name]
	lb, err := e2e.NewSwitchedLB(tag, nBackends)
	if err != nil {
		res.err = err
		return res
	}
	defer func() {
		if err := lb.Close(); err != nil {
			logf("cleanup: %v", err)
		}
	}()
	dir, err := os.MkdirTemp("", "dambench-")
	if err != nil {
		res.err = fmt.Errorf("temporary directory: %w", err)
		return res
	}
	defer os.RemoveAll(dir)
	if err := os.Chmod(dir, 0o755); err != nil {
		res.err = fmt.Errorf("temporary directory: %w", err)
		return res
	}
	units, err := buildUnits(lb)
	if err != nil {
		res.err = err
		return res
	}
	var s side
	switch name {
	case "tether":
		t := &tetherSide{lb: lb, units: units, dir: dir, tetherd: o.tetherd, pollGap: o.pollGap, logf: logf}
		defer t.close()
		s = t
	default:
		p := &peerSide{lb: lb, units: units, dir: dir, logf: logf}
		defer p.close()
		s = p
	}
	var hops *hopCapture
	if o.hops {
		if hops, err = startHops(lb, dir); err != nil {
			res.err = err
			return res
		}
	}
	logf("starting")
	if err := s.start(); err != nil {
		res.err = err
		return res
	}
	res.err = measureOn(o, lb, units, s, hops, res, logf)
	res.static = s.notes()
	if res.err != nil {
		logf("diagnosis:\n%s", s.diagnose())
	}
	return res
}

// buildUnits adds the second unit, has the router spread the VIP range
// over both and send each unit's SNAT address to it, and starts the
// backends (the payload role on port 80), which route through the
// router.
func buildUnits(lb *e2e.LB) ([]*unitNode, error) {
	units := []*unitNode{{i: 0, ns: lb.Unit, ifc: lb.UnitIf, ip: lb.UnitIP}}
	for i := 1; i < nUnits; i++ {
		ns, ifc, ip, err := lb.AddUnit(i)
		if err != nil {
			return nil, err
		}
		units = append(units, &unitNode{i: i, ns: ns, ifc: ifc, ip: ip})
	}
	var ips []string
	for _, u := range units {
		ips = append(ips, u.ip)
		if err := lb.RouteSNAT(snatOf(u.i), u.ip); err != nil {
			return nil, err
		}
	}
	if err := lb.SpreadVIPs(ips); err != nil {
		return nil, err
	}
	if err := lb.StartBackends(80); err != nil {
		return nil, err
	}
	for _, ns := range lb.Backends {
		if err := lb.Run(ns, "ip", "route", "replace", "default", "via", "10.0.0.254"); err != nil {
			return nil, err
		}
	}
	return units, nil
}

// measureOn runs both measures on a started side.
func measureOn(o options, lb *e2e.LB, units []*unitNode, s side, hops *hopCapture, res *result, logf func(string, ...any)) error {
	d, err := newNSDialer(lb.Client)
	if err != nil {
		return err
	}
	defer d.close()
	// One probe first, not counted: the first connection warms caches
	// (ARP on every hop, the units' first decisions).
	if _, _, _, _, err := probe(d, s); err != nil {
		return fmt.Errorf("warm-up probe: %w", err)
	}
	probePorts := map[int]bool{}
	for k := range o.probes {
		w, origin, connect, port, err := probe(d, s)
		probePorts[port] = true
		if connect > 0 {
			res.connects = append(res.connects, connect)
		}
		if err != nil {
			if res.firstErr == "" {
				res.firstErr = fmt.Sprintf("probe %d: %v", k, err)
			}
			continue
		}
		res.windows = append(res.windows, w)
		if origin > 0 {
			res.origins = append(res.origins, origin)
		}
	}
	logf("%d of %d probes replicated; first error: %s", len(res.windows), o.probes, orNone(res.firstErr))
	res.notes = append(res.notes, s.afterProbes()...)
	if hops != nil {
		notes, err := hops.split(probePorts)
		if err != nil {
			return err
		}
		res.notes = append(res.notes, notes...)
	}
	return takeover(o, lb, units, s, probePorts, res, logf)
}

// probe opens one connection to the VIP, waits until the replica holds
// it, closes it and returns the window, the time until the unit that
// carried it held it (0 if not seen), and the client's port. The side
// watches from just before connect(): the port is bound first.
func probe(d *nsDialer, s side) (window, origin, connect time.Duration, port int, err error) {
	type seen struct {
		origin, replica time.Time
		err             error
	}
	ctx, cancel := context.WithTimeout(context.Background(), probeTimeout)
	defer cancel()
	ports := make(chan int, 1)
	done := make(chan seen, 1)
	go func() {
		select {
		case p := <-ports:
			o, r, err := s.replicated(ctx, p)
			done <- seen{o, r, err}
		case <-ctx.Done():
			done <- seen{err: ctx.Err()}
		}
	}()
	start, c, port, err := d.dial(net.JoinHostPort(vip, "80"), func(p int) { ports <- p })
	if err != nil {
		cancel()
		<-done
		return 0, 0, 0, port, err
	}
	connect = time.Since(start)
	defer c.Close()
	r := <-done
	if r.err != nil {
		return 0, 0, connect, port, r.err
	}
	if !r.origin.IsZero() {
		origin = r.origin.Sub(start)
	}
	return r.replica.Sub(start), origin, connect, port, nil
}

// takeover runs the downloads, kills unit 0 in their middle and reads
// how the transfers it carried went on.
func takeover(o options, lb *e2e.LB, units []*unitNode, s side, probePorts map[int]bool, res *result, logf func(string, ...any)) error {
	dead, survivor := units[0], units[1]
	n := o.pace * int64(o.seconds)
	url := fmt.Sprintf("http://%s/bytes?n=%d&pace=%d&chunk=%d", vip, n, o.pace, o.chunk)
	env := append(e2e.RoleCommand("client", url, strconv.Itoa(o.transfers), strconv.Itoa(o.transfers)), e2e.ClientTransfersEnv+"=1")
	client, err := lb.Start(lb.Client, "downloads", env, e2e.Self())
	if err != nil {
		return err
	}
	defer client.Stop()
	// Every transfer under way: the dead unit's and the survivor's own
	// connections, each present at the survivor.
	var deadPorts map[int]bool
	var all, held int
	err = poll(30*time.Second, func() error {
		select {
		case <-client.Done():
			return stop(fmt.Errorf("the client ended before every transfer was under way:\n%s", client.Output()))
		default:
		}
		a, err := s.carried(dead)
		if err != nil {
			return err
		}
		b, err := s.carried(survivor)
		if err != nil {
			return err
		}
		for p := range probePorts {
			delete(a, p)
			delete(b, p)
		}
		deadPorts, all = a, len(a)+len(b)
		if all < o.transfers {
			return fmt.Errorf("%d of %d transfers under way", all, o.transfers)
		}
		if held, err = s.holds(survivor, deadPorts); err != nil {
			return err
		}
		if held < len(deadPorts) {
			return fmt.Errorf("the survivor holds %d of the dead unit's %d transfers", held, len(deadPorts))
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("downloads: %w", err)
	}
	logf("%d transfers under way, %d through unit 0 (%d through unit 1); the kill in %s", all, len(deadPorts), all-len(deadPorts), o.settle)
	var rt *netlinkRouter
	if o.router == "netlink" {
		if rt, err = newNetlinkRouter(lb.Router); err != nil {
			return err
		}
		defer rt.close()
	}
	time.Sleep(o.settle)

	// The kill's instant is when the unit is dead (the peer's takes an
	// ip command); the client marks it at once, and the router changes
	// both routes at the same time.
	if err := s.kill(dead); err != nil {
		return err
	}
	kill := time.Now()
	if err := client.Signal(syscall.SIGUSR1); err != nil {
		return fmt.Errorf("mark the kill in the client: %w", err)
	}
	var vipErr, snatErr error
	if rt != nil {
		// The same two changes over netlink, one after the other.
		snatErr = rt.route(snatOf(dead.i)+"/32", survivor.ip)
		res.snatRouted = time.Since(kill)
		vipErr = rt.route(e2e.VIPRange, survivor.ip)
		res.vipRouted = time.Since(kill)
	} else {
		var wg sync.WaitGroup
		wg.Add(2)
		go func() {
			defer wg.Done()
			vipErr = lb.SpreadVIPs([]string{survivor.ip})
			res.vipRouted = time.Since(kill)
		}()
		go func() {
			defer wg.Done()
			snatErr = lb.RouteSNAT(snatOf(dead.i), survivor.ip)
			res.snatRouted = time.Since(kill)
		}()
		wg.Wait()
	}
	if err := errors.Join(vipErr, snatErr); err != nil {
		return err
	}
	logf("unit 0 dead; the router sent its SNAT address to unit 1 %s later, the VIP range %s later",
		res.snatRouted.Round(time.Microsecond), res.vipRouted.Round(time.Microsecond))
	res.deadCheck = s.deadCheck(dead)

	bound := time.Duration(o.seconds)*time.Second + 3*time.Minute
	if err := client.Wait(bound); err != nil {
		return fmt.Errorf("downloads: %w:\n%s", err, client.Output())
	}
	var cr e2e.ClientResult
	if err := json.Unmarshal([]byte(lastLine(client.Output())), &cr); err != nil {
		return fmt.Errorf("downloads: %w: %q", err, client.Output())
	}
	for _, k := range cr.Backends {
		res.intact += k
	}
	if cr.FirstErr != "" && res.firstErr == "" {
		res.firstErr = "download: " + cr.FirstErr
	}
	var neverMoved []string
	for _, t := range cr.Transfers {
		_, p, err := net.SplitHostPort(t.Local)
		port, _ := strconv.Atoi(p)
		if err != nil || !deadPorts[port] {
			continue
		}
		res.deadTransfers++
		if t.AfterMarkNS == 0 {
			neverMoved = append(neverMoved, fmt.Sprintf("%s (%s)", t.Local, orNone(t.Error)))
			continue
		}
		res.moved++
		res.moves = append(res.moves, time.Duration(t.AfterMarkNS-kill.UnixNano()))
		res.takeover = max(res.takeover, time.Duration(t.AfterMarkNS-kill.UnixNano()))
	}
	logf("%d of %d transfers intact; %d of unit 0's %d moved again, the last %s after the kill",
		res.intact, o.transfers, res.moved, res.deadTransfers, res.takeover.Round(time.Millisecond))
	if len(neverMoved) > 0 {
		logf("never moved after the kill: %s", strings.Join(neverMoved, ", "))
		res.notes = append(res.notes, "unit 0's transfers that never moved after the kill: "+strings.Join(neverMoved, ", "))
	}
	res.notes = append(res.notes, s.afterTakeover(survivor)...)
	return nil
}

// nsDialer opens TCP connections from a namespace: a goroutine locked
// to an OS thread that entered it, so that the time just before
// connect() is this process's own.
type nsDialer struct {
	reqs chan dialReq
}

type dialReq struct {
	addr   string
	onPort func(int)
	reply  chan dialReply
}

type dialReply struct {
	start time.Time
	conn  net.Conn
	port  int
	err   error
}

func newNSDialer(ns string) (*nsDialer, error) {
	d := &nsDialer{reqs: make(chan dialReq)}
	ready := make(chan error, 1)
	go func() {
		// The thread stays locked: it is in another namespace, and the
		// runtime ends it when this goroutine returns.
		runtime.LockOSThread()
		f, err := os.Open("/run/netns/" + ns)
		if err != nil {
			ready <- fmt.Errorf("dialer: %w", err)
			return
		}
		err = unix.Setns(int(f.Fd()), unix.CLONE_NEWNET)
		f.Close()
		if err != nil {
			ready <- fmt.Errorf("dialer: enter %s: %w", ns, err)
			return
		}
		ready <- nil
		for r := range d.reqs {
			var start time.Time
			var port int
			dialer := net.Dialer{Timeout: 5 * time.Second, Control: func(_, _ string, rc syscall.RawConn) error {
				// Bind first, so that the port is known before
				// connect() sends the SYN.
				var err error
				cerr := rc.Control(func(fd uintptr) {
					if err = unix.Bind(int(fd), &unix.SockaddrInet4{}); err != nil {
						return
					}
					var sa unix.Sockaddr
					if sa, err = unix.Getsockname(int(fd)); err == nil {
						port = sa.(*unix.SockaddrInet4).Port
					}
				})
				if err = errors.Join(cerr, err); err != nil {
					return fmt.Errorf("bind: %w", err)
				}
				r.onPort(port)
				start = time.Now()
				return nil
			}}
			c, err := dialer.Dial("tcp4", r.addr)
			r.reply <- dialReply{start, c, port, err}
		}
	}()
	if err := <-ready; err != nil {
		return nil, err
	}
	return d, nil
}

// dial connects to addr and says when it called connect() and from
// which port; onPort learns the port just before.
func (d *nsDialer) dial(addr string, onPort func(int)) (time.Time, net.Conn, int, error) {
	r := dialReq{addr: addr, onPort: onPort, reply: make(chan dialReply, 1)}
	d.reqs <- r
	rep := <-r.reply
	if rep.err != nil {
		return rep.start, nil, rep.port, fmt.Errorf("connect %s: %w", addr, rep.err)
	}
	return rep.start, rep.conn, rep.port, nil
}

func (d *nsDialer) close() { close(d.reqs) }

// poll calls f until it succeeds, fails with an error of stop, or
// timeout passes, and returns its last error then.
func poll(timeout time.Duration, f func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		var s stopError
		if err == nil || errors.As(err, &s) || time.Now().After(deadline) {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// stopError ends a poll at once.
type stopError struct{ error }

func (s stopError) Unwrap() error { return s.error }

func stop(err error) error { return stopError{err} }

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// percentile is the nearest-rank q-quantile of sorted durations.
func percentile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q*float64(len(sorted))+0.5) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

func sortedCopy(d []time.Duration) []time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s
}

// netlinkRouter changes the router's routes over a netlink socket in
// its namespace: the changes SpreadVIPs and RouteSNAT make with ip
// commands, in microseconds rather than an ip process's milliseconds.
type netlinkRouter struct {
	h *netlink.Handle
}

func newNetlinkRouter(ns string) (*netlinkRouter, error) {
	n, err := netns.GetFromName(ns)
	if err != nil {
		return nil, fmt.Errorf("router namespace %s: %w", ns, err)
	}
	defer n.Close()
	h, err := netlink.NewHandleAt(n)
	if err != nil {
		return nil, fmt.Errorf("netlink in %s: %w", ns, err)
	}
	return &netlinkRouter{h: h}, nil
}

// route sends dst (CIDR) to gw alone, replacing its route.
func (r *netlinkRouter) route(dst, gw string) error {
	_, n, err := net.ParseCIDR(dst)
	if err != nil {
		return err
	}
	if err := r.h.RouteReplace(&netlink.Route{Dst: n, Gw: net.ParseIP(gw)}); err != nil {
		return fmt.Errorf("router: route %s via %s: %w", dst, gw, err)
	}
	return nil
}

func (r *netlinkRouter) close() { r.h.Close() }
