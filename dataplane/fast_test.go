package dataplane

import (
	"bytes"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/tetherlb/tether/config"
	"github.com/tetherlb/tether/internal/pkttest"
	"github.com/tetherlb/tether/nic"
)

// TestEstablishedPathIsTheGeneralOne sends the same conversations through
// a pipeline with the established IPv4 path (forward4) and one without
// it, and wants the same bytes out, on the same lists, and the same
// counters: forward4 is only a shorter way to the general path's result.
// Each conversation opens a flow, is answered by the backend where the
// mode has replies, carries data both ways, and ends with packets
// forward4 must leave to the general path (TTL running out, FIN).
func TestEstablishedPathIsTheGeneralOne(t *testing.T) {
	// The test unit's VIPs (TCP, ports 80-83), and UDP ones of the
	// translating modes on 90-92.
	text := fmt.Sprintf(testConfig, 1024, "1024-65535")
	text = strings.Replace(text, "  - name: halfnat6", `  - {name: unat, address: 192.0.2.1, port: 90, protocol: udp, mode: nat, snat: [198.51.100.1], backends: *b4}
  - {name: uhalfnat, address: 192.0.2.1, port: 91, protocol: udp, mode: halfnat, backends: *b4}
  - {name: utunnel, address: 192.0.2.1, port: 92, protocol: udp, mode: tunnel, backends: *b4}
  - name: halfnat6`, 1)
	c, err := config.Parse([]byte(text))
	if err != nil {
		t.Fatal(err)
	}
	fast, general := newRig(t, c), newRig(t, c)
	general.generalOnly()

	// send gives both pipelines the same frames and wants the same
	// result; it returns the frames sent.
	send := func(what string, frames ...[]byte) [][]byte {
		t.Helper()
		tx, pass, drop := fast.send(frames...)
		gtx, gpass, gdrop := general.send(frames...)
		for _, l := range []struct {
			name      string
			got, want [][]byte
		}{{"sent", tx, gtx}, {"passed", pass, gpass}, {"dropped", drop, gdrop}} {
			if len(l.got) != len(l.want) {
				t.Fatalf("%s: %d frames %s, the general path %d", what, len(l.got), l.name, len(l.want))
			}
			for i := range l.got {
				if !bytes.Equal(l.got[i], l.want[i]) {
					t.Fatalf("%s: frame %d %s differs from the general path's:\ngot  % x\nwant % x", what, i, l.name, l.got[i], l.want[i])
				}
			}
		}
		return tx
	}
	ck := pkttest.Checker{}
	for i, v := range []struct {
		name    string
		port    uint16
		udp     bool
		replies bool
	}{
		{"nat", 80, false, true}, {"halfnat", 81, false, true}, {"tunnel", 82, false, false}, {"ipip", 83, false, false},
		{"udp nat", 90, true, true}, {"udp halfnat", 91, true, true}, {"udp tunnel", 92, true, false},
	} {
		c := cl(10+i, uint16(4000+i))
		pkt := func(src, dst pkttest.Endpoint, flags int, o pkttest.Opts) []byte {
			if v.udp {
				return pkttest.UDP(src, dst, o)
			}
			return pkttest.TCP(src, dst, flags, 1, 1, o)
		}
		data := pkttest.Opts{Payload: []byte("some data")}
		out := send(v.name+" open", pkt(c, vip(v.port), pkttest.SYN, pkttest.Opts{MSS: 1460}))
		if len(out) != 1 {
			t.Fatalf("%s: the opening packet was not sent", v.name)
		}
		var replies [][]byte
		if v.replies {
			// The backend answers the address and port it was sent from.
			be := pkttest.Endpoint{MAC: pkttest.MustMAC("02:00:00:00:0b:01"), Addr: dstOf(out[0]).Addr(), Port: dstOf(out[0]).Port()}
			to := pkttest.Endpoint{MAC: pkttest.MustMAC(unitMAC), Addr: srcOf(out[0]).Addr(), Port: srcOf(out[0]).Port()}
			send(v.name+" answer", pkt(be, to, pkttest.SYN|pkttest.ACK, pkttest.Opts{}))
			replies = [][]byte{pkt(be, to, pkttest.ACK, data), pkt(be, to, pkttest.ACK|pkttest.PSH, pkttest.Opts{Payload: []byte("odd")})}
		}
		// A batch of data both ways, then one where the TTL runs out
		// mid-batch, then the close.
		batch := append([][]byte{pkt(c, vip(v.port), pkttest.ACK, data), pkt(c, vip(v.port), pkttest.ACK, pkttest.Opts{Payload: []byte("odd"), TTL: 2})}, replies...)
		for _, f := range send(v.name+" data", batch...) {
			if err := ck.Check(f); err != nil {
				t.Errorf("%s: %v", v.name, err)
			}
		}
		send(v.name+" TTL", pkt(c, vip(v.port), pkttest.ACK, data), pkt(c, vip(v.port), pkttest.ACK, pkttest.Opts{TTL: 1}), pkt(c, vip(v.port), pkttest.ACK, data))
		send(v.name+" close", pkt(c, vip(v.port), pkttest.FIN|pkttest.ACK, data), pkt(c, vip(v.port), pkttest.ACK, data))
	}
	if got, want := fast.p.Stats(), general.p.Stats(); !reflect.DeepEqual(got, want) {
		t.Errorf("counters differ from the general path's:\ngot  %+v\nwant %+v", got, want)
	}
}

// The established path's frames are the batch's frames, appended to the
// output in one copy: a batch where that ends part-way keeps its order.
func TestBatchOrderKeptWhenTheEstablishedPathEnds(t *testing.T) {
	r := newRig(t, loadConfig(t, 1024, "1024-65535"))
	var opens, batch [][]byte
	for i := range 4 {
		c := cl(20+i, 5000)
		opens = append(opens, syn(c, vip(81)))
		batch = append(batch, pkttest.TCP(c, vip(81), pkttest.ACK, 2, 2, pkttest.Opts{ID: uint16(i)}))
	}
	r.send(opens...)
	// The third frame opens a new flow: the general path.
	batch[2] = pkttest.TCP(cl(30, 5000), vip(81), pkttest.SYN, 1, 0, pkttest.Opts{ID: 2})
	frames := make([]nic.Frame, len(batch))
	for i := range batch {
		frames[i] = frame(batch[i])
	}
	r.out.Reset()
	r.p.Process(r.now, frames, r.out)
	if len(r.out.TX) != len(batch) {
		t.Fatalf("%d frames sent, want %d", len(r.out.TX), len(batch))
	}
	for i, f := range r.out.TX {
		if id := pkttest.IP(f.Data(), false)[5]; int(id) != i {
			t.Errorf("frame %d of the output is the batch's frame %d", i, id)
		}
	}
}
