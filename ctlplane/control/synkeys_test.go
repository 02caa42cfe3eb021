package control

import (
	"net/netip"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tetherlb/tether/api/unit"
	"github.com/tetherlb/tether/config"
	"github.com/tetherlb/tether/dataplane/channel"
	"github.com/tetherlb/tether/dataplane/syncookie"
)

// linkPair is a forwarder link of the control process's and the
// forwarder's end of it.
func linkPair(t *testing.T) (*fwdLink, *channel.Conn) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ch.sock")
	l, err := channel.Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	accepted := make(chan *channel.Conn, 1)
	go func() {
		if conn, err := channel.Accept(l); err == nil {
			accepted <- conn
		}
	}()
	fwd, err := channel.Dial(path)
	if err != nil {
		t.Fatal(err)
	}
	var ctl *channel.Conn
	select {
	case ctl = <-accepted:
	case <-time.After(wait):
		t.Fatal("no connection")
	}
	t.Cleanup(func() { fwd.Close(); ctl.Close() })
	return newFwdLink(ctl, channel.Hello{}), fwd
}

// recvType reads the next message the forwarder's end gets, which must
// be of type typ, and returns its payload.
func recvType(t *testing.T, fwd *channel.Conn, typ channel.Type) []byte {
	t.Helper()
	m, err := fwd.Recv()
	if err != nil {
		t.Fatal(err)
	}
	h, p, err := channel.ParseHeader(m)
	if err != nil || h.Type != typ {
		t.Fatalf("%s, %v; want %s", h.Type, err, typ)
	}
	return p
}

func recvSYNKeys(t *testing.T, fwd *channel.Conn) []channel.SYNKey {
	t.Helper()
	keys, err := channel.DecodeSYNKeys(recvType(t, fwd, channel.TSYNKeys))
	if err != nil {
		t.Fatal(err)
	}
	return keys
}

// TestPushSYNKeys: the forwarder gets each l7 VIP's keys under its ID,
// with the acceptor's SYN-ACK parameters; again when an epoch turns, the
// key handed out as next becoming the current one; not within an
// epoch; and an empty set once the last l7 VIP goes.
func TestPushSYNKeys(t *testing.T) {
	parse := func(l7 bool) *config.Config {
		mode := "halfnat"
		if l7 {
			mode = "l7\n    l7: {max_request: 8KiB}"
		}
		c, err := config.Parse([]byte(`
unit: {address4: 198.51.100.254, address6: "2001:db8::fe"}
hosts: {listen: "198.51.100.254:7320", tls: {ca: /c, cert: /c, key: /k}}
vips:
  - name: web
    address: 192.0.2.10
    port: 80
    protocol: tcp
    mode: ` + mode + `
    backends:
      - {name: a, address: 10.1.0.1}
  - name: web6
    address: "2001:db8::10"
    port: 80
    protocol: tcp
    mode: ` + mode + `
    backends:
      - {name: a, address: "2001:db8:1::1"}
`))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	c := &Control{log: zerolog.Nop(), l7part: newL7Part(), ids: unit.ReloadReply{VIPs: map[string]uint32{"web": 3, "web6": 4}}}
	if err := c.syncL7(parse(true)); err != nil {
		t.Fatal(err)
	}
	lk, fwd := linkPair(t)
	now := time.Unix(1_800_000_000, 0)
	c.pushSYNKeys(lk, now, true)
	keys := recvSYNKeys(t, fwd)
	e := syncookie.Epoch(now, 64*time.Second)
	if len(keys) != 2 {
		t.Fatalf("%d keys", len(keys))
	}
	slices.SortFunc(keys, func(a, b channel.SYNKey) int { return int(a.VIP) - int(b.VIP) })
	// The IPv6 VIP's SYN-ACK announces the MSS of its family's headers.
	if k6 := keys[1]; k6.VIP != 4 || k6.Addr != netip.MustParseAddr("2001:db8::10") || k6.MSS != 1440 || k6.Cur == keys[0].Cur {
		t.Fatalf("IPv6 VIP's keys %+v", k6)
	}
	k := keys[0]
	if k.VIP != 3 || k.Addr != netip.MustParseAddr("192.0.2.10") || k.Port != 80 || k.Every != uint64(64*time.Second) || k.Epoch != e || !k.HasNext ||
		k.MSS != 1460 || k.WScale != 7 || k.Window != 8192 || k.Cur == k.Next {
		t.Fatalf("keys %+v", k)
	}
	c.pushSYNKeys(lk, now.Add(time.Second), false) // same epoch: nothing
	c.pushSYNKeys(lk, now.Add(64*time.Second), false)
	k2 := recvSYNKeys(t, fwd)
	slices.SortFunc(k2, func(a, b channel.SYNKey) int { return int(a.VIP) - int(b.VIP) })
	if k2[0].Epoch != e+1 || k2[0].Cur != k.Next || k2[0].TSOffset != k.TSOffset {
		t.Fatalf("after the epoch turned: %+v", k2)
	}
	if err := c.syncL7(parse(false)); err != nil {
		t.Fatal(err)
	}
	c.pushSYNKeys(lk, now.Add(65*time.Second), true)
	if keys := recvSYNKeys(t, fwd); len(keys) != 0 {
		t.Fatalf("%d keys for no l7 VIP", len(keys))
	}
	c.pushSYNKeys(lk, now.Add(66*time.Second), true) // nothing held: nothing sent
	if c.l7part.stats.SYNKeysSent != 3 {
		t.Fatalf("%d sets sent, want 3", c.l7part.stats.SYNKeysSent)
	}
}
