package streams

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net/netip"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"

	"github.com/tetherlb/tether/agent/sessions"
	pb "github.com/tetherlb/tether/api/hostpb"
)

// Unit is one unit the agent keeps a stream to.
type Unit struct {
	// Name is the unit's name (its unit.name), which its certificate
	// must carry as a DNS name.
	Name string
	// Address is the unit's stream listener, host:port.
	Address string
}

// Options configure the streams.
type Options struct {
	// Host is this host's ID; the certificate in TLS must name it.
	Host  uint32
	Units []Unit
	// TLS is the client configuration (mtls.Client); ServerName is set
	// per unit.
	TLS *tls.Config
	// MinBackoff and MaxBackoff bound the wait between attempts to
	// reach a unit (defaults 100 ms and 5 s).
	MinBackoff, MaxBackoff time.Duration
	Log                    zerolog.Logger
	// Sink, when not nil, receives every unit's mappings before the
	// agent acknowledges them (the host's kernel, agent/tunnel).
	Sink Sink
	// Migrator, when not nil, takes the units' migrated connections
	// (issue 14, agent/migrate); without one every Migrate is answered
	// not ok, and the unit resets the client.
	Migrator Migrator
	// Sessions, when not nil, is the host's session table, which the
	// streams report to one unit (issue 15; sessions.go).
	Sessions *sessions.Table
	// Listeners, when not nil, is what the host can hand migrated
	// connections to (the Migrator's shims and splices); every unit
	// that takes it is told after the hello and on every change
	// (listeners.go). Without it, a host without a Migrator tells the
	// units it listens nowhere, and one with a Migrator tells them
	// nothing (they take it to listen everywhere).
	Listeners ListenerSource

	// putOff is how long what nothing waits for may wait for an Ack to
	// ride on (putOffDelay; tests lengthen it to see the riding alone).
	putOff time.Duration
}

// Migrator takes a unit's migrated connection. Take is called from the
// unit's stream goroutine in stream order with the mappings batches, and
// returns once the connection exists in the host's kernel, or cannot:
// the stream then holds the flow's mapping the Migrate carries and
// acknowledges it, which lets the unit send the client's later packets.
// done is called once, then or later, from any goroutine, with nil when
// the application has the connection and otherwise with why not (the
// client is reset: by this host once the upload got as far as a
// connected socket, by the unit otherwise): the hand-off to the
// application may take a while, and the stream's later messages do not
// wait for it. A Migrator reports a migration's end (SendEnded) only
// after its done.
type Migrator interface {
	Take(unit string, m *pb.Migrate, done func(error))
}

// Sink is where the mappings of the units go. The agent acknowledges a
// batch or a resync only after the sink took it, so an acknowledgement
// means the host holds the mappings: the unit holds a new connection's
// first packet until then.
//
// The calls for one unit come in the stream's order from that unit's
// goroutine: Sources after every hello, then Replace after a full resync,
// then Apply for each batch. Calls for different units come concurrently.
//
// An error ends the stream without an acknowledgement, and the agent
// then forgets what it holds from the unit, so that its next hello
// claims nothing and the unit resends the whole set (which reaches the
// sink as Replace): whatever a failed call left half done is put right
// then.
type Sink interface {
	// Sources are the addresses the unit's tunnel packets come from,
	// as its hello names them.
	Sources(unit string, addrs []netip.Addr) error
	// Replace makes the unit's mappings exactly table (flow ID →
	// tuple); the sink must not keep table, which the caller keeps.
	Replace(unit string, table map[uint32]*pb.Tuple) error
	// Apply applies one batch: the removals, then the additions (an
	// addition of a held flow ID replaces it).
	Apply(unit string, add []*pb.Mapping, remove []uint32) error
}

// helloTimeout bounds the wait for a unit's hello and resync.
const helloTimeout = 10 * time.Second

// Stream states as Status shows them.
const (
	StateConnecting = "connecting"
	StateUp         = "up"
	StateBackoff    = "backoff"
)

// Status is one unit's stream as the agent's API shows it.
type Status struct {
	Unit    string `json:"unit"`
	Address string `json:"address"`
	// State is connecting, up or backoff (waiting to try again).
	State string    `json:"state"`
	Since time.Time `json:"since"`
	// Connects counts streams that came up; Attempts every try.
	Connects uint64 `json:"connects"`
	Attempts uint64 `json:"attempts"`
	// UnitBoot, Seq and Mappings are what the agent holds from the
	// unit; LastResync is the unit's answer to the last hello.
	UnitBoot    uint64 `json:"unit_boot,omitempty"`
	Seq         uint64 `json:"seq"`
	Mappings    int    `json:"mappings"`
	LastResync  string `json:"last_resync,omitempty"`
	MessagesIn  uint64 `json:"messages_in"`
	MessagesOut uint64 `json:"messages_out"`
	// Refused counts the unit's messages refused (invalid, or out of
	// turn); each ends the stream.
	Refused uint64 `json:"refused"`
	// SinkFailures counts hellos, resyncs and batches the sink (the
	// host's kernel) did not take: each ends the stream unacknowledged,
	// and the next hello asks for the whole set.
	SinkFailures uint64 `json:"sink_failures,omitempty"`
	// Migrations counts the unit's Migrates done with, MigrationsFailed
	// those that failed (and were reported). EndedWaiting is the ended
	// notices kept while the unit's stream is down (or broke before they
	// went), for its next stream to the same boot of the unit;
	// EndedDropped counts those that never went: past maxLostEnds, of
	// a boot the unit left (it restarted, and forgot its migrations), or
	// while the agent held nothing of the unit's.
	Migrations       uint64 `json:"migrations,omitempty"`
	MigrationsFailed uint64 `json:"migrations_failed,omitempty"`
	EndedWaiting     int    `json:"ended_waiting,omitempty"`
	EndedDropped     uint64 `json:"ended_dropped,omitempty"`
	// Sessions is the unit's part in the host's session reports:
	// "primary" (it holds the host's sessions), "standby" (it takes
	// sessions, and was told it holds none), or "" (it takes none, or
	// its stream is down). SessionsSent counts the sessions sent to it
	// up or down, SessionResyncs the resyncs (whole or empty).
	Sessions     string `json:"sessions,omitempty"`
	SessionsSent uint64 `json:"sessions_sent,omitempty"`
	// ListenersSent counts the times the unit was told what the host
	// can hand migrated connections to.
	ListenersSent  uint64 `json:"listeners_sent,omitempty"`
	SessionResyncs uint64 `json:"session_resyncs,omitempty"`
	// LastError is why the last attempt or stream ended (it stays while
	// a newer stream is up).
	LastError string `json:"last_error,omitempty"`
	// Retry is the wait before the next attempt, while in backoff.
	Retry string `json:"retry,omitempty"`
}

// Streams keeps the agent's streams.
type Streams struct {
	opts  Options
	boot  uint64
	links []*link
	// linked and relinked are signalled when a stream comes up or goes
	// down, for the session sender and the listener sender.
	linked, relinked chan struct{}
}

// linkChanged signals the senders that a stream came up or went down.
func (s *Streams) linkChanged() {
	poke(s.linked)
	poke(s.relinked)
}

// link is one unit's stream and what the agent holds from the unit.
type link struct {
	s    *Streams
	unit Unit

	mu   sync.Mutex
	st   Status
	held holding
	// stream is the stream while it is up (after the hello), under mu:
	// SendEnded sends on it. gen counts the streams that came up, end
	// ends the live one; takesSessions and takesListeners are what its
	// unit's hello said.
	stream         pb.HostStream_ConnectClient
	gen            uint64
	end            context.CancelCauseFunc
	takesSessions  bool
	takesListeners bool

	// sendMu serialises Send: a gRPC client stream's Send is not safe
	// for concurrent use, and SendEnded runs beside the stream's
	// goroutine. Under it is what is put off on the stream owedOn
	// (putOff): owed, the seq of batches applied and not acknowledged
	// yet (0 when none), and ends, migrations' end notices not sent yet.
	// closed is the stream whose sending side closeSend ended (written
	// under both locks, read under either). lost are the end notices no
	// stream took, of the unit's boot lostBoot (keepLostLocked).
	sendMu   sync.Mutex
	owed     uint64
	ends     []*pb.MigrationEnded
	owedOn   pb.HostStream_ConnectClient
	closed   pb.HostStream_ConnectClient
	lost     []*pb.MigrationEnded
	lostBoot uint64
}

// putOffDelay bounds how long a removal's acknowledgement or an end
// notice is put off (putOff).
const putOffDelay = 10 * time.Millisecond

// maxPutOffEnds is how many end notices wait at most: a host ending
// connections faster than it takes new ones sends them in bursts.
const maxPutOffEnds = 64

// maxLostEnds bounds the end notices kept for a unit whose stream is
// down (a few hundred KiB).
const maxLostEnds = 4096

// closeTimeout bounds a clean shutdown's last words on a stream: what
// was put off, then the end of the agent's side, until the unit ends
// the stream.
const closeTimeout = time.Second

// holding is the mappings held from one unit at one of its boots.
type holding struct {
	boot  uint64
	seq   uint64
	sum   uint64
	table map[uint32]*pb.Tuple
}

func (h *holding) add(m *pb.Mapping) {
	if old, ok := h.table[m.GetFlowId()]; ok {
		h.sum -= pb.MappingSum(&pb.Mapping{FlowId: m.GetFlowId(), Tuple: old})
	}
	h.table[m.GetFlowId()] = m.GetTuple()
	h.sum += pb.MappingSum(m)
}

func (h *holding) remove(id uint32) {
	if old, ok := h.table[id]; ok {
		h.sum -= pb.MappingSum(&pb.Mapping{FlowId: id, Tuple: old})
		delete(h.table, id)
	}
}

// New prepares the streams; Run keeps them.
func New(opts Options) (*Streams, error) {
	if opts.TLS == nil {
		return nil, errors.New("streams: no TLS configuration")
	}
	if opts.Host == 0 {
		return nil, errors.New("streams: host 0")
	}
	if opts.putOff <= 0 {
		opts.putOff = putOffDelay
	}
	if opts.MinBackoff <= 0 {
		opts.MinBackoff = 100 * time.Millisecond
	}
	if opts.MaxBackoff < opts.MinBackoff {
		opts.MaxBackoff = max(5*time.Second, opts.MinBackoff)
	}
	var b [8]byte
	for binary.BigEndian.Uint64(b[:]) == 0 {
		if _, err := rand.Read(b[:]); err != nil {
			return nil, fmt.Errorf("streams: boot ID: %w", err)
		}
	}
	s := &Streams{opts: opts, boot: binary.BigEndian.Uint64(b[:]), linked: make(chan struct{}, 1), relinked: make(chan struct{}, 1)}
	for _, u := range opts.Units {
		s.links = append(s.links, &link{s: s, unit: u, st: Status{Unit: u.Name, Address: u.Address, State: StateConnecting, Since: time.Now()},
			held: holding{table: map[uint32]*pb.Tuple{}}})
	}
	return s, nil
}

// Boot is this agent's boot ID.
func (s *Streams) Boot() uint64 { return s.boot }

// Run keeps a stream to every unit until ctx ends.
func (s *Streams) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for _, l := range s.links {
		wg.Add(1)
		go func() { defer wg.Done(); l.run(ctx) }()
	}
	if s.opts.Sessions != nil {
		wg.Add(1)
		go func() { defer wg.Done(); s.sendSessions(ctx) }()
	}
	if s.opts.Listeners != nil || s.opts.Migrator == nil {
		wg.Add(1)
		go func() { defer wg.Done(); s.sendListeners(ctx) }()
	}
	wg.Wait()
}

// Status is every unit's stream, in configuration order.
func (s *Streams) Status() []Status {
	out := make([]Status, 0, len(s.links))
	for _, l := range s.links {
		l.mu.Lock()
		st := l.st
		st.UnitBoot, st.Seq, st.Mappings = l.held.boot, l.held.seq, len(l.held.table)
		l.mu.Unlock()
		out = append(out, st)
	}
	return out
}

// Mappings is a copy of what the agent holds from unit (flow ID →
// tuple), and the unit's boot they belong to.
func (s *Streams) Mappings(unit string) (map[uint32]*pb.Tuple, uint64) {
	for _, l := range s.links {
		if l.unit.Name != unit {
			continue
		}
		l.mu.Lock()
		defer l.mu.Unlock()
		out := make(map[uint32]*pb.Tuple, len(l.held.table))
		for k, v := range l.held.table {
			out[k] = v
		}
		return out, l.held.boot
	}
	return nil, 0
}

// backoff is the wait after the n-th failure in a row (n ≥ 1): doubling
// from min, at most max, with "equal jitter" (half fixed, half random)
// so that agents a unit restart disconnected together do not return in
// step.
func backoff(n int, lo, hi time.Duration) time.Duration {
	d := lo
	for i := 1; i < n && d < hi; i++ {
		d *= 2
	}
	d = min(d, hi)
	return d/2 + mrand.N(d/2+1)
}

func (l *link) run(ctx context.Context) {
	failures := 0
	for {
		l.set(func(st *Status) { st.State, st.Since, st.Retry = StateConnecting, time.Now(), ""; st.Attempts++ })
		up, err := l.connect(ctx)
		if ctx.Err() != nil {
			return
		}
		if up {
			failures = 0 // it worked: the next wait starts small again
		}
		failures++
		wait := backoff(failures, l.s.opts.MinBackoff, l.s.opts.MaxBackoff)
		l.set(func(st *Status) {
			st.State, st.Since, st.Retry = StateBackoff, time.Now(), wait.Round(time.Millisecond).String()
			if err != nil {
				st.LastError = err.Error()
			}
		})
		if err != nil {
			l.s.opts.Log.Warn().Str("unit", l.unit.Name).Str("address", l.unit.Address).Err(err).Dur("retry", wait).Msg("unit stream down")
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

func (l *link) set(f func(*Status)) {
	l.mu.Lock()
	f(&l.st)
	l.mu.Unlock()
}

// connect runs one stream to its end; up says whether it got as far as
// the unit's hello and resync.
func (l *link) connect(ctx context.Context) (up bool, err error) {
	cfg := l.s.opts.TLS.Clone()
	cfg.ServerName = l.unit.Name
	conn, err := grpc.NewClient(l.unit.Address,
		grpc.WithTransportCredentials(credentials.NewTLS(cfg)),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(pb.MaxMessage), grpc.MaxCallSendMsgSize(pb.MaxMessage)),
		grpc.WithStaticStreamWindowSize(pb.Window), grpc.WithStaticConnWindowSize(pb.Window),
		// A unit that vanishes without closing the connection (its host
		// lost power) is noticed within 15 s.
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 10 * time.Second, Timeout: 5 * time.Second, PermitWithoutStream: true}),
	)
	if err != nil {
		return false, fmt.Errorf("dial %s: %w", l.unit.Address, err)
	}
	defer conn.Close()
	// The stream outlives ctx by its last words: when ctx ends, what was
	// put off goes and the agent's side closes, and the unit ends the
	// stream (within closeTimeout, or the stream is cancelled).
	parent := ctx
	ctx, cancel := context.WithCancelCause(context.WithoutCancel(parent))
	defer cancel(nil)
	stopClose := context.AfterFunc(parent, func() {
		// The timer outlives this function: it bounds the unit's end of
		// the stream after closeSend as well as closeSend itself (a unit
		// that never ends it held the agent's shutdown until keepalive
		// gave up). Once connect has returned it cancels nothing.
		time.AfterFunc(closeTimeout, func() { cancel(context.Canceled) })
		if !l.closeSend() {
			cancel(context.Canceled)
		}
	})
	defer stopClose()
	stream, err := pb.NewHostStreamClient(conn).Connect(ctx)
	if err != nil {
		return false, fmt.Errorf("connect: %w", err)
	}
	l.mu.Lock()
	hello := &pb.AgentHello{Host: l.s.opts.Host, Boot: l.s.boot}
	if l.held.boot != 0 {
		hello.Holding = &pb.Holding{UnitBoot: l.held.boot, Seq: l.held.seq, Count: uint32(len(l.held.table)), Sum: l.held.sum}
	}
	l.mu.Unlock()
	if err := l.send(stream, &pb.AgentMessage{Version: pb.Version, Body: &pb.AgentMessage_Hello{Hello: hello}}); err != nil {
		return false, err
	}
	// The hello and the resync must arrive within helloTimeout; after
	// that the stream lives as long as the connection does.
	timer := time.AfterFunc(helloTimeout, func() { cancel(errors.New("no hello from the unit")) })
	err = l.greet(stream)
	timer.Stop()
	if err != nil {
		if c := context.Cause(ctx); c != nil && !errors.Is(c, context.Canceled) {
			err = c
		}
		return false, err
	}
	l.mu.Lock()
	resync, n := l.st.LastResync, len(l.held.table)
	l.mu.Unlock()
	l.s.opts.Log.Info().Str("unit", l.unit.Name).Str("address", l.unit.Address).Str("resync", resync).Int("mappings", n).Msg("unit stream up")
	l.mu.Lock()
	l.stream, l.end = stream, cancel
	l.gen++
	l.mu.Unlock()
	l.sendMu.Lock()
	l.resendLostLocked(stream)
	l.sendMu.Unlock()
	l.s.linkChanged()
	defer func() {
		// The stream goes first, so that an end notice sent after this
		// is kept for the next one rather than put off on this one.
		l.mu.Lock()
		l.stream, l.end = nil, nil
		l.st.Sessions = ""
		l.mu.Unlock()
		l.sendMu.Lock()
		if l.owedOn == stream {
			// What was put off goes with the stream (putOffLocked), its
			// end notices to the next one.
			l.loseEndsLocked()
			l.owed, l.owedOn = 0, nil
		}
		l.sendMu.Unlock()
		l.s.linkChanged()
	}()
	return true, l.follow(stream)
}

func (l *link) send(stream pb.HostStream_ConnectClient, m *pb.AgentMessage) error {
	l.sendMu.Lock()
	defer l.sendMu.Unlock()
	return l.sendLocked(stream, m)
}

// sendLocked is send, under l.sendMu.
func (l *link) sendLocked(stream pb.HostStream_ConnectClient, m *pb.AgentMessage) error {
	if stream == l.closed {
		return errors.New("send: the agent is shutting down")
	}
	if err := stream.Send(m); err != nil {
		return fmt.Errorf("send: %w", err)
	}
	l.set(func(st *Status) { st.MessagesOut++ })
	return nil
}

// recv reads and validates the next message; an invalid one is counted
// and ends the stream.
func (l *link) recv(stream pb.HostStream_ConnectClient) (*pb.UnitMessage, error) {
	m, err := stream.Recv()
	if err != nil {
		return nil, fmt.Errorf("receive: %w", err)
	}
	l.set(func(st *Status) { st.MessagesIn++ })
	if err := pb.ValidateUnit(m); err != nil {
		return nil, l.refuse(err)
	}
	return m, nil
}

func (l *link) refuse(err error) error {
	l.set(func(st *Status) { st.Refused++ })
	l.s.opts.Log.Warn().Str("unit", l.unit.Name).Err(err).Msg("unit message refused")
	return err
}

// greet reads the unit's hello and, for a full resync, the whole set; it
// replaces what the agent holds only once the set's count and sum check
// out, then acknowledges.
func (l *link) greet(stream pb.HostStream_ConnectClient) error {
	m, err := l.recv(stream)
	if err != nil {
		return err
	}
	h := m.GetHello()
	switch {
	case h == nil:
		return l.refuse(fmt.Errorf("first message %T is not a hello", m.GetBody()))
	case h.GetUnit() != l.unit.Name:
		return l.refuse(fmt.Errorf("hello of unit %q, want %q", h.GetUnit(), l.unit.Name))
	case h.GetHost() != l.s.opts.Host:
		return l.refuse(fmt.Errorf("the unit took this host for host %d, it is %d", h.GetHost(), l.s.opts.Host))
	}
	if err := l.sink(func(s Sink) error { return s.Sources(l.unit.Name, sources(h)) }); err != nil {
		return err
	}
	l.mu.Lock()
	l.takesSessions, l.takesListeners = h.GetSessions(), h.GetListeners()
	l.mu.Unlock()
	if h.GetResync() == pb.Resync_RESYNC_NONE {
		l.mu.Lock()
		boot, seq := l.held.boot, l.held.seq
		ok := boot == h.GetBoot() && seq == h.GetSeq()
		if ok {
			l.st.LastResync = "none"
			l.st.State, l.st.Since = StateUp, time.Now()
			l.st.Connects++
		}
		l.mu.Unlock()
		if !ok {
			return l.refuse(fmt.Errorf("resync none at boot %d seq %d, the agent holds boot %d seq %d", h.GetBoot(), h.GetSeq(), boot, seq))
		}
		// The Ack of seq may have been lost with the old stream, and
		// the unit holds new flows' packets (and counts their
		// migrations as not taken) until it comes.
		return l.ack(stream, seq)
	}
	next := holding{boot: h.GetBoot(), table: map[uint32]*pb.Tuple{}}
	for {
		m, err := l.recv(stream)
		if err != nil {
			return err
		}
		if end := m.GetResyncEnd(); end != nil {
			if int(end.GetCount()) != len(next.table) || end.GetSum() != next.sum || end.GetSeq() != h.GetSeq() {
				return l.refuse(fmt.Errorf("resync ends with %d mappings sum %#x at seq %d, received %d sum %#x at seq %d",
					end.GetCount(), end.GetSum(), end.GetSeq(), len(next.table), next.sum, h.GetSeq()))
			}
			next.seq = end.GetSeq()
			break
		}
		b := m.GetMappings()
		if b == nil || len(b.GetRemove()) > 0 || b.GetSeq() != h.GetSeq() {
			return l.refuse(fmt.Errorf("a resync carries additions at seq %d only, got %T", h.GetSeq(), m.GetBody()))
		}
		for _, a := range b.GetAdd() {
			if _, dup := next.table[a.GetFlowId()]; dup {
				return l.refuse(fmt.Errorf("resync: flow ID %d twice", a.GetFlowId()))
			}
			next.add(a)
		}
	}
	if err := l.sink(func(s Sink) error { return s.Replace(l.unit.Name, next.table) }); err != nil {
		return err
	}
	l.mu.Lock()
	l.held = next
	l.st.LastResync = "full"
	l.st.State, l.st.Since = StateUp, time.Now()
	l.st.Connects++
	l.mu.Unlock()
	return l.ack(stream, next.seq)
}

// follow applies the unit's batches in sequence and acknowledges each,
// and answers its Migrates, until the stream ends. A batch out of
// sequence ends the stream: the next hello resyncs.
func (l *link) follow(stream pb.HostStream_ConnectClient) error {
	for {
		m, err := l.recv(stream)
		if err != nil {
			return err
		}
		if l.closing(stream) {
			// Shutting down: what can no longer be acknowledged is not
			// taken (the unit gives it up or resyncs it elsewhere).
			return errors.New("the agent is shutting down")
		}
		if mg := m.GetMigrate(); mg != nil {
			if err := l.migrate(stream, mg); err != nil {
				return err
			}
			continue
		}
		b := m.GetMappings()
		l.mu.Lock()
		want := l.held.seq + 1
		l.mu.Unlock()
		if b == nil || b.GetSeq() != want {
			return l.refuse(fmt.Errorf("expected mappings at seq %d, got %T", want, m.GetBody()))
		}
		// The sink is called without the lock: a large batch to the
		// kernel takes a while, and Status must not wait for it.
		if err := l.sink(func(s Sink) error { return s.Apply(l.unit.Name, b.GetAdd(), b.GetRemove()) }); err != nil {
			return err
		}
		l.mu.Lock()
		for _, id := range b.GetRemove() {
			l.held.remove(id)
		}
		for _, a := range b.GetAdd() {
			l.held.add(a)
		}
		l.held.seq = b.GetSeq()
		l.mu.Unlock()
		if len(b.GetAdd()) == 0 {
			l.ackLater(stream, b.GetSeq())
			continue
		}
		if err := l.ack(stream, b.GetSeq()); err != nil {
			return err
		}
	}
}

// migrate hands a Migrate to the Migrator and then, as the change
// numbered seq that it also is, holds its flow's mapping and
// acknowledges it: the connection exists in the host's kernel by then,
// or never will (the unit removes the flow when it hears so). A failure
// goes back on this stream when it comes (a stream that ended meanwhile
// loses it: the unit gives the migration up after its timeout).
func (l *link) migrate(stream pb.HostStream_ConnectClient, mg *pb.Migrate) error {
	l.mu.Lock()
	want := l.held.seq + 1
	l.mu.Unlock()
	if mg.GetSeq() != want {
		return l.refuse(fmt.Errorf("expected a change at seq %d, got a Migrate at seq %d", want, mg.GetSeq()))
	}
	done := func(err error) {
		l.set(func(st *Status) {
			st.Migrations++
			if err != nil {
				st.MigrationsFailed++
			}
		})
		if err == nil {
			return
		}
		res := &pb.MigrateResult{Id: mg.GetId(), Error: err.Error()}
		if len(res.Error) > pb.MaxMigrateError {
			res.Error = res.Error[:pb.MaxMigrateError]
		}
		if err := l.send(stream, &pb.AgentMessage{Version: pb.Version, Body: &pb.AgentMessage_MigrateResult{MigrateResult: res}}); err != nil {
			l.s.opts.Log.Debug().Str("unit", l.unit.Name).Uint64("id", res.GetId()).Err(err).Msg("migration failure not sent")
		}
	}
	if mi := l.s.opts.Migrator; mi != nil {
		mi.Take(l.unit.Name, mg, done)
	} else {
		done(errors.New("this host takes no migrated connections"))
	}
	add := []*pb.Mapping{pb.MigrateMapping(mg)}
	if err := l.sink(func(s Sink) error { return s.Apply(l.unit.Name, add, nil) }); err != nil {
		return err
	}
	l.mu.Lock()
	l.held.add(add[0])
	l.held.seq = mg.GetSeq()
	l.mu.Unlock()
	return l.ack(stream, mg.GetSeq())
}

// ack acknowledges the changes up to seq, those whose acknowledgement
// was put off among them, and sends the end notices put off on stream
// with it.
func (l *link) ack(stream pb.HostStream_ConnectClient, seq uint64) error {
	l.sendMu.Lock()
	defer l.sendMu.Unlock()
	if l.owedOn == stream {
		l.owed = 0
	}
	if err := l.sendLocked(stream, &pb.AgentMessage{Version: pb.Version, Body: &pb.AgentMessage_Ack{Ack: &pb.Ack{Seq: seq}}}); err != nil {
		return err
	}
	return l.flushEndsLocked(stream)
}

// ackLater acknowledges a batch that only removes mappings within
// putOffDelay, unless an acknowledgement of a later change covers it
// first: nothing at the unit waits for a removal (only additions hold
// packets), and under load the next Migrate's or addition's Ack comes
// well within the delay, which saves the unit and this host a message
// per ended connection. Acknowledgements stay in order: each is sent
// under l.sendMu, and owed is never above a later change's seq.
func (l *link) ackLater(stream pb.HostStream_ConnectClient, seq uint64) {
	l.sendMu.Lock()
	defer l.sendMu.Unlock()
	l.putOffLocked(stream)
	l.owed = seq
}

// putOffLocked makes stream the one whose messages are put off and
// makes sure they go within putOffDelay. What was put off on an
// earlier stream is not sent on it: its unit resyncs or acknowledges
// anew on the new stream, and its end notices are kept as lost
// (resendLostLocked). Callers hold l.sendMu.
func (l *link) putOffLocked(stream pb.HostStream_ConnectClient) {
	if l.owedOn == stream && (l.owed != 0 || len(l.ends) > 0) {
		return // a timer is armed for them
	}
	if l.owedOn != stream {
		l.loseEndsLocked()
		l.owed, l.owedOn = 0, stream
	}
	time.AfterFunc(l.s.opts.putOff, func() {
		l.sendMu.Lock()
		defer l.sendMu.Unlock()
		l.sendPutOffLocked(stream)
	})
}

// sendPutOffLocked sends what was put off on stream: the owed
// acknowledgement, then the end notices. Callers hold l.sendMu.
func (l *link) sendPutOffLocked(stream pb.HostStream_ConnectClient) {
	if l.owedOn != stream {
		return // a newer stream's
	}
	if seq := l.owed; seq != 0 {
		l.owed = 0
		if err := l.sendLocked(stream, &pb.AgentMessage{Version: pb.Version, Body: &pb.AgentMessage_Ack{Ack: &pb.Ack{Seq: seq}}}); err != nil {
			l.s.opts.Log.Debug().Str("unit", l.unit.Name).Uint64("seq", seq).Err(err).Msg("put-off acknowledgement not sent")
		}
	}
	if err := l.flushEndsLocked(stream); err != nil {
		l.s.opts.Log.Debug().Str("unit", l.unit.Name).Err(err).Msg("put-off end notices not sent")
	}
}

// closing reports whether closeSend ended stream's sending side. It
// does not wait for a send in progress.
func (l *link) closing(stream pb.HostStream_ConnectClient) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.closed == stream
}

// closeSend ends the agent's side of the stream that is up, after what
// was put off on it, and reports whether there was one: the unit then
// ends the stream, once it has read everything before. Nothing is sent
// on the stream after this (sendLocked refuses).
func (l *link) closeSend() bool {
	l.mu.Lock()
	stream := l.stream
	l.mu.Unlock()
	if stream == nil {
		return false
	}
	l.sendMu.Lock()
	defer l.sendMu.Unlock()
	l.sendPutOffLocked(stream)
	l.mu.Lock()
	l.closed = stream
	l.mu.Unlock()
	if err := stream.CloseSend(); err != nil {
		l.s.opts.Log.Debug().Str("unit", l.unit.Name).Err(err).Msg("close the stream")
		return false
	}
	return true
}

// flushEndsLocked sends the end notices put off on stream. Callers hold
// l.sendMu.
func (l *link) flushEndsLocked(stream pb.HostStream_ConnectClient) error {
	if l.owedOn != stream {
		return nil
	}
	for i, e := range l.ends {
		if err := l.sendLocked(stream, &pb.AgentMessage{Version: pb.Version, Body: &pb.AgentMessage_MigrationEnded{MigrationEnded: e}}); err != nil {
			l.ends = l.ends[i:]
			l.loseEndsLocked()
			return err
		}
	}
	clear(l.ends)
	l.ends = l.ends[:0]
	return nil
}

// loseEndsLocked keeps the end notices put off on a stream that will
// not send them for the next one (keepLostLocked). Callers hold
// l.sendMu.
func (l *link) loseEndsLocked() {
	l.keepLostLocked(l.ends...)
	l.ends = nil
}

// keepLostLocked keeps end notices no stream took, for the next stream
// to the unit's boot the agent holds mappings of now, which is the boot
// the migrations came from or a later one: a unit that restarted
// forgot its migrations, so notices of an earlier boot are dropped when
// a later one is held, as are those past maxLostEnds and those kept
// while the agent holds no boot at all. Without them the unit would
// keep an ended connection's route until its flow aged out, and a
// client reusing the tuple would meet the old host. It reports how many
// of es it kept. Callers hold l.sendMu.
func (l *link) keepLostLocked(es ...*pb.MigrationEnded) int {
	if len(es) == 0 {
		return 0
	}
	l.mu.Lock()
	boot := l.held.boot
	l.mu.Unlock()
	dropped := 0
	if boot != l.lostBoot {
		dropped += len(l.lost)
		clear(l.lost)
		l.lost, l.lostBoot = l.lost[:0], boot
	}
	kept := 0
	if boot != 0 {
		kept = min(len(es), maxLostEnds-len(l.lost))
		l.lost = append(l.lost, es[:kept]...)
	}
	dropped += len(es) - kept
	n := len(l.lost)
	l.set(func(st *Status) { st.EndedDropped += uint64(dropped); st.EndedWaiting = n })
	return kept
}

// resendLostLocked puts off on stream, a new stream whose unit's hello
// and resync the agent took, the end notices kept while there was none:
// they go with its first messages if the unit's boot is the one they
// are of, and are dropped (counted) if the unit restarted since.
// Callers hold l.sendMu.
func (l *link) resendLostLocked(stream pb.HostStream_ConnectClient) {
	// First what an earlier stream still had put off joins the lost.
	l.putOffLocked(stream)
	if len(l.lost) == 0 {
		return
	}
	l.mu.Lock()
	boot := l.held.boot
	l.mu.Unlock()
	lost := l.lost
	l.lost = nil
	if boot != l.lostBoot {
		l.set(func(st *Status) { st.EndedDropped += uint64(len(lost)); st.EndedWaiting = 0 })
		return
	}
	l.set(func(st *Status) { st.EndedWaiting = 0 })
	l.ends = append(l.ends, lost...)
	if len(l.ends) >= maxPutOffEnds {
		if err := l.flushEndsLocked(stream); err != nil {
			l.s.opts.Log.Debug().Str("unit", l.unit.Name).Err(err).Msg("kept end notices not sent")
		}
	}
}

// ErrNoStream is SendEnded's error when the unit's stream is not up and
// the notice could not be kept for its next one.
var ErrNoStream = errors.New("the unit's stream is not up")

// SendEnded tells unit that a migrated connection ended, on its stream.
// The notice goes with the stream's next Ack, or within putOffDelay:
// nothing at the unit waits for it (the connection's route lingers
// after it anyway), and under load it saves a message per connection.
// While the stream is down the notice is kept for the next stream to
// the same boot of the unit (keepLostLocked); ErrNoStream says it could
// not be (the unit then ages the connection's route out).
func (s *Streams) SendEnded(unit string, e *pb.MigrationEnded) error {
	for _, l := range s.links {
		if l.unit.Name != unit {
			continue
		}
		// The stream is read under sendMu: one that comes up after
		// this takes what is kept (resendLostLocked, under sendMu too).
		l.sendMu.Lock()
		defer l.sendMu.Unlock()
		l.mu.Lock()
		stream := l.stream
		l.mu.Unlock()
		if stream == nil {
			if l.keepLostLocked(e) == 0 {
				return fmt.Errorf("unit %q: %w", unit, ErrNoStream)
			}
			return nil
		}
		l.putOffLocked(stream)
		l.ends = append(l.ends, e)
		if len(l.ends) >= maxPutOffEnds {
			return l.flushEndsLocked(stream)
		}
		return nil
	}
	return fmt.Errorf("unit %q: no such unit", unit)
}

// sources are the addresses a unit's hello names (validated: 4 or 16
// bytes each).
func sources(h *pb.UnitHello) []netip.Addr {
	out := make([]netip.Addr, 0, len(h.GetTunnelSources()))
	for _, b := range h.GetTunnelSources() {
		if a, ok := netip.AddrFromSlice(b); ok {
			out = append(out, a.Unmap())
		}
	}
	return out
}

// sink runs call against the sink, if there is one. A failure is
// counted and logged, and the agent forgets what it holds from the unit:
// the host's kernel may hold part of what failed, so the next hello
// claims nothing and the unit's full resync makes the kernel exact
// again.
func (l *link) sink(call func(Sink) error) error {
	if l.s.opts.Sink == nil {
		return nil
	}
	err := call(l.s.opts.Sink)
	if err == nil {
		return nil
	}
	l.mu.Lock()
	l.st.SinkFailures++
	l.held = holding{table: map[uint32]*pb.Tuple{}}
	l.mu.Unlock()
	l.s.opts.Log.Error().Str("unit", l.unit.Name).Err(err).Msg("the host did not take the unit's mappings: stream ended unacknowledged, the next one resyncs")
	return fmt.Errorf("sink: %w", err)
}
