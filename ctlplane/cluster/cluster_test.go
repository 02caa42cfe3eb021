package cluster

import (
	"bytes"
	"io"
	"math"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/rs/zerolog"

	"github.com/tetherlb/tether/api/unit"
)

// Test-sized failure detection.
const (
	testProbe     = 100 * time.Millisecond
	testTimeout   = 50 * time.Millisecond
	testSuspicion = 2
	testGossip    = 20 * time.Millisecond
)

// detectionBound is the package doc's worst case for n members with the
// test's settings (awareness at its maximum, 8; SuspicionMaxTimeoutMult
// 6), doubled for the verdict's gossip and a loaded test machine. The
// tests only ever wait up to it; they assert no duration.
func detectionBound(n int) time.Duration {
	scale := math.Max(1, math.Log10(float64(n)))
	b := time.Duration(n)*testProbe*8 + testTimeout + time.Duration(6*testSuspicion*scale*float64(testProbe))
	return 2*b + 2*time.Second
}

// joinBound bounds a join's convergence for n members: a join whose
// stream hangs (CI saw one wait past the detection bound while other
// packages loaded the machine, the join never answered) ends at
// memberlist's TCP timeout (10 s in its LAN configuration) and is tried
// again after at most joinMax.
func joinBound(n int) time.Duration {
	return memberlist.DefaultLANConfig().TCPTimeout + joinMax + detectionBound(n)
}

func key(b byte) []byte { return bytes.Repeat([]byte{b}, KeySize) }

// start starts a node on loopback with a free port and the test's
// timings; it is stopped (gracefully) when the test ends.
func start(t *testing.T, name string, k []byte, sources []netip.Addr, peers ...string) *Node {
	t.Helper()
	return startWith(t, name, k, sources, nil, peers...)
}

func startWith(t *testing.T, name string, k []byte, sources []netip.Addr, onChange func(unit.Member), peers ...string) *Node {
	t.Helper()
	n, err := Start(Options{Name: name, Bind: "127.0.0.1:0", Peers: peers, Key: k, TunnelSources: sources, AtomsPort: 7947,
		ProbeInterval: testProbe, ProbeTimeout: testTimeout, SuspicionMult: testSuspicion, GossipInterval: testGossip,
		LeaveTimeout: time.Second, OnChange: onChange, Log: zerolog.New(newTestLog(t)).Level(zerolog.InfoLevel)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Stop() })
	return n
}

// testLog writes to the test's log until the test ends: memberlist's
// goroutines outlive Shutdown a little, and the testing package panics
// at a log after the end.
type testLog struct {
	t    *testing.T
	mu   sync.Mutex
	done bool
}

func newTestLog(t *testing.T) *testLog {
	l := &testLog{t: t}
	t.Cleanup(func() { l.mu.Lock(); l.done = true; l.mu.Unlock() })
	return l
}

func (l *testLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.done {
		l.t.Log(strings.TrimSpace(string(p)))
	}
	return len(p), nil
}

// waitFor polls cond until it holds or bound passes.
func waitFor(t *testing.T, what string, bound time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(bound)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, bound)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// kill stops n as a crash would: its transport goes, without a leave.
func (n *Node) kill() {
	n.stopOnce.Do(func() {
		close(n.stop)
		n.ml.Shutdown()
	})
}

func member(n *Node, name string) (unit.Member, bool) {
	for _, m := range n.View().Members {
		if m.Name == name {
			return m, true
		}
	}
	return unit.Member{}, false
}

func stateOf(n *Node, name string) string {
	m, _ := member(n, name)
	return m.State
}

func alive(n *Node, names ...string) bool {
	for _, name := range names {
		if stateOf(n, name) != unit.MemberAlive {
			return false
		}
	}
	return true
}

// threeUnits starts a, b and c; b joins a and c joins b, so c learns of
// a only through gossip.
func threeUnits(t *testing.T, onChange func(unit.Member)) (a, b, c *Node) {
	a = startWith(t, "a", key(1), []netip.Addr{netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("2001:db8::1")}, onChange)
	b = start(t, "b", key(1), []netip.Addr{netip.MustParseAddr("10.0.0.2")}, a.Address())
	c = start(t, "c", key(1), nil, b.Address())
	for _, n := range []*Node{a, b, c} {
		waitFor(t, n.opts.Name+" sees three alive members", joinBound(3), func() bool { return alive(n, "a", "b", "c") })
	}
	return a, b, c
}

func TestThreeUnitsConverge(t *testing.T) {
	a, b, c := threeUnits(t, nil)
	for _, n := range []*Node{a, b, c} {
		v := n.View()
		if len(v.Members) != 3 || !v.Enabled || v.Boot != n.Boot() {
			t.Fatalf("%s: view %+v", n.opts.Name, v)
		}
		for i, want := range []struct {
			node    *Node
			sources []string
		}{{a, []string{"10.0.0.1", "2001:db8::1"}}, {b, []string{"10.0.0.2"}}, {c, nil}} {
			m := v.Members[i]
			if m.Name != want.node.opts.Name || m.Boot != want.node.Boot() || m.Address != want.node.Address() ||
				!slices.Equal(m.TunnelSources, want.sources) || m.Protocol != metaVersion || m.Self != (n == want.node) {
				t.Errorf("%s sees %+v; want boot %016x, address %s, sources %v", n.opts.Name, m, want.node.Boot(), want.node.Address(), want.sources)
			}
		}
		if v.Events.Joins != 2 || v.Events.Fails != 0 {
			t.Errorf("%s: events %+v, want 2 joins", n.opts.Name, v.Events)
		}
	}
	if a.Boot() == b.Boot() || b.Boot() == c.Boot() {
		t.Error("boot IDs repeat")
	}
}

func TestFailureAndLeave(t *testing.T) {
	changed := make(chan unit.Member, 64)
	a, b, c := threeUnits(t, func(m unit.Member) {
		if m.State != unit.MemberAlive {
			changed <- m
		}
	})
	var changes []unit.Member
	// c dies: its transport goes without a word to the others.
	c.kill()
	for _, n := range []*Node{a, b} {
		waitFor(t, n.opts.Name+" sees c dead", detectionBound(3), func() bool { return stateOf(n, "c") == unit.MemberDead })
	}
	// b leaves gracefully.
	if err := b.Stop(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a sees b left", detectionBound(3), func() bool { return stateOf(a, "b") == unit.MemberLeft })
	if ev := a.View().Events; ev.Fails != 1 || ev.Leaves != 1 {
		t.Errorf("a's events: %+v, want 1 failure and 1 leave", ev)
	}
	for len(changes) < 2 {
		changes = append(changes, <-changed)
	}
	if changes[0].Name != "c" || changes[0].State != unit.MemberDead || changes[1].Name != "b" || changes[1].State != unit.MemberLeft {
		t.Errorf("changes %+v, want c dead then b left", changes)
	}
}

// TestStrangerRefused: a node with another key, or none, cannot join,
// never appears in a member's view, and its attempts are counted.
func TestStrangerRefused(t *testing.T) {
	a := start(t, "a", key(1), nil)
	b := start(t, "b", key(1), nil, a.Address())
	waitFor(t, "a and b converge", joinBound(2), func() bool { return alive(a, "a", "b") && alive(b, "a", "b") })

	x := start(t, "x", key(2), nil)
	if _, err := x.ml.Join([]string{a.Address()}); err == nil {
		t.Error("a node with another key joined")
	}
	waitFor(t, "a counts the refused stream", detectionBound(2), func() bool { return a.View().Refused[RefusedDecrypt] > 0 })

	plain := rawNode(t, "plain", nil, nil)
	if _, err := plain.Join([]string{a.Address()}); err == nil {
		t.Error("a node without encryption joined")
	}
	waitFor(t, "a counts the plain stream", detectionBound(2), func() bool { return a.View().Refused[RefusedUnencrypted] > 0 })

	for _, n := range []*Node{a, b} {
		for _, m := range n.View().Members {
			if m.Name != "a" && m.Name != "b" {
				t.Errorf("%s's view has %+v", n.opts.Name, m)
			}
		}
		if n.ml.NumMembers() != 2 {
			t.Errorf("%s: memberlist has %d members", n.opts.Name, n.ml.NumMembers())
		}
	}
	if v := x.View(); len(v.Members) != 1 {
		t.Errorf("x's view: %+v", v.Members)
	}
}

// rawNode is a memberlist node outside this package's control: key nil
// for plain gossip, meta what it publishes.
func rawNode(t *testing.T, name string, k, meta []byte) *memberlist.Memberlist {
	t.Helper()
	mc := memberlist.DefaultLANConfig()
	mc.Name, mc.BindAddr, mc.BindPort, mc.AdvertisePort = name, "127.0.0.1", 0, 0
	mc.ProbeInterval, mc.ProbeTimeout, mc.GossipInterval = testProbe, testTimeout, testGossip
	mc.LogOutput = io.Discard
	if k != nil {
		mc.SecretKey = k
	}
	mc.Delegate = rawMeta(meta)
	ml, err := memberlist.Create(mc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ml.Shutdown() })
	return ml
}

type rawMeta []byte

func (r rawMeta) NodeMeta(int) []byte             { return r }
func (r rawMeta) NotifyMsg([]byte)                {}
func (r rawMeta) GetBroadcasts(int, int) [][]byte { return nil }
func (r rawMeta) LocalState(bool) []byte          { return nil }
func (r rawMeta) MergeRemoteState([]byte, bool)   {}

// TestBadMetadataRefused: a node with the key whose metadata is
// malformed, oversized or of another version never becomes a member,
// and the refusal is counted.
func TestBadMetadataRefused(t *testing.T) {
	good := (&meta{version: metaVersion, boot: 7, atoms: 7947}).encode()
	v2 := bytes.Clone(good)
	v2[0] = 1
	for _, tc := range []struct {
		name string
		meta []byte
	}{
		{"version", v2},
		{"oversized", append(bytes.Clone(good), make([]byte, 100)...)},
		{"truncated", good[:5]},
		{"none", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := start(t, "a", key(1), nil)
			bad := rawNode(t, "bad-"+tc.name, key(1), tc.meta)
			bad.Join([]string{a.Address()})
			waitFor(t, "a counts the refused metadata", detectionBound(2), func() bool { return a.View().Refused[RefusedMeta] > 0 })
			if _, ok := member(a, bad.LocalNode().Name); ok || a.ml.NumMembers() != 1 {
				t.Errorf("a took the node with bad metadata: %+v", a.View().Members)
			}
		})
	}
}

func TestMeta(t *testing.T) {
	for _, m := range []meta{
		{version: metaVersion, boot: 1, atoms: 1},
		{version: metaVersion, boot: math.MaxUint64, atoms: 65535, addr4: netip.MustParseAddr("192.0.2.1")},
		{version: metaVersion, boot: 9, atoms: 7947, addr4: netip.MustParseAddr("192.0.2.1"), addr6: netip.MustParseAddr("2001:db8::9")},
		{version: metaVersion, boot: 9, atoms: 7947, addr6: netip.MustParseAddr("2001:db8::9")},
	} {
		got, err := parseMeta(m.encode())
		if err != nil || got != m {
			t.Errorf("round trip of %+v: %+v, %v", m, got, err)
		}
	}
	good := (&meta{version: metaVersion, boot: 3, atoms: 7947, addr4: netip.MustParseAddr("192.0.2.1")}).encode()
	for name, b := range map[string][]byte{
		"boot 0":        (&meta{version: metaVersion, atoms: 7947}).encode(),
		"atoms port 0":  (&meta{version: metaVersion, boot: 3}).encode(),
		"short":         good[:metaHeader+2],
		"trailing":      append(bytes.Clone(good), 0),
		"unknown flags": func() []byte { b := bytes.Clone(good); b[11] |= 0x80; return b }(),
		"version":       func() []byte { b := bytes.Clone(good); b[0] = 9; return b }(),
		"oversized":     make([]byte, metaMax+1),
	} {
		if _, err := parseMeta(b); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestReadKey(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, b []byte, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, mode); err != nil {
			t.Fatal(err)
		}
		os.Chmod(p, mode)
		return p
	}
	if k, err := ReadKey(write("good", key(5), 0o600)); err != nil || !bytes.Equal(k, key(5)) {
		t.Errorf("good key: %v", err)
	}
	for _, tc := range []struct {
		path, want string
	}{
		{write("short", key(5)[:16], 0o600), "16 bytes, want exactly 32 raw bytes"},
		{write("long", append(key(5), '\n'), 0o600), "33 bytes"},
		{write("b64", []byte("BQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQU=\n"), 0o600), "base64"},
		{write("open", key(5), 0o644), "chmod 0600"},
		{filepath.Join(dir, "missing"), "no such file"},
	} {
		if _, err := ReadKey(tc.path); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error containing %q", tc.path, err, tc.want)
		}
	}
	if _, err := Start(Options{Name: "a", Bind: "127.0.0.1:0", Key: key(1)[:31]}); err == nil {
		t.Error("Start took a key of 31 bytes")
	}
}

// TestLeaveNoticeAfterVerdict: a leave notice that arrives after its
// member was declared dead turns the failure into a leave; one from
// another boot changes nothing.
func TestLeaveNoticeAfterVerdict(t *testing.T) {
	n := &Node{opts: Options{Name: "a"}, log: zerolog.Nop(), members: map[string]*unit.Member{
		"b": {Name: "b", State: unit.MemberDead, Boot: 42},
	}, refused: map[string]uint64{}, leavers: map[string]uint64{}}
	n.events.Fails = 1
	notice := func(boot uint64, name string) []byte {
		b := []byte{msgLeave}
		for i := range 8 {
			b = append(b, byte(boot>>(56-8*i)))
		}
		return append(b, name...)
	}
	n.leaving(notice(41, "b"))
	if m := n.members["b"]; m.State != unit.MemberDead || n.events.Fails != 1 {
		t.Fatalf("an old boot's notice changed %+v, %+v", m, n.events)
	}
	n.leaving(notice(42, "b"))
	if m := n.members["b"]; m.State != unit.MemberLeft || n.events.Fails != 0 || n.events.Leaves != 1 {
		t.Fatalf("after the notice: %+v, %+v", m, n.events)
	}
}

// TestLogLines: memberlist's lines reach the log at their level, and
// the refusals it reports only there are counted.
func TestLogLines(t *testing.T) {
	var out bytes.Buffer
	n := &Node{log: zerolog.New(&out), refused: map[string]uint64{}}
	w := (*logWriter)(n)
	for _, line := range []string{
		"[ERR] memberlist: failed to receive: no installed keys could decrypt the message from=127.0.0.1:5000",
		"[ERR] memberlist: Decrypt packet failed: no installed keys could decrypt the message from=127.0.0.1:5000",
		"[ERR] memberlist: failed to receive: encryption is configured but remote state is not encrypted from=127.0.0.1:5000",
		"[WARN] memberlist: Refuting a suspect message (from: b)",
		"[DEBUG] memberlist: Stream connection from=127.0.0.1:5000",
	} {
		w.Write([]byte(line + "\n"))
	}
	if n.refused[RefusedDecrypt] != 2 || n.refused[RefusedUnencrypted] != 1 {
		t.Errorf("refused %v, want decrypt 2, unencrypted 1", n.refused)
	}
	for _, want := range []string{
		`{"level":"warn","part":"memberlist","message":"Refuting a suspect message (from: b)"}`,
		`{"level":"debug","part":"memberlist","message":"Stream connection from=127.0.0.1:5000"}`,
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("log lacks %s:\n%s", want, out.String())
		}
	}
}
