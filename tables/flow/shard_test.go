package flow

import (
	"encoding/binary"
	"math/rand/v2"
	"testing"

	"github.com/tetherlb/tether/api/unit"
)

func key4(i int) Key4 {
	var k Key4
	binary.BigEndian.PutUint32(k.Src[:], 0x0a000000|uint32(i>>16))
	k.Dst = [4]byte{192, 0, 2, 1}
	k.SrcPort = uint16(i)
	k.DstPort = 80
	k.Proto = protoTCP
	return k
}

func key6(i int) Key6 {
	var k Key6
	k.Src[0], k.Src[1] = 0x20, 0x01
	binary.BigEndian.PutUint32(k.Src[12:], uint32(i))
	k.Dst[0], k.Dst[15] = 0xfd, 1
	k.SrcPort, k.DstPort, k.Proto = uint16(i), 443, protoUDP
	return k
}

func newShard(t testing.TB, max int) *Shard {
	t.Helper()
	s, err := NewShard(Config{MaxFlows: max, Timeouts: DefaultTimeouts(), Seed: 42})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// checkInvariants verifies the Robin Hood invariants: every entry is
// found by lookup, its distance matches its position, and n is right.
func checkInvariants4(t *testing.T, tb *table4) {
	t.Helper()
	n := 0
	for i := range tb.slots {
		sl := &tb.slots[i]
		if sl.dist == 0 {
			continue
		}
		n++
		h := sl.key.Hash(tb.seed)
		want := (i - tb.home(h) + len(tb.slots)) % len(tb.slots)
		if int(sl.dist)-1 != want {
			t.Fatalf("slot %d: dist %d, want %d", i, sl.dist-1, want)
		}
		if tb.lookup(&sl.key, h) != &sl.val {
			t.Fatalf("slot %d: lookup does not find its own key", i)
		}
	}
	if n != tb.n {
		t.Fatalf("n = %d, counted %d", tb.n, n)
	}
}

func TestShardMatchesMap(t *testing.T) {
	// A differential test: random inserts, lookups and deletes against a
	// Go map, with the table well below its bound so nothing is evicted.
	s := newShard(t, 4096)
	ref := map[Key4]uint32{}
	rng := rand.New(rand.NewPCG(1, 2))
	for op := 0; op < 200_000; op++ {
		k := key4(rng.IntN(3000))
		h := s.Hash4(&k)
		switch rng.IntN(3) {
		case 0:
			if _, ok := ref[k]; ok {
				continue
			}
			v := Value4{Meta: Meta{Backend: uint32(op)}}
			if s.Insert4(&k, h, &v, 0) == nil {
				t.Fatalf("op %d: insert refused with %d entries", op, len(ref))
			}
			ref[k] = uint32(op)
		case 1:
			got := s.Lookup4(&k, h)
			want, ok := ref[k]
			if (got != nil) != ok || (ok && got.Backend != want) {
				t.Fatalf("op %d: lookup(%v) = %v, want %v (present %v)", op, k, got, want, ok)
			}
		case 2:
			_, ok := ref[k]
			if s.Delete4(&k) != ok {
				t.Fatalf("op %d: delete(%v) != %v", op, k, ok)
			}
			delete(ref, k)
		}
	}
	if n, _ := s.Len(); n != len(ref) {
		t.Fatalf("Len = %d, want %d", n, len(ref))
	}
	checkInvariants4(t, s.v4)
}

func TestShardIPv6(t *testing.T) {
	s := newShard(t, 1000)
	for i := range 1000 {
		k := key6(i)
		if s.Insert6(&k, s.Hash6(&k), &Value6{Meta: Meta{Backend: uint32(i)}}, 0) == nil {
			t.Fatalf("insert %d refused", i)
		}
	}
	for i := range 1000 {
		k := key6(i)
		if v := s.Lookup6(&k, s.Hash6(&k)); v == nil || v.Backend != uint32(i) {
			t.Fatalf("lookup %d = %v", i, v)
		}
	}
	if _, n := s.Len(); n != 1000 {
		t.Fatalf("Len v6 = %d", n)
	}
}

func TestShardBoundAndEviction(t *testing.T) {
	const max = 1000
	s := newShard(t, max)
	for i := range 5 * max {
		k := key4(i)
		v := Value4{Meta: Meta{LastSeen: Tick(i)}}
		if s.Insert4(&k, s.Hash4(&k), &v, Tick(i)) == nil {
			t.Fatalf("insert %d refused: eviction should make room", i)
		}
		if n, _ := s.Len(); n > max {
			t.Fatalf("after %d inserts Len = %d > bound %d", i+1, n, max)
		}
	}
	checkInvariants4(t, s.v4)
	st := s.Stats()
	if st.Evicted != 4*max {
		t.Fatalf("Evicted = %d, want %d", st.Evicted, 4*max)
	}
	// Eviction prefers the idlest: the survivors are mostly recent.
	recent := 0
	for i := 4 * max; i < 5*max; i++ {
		k := key4(i)
		if s.Lookup4(&k, s.Hash4(&k)) != nil {
			recent++
		}
	}
	if recent < max*8/10 {
		t.Fatalf("only %d of the last %d flows survived; eviction is not preferring idle flows", recent, max)
	}
}

func TestEvictionPrefersClosed(t *testing.T) {
	const max = 500
	s := newShard(t, max)
	for i := range max {
		k := key4(i)
		v := Value4{Meta: Meta{LastSeen: 1000}}
		if i%2 == 0 {
			// Closed, but more recent than the rest. Half the table is
			// closed so that every eviction window of 32 slots holds one.
			v.Flags = unit.FlowRST
			v.LastSeen = 2000
		}
		s.Insert4(&k, s.Hash4(&k), &v, 1000)
	}
	for i := max; i < max+20; i++ {
		k := key4(i)
		s.Insert4(&k, s.Hash4(&k), &Value4{Meta: Meta{LastSeen: 3000}}, 3000)
	}
	closedLeft := 0
	for i := 0; i < max; i += 2 {
		k := key4(i)
		if s.Lookup4(&k, s.Hash4(&k)) != nil {
			closedLeft++
		}
	}
	if closedLeft != max/2-20 {
		t.Fatalf("%d closed flows left, want %d: eviction should take closed flows first", closedLeft, max/2-20)
	}
}

// TestEvictionPrefersHalfOpen: under a SYN flood that fills the table,
// the handshakes that never completed go before established
// connections, even idler ones.
func TestEvictionPrefersHalfOpen(t *testing.T) {
	const max = 500
	s := newShard(t, max)
	for i := range max {
		k := key4(i)
		v := Value4{Meta: Meta{LastSeen: 1000, Flags: unit.FlowSYN | unit.FlowEstablished}}
		if i%2 == 0 {
			v.Flags, v.LastSeen = unit.FlowSYN, 2000 // half-open, and more recent
		}
		s.Insert4(&k, s.Hash4(&k), &v, 1000)
	}
	for i := max; i < max+20; i++ {
		k := key4(i)
		s.Insert4(&k, s.Hash4(&k), &Value4{Meta: Meta{LastSeen: 3000, Flags: unit.FlowSYN}}, 3000)
	}
	established := 0
	for i := 1; i < max; i += 2 {
		k := key4(i)
		if s.Lookup4(&k, s.Hash4(&k)) != nil {
			established++
		}
	}
	if established != max/2 {
		t.Fatalf("%d of %d established flows left: eviction should take half-open ones first", established, max/2)
	}
	if !HalfOpen(unit.FlowSYN) || HalfOpen(unit.FlowSYN|unit.FlowEstablished) || HalfOpen(unit.FlowSYN|unit.FlowRST) || HalfOpen(0) {
		t.Error("HalfOpen is not SYN without a later ACK, FIN or RST")
	}
}

func natPair(i int) (Key4, Value4, Value4) {
	k := key4(i)
	v := Value4{Meta: Meta{PortA: 8080, PortB: uint16(20000 + i)}, A: [4]byte{10, 1, 0, 1}, B: [4]byte{10, 9, 0, 1}}
	peer := Value4{Meta: Meta{PortA: k.SrcPort, PortB: k.DstPort}, A: k.Src, B: k.Dst}
	return k, v, peer
}

func TestPairsLiveAndDieTogether(t *testing.T) {
	s := newShard(t, 100)
	k, v, peer := natPair(7)
	v.LastSeen, peer.LastSeen = 0, 0
	if s.InsertPair4(&k, s.Hash4(&k), &v, &peer, 0) == nil {
		t.Fatal("InsertPair4 refused")
	}
	pk := PeerKey4(&k, &v)
	back := PeerKey4(&pk, s.Lookup4(&pk, s.Hash4(&pk)))
	if back != k {
		t.Fatalf("peer of peer = %v, want %v", back, k)
	}
	if n, _ := s.Len(); n != 2 {
		t.Fatalf("Len = %d, want 2", n)
	}
	// Replies keep the pair alive although the client direction is idle.
	s.Lookup4(&pk, s.Hash4(&pk)).LastSeen = 899_000
	s.Lookup4(&pk, s.Hash4(&pk)).Flags |= unit.FlowEstablished
	if got := s.Expire(900_500, 1000); got != 0 {
		t.Fatalf("Expire removed %d entries of a pair whose replies are recent", got)
	}
	if got := s.Expire(899_000+900_001, 1000); got != 2 {
		t.Fatalf("Expire removed %d entries, want the whole pair (2)", got)
	}
	// Delete of either half takes both.
	s.InsertPair4(&k, s.Hash4(&k), &v, &peer, 0)
	if !s.Delete4(&pk) {
		t.Fatal("Delete4 of the reply half failed")
	}
	if n, _ := s.Len(); n != 0 {
		t.Fatalf("Len after delete = %d, want 0", n)
	}
}

func TestExpireTimeoutsByState(t *testing.T) {
	to := DefaultTimeouts()
	cases := []struct {
		name  string
		proto uint8
		flags unit.FlowFlags
		want  uint32
	}{
		{"tcp syn", protoTCP, unit.FlowSYN, to.TCPSyn},
		{"tcp established", protoTCP, unit.FlowSYN | unit.FlowEstablished, to.TCPEstablished},
		{"tcp fin", protoTCP, unit.FlowEstablished | unit.FlowFIN, to.TCPFin},
		{"tcp rst", protoTCP, unit.FlowEstablished | unit.FlowRST, to.TCPClosed},
		{"udp", protoUDP, 0, to.UDP},
		{"other", 132, 0, to.Other},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := newShard(t, 10)
			k := key4(1)
			k.Proto = c.proto
			s.Insert4(&k, s.Hash4(&k), &Value4{Meta: Meta{LastSeen: 5, Flags: c.flags}}, 5)
			if n := s.Expire(Tick(5+c.want), 100); n != 0 {
				t.Fatalf("expired at exactly the timeout (%d ms)", c.want)
			}
			if n := s.Expire(Tick(5+c.want+1), 100); n != 1 {
				t.Fatalf("not expired after the timeout (%d ms)", c.want)
			}
		})
	}
}

func TestTickWraps(t *testing.T) {
	if got := Tick(5).Since(Tick(0xffff_fff0)); got != 21 {
		t.Fatalf("Since across the wrap = %d, want 21", got)
	}
	if got := Tick(5).Since(10); got != 0 {
		t.Fatalf("Since of a future tick = %d, want 0", got)
	}
}

func TestNoAllocs(t *testing.T) {
	s := newShard(t, 1<<12)
	k := key4(1)
	h := s.Hash4(&k)
	v := Value4{}
	allocs := testing.AllocsPerRun(1000, func() {
		s.Insert4(&k, h, &v, 0)
		if s.Lookup4(&k, h) == nil {
			panic("missing")
		}
		s.Delete4(&k)
		s.Expire(0, 16)
	})
	if allocs != 0 {
		t.Fatalf("insert/lookup/delete/expire allocate %v times per run", allocs)
	}
}

func TestNewShardRejectsTinyBound(t *testing.T) {
	if _, err := NewShard(Config{MaxFlows: 1}); err == nil {
		t.Fatal("NewShard accepted MaxFlows 1")
	}
}

// TestWalkSeesSurvivorsOnce: a walk in small steps, with random inserts
// and deletes between the steps (which move entries across the walk's
// position by Robin Hood displacement and backward shifts), reports every
// entry that lived through the whole walk exactly once, and nothing
// that was never in the table. A walk by slot position fails this.
func TestWalkSeesSurvivorsOnce(t *testing.T) {
	for _, step := range []int{1, 7, 64} {
		s := newShard(t, 4096) // 3,000 to 4,000 entries: nothing evicted
		rng := rand.New(rand.NewPCG(3, uint64(step)))
		live := map[Key4]bool{}
		for len(live) < 3000 {
			k := key4(rng.IntN(20000))
			if !live[k] && s.Insert4(&k, s.Hash4(&k), &Value4{}, 0) != nil {
				live[k] = true
			}
		}
		survivors := map[Key4]bool{}
		for k := range live {
			survivors[k] = true
		}
		ever := map[Key4]bool{}
		for k := range live {
			ever[k] = true
		}
		seen := map[Key4]int{}
		for next := 0; next >= 0; {
			next = s.ForEach4Home(next, step, func(k *Key4, _ *Value4) { seen[*k]++ })
			for range 20 {
				k := key4(rng.IntN(20000))
				if live[k] {
					s.Delete4(&k)
					delete(live, k)
					delete(survivors, k)
				} else if len(live) < 4000 && s.Insert4(&k, s.Hash4(&k), &Value4{}, 0) != nil {
					live[k] = true
					ever[k] = true
				}
			}
		}
		checkInvariants4(t, s.v4)
		if st := s.Stats(); st.Evicted != 0 {
			t.Fatalf("%d evictions: the test assumes none", st.Evicted)
		}
		for k := range survivors {
			if seen[k] != 1 {
				t.Fatalf("step %d: an entry alive throughout the walk was seen %d times", step, seen[k])
			}
		}
		for k, n := range seen {
			if !ever[k] || n > 1 {
				t.Fatalf("step %d: walk reported %v %d times (ever in the table: %v)", step, k, n, ever[k])
			}
		}
	}
}

// TestUnrepliedPairs: a UDP pair whose reply entry never saw a packet
// expires at the unreplied timeout and goes first under pressure; once
// answered it lives for the UDP timeout and is kept over unreplied ones.
func TestUnrepliedPairs(t *testing.T) {
	to := DefaultTimeouts()
	udpPair := func(i int, answered bool) (Key4, Value4, Value4) {
		k, v, peer := natPair(i)
		k.Proto = protoUDP
		if answered {
			peer.Flags |= unit.FlowAnswered
		}
		return k, v, peer
	}
	t.Run("timeout", func(t *testing.T) {
		s := newShard(t, 100)
		for i, answered := range []bool{false, true} {
			k, v, peer := udpPair(i, answered)
			s.InsertPair4(&k, s.Hash4(&k), &v, &peer, 0)
		}
		if n := s.Expire(Tick(to.UDPUnreplied), 1000); n != 0 {
			t.Fatalf("expired %d entries at exactly the unreplied timeout", n)
		}
		if n := s.Expire(Tick(to.UDPUnreplied+1), 1000); n != 2 {
			t.Fatalf("expired %d entries after the unreplied timeout, want the unreplied pair (2)", n)
		}
		k, _, _ := udpPair(1, true)
		if s.Lookup4(&k, s.Hash4(&k)) == nil {
			t.Fatal("the answered pair went with the unreplied one")
		}
		if n := s.Expire(Tick(to.UDP+1), 1000); n != 2 {
			t.Fatalf("expired %d entries after the UDP timeout, want the answered pair (2)", n)
		}
	})
	t.Run("eviction", func(t *testing.T) {
		const pairs = 200
		s := newShard(t, 2*pairs)
		for i := range pairs {
			// Answered pairs are older: idle time alone would take them.
			k, v, peer := udpPair(i, i%2 == 1)
			now := Tick(1000)
			if i%2 == 1 {
				now = 10
			}
			v.LastSeen, peer.LastSeen = now, now
			s.InsertPair4(&k, s.Hash4(&k), &v, &peer, now)
		}
		for i := pairs; i < pairs+20; i++ {
			k, v, peer := udpPair(i, false)
			if s.InsertPair4(&k, s.Hash4(&k), &v, &peer, 2000) == nil {
				t.Fatalf("pair %d refused: nothing evicted", i)
			}
		}
		answered := 0
		for i := 1; i < pairs; i += 2 {
			k, _, _ := udpPair(i, true)
			if s.Lookup4(&k, s.Hash4(&k)) != nil {
				answered++
			}
		}
		// Eviction samples a neighbourhood, which now and then holds no
		// unreplied reply entry; by idle time alone about 20 answered
		// pairs would go.
		if answered < pairs/2-2 {
			t.Fatalf("%d of %d answered pairs left: eviction should take unreplied ones first", answered, pairs/2)
		}
	})
	if Unreplied(unit.FlowPeer) || !Unreplied(unit.FlowPeer|unit.FlowReply) || Unreplied(unit.FlowPeer|unit.FlowReply|unit.FlowAnswered) {
		t.Error("Unreplied is not a reply entry without an answer")
	}
}
