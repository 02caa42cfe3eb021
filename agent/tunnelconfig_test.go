package agent

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tetherlb/tether/internal/nstest"

	"github.com/rs/zerolog"

	"github.com/tetherlb/tether/agent/streams"
	"github.com/tetherlb/tether/agent/tunnel"
	hostpb "github.com/tetherlb/tether/api/hostpb"
	"github.com/tetherlb/tether/ctlplane/hosts"
	"github.com/tetherlb/tether/internal/mtls"
	"github.com/tetherlb/tether/tables/encap"
)

const tunnelStreams = "streams: {units: [{name: unit-a, address: \"127.0.0.1:7320\"}], tls: {ca: /c, cert: /c, key: /k}}\n"

func TestTunnelConfigErrorsNameTheKey(t *testing.T) {
	cases := map[string][]string{
		tunnelStreams + "tunnel: {interface: eth0}":                                      {"tunnel.addresses", "list the host's tunnel addresses"},
		"tunnel: {addresses: [10.0.0.5]}":                                                {"tunnel.addresses", "needs tunnel.interface"},
		"tunnel: {interface: eth0, addresses: [10.0.0.5]}":                               {"tunnel.interface", "needs streams.units"},
		tunnelStreams + "tunnel: {interface: eth0, addresses: [\"fe80::1\"]}":            {"tunnel.addresses[0]", "fe80::1", "link-local"},
		tunnelStreams + "tunnel: {interface: eth0, addresses: [\"::ffff:10.0.0.5\"]}":    {"tunnel.addresses[0]", "IPv4-mapped"},
		tunnelStreams + "tunnel: {interface: eth0, addresses: [\"ff02::1\"]}":            {"tunnel.addresses[0]", "unicast"},
		tunnelStreams + "tunnel: {interface: eth0, addresses: [10.0.0.5, 10.0.0.5]}":     {"tunnel.addresses[1]", "also tunnel.addresses[0]"},
		tunnelStreams + "tunnel: {interface: eth0, addresses: [0.0.0.0]}":                {"tunnel.addresses[0]", "unicast"},
		tunnelStreams + "tunnel: {interface: eth0, addresses: [10.0.0.5], max_flows: 8}": {"tunnel.max_flows", "\"8\"", "between 1024"},
		tunnelStreams + "tunnel: {interface: eth0, addresses: [10.0.0.5], pin_dir: x}":   {"tunnel.pin_dir", "absolute"},
		tunnelStreams + "tunnel: {interface: \"a/b\", addresses: [10.0.0.5]}":            {"tunnel.interface", "a/b"},
		tunnelStreams + "tunnel: {interface: eth0, addresses: [10.0.0.5], mtu: 1}":       {"mtu"},
	}
	for y, want := range cases {
		_, err := ParseConfig([]byte(streamBase + y))
		for _, w := range want {
			if err == nil || !strings.Contains(err.Error(), w) {
				t.Errorf("%q: got %v, want it to say %s", y, err, w)
			}
		}
	}
	cfg, err := ParseConfig([]byte(streamBase + tunnelStreams + "tunnel: {interface: eth0, addresses: [10.0.0.5, \"fd00:7::100\"]}"))
	if err != nil {
		t.Fatal(err)
	}
	if tc := cfg.Tunnel; tc.PinDir != "/sys/fs/bpf/tether-host" || tc.MaxFlows != 1<<20 || tc.Generic || len(tc.addrs) != 2 {
		t.Errorf("defaults: %+v", tc)
	}
	t.Setenv("TETHER_AGENT_TUNNEL_MAX_FLOWS", "4096")
	if cfg, err := ParseConfig([]byte(streamBase + tunnelStreams + "tunnel: {interface: eth0, addresses: [10.0.0.5]}")); err != nil || cfg.Tunnel.MaxFlows != 4096 {
		t.Errorf("environment override: %v, %v", cfg, err)
	}
	none, err := ParseConfig([]byte(streamBase))
	if err != nil {
		t.Fatal(err)
	}
	if tun, err := none.OpenTunnel(zerolog.Nop()); tun != nil || err != nil {
		t.Errorf("no tunnel configured: %v, %v", tun, err)
	}
}

// TestOpenTunnelChecksTheCertificate: a tunnel address the host's
// certificate does not name stops the start, naming the key, before
// anything touches the kernel.
func TestOpenTunnelChecksTheCertificate(t *testing.T) {
	dir := t.TempDir()
	ca, _, err := mtls.OpenCA(dir, "test")
	if err != nil {
		t.Fatal(err)
	}
	f, err := ca.IssueHost(dir, 7, netip.MustParseAddr("10.0.0.5"))
	if err != nil {
		t.Fatal(err)
	}
	y := fmt.Sprintf("streams: {units: [{name: u, address: \"127.0.0.1:7320\"}], tls: {ca: %s, cert: %s, key: %s}}\n"+
		"tunnel: {interface: no-such-if0, addresses: [10.0.0.5, 10.0.0.6]}", f.CA, f.Cert, f.Key)
	cfg, err := ParseConfig([]byte(streamBase + y))
	if err != nil {
		t.Fatal(err)
	}
	_, err = cfg.OpenTunnel(zerolog.Nop())
	for _, w := range []string{"tunnel.addresses[1]", "10.0.0.6", "not named in streams.tls.cert", "[10.0.0.5]"} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("an address the certificate lacks: %v, want it to say %s", err, w)
		}
	}
	if err != nil && strings.Contains(err.Error(), "tunnel.addresses[0]") {
		t.Errorf("the named address was refused too: %v", err)
	}
	// With the certificate's address only, the check passes and the
	// interface is what fails.
	cfg.Tunnel.addrs = cfg.Tunnel.addrs[:1]
	if _, err := cfg.OpenTunnel(zerolog.Nop()); err == nil || !strings.Contains(err.Error(), "tunnel.interface") {
		t.Errorf("a missing interface: %v", err)
	}
	cfg.Streams.TLS.Cert = f.Key
	if _, err := cfg.OpenTunnel(zerolog.Nop()); err == nil || !strings.Contains(err.Error(), "streams.tls.cert") {
		t.Errorf("a certificate file without a certificate: %v", err)
	}
}

// The kernel tests' topology (nstest.UnitHost), as in agent/tunnel: namespace U (the
// units' side: u0 with unit-a's 10.7.0.1 and unit-b's 10.7.0.3) and H
// (the host: h0 10.7.0.2/24, tunnel address 10.7.0.100, the VIP
// 192.0.2.50 on lo).
const (
	tunUnitA  = nstest.UnitAddr
	tunUnitA6 = "2001:db8::1"
	tunUnitB  = nstest.OtherAddr
	tunHost   = nstest.HostAddr
	tunAddr   = "10.7.0.100"
	tunVIP    = nstest.VIPAddr
	tunClient = "203.0.113.9"
)

type tunTopo struct{ u, h string }

func newTunTopo(t *testing.T) *tunTopo {
	t.Helper()
	u, h := nstest.UnitHost(t, "tha")
	return &tunTopo{u: u, h: h}
}

// tunSend sends a UDP datagram of flow ID id from src to the tunnel
// address, as a unit would send a tunnel packet.
func tunSend(t *testing.T, p *tunTopo, src string, id uint32, payload string) {
	t.Helper()
	nstest.In(t, p.u, func() {
		c, err := net.DialUDP("udp4", &net.UDPAddr{IP: net.ParseIP(src), Port: int(id >> 16)},
			&net.UDPAddr{IP: net.ParseIP(tunAddr), Port: int(id & 0xffff)})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Write([]byte(payload)); err != nil {
			t.Fatal(err)
		}
	})
}

func tunListen(t *testing.T, p *tunTopo, port int) *net.UDPConn {
	t.Helper()
	var c *net.UDPConn
	nstest.In(t, p.h, func() {
		var err error
		if c, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP(tunVIP), Port: port}); err != nil {
			t.Fatal(err)
		}
	})
	t.Cleanup(func() { c.Close() })
	return c
}

// tunReceive reads one datagram within a bound.
func tunReceive(t *testing.T, c *net.UDPConn) (string, netip.AddrPort) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 2048)
	n, from, err := c.ReadFromUDPAddrPort(buf)
	if err != nil {
		t.Fatalf("nothing received on %v: %v", c.LocalAddr(), err)
	}
	return string(buf[:n]), netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
}

// udp4 is a mapping of flow id: the client's port clientPort to the
// VIP's port vipPort.
func udp4(id uint32, clientPort, vipPort uint32) *hostpb.Mapping {
	return &hostpb.Mapping{FlowId: id, Tuple: &hostpb.Tuple{Proto: hostpb.Proto_PROTO_UDP,
		Client: netip.MustParseAddr(tunClient).AsSlice(), ClientPort: clientPort, Vip: netip.MustParseAddr(tunVIP).AsSlice(), VipPort: vipPort}}
}

func tcp6(id uint32) *hostpb.Mapping {
	return &hostpb.Mapping{FlowId: id, Tuple: &hostpb.Tuple{Proto: hostpb.Proto_PROTO_TCP,
		Client: netip.MustParseAddr("2001:db8::9").AsSlice(), ClientPort: 4000, Vip: netip.MustParseAddr("2001:db8::50").AsSlice(), VipPort: 80}}
}

func encapOf(t *testing.T, m *hostpb.Mapping) encap.Tuple {
	t.Helper()
	return *toEncap(m.GetTuple())
}

// kernelHolds fails unless the kernel holds exactly want from unit.
func kernelHolds(t *testing.T, h *tunnel.Host, unit string, want map[uint32]*hostpb.Mapping) {
	t.Helper()
	got, err := h.Mappings(netip.MustParseAddr(unit))
	if err != nil {
		t.Fatal(err)
	}
	if err := sameMappings(got, want); err != nil {
		t.Fatalf("unit %s: %v", unit, err)
	}
}

func sameMappings(got map[uint32]encap.Tuple, want map[uint32]*hostpb.Mapping) error {
	if len(got) != len(want) {
		return fmt.Errorf("the kernel holds %d mappings, want %d", len(got), len(want))
	}
	for id, m := range want {
		e := toEncap(m.GetTuple())
		if g, ok := got[id]; !ok || g != *e {
			return fmt.Errorf("flow %d: %+v (held %v), want %+v", id, g, ok, *e)
		}
	}
	return nil
}

// tunnelConfig is an agent configuration with streams to the units
// (unit-a at addr) and the tunnel on h0, pinned under dir, with the
// certificate files of f.
func tunnelConfig(t *testing.T, f mtls.Files, dir, addr, extra string) *Config {
	t.Helper()
	y := fmt.Sprintf("streams: {units: [{name: unit-a, address: %q}%s], tls: {ca: %s, cert: %s, key: %s}}\n"+
		"tunnel: {interface: h0, addresses: [%s], pin_dir: %s, max_flows: 1024}", addr, extra, f.CA, f.Cert, f.Key, tunAddr, dir)
	cfg, err := ParseConfig([]byte(streamBase + y))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func openTunnel(t *testing.T, p *tunTopo, cfg *Config) *Tunnel {
	t.Helper()
	var tun *Tunnel
	nstest.In(t, p.h, func() {
		var err error
		if tun, err = cfg.OpenTunnel(zerolog.Nop()); err != nil {
			t.Fatal(err)
		}
	})
	return tun
}

func hostFiles(t *testing.T) (*mtls.CA, string, mtls.Files) {
	t.Helper()
	dir := t.TempDir()
	ca, _, err := mtls.OpenCA(dir, "test")
	if err != nil {
		t.Fatal(err)
	}
	f, err := ca.IssueHost(dir, 7, netip.MustParseAddr(tunAddr))
	if err != nil {
		t.Fatal(err)
	}
	return ca, dir, f
}

func unitView(tun *Tunnel, name string) TunnelUnit {
	for _, u := range tun.View().ByUnit {
		if u.Unit == name {
			return u
		}
	}
	return TunnelUnit{}
}

// TestTunnelSinkInTheKernel drives the sink by hand against a real
// program: what an earlier agent left, one unit's resync, two units'
// batches with the same flow IDs, IPv6 and a full map.
func TestTunnelSinkInTheKernel(t *testing.T) {
	p := newTunTopo(t)
	_, _, f := hostFiles(t)
	dir := nstest.BPFFS(t)
	a, b, gone := netip.MustParseAddr(tunUnitA), netip.MustParseAddr(tunUnitB), netip.MustParseAddr("10.9.9.9")

	// An earlier agent left the program with unit-a's mappings (one the
	// unit no longer has, one it has changed) and those of a unit that
	// has gone.
	var old *tunnel.Host
	nstest.In(t, p.h, func() {
		var err error
		old, err = tunnel.Open(tunnel.Config{Interface: "h0", Addresses: []netip.Addr{netip.MustParseAddr(tunAddr)},
			Units: []netip.Addr{a, gone}, PinDir: dir, MaxFlows: 1024})
		if err != nil {
			t.Fatal(err)
		}
	})
	for _, m := range []struct {
		unit netip.Addr
		m    *hostpb.Mapping
	}{{a, udp4(99, 4099, 5353)}, {a, udp4(1, 4001, 9999)}, {gone, udp4(5, 4005, 5353)}} {
		e := encapOf(t, m.m)
		if err := old.Put(m.unit, m.m.GetFlowId(), &e); err != nil {
			t.Fatal(err)
		}
	}
	old.Close()

	cfg := tunnelConfig(t, f, dir, "127.0.0.1:7320", ", {name: unit-b, address: \"127.0.0.1:7321\"}")
	tun := openTunnel(t, p, cfg)
	defer func() { tun.Close(); tunnel.RemovePinned("h0", dir) }()
	h := tun.Host()
	if h.Mode != "kept" {
		t.Fatalf("mode %q, want the earlier program taken over", h.Mode)
	}
	if u, _ := h.Units(); len(u) != 2 {
		t.Fatalf("units after the takeover: %v, want the earlier agent's two kept", u)
	}

	// unit-a says hello and resyncs: its set becomes exactly the unit's,
	// the IPv6 mapping under its IPv6 source.
	a6 := netip.MustParseAddr(tunUnitA6)
	if err := tun.Sources("unit-a", []netip.Addr{a6, a}); err != nil {
		t.Fatal(err)
	}
	if u, _ := h.Units(); len(u) != 3 || !slices.Contains(u, gone) {
		t.Fatalf("units before every unit said hello: %v, want unit-a's two and the inherited one", u)
	}
	want := map[uint32]*hostpb.Mapping{1: udp4(1, 4001, 5353), 2: udp4(2, 4002, 5353)}
	if err := tun.Replace("unit-a", map[uint32]*hostpb.Tuple{1: want[1].GetTuple(), 2: want[2].GetTuple(), 3: tcp6(3).GetTuple()}); err != nil {
		t.Fatal(err)
	}
	kernelHolds(t, h, tunUnitA, want)
	kernelHolds(t, h, tunUnitA6, map[uint32]*hostpb.Mapping{3: tcp6(3)})
	if u := unitView(tun, "unit-a"); u.NoSource != 0 || u.Mappings != 3 || u.Resyncs != 1 || !slices.Equal(u.Sources, []string{tunUnitA, tunUnitA6}) {
		t.Errorf("unit-a after its resync: %+v", u)
	}

	// unit-b may not take unit-a's source: their flow IDs would collide.
	if err := tun.Sources("unit-b", []netip.Addr{a}); err == nil || !strings.Contains(err.Error(), "collide") {
		t.Errorf("two units with one source: %v", err)
	}
	// With its own, every unit has said hello: the program takes
	// exactly their sources, and the gone unit's mappings go.
	if err := tun.Sources("unit-b", []netip.Addr{b}); err != nil {
		t.Fatal(err)
	}
	if u, _ := h.Units(); len(u) != 3 || !slices.Contains(u, a) || !slices.Contains(u, a6) || !slices.Contains(u, b) {
		t.Errorf("units: %v, want exactly unit-a's and unit-b's sources", u)
	}
	if g, _ := h.Mappings(gone); len(g) != 0 {
		t.Errorf("the gone unit's mappings stay: %v", g)
	}

	// Batches: the same flow ID from two units stands for two flows.
	// (IDs below 1<<16 would make the sender's source port 0 below.)
	const shared, fourth = 0x0002_0001, 0x0002_0004
	wantB := map[uint32]*hostpb.Mapping{shared: udp4(shared, 4101, 5354)}
	if err := tun.Apply("unit-b", []*hostpb.Mapping{wantB[shared]}, nil); err != nil {
		t.Fatal(err)
	}
	if err := tun.Apply("unit-a", []*hostpb.Mapping{udp4(shared, 4201, 5353)}, nil); err != nil {
		t.Fatal(err)
	}
	// unit-a: shared and 1 removed, fourth added, 2 taken by an IPv6
	// flow (so its IPv4 mapping must go), 3 by an IPv4 one (so its IPv6
	// mapping must go).
	if err := tun.Apply("unit-a", []*hostpb.Mapping{udp4(fourth, 4004, 5353), tcp6(2), udp4(3, 4003, 5353)}, []uint32{1, shared}); err != nil {
		t.Fatal(err)
	}
	want = map[uint32]*hostpb.Mapping{fourth: udp4(fourth, 4004, 5353), 3: udp4(3, 4003, 5353)}
	kernelHolds(t, h, tunUnitA, want)
	kernelHolds(t, h, tunUnitA6, map[uint32]*hostpb.Mapping{2: tcp6(2)})
	kernelHolds(t, h, tunUnitB, wantB)
	if u := unitView(tun, "unit-a"); u.Mappings != 3 || u.Batches != 2 || u.Removed != 5 {
		t.Errorf("unit-a after its batch: %+v", u)
	}

	// Real packets: the shared ID from unit-b and the fourth flow from
	// unit-a reach the VIP as the client sent them.
	s53, s54 := tunListen(t, p, 5353), tunListen(t, p, 5354)
	tunSend(t, p, tunUnitB, shared, "b's flow")
	if msg, from := tunReceive(t, s54); msg != "b's flow" || from != netip.MustParseAddrPort(tunClient+":4101") {
		t.Errorf("received %q from %v", msg, from)
	}
	tunSend(t, p, tunUnitA, fourth, "a's flow 4")
	if msg, from := tunReceive(t, s53); msg != "a's flow 4" || from != netip.MustParseAddrPort(tunClient+":4004") {
		t.Errorf("received %q from %v", msg, from)
	}
	if v := tun.View(); v.Counters.Decapsulated != 2 || v.Mode != "kept" || v.MaxFlows != 1024 {
		t.Errorf("view: %+v", v)
	}

	// unit-b's source changes: its mappings leave the old one, and the
	// error asks for the set again (the stream resyncs).
	moved := netip.MustParseAddr("10.7.0.4")
	if err := tun.Sources("unit-b", []netip.Addr{moved}); err == nil || !strings.Contains(err.Error(), "resent") {
		t.Errorf("a changed source: %v", err)
	}
	if m, _ := h.Mappings(b); len(m) != 0 {
		t.Errorf("mappings left under unit-b's old source: %v", m)
	}
	if u, _ := h.Units(); len(u) != 3 || !slices.Contains(u, moved) || slices.Contains(u, b) {
		t.Errorf("units after unit-b moved: %v", u)
	}

	// A unit that names no IPv4 source: its IPv4 mappings are counted,
	// not placed anywhere.
	if err := tun.Sources("unit-c", []netip.Addr{netip.MustParseAddr("2001:db8::3")}); err != nil {
		t.Fatal(err)
	}
	if err := tun.Apply("unit-c", []*hostpb.Mapping{udp4(7, 4007, 5353)}, nil); err != nil {
		t.Fatal(err)
	}
	if u := unitView(tun, "unit-c"); u.NoSource != 1 || u.Mappings != 0 {
		t.Errorf("unit-c: %+v", u)
	}

	// A full map: the resync that fills it goes in, the next mapping
	// fails, is counted, and reaches the caller (which then does not
	// acknowledge).
	full := map[uint32]*hostpb.Tuple{}
	for id := uint32(1); id <= 1024; id++ { // unit-a is the only one left holding any
		full[id] = udp4(id, 1000+id%60000, 5353).GetTuple()
	}
	if err := tun.Replace("unit-a", full); err != nil {
		t.Fatal(err)
	}
	err := tun.Apply("unit-a", []*hostpb.Mapping{udp4(5000, 5000, 5353)}, nil)
	if err == nil {
		t.Fatal("a mapping beyond max_flows was taken")
	}
	if u := unitView(tun, "unit-a"); u.Failures != 1 || !strings.Contains(u.LastError, "5000") || u.Mappings != 1024 {
		t.Errorf("unit-a after the full map refused: %+v (%v)", u, err)
	}
}

// startUnitStreams runs unit-a's stream server on loopback; its hello
// names source as the unit's tunnel source (unit.address4).
func startUnitStreams(t *testing.T, ca *mtls.CA, dir, source string) (*hosts.Server, string) {
	t.Helper()
	uf, err := ca.IssueUnit(dir, "unit-a", []netip.Addr{netip.MustParseAddr("127.0.0.1")})
	if err != nil {
		t.Fatal(err)
	}
	scfg, err := mtls.Server(uf, "unit-a")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := hosts.New(hosts.Options{Listen: "127.0.0.1:0", TLS: scfg, Unit: "unit-a",
		TunnelSources: []netip.Addr{netip.MustParseAddr(source)}, Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	srv.SetReady() // the unit knows its flows: hellos are answered at once
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { srv.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return srv, srv.Addr().String()
}

// TestMappingsFromARealUnitRestorePackets: a real unit's stream server
// publishes mappings; the agent's streams put them into the XDP map
// before acknowledging, and a tunnel packet of each flow reaches the
// VIP as the client sent it. The agent restarts while the unit changes
// its set: the kernel goes on restoring meanwhile, and after the new
// agent's full resync the map holds exactly the unit's set.
func TestMappingsFromARealUnitRestorePackets(t *testing.T) {
	p := newTunTopo(t)
	ca, caDir, f := hostFiles(t)
	dir := nstest.BPFFS(t)
	srv, addr := startUnitStreams(t, ca, caDir, tunUnitA)
	defer tunnel.RemovePinned("h0", dir)

	// The unit's set, as Publish changes it.
	set := map[uint32]*hostpb.Mapping{}
	publish := func(add []*hostpb.Mapping, remove []uint32) {
		t.Helper()
		if _, err := srv.Publish(7, add, remove); err != nil {
			t.Fatal(err)
		}
		for _, id := range remove {
			delete(set, id)
		}
		for _, m := range add {
			set[m.GetFlowId()] = m
		}
	}
	acked := func(seq uint64) func() bool {
		return func() bool {
			for _, h := range srv.View().Streams {
				if h.Host == 7 && h.Acked >= seq {
					return true
				}
			}
			return false
		}
	}
	start := func() (*Tunnel, func()) {
		tun := openTunnel(t, p, tunnelConfig(t, f, dir, addr, ""))
		st, err := tunnelConfig(t, f, dir, addr, "").NewStreams(streams.Options{Sink: tun, MinBackoff: 10 * time.Millisecond,
			MaxBackoff: 100 * time.Millisecond, Log: zerolog.Nop()})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { st.Run(ctx); close(done) }()
		var once sync.Once
		stop := func() { once.Do(func() { cancel(); <-done; tun.Close() }) }
		t.Cleanup(stop)
		return tun, stop
	}

	// Two flows before the agent comes (a resync), one more after (a
	// batch).
	publish([]*hostpb.Mapping{udp4(0x0001_0001, 4001, 5353), udp4(0x0001_0002, 4002, 5353)}, nil)
	tun, stop := start()
	eventually(t, "the resync acknowledged", acked(1))
	publish([]*hostpb.Mapping{udp4(0x0001_0003, 4003, 5353)}, nil)
	eventually(t, "the batch acknowledged", acked(2))
	// Acknowledged means held: no wait for the kernel.
	kernelHolds(t, tun.Host(), tunUnitA, set)
	srvUDP := tunListen(t, p, 5353)
	tunSend(t, p, tunUnitA, 0x0001_0003, "flow 3")
	if msg, from := tunReceive(t, srvUDP); msg != "flow 3" || from != netip.MustParseAddrPort(tunClient+":4003") {
		t.Fatalf("received %q from %v, want flow 3 from the client's port 4003", msg, from)
	}

	// The agent stops. The unit ends flow 1 and starts flow 4 meanwhile;
	// the kernel, holding the old set, goes on restoring flow 2.
	stop()
	publish([]*hostpb.Mapping{udp4(0x0001_0004, 4004, 5353)}, []uint32{0x0001_0001})
	tunSend(t, p, tunUnitA, 0x0001_0002, "flow 2, no agent")
	if msg, _ := tunReceive(t, srvUDP); msg != "flow 2, no agent" {
		t.Fatalf("received %q while no agent ran", msg)
	}

	// A new agent: empty holding, so a full resync, which makes the
	// pinned map exactly the unit's set (flow 1 gone, flow 4 there).
	tun, _ = start()
	if tun.Host().Mode != "kept" {
		t.Errorf("mode %q, want the program taken over", tun.Host().Mode)
	}
	eventually(t, "the new agent's resync acknowledged", acked(3))
	kernelHolds(t, tun.Host(), tunUnitA, set)
	tunSend(t, p, tunUnitA, 0x0001_0004, "flow 4")
	if msg, from := tunReceive(t, srvUDP); msg != "flow 4" || from != netip.MustParseAddrPort(tunClient+":4004") {
		t.Fatalf("received %q from %v after the restart", msg, from)
	}
	if u := unitView(tun, "unit-a"); u.Resyncs != 1 || u.Mappings != 3 || !slices.Equal(u.Sources, []string{tunUnitA}) || u.Removed != 1 {
		t.Errorf("unit-a after the restart: %+v", u)
	}
	if v := tun.View(); len(v.Units) != 1 || v.Units[0] != tunUnitA {
		t.Errorf("units accepted: %v", v.Units)
	}
}
