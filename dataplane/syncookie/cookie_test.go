package syncookie

import (
	"testing"
	"time"

	"github.com/tetherlb/tether/dataplane/header"
)

func testKey(t testing.TB, epoch int64, seed byte) Key {
	t.Helper()
	var raw [KeySize]byte
	for i := range raw {
		raw[i] = seed + byte(i)
	}
	k, err := NewKey(epoch, raw)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestCookieChecks: a cookie validates under its own key for its own
// flow, ISN and MSS class, under cur or prev by its parity, and under
// nothing else.
func TestCookieChecks(t *testing.T) {
	var m MAC
	prev, cur, other := testKey(t, 9, 1), testKey(t, 10, 2), testKey(t, 10, 3)
	tu := Tuple{Client: [4]byte{198, 51, 100, 7}, VIP: [4]byte{192, 0, 2, 80}, ClientPort: 40000, VIPPort: 80}
	for idx := range uint32(8) {
		for _, k := range []*Key{&cur, &prev} {
			c := m.Cookie(k, &tu, 1234, idx)
			if got, ok := m.Check(&cur, &prev, &tu, 1234, c); !ok || got != idx {
				t.Fatalf("epoch %d class %d: check %d %v", k.Epoch, idx, got, ok)
			}
			if _, ok := m.Check(&cur, &prev, &tu, 1235, c); ok {
				t.Fatal("another ISN's cookie validated")
			}
			if _, ok := m.Check(&cur, &prev, &tu, 1234, c^1<<MSSShift); ok {
				t.Fatal("a cookie with its MSS class changed validated")
			}
			if _, ok := m.Check(&other, &Key{}, &tu, 1234, c); ok && k == &cur {
				t.Fatal("another key's cookie validated")
			}
		}
	}
	c := m.Cookie(&prev, &tu, 1, 0)
	if _, ok := m.Check(&cur, &Key{}, &tu, 1, c); ok {
		t.Fatal("a previous epoch's cookie validated without its key")
	}
}

// TestSYNACK: the SYN-ACK's options carry what the SYN offered, its
// checksums verify, and its TSval is never ahead of the clock.
func TestSYNACK(t *testing.T) {
	var m MAC
	k := testKey(t, 10, 1)
	tu := Tuple{Client: [4]byte{198, 51, 100, 7}, VIP: [4]byte{192, 0, 2, 80}, ClientPort: 40000, VIPPort: 80}
	p := Params{MSS: 1400, WScale: 7, Window: 4096}
	for _, now := range []uint32{0, 5, 0x1f, 0x20, 0xffffffe0, 12345678} {
		s := SYN{Seq: 99, MSS: 1460, TS: true, TSV: 7, WS: true, WSh: 9, SACK: true}
		b := m.SYNACK(make([]byte, 0, MaxSYNACK), &k, now, &p, &tu, &s)
		ip := header.IPv4(b)
		tc := header.TCP(b[header.IPv4MinSize:])
		o, ok := header.ParseTCPOptions(tc)
		if !ok || tc.Flags() != flagSYN|flagACK || tc.Ack() != 100 || tc.Window() != 4096 || o.MSS != 1400 || o.WindowScale != 7 || !o.SACKPermitted || o.TSEcr != 7 {
			t.Fatalf("SYN-ACK %x: options %+v", b, o)
		}
		if o.TSVal&TSOptMask != 9|TSSACK || before(now, o.TSVal) {
			t.Fatalf("clock %d: TSval %d", now, o.TSVal)
		}
		if header.Checksum(b[:header.IPv4MinSize], 0) != 0 || header.Checksum(tc, header.PseudoHeaderSum(6, ip.Src(), ip.Dst(), uint32(len(tc)))) != 0 {
			t.Fatal("bad checksum")
		}
		if idx, ok := m.Check(&k, &Key{}, &tu, 99, tc.Seq()); !ok || MSSClasses[idx] != 1460 {
			t.Fatalf("the SYN-ACK's cookie: class %d %v", idx, ok)
		}
	}
	if EpochOf := Epoch(time.Unix(128, 0), 64*time.Second); EpochOf != 2 {
		t.Fatalf("epoch %d", EpochOf)
	}
}

// TestNoAllocs: answering a SYN allocates nothing.
func TestNoAllocs(t *testing.T) {
	type holder struct {
		m   MAC
		k   Key
		out [MaxSYNACK]byte
	}
	h := &holder{k: testKey(t, 3, 1)}
	tu := Tuple{Client: [4]byte{198, 51, 100, 7}, VIP: [4]byte{192, 0, 2, 80}, ClientPort: 40000, VIPPort: 80}
	p := Params{MSS: 1400, WScale: 7, Window: 4096}
	s := SYN{Seq: 99, MSS: 1460, TS: true, TSV: 7, WS: true, WSh: 9, SACK: true}
	if n := testing.AllocsPerRun(100, func() {
		b := h.m.SYNACK(h.out[:0], &h.k, 1000, &p, &tu, &s)
		h.m.Check(&h.k, &Key{}, &tu, 99, header.TCP(b[header.IPv4MinSize:]).Seq())
	}); n != 0 {
		t.Fatalf("%v allocations per SYN-ACK", n)
	}
}
