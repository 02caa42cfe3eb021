package control

import (
	"context"
	"net/netip"
	"sync/atomic"
	"testing"

	"github.com/rs/zerolog"

	"github.com/tetherlb/tether/api/unit"
	"github.com/tetherlb/tether/config"
	"github.com/tetherlb/tether/dataplane/channel"
	"github.com/tetherlb/tether/internal/pkttest"
)

// recvAnswer reads the next message the forwarder's end gets, which must
// be an answer.
func recvAnswer(t *testing.T, fwd *channel.Conn) channel.Answer {
	t.Helper()
	a, err := channel.DecodeAnswer(recvType(t, fwd, channel.TAnswer))
	if err != nil {
		t.Fatal(err)
	}
	a.Packet = append([]byte(nil), a.Packet...)
	return a
}

// TestMovedConnections: a segment of an l7 VIP that no connection of
// the acceptor's claims is, in a cluster, looked up in the atom
// manager: found for this VIP, it goes on along the route (an answer
// with the route and no packet) and is counted moved_in; a second
// segment of the same connection punted meanwhile is dropped, not
// looked up again; not found, or found for another VIP, or without a
// cluster, it is reset as before.
func TestMovedConnections(t *testing.T) {
	cfg, err := config.Parse([]byte(`
unit: {address4: 198.51.100.254}
hosts: {listen: "198.51.100.254:7320", tls: {ca: /c, cert: /c, key: /k}}
vips:
  - name: web
    address: 192.0.2.10
    port: 80
    protocol: tcp
    mode: l7
    backends:
      - {name: a, address: 10.1.0.1}
`))
	if err != nil {
		t.Fatal(err)
	}
	c := &Control{log: zerolog.Nop(), l7part: newL7Part(), lookups: make(chan struct{}, maxLookups),
		ids: unit.ReloadReply{VIPs: map[string]uint32{"web": 3}}, vipNames: map[uint32]string{3: "web"}}
	if err := c.syncL7(cfg); err != nil {
		t.Fatal(err)
	}
	lk, fwd := linkPair(t)
	vip := pkttest.EP("02:00:00:00:00:01", "192.0.2.10:80")
	segment := func(port uint16) channel.Punt {
		client := pkttest.EP("02:00:00:00:00:fe", netip.AddrPortFrom(netip.MustParseAddr("203.0.113.7"), port).String())
		frame := pkttest.L3(pkttest.TCP(client, vip, pkttest.ACK, 7001, 9001, pkttest.Opts{}))
		k := unit.FlowKey{SrcPort: port, DstPort: 80, Proto: 6}
		copy(k.Src[:], []byte{203, 0, 113, 7})
		copy(k.Dst[:], []byte{192, 0, 2, 10})
		return channel.Punt{Worker: 1, Reason: channel.PuntAccept, VIP: 3, ID: uint32(port), Key: k, Frame: frame}
	}
	stats := func() unit.L7Stats { return c.L7(context.Background()).Stats }
	isReset := func(a channel.Answer) bool { return len(a.Packet) > 33 && a.Packet[33]&0x04 != 0 }

	// Without a cluster: reset.
	pu := segment(40001)
	c.acceptPunt(lk, &pu)
	if a := recvAnswer(t, fwd); a.ID != pu.ID || !isReset(a) || a.Route.Op != 0 {
		t.Fatalf("no cluster: answer %+v, want a reset", a)
	}

	var asked atomic.Int32
	release := make(chan struct{})
	c.mu.Lock()
	c.flowLookup = func(_ context.Context, k *unit.FlowKey) (string, unit.Action, bool, error) {
		asked.Add(1)
		switch k.SrcPort {
		case 40002:
			<-release // the second segment comes while this one is looked up
			return "web", unit.Action{Backend: 5}, true, nil
		case 40003:
			return "other", unit.Action{Backend: 6}, true, nil
		}
		return "", unit.Action{}, false, nil
	}
	c.mu.Unlock()

	first, second := segment(40002), segment(40002)
	second.ID++
	c.acceptPunt(lk, &first)
	c.acceptPunt(lk, &second)
	if a := recvAnswer(t, fwd); a.ID != second.ID || len(a.Packet) != 0 || a.Route.Op != 0 {
		t.Fatalf("a second segment during the lookup: %+v, want it dropped", a)
	}
	close(release)
	a := recvAnswer(t, fwd)
	if a.ID != first.ID || len(a.Packet) != 0 || a.Route.Op != channel.RouteAdd || a.Route.Key != first.Key || a.Route.Worker != 1 || a.Route.Action.Backend != 5 {
		t.Fatalf("a moved connection's segment: %+v, want its route and no packet", a)
	}
	// Punted before the route took: still dropped, still not looked up.
	late := segment(40002)
	c.acceptPunt(lk, &late)
	if a := recvAnswer(t, fwd); len(a.Packet) != 0 || a.Route.Op != 0 {
		t.Fatalf("a segment punted before the route: %+v", a)
	}
	if n := asked.Load(); n != 1 || stats().MovedIn != 1 {
		t.Fatalf("%d lookups, moved_in %d; want one of each", n, stats().MovedIn)
	}

	for _, port := range []uint16{40003, 40004} { // another VIP's route; none
		pu := segment(port)
		c.acceptPunt(lk, &pu)
		if a := recvAnswer(t, fwd); a.ID != pu.ID || !isReset(a) || a.Route.Op != 0 {
			t.Fatalf("port %d: answer %+v, want a reset", port, a)
		}
	}
	if s := stats(); s.MovedIn != 1 {
		t.Fatalf("moved_in %d", s.MovedIn)
	}
	if n := c.l7part.vips["web"].acc.Stats().Counters["bad_cookie"]; n != 3 {
		t.Fatalf("bad_cookie %d, want the three resets'", n)
	}
}
