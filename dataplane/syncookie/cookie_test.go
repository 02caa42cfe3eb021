package syncookie

import (
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/tetherlb/tether/dataplane/header"
)

// tuples are a flow of each family.
var tuples = map[string]Tuple{
	"ipv4": {Client: netip.MustParseAddr("198.51.100.7"), VIP: netip.MustParseAddr("192.0.2.80"), ClientPort: 40000, VIPPort: 80},
	"ipv6": {Client: netip.MustParseAddr("2001:db8:7::7"), VIP: netip.MustParseAddr("2001:db8::80"), ClientPort: 40000, VIPPort: 80},
}

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
	for fam, tu := range tuples {
		t.Run(fam, func(t *testing.T) { testCookieChecks(t, tu) })
	}
}

func testCookieChecks(t *testing.T, tu Tuple) {
	var m MAC
	prev, cur, other := testKey(t, 9, 1), testKey(t, 10, 2), testKey(t, 10, 3)
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
			// Every field of the tuple is in the MAC.
			for _, o := range otherTuples(tu) {
				if _, ok := m.Check(&cur, &prev, &o, 1234, c); ok {
					t.Fatalf("the cookie of %+v validated for %+v", tu, o)
				}
			}
		}
	}
	c := m.Cookie(&prev, &tu, 1, 0)
	if _, ok := m.Check(&cur, &Key{}, &tu, 1, c); ok {
		t.Fatal("a previous epoch's cookie validated without its key")
	}
}

// otherTuples are tu with one field changed each: the last byte of
// either address, either port.
func otherTuples(tu Tuple) []Tuple {
	flip := func(a netip.Addr) netip.Addr {
		b := a.AsSlice()
		b[len(b)-1] ^= 1
		r, _ := netip.AddrFromSlice(b)
		return r
	}
	out := []Tuple{tu, tu, tu, tu}
	out[0].Client = flip(tu.Client)
	out[1].VIP = flip(tu.VIP)
	out[2].ClientPort++
	out[3].VIPPort++
	return out
}

// TestSYNACK: the SYN-ACK's options carry what the SYN offered, its
// addresses and checksums are right, and its TSval is never ahead of
// the clock, in both families.
func TestSYNACK(t *testing.T) {
	for fam, tu := range tuples {
		t.Run(fam, func(t *testing.T) { testSYNACK(t, tu) })
	}
	if EpochOf := Epoch(time.Unix(128, 0), 64*time.Second); EpochOf != 2 {
		t.Fatalf("epoch %d", EpochOf)
	}
}

func testSYNACK(t *testing.T, tu Tuple) {
	var m MAC
	k := testKey(t, 10, 1)
	p := Params{MSS: 1400, WScale: 7, Window: 4096}
	for _, now := range []uint32{0, 5, 0x1f, 0x20, 0xffffffe0, 12345678} {
		s := SYN{Seq: 99, MSS: 1460, TS: true, TSV: 7, WS: true, WSh: 9, SACK: true}
		b := m.SYNACK(make([]byte, 0, MaxSYNACK), &k, now, &p, &tu, &s)
		var src, dst []byte
		var tc header.TCP
		if tu.Client.Is4() {
			ip := header.IPv4(b)
			if header.Checksum(b[:header.IPv4MinSize], 0) != 0 || int(ip.TotalLength()) != len(b) || ip.Protocol() != header.IPProtoTCP {
				t.Fatalf("IPv4 header %x", b[:header.IPv4MinSize])
			}
			src, dst, tc = ip.Src(), ip.Dst(), header.TCP(b[header.IPv4MinSize:])
		} else {
			ip := header.IPv6(b)
			if ip.Version() != 6 || int(ip.PayloadLength()) != len(b)-header.IPv6Size || ip.NextHeader() != header.IPProtoTCP || ip.HopLimit() == 0 {
				t.Fatalf("IPv6 header %x", b[:header.IPv6Size])
			}
			src, dst, tc = ip.Src(), ip.Dst(), header.TCP(b[header.IPv6Size:])
		}
		if !slices.Equal(src, tu.VIP.AsSlice()) || !slices.Equal(dst, tu.Client.AsSlice()) || tc.SrcPort() != tu.VIPPort || tc.DstPort() != tu.ClientPort {
			t.Fatalf("SYN-ACK %x from %x to %x", b, src, dst)
		}
		o, ok := header.ParseTCPOptions(tc)
		if !ok || tc.Flags() != flagSYN|flagACK || tc.Ack() != 100 || tc.Window() != 4096 || o.MSS != 1400 || o.WindowScale != 7 || !o.SACKPermitted || o.TSEcr != 7 {
			t.Fatalf("SYN-ACK %x: options %+v", b, o)
		}
		if o.TSVal&TSOptMask != 9|TSSACK || before(now, o.TSVal) {
			t.Fatalf("clock %d: TSval %d", now, o.TSVal)
		}
		if header.Checksum(tc, header.PseudoHeaderSum(header.IPProtoTCP, src, dst, uint32(len(tc)))) != 0 {
			t.Fatal("bad checksum")
		}
		if idx, ok := m.Check(&k, &Key{}, &tu, 99, tc.Seq()); !ok || MSSClasses[idx] != 1460 {
			t.Fatalf("the SYN-ACK's cookie: class %d %v", idx, ok)
		}
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
	p := Params{MSS: 1400, WScale: 7, Window: 4096}
	s := SYN{Seq: 99, MSS: 1460, TS: true, TSV: 7, WS: true, WSh: 9, SACK: true}
	for fam, tu := range tuples {
		if n := testing.AllocsPerRun(100, func() {
			b := h.m.SYNACK(h.out[:0], &h.k, 1000, &p, &tu, &s)
			h.m.Check(&h.k, &Key{}, &tu, 99, header.TCP(b[len(b)-header.TCPMinSize-MaxOptions:]).Seq()) // every option
		}); n != 0 {
			t.Fatalf("%s: %v allocations per SYN-ACK", fam, n)
		}
	}
}
