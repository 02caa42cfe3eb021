package control

import (
	"context"
	"encoding/binary"
	"testing"
	"time"

	"github.com/rs/zerolog"

	pb "github.com/tetherlb/tether/api/hostpb"
	"github.com/tetherlb/tether/api/unit"
	"github.com/tetherlb/tether/config"
	"github.com/tetherlb/tether/ctlplane/l7/request"
	"github.com/tetherlb/tether/ctlplane/l7/rules"
	"github.com/tetherlb/tether/dataplane/channel"
)

// TestMigrationEnds: a host's end notice counts only for the migration
// it names, from that host, with that flow's tuple (a notice about an
// earlier control process's connection must not end a live one); an
// ended connection leaves the table endedLinger later, one the host
// never answered migrateTimeout after it was sent.
func TestMigrationEnds(t *testing.T) {
	c := &Control{log: zerolog.Nop(), l7part: newL7Part()}
	key := unit.FlowKey{Src: [16]byte{10, 0, 1, 2}, Dst: [16]byte{192, 0, 2, 10}, SrcPort: 40000, DstPort: 80, Proto: 6}
	now := time.Now()
	l := c.l7part
	l.migrations[7] = &migration{id: 7, key: key, host: 1, sent: now, uploaded: true}
	l.migrations[8] = &migration{id: 8, key: key, host: 2, sent: now}
	tuple := &pb.Tuple{Proto: pb.Proto_PROTO_TCP, Client: []byte{10, 0, 1, 2}, ClientPort: 40000, Vip: []byte{192, 0, 2, 10}, VipPort: 80}
	other := &pb.Tuple{Proto: pb.Proto_PROTO_TCP, Client: []byte{10, 0, 1, 2}, ClientPort: 40001, Vip: []byte{192, 0, 2, 10}, VipPort: 80}
	c.onMigrationEnded(1, &pb.MigrationEnded{Id: 7, Tuple: other, Reason: pb.EndReason_END_REASON_CLOSED})
	c.onMigrationEnded(2, &pb.MigrationEnded{Id: 7, Tuple: tuple, Reason: pb.EndReason_END_REASON_CLOSED})
	c.onMigrationEnded(1, &pb.MigrationEnded{Id: 9, Tuple: tuple, Reason: pb.EndReason_END_REASON_CLOSED})
	if v := c.L7(context.Background()); v.Stats.Ended != 0 || v.Stats.UnknownAnswers != 3 || v.Live != 2 {
		t.Fatalf("after notices with another tuple, host or ID: %+v", v.Stats)
	}
	c.onMigrationEnded(1, &pb.MigrationEnded{Id: 7, Tuple: tuple, Reason: pb.EndReason_END_REASON_CLOSED})
	if v := c.L7(context.Background()); v.Stats.Ended != 1 || v.Live != 1 {
		t.Fatalf("after the right notice: ended %d, live %d", v.Stats.Ended, v.Live)
	}
	c.expireL7(now.Add(endedLinger - time.Second))
	if len(l.migrations) != 2 {
		t.Fatal("an ended connection's route went before endedLinger")
	}
	c.expireL7(time.Now().Add(max(endedLinger, migrateTimeout) + time.Second))
	if v := c.L7(context.Background()); len(l.migrations) != 0 || v.Stats.UploadTimeouts != 1 {
		t.Fatalf("%d migrations left, %d timeouts; want none left and the unanswered one timed out", len(l.migrations), v.Stats.UploadTimeouts)
	}
}

// TestAgedOutMigrationsAreForgotten: a migration its host took whose
// flow the forwarder ages out leaves the table even when its end notice
// never came (lost with the host's stream); one the host has not
// acknowledged yet is left to its timeout, as is one whose tuple's
// expired flow was an earlier connection's (another flow ID), and a flow
// of another tuple touches nothing.
func TestAgedOutMigrationsAreForgotten(t *testing.T) {
	c := &Control{log: zerolog.Nop(), l7part: newL7Part(), inv: newInventory()}
	l := c.l7part
	now := time.Now()
	keyOf := func(port uint16) unit.FlowKey {
		return unit.FlowKey{Src: [16]byte{10, 0, 1, 2}, Dst: [16]byte{192, 0, 2, 10}, SrcPort: port, DstPort: 80, Proto: 6}
	}
	var opened []channel.FlowEvent
	for id, m := range map[uint64]*migration{
		1: {key: keyOf(40001), uploaded: true},
		2: {key: keyOf(40002), uploaded: true, ended: now},
		3: {key: keyOf(40003)},
		4: {key: keyOf(40004), uploaded: true},
		5: {key: keyOf(40005), uploaded: true},
	} {
		m.id, m.host, m.sent, m.flow = id, 1, now, 1<<31|uint32(id)
		l.migrations[id] = m
		l.byKey[m.key] = id
		e := channel.FlowEvent{Kind: channel.FlowOpened, Key: m.key, Action: unit.Action{Mode: unit.ModeTunnel}}
		flow := m.flow
		if id == 5 {
			flow = 1<<31 | 99 // the tuple's earlier connection's flow
		}
		binary.BigEndian.PutUint32(e.Action.B[:4], flow)
		opened = append(opened, e)
	}
	c.inv.apply(opened)
	expired := func(port uint16) channel.FlowEvent {
		return channel.FlowEvent{Kind: channel.FlowExpired, Key: keyOf(port)}
	}
	c.migratedFlowsExpired([]channel.FlowEvent{expired(40001), expired(40002), expired(40003),
		{Kind: channel.FlowClosed, Key: keyOf(40004)}, expired(40005), expired(40006)})
	if _, ok := l.migrations[1]; ok {
		t.Error("an aged-out migration without its end notice stayed")
	}
	if _, ok := l.migrations[2]; ok {
		t.Error("an ended migration whose flow aged out stayed")
	}
	if l.migrations[3] == nil || l.migrations[4] == nil {
		t.Error("a migration not yet acknowledged, or whose flow only closed, was forgotten")
	}
	if l.migrations[5] == nil {
		t.Error("the expiry of the tuple's earlier flow forgot the newer connection's migration")
	}
	if v := c.L7(context.Background()); v.Stats.AgedOut != 1 || v.Live != 3 {
		t.Fatalf("aged out %d, live %d; want 1 and 3", v.Stats.AgedOut, v.Live)
	}
	if len(l.byKey) != 3 {
		t.Fatalf("byKey holds %d tuples, want 3", len(l.byKey))
	}
}

// TestReloadKeepsTheAcceptor: a reload that changes a VIP's rules or
// weights keeps its acceptor (handshakes in progress and their cookies
// stay valid) and takes the new rules; one that changes its limits
// makes a new acceptor.
func TestReloadKeepsTheAcceptor(t *testing.T) {
	parse := func(weight, maxRequest, prefix string) *config.Config {
		c, err := config.Parse([]byte(`
unit: {address4: 198.51.100.254}
hosts: {listen: "198.51.100.254:7320", tls: {ca: /c, cert: /c, key: /k}}
vips:
  - name: web
    address: 192.0.2.10
    port: 80
    protocol: tcp
    mode: l7
    l7: {max_request: ` + maxRequest + `, rules: [{name: r, path_prefix: ` + prefix + `, backends: [a]}]}
    backends:
      - {name: a, address: 10.1.0.1, weight: ` + weight + `}
      - {name: b, address: 10.1.0.2}
`))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	c := &Control{log: zerolog.Nop(), l7part: newL7Part()}
	if err := c.syncL7(parse("1", "16KiB", "/a/")); err != nil {
		t.Fatal(err)
	}
	first := c.l7part.vips["web"]
	if err := c.syncL7(parse("5", "16KiB", "/other/")); err != nil {
		t.Fatal(err)
	}
	second := c.l7part.vips["web"]
	if second.acc != first.acc || second.rules == first.rules || second.cfg.L7.Rules[0].PathPrefix != "/other/" {
		t.Fatal("a reload of rules and weights did not keep the acceptor, or kept the old rules")
	}
	if err := c.syncL7(parse("5", "32KiB", "/other/")); err != nil {
		t.Fatal(err)
	}
	if c.l7part.vips["web"].acc == second.acc {
		t.Fatal("a new max_request kept the old acceptor")
	}
}

// TestReusedTupleKeepsItsRoute: a client that reuses its port while its
// ended connection's route lingers makes a new connection on the same
// tuple; the old connection's expiry must leave the new one's record
// (and so its route) alone.
func TestReusedTupleKeepsItsRoute(t *testing.T) {
	c := &Control{log: zerolog.Nop(), l7part: newL7Part()}
	key := unit.FlowKey{Src: [16]byte{10, 0, 1, 2}, Dst: [16]byte{192, 0, 2, 10}, SrcPort: 40000, DstPort: 80, Proto: 6}
	l := c.l7part
	now := time.Now()
	l.migrations[1] = &migration{id: 1, key: key, host: 1, sent: now, uploaded: true, ended: now}
	l.migrations[2] = &migration{id: 2, key: key, host: 1, sent: now, uploaded: true}
	l.byKey[key] = 2
	if l.forget(l.migrations[1]) {
		t.Fatal("the old connection claimed the tuple a newer one holds")
	}
	if l.byKey[key] != 2 || l.migrations[2] == nil {
		t.Fatal("forgetting the old connection dropped the new one's record")
	}
	l.migrations[1] = &migration{id: 1, key: key, host: 1, sent: now, uploaded: true, ended: now}
	c.expireL7(now.Add(endedLinger + time.Second))
	if l.byKey[key] != 2 || l.migrations[2] == nil || l.migrations[1] != nil {
		t.Fatal("the old connection's expiry touched the new one")
	}
}

// TestDecidePrefersListeningHosts: hosts that said nothing listens for
// the VIP are passed over while a listening host or router can take the
// connection, and chosen as the last resort (counted) when nothing else
// can.
func TestDecidePrefersListeningHosts(t *testing.T) {
	vip := func(handoff string) *l7VIP {
		c, err := config.Parse([]byte(`
unit: {address4: 198.51.100.254}
hosts: {listen: "198.51.100.254:7320", tls: {ca: /c, cert: /c, key: /k}}
vips:
  - name: web
    address: 192.0.2.10
    port: 80
    protocol: tcp
    mode: l7
    l7:
      handoff: ` + handoff + `
      routers: [r]
      rules:
        - {name: to-a, path_prefix: /a/, backends: [a]}
        - {name: via, path_prefix: /p/, proxy: true}
    backends:
      - {name: a, address: 10.1.0.1}
      - {name: b, address: 10.1.0.2}
      - {name: r, address: 10.1.0.3}
`))
		if err != nil {
			t.Fatal(err)
		}
		ctl := &Control{log: zerolog.Nop(), l7part: newL7Part()}
		if err := ctl.syncL7(c); err != nil {
			t.Fatal(err)
		}
		return ctl.l7part.vips["web"]
	}
	cand := func(name string) rules.Candidate {
		return rules.Candidate{Name: name, Key: unit.BackendKey{VIP: "web", Backend: name}, Weight: 1}
	}
	cands := func(deaf ...string) *l7Candidates {
		cs := &l7Candidates{hosts: []rules.Candidate{cand("a"), cand("b")}, routers: []rules.Candidate{cand("r")}, deaf: map[unit.BackendKey]bool{}}
		for _, d := range deaf {
			cs.deaf[unit.BackendKey{VIP: "web", Backend: d}] = true
		}
		return cs
	}
	type want struct {
		name                string // "*": a or b
		proxy, notListening bool
	}
	for _, c := range []struct {
		handoff, path string
		deaf          []string
		want          want
	}{
		{"migrate", "/a/x", nil, want{name: "a"}},
		{"migrate", "/x", []string{"a"}, want{name: "b"}},
		{"migrate", "/x", []string{"b"}, want{name: "a"}},
		{"migrate", "/a/x", []string{"a"}, want{name: "a", notListening: true}},
		{"migrate", "/x", []string{"a", "b"}, want{name: "*", notListening: true}},
		{"migrate-or-proxy", "/a/x", []string{"a"}, want{name: "r", proxy: true}},
		{"migrate-or-proxy", "/a/x", []string{"a", "r"}, want{name: "r", proxy: true, notListening: true}},
		{"migrate-or-proxy", "/x", []string{"a"}, want{name: "b"}},
		{"migrate", "/p/x", []string{"r"}, want{name: "r", proxy: true, notListening: true}},
		{"migrate", "/p/x", nil, want{name: "r", proxy: true}},
	} {
		v := vip(c.handoff)
		// Many clients (hashes), one answer each: the listening hosts'
		// preference holds for every one, not by luck of the hash.
		for h := range uint64(64) {
			req := request.Request{Method: "GET", Path: c.path, Host: "www.example"}
			d := v.decide(&req, cands(c.deaf...), h*0x9e3779b97f4a7c15)
			got := want{name: d.choice.Name, proxy: d.proxy, notListening: d.notListening}
			if c.want.name == "*" && got.name != "r" {
				got.name = "*" // either host
			}
			if !d.ok || got != c.want {
				t.Fatalf("%s %s with %v not listening, hash %d: %+v (ok %v), want %+v", c.handoff, c.path, c.deaf, h, got, d.ok, c.want)
			}
		}
	}
}
