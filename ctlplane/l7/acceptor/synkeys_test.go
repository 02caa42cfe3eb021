package acceptor

import (
	"bytes"
	"encoding/binary"
	"testing"
	"time"

	"github.com/gopacket/gopacket/layers"

	"github.com/tetherlb/tether/dataplane/syncookie"
)

// workerAnswer answers the SYN pkt as a forwarder worker does with the
// keys k at now: with the key of now's epoch, Cur or Next, or (ok false)
// not at all.
func workerAnswer(t testing.TB, k *SYNKeys, now time.Time, pkt []byte) (out []byte, ok bool) {
	t.Helper()
	var s seg
	if r := s.parse(pkt); r != cNone {
		t.Fatalf("SYN refused: %s", counterNames[r])
	}
	key := &k.Cur
	switch syncookie.Epoch(now, k.Every) {
	case k.Cur.Epoch:
	case k.Next.Epoch:
		if k.Next.Block == nil {
			return nil, false
		}
		key = &k.Next
	default:
		return nil, false
	}
	syn := syncookie.SYN{Seq: s.seq, MSS: s.mss(), TS: s.opt.HasTimestamps, TSV: s.opt.TSVal,
		WS: s.opt.HasWS, WSh: s.opt.WindowScale, SACK: s.opt.SACKPermitted}
	var m syncookie.MAC
	return m.SYNACK(make([]byte, 0, syncookie.MaxSYNACK), key, syncookie.TSNow(now, k.TSOffset), &k.Params, s.key.tuple(), &syn), true
}

// workerSYN has the client's SYN answered by a worker holding the keys
// the acceptor gives now: the acceptor never sees it.
func (c *client) workerSYN(a *Acceptor) *reply {
	c.t.Helper()
	k, _ := a.SYNKeys(c.now)
	return c.workerSYNWith(&k)
}

func (c *client) workerSYNWith(k *SYNKeys) *reply {
	c.t.Helper()
	out, ok := workerAnswer(c.t, k, c.now, c.packet("S", c.isn, 0, nil, c.synOpts()))
	if !ok {
		c.t.Fatal("the worker's keys are not of the clock's epoch")
	}
	r, err := checkReply(c.t, out)
	if err != nil || !r.tcp.SYN || !r.tcp.ACK || r.tcp.Ack != c.isn+1 {
		c.t.Fatalf("worker's SYN-ACK %v: %v", r, err)
	}
	c.serverISN, c.seq, c.synAckWindow = r.tcp.Seq, c.isn+1, r.tcp.Window
	if ts, ok := r.opts[layers.TCPOptionKindTimestamps]; ok {
		c.serverTS = binary.BigEndian.Uint32(ts)
	}
	return r
}

// TestWorkerSYNACKIsTheAcceptors: with the keys SYNKeys gives, a worker
// answers every kind of SYN with the very bytes the acceptor sends, and
// the connection it makes is the one the acceptor's own SYN-ACK would
// have made (options carried in the cookie and the TSval).
func TestWorkerSYNACKIsTheAcceptors(t *testing.T) {
	type offer struct {
		mss      uint16
		ws       int
		sack, ts bool
	}
	for i, o := range []offer{
		{1460, 8, true, true}, {1460, -1, true, true}, {1300, 14, false, true}, {9000, 3, true, false},
		{0, -1, false, false}, {216, 0, true, true}, {1440, 15, false, true},
	} {
		a := newTest(t, nil)
		mine := func(port uint16) *client {
			c := newClient(t, a, port)
			c.mss, c.ws, c.sack, c.ts = o.mss, o.ws, o.sack, o.ts
			c.now = t0.Add(time.Duration(i) * 7 * time.Millisecond)
			return c
		}
		c := mine(41000)
		k, _ := a.SYNKeys(c.now)
		syn := c.packet("S", c.isn, 0, nil, c.synOpts())
		want, _ := a.Handle(c.now, syn, make([]byte, 0, MaxReply))
		got, ok := workerAnswer(t, &k, c.now, syn)
		if !ok || !bytes.Equal(got, want) {
			t.Fatalf("offer %+v: worker's SYN-ACK\n%x\nacceptor's\n%x", o, got, want)
		}
		// The worker's connection, all the way to Ready.
		w := mine(41001)
		w.workerSYN(a)
		_, ev := w.data("PA", []byte(request))
		if ev.Kind != Ready {
			t.Fatalf("offer %+v: worker-answered connection %v", o, ev.Kind)
		}
		st := ev.State
		wantMSS := uint32(syncookie.MSSClasses[syncookie.MSSIndex(max(o.mss, 536*boolU16(o.mss == 0)))])
		if st.Mss != wantMSS || st.Timestamps != o.ts || st.SackPermitted != (o.sack && o.ts) {
			t.Fatalf("offer %+v: state %+v: want mss %d", o, st, wantMSS)
		}
		if wantWS := o.ts && o.ws >= 0; st.WindowScaling != wantWS || wantWS && st.SndWscale != uint32(min(o.ws, 14)) {
			t.Fatalf("offer %+v: window scaling %v shift %d", o, st.WindowScaling, st.SndWscale)
		}
	}
}

func boolU16(b bool) uint16 {
	if b {
		return 1
	}
	return 0
}

// TestSYNKeysAcrossEpochs: a worker that got its keys at some time
// answers through the end of the next epoch without hearing again, and
// the acceptor takes every cookie it made, as late as the epoch after
// the one the cookie was made in; changed says when to send keys again.
func TestSYNKeysAcrossEpochs(t *testing.T) {
	a := newTest(t, nil)
	every := 64 * time.Second
	k, changed := a.SYNKeys(t0)
	if !changed || k.Next.Block == nil || k.Next.Epoch != k.Cur.Epoch+1 || k.Every != every {
		t.Fatalf("first keys: changed %v, epochs %d %d", changed, k.Cur.Epoch, k.Next.Epoch)
	}
	if _, changed := a.SYNKeys(t0.Add(time.Second)); changed {
		t.Fatal("keys changed within an epoch")
	}
	port := uint16(42000)
	for _, made := range []time.Duration{0, every, every + every/2} {
		for _, checked := range []time.Duration{made, made + every} {
			c := newClient(t, a, port)
			port++
			c.now = t0.Add(made)
			c.workerSYNWith(&k)
			c.now = t0.Add(checked)
			if _, ev := c.data("PA", []byte(request)); ev.Kind != Ready {
				t.Fatalf("cookie made %v after the keys, ACKed %v after: %v, counters %v", made, checked, ev.Kind, a.Stats().Counters)
			}
		}
	}
	// Two epochs on, the keys held are of no use; the acceptor's have
	// moved on.
	if _, ok := workerAnswer(t, &k, t0.Add(2*every), newClient(t, a, 1).packet("S", 1, 0, nil, nil)); ok {
		t.Fatal("a worker answered with keys two epochs old")
	}
	k2, changed := a.SYNKeys(t0.Add(2 * every))
	if !changed || k2.Cur.Epoch != k.Cur.Epoch+2 {
		t.Fatalf("after two epochs: changed %v epoch %d", changed, k2.Cur.Epoch)
	}
	k3, changed := a.SYNKeys(t0.Add(3 * every))
	if !changed || k3.Cur.Raw != k2.Next.Raw {
		t.Fatal("the next key handed out ahead is not the key of its epoch")
	}
}

// TestAdoptKeepsCookies: a new acceptor that adopts the keys the old
// one gave the workers takes the connections the workers answered with
// them, in the keys' epoch and the next, where one that did not adopt
// them resets each; keys it may not take are refused and change
// nothing.
func TestAdoptKeepsCookies(t *testing.T) {
	every := 64 * time.Second
	for _, c := range []struct {
		name       string
		made, took time.Duration // the handshake's and the request's time after the keys
	}{
		{"same epoch", time.Second, 2 * time.Second},
		{"made in the keys' epoch, taken in the next", every - time.Second, every + time.Second},
		{"made and taken in the next epoch", every + time.Second, every + 2*time.Second},
	} {
		t.Run(c.name, func(t *testing.T) {
			old := newTest(t, nil)
			k, _ := old.SYNKeys(t0)
			for _, adopt := range []bool{true, false} {
				fresh := newTest(t, func(cfg *Config) { cfg.Secrets = newSeeded(2) })
				if adopt {
					if err := fresh.Adopt(k, t0.Add(c.took)); err != nil {
						t.Fatal(err)
					}
				}
				cl := newClient(t, old, 43000)
				cl.now = t0.Add(c.made)
				cl.workerSYNWith(&k)
				synAckTS := cl.serverTS
				cl.a, cl.now = fresh, t0.Add(c.took)
				r, ev := cl.data("PA", []byte(request))
				switch {
				case adopt && (ev.Kind != Ready || validMigrate(ev) != nil):
					t.Fatalf("adopted keys: %v, counters %v", ev.Kind, fresh.Stats().Counters)
				case !adopt && (r == nil || !r.tcp.RST):
					t.Fatalf("keys not adopted: want a reset, got %v (%v)", r, ev.Kind)
				case !adopt:
					continue
				}
				// The new acceptor's TSvals go on from the SYN-ACK's
				// by the milliseconds since (give or take the option
				// bits the SYN-ACK's carries), or the client's PAWS
				// check would drop them.
				a, err := checkReply(t, fresh.Answer(cl.key(), 503, cl.now))
				if err != nil {
					t.Fatal(err)
				}
				ts, ok := a.opts[layers.TCPOptionKindTimestamps]
				if gap := int64(binary.BigEndian.Uint32(ts) - synAckTS); !ok || gap < 0 || gap > (c.took-c.made).Milliseconds()+syncookie.TSOptMask+1 {
					t.Fatalf("the answer's TSval is %d ms from the SYN-ACK's, %v later", gap, c.took-c.made)
				}
			}
		})
	}

	old := newTest(t, nil)
	k, _ := old.SYNKeys(t0)
	for _, c := range []struct {
		name  string
		mod   func(*Config)
		now   time.Time
		setup func(a *Acceptor)
	}{
		{"two epochs on", nil, t0.Add(2 * every), nil},
		{"another epoch length", func(cfg *Config) { cfg.SecretEvery = 32 * time.Second }, t0, nil},
		{"another MSS", func(cfg *Config) { cfg.MSS = 1440 }, t0, nil},
		{"another window scale", func(cfg *Config) { cfg.WindowScale = 9 }, t0, nil},
		{"keys handed out already", nil, t0, func(a *Acceptor) { a.SYNKeys(t0) }},
		{"a SYN answered already", nil, t0, func(a *Acceptor) { newClient(t, a, 44000).syn() }},
	} {
		t.Run("refused/"+c.name, func(t *testing.T) {
			a := newTest(t, func(cfg *Config) {
				cfg.Secrets = newSeeded(3)
				if c.mod != nil {
					c.mod(cfg)
				}
			})
			if c.setup != nil {
				c.setup(a)
			}
			a.mu.Lock()
			before := a.sec.cur.Raw
			a.mu.Unlock()
			if err := a.Adopt(k, c.now); err == nil {
				t.Fatal("adopted")
			}
			a.mu.Lock()
			defer a.mu.Unlock()
			if a.sec.cur.Raw != before || a.sec.cur.Raw == k.Cur.Raw || a.tsOffset == k.TSOffset {
				t.Fatal("a refused adoption changed the acceptor's keys")
			}
		})
	}
}

// TestSharedSecret: acceptors that share a secret (the units of a
// cluster, or a unit's processes one after another) answer a SYN with
// the same bytes and take each other's cookies, in the epoch the cookie
// was made and the next, even one that started after the cookie was
// made; an acceptor with another secret resets them.
func TestSharedSecret(t *testing.T) {
	shared := bytes.Repeat([]byte{7}, 32)
	with := func(seed byte, secret []byte) *Acceptor {
		return newTest(t, func(cfg *Config) { cfg.Secrets, cfg.Shared = newSeeded(seed), secret })
	}
	a, b := with(1, shared), with(2, shared)
	c := newClient(t, a, 45000)
	syn := c.packet("S", c.isn, 0, nil, c.synOpts())
	fromA, _ := a.Handle(c.now, syn, make([]byte, 0, MaxReply))
	fromB, _ := b.Handle(c.now, syn, make([]byte, 0, MaxReply))
	if !bytes.Equal(fromA, fromB) {
		t.Fatalf("two acceptors sharing a secret answered one SYN differently:\n%x\n%x", fromA, fromB)
	}
	every := 64 * time.Second
	for _, took := range []time.Duration{time.Second, every} {
		for _, other := range []struct {
			name   string
			secret []byte
			ok     bool
		}{{"the same secret", shared, true}, {"another secret", bytes.Repeat([]byte{8}, 32), false}} {
			cl := newClient(t, a, 45001)
			cl.isn += uint32(took / time.Second)
			cl.syn()
			// An acceptor that starts after the cookie was made.
			cl.a, cl.now = with(3, other.secret), t0.Add(took)
			r, ev := cl.data("PA", []byte(request))
			if got := ev.Kind == Ready; got != other.ok || !other.ok && (r == nil || !r.tcp.RST) {
				t.Fatalf("%s, request %v after the SYN: %v (reply %v)", other.name, took, ev.Kind, r)
			}
		}
	}
	k, _ := with(4, nil).SYNKeys(t0)
	if err := with(5, shared).Adopt(k, t0); err == nil {
		t.Fatal("an acceptor with a shared secret adopted keys")
	}
	if _, err := New(Config{Complete: testComplete, Shared: []byte("short")}); err == nil {
		t.Fatal("a shared secret of 5 bytes was taken")
	}
}

// TestKeepaliveProbe: a connection whose handshake a worker finished
// (nothing held) and that has sent nothing yet gets keepalive probes
// answered, with no state kept, as its stack would (the ACK of the
// byte before its first, the handshake's window and options), and its
// request then goes on as before; a probe with a cookie of no handshake
// is not answered so.
func TestKeepaliveProbe(t *testing.T) {
	for _, ts := range []bool{true, false} {
		a := newTest(t, func(cfg *Config) { cfg.AskUnknown = true })
		c := newClient(t, a, 46000)
		c.ts = ts
		c.workerSYN(a)
		for _, probe := range [][]byte{nil, {0}} {
			c.now = c.now.Add(15 * time.Second)
			r, ev := c.send(c.packet("A", c.isn, c.serverISN+1, probe, c.dataOpts()))
			if r == nil || r.tcp.RST || r.tcp.SYN || !r.tcp.ACK || r.tcp.Seq != c.serverISN+1 || r.tcp.Ack != c.isn+1 || len(r.tcp.Payload) != 0 || ev.Kind != None {
				t.Fatalf("timestamps %v: probe %x answered %v (%v), want the ACK of the byte before the first", ts, probe, r, ev.Kind)
			}
			if _, has := r.opts[layers.TCPOptionKindTimestamps]; has != ts {
				t.Fatalf("timestamps %v: the probe's answer has them: %v", ts, has)
			}
			if want := uint16(4096); ts && r.tcp.Window != want>>7 || !ts && r.tcp.Window != want {
				t.Fatalf("timestamps %v: window %d", ts, r.tcp.Window)
			}
		}
		if s := a.Stats(); s.Conns != 0 || s.Counters["keepalives"] != 2 || s.Counters["bad_cookie"] != 0 {
			t.Fatalf("timestamps %v: after the probes %+v", ts, s)
		}
		if _, ev := c.data("PA", []byte(request)); ev.Kind != Ready {
			t.Fatalf("timestamps %v: the request after the probes: %v", ts, ev.Kind)
		}
		// A probe whose cookie is not of its tuple is no handshake's.
		d := newClient(t, a, 46001)
		if r, ev := d.send(d.packet("A", d.isn, 12345, nil, d.dataOpts())); r != nil || ev.Kind != Unknown {
			t.Fatalf("a probe of no handshake: %v, %v", r, ev.Kind)
		}
	}
}
