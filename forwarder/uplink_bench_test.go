package forwarder

import (
	"context"
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tetherlb/tether/api/unit"
	"github.com/tetherlb/tether/config"
	"github.com/tetherlb/tether/dataplane/channel"
	"github.com/tetherlb/tether/internal/pkttest"
	"github.com/tetherlb/tether/nic"
)

const benchConfig = `
unit: {address4: 198.51.100.254, mac: "02:00:00:00:00:01"}
l2: {gateway_mac: "02:00:00:00:00:fe"}
forwarder: {flows: {max: 1048576}}
vips:
  - name: web
    address: 192.0.2.1
    port: 80
    protocol: tcp
    mode: halfnat
    punt: true
    backends: [{name: b1, address: 10.1.0.1}, {name: b2, address: 10.1.0.2}]
`

type benchUnit struct {
	port *chanPort
	conn *channel.Conn
	stop context.CancelFunc
}

func startBench(b *testing.B) *benchUnit {
	c, err := config.Parse([]byte(benchConfig))
	if err != nil {
		b.Fatal(err)
	}
	port := newChanPort()
	f, err := NewOnPorts(c, []nic.Port{port}, zerolog.Nop())
	if err != nil {
		b.Fatal(err)
	}
	dir := b.TempDir()
	path := filepath.Join(dir, "ch.sock")
	l, err := channel.Listen(path)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { l.Close(); os.RemoveAll(dir) })
	f.ConnectControl(path)
	ctx, cancel := context.WithCancel(context.Background())
	go f.Run(ctx)
	conn, err := channel.Accept(l)
	if err != nil {
		b.Fatal(err)
	}
	// The hello: the workers punt from here on.
	if _, err := conn.Recv(); err != nil {
		b.Fatal(err)
	}
	u := &benchUnit{port: port, conn: conn, stop: cancel}
	b.Cleanup(func() { cancel(); conn.Close() })
	return u
}

func syn(i int) []byte {
	src := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
	return pkttest.TCP(pkttest.Endpoint{MAC: pkttest.MustMAC("02:00:00:00:00:fe"), Addr: src, Port: uint16(1024 + i%60000)},
		pkttest.Endpoint{MAC: pkttest.MustMAC("02:00:00:00:00:01"), Addr: netip.MustParseAddr("192.0.2.1"), Port: 80}, pkttest.SYN, 1, 0, pkttest.Opts{})
}

// BenchmarkPuntRoundTrip measures, per new flow on a punt VIP, the time
// from the first packet entering the forwarder to its leaving for the
// backend: punt to the control socket, a route back, the held packet
// released. The control side answers at once, so this is the channel's
// and the forwarder's share of a decision.
func BenchmarkPuntRoundTrip(b *testing.B) {
	u := startBench(b)
	b.ResetTimer()
	for i := range b.N {
		u.port.in <- syn(i)
		for {
			msg, err := u.conn.Recv()
			if err != nil {
				b.Fatal(err)
			}
			h, p, _ := channel.ParseHeader(msg)
			if h.Type != channel.TPunt {
				continue
			}
			pu, err := channel.DecodePunt(p)
			if err != nil {
				b.Fatal(err)
			}
			r := channel.Route{Op: channel.RouteAdd, Worker: pu.Worker, Key: pu.Key, Action: unit.Action{Backend: uint32(i % 2)}}
			if err := u.conn.Send(channel.AppendRoute(nil, 1, &r)); err != nil {
				b.Fatal(err)
			}
			break
		}
		select {
		case <-u.port.out:
		case <-time.After(5 * time.Second):
			b.Fatalf("flow %d: the punted packet never left", i)
		}
	}
}

// BenchmarkAddRoute measures how fast the forwarder applies routes sent
// back to back (new flows control decided without a punt), ending with a
// barrier that waits until every one is in a flow table.
func BenchmarkAddRoute(b *testing.B) {
	u := startBench(b)
	b.ResetTimer()
	for i := range b.N {
		k := unit.FlowKey{Dst: [16]byte{192, 0, 2, 1}, SrcPort: uint16(i), DstPort: 80, Proto: 6}
		binary.BigEndian.PutUint32(k.Src[:], 0x0a000000|uint32(i>>16))
		r := channel.Route{Op: channel.RouteAdd, Worker: 0, Key: k, Action: unit.Action{Backend: uint32(i % 2)}}
		if err := u.conn.Send(channel.AppendRoute(nil, uint32(i), &r)); err != nil {
			b.Fatal(err)
		}
	}
	if err := u.conn.Send(channel.AppendBarrier(nil, 0xfffffff0)); err != nil {
		b.Fatal(err)
	}
	for {
		msg, err := u.conn.Recv()
		if err != nil {
			b.Fatal(err)
		}
		if h, _, _ := channel.ParseHeader(msg); h.Type == channel.TAck && h.Seq == 0xfffffff0 {
			break
		}
	}
}

// BenchmarkReloadCall1000VIPs is a whole reload of a 1,000-VIP unit
// where one VIP's weight changed, as the two processes share it: the
// control process encodes its checked configuration, the forwarder
// decodes and checks it, builds the snapshot (reusing 999 Maglev tables)
// and hands it to its worker.
func BenchmarkReloadCall1000VIPs(b *testing.B) {
	var sb strings.Builder
	sb.WriteString("vips:\n")
	for i := range 1000 {
		fmt.Fprintf(&sb, "  - {name: v%d, address: 10.%d.%d.1, port: 80, protocol: tcp, mode: halfnat, backends: [", i, 100+i/250, i%250)
		for j := range 3 {
			fmt.Fprintf(&sb, "{name: b%d, address: 10.%d.%d.%d, weight: %d},", j, 200+i/250, i%250, 10+j, j+1)
		}
		sb.WriteString("]}\n")
	}
	c, err := config.Parse([]byte(sb.String()))
	if err != nil {
		b.Fatal(err)
	}
	f, err := NewOnPorts(c, []nic.Port{newChanPort()}, zerolog.Nop())
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { f.Run(ctx); close(done) }()
	b.Cleanup(func() { cancel(); <-done })
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		w := 1 + i%2
		c.VIPs[500].Backends[0].Weight = &w
		body, err := config.Encode(c)
		if err != nil {
			b.Fatal(err)
		}
		next, err := config.Decode(body)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := f.Reload(ctx, next); err != nil {
			b.Fatal(err)
		}
	}
}
