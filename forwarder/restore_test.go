package forwarder

import (
	"context"
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tetherlb/tether/api/unit"
	"github.com/tetherlb/tether/config"
	"github.com/tetherlb/tether/dataplane/header"
	"github.com/tetherlb/tether/internal/pkttest"
	"github.com/tetherlb/tether/nic"
)

// TestRestoreBeforeForwarding: connections handed to a forwarder before
// Run are in place for its first packet: a nat connection's segment goes
// out with the SNAT port it had, not refused as a segment that opens
// nothing.
func TestRestoreBeforeForwarding(t *testing.T) {
	c, err := config.Parse([]byte(`
unit: {name: u1, address4: 198.51.100.254, mac: "02:00:00:00:00:01"}
l2: {gateway_mac: "02:00:00:00:00:fe"}
forwarder: {flows: {max: 4096}}
vips:
  - {name: web, address: 192.0.2.1, port: 80, protocol: tcp, mode: nat, snat: [198.51.100.1], backends: [{name: b1, address: 10.1.0.1}]}
`))
	if err != nil {
		t.Fatal(err)
	}
	port := newChanPort()
	f, err := NewOnPorts(c, []nic.Port{port}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	k := unit.FlowKey{SrcPort: 40000, DstPort: 80, Proto: 6}
	copy(k.Src[:], []byte{203, 0, 113, 5})
	copy(k.Dst[:], []byte{192, 0, 2, 1})
	a := unit.Action{Mode: unit.ModeNAT, Backend: 0, PortA: 80, PortB: 31337, Flags: unit.FlowEstablished | unit.FlowPeer}
	copy(a.A[:], []byte{10, 1, 0, 1})
	copy(a.B[:], []byte{198, 51, 100, 1})
	n, err := f.Restore([]unit.FlowRecord{{Worker: 0, Key: k, Action: a}, {Worker: 0, Key: k, Action: unit.Action{Mode: unit.ModeNAT, Backend: 99}}})
	if n != 1 || err == nil {
		t.Fatalf("restored %d, %v; want the first put back and the second (unknown backend) refused", n, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { f.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	port.in <- pkttest.TCP(pkttest.Endpoint{MAC: pkttest.MustMAC("02:00:00:00:00:fe"), Addr: netip.MustParseAddr("203.0.113.5"), Port: 40000},
		pkttest.Endpoint{MAC: pkttest.MustMAC("02:00:00:00:00:01"), Addr: netip.MustParseAddr("192.0.2.1"), Port: 80}, pkttest.ACK, 100, 100, pkttest.Opts{})
	select {
	case b := <-port.out:
		ip := header.IPv4(b[header.EthernetSize:])
		sport := binary.BigEndian.Uint16(b[header.EthernetSize+ip.HeaderLength():])
		if src, _ := netip.AddrFromSlice(ip.Src()); src != netip.MustParseAddr("198.51.100.1") || sport != 31337 {
			t.Fatalf("the connection's segment left from %s:%d, want 198.51.100.1:31337", src, sport)
		}
	case <-time.After(wait):
		sum, _ := f.Summary(context.Background())
		t.Fatalf("the restored connection's segment was not forwarded: %+v", sum.Report().Drops)
	}
}
