package forwarder

import (
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	"github.com/tetherlb/tether/api/unit"
	"github.com/tetherlb/tether/dataplane/channel"
	"github.com/tetherlb/tether/dataplane/header"
	"github.com/tetherlb/tether/internal/pkttest"
)

// TestUplinkAnswerWithRoute: an answer that carries a migration's route
// installs the route before its packet goes. The packet goes to the
// client in place of the punted request; the client's next segment
// finds the flow and waits in it (no second punt) until the release,
// then goes through the tunnel to the route's backend.
func TestUplinkAnswerWithRoute(t *testing.T) {
	fc, ids := startReloaded(t, l7UplinkConfig)
	client, vip := testEnds()
	request := pkttest.TCP(client, vip, pkttest.ACK|pkttest.PSH, 1001, 5001, pkttest.Opts{Payload: []byte("GET / HTTP/1.1\r\n\r\n")})
	fc.port.in <- request
	_, p := fc.expect(channel.TPunt)
	pu, err := channel.DecodePunt(p)
	if err != nil || pu.Reason != channel.PuntAccept {
		t.Fatalf("punt %+v, %v", pu, err)
	}
	backend := ids.Backends[unit.BackendKey{VIP: "web", Backend: "h1"}]
	r := channel.Route{Op: channel.RouteAdd, Worker: channel.AnyWorker, Key: pu.Key, Action: unit.Action{Backend: backend}}
	binary.BigEndian.PutUint32(r.Action.B[:4], 1<<31)
	ack := pkttest.L3(pkttest.TCP(vip, client, pkttest.ACK, 5001, 1019, pkttest.Opts{}))
	fc.seq++
	fc.send(channel.AppendAnswer(nil, fc.seq, &channel.Answer{Worker: pu.Worker, ID: pu.ID, Packet: ack, Route: r}))
	if dst, port := fc.packet(); dst != client.Addr || port != client.Port {
		t.Fatalf("the answer went to %s:%d, want the client", dst, port)
	}
	// The route is in: the client's next segment waits in its flow.
	fc.port.in <- pkttest.TCP(client, vip, pkttest.ACK, 1019, 5001, pkttest.Opts{})
	fc.seq++
	fc.send(channel.AppendBarrier(nil, fc.seq))
	fc.expect(channel.TAck)
	select {
	case b := <-fc.port.out:
		t.Fatalf("a segment went before the release: % x", b)
	default:
	}
	b := fc.release(pu.Key)
	if dst, _ := netip.AddrFromSlice(header.IPv4(b[header.EthernetSize:]).Dst()); dst != netip.MustParseAddr("10.1.0.1") {
		t.Fatalf("the held segment went to %s, want the backend", dst)
	}
	if s := fc.f.UplinkStats(); fc.punts() != 1 || s.Routes != 2 || s.RouteErrors != 0 || s.AnswersLate != 0 {
		t.Fatalf("uplink stats %+v, %d punts", s, fc.punts())
	}
}

// TestUplinkAnswerForwards: an answer with a route and no packet sends
// the punted segment itself on along the route (a connection another
// unit carried, continued here): the flow is a tunnel flow of a worker's
// own flow ID, which holds the segment until its host has the mapping,
// to a configured host or, by address, to one this unit does not have
// (a foreign backend); a route the forwarder refuses drops the segment
// instead of punting it again.
func TestUplinkAnswerForwards(t *testing.T) {
	fc, ids := startReloaded(t, l7UplinkConfig)
	client, vip := testEnds()
	backend := ids.Backends[unit.BackendKey{VIP: "web", Backend: "h1"}]
	foreign := unit.Action{Backend: unit.ForeignBackend}
	copy(foreign.A[:], []byte{10, 9, 9, 9})
	for _, c := range []struct {
		name   string
		action unit.Action
		to     string // "": refused
	}{
		{"configured host", unit.Action{Backend: backend}, "10.1.0.1"},
		{"foreign host", foreign, "10.9.9.9"},
		{"refused", unit.Action{Backend: 999}, ""},
	} {
		client.Port++
		fc.port.in <- pkttest.TCP(client, vip, pkttest.ACK, 7001, 9001, pkttest.Opts{Payload: []byte("a moved connection's bytes")})
		_, p := fc.expect(channel.TPunt)
		pu, err := channel.DecodePunt(p)
		if err != nil || pu.Reason != channel.PuntAccept {
			t.Fatalf("%s: punt %+v, %v", c.name, pu, err)
		}
		r := channel.Route{Op: channel.RouteAdd, Worker: channel.AnyWorker, Key: pu.Key, Action: c.action}
		fc.seq++
		fc.send(channel.AppendAnswer(nil, fc.seq, &channel.Answer{Worker: pu.Worker, ID: pu.ID, Route: r}))
		fc.seq++
		fc.send(channel.AppendBarrier(nil, fc.seq))
		fc.expect(channel.TAck)
		select {
		case b := <-fc.port.out:
			t.Fatalf("%s: a segment went before its host had the mapping: % x", c.name, b)
		default:
		}
		if c.to == "" {
			continue
		}
		b := fc.release(pu.Key)
		if dst, _ := netip.AddrFromSlice(header.IPv4(b[header.EthernetSize:]).Dst()); dst != netip.MustParseAddr(c.to) {
			t.Fatalf("%s: the forwarded segment went to %s, want %s", c.name, dst, c.to)
		}
	}
	// Whatever the refused route's segment became, it is in the counters
	// once the workers have run a batch since.
	fc.port.in <- clientSYN("203.0.113.7", 40100, "192.0.2.1", 80)
	fc.expect(channel.TPunt)
	if s := fc.f.UplinkStats(); fc.punts() != 4 || s.Routes != 5 || s.RouteErrors != 1 || s.AnswersLate != 0 {
		t.Fatalf("uplink stats %+v, %d punts", s, fc.punts())
	}
}

// release lets the forwarder send what it holds for k's flow (the host
// has its mapping) and returns the frame that goes.
func (fc *fakeControl) release(k unit.FlowKey) []byte {
	fc.t.Helper()
	fc.seq++
	fc.send(channel.AppendRoute(nil, fc.seq, &channel.Route{Op: channel.RouteRelease, Worker: channel.AnyWorker, Key: k}))
	select {
	case b := <-fc.port.out:
		return b
	case <-time.After(wait):
		fc.t.Fatal("the held segment did not go after the release")
	}
	return nil
}
