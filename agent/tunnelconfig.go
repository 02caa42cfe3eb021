package agent

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/rs/zerolog"

	"github.com/tetherlb/tether/agent/streams"
	"github.com/tetherlb/tether/agent/tunnel"
	pb "github.com/tetherlb/tether/api/hostpb"
	"github.com/tetherlb/tether/internal/localapi"
	"github.com/tetherlb/tether/internal/mtls"
	"github.com/tetherlb/tether/tables/encap"
)

// TunnelConfig is the host side of Tether's tunnels (issue 13): the XDP
// program (agent/tunnel) that restores the units' flow-ID tunnel packets
// and unwraps their IP-in-IP, with the mappings the units send over the
// host streams.
type TunnelConfig struct {
	// Interface is the host's interface toward the units; "" (the
	// default) leaves tunnels off.
	Interface string `mapstructure:"interface"`
	// Addresses are the host's tunnel addresses (IPv4 and IPv6): the
	// backend address of its tunnel and ipip VIPs, used for nothing
	// else. The host's certificate (streams.tls.cert) must name each
	// one, since the units send mappings only for the addresses it
	// names.
	Addresses []string `mapstructure:"addresses"`
	// PinDir is where the program and its mappings are pinned, on a BPF
	// filesystem, so they outlive the agent.
	PinDir string `mapstructure:"pin_dir"`
	// Generic attaches in generic (SKB) mode instead of trying the
	// driver's first.
	Generic bool `mapstructure:"generic"`
	// MaxFlows bounds the mappings the kernel holds, from all units. A
	// program taken over keeps its bound until `tether-agent tunnel
	// remove`.
	MaxFlows int `mapstructure:"max_flows"`

	addrs []netip.Addr
}

// Bounds of the tunnel's keys: the program's maps take at most 256
// addresses, and a mapping costs the kernel about 100 bytes.
const (
	maxTunnelAddrs = 256
	minTunnelFlows = 1024
	maxTunnelFlows = 1 << 24
)

func (tc *TunnelConfig) check(p *problems, s *StreamsConfig) {
	tc.addrs = tc.addrs[:0]
	if tc.Interface == "" {
		if len(tc.Addresses) > 0 {
			p.Add("tunnel.addresses", strings.Join(tc.Addresses, ","), "needs tunnel.interface")
		}
		return
	}
	if len(tc.Interface) > 15 || strings.ContainsAny(tc.Interface, "/ \t\n:") || tc.Interface == "." || tc.Interface == ".." {
		p.Add("tunnel.interface", tc.Interface, "want the name of the host's interface toward the units, e.g. eth0")
	}
	if len(s.Units) == 0 {
		p.Add("tunnel.interface", tc.Interface, "needs streams.units: the units send the flow-ID mappings over the host streams")
	}
	if len(tc.Addresses) == 0 {
		p.Add("tunnel.addresses", "", "list the host's tunnel addresses, as its certificate names them")
	}
	if len(tc.Addresses) > maxTunnelAddrs {
		p.Add("tunnel.addresses", len(tc.Addresses), "more than %d addresses", maxTunnelAddrs)
	}
	seen := map[netip.Addr]int{}
	for i, s := range tc.Addresses {
		key := fmt.Sprintf("tunnel.addresses[%d]", i)
		a, err := netip.ParseAddr(s)
		switch {
		case err != nil || a.Is4In6() || a.Zone() != "":
			p.Add(key, s, "want an IPv4 or IPv6 address (no zone, not IPv4-mapped)")
			continue
		case a.IsUnspecified() || a.IsLoopback() || a.IsMulticast() || a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
			p.Add(key, s, "want a unicast address the units reach")
			continue
		case a.Is6() && a.IsLinkLocalUnicast():
			p.Add(key, s, "want a global or unique-local address: a unit sends from its unit.address6, not from a link-local one")
			continue
		}
		if j, dup := seen[a]; dup {
			p.Add(key, s, "also tunnel.addresses[%d]", j)
			continue
		}
		seen[a] = i
		tc.addrs = append(tc.addrs, a)
	}
	if !strings.HasPrefix(tc.PinDir, "/") {
		p.Add("tunnel.pin_dir", tc.PinDir, "must be an absolute path on a BPF filesystem, e.g. /sys/fs/bpf/tether-host")
	}
	if tc.MaxFlows < minTunnelFlows || tc.MaxFlows > maxTunnelFlows {
		p.Add("tunnel.max_flows", tc.MaxFlows, "must be between %d and %d", minTunnelFlows, maxTunnelFlows)
	}
}

// checkCertificate refuses tunnel addresses the host's certificate does
// not name: the units would never send their mappings, and every tunnel
// packet to them would be dropped as of an unknown flow.
func (tc *TunnelConfig) checkCertificate(certFile string) error {
	named, err := certTunnelAddrs(certFile)
	if err != nil {
		return fmt.Errorf("streams.tls.cert: %q: %w", certFile, err)
	}
	var p problems
	for i, a := range tc.addrs {
		if !slices.Contains(named, a) {
			p.Add(fmt.Sprintf("tunnel.addresses[%d]", i), a,
				"not named in streams.tls.cert %q (it names %v): the units send mappings only for the tunnel addresses the host's certificate names (tetherd certs --host ID=ADDR,...)",
				certFile, named)
		}
	}
	return p.Err()
}

// certTunnelAddrs reads the first certificate of a PEM file and returns
// the tunnel addresses it names.
func certTunnelAddrs(path string) ([]netip.Addr, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	for {
		var blk *pem.Block
		if blk, b = pem.Decode(b); blk == nil {
			return nil, errors.New("no PEM certificate")
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, err
		}
		return mtls.TunnelAddrs(c), nil
	}
}

// OpenTunnel opens the host side of the tunnels the configuration
// describes (nil when it describes none): it checks the tunnel addresses
// against the host's certificate, then attaches the XDP program to
// tunnel.interface or takes over the one an earlier agent left pinned,
// with its mappings and its units, so packets of live flows go on being
// restored until the units' full resyncs make each unit's set exact.
func (c *Config) OpenTunnel(log zerolog.Logger) (*Tunnel, error) {
	tc := c.Tunnel
	if tc.Interface == "" {
		return nil, nil
	}
	if err := tc.checkCertificate(c.Streams.TLS.Cert); err != nil {
		return nil, err
	}
	h, err := tunnel.Open(tunnel.Config{Interface: tc.Interface, Addresses: tc.addrs, MaxFlows: tc.MaxFlows, PinDir: tc.PinDir,
		Generic: tc.Generic, KeepUnits: true})
	if err != nil {
		return nil, fmt.Errorf("tunnel.interface: %q: %w", tc.Interface, err)
	}
	t := &Tunnel{host: h, cfg: tc, log: log, byUnit: map[string]*unitSink{}}
	for _, u := range c.Streams.Units {
		t.unit(u.Name)
	}
	if t.inherited, err = h.Units(); err != nil {
		h.Close()
		return nil, err
	}
	slices.SortFunc(t.inherited, netip.Addr.Compare)
	t.units = slices.Clone(t.inherited)
	if h.MaxFlows() != tc.MaxFlows {
		log.Warn().Int("max_flows", h.MaxFlows()).Int("configured", tc.MaxFlows).
			Msg("the program taken over keeps its bound on mappings: tether-agent tunnel remove (agent stopped) makes a new one")
	}
	if h.Outdated != nil {
		log.Warn().Err(h.Outdated).
			Msg("the kernel refused this agent's program in the link taken over: the earlier agent's program runs; tether-agent tunnel remove (agent stopped) attaches this one")
	}
	log.Info().Str("interface", tc.Interface).Str("mode", h.Mode).Strs("addresses", tc.Addresses).
		Int("units_kept", len(t.inherited)).Msg("tunnel program attached")
	return t, nil
}

// Tunnel puts the units' mappings into the host's kernel: it is the
// streams' Sink. Each unit's mappings are keyed by the unit's tunnel
// source of the flow's family from its hello (a unit sends an IPv4
// flow's packets from its address4, an IPv6 one's from its address6),
// so several units' flow IDs never meet; the sources of every unit that
// said hello are the units the program accepts packets from. A unit
// stays accepted when its stream goes down: its forwarder goes on
// sending the packets of live flows while its control process restarts,
// and the kernel keeps their mappings.
//
// What the kernel cannot hold is never acknowledged silently: mappings
// of a family the unit names no source of are counted and skipped, since
// no retry could place them and holding their first packets forever
// would be worse; a write the kernel refuses (the map full, a failing
// system call) is counted, logged and returned, which ends the unit's
// stream unacknowledged (see streams.Sink).
type Tunnel struct {
	host *tunnel.Host
	cfg  TunnelConfig
	log  zerolog.Logger

	mu     sync.Mutex // the fields below, and every unitSink's st
	byUnit map[string]*unitSink
	order  []string // byUnit's names, configuration order first
	// inherited are the units an earlier agent's program accepted: kept
	// until every configured unit has said hello, so that live flows are
	// not dropped as from unknown units while the streams come up.
	inherited []netip.Addr
	units     []netip.Addr // what the program accepts now
}

// unitSink is one unit's part of the kernel's mappings.
type unitSink struct {
	// op serialises the unit's changes to the kernel (the stream's
	// calls come in order anyway) and guards held. Taken before
	// Tunnel.mu, never after.
	op sync.Mutex
	// held are the flow IDs the kernel holds from the unit, each with
	// the source it is held under (so of its family). A unit's flow IDs
	// are one space across families.
	held map[uint32]netip.Addr

	st TunnelUnit // under Tunnel.mu
}

var _ streams.Sink = (*Tunnel)(nil)

// unit returns name's part, making it on first use.
func (t *Tunnel) unit(name string) *unitSink {
	t.mu.Lock()
	defer t.mu.Unlock()
	u := t.byUnit[name]
	if u == nil {
		u = &unitSink{held: map[uint32]netip.Addr{}, st: TunnelUnit{Unit: name}}
		t.byUnit[name] = u
		t.order = append(t.order, name)
	}
	return u
}

// Sources implements streams.Sink.Sources: the unit's first IPv4 and
// first IPv6 tunnel source key its mappings of each family (a unit has
// one address4 and one address6).
func (t *Tunnel) Sources(name string, addrs []netip.Addr) error {
	u := t.unit(name)
	u.op.Lock()
	defer u.op.Unlock()
	var src sources
	for _, a := range addrs {
		if a.Is4() && !src.v4.IsValid() {
			src.v4 = a
		} else if a.Is6() && !src.v6.IsValid() {
			src.v6 = a
		}
	}
	t.mu.Lock()
	for n, o := range t.byUnit {
		for _, a := range src.list() {
			if n != name && slices.Contains(o.st.sources.list(), a) {
				t.mu.Unlock()
				err := fmt.Errorf("unit %q names tunnel source %v, which unit %q named first: their flow IDs would collide", name, a, n)
				t.fail(u, err)
				return err
			}
		}
	}
	old := u.st.sources
	u.st.sources, u.st.Sources, u.st.said = src, nil, true
	for _, a := range src.list() {
		u.st.Sources = append(u.st.Sources, a.String())
	}
	err := t.setUnits()
	t.mu.Unlock()
	if len(src.list()) == 0 {
		t.log.Warn().Str("unit", name).Interface("sources", addrs).Msg("the unit names no tunnel source: its mappings are skipped (counted as no_source)")
	}
	if err != nil {
		t.fail(u, err)
		return err
	}
	// The kernel holds the unit's flows under a source that changed (or
	// went): gone from there, and a resync puts them under the new one.
	moved := 0
	for id, a := range u.held {
		if a != src.of(a) {
			if err := t.host.Delete(a, id); err != nil {
				t.fail(u, err)
				return err
			}
			delete(u.held, id)
			moved++
		}
	}
	if moved > 0 {
		t.setCount(u)
		return fmt.Errorf("unit %q: tunnel sources changed from %v to %v: its mappings must be resent", name, old.list(), src.list())
	}
	return nil
}

// sources are a unit's tunnel sources, of each family (invalid where
// it named none).
type sources struct{ v4, v6 netip.Addr }

// of is the source of a's family.
func (s sources) of(a netip.Addr) netip.Addr {
	if a.Is4() {
		return s.v4
	}
	return s.v6
}

// forTuple is the source a flow of tuple tp goes under.
func (s sources) forTuple(v6 bool) netip.Addr {
	if v6 {
		return s.v6
	}
	return s.v4
}

func (s sources) list() []netip.Addr {
	var out []netip.Addr
	for _, a := range []netip.Addr{s.v4, s.v6} {
		if a.IsValid() {
			out = append(out, a)
		}
	}
	return out
}

// setUnits makes the program accept the sources of the units that said
// hello (and the inherited ones until every unit has), and once every
// unit has, forgets the mappings of any other address. Under t.mu.
func (t *Tunnel) setUnits() error {
	all := true
	var want []netip.Addr
	for _, u := range t.byUnit {
		all = all && u.st.said
		want = append(want, u.st.sources.list()...)
	}
	if !all {
		want = append(want, t.inherited...)
	}
	slices.SortFunc(want, netip.Addr.Compare)
	want = slices.Compact(want)
	if slices.Equal(want, t.units) && (!all || t.inherited == nil) {
		return nil
	}
	if err := t.host.SetUnits(want); err != nil {
		return err
	}
	t.units = want
	if all {
		n, err := t.host.ForgetUnitsBut(want)
		if err != nil {
			return err
		}
		if n > 0 || t.inherited != nil {
			t.log.Info().Int("mappings", n).Msg("every unit said hello: mappings of addresses that are no unit's forgotten")
		}
		t.inherited = nil
	}
	return nil
}

// sources are the unit's tunnel sources.
func (t *Tunnel) sources(u *unitSink) sources {
	t.mu.Lock()
	defer t.mu.Unlock()
	return u.st.sources
}

// Replace implements streams.Sink.Replace: the kernel then holds exactly
// the unit's mappings, whatever an earlier agent left.
func (t *Tunnel) Replace(name string, table map[uint32]*pb.Tuple) error {
	u := t.unit(name)
	u.op.Lock()
	defer u.op.Unlock()
	src := t.sources(u)
	want := map[netip.Addr]map[uint32]*encap.Tuple{}
	for _, a := range src.list() {
		want[a] = map[uint32]*encap.Tuple{}
	}
	var noSource uint64
	for id, tp := range table {
		e := toEncap(tp)
		if a := src.forTuple(e.V6); a.IsValid() {
			want[a][id] = e
		} else {
			noSource++
		}
	}
	var added, removed int
	var err error
	// Whether or not it all went in, the unit's set in the kernel is
	// now at most want's (the unknown rest is deleted by the next
	// resync, which a failure brings).
	clear(u.held)
	for _, a := range src.list() {
		for id := range want[a] {
			u.held[id] = a
		}
		if err == nil {
			var n, r int
			n, r, err = t.host.ReplaceUnit(a, want[a])
			added, removed = added+n, removed+r
		}
	}
	t.count(u, func(st *TunnelUnit) {
		st.Resyncs++
		st.NoSource += noSource
		st.Added += uint64(added)
		st.Removed += uint64(removed)
	})
	t.setCount(u)
	if err != nil {
		err = fmt.Errorf("unit %q: resync of %d mappings: %w", name, len(table), err)
		t.fail(u, err)
		return err
	}
	return nil
}

// Apply implements streams.Sink.Apply.
func (t *Tunnel) Apply(name string, add []*pb.Mapping, remove []uint32) error {
	u := t.unit(name)
	u.op.Lock()
	defer u.op.Unlock()
	src := t.sources(u)
	var added, removed, noSource uint64
	// forget deletes flow id wherever the kernel holds it from the unit.
	forget := func(id uint32) error {
		a, ok := u.held[id]
		if !ok {
			return nil
		}
		if err := t.host.Delete(a, id); err != nil {
			return err
		}
		delete(u.held, id)
		removed++
		return nil
	}
	err := func() error {
		for _, id := range remove {
			if err := forget(id); err != nil {
				return err
			}
		}
		for _, m := range add {
			id := m.GetFlowId()
			e := toEncap(m.GetTuple())
			a := src.forTuple(e.V6)
			// A flow that takes a held ID under the other family
			// replaces that mapping, which must not restore its
			// packets any more.
			if h, ok := u.held[id]; ok && h != a {
				if err := forget(id); err != nil {
					return err
				}
			}
			if !a.IsValid() {
				noSource++
				continue
			}
			if err := t.host.Put(a, id, e); err != nil {
				return err
			}
			u.held[id] = a
			added++
		}
		return nil
	}()
	t.count(u, func(st *TunnelUnit) {
		st.Batches++
		st.Added += added
		st.Removed += removed
		st.NoSource += noSource
	})
	t.setCount(u)
	if err != nil {
		err = fmt.Errorf("unit %q: %w", name, err)
		t.fail(u, err)
		return err
	}
	return nil
}

// toEncap converts a validated tuple (the streams checked its
// addresses are both 4 or both 16 bytes).
func toEncap(tp *pb.Tuple) *encap.Tuple {
	e := &encap.Tuple{Proto: uint8(tp.GetProto()), SrcPort: uint16(tp.GetClientPort()), DstPort: uint16(tp.GetVipPort()),
		V6: len(tp.GetClient()) == 16}
	copy(e.Src[:], tp.GetClient())
	copy(e.Dst[:], tp.GetVip())
	return e
}

func (t *Tunnel) count(u *unitSink, f func(*TunnelUnit)) {
	t.mu.Lock()
	f(&u.st)
	t.mu.Unlock()
}

// setCount records how many mappings the kernel holds from u (under
// u.op).
func (t *Tunnel) setCount(u *unitSink) {
	n := len(u.held)
	t.count(u, func(st *TunnelUnit) { st.Mappings = n })
}

func (t *Tunnel) fail(u *unitSink, err error) {
	t.count(u, func(st *TunnelUnit) { st.Failures++; st.LastError = err.Error() })
	t.log.Error().Str("unit", u.st.Unit).Err(err).Msg("the host's kernel did not take the unit's mappings")
}

// Host is the program and its maps.
func (t *Tunnel) Host() *tunnel.Host { return t.host }

// Close lets go of the program, which stays attached and pinned with its
// mappings: the kernel goes on restoring packets until the next agent
// takes it over.
func (t *Tunnel) Close() error { return t.host.Close() }

// TunnelUnit is one unit's mappings in the host's kernel.
type TunnelUnit struct {
	Unit string `json:"unit"`
	// Sources are the unit's tunnel sources (its IPv4 and IPv6 one),
	// from its hello; none until the hello, or when it named none.
	Sources []string `json:"sources,omitempty"`
	// Mappings is how many mappings the kernel holds from the unit.
	Mappings int `json:"mappings"`
	// Resyncs and Batches count the full sets and the changes applied;
	// Added and Removed the kernel's writes and deletions.
	Resyncs uint64 `json:"resyncs"`
	Batches uint64 `json:"batches"`
	Added   uint64 `json:"added"`
	Removed uint64 `json:"removed"`
	// NoSource counts mappings skipped because the unit named no
	// tunnel source of their family.
	NoSource uint64 `json:"no_source"`
	// Failures counts what the kernel refused; each ends the unit's
	// stream unacknowledged.
	Failures  uint64 `json:"failures"`
	LastError string `json:"last_error,omitempty"`

	sources sources
	said    bool
}

// TunnelCounters are the program's counters (tunnel.Counters).
type TunnelCounters struct {
	Decapsulated uint64 `json:"decapsulated"`
	IPIP         uint64 `json:"ipip"`
	UnknownFlow  uint64 `json:"unknown_flow"`
	UnknownUnit  uint64 `json:"unknown_unit"`
	NotTunnel    uint64 `json:"not_tunnel"`
	Malformed    uint64 `json:"malformed"`
}

// TunnelView is GET /v1/tunnel.
type TunnelView struct {
	// Enabled is false when the configuration has no tunnel.
	Enabled   bool     `json:"enabled"`
	Interface string   `json:"interface,omitempty"`
	Mode      string   `json:"mode,omitempty"`
	Addresses []string `json:"addresses,omitempty"`
	PinDir    string   `json:"pin_dir,omitempty"`
	MaxFlows  int      `json:"max_flows,omitempty"`
	// Units are the addresses the program takes tunnel packets from.
	Units    []string       `json:"units,omitempty"`
	Counters TunnelCounters `json:"counters"`
	// CountersError says why the counters could not be read.
	CountersError string       `json:"counters_error,omitempty"`
	ByUnit        []TunnelUnit `json:"by_unit,omitempty"`
}

// View is the tunnel as the API shows it.
func (t *Tunnel) View() TunnelView {
	v := TunnelView{Enabled: true, Interface: t.cfg.Interface, Mode: t.host.Mode, Addresses: t.cfg.Addresses,
		PinDir: t.cfg.PinDir, MaxFlows: t.host.MaxFlows()}
	if c, err := t.host.Counters(); err != nil {
		v.CountersError = err.Error()
	} else {
		v.Counters = TunnelCounters(c)
	}
	t.mu.Lock()
	for _, a := range t.units {
		v.Units = append(v.Units, a.String())
	}
	for _, n := range t.order {
		v.ByUnit = append(v.ByUnit, t.byUnit[n].st)
	}
	t.mu.Unlock()
	return v
}

// AttachTunnel makes t the agent's tunnel, which its API shows at
// GET /v1/tunnel.
func (a *Agent) AttachTunnel(t *Tunnel) { a.tunnel.Store(t) }

func (a *Agent) tunnelRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/tunnel", func(w http.ResponseWriter, r *http.Request) {
		v := TunnelView{}
		if t := a.tunnel.Load(); t != nil {
			v = t.View()
		}
		localapi.WriteJSON(w, http.StatusOK, v)
	})
	mux.HandleFunc("GET /v1/tunnel/mappings", func(w http.ResponseWriter, r *http.Request) {
		limit := 1000
		if s := r.URL.Query().Get("limit"); s != "" {
			n, err := strconv.Atoi(s)
			if err != nil || n < 1 || n > maxListed {
				localapi.Fail(w, http.StatusBadRequest, "limit: %q: want 1 to %d", s, maxListed)
				return
			}
			limit = n
		}
		v := MappingsView{Mappings: []MappingView{}}
		t := a.tunnel.Load()
		if t == nil {
			localapi.WriteJSON(w, http.StatusOK, v)
			return
		}
		list, total, err := t.host.List(limit)
		if err != nil {
			localapi.Fail(w, http.StatusInternalServerError, "%v", err)
			return
		}
		v.Total = total
		for _, m := range list {
			proto := map[uint8]string{6: "tcp", 17: "udp"}[m.Tuple.Proto]
			v.Mappings = append(v.Mappings, MappingView{Unit: m.Unit.String(), FlowID: m.ID, Proto: proto,
				Client: m.Tuple.Client().String(), VIP: m.Tuple.VIP().String()})
		}
		localapi.WriteJSON(w, http.StatusOK, v)
	})
}

// maxListed bounds the mappings one GET /v1/tunnel/mappings returns.
const maxListed = 100000

// MappingsView is GET /v1/tunnel/mappings: the mappings the host's
// kernel holds (up to the request's limit) and how many in all.
type MappingsView struct {
	Total    int           `json:"total"`
	Mappings []MappingView `json:"mappings"`
}

// MappingView is one mapping: unit (its tunnel source) and flow ID →
// the connection the host restores the flow's packets to.
type MappingView struct {
	Unit   string `json:"unit"`
	FlowID uint32 `json:"flow_id"`
	Proto  string `json:"proto"`
	Client string `json:"client"`
	VIP    string `json:"vip"`
}
