package acceptor

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"net/netip"
	"sync"
	"time"

	"github.com/tetherlb/tether/api/hostpb"
	"github.com/tetherlb/tether/dataplane/header"
	"github.com/tetherlb/tether/dataplane/syncookie"
)

// Config configures an Acceptor. Zero values take the defaults named.
type Config struct {
	// MaxConns bounds the connections holding state (collecting or
	// Ready); closing connections and tombstones are bounded by it too,
	// each apart. Default 4096.
	MaxConns int
	// MaxRequest is how many bytes of a request head are collected, and
	// the receive window advertised: everything acknowledged fits in one
	// hostpb.Migrate. 1 to hostpb.MaxMigrateData; default 16 KiB.
	MaxRequest int
	// RequestTimeout bounds the time from the cookie ACK to a complete
	// head (answered 408 on the next packet, dropped by Expire), and the
	// time a Ready connection waits for Forget or Answer. Default 10 s.
	RequestTimeout time.Duration
	// MSS is the MSS advertised in the SYN-ACK (64 to 65535). Default
	// 1460.
	MSS int
	// WindowScale is the shift advertised (0 to 14). It matters beyond
	// the acceptor: the host continues the connection with it, and with
	// 0 its receive window would never exceed 64 KiB. Default 7; a
	// negative value asks for 0.
	WindowScale int
	// Secrets is where cookie secrets and the timestamp offset come
	// from; default crypto/rand.
	Secrets io.Reader
	// Shared, when set (16 bytes or more), is a secret the units of a
	// cluster share for this VIP: each epoch's cookie key and the TSval
	// offset are derived from it (HMAC-SHA256) instead of drawn from
	// Secrets, so that every unit's acceptor takes every unit's cookies
	// (a client the router moves between its handshake and its request
	// is not reset), as does the next process of the same unit.
	Shared []byte
	// SecretEvery is how often the cookie secret changes; a cookie is
	// accepted for one to two of these. Default 64 s.
	SecretEvery time.Duration
	// CloseLinger bounds the closing state after an answer. Default 10 s.
	CloseLinger time.Duration
	// TombstoneTTL is how long a forgotten connection's tombstone lasts.
	// Default 5 s.
	TombstoneTTL time.Duration
	// RSTPerSecond bounds the resets sent for ACKs without state and
	// without a valid cookie (and for a full table). Default 1000.
	RSTPerSecond int
	// AskUnknown makes Handle report a segment of no connection it
	// knows or made (no valid cookie) as Unknown instead of resetting
	// it, for a unit of a cluster, where such a segment may be of a
	// connection another unit carried (the caller asks the atom manager,
	// and calls Reject when no unit knows it).
	AskUnknown bool
	// Complete is told all the in-order bytes received so far and says
	// whether they begin with a whole request head: headLen > 0 is its
	// length; status != 0 is the HTTP status to answer a bad request
	// with. It is asked only when its answer can have changed: when the
	// first line ends and when a segment ends an empty line. Required.
	Complete func(data []byte) (headLen int, status int)
}

// Key names a flow from the client's side.
// Client and VIP are of one family, as on the wire.
type Key struct {
	Client, VIP         netip.Addr
	ClientPort, VIPPort uint16
}

func (k Key) String() string {
	return netip.AddrPortFrom(k.Client, k.ClientPort).String() + "→" + netip.AddrPortFrom(k.VIP, k.VIPPort).String()
}

// EventKind says what happened to a connection.
type EventKind uint8

const (
	// None: nothing the caller must act on.
	None EventKind = iota
	// Ready: the head is complete; the caller decides, then calls
	// Forget (migrated) or Answer.
	Ready
	// Dropped: the acceptor answered (Status: 400, 408, 431, ...; 0 for
	// a FIN-ACK to a client that closed first) and is closing; the
	// connection will never be Ready.
	Dropped
	// Reset: the client reset the connection; its state is gone. A Ready
	// connection being migrated must be abandoned.
	Reset
	// Unknown (Config.AskUnknown): a segment of no connection this
	// acceptor knows, and without a cookie of its keys. Nothing was
	// answered or counted; the caller continues the connection where
	// another unit sent it, or has Reject reset it.
	Unknown
)

func (k EventKind) String() string {
	switch k {
	case None:
		return "none"
	case Ready:
		return "ready"
	case Dropped:
		return "dropped"
	case Reset:
		return "reset"
	case Unknown:
		return "unknown"
	}
	return fmt.Sprintf("EventKind(%d)", uint8(k))
}

// Event is what Handle reports besides its reply.
type Event struct {
	Kind EventKind
	Key  Key
	// State (Ready) is what the host needs, as hostpb documents it.
	State *hostpb.TCPState
	// Data (Ready) is every byte acknowledged, from the first after the
	// SYN; it is never overwritten.
	Data []byte
	// HeadLen (Ready) is the length of the request head in Data.
	HeadLen int
	// Status (Dropped) is the HTTP status answered, 0 for none.
	Status int
}

// Fixed costs of the memory bound (see the package comment).
const (
	ConnOverhead      = 320
	TombstoneOverhead = 256
)

type phase uint8

const (
	collecting phase = iota
	ready
	closing
)

// conn is the state of one accepted connection.
type conn struct {
	key      Key
	phase    phase
	deadline time.Time // collecting, ready: RequestTimeout; closing: CloseLinger

	remoteISN, localISN uint32
	rcvNxt              uint32
	sndWnd, sndWl1      uint32
	rcvWnd              uint32 // last advertised, bytes
	mss                 uint16
	sndWscale           uint8 // the client's shift
	ws, sack, ts        bool
	tsVal, tsRecent     uint32

	data  []byte
	sawLF bool // data holds a whole line (see worthAsking)

	// closing
	status  int    // answered; 0: a bare FIN
	finSeq  uint32 // sequence number of our FIN
	peerFin bool   // the client's FIN is acknowledged
}

// tombstone is a forgotten flow.
type tombstone struct {
	key   Key
	until time.Time
}

// tombMark is a flow's live tombstone: until when, whether its packets
// are answered with a reset (Refuse) rather than dropped, and the
// forgotten connection's remote ISN (hasISN: known), which tells its
// stray segments from a new connection's cookie ACK.
type tombMark struct {
	until  time.Time
	isn    uint32
	hasISN bool
	reset  bool
}

// Acceptor accepts TCP connections for l7 VIPs. See the package
// comment.
type Acceptor struct {
	mu  sync.Mutex
	cfg Config

	sec      secrets
	tsOffset uint32
	exported exportedKeys

	conns    map[Key]*conn
	nLive    int
	nClosing int
	held     int // cap of every live conn's data

	tombs     map[Key]tombMark
	tombQueue []tombstone // ring, oldest at tombHead
	tombHead  int
	tombLen   int // entries in the ring (≥ len(tombs))

	rstSecond int64
	rstCount  int

	counters [nCounters]uint64
}

// New checks cfg, fills its defaults and reads the first secret.
func New(cfg Config) (*Acceptor, error) {
	if cfg.Complete == nil {
		return nil, errors.New("acceptor: Config.Complete is required")
	}
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	defd := func(v *time.Duration, d time.Duration) {
		if *v == 0 {
			*v = d
		}
	}
	def(&cfg.MaxConns, 4096)
	def(&cfg.MaxRequest, 16<<10)
	def(&cfg.MSS, 1460)
	def(&cfg.RSTPerSecond, 1000)
	defd(&cfg.RequestTimeout, 10*time.Second)
	defd(&cfg.SecretEvery, 64*time.Second)
	defd(&cfg.CloseLinger, 10*time.Second)
	defd(&cfg.TombstoneTTL, 5*time.Second)
	if cfg.WindowScale == 0 {
		cfg.WindowScale = 7
	} else if cfg.WindowScale < 0 {
		cfg.WindowScale = 0 // explicitly none
	}
	if cfg.Secrets == nil {
		cfg.Secrets = rand.Reader
	}
	switch {
	case cfg.MaxConns < 0:
		return nil, fmt.Errorf("acceptor: MaxConns %d", cfg.MaxConns)
	case cfg.MaxRequest < 1 || cfg.MaxRequest > hostpb.MaxMigrateData:
		return nil, fmt.Errorf("acceptor: MaxRequest %d: want 1 to %d", cfg.MaxRequest, hostpb.MaxMigrateData)
	case cfg.MSS < 64 || cfg.MSS > 65535:
		return nil, fmt.Errorf("acceptor: MSS %d: want 64 to 65535", cfg.MSS)
	case cfg.WindowScale > 14:
		return nil, fmt.Errorf("acceptor: WindowScale %d: want 0 to 14", cfg.WindowScale)
	case cfg.RequestTimeout < 0 || cfg.SecretEvery < 0 || cfg.CloseLinger < 0 || cfg.TombstoneTTL < 0 || cfg.RSTPerSecond < 0:
		return nil, errors.New("acceptor: a negative duration or rate")
	case cfg.Shared != nil && len(cfg.Shared) < 16:
		return nil, fmt.Errorf("acceptor: a shared secret of %d bytes: want 16 or more", len(cfg.Shared))
	}
	a := &Acceptor{
		cfg:   cfg,
		conns: make(map[Key]*conn),
		tombs: make(map[Key]tombMark),
	}
	a.sec.src, a.sec.every, a.sec.shared = cfg.Secrets, cfg.SecretEvery, bytes.Clone(cfg.Shared)
	// A secret of no epoch proves the source works; the first packet
	// replaces it with the secret of its own epoch.
	s, err := a.sec.fresh(math.MinInt64 + 2)
	if err != nil {
		return nil, err
	}
	a.sec.cur = s
	var off [4]byte
	if a.sec.shared != nil {
		copy(off[:], derive(a.sec.shared, "tsval offset", 0))
	} else if _, err := io.ReadFull(cfg.Secrets, off[:]); err != nil {
		return nil, fmt.Errorf("acceptor: read the timestamp offset: %w", err)
	}
	// A random offset (Linux draws one per connection; one per process
	// is enough here), so the TSval says nothing about the unit's
	// clock.
	a.tsOffset = binary.BigEndian.Uint32(off[:])
	return a, nil
}

// Bound is the most bytes the acceptor can hold (see the package
// comment).
func (a *Acceptor) Bound() int {
	n := a.cfg.MaxConns
	return n*(a.cfg.MaxRequest+a.cfg.MaxRequest/8+ConnOverhead) + n*ConnOverhead + n*TombstoneOverhead
}

// tsNow is the TSval clock: milliseconds.
func (a *Acceptor) tsNow(now time.Time) uint32 { return syncookie.TSNow(now, a.tsOffset) }

// Handle takes one IPv4 or IPv6 packet (from the IP header on) punted by the
// forwarder at time now, and returns the reply to send in its place
// (appended to out[:0]; nil: drop the frame) and what happened.
func (a *Acceptor) Handle(now time.Time, pkt []byte, out []byte) (reply []byte, ev Event) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if err := a.sec.rotate(now); err != nil {
		a.count(cSecretErrors)
	}
	var s seg
	if r := s.parse(pkt); r != cNone {
		a.count(r)
		return nil, Event{}
	}
	if c := a.conns[s.key]; c != nil {
		return a.established(now, c, &s, out)
	}
	flags := s.flags & (header.TCPFlagSYN | header.TCPFlagACK | header.TCPFlagRST | header.TCPFlagFIN)
	switch {
	case flags&header.TCPFlagRST != 0:
		a.count(cRSTUnknown)
		return nil, Event{}
	case flags&header.TCPFlagSYN != 0 && flags&header.TCPFlagACK == 0:
		// A SYN on a forgotten flow's tuple is a new connection: a
		// client reuses its port once its side of the old one is
		// closed, which the server's closing first allows at once. The
		// tombstone, kept against the old connection's retransmissions,
		// would drop the new one's handshake and request for its whole
		// time.
		delete(a.tombs, s.key)
		return a.synAck(now, &s, out), Event{}
	case flags&header.TCPFlagACK == 0:
		a.count(cNoACK)
		return nil, Event{}
	case flags&header.TCPFlagSYN != 0:
		// A SYN-ACK to a VIP: no connection of ours. A stack resets it.
		return a.reset(now, &s, out, cUnknownSYNACK), Event{}
	}
	idx, ok := a.sec.check(&s.key, s.seq-1, s.ack-1)
	// The TSecr echoes a SYN-ACK's TSval, which is never ahead of our
	// clock: one that is was not ours, and would become the TSval the
	// host continues from.
	if ok && s.opt.HasTimestamps && before(a.tsNow(now), s.opt.TSEcr) {
		ok = false
	}
	if t, tomb := a.tombs[s.key]; tomb && now.Before(t.until) {
		// A forgotten flow's tuple. The forwarder's workers answer SYNs
		// themselves, so the SYN of a new connection on it (a client
		// reusing its port once the server closed first) may never
		// come here: a valid cookie for an ISN other than the old
		// connection's is that new connection, which the tombstone must
		// not hold up. Anything else is the old connection's: its
		// segments either carry its own ISN (seq-1, the cookie ACK and
		// the first data) or no valid cookie at all.
		if !ok || !t.hasISN || s.seq-1 == t.isn {
			if t.reset {
				return a.reset(now, &s, out, cRefused), Event{}
			}
			a.count(cTombstoneDrops)
			return nil, Event{}
		}
		delete(a.tombs, s.key)
		a.count(cTombstonesReused)
	}
	if !ok && s.flags&header.TCPFlagFIN == 0 && len(s.payload) <= 1 {
		if _, probe := a.sec.check(&s.key, s.seq, s.ack-1); probe {
			return a.keepalive(now, &s, out), Event{}
		}
	}
	if !ok {
		if a.cfg.AskUnknown {
			return nil, Event{Kind: Unknown, Key: s.key}
		}
		return a.reset(now, &s, out, cBadCookie), Event{}
	}
	if a.nLive >= a.cfg.MaxConns {
		return a.reset(now, &s, out, cTableFull), Event{}
	}
	c := &conn{
		key:       s.key,
		phase:     collecting,
		deadline:  now.Add(a.cfg.RequestTimeout),
		remoteISN: s.seq - 1,
		localISN:  s.ack - 1,
		rcvNxt:    s.seq,
		mss:       syncookie.MSSClasses[idx],
		sndWl1:    s.seq - 1, // older than any segment: the first sets the window
	}
	if s.opt.HasTimestamps {
		// The options the SYN had come back in TSecr, where the SYN-ACK
		// put them. Without timestamps nothing survived: no window
		// scaling and no SACK, as Linux does.
		c.ts = true
		c.tsVal = s.opt.TSEcr // the SYN-ACK's, the last we sent
		c.tsRecent = s.opt.TSVal
		if ws := s.opt.TSEcr & syncookie.TSNoWS; ws != syncookie.TSNoWS {
			c.ws, c.sndWscale = true, uint8(min(ws, 14))
		}
		c.sack = s.opt.TSEcr&syncookie.TSSACK != 0
	}
	// The SYN-ACK advertised an unscaled window.
	c.rcvWnd = uint32(min(a.cfg.MaxRequest, 65535))
	a.conns[s.key] = c
	a.nLive++
	a.count(cAccepted)
	return a.established(now, c, &s, out)
}

// synAck answers a SYN with a cookie and keeps nothing: the same
// SYN-ACK, byte for byte, a forwarder worker sends with SYNKeys.
func (a *Acceptor) synAck(now time.Time, s *seg, out []byte) []byte {
	syn := syncookie.SYN{Seq: s.seq, MSS: s.mss(), TS: s.opt.HasTimestamps, TSV: s.opt.TSVal,
		WS: s.opt.HasWS, WSh: s.opt.WindowScale, SACK: s.opt.SACKPermitted}
	p := a.synParams()
	a.count(cSYNCookiesSent)
	return a.sec.mac.SYNACK(out, &a.sec.cur, a.tsNow(now), &p, s.key.tuple(), &syn)
}

// reset answers a segment without state the way a stack does, within
// the rate bound.
func (a *Acceptor) reset(now time.Time, s *seg, out []byte, why counter) []byte {
	a.count(why)
	if sec := now.Unix(); sec != a.rstSecond {
		a.rstSecond, a.rstCount = sec, 0
	}
	if a.rstCount >= a.cfg.RSTPerSecond {
		a.count(cRSTLimited)
		return nil
	}
	a.rstCount++
	a.count(cRSTSent)
	var o replyOpts
	return build(out, &s.key, s.ack, 0, header.TCPFlagRST, 0, &o, nil)
}

// keepalive answers s, a keepalive probe (a segment one byte before
// the next the client sends, with nothing or one byte) of a connection
// whose handshake the cookie proves and that has sent nothing since, so
// that the acceptor holds nothing of it: a worker took its last ACK. A
// client with keepalives on (Go's dialer: after 15 s idle) probes a
// connection it has not used yet; without this answer it met a reset.
// The ACK is what the connection's stack would send, with no state
// kept: window and options as the handshake set them.
func (a *Acceptor) keepalive(now time.Time, s *seg, out []byte) []byte {
	a.count(cKeepalives)
	wnd, scaled := uint32(min(a.cfg.MaxRequest, 65535)), false
	var o replyOpts
	if s.opt.HasTimestamps {
		// The probe echoes the SYN-ACK's TSval, whose low bits say
		// whether the window is scaled (see syncookie).
		scaled = s.opt.TSEcr&syncookie.TSNoWS != syncookie.TSNoWS
		o = replyOpts{TS: true, TSVal: a.tsNow(now), TSEcr: s.opt.TSVal}
		if before(o.TSVal, s.opt.TSEcr) {
			o.TSVal = s.opt.TSEcr // never behind what the client holds
		}
	}
	if scaled {
		wnd >>= a.cfg.WindowScale
	}
	return build(out, &s.key, s.ack, s.seq+1, header.TCPFlagACK, uint16(wnd), &o, nil)
}

// Reject answers pkt, a segment Handle reported Unknown, as one of no
// connection anywhere: with a reset (bad_cookie), within RSTPerSecond.
// A packet that is not such a segment (any more) gets nothing.
func (a *Acceptor) Reject(now time.Time, pkt []byte, out []byte) []byte {
	a.mu.Lock()
	defer a.mu.Unlock()
	var s seg
	if s.parse(pkt) != cNone || a.conns[s.key] != nil || s.flags&(header.TCPFlagSYN|header.TCPFlagRST) != 0 || s.flags&header.TCPFlagACK == 0 {
		return nil
	}
	return a.reset(now, &s, out, cBadCookie)
}

// Refuse makes the flow k's packets be answered with a reset for the
// tombstone's time: its migration failed where nobody could reset the
// client (the host refused it before its socket existed, or never
// answered), and the client must not wait out its retransmissions. A
// connection the acceptor still holds is dropped first.
func (a *Acceptor) Refuse(k Key, now time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	old, had := a.tombs[k]
	isn, hasISN := old.isn, had && old.hasISN
	if c := a.conns[k]; c != nil {
		isn, hasISN = c.remoteISN, true
		a.drop(c)
	}
	a.bury(k, now, isn, hasISN)
	if t, ok := a.tombs[k]; ok {
		t.reset = true
		a.tombs[k] = t
	}
}

// Forget drops a connection that migrated, silently, and leaves a
// tombstone. It reports whether the connection was known.
func (a *Acceptor) Forget(k Key, now time.Time) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	c := a.conns[k]
	if c == nil {
		return false
	}
	a.drop(c)
	a.count(cForgotten)
	a.bury(k, now, c.remoteISN, true)
	return true
}

// Answer answers a collecting or Ready connection with an HTTP status
// (e.g. 503 when no host can take it) and a FIN, and keeps it closing.
// The reply is nil when the connection is not known or already closing.
func (a *Acceptor) Answer(k Key, status int, now time.Time) []byte {
	a.mu.Lock()
	defer a.mu.Unlock()
	c := a.conns[k]
	if c == nil || c.phase == closing {
		return nil
	}
	return a.answer(now, c, status, make([]byte, 0, 256))
}

// Expire drops what has timed out: connections whose head or decision
// is overdue (silently: the next packet of such a flow is answered as
// one without state), closing states and tombstones. It returns how
// many connections it dropped.
func (a *Acceptor) Expire(now time.Time) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	n := 0
	for _, c := range a.conns {
		if now.Before(c.deadline) {
			continue
		}
		switch c.phase {
		case collecting:
			a.count(cTimeouts)
		case ready:
			// The caller never decided. Whether or not it is migrating
			// the connection, its client must not be accepted twice.
			a.count(cReadyTimeouts)
			a.bury(c.key, now, c.remoteISN, true)
		}
		a.drop(c)
		n++
	}
	for a.tombLen > 0 {
		t := a.tombQueue[a.tombHead]
		if now.Before(t.until) {
			break
		}
		a.popTomb()
	}
	return n
}

// drop removes c's state.
func (a *Acceptor) drop(c *conn) {
	delete(a.conns, c.key)
	if c.phase == closing {
		a.nClosing--
	} else {
		a.nLive--
	}
	a.held -= cap(c.data)
	c.data = nil
}

// bury leaves a tombstone for k, evicting the oldest when full. A
// flow buried again (accepted anew after its tombstone lapsed, before
// Expire removed it) gets a fresh one; the old queue entry stays until
// its turn, counted against the bound, and then removes nothing.
func (a *Acceptor) bury(k Key, now time.Time, isn uint32, hasISN bool) {
	if a.cfg.MaxConns == 0 {
		return
	}
	if a.tombQueue == nil {
		a.tombQueue = make([]tombstone, a.cfg.MaxConns)
	}
	if a.tombLen >= len(a.tombQueue) {
		a.popTomb()
		a.count(cTombstonesEvicted)
	}
	until := now.Add(a.cfg.TombstoneTTL)
	a.tombQueue[(a.tombHead+a.tombLen)%len(a.tombQueue)] = tombstone{k, until}
	a.tombLen++
	a.tombs[k] = tombMark{until: until, isn: isn, hasISN: hasISN}
}

// popTomb removes the oldest queue entry, and its flow's tombstone
// unless the flow was buried again since.
func (a *Acceptor) popTomb() {
	t := a.tombQueue[a.tombHead]
	if u, ok := a.tombs[t.key]; ok && u.until.Equal(t.until) {
		delete(a.tombs, t.key)
	}
	a.tombQueue[a.tombHead] = tombstone{}
	a.tombHead = (a.tombHead + 1) % len(a.tombQueue)
	a.tombLen--
}
