package healthpb

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

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
		{Body: &Envelope_Aggregate{Aggregate: &Aggregate{Leader: 2, Beats: []*Heartbeat{hb}, Goodbyes: []*Goodbye{{Host: 8}}}}},
	}
}

func TestRoundTrip(t *testing.T) {
	for _, key := range [][]byte{nil, []byte("secret")} {
		for _, compress := range []bool{false, true} {
			c, err := NewCodec(key)
			if err != nil {
				t.Fatal(err)
			}
			for _, env := range samples() {
				b, err := c.Encode(env, compress)
				if err != nil {
					t.Fatal(err)
				}
				got, err := c.Decode(bytes.Clone(b))
				if err != nil {
					t.Fatalf("%s (key %q, compress %v): %v", Kind(env), key, compress, err)
				}
				if err := Validate(got); err != nil {
					t.Fatalf("%s: %v", Kind(env), err)
				}
				if !proto.Equal(got, env) {
					t.Fatalf("%s: round trip changed the message", Kind(env))
				}
			}
		}
	}
}

func TestCompressionShrinksLargeMessages(t *testing.T) {
	c, _ := NewCodec(nil)
	env := samples()[3] // 200 similar row updates
	plain, _ := c.Encode(env, false)
	n := len(plain)
	z, _ := c.Encode(env, true)
	if z[3]&flagCompressed == 0 || len(z) >= n/2 {
		t.Fatalf("compressed %d bytes to %d (flags %#x)", n, len(z), z[3])
	}
}

func TestFrameErrors(t *testing.T) {
	plain, _ := NewCodec(nil)
	keyed, _ := NewCodec([]byte("k1"))
	other, _ := NewCodec([]byte("k2"))
	env := samples()[0]
	good, _ := plain.Encode(env, false)
	good = bytes.Clone(good)
	signed, _ := keyed.Encode(env, false)
	signed = bytes.Clone(signed)
	tamper := bytes.Clone(signed)
	tamper[6] ^= 1
	cases := []struct {
		name  string
		codec *Codec
		b     []byte
		want  error
	}{
		{"short", plain, []byte("TH"), ErrShort},
		{"magic", plain, append([]byte("XX"), good[2:]...), ErrMagic},
		{"version", plain, append([]byte{'T', 'H', 9}, good[3:]...), ErrVersion},
		{"flags", plain, append([]byte{'T', 'H', 1, 0x80}, good[4:]...), ErrFlags},
		{"oversized", plain, make([]byte, MaxDatagram+1), ErrOversized},
		{"garbage", plain, append([]byte{'T', 'H', 1, 0}, 0xff, 0xff, 0xff), ErrDecode},
		{"bad zstd", plain, append([]byte{'T', 'H', 1, flagCompressed}, 1, 2, 3, 4), ErrCompressed},
		{"unsigned to keyed", keyed, good, ErrNoMAC},
		{"signed to unkeyed", plain, signed, ErrMAC},
		{"wrong key", other, signed, ErrMAC},
		{"tampered", keyed, tamper, ErrMAC},
	}
	for _, c := range cases {
		_, err := c.codec.Decode(c.b)
		if !errors.Is(err, c.want) {
			t.Errorf("%s: got %v, want %v", c.name, err, c.want)
		}
	}
}

func TestValidateRejects(t *testing.T) {
	bad := map[string]*Envelope{
		"no body":           {Version: 1},
		"host 0":            {Version: 1, Body: &Envelope_Goodbye{Goodbye: &Goodbye{}}},
		"interval":          {Version: 1, Body: &Envelope_Heartbeat{Heartbeat: &Heartbeat{Host: 1, IntervalMs: 1}}},
		"chunk range":       {Version: 1, Body: &Envelope_Heartbeat{Heartbeat: &Heartbeat{Host: 1, IntervalMs: 500, Chunks: []*ChunkSum{{Chunk: NumChunks, Rows: 1}}}}},
		"empty chunk":       {Version: 1, Body: &Envelope_Heartbeat{Heartbeat: &Heartbeat{Host: 1, IntervalMs: 500, Chunks: []*ChunkSum{{Chunk: 1}}}}},
		"name":              {Version: 1, Body: &Envelope_Heartbeat{Heartbeat: &Heartbeat{Host: 1, IntervalMs: 500, Name: "a b", Port: 1}}},
		"no ops":            {Version: 1, Body: &Envelope_RowChange{RowChange: &RowChange{Host: 1}}},
		"load":              {Version: 1, Body: &Envelope_RowChange{RowChange: &RowChange{Host: 1, Ops: []*RowOp{{Op: RowOp_OP_ADD, Row: row("10.0.0.1:80", 101)}}}}},
		"capacity":          {Version: 1, Body: &Envelope_RowChange{RowChange: &RowChange{Host: 1, Ops: []*RowOp{{Op: RowOp_OP_ADD, Row: &Row{App: app("10.0.0.1:80"), Capacity: 100, Target: 1, Current: 1}}}}}},
		"no state":          {Version: 1, Body: &Envelope_RowChange{RowChange: &RowChange{Host: 1, Ops: []*RowOp{{Op: RowOp_OP_ADD, Row: &Row{App: app("10.0.0.1:80")}}}}}},
		"op":                {Version: 1, Body: &Envelope_RowChange{RowChange: &RowChange{Host: 1, Ops: []*RowOp{{Row: row("10.0.0.1:80", 1)}}}}},
		"address form":      {Version: 1, Body: &Envelope_Postulate{Postulate: &PostulateState{Host: 1, App: &AppID{Proto: "tcp", Endpoint: "10.0.0.01:80"}, State: State_STATE_ACTIVE}}},
		"no address":        {Version: 1, Body: &Envelope_Postulate{Postulate: &PostulateState{Host: 1, App: &AppID{Proto: "tcp"}, State: State_STATE_ACTIVE}}},
		"proto":             {Version: 1, Body: &Envelope_Postulate{Postulate: &PostulateState{Host: 1, App: &AppID{Proto: "TCP!", Endpoint: "10.0.0.1:80"}, State: State_STATE_ACTIVE}}},
		"url":               {Version: 1, Body: &Envelope_Postulate{Postulate: &PostulateState{Host: 1, App: &AppID{Proto: "http", Endpoint: "10.0.0.1:80", Url: "/a b"}, State: State_STATE_ACTIVE}}},
		"snapshot chunk":    {Version: 1, Body: &Envelope_SendSnapshot{SendSnapshot: &SendSnapshot{Host: 1, Chunks: []uint32{(ChunkOf(app("10.0.0.1:80")) + 1) % NumChunks}, Rows: []*Row{row("10.0.0.1:80", 1)}}}},
		"snapshot no chunk": {Version: 1, Body: &Envelope_SendSnapshot{SendSnapshot: &SendSnapshot{Host: 1}}},
		"wrong missing":     {Version: 1, Body: &Envelope_PostulateWrong{PostulateWrong: &PostulateWrong{Unit: 1, Host: 1, App: app("10.0.0.1:80"), Missing: true, Held: State_STATE_ACTIVE}}},
		"empty aggregate":   {Version: 1, Body: &Envelope_Aggregate{Aggregate: &Aggregate{Leader: 1}}},
		"envelope version":  {Version: 2, Body: &Envelope_Goodbye{Goodbye: &Goodbye{Host: 1}}},
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

// TestWriteSeeds keeps the fuzz seed corpus in step with samples().
func TestWriteSeeds(t *testing.T) {
	if os.Getenv("TETHER_WRITE_SEEDS") == "" {
		t.Skip("set TETHER_WRITE_SEEDS=1 to rewrite testdata/fuzz/FuzzDecode")
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzDecode")
	os.MkdirAll(dir, 0o755)
	c, _ := NewCodec(nil)
	for i, env := range samples() {
		b, _ := c.Encode(env, i%2 == 1)
		name := fmt.Sprintf("%d-%s", i, strings.ReplaceAll(Kind(env), "_", "-"))
		body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", b)
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// FuzzDecode: no datagram panics the decoder or validator; whatever
// passes both survives a re-encoding unchanged.
func FuzzDecode(f *testing.F) {
	c, _ := NewCodec(nil)
	for _, env := range samples() {
		b, _ := c.Encode(env, true)
		f.Add(bytes.Clone(b))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		env, err := c.Decode(b)
		if err != nil {
			return
		}
		if Validate(env) != nil {
			return
		}
		again, err := c.Encode(env, false)
		if err != nil {
			return // valid but larger than a datagram once uncompressed
		}
		env2, err := c.Decode(bytes.Clone(again))
		if err != nil || Validate(env2) != nil || !proto.Equal(env, env2) {
			t.Fatalf("valid message did not survive re-encoding: %v", err)
		}
	})
}

// TestDecompressionBomb: a small datagram that inflates past MaxMessage
// is refused before it is decoded.
func TestDecompressionBomb(t *testing.T) {
	c, _ := NewCodec(nil)
	big := make([]byte, 4*MaxMessage)
	z := c.enc.EncodeAll(big, []byte{'T', 'H', Version, flagCompressed})
	if len(z) > MaxDatagram {
		t.Fatalf("bomb of %d bytes does not fit a datagram", len(z))
	}
	_, err := c.Decode(z)
	if !errors.Is(err, ErrCompressed) && !errors.Is(err, ErrOversized) {
		t.Fatalf("a %d-byte datagram inflating to %d bytes: %v", len(z), len(big), err)
	}
	if r := Reason(err); r != "compression" && r != "oversized" {
		t.Fatalf("counted as %q", r)
	}
}
