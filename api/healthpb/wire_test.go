package healthpb

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
)

func app(ep string) *AppID { return &AppID{Proto: "tcp", Vip: "192.0.2.10:80", Endpoint: ep} }

func row(ep string, load uint32) *Row {
	return &Row{App: app(ep), Health: Health_HEALTH_HEALTHY, Load: load, Capacity: 50, Target: State_STATE_ACTIVE, Current: State_STATE_ACTIVE}
}

// samples holds one valid message of every kind.
func samples() []*Envelope {
	var s Sums
	s.Add(row("10.0.0.11:8080", 10))
	hb := &Heartbeat{Host: 7, Generation: 3, Chunks: s.List(), Name: "b1.example", Port: 7311, IntervalMs: 500}
	many := &RowChange{Host: 7, Generation: 4}
	for i := range 200 {
		many.Ops = append(many.Ops, &RowOp{Op: RowOp_OP_UPDATE, Row: row(fmt.Sprintf("10.0.%d.%d:8080", i/250, i%250+1), uint32(i%100))})
	}
	snapRow := row("10.0.0.11:8080", 10)
	return []*Envelope{
		{Body: &Envelope_Heartbeat{Heartbeat: hb}},
		{Body: &Envelope_Goodbye{Goodbye: &Goodbye{Host: 7}}},
		{Body: &Envelope_RowChange{RowChange: &RowChange{Host: 7, Generation: 4, Ops: []*RowOp{
			{Op: RowOp_OP_ADD, Row: row("10.0.0.11:8080", 10)},
			{Op: RowOp_OP_DELETE, Row: &Row{App: app("10.0.0.12:8080")}}}}}},
		{Body: &Envelope_RowChange{RowChange: many}},
		{Body: &Envelope_GetSnapshot{GetSnapshot: &GetSnapshot{Unit: 1, Chunks: []uint32{3}}}},
		{Body: &Envelope_SendSnapshot{SendSnapshot: &SendSnapshot{Host: 7, Generation: 4, Chunks: []uint32{ChunkOf(snapRow.App)}, Rows: []*Row{snapRow}}}},
		{Body: &Envelope_Postulate{Postulate: &PostulateState{Host: 7, App: app("10.0.0.11:8080"), State: State_STATE_DRAINING, Seq: 9}}},
		{Body: &Envelope_PostulateWrong{PostulateWrong: &PostulateWrong{Unit: 1, Host: 7, App: app("10.0.0.11:8080"), Held: State_STATE_ACTIVE, Seq: 9}}},
		{Body: &Envelope_Aggregate{Aggregate: &Aggregate{Leader: 7, Own: hb, Frames: [][]byte{memberFrame()}}}},
	}
}

// The tests' master secret, and host 7's grant and key.
var (
	testMaster = []byte("0123456789abcdef0123456789abcdef")
	testGrant  = Grant{netip.MustParsePrefix("10.0.0.0/16")}
)

// unitKeys is a unit's Keys: any host's key from the master secret.
func unitKeys(h *Header) []byte {
	if h.FromUnit {
		return nil
	}
	return DeriveKey(testMaster, h.Host, h.Grant)
}

// header is host 7's header for its seq-th frame at the tests' time.
func header(seq uint64) *Header {
	return &Header{Host: 7, Sender: 7, Seq: seq, Time: 1_700_000_000_000, Grant: testGrant}
}

// memberFrame is host 8's signed heartbeat, as a leader relays it.
func memberFrame() []byte {
	c, _ := NewCodec()
	g := Grant{netip.MustParsePrefix("10.0.8.0/24")}
	b, _ := c.Encode(&Envelope{Body: &Envelope_Heartbeat{Heartbeat: &Heartbeat{Host: 8, Generation: 1, IntervalMs: 500, Leader: 7, VouchMs: 5000}}},
		&Header{Host: 8, Sender: 8, Seq: 1, Time: 1_700_000_000_000, Grant: g}, DeriveKey(testMaster, 8, g), false)
	return bytes.Clone(b)
}

func TestRoundTrip(t *testing.T) {
	for _, keyed := range []bool{false, true} {
		for _, compress := range []bool{false, true} {
			c, err := NewCodec()
			if err != nil {
				t.Fatal(err)
			}
			var key []byte
			var keys Keys
			if keyed {
				key, keys = DeriveKey(testMaster, 7, testGrant), unitKeys
			}
			for i, env := range samples() {
				h := header(uint64(i + 1))
				b, err := c.Encode(env, h, key, compress)
				if err != nil {
					t.Fatal(err)
				}
				got, gh, err := c.Decode(bytes.Clone(b), keys)
				if err != nil {
					t.Fatalf("%s (keyed %v, compress %v): %v", Kind(env), keyed, compress, err)
				}
				if err := Validate(got); err != nil {
					t.Fatalf("%s: %v", Kind(env), err)
				}
				if !proto.Equal(got, env) {
					t.Fatalf("%s: round trip changed the message", Kind(env))
				}
				if gh.Host != h.Host || gh.Sender != h.Sender || gh.Seq != h.Seq || gh.Time != h.Time || !gh.Grant.Equal(h.Grant) || gh.FromUnit {
					t.Fatalf("%s: header %+v, want %+v", Kind(env), gh, h)
				}
			}
		}
	}
}

func TestCompressionShrinksLargeMessages(t *testing.T) {
	c, _ := NewCodec()
	env := samples()[3] // 200 similar row updates
	plain, _ := c.Encode(env, header(1), nil, false)
	n := len(plain)
	z, _ := c.Encode(env, header(1), nil, true)
	if z[3]&flagCompressed == 0 || len(z) >= n/2 {
		t.Fatalf("compressed %d bytes to %d (flags %#x)", n, len(z), z[3])
	}
}

func TestFrameErrors(t *testing.T) {
	c, _ := NewCodec()
	env := samples()[0]
	good, _ := c.Encode(env, header(1), nil, false)
	good = bytes.Clone(good)
	signed, _ := c.Encode(env, header(1), DeriveKey(testMaster, 7, testGrant), false)
	signed = bytes.Clone(signed)
	tamper := bytes.Clone(signed)
	tamper[40] ^= 1
	otherMaster := func(h *Header) []byte { return DeriveKey([]byte("another master secret"), h.Host, h.Grant) }
	// Host 7's key on a frame that claims host 9: the unit checks it
	// with host 9's key.
	claim := header(1)
	claim.Host, claim.Sender = 9, 9
	impostor, _ := c.Encode(env, claim, DeriveKey(testMaster, 7, testGrant), false)
	impostor = bytes.Clone(impostor)
	// Host 7's key with a wider grant than it was issued for.
	wide := header(1)
	wide.Grant = Grant{netip.MustParsePrefix("0.0.0.0/0")}
	widened, _ := c.Encode(env, wide, DeriveKey(testMaster, 7, testGrant), false)
	widened = bytes.Clone(widened)
	// A grant that is not canonical (host bits set).
	bent := bytes.Clone(good)
	bent[fixedHeader+1+2+3] = 1 // 10.0.0.1/16
	v1 := append([]byte{'T', 'H', 1, 0}, good[4:]...)
	cases := []struct {
		name string
		keys Keys
		b    []byte
		want error
	}{
		{"short", nil, []byte("TH"), ErrShort},
		{"short header", nil, []byte("TH\x02\x00"), ErrShort},
		{"magic", nil, append([]byte("XX"), good[2:]...), ErrMagic},
		{"version 1", nil, v1, ErrOldVersion},
		{"version", nil, append([]byte{'T', 'H', 9}, good[3:]...), ErrVersion},
		{"flags", nil, append([]byte{'T', 'H', Version, 0x80}, good[4:]...), ErrFlags},
		{"oversized", nil, make([]byte, MaxDatagram+1), ErrOversized},
		{"garbage", nil, append(bytes.Clone(good[:fixedHeader+1+2+4]), 0xff, 0xff, 0xff), ErrDecode},
		{"bad zstd", nil, append([]byte{'T', 'H', Version, flagCompressed}, append(bytes.Clone(good[4:fixedHeader+1+2+4]), 1, 2, 3, 4)...), ErrCompressed},
		{"grant", nil, bent, ErrGrant},
		{"unsigned to keyed", unitKeys, good, ErrNoMAC},
		{"signed to unkeyed", nil, signed, ErrMAC},
		{"other master", otherMaster, signed, ErrMAC},
		{"tampered", unitKeys, tamper, ErrMAC},
		{"host 7's key claiming host 9", unitKeys, impostor, ErrMAC},
		{"host 7's key with a wider grant", unitKeys, widened, ErrMAC},
	}
	for _, tc := range cases {
		_, _, err := c.Decode(tc.b, tc.keys)
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: got %v, want %v", tc.name, err, tc.want)
		}
	}
	if _, _, err := c.Decode(v1, nil); Reason(err) != "old_version" {
		t.Errorf("version 1 counted as %q", Reason(err))
	}
}

// TestIdentity: an authentic frame may still say too much: name another
// host, report an endpoint outside its grant, or be a unit's message.
func TestIdentity(t *testing.T) {
	h := header(1)
	ok := []*Envelope{samples()[0], samples()[1], samples()[2], samples()[5], samples()[6], samples()[8]}
	for _, env := range ok {
		if err := CheckFromHost(env, h, true); err != nil {
			t.Errorf("%s: %v", Kind(env), err)
		}
	}
	outside := &Envelope{Body: &Envelope_RowChange{RowChange: &RowChange{Host: 7, Ops: []*RowOp{{Op: RowOp_OP_UPDATE, Row: row("10.1.0.1:8080", 1)}}}}}
	bad := []struct {
		name string
		env  *Envelope
		hdr  *Header
		want error
	}{
		{"goodbye for host 8", &Envelope{Body: &Envelope_Goodbye{Goodbye: &Goodbye{Host: 8}}}, h, ErrNotYours},
		{"row change for host 8", &Envelope{Body: &Envelope_RowChange{RowChange: &RowChange{Host: 8, Ops: outside.GetRowChange().GetOps()}}}, h, ErrNotYours},
		{"endpoint outside the grant", outside, h, ErrNotGranted},
		{"postulate outside the grant", &Envelope{Body: &Envelope_Postulate{Postulate: &PostulateState{Host: 7, App: app("10.1.0.1:80"), State: State_STATE_INACTIVE}}}, h, ErrNotGranted},
		{"snapshot outside the grant", &Envelope{Body: &Envelope_SendSnapshot{SendSnapshot: &SendSnapshot{Host: 7, Chunks: []uint32{0}, Rows: []*Row{row("10.1.0.1:8080", 1)}}}}, h, ErrNotGranted},
		{"sender is not the key's host", samples()[1], &Header{Host: 7, Sender: 8, Grant: testGrant}, ErrNotYours},
		{"a unit's message from a host", samples()[4], h, ErrDirection},
	}
	for _, tc := range bad {
		if err := CheckFromHost(tc.env, tc.hdr, true); !errors.Is(err, tc.want) {
			t.Errorf("%s: got %v, want %v", tc.name, err, tc.want)
		}
	}
	if err := CheckFromHost(outside, h, false); err != nil {
		t.Errorf("without keys there is no grant to check, got %v", err)
	}
	uh := &Header{FromUnit: true, Host: 7, Sender: 1}
	if err := CheckFromUnit(samples()[4], uh, 7); err != nil {
		t.Error(err)
	}
	if err := CheckFromUnit(samples()[7], uh, 7); err != nil {
		t.Error(err)
	}
	if err := CheckFromUnit(samples()[4], uh, 8); !errors.Is(err, ErrNotYours) {
		t.Errorf("a unit's frame for host 7 at host 8: %v", err)
	}
	if err := CheckFromUnit(samples()[4], &Header{FromUnit: true, Host: 7, Sender: 2}, 7); !errors.Is(err, ErrNotYours) {
		t.Errorf("get_snapshot naming unit 1 from unit 2: %v", err)
	}
	if err := CheckFromUnit(samples()[1], uh, 7); !errors.Is(err, ErrDirection) {
		t.Errorf("a goodbye from a unit: %v", err)
	}
}

func TestHostKeyFile(t *testing.T) {
	g, err := ParseGrant("10.0.10.2, 10.0.0.0/8,10.0.10.2/32 2001:db8::1/64")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := g.String(), "10.0.0.0/8,10.0.10.2/32,2001:db8::/64"; got != want {
		t.Fatalf("canonical grant %s, want %s", got, want)
	}
	k, err := NewHostKey(testMaster, 7, g)
	if err != nil {
		t.Fatal(err)
	}
	text, _ := k.MarshalText()
	back, err := ParseHostKey(text)
	if err != nil {
		t.Fatalf("%v\n%s", err, text)
	}
	if back.Host != 7 || !back.Grant.Equal(g) || !bytes.Equal(back.Key, DeriveKey(testMaster, 7, g)) {
		t.Fatalf("round trip: %+v", back)
	}
	if bytes.Equal(DeriveKey(testMaster, 7, g), DeriveKey(testMaster, 8, g)) || bytes.Equal(DeriveKey(testMaster, 7, g), DeriveKey(testMaster, 7, testGrant)) {
		t.Fatal("keys do not depend on the host and the grant")
	}
	if !g.Allows("10.9.9.9:80") || !g.Allows("[2001:db8::5]:80") || g.Allows("192.0.2.1:80") || !g.Allows("") {
		t.Fatal("Allows")
	}
	for _, bad := range []string{"", "host 7\nendpoints 10.0.0.0/8\n", "host 0\nendpoints 10.0.0.0/8\nkey AAAA\n", "shared-secret-of-version-1"} {
		if _, err := ParseHostKey([]byte(bad)); !errors.Is(err, ErrHostKey) {
			t.Errorf("%q: %v", bad, err)
		}
	}
	if _, err := NewHostKey([]byte("short"), 7, g); err == nil {
		t.Error("a short master secret was accepted")
	}
	if _, err := ParseGrant("10.0.0.300"); err == nil {
		t.Error("bad prefix accepted")
	}
}

func TestWindow(t *testing.T) {
	var w Window
	for _, step := range []struct {
		seq  uint64
		want bool
	}{
		{100, true}, {100, false}, {101, true}, {99, true}, {99, false}, {105, true}, {103, true}, {104, true}, {102, true}, {102, false},
		{105 + WindowSize, true}, {105, false}, {106, true}, {106, false}, {5 + 2*WindowSize, true}, {4 + 2*WindowSize, true},
		{10 * WindowSize, true}, {10*WindowSize - WindowSize, false}, {10*WindowSize - WindowSize + 1, true},
	} {
		if got := w.Admit(step.seq); got != step.want {
			t.Fatalf("Admit(%d) = %v, want %v", step.seq, got, step.want)
		}
	}
}

func TestSequencerAcrossRestarts(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	s := NewSequencer(t0)
	var last uint64
	for range 10 {
		last = s.Next(t0)
	}
	// A restart a millisecond later starts above everything before it.
	if first := NewSequencer(t0.Add(time.Millisecond)).Next(t0); first <= last {
		t.Fatalf("restarted sequencer starts at %d, at or below %d", first, last)
	}
	// An epoch that runs out moves to the next.
	s.next = s.next | (1<<seqCounterBits - 1)
	a := s.Next(t0)
	b := s.Next(t0)
	if b <= a {
		t.Fatalf("after an epoch's last number %d came %d", a, b)
	}
	h := header(1)
	now := time.UnixMilli(int64(h.Time))
	if Fresh(h, now.Add(29*time.Second), 30*time.Second) != nil || Fresh(h, now.Add(-29*time.Second), 30*time.Second) != nil {
		t.Fatal("fresh frame refused")
	}
	if err := Fresh(h, now.Add(31*time.Second), 30*time.Second); !errors.Is(err, ErrStale) || Reason(err) != "stale" {
		t.Fatalf("old frame: %v", err)
	}
	if err := Fresh(h, now.Add(-31*time.Second), 30*time.Second); !errors.Is(err, ErrStale) {
		t.Fatalf("frame from the future: %v", err)
	}
}

func TestValidateRejects(t *testing.T) {
	bad := map[string]*Envelope{
		"no body":           {Version: 1},
		"host 0":            {Version: 2, Body: &Envelope_Goodbye{Goodbye: &Goodbye{}}},
		"interval":          {Version: 2, Body: &Envelope_Heartbeat{Heartbeat: &Heartbeat{Host: 1, IntervalMs: 1}}},
		"chunk range":       {Version: 2, Body: &Envelope_Heartbeat{Heartbeat: &Heartbeat{Host: 1, IntervalMs: 500, Chunks: []*ChunkSum{{Chunk: NumChunks, Rows: 1}}}}},
		"empty chunk":       {Version: 2, Body: &Envelope_Heartbeat{Heartbeat: &Heartbeat{Host: 1, IntervalMs: 500, Chunks: []*ChunkSum{{Chunk: 1}}}}},
		"name":              {Version: 2, Body: &Envelope_Heartbeat{Heartbeat: &Heartbeat{Host: 1, IntervalMs: 500, Name: "a b", Port: 1}}},
		"no ops":            {Version: 2, Body: &Envelope_RowChange{RowChange: &RowChange{Host: 1}}},
		"load":              {Version: 2, Body: &Envelope_RowChange{RowChange: &RowChange{Host: 1, Ops: []*RowOp{{Op: RowOp_OP_ADD, Row: row("10.0.0.1:80", 101)}}}}},
		"capacity":          {Version: 2, Body: &Envelope_RowChange{RowChange: &RowChange{Host: 1, Ops: []*RowOp{{Op: RowOp_OP_ADD, Row: &Row{App: app("10.0.0.1:80"), Capacity: 100, Target: 1, Current: 1}}}}}},
		"no state":          {Version: 2, Body: &Envelope_RowChange{RowChange: &RowChange{Host: 1, Ops: []*RowOp{{Op: RowOp_OP_ADD, Row: &Row{App: app("10.0.0.1:80")}}}}}},
		"op":                {Version: 2, Body: &Envelope_RowChange{RowChange: &RowChange{Host: 1, Ops: []*RowOp{{Row: row("10.0.0.1:80", 1)}}}}},
		"address form":      {Version: 2, Body: &Envelope_Postulate{Postulate: &PostulateState{Host: 1, App: &AppID{Proto: "tcp", Endpoint: "10.0.0.01:80"}, State: State_STATE_ACTIVE}}},
		"no address":        {Version: 2, Body: &Envelope_Postulate{Postulate: &PostulateState{Host: 1, App: &AppID{Proto: "tcp"}, State: State_STATE_ACTIVE}}},
		"proto":             {Version: 2, Body: &Envelope_Postulate{Postulate: &PostulateState{Host: 1, App: &AppID{Proto: "TCP!", Endpoint: "10.0.0.1:80"}, State: State_STATE_ACTIVE}}},
		"url":               {Version: 2, Body: &Envelope_Postulate{Postulate: &PostulateState{Host: 1, App: &AppID{Proto: "http", Endpoint: "10.0.0.1:80", Url: "/a b"}, State: State_STATE_ACTIVE}}},
		"snapshot chunk":    {Version: 2, Body: &Envelope_SendSnapshot{SendSnapshot: &SendSnapshot{Host: 1, Chunks: []uint32{(ChunkOf(app("10.0.0.1:80")) + 1) % NumChunks}, Rows: []*Row{row("10.0.0.1:80", 1)}}}},
		"snapshot no chunk": {Version: 2, Body: &Envelope_SendSnapshot{SendSnapshot: &SendSnapshot{Host: 1}}},
		"wrong missing":     {Version: 2, Body: &Envelope_PostulateWrong{PostulateWrong: &PostulateWrong{Unit: 1, Host: 1, App: app("10.0.0.1:80"), Missing: true, Held: State_STATE_ACTIVE}}},
		"empty aggregate":   {Version: 2, Body: &Envelope_Aggregate{Aggregate: &Aggregate{Leader: 1}}},
		"aggregate frame":   {Version: 2, Body: &Envelope_Aggregate{Aggregate: &Aggregate{Leader: 1, Own: &Heartbeat{Host: 1, IntervalMs: 500}, Frames: [][]byte{[]byte("TH")}}}},
		"envelope version":  {Version: 1, Body: &Envelope_Goodbye{Goodbye: &Goodbye{Host: 1}}},
	}
	for name, env := range bad {
		if err := Validate(env); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestSums(t *testing.T) {
	var a, b Sums
	r1, r2 := row("10.0.0.1:80", 10), row("10.0.0.2:80", 20)
	a.Add(r1)
	a.Add(r2)
	b.Add(r2)
	b.Add(r1)
	if a != b {
		t.Fatal("sums depend on order")
	}
	if d := a.Differ(b.List()); len(d) != 0 {
		t.Fatalf("equal tables differ in %v", d)
	}
	r1b := row("10.0.0.1:80", 11)
	b.Remove(r1)
	b.Add(r1b)
	d := a.Differ(b.List())
	if len(d) != 1 || d[0] != ChunkOf(r1.App) {
		t.Fatalf("changed load of one row: differing chunks %v, want [%d]", d, ChunkOf(r1.App))
	}
	b.Remove(r1b)
	b.Remove(r2)
	if b != (Sums{}) || len(b.List()) != 0 {
		t.Fatal("removing every row leaves a residue")
	}
}

// TestWriteSeeds keeps the fuzz seed corpus in step with samples(): one
// frame of every kind signed with host 7's key, as FuzzDecode's unit
// checks them.
func TestWriteSeeds(t *testing.T) {
	if os.Getenv("TETHER_WRITE_SEEDS") == "" {
		t.Skip("set TETHER_WRITE_SEEDS=1 to rewrite testdata/fuzz/FuzzDecode")
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzDecode")
	os.RemoveAll(dir)
	os.MkdirAll(dir, 0o755)
	c, _ := NewCodec()
	for i, env := range samples() {
		b, _ := c.Encode(env, header(uint64(i+1)), DeriveKey(testMaster, 7, testGrant), i%2 == 1)
		name := fmt.Sprintf("%d-%s", i, strings.ReplaceAll(Kind(env), "_", "-"))
		body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", b)
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// FuzzDecode: no datagram panics the decoder, the validator or the
// identity checks, with keys or without; whatever passes survives a
// re-encoding unchanged.
func FuzzDecode(f *testing.F) {
	c, _ := NewCodec()
	key := DeriveKey(testMaster, 7, testGrant)
	for i, env := range samples() {
		b, _ := c.Encode(env, header(uint64(i+1)), key, true)
		f.Add(bytes.Clone(b))
		b, _ = c.Encode(env, header(uint64(i+1)), nil, false)
		f.Add(bytes.Clone(b))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, keys := range []Keys{nil, unitKeys} {
			env, h, err := c.Decode(b, keys)
			if err != nil {
				continue
			}
			if Validate(env) != nil {
				continue
			}
			_ = CheckFromHost(env, h, keys != nil)
			_ = CheckFromUnit(env, h, 7)
			var k []byte
			if keys != nil {
				k = keys(h)
			}
			again, err := c.Encode(env, h, k, false)
			if err != nil {
				continue // valid but larger than a datagram once uncompressed
			}
			env2, h2, err := c.Decode(bytes.Clone(again), keys)
			if err != nil || Validate(env2) != nil || !proto.Equal(env, env2) || h2.Seq != h.Seq || !h2.Grant.Equal(h.Grant) {
				t.Fatalf("valid message did not survive re-encoding: %v", err)
			}
		}
	})
}

// TestDecompressionBomb: a small datagram that inflates past MaxMessage
// is refused before it is decoded.
func TestDecompressionBomb(t *testing.T) {
	c, _ := NewCodec()
	big := make([]byte, 4*MaxMessage)
	hdr, _ := c.Encode(samples()[1], header(1), nil, false)
	prefix := append([]byte{'T', 'H', Version, flagCompressed}, hdr[4:fixedHeader+1+2+4]...)
	z := c.enc.EncodeAll(big, prefix)
	if len(z) > MaxDatagram {
		t.Fatalf("bomb of %d bytes does not fit a datagram", len(z))
	}
	_, _, err := c.Decode(z, nil)
	if !errors.Is(err, ErrCompressed) && !errors.Is(err, ErrOversized) {
		t.Fatalf("a %d-byte datagram inflating to %d bytes: %v", len(z), len(big), err)
	}
	if r := Reason(err); r != "compression" && r != "oversized" {
		t.Fatalf("counted as %q", r)
	}
}
