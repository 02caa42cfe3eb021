package dataplane

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"testing"

	"github.com/tetherlb/tether/config"
	"github.com/tetherlb/tether/internal/pkttest"
	"github.com/tetherlb/tether/nic"
	"github.com/tetherlb/tether/tables/flow"
)

const (
	unitMAC = "02:00:00:00:00:01"
	gwMAC   = "02:00:00:00:00:fe"
)

// testConfig is a unit with one VIP per mode on IPv4 (ports 80-83) and
// an IPv6 halfnat VIP, three backends each.
const testConfig = `
unit:
  address4: 198.51.100.254
  address6: "2001:db8:5::fe"
  mac: "02:00:00:00:00:01"
forwarder:
  flows:
    max: %d
l2:
  gateway_mac: "02:00:00:00:00:fe"
vips:
  - name: nat
    address: 192.0.2.1
    port: 80
    protocol: tcp
    mode: nat
    snat: [198.51.100.1]
    snat_ports: %s
    backends: &b4
      - {name: b1, address: 10.1.0.1}
      - {name: b2, address: 10.1.0.2}
      - {name: b3, address: 10.1.0.3}
  - name: halfnat
    address: 192.0.2.1
    port: 81
    protocol: tcp
    mode: halfnat
    backends: *b4
  - name: tunnel
    address: 192.0.2.1
    port: 82
    protocol: tcp
    mode: tunnel
    backends: *b4
  - name: ipip
    address: 192.0.2.1
    port: 83
    protocol: tcp
    mode: ipip
    backends: *b4
  - name: halfnat6
    address: "2001:db8::1"
    port: 80
    protocol: tcp
    mode: halfnat
    backends:
      - {name: c1, address: "fd00::1"}
      - {name: c2, address: "fd00::2"}
`

func loadConfig(t testing.TB, maxFlows int, snatPorts string) *config.Config {
	t.Helper()
	c, err := config.Parse(fmt.Appendf(nil, testConfig, maxFlows, snatPorts))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// rig is a pipeline with its output, driven frame by frame.
type rig struct {
	t   testing.TB
	cfg *config.Config
	p   *Pipeline
	out *Output
	pc  Config
	now flow.Tick
}

func newRig(t testing.TB, c *config.Config) *rig {
	t.Helper()
	s, err := Build(c, nil)
	if err != nil {
		t.Fatal(err)
	}
	pc := ConfigFrom(c, 0, nic.LinkEthernet, 1)
	p, err := New(pc, s)
	if err != nil {
		t.Fatal(err)
	}
	return &rig{t: t, cfg: c, p: p, out: NewOutput(&pc), pc: pc}
}

// generalOnly replaces the rig's pipeline with a fresh one that takes
// every packet through the general path (Config.GeneralOnly).
func (r *rig) generalOnly() {
	r.t.Helper()
	r.pc.GeneralOnly = true
	p, err := New(r.pc, r.p.Snapshot())
	if err != nil {
		r.t.Fatal(err)
	}
	r.p = p
}

// frame wraps data in a Frame with headroom.
func frame(data []byte) nic.Frame {
	buf := make([]byte, nic.Headroom+len(data)+64)
	copy(buf[nic.Headroom:], data)
	return nic.Frame{Buf: buf, Off: nic.Headroom, Len: len(data)}
}

// send processes frames and returns the output lists (copied).
func (r *rig) send(frames ...[]byte) (tx, pass, drop [][]byte) {
	fr := make([]nic.Frame, len(frames))
	for i, f := range frames {
		fr[i] = frame(f)
	}
	r.out.Reset()
	r.p.Process(r.now, fr, r.out)
	cp := func(l []nic.Frame) [][]byte {
		var o [][]byte
		for i := range l {
			o = append(o, append([]byte(nil), l[i].Data()...))
		}
		return o
	}
	return cp(r.out.TX), cp(r.out.Pass), cp(r.out.Drop)
}

func cl(i int, port uint16) pkttest.Endpoint {
	return pkttest.Endpoint{MAC: pkttest.MustMAC(gwMAC), Addr: netip.AddrFrom4([4]byte{203, 0, 113, byte(i)}), Port: port}
}

func vip(port uint16) pkttest.Endpoint {
	return pkttest.Endpoint{MAC: pkttest.MustMAC(unitMAC), Addr: netip.MustParseAddr("192.0.2.1"), Port: port}
}

func syn(c, v pkttest.Endpoint) []byte {
	return pkttest.TCP(c, v, pkttest.SYN, 1, 0, pkttest.Opts{MSS: 1460})
}

func ack(c, v pkttest.Endpoint) []byte {
	return pkttest.TCP(c, v, pkttest.ACK, 2, 2, pkttest.Opts{Payload: []byte("data")})
}

// dstOf returns the destination address and port of a forwarded frame.
func dstOf(f []byte) netip.AddrPort {
	ip := pkttest.IP(f, false)
	if ip[0]>>4 == 6 {
		return netip.AddrPortFrom(netip.AddrFrom16([16]byte(ip[24:40])), binary.BigEndian.Uint16(ip[42:]))
	}
	hl := int(ip[0]&0xf) * 4
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte(ip[16:20])), binary.BigEndian.Uint16(ip[hl+2:]))
}

func srcOf(f []byte) netip.AddrPort {
	ip := pkttest.IP(f, false)
	if ip[0]>>4 == 6 {
		return netip.AddrPortFrom(netip.AddrFrom16([16]byte(ip[8:24])), binary.BigEndian.Uint16(ip[40:]))
	}
	hl := int(ip[0]&0xf) * 4
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte(ip[12:16])), binary.BigEndian.Uint16(ip[hl:]))
}

// Tick is the flow clock, shortened for tests.
type Tick = flow.Tick

func loadFuzzConfig(t testing.TB) *config.Config {
	t.Helper()
	c, err := config.Parse([]byte(fuzzConfig))
	if err != nil {
		t.Fatal(err)
	}
	return c
}
