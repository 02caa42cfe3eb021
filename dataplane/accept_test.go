package dataplane

import (
	"bytes"
	"encoding/binary"
	"sync"
	"testing"

	"github.com/tetherlb/tether/api/unit"
	"github.com/tetherlb/tether/config"
	"github.com/tetherlb/tether/dataplane/channel"
	"github.com/tetherlb/tether/dataplane/header"
	"github.com/tetherlb/tether/internal/pkttest"
	"github.com/tetherlb/tether/tables/encap"
)

// l7RigConfig is l7Rig's configuration, parsed once: the fuzz targets
// build a rig for every input, and parsing was a third of its cost, the
// default Maglev and fragment tables most of the rest (hence their small
// sizes here, which change nothing the rig's users look at): 6.9 ms a
// rig before, 1.1 ms after.
var l7RigConfig = sync.OnceValues(func() (*config.Config, error) {
	return config.Parse([]byte(`
unit:
  address4: 198.51.100.254
  address6: "2001:db8::fe"
  mac: "02:00:00:00:00:01"
forwarder:
  fragments: {datagrams: 64}
l2:
  gateway_mac: "02:00:00:00:00:fe"
hosts:
  listen: "127.0.0.1:7320"
  tls: {ca: ca.crt, cert: unit.crt, key: unit.key}
vips:
  - name: web
    address: 192.0.2.1
    port: 84
    protocol: tcp
    mode: l7
    maglev_size: 251
    backends:
      - {name: h1, address: 10.1.0.1}
      - {name: h2, address: 10.1.0.2}
  - name: web6
    address: "2001:db8::1"
    port: 84
    protocol: tcp
    mode: l7
    maglev_size: 251
    backends:
      - {name: h1, address: "2001:db8:1::1"}
      - {name: h2, address: "2001:db8:1::2"}
`))
})

// l7Rig is a pipeline with two l7 VIPs on port 84, web (IPv4, VIPs[0])
// and web6 (IPv6, VIPs[1]), and, unless alone, a control process's
// outbox.
func l7Rig(t testing.TB, alone bool) *rig {
	t.Helper()
	c, err := l7RigConfig()
	if err != nil {
		t.Fatal(err)
	}
	r := newRig(t, c.Clone())
	if !alone {
		r.p.EnableOutbox(make(chan struct{}, 1))
	}
	return r
}

// l7Family is one family's client and l7 VIP in l7Rig, and the address
// of the VIP's second host.
type l7Family struct {
	name  string
	c, v  pkttest.Endpoint
	host2 string
	l4    int // where the TCP header starts in the IP packet
}

var l7Families = []l7Family{
	{"ipv4", cl(1, 5000), vip(84), "10.1.0.2", 20},
	{"ipv6", cl6("2001:db8:7::1", 5000), vip6(84), "2001:db8:1::2", 40},
}

// forFamilies runs f for each family.
func forFamilies(t *testing.T, f func(t *testing.T, fam l7Family)) {
	for _, fam := range l7Families {
		t.Run(fam.name, func(t *testing.T) { f(t, fam) })
	}
}

// TestAcceptorAnswersInPlace: every packet of an l7 VIP without a flow
// goes to the acceptor as its IP packet and waits; the answer leaves in
// its place, turned around; nothing is recorded per connection.
func TestAcceptorAnswersInPlace(t *testing.T) { forFamilies(t, testAcceptorAnswersInPlace) }

func testAcceptorAnswersInPlace(t *testing.T, fam l7Family) {
	r := l7Rig(t, false)
	c, v := fam.c, fam.v
	in := syn(c, v)
	if tx, _, drop := r.send(in); len(tx)+len(drop) != 0 || r.p.HeldPunts() != 1 {
		t.Fatalf("SYN not held for the acceptor: tx %d drop %d", len(tx), len(drop))
	}
	// Every packet is its own punt, retransmissions too.
	r.send(in)
	_, punts := take(r)
	if len(punts) != 2 || punts[0].Reason != channel.PuntAccept || punts[0].ID == punts[1].ID {
		t.Fatalf("punts %+v: want two acceptor punts with their own IDs", punts)
	}
	if !bytes.Equal(punts[0].Frame, pkttest.IP(in, false)) {
		t.Fatal("the acceptor's punt does not carry the packet's IP bytes")
	}
	if n4, n6 := r.p.flows.Len(); n4+n6 != 0 {
		t.Fatalf("%d flow entries for a handshake: the acceptor's connections must cost the forwarder nothing", n4+n6)
	}
	// The acceptor's SYN-ACK (any IP packet) goes out in the first
	// SYN's frame, to the client's MAC.
	answer := pkttest.IP(pkttest.TCP(v, c, pkttest.SYN|pkttest.ACK, 99, 2, pkttest.Opts{MSS: 1460}), false)
	// An answer of the other family does not go in the frame.
	other := pkttest.IP(pkttest.TCP(l7Families[0].v, l7Families[0].c, pkttest.SYN|pkttest.ACK, 99, 2, pkttest.Opts{}), false)
	if c.Addr.Is4() {
		other = pkttest.IP(pkttest.TCP(l7Families[1].v, l7Families[1].c, pkttest.SYN|pkttest.ACK, 99, 2, pkttest.Opts{}), false)
	}
	r.send(in)
	_, p3 := take(r)
	if len(p3) != 1 || r.p.Answer(p3[0].ID, other) || r.p.stats.Drops[DropAcceptorUnfit] != 1 {
		t.Fatal("an answer of the other family was taken, or not counted")
	}
	if !r.p.Answer(punts[0].ID, answer) {
		t.Fatal("answer refused")
	}
	if !r.p.Answer(punts[1].ID, nil) {
		t.Fatal("empty answer refused")
	}
	if r.p.Answer(punts[1].ID, answer) {
		t.Fatal("a second answer to one punt was taken")
	}
	tx, _, drop := r.send()
	if len(tx) != 1 || len(drop) != 2 {
		t.Fatalf("tx %d drop %d; want the answer sent and the unanswered and misanswered frames dropped", len(tx), len(drop))
	}
	if !bytes.Equal(pkttest.IP(tx[0], false), answer) || !bytes.Equal(tx[0][:6], in[6:12]) || !bytes.Equal(tx[0][6:12], in[:6]) {
		t.Fatal("the answer did not leave as given, to the sender's MAC from the unit's")
	}
	if s := r.p.stats; s.ToAcceptor != 3 || s.AcceptorAnswers != 1 {
		t.Fatalf("to_acceptor %d answers %d", s.ToAcceptor, s.AcceptorAnswers)
	}
}

// TestAcceptorRefusals: what the acceptor is not given, and why.
func TestAcceptorRefusals(t *testing.T) {
	c, v := cl(1, 5000), vip(84)
	r := l7Rig(t, true)
	if _, _, drop := r.send(syn(c, v)); len(drop) != 1 || r.p.stats.Drops[DropNoAcceptor] != 1 {
		t.Fatal("without a control process the l7 VIP's SYN was not dropped as no_acceptor")
	}
	r = l7Rig(t, false)
	bad := syn(c, v)
	bad[len(bad)-1] ^= 0xff // in the TCP options: the checksum no longer verifies
	synack := pkttest.TCP(c, v, pkttest.SYN|pkttest.ACK, 1, 1, pkttest.Opts{})
	rst := pkttest.TCP(c, v, pkttest.RST, 1, 0, pkttest.Opts{})
	r.send(bad, synack, rst)
	if r.p.stats.Drops[DropTCPBadChecksum] != 1 || r.p.stats.Drops[DropTCPNotSYN] != 1 || r.p.stats.ToAcceptor != 1 {
		t.Fatalf("drops %v to_acceptor %d: want the bad checksum and the SYN-ACK dropped, the reset given to the acceptor",
			r.p.stats.Drops, r.p.stats.ToAcceptor)
	}
	// An IPv6 SYN with an extension header (destination options): the
	// acceptor takes none, and the tunnel could not carry it.
	s6 := syn(cl6("2001:db8:7::1", 5000), vip6(84))
	ext := append(append(append([]byte{}, s6[:14+40]...), header.IPProtoTCP, 0, 1, 4, 0, 0, 0, 0), s6[14+40:]...)
	ext[14+6] = header.IPProtoDstOpts
	binary.BigEndian.PutUint16(ext[14+4:], uint16(len(ext)-14-40))
	if _, _, drop := r.send(ext); len(drop) != 1 || r.p.stats.Drops[DropAcceptorUnfit] != 1 || r.p.stats.ToAcceptor != 1 {
		t.Fatalf("drops %v: want the IPv6 SYN with an extension header dropped as acceptor_unfit", r.p.stats.Drops)
	}
	// Unanswered frames free their slot.
	r.now += acceptTimeout + 1
	if _, _, drop := r.send(); len(drop) != 1 || r.p.HeldPunts() != 0 {
		t.Fatalf("%d dropped, %d still held after the acceptor's time", len(drop), r.p.HeldPunts())
	}
}

// TestMigratedFlowWaitsForItsHost: the route of a connection the
// acceptor migrated makes a tunnel flow whose packets wait until the
// host has the connection (RouteRelease), while a frame still waiting
// for the acceptor's answer is not forwarded by it.
func TestMigratedFlowWaitsForItsHost(t *testing.T) { forFamilies(t, testMigratedFlowWaitsForItsHost) }

func testMigratedFlowWaitsForItsHost(t *testing.T, fam l7Family) {
	r := l7Rig(t, false)
	c, v := fam.c, fam.v
	data := pkttest.TCP(c, v, pkttest.ACK|pkttest.PSH, 2, 100, pkttest.Opts{Payload: []byte("GET / HTTP/1.1\r\n\r\n")})
	r.send(data)
	_, punts := take(r)
	if len(punts) != 1 {
		t.Fatalf("%d punts", len(punts))
	}
	be := r.p.snap.VIPs[punts[0].VIP].Backends[1]
	// The route names the flow ID the control process gave the
	// connection (its host has the mapping from the Migrate); a worker's
	// own IDs are not the control process's to name.
	a := unit.Action{Backend: be}
	binary.BigEndian.PutUint32(a.B[:4], encap.FirstMigratedID-1)
	if err := r.p.AddRoute(&channel.Route{Op: channel.RouteAdd, Key: punts[0].Key, Action: a}, r.now); err == nil {
		t.Fatal("a route naming one of the workers' flow IDs was taken")
	}
	const id = encap.FirstMigratedID + 77
	binary.BigEndian.PutUint32(a.B[:4], id)
	if err := r.p.AddRoute(&channel.Route{Op: channel.RouteAdd, Key: punts[0].Key, Action: a}, r.now); err != nil {
		t.Fatal(err)
	}
	evs, _ := take(r)
	if len(evs) != 1 || evs[0].Action.Mode != unit.ModeTunnel || evs[0].Action.Flags&unit.FlowHeld == 0 || binary.BigEndian.Uint32(evs[0].Action.B[:4]) != id {
		t.Fatalf("events %+v: want one opened tunnel flow of flow ID %d, held for its host", evs, id)
	}
	if r.p.tunnel().Len() != 0 {
		t.Fatal("the control process's flow ID took a slot in the worker's table")
	}
	if tx, _, _ := r.send(); len(tx) != 0 || r.p.HeldPunts() != 1 {
		t.Fatal("the route forwarded the frame that waits for the acceptor's answer")
	}
	next := pkttest.TCP(c, v, pkttest.ACK, 100, 100, pkttest.Opts{Payload: []byte("more")})
	if tx, _, _ := r.send(next); len(tx) != 0 || r.p.stats.HeldForHost != 1 {
		t.Fatal("a packet of the migrated flow went before its host had the connection")
	}
	r.p.ReleaseHeld(&punts[0].Key)
	tx, _, _ := r.send()
	if len(tx) != 1 || dstOf(tx[0]).Addr().String() != fam.host2 {
		t.Fatalf("after the release: %d sent; want the held packet tunnelled to h2", len(tx))
	}
	if ports := binary.BigEndian.Uint32(pkttest.IP(tx[0], false)[fam.l4 : fam.l4+4]); ports != id {
		t.Fatalf("the tunnelled packet carries flow ID %d in its ports, want %d", ports, id)
	}
	if r.p.stats.ToAcceptor != 1 {
		t.Fatal("a packet of the routed flow went to the acceptor")
	}
}
