package atoms

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/tetherlb/tether/api/atompb"
	"github.com/tetherlb/tether/internal/mtls"
)

// clock is a test clock: real time plus an offset tests move.
type clock struct{ off atomic.Int64 }

func (c *clock) now() time.Time            { return time.Now().Add(time.Duration(c.off.Load())) }
func (c *clock) advance(d time.Duration)   { c.off.Add(int64(d)) }
func (c *clock) nowFunc() func() time.Time { return c.now }

// testUnits makes certificates for units and hands out managers.
type testUnits struct {
	t     testing.TB
	dir   string
	ca    *mtls.CA
	level int
	clock *clock
	boot  uint64
	mgrs  map[string]*Manager
	addrs map[string]string
}

func newTestUnits(t testing.TB, level int) *testUnits {
	t.Helper()
	dir := t.TempDir()
	ca, _, err := mtls.OpenCA(dir, "test")
	if err != nil {
		t.Fatal(err)
	}
	return &testUnits{t: t, dir: dir, ca: ca, level: level, clock: &clock{}, mgrs: map[string]*Manager{}, addrs: map[string]string{}}
}

func (u *testUnits) tls(name string) (server, client *tls.Config) {
	u.t.Helper()
	f, err := u.ca.IssueUnit(u.dir, name, []netip.Addr{netip.MustParseAddr("127.0.0.1")})
	if err != nil {
		u.t.Fatal(err)
	}
	s, c, err := mtls.Units(f, name)
	if err != nil {
		u.t.Fatal(err)
	}
	return s, c
}

// start starts unit name (again: a new boot) and returns it.
func (u *testUnits) start(name string) *Manager {
	u.t.Helper()
	s, c := u.tls(name)
	u.boot++
	m, err := New(Options{Self: Member{Name: name, Boot: u.boot}, Level: u.level, ServerTLS: s, ClientTLS: c,
		PullWait: 3 * time.Second, QueryTimeout: 2 * time.Second, ZombieTime: time.Minute, Now: u.clock.nowFunc(),
		Log: zerolog.Nop()})
	if err != nil {
		u.t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		u.t.Fatal(err)
	}
	go func() { _ = m.Serve(l) }()
	u.t.Cleanup(m.Close)
	u.mgrs[name] = m
	u.addrs[name] = l.Addr().String()
	return m
}

// kill stops unit name as a crash would: no goodbye.
func (u *testUnits) kill(name string) {
	u.mgrs[name].Close()
	delete(u.mgrs, name)
}

// members tells every running unit who is live: the running ones.
func (u *testUnits) members() {
	var ms []Member
	for n, m := range u.mgrs {
		ms = append(ms, Member{Name: n, Boot: m.opts.Self.Boot, Addr: u.addrs[n]})
	}
	for _, m := range u.mgrs {
		m.SetMembers(ms)
	}
}

func (u *testUnits) names() []string {
	var out []string
	for n := range u.mgrs {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// waitFor polls cond until it holds, failing the test after a bound.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func holds(m *Manager, key string) bool {
	a, ok := m.Get(key)
	return ok && !a.Cached
}

// where lists the units holding key (not as a cache).
func (u *testUnits) where(key string) []string {
	var out []string
	for _, n := range u.names() {
		if holds(u.mgrs[n], key) {
			out = append(out, n)
		}
	}
	return out
}

func ready(ms ...*Manager) func() bool {
	return func() bool {
		for _, m := range ms {
			if !m.Ready() {
				return false
			}
		}
		return true
	}
}

// TestReplicationPlacement: at level 1 an atom is held by its adder and
// by the one other member placement names, and by no other; a query from
// the third finds it and keeps it as a cache.
func TestReplicationPlacement(t *testing.T) {
	u := newTestUnits(t, 1)
	a, b, c := u.start("unit-a"), u.start("unit-b"), u.start("unit-c")
	u.members()
	waitFor(t, "all ready", ready(a, b, c))
	for i := range 20 {
		key := fmt.Sprintf("route/tcp/10.0.0.%d:1000>192.0.2.1:80", i)
		if _, err := a.Add(key, "10.1.0.1", []byte{1, 2}, time.Minute, 0); err != nil {
			t.Fatal(err)
		}
		want := append([]string{"unit-a"}, holders(key, "unit-a", true, u.names(), 1)...)
		slices.Sort(want)
		waitFor(t, key+" replicated", func() bool { return slices.Equal(u.where(key), want) })
		other := slices.DeleteFunc([]string{"unit-b", "unit-c"}, func(n string) bool { return slices.Contains(want, n) })
		if len(other) != 1 {
			t.Fatalf("%s: held by %v", key, want)
		}
		q := u.mgrs[other[0]]
		got, found, err := q.Query(context.Background(), key)
		if err != nil || !found || got.Host != "10.1.0.1" || got.Adder != "unit-a" || string(got.Data) != "\x01\x02" {
			t.Fatalf("%s: query from %s: %+v, %v, %v", key, other[0], got, found, err)
		}
		if c, ok := q.Get(key); !ok || !c.Cached {
			t.Fatalf("%s: not cached after the query: %+v", key, c)
		}
	}
	v := a.View("route/", "", 5)
	if v.Atoms != 20 || v.Matched != 20 || len(v.Page) != 5 || !v.Ready || v.Counts.Added != 20 {
		t.Errorf("view: %+v", v)
	}
	for _, p := range v.Peers {
		if !p.Connected || !p.Pulled {
			t.Errorf("peer %+v", p)
		}
	}
}

// TestDeleteZombie: a delete leaves zombies at the adder and its
// replica, which a query still returns (late packets go to the old
// host), until the zombie time passes.
func TestDeleteZombie(t *testing.T) {
	u := newTestUnits(t, 1)
	a, b, c := u.start("unit-a"), u.start("unit-b"), u.start("unit-c")
	u.members()
	waitFor(t, "all ready", ready(a, b, c))
	key := "session/ip/198.51.100.7"
	if _, err := b.Add(key, "10.1.0.2", nil, time.Minute, 0); err != nil {
		t.Fatal(err)
	}
	holder := u.mgrs[holders(key, "unit-b", true, u.names(), 1)[0]]
	waitFor(t, "replica", func() bool { return holds(holder, key) })
	if !b.Delete(key) {
		t.Fatal("delete found nothing")
	}
	waitFor(t, "zombie at the replica", func() bool { z, ok := holder.Get(key); return ok && z.Zombie })
	if z, ok := b.Get(key); !ok || !z.Zombie || z.Expires.IsZero() {
		t.Fatalf("adder's copy: %+v %v", z, ok)
	}
	if b.Delete(key) {
		t.Error("a zombie was deleted again")
	}
	u.clock.advance(time.Minute + time.Second)
	for _, m := range []*Manager{a, b, c} {
		m.Expire()
		if _, ok := m.Get(key); ok {
			t.Errorf("%s still holds %s after the zombie time", m.opts.Self.Name, key)
		}
	}
}

// TestAdderDies: when the adder dies, its atoms survive at level 1 and
// are copied again so that two members hold each; they expire their
// timeout later unless added again. At level 0 they die with it.
func TestAdderDies(t *testing.T) {
	for _, level := range []int{0, 1} {
		t.Run(fmt.Sprint("level", level), func(t *testing.T) {
			u := newTestUnits(t, level)
			a, b, c := u.start("unit-a"), u.start("unit-b"), u.start("unit-c")
			u.members()
			waitFor(t, "all ready", ready(a, b, c))
			var keys []string
			for i := range 30 {
				key := fmt.Sprintf("route/tcp/10.0.0.%d:2000>192.0.2.1:80", i)
				keys = append(keys, key)
				if _, err := a.Add(key, "10.1.0.3", nil, 30*time.Second, 0); err != nil {
					t.Fatal(err)
				}
			}
			waitFor(t, "replicated", func() bool {
				for _, k := range keys {
					if len(u.where(k)) != level+1 {
						return false
					}
				}
				return true
			})
			u.kill("unit-a")
			u.members()
			for _, k := range keys {
				if level == 0 {
					if _, found, err := b.Query(context.Background(), k); found || err != nil {
						t.Fatalf("level 0: %s found after its adder died (%v)", k, err)
					}
					continue
				}
				waitFor(t, k+" on both survivors", func() bool { return len(u.where(k)) == 2 })
				got, _ := b.Get(k)
				if got.Expires.IsZero() || got.Adder != "unit-a" {
					t.Fatalf("orphan %s: %+v", k, got)
				}
			}
			if level == 0 {
				return
			}
			// A survivor takes one over: its version outlives the timeout.
			old, _ := b.Get(keys[0])
			if _, err := b.Add(keys[0], old.Host, old.Data, time.Minute, old.Stamp); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "takeover replicated", func() bool { x, ok := c.Get(keys[0]); return ok && x.Adder == "unit-b" })
			u.clock.advance(31 * time.Second)
			b.Expire()
			c.Expire()
			for _, k := range keys[1:] {
				if len(u.where(k)) != 0 {
					t.Fatalf("orphan %s outlived its timeout", k)
				}
			}
			if got, ok := c.Get(keys[0]); !ok || got.Adder != "unit-b" || !got.Expires.IsZero() {
				t.Fatalf("taken over: %+v, %v", got, ok)
			}
		})
	}
}

// TestRestartPulls: a unit that restarts (a new boot) is not ready
// until it has pulled its share, and then holds every atom placement
// gives it, its own earlier ones included.
func TestRestartPulls(t *testing.T) {
	u := newTestUnits(t, 1)
	a, b, c := u.start("unit-a"), u.start("unit-b"), u.start("unit-c")
	u.members()
	waitFor(t, "all ready", ready(a, b, c))
	var keys []string
	for i := range 60 {
		key := fmt.Sprintf("route/tcp/10.0.1.%d:3000>192.0.2.1:80", i)
		keys = append(keys, key)
		m := []*Manager{a, b, c}[i%3]
		if _, err := m.Add(key, "10.1.0.4", nil, time.Minute, 0); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "replicated", func() bool {
		for _, k := range keys {
			if len(u.where(k)) != 2 {
				return false
			}
		}
		return true
	})
	var bHeld []string
	for _, k := range keys {
		if holds(b, k) {
			bHeld = append(bHeld, k)
		}
	}
	u.kill("unit-b")
	b2 := u.start("unit-b")
	if b2.Ready() {
		t.Fatal("ready before meeting any member")
	}
	u.members()
	waitFor(t, "restarted unit ready", ready(b2))
	for _, p := range b2.View("", "", 0).Peers {
		if !p.Pulled {
			t.Errorf("ready without a pull from %s", p.Name)
		}
	}
	for _, k := range bHeld {
		if !holds(b2, k) {
			t.Errorf("%s: not pulled back", k)
		}
	}
}

// TestNotMemberRefused: a stream from a unit that is not a live member,
// from a host's certificate, or whose hello names another unit is
// refused and counted, and changes nothing.
func TestNotMemberRefused(t *testing.T) {
	u := newTestUnits(t, 1)
	a := u.start("unit-a")
	u.members()
	_, stranger := u.tls("unit-x")
	hf, err := u.ca.IssueHost(u.dir, 9)
	if err != nil {
		t.Fatal(err)
	}
	hostCfg, err := mtls.Client(hf, 9)
	if err != nil {
		t.Fatal(err)
	}
	try := func(cfg *tls.Config, hello string) error {
		cfg = cfg.Clone()
		cfg.ServerName = "unit-a"
		cc, err := grpc.NewClient(u.addrs["unit-a"], grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
		if err != nil {
			return err
		}
		defer cc.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		st, err := atompb.NewAtomsClient(cc).Exchange(ctx)
		if err != nil {
			return err
		}
		send := []*atompb.Request{
			{Version: atompb.Version, Body: &atompb.Request_Hello{Hello: &atompb.Hello{Unit: hello, Boot: 77}}},
			{Version: atompb.Version, Body: &atompb.Request_Add{Add: &atompb.Add{Seq: 1, Atoms: []*atompb.Atom{{
				Key: "route/evil", Host: "10.6.6.6", Adder: hello, AdderBoot: 77, Stamp: 1, TimeoutMs: 1000}}}}},
		}
		for _, r := range send {
			if err := st.Send(r); err != nil {
				break
			}
		}
		_, err = st.Recv()
		return err
	}
	if err := try(stranger, "unit-x"); err == nil || !strings.Contains(err.Error(), "not a live member") {
		t.Errorf("a stranger: %v", err)
	}
	if err := try(hostCfg, "unit-x"); err == nil {
		t.Error("a host's certificate was accepted")
	}
	if _, ok := a.Get("route/evil"); ok {
		t.Fatal("a refused stream changed the table")
	}
	v := a.View("", "", 0)
	if v.Refused[RefusedNotMember] == 0 || v.Atoms != 0 {
		t.Errorf("refusals %v, atoms %d", v.Refused, v.Atoms)
	}
	// Now a member of another boot, and a hello naming someone else.
	_, xc := u.tls("unit-x")
	u.mgrs["unit-x"] = nil
	delete(u.mgrs, "unit-x")
	a.SetMembers([]Member{{Name: "unit-x", Boot: 78, Addr: "127.0.0.1:1"}})
	if err := try(xc, "unit-x"); err == nil || !strings.Contains(err.Error(), "boot") {
		t.Errorf("a member's old boot: %v", err)
	}
	if err := try(xc, "unit-y"); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("a hello naming another unit: %v", err)
	}
	if _, ok := a.Get("route/evil"); ok {
		t.Fatal("a refused stream changed the table")
	}
	if v := a.View("", "", 0); v.Refused[RefusedIdentity] < 2 {
		t.Errorf("identity refusals: %v", v.Refused)
	}
}

// TestLaterVersionWins: of two versions of a key, the later stamp wins
// wherever they meet; an earlier one arriving late is counted stale.
func TestLaterVersionWins(t *testing.T) {
	tb := newTable(10)
	mk := func(stamp uint64, host string) *atompb.Atom {
		return &atompb.Atom{Key: "route/k", Host: host, Adder: "unit-a", AdderBoot: 1, Stamp: stamp, TimeoutMs: 1}
	}
	if tb.put(mk(5, "h5"), false, 0) != stored || tb.put(mk(7, "h7"), false, 0) != stored {
		t.Fatal("store")
	}
	if tb.put(mk(6, "h6"), false, 0) != stale || tb.atoms["route/k"].host != "h7" {
		t.Fatal("an earlier version replaced a later one")
	}
	if tb.del("route/k", 6, "unit-a", 1) != stale {
		t.Fatal("a delete of an earlier version killed the later one")
	}
	if tb.del("route/k", 7, "unit-a", 1) != deleted || !tb.atoms["route/k"].zombie {
		t.Fatal("delete")
	}
	if tb.put(mk(8, "h8"), false, 0) != stored || tb.atoms["route/k"].zombie || tb.zombies != 0 {
		t.Fatal("a new version after a delete")
	}
	for i := range 9 {
		tb.put(&atompb.Atom{Key: fmt.Sprintf("route/%d", i), Host: "h", Adder: "a", AdderBoot: 1, Stamp: 1, TimeoutMs: 1}, false, 0)
	}
	if got := tb.put(&atompb.Atom{Key: "route/more", Host: "h", Adder: "a", AdderBoot: 1, Stamp: 1, TimeoutMs: 1}, false, 0); got != full {
		t.Fatalf("an 11th atom in a table of 10: %v", got)
	}
}

// TestPlacement: rendezvous ranking is stable when a member leaves (the
// others keep their order), and the query targets cover the holders
// whoever the adder is.
func TestPlacement(t *testing.T) {
	live := []string{"u1", "u2", "u3", "u4", "u5"}
	for i := range 200 {
		key := fmt.Sprintf("route/%d", i)
		all := rank(key, live, "", -1)
		without := rank(key, slices.DeleteFunc(slices.Clone(live), func(s string) bool { return s == all[0] }), "", -1)
		if !slices.Equal(all[1:], without) {
			t.Fatalf("%s: ranking changed when %s left: %v → %v", key, all[0], all, without)
		}
		for _, adder := range live {
			for level := range 3 {
				targets := queryTargets(key, live, "u1", level)
				for _, h := range holders(key, adder, true, live, level) {
					if h != "u1" && !slices.Contains(targets, h) {
						t.Fatalf("%s level %d adder %s: holder %s not among targets %v", key, level, adder, h, targets)
					}
				}
			}
		}
	}
	if got := holders("route/x", "u1", true, live, Full); len(got) != 4 {
		t.Errorf("full: %v", got)
	}
}

var _ = errors.New

// TestPullAfterRefusal: a unit whose first pull is refused (the other
// did not know it yet: gossip reaches units at different times) pulls
// again once it is known, rather than count the refused stream as its
// pull.
func TestPullAfterRefusal(t *testing.T) {
	u := newTestUnits(t, 1)
	a, b := u.start("unit-a"), u.start("unit-b")
	if _, err := a.Add("route/early", "10.1.0.9", nil, time.Minute, 0); err != nil {
		t.Fatal(err)
	}
	both := []Member{{Name: "unit-a", Boot: a.opts.Self.Boot, Addr: u.addrs["unit-a"]}, {Name: "unit-b", Boot: b.opts.Self.Boot, Addr: u.addrs["unit-b"]}}
	b.SetMembers(both) // a does not know b yet: b's pull is refused
	waitFor(t, "a refusal", func() bool { return a.View("", "", 0).Refused[RefusedNotMember] > 0 })
	a.SetMembers(both)
	waitFor(t, "b's pull", func() bool { p := b.Peers(); return len(p) == 1 && p[0].Pulled })
	if !holds(b, "route/early") {
		t.Error("the atom added before b was known did not reach b")
	}
}

// TestDeleteMine: a unit deletes with DeleteMine only a version it
// added; another unit's later version of the key stays.
func TestDeleteMine(t *testing.T) {
	u := newTestUnits(t, Full)
	a, b := u.start("unit-a"), u.start("unit-b")
	u.members()
	waitFor(t, "ready", ready(a, b))
	first, err := a.Add("route/k", "10.1.0.1", nil, time.Minute, 0)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a's version at b", func() bool { x, ok := b.Get("route/k"); return ok && x.Adder == "unit-a" })
	if _, err := b.Add("route/k", "10.1.0.1", nil, time.Minute, first.Stamp); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "b's version at a", func() bool { x, ok := a.Get("route/k"); return ok && x.Adder == "unit-b" })
	if a.DeleteMine("route/k") {
		t.Fatal("a deleted b's version as its own")
	}
	if !b.DeleteMine("route/k") {
		t.Fatal("b could not delete its own version")
	}
	waitFor(t, "the zombie at a", func() bool { x, ok := a.Get("route/k"); return ok && x.Zombie })
}
