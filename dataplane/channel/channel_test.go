package channel

import (
	"bytes"
	"encoding/binary"
	"errors"
	"path/filepath"
	"reflect"
	"slices"
	"testing"

	"github.com/tetherlb/tether/api/unit"
)

func key6() unit.FlowKey {
	return unit.FlowKey{V6: true, Src: [16]byte{0x20, 0x01, 15: 1}, Dst: [16]byte{0xfd, 15: 2}, SrcPort: 1234, DstPort: 443, Proto: 6}
}

func TestRoundTrips(t *testing.T) {
	h := Hello{Role: RoleForwarder, PID: 42, Workers: 3, Generation: 7, Name: "unit-a"}
	msg := AppendHello(nil, 1, &h)
	hdr, p, err := ParseHeader(msg)
	if err != nil || hdr.Type != THello || hdr.Seq != 1 {
		t.Fatalf("header %+v, %v", hdr, err)
	}
	if got, err := DecodeHello(p); err != nil || got != h {
		t.Fatalf("hello %+v, %v", got, err)
	}
	for _, pu := range []Punt{
		{Worker: 2, Reason: PuntAccept, VIP: 9, ID: 0xdeadbeef, Choice: 4, Key: key6(), Frame: []byte("frame bytes")},
		{Worker: 1, Reason: PuntMidFlow, VIP: 3, Choice: 7, Key: key6(), Frame: []byte("an ACK")},
		{Worker: 1, Reason: PuntMidFlow, VIP: 3, Choice: NoChoice, Key: key6(), Frame: []byte("a nat VIP's ACK")},
	} {
		_, p, _ = ParseHeader(AppendPunt(nil, 2, &pu))
		if got, err := DecodePunt(p); err != nil || !reflect.DeepEqual(got, pu) {
			t.Fatalf("punt %+v, %v", got, err)
		}
	}
	for _, an := range []Answer{
		{Worker: 3, ID: 0xdeadbeef, Packet: []byte("an IP packet")},
		{Worker: 3, ID: 7, Packet: []byte("an ACK"), Route: Route{Op: RouteAdd, Worker: AnyWorker, Key: key6(), Action: unit.Action{Mode: 4, Backend: 2, B: [16]byte{0x80}}}},
		{Worker: 1, ID: 8, Packet: []byte{}, Route: Route{Op: RouteRelease, Worker: 1, Key: key6()}},
	} {
		_, p, _ = ParseHeader(AppendAnswer(nil, 2, &an))
		if got, err := DecodeAnswer(p); err != nil || !reflect.DeepEqual(got, an) {
			t.Fatalf("answer %+v, %v", got, err)
		}
	}
	// A route after the packet must be whole and of a known op.
	withRoute := AppendAnswer(nil, 2, &Answer{Packet: []byte{1}, Route: Route{Op: RouteDelete, Key: key6()}})
	for _, bad := range [][]byte{withRoute[:len(withRoute)-1], append(slices.Clone(withRoute[:HeaderSize+8]), 9)} {
		if _, err := DecodeAnswer(bad[HeaderSize:]); err == nil {
			t.Fatalf("answer % x decoded", bad)
		}
	}
	long := AppendAnswer(nil, 2, &Answer{Packet: make([]byte, MaxAnswer)})
	binary.BigEndian.PutUint16(long[HeaderSize+5:], MaxAnswer+1)
	long = append(long, 0)
	if _, err := DecodeAnswer(long[HeaderSize:]); !errors.Is(err, ErrLength) {
		t.Fatalf("answer over MaxAnswer: %v", err)
	}
	ro := Route{Op: RouteAdd, Worker: AnyWorker, Key: key6(), Action: unit.Action{Mode: 2, Backend: 5, A: [16]byte{1}, B: [16]byte{2}, PortA: 80, PortB: 1000}}
	_, p, _ = ParseHeader(AppendRoute(nil, 3, &ro))
	if got, err := DecodeRoute(p); err != nil || got != ro {
		t.Fatalf("route %+v, %v", got, err)
	}
	for _, op := range []uint8{RouteDelete, RouteRelease, RouteRefuse} {
		keyOnly := Route{Op: op, Worker: 1, Key: key6()}
		_, p, _ = ParseHeader(AppendRoute(nil, 3, &keyOnly))
		if got, err := DecodeRoute(p); err != nil || got != keyOnly {
			t.Fatalf("route op %d: %+v, %v", op, got, err)
		}
	}
	fes := []FlowEvent{{Kind: FlowOpened, Worker: 1, Key: key6(), Action: ro.Action}, {Kind: FlowExpired, Key: key6()}}
	_, p, _ = ParseHeader(AppendFlowEvents(nil, 4, fes))
	if got, err := DecodeFlowEvents(nil, p); err != nil || !reflect.DeepEqual(got, fes) {
		t.Fatalf("flow events %+v, %v", got, err)
	}
}

func TestChunkedBodies(t *testing.T) {
	body := bytes.Repeat([]byte("0123456789"), 30_000) // 300 kB: 5 chunks
	msgs := AppendCalls(nil, 77, "reload", body)
	if len(msgs) < 2 {
		t.Fatalf("%d messages for 300 kB", len(msgs))
	}
	var a Assembler
	var got []byte
	// Deliver out of order.
	for i := len(msgs) - 1; i >= 0; i-- {
		if len(msgs[i]) > MaxMessage {
			t.Fatalf("message %d is %d bytes", i, len(msgs[i]))
		}
		h, p, err := ParseHeader(msgs[i])
		if err != nil {
			t.Fatal(err)
		}
		c, err := DecodeCall(p)
		if err != nil || c.Method != "reload" {
			t.Fatalf("call %+v, %v", c, err)
		}
		whole, done, err := a.Add(h.Seq, c.Chunk, c.Chunks, c.Body)
		if err != nil {
			t.Fatal(err)
		}
		if done {
			got = whole
		}
	}
	if !bytes.Equal(got, body) {
		t.Fatalf("reassembled %d bytes, want %d", len(got), len(body))
	}
	rets := AppendReturns(nil, 77, "no such flow", []byte("{}"))
	_, p, _ := ParseHeader(rets[0])
	if r, err := DecodeReturn(p); err != nil || r.Err != "no such flow" || string(r.Body) != "{}" {
		t.Fatalf("return %+v, %v", r, err)
	}
}

func TestMalformed(t *testing.T) {
	good := AppendRoute(nil, 1, &Route{Op: RouteAdd, Key: key6()})
	cases := map[string][]byte{
		"empty":     nil,
		"magic":     append([]byte{'X'}, good[1:]...),
		"version":   append([]byte{'T', 9}, good[2:]...),
		"truncated": good[:len(good)-3],
		"trailing":  append(append([]byte(nil), good...), 0),
		"family":    func() []byte { b := append([]byte(nil), good...); b[HeaderSize+2] = 5; return b }(),
		"op":        func() []byte { b := append([]byte(nil), good...); b[HeaderSize] = 9; return b }(),
	}
	for name, msg := range cases {
		_, p, err := ParseHeader(msg)
		if err == nil {
			_, err = DecodeRoute(p)
		}
		if err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	// A punt's reason is one the receiver knows what to do with.
	for _, reason := range []uint8{0, PuntMidFlow + 1, 0xff} {
		msg := AppendPunt(nil, 1, &Punt{Reason: reason, Key: key6(), Frame: []byte{0x45}})
		if _, err := DecodePunt(msg[HeaderSize:]); !errors.Is(err, ErrValue) {
			t.Errorf("punt reason %d: %v", reason, err)
		}
	}
	// A refusal is a key alone: an action after it is trailing bytes.
	refuse := AppendRoute(nil, 1, &Route{Op: RouteRefuse, Key: key6()})
	withAction := appendAction(append([]byte(nil), refuse...), &unit.Action{Backend: 1})
	if _, err := DecodeRoute(withAction[HeaderSize:]); err == nil {
		t.Error("a refusal with an action accepted")
	}
	if _, err := DecodeCall(AppendCalls(nil, 1, "x", nil)[0][HeaderSize:]); err != nil {
		t.Fatal(err)
	}
	var a Assembler
	a.Add(5, 0, 3, []byte("a"))
	if _, _, err := a.Add(5, 1, 4, []byte("b")); !errors.Is(err, ErrValue) {
		t.Fatalf("inconsistent chunk count accepted: %v", err)
	}
}

func TestConn(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ch.sock")
	l, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	done := make(chan *Conn)
	go func() {
		c, err := Accept(l)
		if err != nil {
			t.Error(err)
		}
		done <- c
	}()
	c, err := Dial(path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s := <-done
	defer s.Close()
	for i := range 3 {
		if err := c.Send(AppendBarrier(nil, uint32(i))); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 3 {
		m, err := s.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if h, _, err := ParseHeader(m); err != nil || h.Type != TBarrier || h.Seq != uint32(i) {
			t.Fatalf("message %d: %+v %v (boundaries lost?)", i, h, err)
		}
	}
}

// FuzzDecode: no message makes a decoder panic, and what decodes encodes
// back to the same bytes.
func FuzzDecode(f *testing.F) {
	f.Add(AppendHello(nil, 1, &Hello{Role: 1, Name: "x"}))
	f.Add(AppendPunt(nil, 2, &Punt{Reason: PuntNewFlow, Key: key6(), Frame: []byte{1, 2, 3}}))
	f.Add(AppendPunt(nil, 11, &Punt{Reason: PuntMidFlow, Choice: NoChoice, Key: key6(), Frame: []byte{0x45, 0}}))
	f.Add(AppendRoute(nil, 12, &Route{Op: RouteRefuse, Worker: AnyWorker, Key: key6()}))
	f.Add(AppendRoute(nil, 3, &Route{Op: RouteAdd, Key: key6()}))
	f.Add(AppendFlowEvents(nil, 4, []FlowEvent{{Kind: 1, Key: key6()}}))
	f.Add(AppendCalls(nil, 5, "stats", []byte(`{"a":1}`))[0])
	f.Add(AppendReturns(nil, 6, "", []byte(`{}`))[0])
	f.Add(AppendLost(nil, 7, 12345))
	f.Add(AppendPunt(nil, 8, &Punt{Reason: PuntAccept, ID: 77, Key: key6(), Frame: []byte{0x45, 0}}))
	f.Add(AppendAnswer(nil, 9, &Answer{Worker: 1, ID: 77, Packet: []byte{0x45, 0, 0, 20}}))
	f.Add(AppendAnswer(nil, 13, &Answer{Worker: 1, ID: 78, Packet: []byte{0x45, 0}, Route: Route{Op: RouteAdd, Worker: AnyWorker, Key: key6()}}))
	f.Add(AppendSYNKeys(nil, 10, testSYNKeys()))
	f.Fuzz(func(t *testing.T, msg []byte) {
		h, p, err := ParseHeader(msg)
		if err != nil {
			return
		}
		var back []byte
		switch h.Type {
		case THello:
			if m, err := DecodeHello(p); err == nil {
				back = AppendHello(nil, h.Seq, &m)
			}
		case TPunt:
			if m, err := DecodePunt(p); err == nil {
				back = AppendPunt(nil, h.Seq, &m)
			}
		case TRoute:
			if m, err := DecodeRoute(p); err == nil {
				back = AppendRoute(nil, h.Seq, &m)
			}
		case TFlowEvent:
			if m, err := DecodeFlowEvents(nil, p); err == nil {
				back = AppendFlowEvents(nil, h.Seq, m)
			}
		case TAnswer:
			if m, err := DecodeAnswer(p); err == nil {
				back = AppendAnswer(nil, h.Seq, &m)
			}
		case TSYNKeys:
			if m, err := DecodeSYNKeys(p); err == nil {
				back = AppendSYNKeys(nil, h.Seq, m)
			}
		case TCall:
			_, _ = DecodeCall(p)
		case TReturn:
			_, _ = DecodeReturn(p)
		case TLost:
			if n, err := DecodeLost(p); err == nil {
				back = AppendLost(nil, h.Seq, n)
			}
		}
		if back != nil {
			back[3] = msg[3] // flags are not interpreted
			if !bytes.Equal(back, msg) {
				t.Fatalf("re-encoded differently:\n% x\n% x", msg, back)
			}
		}
	})
}
