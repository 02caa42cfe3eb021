package forwarder

import (
	"net/netip"
	"testing"
	"time"

	"github.com/tetherlb/tether/api/unit"
	"github.com/tetherlb/tether/dataplane/channel"
	"github.com/tetherlb/tether/dataplane/header"
	"github.com/tetherlb/tether/dataplane/syncookie"
)

const l7UplinkConfig = `
unit: {name: u1, address4: 198.51.100.254, mac: "02:00:00:00:00:01"}
l2: {gateway_mac: "02:00:00:00:00:fe"}
hosts:
  listen: "127.0.0.1:7320"
  tls: {ca: ca.crt, cert: unit.crt, key: unit.key}
vips:
  - name: web
    address: 192.0.2.1
    port: 80
    protocol: tcp
    mode: l7
    backends: [{name: h1, address: 10.1.0.1}]
`

// TestUplinkSYNKeys: before the control process sends keys, an l7 VIP's
// SYN is punted to the acceptor; once the workers have them, it is
// answered in place with a SYN-ACK under the key sent; a malformed set
// is refused and counted. The forwarder gives the set it took back to a
// control process that asks (CallSYNKeys), exactly as it was sent.
func TestUplinkSYNKeys(t *testing.T) {
	fc, ids := startReloaded(t, l7UplinkConfig)
	var held unit.SYNKeysReply
	if e := fc.callJSON(unit.CallSYNKeys, nil, &held); e != "" || len(held.Keys) != 0 {
		t.Fatalf("keys held before any were sent: %q, error %q", held.Keys, e)
	}
	fc.port.in <- clientSYN("203.0.113.7", 40000, "192.0.2.1", 80)
	if _, p := fc.expect(channel.TPunt); p == nil {
		t.Fatal("no punt")
	}
	now := time.Now()
	every := time.Hour // no epoch ends during the test
	k := channel.SYNKey{VIP: ids.VIPs["web"], Addr: netip.MustParseAddr("192.0.2.1"), Port: 80, Every: uint64(every), Epoch: syncookie.Epoch(now, every),
		Cur: [16]byte{7}, Next: [16]byte{8}, HasNext: true, MSS: 1400, WScale: 7, Window: 4096}
	bad := k
	bad.Window = 0
	fc.seq++
	fc.send(channel.AppendSYNKeys(nil, fc.seq, []channel.SYNKey{bad}))
	fc.seq++
	fc.send(channel.AppendSYNKeys(nil, fc.seq, []channel.SYNKey{k}))
	fc.seq++
	fc.send(channel.AppendBarrier(nil, fc.seq))
	fc.expect(channel.TAck)
	fc.port.in <- clientSYN("203.0.113.7", 40001, "192.0.2.1", 80)
	var b []byte
	select {
	case b = <-fc.port.out:
	case <-time.After(wait):
		t.Fatal("the SYN was not answered")
	}
	ip := header.IPv4(b[header.EthernetSize:])
	tcp := header.TCP(ip[header.IPv4MinSize:])
	src, _ := netip.AddrFromSlice(ip.Src())
	key := &syncookie.Key{}
	if syncookie.Epoch(time.Now(), every) == k.Epoch+1 {
		*key, _ = syncookie.NewKey(k.Epoch+1, k.Next)
	} else {
		*key, _ = syncookie.NewKey(k.Epoch, k.Cur)
	}
	tu := syncookie.Tuple{Client: netip.MustParseAddr("203.0.113.7"), VIP: netip.MustParseAddr("192.0.2.1"), ClientPort: 40001, VIPPort: 80}
	var m syncookie.MAC
	if _, ok := m.Check(key, &syncookie.Key{}, &tu, 1, tcp.Seq()); !ok || src != netip.MustParseAddr("192.0.2.1") || tcp.Flags() != 0x12 {
		t.Fatalf("answer from %s flags %#x: cookie valid %v", src, tcp.Flags(), ok)
	}
	if e := fc.callJSON(unit.CallSYNKeys, nil, &held); e != "" {
		t.Fatal(e)
	}
	if got, err := channel.DecodeSYNKeys(held.Keys); err != nil || len(got) != 1 || got[0] != k {
		t.Fatalf("keys held: %+v, %v; want the set taken, %+v", got, err, k)
	}
	if s := fc.f.UplinkStats(); s.SYNKeys != 1 || s.BadMessages != 1 || fc.punts() != 1 {
		t.Fatalf("uplink stats %+v, %d punts", s, fc.punts())
	}
	if r := fc.report(); r.SYNAnswers != 1 || r.ToAcceptor != 1 {
		t.Fatalf("report: syn_answers %d to_acceptor %d", r.SYNAnswers, r.ToAcceptor)
	}
}
