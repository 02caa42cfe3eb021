package config

import (
	"fmt"
	"math"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tetherlb/tether/api/unit"
	"github.com/tetherlb/tether/internal/confcheck"
	"github.com/tetherlb/tether/internal/probe"
)

// Limits on values; each is a bound some part of the dataplane relies on.
const (
	MaxWorkers    = 64
	MaxBatch      = 256
	MaxFlows      = 1 << 26
	MaxTimeout    = 24 * 24 * time.Hour // the flow clock's signed millisecond range
	MaxMaglevSize = 1 << 20
	MaxBackends   = 65535
	MaxWeight     = 1 << 16
	MinMTU        = 576
	MaxMTU        = 9216
	DefaultMaglev = 65537
	DefaultMTU    = 1500
)

// problems collects errors in "key: value: reason" form.
type problems = confcheck.Problems

// Check validates c, fills defaults that depend on other keys (backend
// ports and names), and parses addresses. It reports every problem it
// finds, each naming its key.
func (c *Config) Check() error {
	var p problems
	c.Unit.check(&p)
	c.Forwarder.check(&p)
	c.L2.check(&p)
	c.Admin.check(&p)
	c.Health.check(&p)
	c.Hosts.check(&p) // the host streams (hosts.go)
	if c.Cluster != nil {
		c.Cluster.check(&p) // membership (cluster.go)
		c.Cluster.checkTLS(&p, c.Hosts.TLS)
	}
	if c.BGP != nil {
		c.BGP.check(&p, &c.Unit) // announcement (bgp.go)
	}
	seenName := map[string]int{}
	seenService := map[string]int{}
	for i := range c.VIPs {
		v := &c.VIPs[i]
		key := fmt.Sprintf("vips[%d]", i)
		v.check(&p, key, &c.Unit)
		v.checkL7(&p, key, c.Hosts.Listen) // l7.go
		if c.BGP != nil && v.addr.IsValid() && !unitHasFamily(&c.Unit, v.addr) {
			p.Add(key+".address", v.Address, "bgp announces it with the unit's IPv%d address as next hop, and unit.address%d is not set", family(v.addr), family(v.addr))
		}
		if v.Name != "" {
			if j, dup := seenName[v.Name]; dup {
				p.Add(key+".name", v.Name, "also the name of vips[%d]", j)
			}
			seenName[v.Name] = i
		}
		if v.addr.IsValid() && v.protoNum != 0 {
			svc := fmt.Sprintf("%s/%d/%d", v.addr, v.Port, v.protoNum)
			if j, dup := seenService[svc]; dup {
				p.Add(key, v.Name, "same address, port and protocol as vips[%d]", j)
			}
			seenService[svc] = i
		}
	}
	return p.Err()
}

func (u *Unit) check(p *problems) {
	if u.Name == "" {
		p.Add("unit.name", u.Name, "must not be empty")
	}
	u.addr4 = parseAddr(p, "unit.address4", u.Address4, 4, true)
	u.addr6 = parseAddr(p, "unit.address6", u.Address6, 6, true)
	if u.MAC != "" {
		m, err := parseMAC(u.MAC)
		if err != nil {
			p.Add("unit.mac", u.MAC, "not a MAC address (want aa:bb:cc:dd:ee:ff)")
		}
		u.mac, u.hasMAC = m, err == nil
	}
}

func (f *Forwarder) check(p *problems) {
	if f.Workers < 1 || f.Workers > MaxWorkers {
		p.Add("forwarder.workers", f.Workers, "must be between 1 and %d", MaxWorkers)
	}
	if f.Batch < 1 || f.Batch > MaxBatch {
		p.Add("forwarder.batch", f.Batch, "must be between 1 and %d", MaxBatch)
	}
	if f.Flows.Max < 16 || f.Flows.Max > MaxFlows {
		p.Add("forwarder.flows.max", f.Flows.Max, "must be between 16 and %d", MaxFlows)
	}
	t := &f.Flows.Timeouts
	for _, d := range []struct {
		key string
		v   time.Duration
	}{
		{"tcp_syn", t.TCPSyn}, {"tcp_established", t.TCPEstablished}, {"tcp_fin", t.TCPFin},
		{"tcp_closed", t.TCPClosed}, {"udp", t.UDP}, {"udp_unreplied", t.UDPUnreplied}, {"other", t.Other},
	} {
		if d.v < time.Second || d.v > MaxTimeout {
			p.Add("forwarder.flows.timeouts."+d.key, d.v, "must be between 1s and %s", MaxTimeout)
		}
	}
	if f.Fragments.Datagrams < 0 || f.Fragments.Datagrams > 1<<20 {
		p.Add("forwarder.fragments.datagrams", f.Fragments.Datagrams, "must be between 0 and %d", 1<<20)
	}
	if f.Fragments.Pending < 0 || f.Fragments.Pending > 1024 {
		p.Add("forwarder.fragments.pending", f.Fragments.Pending, "must be between 0 and 1024")
	}
	if f.Fragments.Timeout < 100*time.Millisecond || f.Fragments.Timeout > time.Minute {
		p.Add("forwarder.fragments.timeout", f.Fragments.Timeout, "must be between 100ms and 1m")
	}
	switch f.TTL {
	case "":
		f.TTL = TTLDecrement
	case TTLDecrement, TTLKeep:
	default:
		p.Add("forwarder.ttl", f.TTL, "must be decrement or keep")
	}
	switch f.Port.Driver {
	case DriverTUN, DriverAFXDP:
	default:
		p.Add("forwarder.port.driver", f.Port.Driver, "must be tun or afxdp")
	}
	if n := len(f.Port.Interface); n == 0 || n > 15 || strings.ContainsAny(f.Port.Interface, "/ \t") {
		p.Add("forwarder.port.interface", f.Port.Interface, "must be an interface name of 1 to 15 characters")
	}
	if f.Port.MTU != 0 && (f.Port.MTU < MinMTU || f.Port.MTU > 65535) {
		p.Add("forwarder.port.mtu", f.Port.MTU, "must be 0 (kernel default) or between %d and 65535", MinMTU)
	}
	if q := f.Port.Queues; q < 1 || q > MaxWorkers {
		p.Add("forwarder.port.queues", q, "must be between 1 and %d", MaxWorkers)
	} else if q != 1 && q != f.Workers {
		p.Add("forwarder.port.queues", q, "must be 1 (workers share it) or equal forwarder.workers (%d)", f.Workers)
	} else if q != 1 && f.Port.Driver == DriverTUN {
		p.Add("forwarder.port.queues", q, "a tun port has one queue")
	}
	// The kernel reserves 0 (unspecified) and 252-255 (compat, default,
	// main, local); 0 here means "add no rules" instead.
	if d := f.Port.PinDir; !filepath.IsAbs(d) || filepath.Clean(d) != d {
		p.Add("forwarder.port.pin_dir", d, "must be a clean absolute path")
	}
	if l := f.Port.QueueLength; l < 1 || l > MaxQueueLength {
		p.Add("forwarder.port.queue_length", l, "must be between 1 and %d packets", MaxQueueLength)
	}
	if t := f.Port.Table; t < 0 || t > math.MaxUint32 || (t >= 252 && t <= 255) {
		p.Add("forwarder.port.table", t, "must be 0 (no half-NAT return rules) or a routing table between 1 and %d other than 252-255, which the kernel reserves", uint32(math.MaxUint32))
	}
	if len(f.Cores) > 0 && len(f.Cores) != f.Workers {
		p.Add("forwarder.cores", fmt.Sprint(f.Cores), "lists %d cores for %d workers: give one per worker, or none", len(f.Cores), f.Workers)
	}
	seen := map[int]bool{}
	for i, c := range f.Cores {
		if c < 0 || c >= 1024 {
			p.Add(fmt.Sprintf("forwarder.cores[%d]", i), c, "must be a CPU number between 0 and 1023")
		}
		if seen[c] {
			p.Add(fmt.Sprintf("forwarder.cores[%d]", i), c, "listed twice: each worker needs its own core")
		}
		seen[c] = true
	}
}

func (a *Admin) check(p *problems) {
	if !strings.HasPrefix(a.Socket, "/") {
		p.Add("admin.socket", a.Socket, "must be an absolute path")
	}
	if !strings.HasPrefix(a.RunDir, "/") {
		p.Add("admin.run_dir", a.RunDir, "must be an absolute path")
	}
	if a.Metrics != "" {
		if _, err := netip.ParseAddrPort(a.Metrics); err != nil {
			p.Add("admin.metrics", a.Metrics, "want address:port, e.g. 127.0.0.1:9469")
		}
	}
}

func (h *Health) check(p *problems) {
	if h.Listen != "" {
		if ap, err := netip.ParseAddrPort(h.Listen); err != nil || ap.Port() == 0 {
			p.Add("health.listen", h.Listen, "want address:port, e.g. 10.0.0.1:7310 (0.0.0.0 for every address)")
		}
	}
	if h.UnitID < 0 || h.UnitID > math.MaxUint32 {
		p.Add("health.unit_id", h.UnitID, "must be between 0 (derived from unit.name) and %d", uint32(math.MaxUint32))
	}
	if h.Missed < 2 || h.Missed > 100 {
		p.Add("health.missed", h.Missed, "must be between 2 and 100 heartbeat periods")
	}
	if h.StartupGrace < 0 || h.StartupGrace > 10*time.Minute {
		p.Add("health.startup_grace", h.StartupGrace, "must be between 0s and 10m")
	}
	if h.Allotment.Tokens < 1 || h.Allotment.Tokens > 1_000_000 {
		p.Add("health.allotment.tokens", h.Allotment.Tokens, "must be between 1 and 1000000")
	}
	if h.Allotment.Duration < 100*time.Millisecond || h.Allotment.Duration > time.Hour {
		p.Add("health.allotment.duration", h.Allotment.Duration, "must be between 100ms and 1h")
	}
	if h.KeyFile != "" {
		p.Add("health.key_file", h.KeyFile, "protocol 2 has no shared key: put a secret of at least 16 bytes in health.auth.master_key_file and give each host its own key made with `tetherd health-key`")
	}
	if f := h.Auth.MasterKeyFile; f != "" && !strings.HasPrefix(f, "/") {
		p.Add("health.auth.master_key_file", f, "must be an absolute path")
	}
	if h.Auth.Freshness < time.Second || h.Auth.Freshness > 10*time.Minute {
		p.Add("health.auth.freshness", h.Auth.Freshness, "must be between 1s and 10m: replays within it are refused only by sequence")
	}
}

// Spec is the probe of c against target (address:port), with defaults
// filled.
func (c *HealthCheck) Spec(target string) probe.Spec {
	return probe.Spec{Type: c.Type, Target: target, Path: c.Path, Expect: c.Expect,
		Interval: c.Interval, Timeout: c.Timeout, Rise: c.Rise, Fall: c.Fall}.Defaults()
}

func (h *VIPHealth) check(p *problems, key string) {
	switch h.Source {
	case "":
		h.Source = SourceNone
	case SourceNone, SourceAgent, SourceProbe:
	default:
		p.Add(key+".source", h.Source, "must be none, agent or probe")
	}
	c := &h.Check
	if h.Source != SourceProbe {
		if *c != (HealthCheck{}) {
			p.Add(key+".check", c.Type, "only source probe runs a check (agents run their own)")
		}
		return
	}
	if c.Type == "" {
		c.Type = probe.TypeTCP
	}
	if c.Type != probe.TypeTCP && c.Type != probe.TypeHTTP {
		p.Add(key+".check.type", c.Type, "must be tcp or http")
		return
	}
	if c.Port < 0 || c.Port > 65535 {
		p.Add(key+".check.port", c.Port, "must be between 0 (the backend's port) and 65535")
		return
	}
	if err := c.Spec("127.0.0.1:1").Validate(); err != nil {
		p.Add(key+".check", c.Type, "%v", err)
	}
}

func (l *L2) check(p *problems) {
	if l.GatewayMAC != "" {
		m, err := parseMAC(l.GatewayMAC)
		if err != nil {
			p.Add("l2.gateway_mac", l.GatewayMAC, "not a MAC address (want aa:bb:cc:dd:ee:ff)")
		}
		l.gateway, l.hasGateway = m, err == nil
	}
	seen := map[netip.Addr]int{}
	for i := range l.Neighbors {
		n := &l.Neighbors[i]
		key := fmt.Sprintf("l2.neighbors[%d]", i)
		n.addr = parseAddr(p, key+".ip", n.IP, 0, false)
		m, err := parseMAC(n.MAC)
		if err != nil {
			p.Add(key+".mac", n.MAC, "not a MAC address (want aa:bb:cc:dd:ee:ff)")
		}
		n.mac = m
		if n.addr.IsValid() {
			if j, dup := seen[n.addr]; dup {
				p.Add(key+".ip", n.IP, "also listed as l2.neighbors[%d]", j)
			}
			seen[n.addr] = i
		}
	}
}

func (v *VIP) check(p *problems, key string, u *Unit) {
	if v.Name == "" || strings.Contains(v.Name, "/") {
		p.Add(key+".name", v.Name, "must not be empty or hold a slash (tetherctl names a backend VIP/BACKEND)")
	}
	v.addr = parseAddr(p, key+".address", v.Address, 0, false)
	if v.Port < 1 || v.Port > 65535 {
		p.Add(key+".port", v.Port, "must be between 1 and 65535")
	}
	switch v.Protocol {
	case "tcp":
		v.protoNum = protoTCP
	case "udp":
		v.protoNum = protoUDP
	default:
		p.Add(key+".protocol", v.Protocol, "must be tcp or udp")
	}
	fam := family(v.addr)
	mode, err := unit.ParseMode(v.Mode)
	if err != nil {
		p.Add(key+".mode", v.Mode, "must be one of nat, halfnat, tunnel, ipip, l7")
	}
	v.mode = mode
	switch mode {
	case unit.ModeNAT:
		if len(v.SNAT) == 0 {
			p.Add(key+".snat", "", "nat mode needs at least one SNAT address")
		}
		v.snat = v.snat[:0]
		for i, s := range v.SNAT {
			a := parseAddr(p, fmt.Sprintf("%s.snat[%d]", key, i), s, fam, false)
			if a.IsValid() {
				v.snat = append(v.snat, a)
			}
		}
		v.snatStandby = v.snatStandby[:0]
		for i, s := range v.SNATStandby {
			k := fmt.Sprintf("%s.snat_standby[%d]", key, i)
			a := parseAddr(p, k, s, fam, false)
			switch {
			case !a.IsValid():
			case slices.Contains(v.snat, a):
				p.Add(k, s, "is also in snat: an address is this unit's own or another unit's, not both")
			default:
				v.snatStandby = append(v.snatStandby, a)
			}
		}
		v.portLow, v.portHi = 1024, 65535
		if v.SNATPorts != "" {
			v.portLow, v.portHi = parsePortRange(p, key+".snat_ports", v.SNATPorts)
		}
	case unit.ModeTunnel, unit.ModeIPIP, unit.ModeL7:
		// l7: a migrated connection's later packets reach its host
		// through the flow-ID tunnel.
		if fam == 4 && !u.addr4.IsValid() {
			p.Add("unit.address4", u.Address4, "%s (%s mode) needs the unit's IPv4 address as the tunnel source", key, v.Mode)
		}
		if fam == 6 && !u.addr6.IsValid() {
			p.Add("unit.address6", u.Address6, "%s (%s mode) needs the unit's IPv6 address as the tunnel source", key, v.Mode)
		}
	}
	if mode != unit.ModeNAT && len(v.SNATStandby) > 0 {
		p.Add(key+".snat_standby", strings.Join(v.SNATStandby, ","), "only nat mode uses SNAT addresses")
	}
	if mode != unit.ModeNAT && (len(v.SNAT) > 0 || v.SNATPorts != "") {
		p.Add(key+".snat", strings.Join(v.SNAT, ","), "only nat mode uses SNAT addresses")
	}
	if v.MaglevSize == 0 {
		v.MaglevSize = DefaultMaglev
	}
	if v.MaglevSize < 7 || v.MaglevSize > MaxMaglevSize || !isPrime(v.MaglevSize) {
		p.Add(key+".maglev_size", v.MaglevSize, "must be a prime between 7 and %d", MaxMaglevSize)
	} else if v.MaglevSize < len(v.Backends) {
		p.Add(key+".maglev_size", v.MaglevSize, "smaller than the number of backends (%d)", len(v.Backends))
	}
	v.Health.check(p, key+".health")
	if v.MTU == 0 {
		v.MTU = DefaultMTU
	}
	if v.MTU < MinMTU || v.MTU > MaxMTU {
		p.Add(key+".mtu", v.MTU, "must be between %d and %d", MinMTU, MaxMTU)
	}
	if len(v.Backends) > MaxBackends {
		p.Add(key+".backends", len(v.Backends), "more than %d backends", MaxBackends)
	}
	names := map[string]int{}
	for i := range v.Backends {
		b := &v.Backends[i]
		bkey := fmt.Sprintf("%s.backends[%d]", key, i)
		b.addr = parseAddr(p, bkey+".address", b.Address, fam, false)
		if b.Port == 0 {
			b.Port = v.Port
		}
		if b.Port < 1 || b.Port > 65535 {
			p.Add(bkey+".port", b.Port, "must be between 1 and 65535")
		}
		if b.Name == "" {
			b.Name = netip.AddrPortFrom(b.addr, uint16(b.Port)).String()
		}
		if strings.Contains(b.Name, "/") {
			p.Add(bkey+".name", b.Name, "must not hold a slash (tetherctl names a backend VIP/BACKEND)")
		}
		if j, dup := names[b.Name]; dup {
			p.Add(bkey+".name", b.Name, "also the name of %s.backends[%d]", key, j)
		}
		names[b.Name] = i
		if w := b.WeightValue(); w < 0 || w > MaxWeight {
			p.Add(bkey+".weight", w, "must be between 0 and %d", MaxWeight)
		}
		if b.State == "" {
			b.State = unit.StateActive.String()
		}
		if _, err := unit.ParseState(b.State); err != nil {
			p.Add(bkey+".state", b.State, "must be active, draining or inactive")
		}
	}
}

// parseAddr parses an address of family fam (4, 6, or 0 for either). An
// empty string is an error unless optional.
func parseAddr(p *problems, key, s string, fam int, optional bool) netip.Addr {
	if s == "" {
		if !optional {
			p.Add(key, s, "an address is required")
		}
		return netip.Addr{}
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		p.Add(key, s, "not an IP address")
		return netip.Addr{}
	}
	a = a.Unmap()
	if fam != 0 && family(a) != fam {
		p.Add(key, s, "must be an IPv%d address like the VIP's", fam)
		return netip.Addr{}
	}
	if a.IsUnspecified() || a.IsMulticast() {
		p.Add(key, s, "must be a unicast address")
		return netip.Addr{}
	}
	return a
}

func family(a netip.Addr) int {
	switch {
	case !a.IsValid():
		return 0
	case a.Is4():
		return 4
	}
	return 6
}

func parsePortRange(p *problems, key, s string) (uint16, uint16) {
	lo, hi, ok := strings.Cut(s, "-")
	l, err1 := strconv.Atoi(strings.TrimSpace(lo))
	h, err2 := strconv.Atoi(strings.TrimSpace(hi))
	if !ok || err1 != nil || err2 != nil || l < 1 || h > 65535 || l > h {
		p.Add(key, s, "want a port range low-high within 1-65535")
		return 0, 0
	}
	return uint16(l), uint16(h)
}

// IP protocol numbers of the VIP protocols.
const (
	protoTCP = 6
	protoUDP = 17
)

// parseMAC parses an Ethernet address (aa:bb:cc:dd:ee:ff or with '-').
func parseMAC(s string) ([6]byte, error) {
	var m [6]byte
	hw, err := net.ParseMAC(s)
	if err != nil || len(hw) != 6 {
		return m, fmt.Errorf("mac %q: want 6 hex octets separated by ':' or '-'", s)
	}
	copy(m[:], hw)
	return m, nil
}

// isPrime reports whether n is prime, by trial division: a Maglev size is
// at most MaxMaglevSize (2^20), so at most 512 divisions, where
// big.Int.ProbablyPrime's Miller-Rabin rounds made checking a 1,000-VIP
// configuration take tens of milliseconds.
func isPrime(n int) bool {
	if n < 2 {
		return false
	}
	if n%2 == 0 {
		return n == 2
	}
	for d := 3; d*d <= n; d += 2 {
		if n%d == 0 {
			return false
		}
	}
	return true
}
