package health

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/rs/zerolog"

	pb "github.com/tetherlb/tether/api/healthpb"
	"github.com/tetherlb/tether/api/unit"
)

// Options configure a Server.
type Options struct {
	// Listen is the UDP address agents send to.
	Listen string
	// Unit identifies this unit in snapshot requests and postulate
	// answers; not 0.
	Unit uint32
	// Master is the secret every host's key is derived from
	// (healthpb.DeriveKey): with it every datagram must carry a valid MAC
	// under its host's key and may speak only for that host and the
	// endpoints its key grants; nil accepts and sends unauthenticated
	// datagrams, whose claims nothing can check.
	Master []byte
	// Freshness is how far a datagram's send time may be from this
	// unit's clock (default healthpb.DefaultFreshness).
	Freshness time.Duration
	// Missed is how many heartbeat periods without a heartbeat age a
	// host out.
	Missed int
	// SnapshotRetry is how long an unanswered snapshot request stands
	// before it is sent again.
	SnapshotRetry time.Duration
	// OnChange is called, outside any lock, after anything that can
	// change a decision did: rows, hosts, ages.
	OnChange func()
	Log      zerolog.Logger
	// now is the clock; tests replace it.
	now func() time.Time
}

// Server receives the health-and-load protocol on behalf of a unit and
// keeps the consolidated cache.
type Server struct {
	opts Options
	conn *net.UDPConn

	mu      sync.Mutex
	cache   *Cache
	stats   unit.HealthStats
	out     *pb.Codec // send side, under mu
	seq     *pb.Sequencer
	senders map[uint32]*sender // replay state by host, under mu
}

// sender is the replay state of one host: its window of sequence
// numbers and when it last had a frame accepted. It outlives the host's
// entry in the cache (a goodbye must not reopen the window for a replay
// of what came before it) and is forgotten only when every frame it
// could hold back is refused by its time anyway.
type sender struct {
	win  pb.Window
	last time.Time
	// goodbye is the sequence number of the host's last goodbye: what
	// it sent before it (a heartbeat its leader relays late, a datagram
	// that overtook nothing) belongs to a run that has ended.
	goodbye uint64
	// grant and key are the host's key as last derived for an accepted
	// frame: deriving costs more than checking the MAC, and only hosts
	// whose frames were accepted get an entry, so forgeries cannot grow
	// it.
	grant pb.Grant
	key   []byte
}

// New opens the server's socket.
func New(opts Options) (*Server, error) {
	if opts.Unit == 0 {
		return nil, errors.New("health: unit ID 0")
	}
	if opts.Missed < 1 {
		opts.Missed = DefaultMissed
	}
	if opts.SnapshotRetry <= 0 {
		opts.SnapshotRetry = time.Second
	}
	if opts.now == nil {
		opts.now = time.Now
	}
	if opts.OnChange == nil {
		opts.OnChange = func() {}
	}
	if opts.Freshness <= 0 {
		opts.Freshness = pb.DefaultFreshness
	}
	if opts.Master != nil && len(opts.Master) < pb.MinMasterSize {
		return nil, fmt.Errorf("health: master secret of %d bytes, at least %d", len(opts.Master), pb.MinMasterSize)
	}
	out, err := pb.NewCodec()
	if err != nil {
		return nil, err
	}
	s := &Server{opts: opts, cache: NewCache(), out: out, seq: pb.NewSequencer(opts.now()), senders: map[uint32]*sender{},
		stats: unit.HealthStats{Received: map[string]uint64{}, Refused: map[string]uint64{}}}
	if opts.Listen != "" {
		addr, err := net.ResolveUDPAddr("udp", opts.Listen)
		if err != nil {
			return nil, fmt.Errorf("health: listen %q: %w", opts.Listen, err)
		}
		if s.conn, err = net.ListenUDP("udp", addr); err != nil {
			return nil, fmt.Errorf("health: listen %q: %w", opts.Listen, err)
		}
	}
	return s, nil
}

// DefaultMissed is how many heartbeat periods a host may miss.
const DefaultMissed = 4

// Addr returns the address the server listens on.
func (s *Server) Addr() netip.AddrPort {
	if s.conn == nil {
		return netip.AddrPort{}
	}
	return s.conn.LocalAddr().(*net.UDPAddr).AddrPort()
}

// Run receives until ctx ends, and ages hosts out.
func (s *Server) Run(ctx context.Context) error {
	if s.conn == nil {
		<-ctx.Done()
		return nil
	}
	go func() { <-ctx.Done(); s.conn.Close() }()
	go s.ager(ctx)
	in, err := pb.NewCodec()
	if err != nil {
		return err
	}
	buf := make([]byte, pb.MaxDatagram+1)
	for {
		n, src, err := s.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return err
			}
			continue
		}
		s.Receive(in, buf[:n], src)
	}
}

// keys finds a host's key from the master secret; units accept no
// unit's frames.
func (s *Server) keys() pb.Keys {
	if s.opts.Master == nil {
		return nil
	}
	return func(h *pb.Header) []byte {
		if h.FromUnit || h.Host == 0 {
			return nil
		}
		s.mu.Lock()
		st := s.senders[h.Host]
		if st != nil && st.key != nil && st.grant.Equal(h.Grant) {
			k := st.key
			s.mu.Unlock()
			return k
		}
		s.mu.Unlock()
		return pb.DeriveKey(s.opts.Master, h.Host, h.Grant)
	}
}

// Receive handles one datagram from src: decode, authenticate, validate,
// check that it speaks only for its host, that it is fresh and not a
// replay, then apply. A datagram that fails is counted under its reason
// and changes nothing.
func (s *Server) Receive(in *pb.Codec, b []byte, src netip.AddrPort) {
	now := s.opts.now()
	env, h, err := s.open(in, b, now)
	if err != nil {
		s.refuse(pb.Reason(err), src, err)
		return
	}
	s.mu.Lock()
	if why := s.admit(h, now); why != "" {
		s.mu.Unlock()
		s.refuse(why, src, fmt.Errorf("%w: host %d, sequence %d (%s)", pb.ErrReplay, h.Host, h.Seq, why))
		return
	}
	if env.GetGoodbye() != nil {
		s.senders[h.Host].goodbye = h.Seq
	}
	s.mu.Unlock()
	// A leader's members' frames are opened (authenticated, checked)
	// outside the lock, and only once the aggregate itself is taken.
	var relayed []relayedBeat
	if agg := env.GetAggregate(); agg != nil {
		for _, f := range agg.GetFrames() {
			r, err := s.openRelayed(in, f, agg.GetLeader(), now)
			if err != nil {
				s.refuse(pb.Reason(err), src, fmt.Errorf("relayed by host %d: %w", agg.GetLeader(), err))
				continue
			}
			relayed = append(relayed, r)
		}
	}
	s.mu.Lock()
	s.stats.Received[pb.Kind(env)]++
	src = netip.AddrPortFrom(src.Addr().Unmap(), src.Port())
	// Members' own heartbeats first: a member's consent to be vouched
	// for may come in the same aggregate as the leader's vouching.
	changed := false
	type late struct {
		hdr *pb.Header
		why string
	}
	var replays []late
	for _, r := range relayed {
		if why := s.admit(r.hdr, now); why != "" {
			replays = append(replays, late{r.hdr, why})
			continue
		}
		s.stats.Received["relayed_heartbeat"]++
		changed = s.heartbeat(r.hb, r.hdr, netip.AddrPort{}, h.Host, now) || changed
	}
	changed = s.apply(env, h, src, now) || changed
	s.mu.Unlock()
	for _, r := range replays {
		s.refuse(r.why, src, fmt.Errorf("%w: host %d (relayed by %d), sequence %d (%s)", pb.ErrReplay, r.hdr.Host, h.Host, r.hdr.Seq, r.why))
	}
	if changed {
		s.opts.OnChange()
	}
}

// open decodes and checks one frame up to (not including) the replay
// window, which only an accepted frame may move.
func (s *Server) open(in *pb.Codec, b []byte, now time.Time) (*pb.Envelope, *pb.Header, error) {
	env, h, err := in.Decode(b, s.keys())
	if err != nil {
		return nil, nil, err
	}
	if err := pb.Validate(env); err != nil {
		return nil, nil, err
	}
	if err := pb.CheckFromHost(env, h, s.opts.Master != nil); err != nil {
		return nil, nil, err
	}
	if err := pb.Fresh(h, now, s.opts.Freshness); err != nil {
		return nil, nil, err
	}
	return env, h, nil
}

// relayedBeat is a member's heartbeat that came inside its leader's
// aggregate, checked as if it had come directly.
type relayedBeat struct {
	hb  *pb.Heartbeat
	hdr *pb.Header
}

// openRelayed opens a member's frame from an aggregate: its own MAC, its
// own identity and freshness, and it must be a heartbeat of a host other
// than the leader; the leader can carry it but not change it.
func (s *Server) openRelayed(in *pb.Codec, f []byte, leader uint32, now time.Time) (relayedBeat, error) {
	env, h, err := s.open(in, f, now)
	if err != nil {
		return relayedBeat{}, err
	}
	hb := env.GetHeartbeat()
	if hb == nil || h.Host == leader {
		return relayedBeat{}, fmt.Errorf("%w: a leader relays only its members' heartbeats, got %s of host %d", pb.ErrDirection, pb.Kind(env), h.Host)
	}
	return relayedBeat{hb: hb, hdr: h}, nil
}

// admit moves the host's replay window; it returns why a frame is
// refused: "replay" for a sequence number already accepted or too far
// behind, "before_goodbye" for one the host sent before its last
// goodbye. Callers hold s.mu.
func (s *Server) admit(h *pb.Header, now time.Time) string {
	st := s.senders[h.Host]
	if st == nil {
		st = &sender{}
		s.senders[h.Host] = st
	}
	if h.Seq < st.goodbye {
		return "before_goodbye"
	}
	if !st.win.Admit(h.Seq) {
		return "replay"
	}
	st.last = now
	if s.opts.Master != nil && (st.key == nil || !st.grant.Equal(h.Grant)) {
		st.grant, st.key = h.Grant, pb.DeriveKey(s.opts.Master, h.Host, h.Grant)
	}
	return ""
}

func (s *Server) refuse(why string, src netip.AddrPort, err error) {
	s.mu.Lock()
	s.stats.Refused[why]++
	n := s.stats.Refused[why]
	s.mu.Unlock()
	// The first of each reason, then one in a thousand: a flood of bad
	// datagrams must not become a flood of log lines.
	if n == 1 || n%1000 == 0 {
		s.opts.Log.Warn().Err(err).Str("from", src.String()).Uint64("count", n).Msg("health message refused")
	}
}

// apply changes the cache for one valid message of host h.Host; it
// reports whether any row or host changed.
func (s *Server) apply(env *pb.Envelope, h *pb.Header, src netip.AddrPort, now time.Time) bool {
	switch b := env.GetBody().(type) {
	case *pb.Envelope_Heartbeat:
		return s.heartbeat(b.Heartbeat, h, src, 0, now)
	case *pb.Envelope_Aggregate:
		return s.heartbeat(b.Aggregate.GetOwn(), h, src, 0, now)
	case *pb.Envelope_Goodbye:
		return s.goodbye(b.Goodbye.GetHost())
	case *pb.Envelope_RowChange:
		return s.rowChange(b.RowChange, h, src, now)
	case *pb.Envelope_SendSnapshot:
		return s.snapshot(b.SendSnapshot, h, src, now)
	case *pb.Envelope_Postulate:
		s.postulate(b.Postulate, h, src)
	}
	return false
}

// heartbeat refreshes a host and checks its copy. via is the leader a
// consolidated heartbeat came through (0: direct from src).
func (s *Server) heartbeat(hb *pb.Heartbeat, hdr *pb.Header, src netip.AddrPort, via uint32, now time.Time) bool {
	h := s.cache.touch(hb.GetHost())
	h.Grant = hdr.Grant
	// The host's own consent to be vouched for by its leader, for a
	// while (membership mode); a heartbeat without it withdraws it.
	h.VouchLeader, h.VouchUntil = hb.GetLeader(), now.Add(time.Duration(hb.GetVouchMs())*time.Millisecond)
	// Agents start their generations from the clock, never at 0: a
	// host whose copy is at generation 0 has never been filled.
	first := h.Generation == 0 && h.LastHeard.IsZero()
	h.LastHeard, h.Leader = now, via
	h.Interval = time.Duration(hb.GetIntervalMs()) * time.Millisecond
	if src.IsValid() {
		h.Source = src
	}
	if hb.GetName() != "" {
		h.Name, h.Port = hb.GetName(), hb.GetPort()
	}
	// A leader's heartbeat keeps the members it vouches for alive
	// (membership-change mode: their own heartbeats are not forwarded),
	// but only members whose own heartbeat named this leader recently
	// enough: a leader speaks for no host that did not ask it to.
	for _, m := range hb.GetMembers() {
		if m == hb.GetHost() {
			continue
		}
		mh := s.cache.Host(m)
		if mh == nil || mh.VouchLeader != hb.GetHost() || now.After(mh.VouchUntil) {
			s.stats.Refused["vouch_not_authorised"]++
			continue
		}
		mh.Leader = hb.GetHost()
		mh.LastHeard = now
		if mh.Interval == 0 {
			mh.Interval = h.Interval
		}
	}
	s.check(h, hb, now, first)
	return first
}

// check compares a heartbeat's chunk sums with the cached copy and asks
// for the chunks that differ. A mismatch on first contact, or at a
// generation the copy already has, is asked for at once; one at a newer
// generation may be a row change still on its way, so it is asked for
// when the next heartbeat still shows it.
func (s *Server) check(h *Host, hb *pb.Heartbeat, now time.Time, first bool) {
	diff := h.Sums.Differ(hb.GetChunks())
	if len(diff) == 0 {
		h.wanted = nil
		return
	}
	newer := hb.GetGeneration() > h.Generation
	if !first && h.Generation != 0 && newer && !sameChunks(h.wanted, diff) {
		h.wanted, h.askedAt = diff, time.Time{} // remember; ask if it persists
		return
	}
	if !h.askedAt.IsZero() && now.Sub(h.askedAt) < s.opts.SnapshotRetry && sameChunks(h.wanted, diff) {
		return // asked already; the answer may be on its way
	}
	h.wanted, h.askedAt = diff, now
	s.ask(h, diff)
}

func sameChunks(a, b []uint32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// ask sends a get-snapshot for chunks to host h.
func (s *Server) ask(h *Host, chunks []uint32) {
	dst := s.hostAddr(h)
	if !dst.IsValid() {
		return // not reachable yet: its name comes with a later heartbeat
	}
	s.stats.SnapshotsAsked++
	s.send(dst, h.ID, h.Grant, &pb.Envelope{Body: &pb.Envelope_GetSnapshot{GetSnapshot: &pb.GetSnapshot{Unit: s.opts.Unit, Chunks: chunks}}})
	s.opts.Log.Debug().Uint32("host", h.ID).Interface("chunks", chunks).Msg("snapshot requested")
}

// hostAddr is where the host's agent listens: the source of its direct
// messages, else the address it names in its heartbeats.
func (s *Server) hostAddr(h *Host) netip.AddrPort {
	if h.Source.IsValid() {
		return h.Source
	}
	if a, err := netip.ParseAddr(h.Name); err == nil && h.Port != 0 {
		return netip.AddrPortFrom(a.Unmap(), uint16(h.Port))
	}
	// A DNS name: resolving it here would block the receive loop.
	// Hosts behind a leader normally name themselves by address.
	return netip.AddrPort{}
}

// send signs env with host's key (derived for the grant the host's own
// frames carry) and sends it to dst.
func (s *Server) send(dst netip.AddrPort, host uint32, grant pb.Grant, env *pb.Envelope) {
	now := s.opts.now()
	hdr := &pb.Header{FromUnit: true, Host: host, Sender: s.opts.Unit, Seq: s.seq.Next(now), Time: uint64(now.UnixMilli())}
	var key []byte
	if s.opts.Master != nil {
		key = pb.DeriveKey(s.opts.Master, host, grant)
	}
	b, err := s.out.Encode(env, hdr, key, false)
	if err != nil {
		s.opts.Log.Error().Err(err).Msg("health: encode")
		return
	}
	if s.conn != nil {
		if _, err := s.conn.WriteToUDPAddrPort(b, dst); err != nil {
			s.opts.Log.Debug().Err(err).Str("to", dst.String()).Msg("health: send")
		}
	}
}

func (s *Server) goodbye(id uint32) bool {
	if s.cache.remove(id) {
		s.stats.Goodbyes++
		s.opts.Log.Info().Uint32("host", id).Msg("host said goodbye: cleared")
		return true
	}
	return false
}

func (s *Server) rowChange(rc *pb.RowChange, hdr *pb.Header, src netip.AddrPort, now time.Time) bool {
	h := s.cache.touch(rc.GetHost())
	h.Grant = hdr.Grant
	if h.LastHeard.IsZero() {
		h.LastHeard = now // until its first heartbeat says how often to expect it
		h.Interval = time.Second
	}
	if src.IsValid() && h.Leader == 0 {
		h.Source = src
	}
	// A change at or below the copy's generation is already in it (a
	// snapshot overtook it); generation 0 is part of a longer queue and
	// carries none.
	if rc.GetGeneration() != 0 && rc.GetGeneration() <= h.Generation {
		s.stats.StaleChanges++
		return false
	}
	for _, op := range rc.GetOps() {
		switch op.GetOp() {
		case pb.RowOp_OP_ADD, pb.RowOp_OP_UPDATE:
			s.cache.put(h, op.GetRow())
		case pb.RowOp_OP_DELETE:
			s.cache.del(h, op.GetRow().GetApp())
		}
	}
	if rc.GetGeneration() != 0 {
		h.Generation = rc.GetGeneration()
	}
	return true
}

func (s *Server) snapshot(sn *pb.SendSnapshot, hdr *pb.Header, src netip.AddrPort, now time.Time) bool {
	h := s.cache.touch(sn.GetHost())
	h.Grant = hdr.Grant
	if h.LastHeard.IsZero() {
		h.LastHeard, h.Interval = now, time.Second
	}
	if src.IsValid() && h.Leader == 0 {
		h.Source = src
	}
	s.cache.replaceChunks(h, sn.GetChunks(), sn.GetRows())
	h.Generation = max(h.Generation, sn.GetGeneration())
	h.wanted, h.askedAt = nil, time.Time{}
	s.stats.SnapshotsIn++
	s.opts.Log.Debug().Uint32("host", h.ID).Int("rows", len(sn.GetRows())).Msg("snapshot applied")
	return true
}

// postulate answers a host's postulated directive: silence when this
// unit holds the same, postulate-wrong (and a snapshot request for the
// row's chunk, to repair the copy) when not.
func (s *Server) postulate(p *pb.PostulateState, hdr *pb.Header, src netip.AddrPort) {
	h := s.cache.Host(p.GetHost())
	var r *pb.Row
	if h != nil {
		r = h.Rows[pb.Key(p.GetApp())]
	}
	if r != nil && r.GetTarget() == p.GetState() {
		return
	}
	w := &pb.PostulateWrong{Unit: s.opts.Unit, Host: p.GetHost(), App: p.GetApp(), Seq: p.GetSeq()}
	if r == nil {
		w.Missing = true
	} else {
		w.Held = r.GetTarget()
	}
	s.stats.PostulateWrong++
	s.send(src, p.GetHost(), hdr.Grant, &pb.Envelope{Body: &pb.Envelope_PostulateWrong{PostulateWrong: w}})
	if h != nil {
		chunk := []uint32{pb.ChunkOf(p.GetApp())}
		h.wanted, h.askedAt = chunk, s.opts.now()
		s.ask(h, chunk)
	}
}

// ager removes hosts that stopped heartbeating.
func (s *Server) ager(ctx context.Context) {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if s.Age() {
				s.opts.OnChange()
			}
		}
	}
}

// Age removes every host not heard from for Missed of its heartbeat
// periods; it reports whether it removed any.
func (s *Server) Age() bool {
	now := s.opts.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	// Replay state a frame's time alone now protects: any frame it
	// could refuse is older than the freshness window (doubled for the
	// sender's clock running ahead of this unit's).
	for id, st := range s.senders {
		if now.Sub(st.last) > 2*s.opts.Freshness {
			delete(s.senders, id)
		}
	}
	removed := false
	for id, h := range s.cache.hosts {
		if id == ProbeHost {
			continue
		}
		if now.Sub(h.LastHeard) > time.Duration(s.opts.Missed)*h.Interval {
			s.cache.remove(id)
			s.stats.AgedOut++
			removed = true
			s.opts.Log.Warn().Uint32("host", id).Str("name", h.Name).Dur("silent", now.Sub(h.LastHeard).Round(time.Millisecond)).Msg("host aged out: no heartbeat")
		}
	}
	return removed
}

// ProbeHost is the pseudo-host that holds the rows this unit's own probes
// fill for backends without an agent. 0 is no valid host ID on the wire,
// so no agent can overwrite it.
const ProbeHost = 0

// SetProbeRow puts (or with r.Health unknown and remove set, deletes) a
// row of the probe pseudo-host.
func (s *Server) SetProbeRow(r *pb.Row, remove bool) {
	s.mu.Lock()
	h := s.cache.touch(ProbeHost)
	if remove {
		s.cache.del(h, r.GetApp())
	} else {
		s.cache.put(h, r)
	}
	if len(h.Rows) == 0 {
		s.cache.remove(ProbeHost)
	}
	s.mu.Unlock()
	s.opts.OnChange()
}

// Read runs fn with the cache, which it must not keep or change.
func (s *Server) Read(fn func(*Cache)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	fn(s.cache)
}

// Stats returns a copy of the counters.
func (s *Server) Stats() unit.HealthStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := s.stats
	out.Received, out.Refused = map[string]uint64{}, map[string]uint64{}
	for k, v := range s.stats.Received {
		out.Received[k] = v
	}
	for k, v := range s.stats.Refused {
		out.Refused[k] = v
	}
	return out
}
