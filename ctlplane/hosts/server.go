package hosts

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	pb "github.com/tetherlb/tether/api/hostpb"
	"github.com/tetherlb/tether/api/unit"
	"github.com/tetherlb/tether/internal/mtls"
)

// Options configure a Server.
type Options struct {
	// Listen is the TCP address of the stream listener.
	Listen string
	// TLS is the server's configuration (mtls.Server): TLS 1.3 with
	// client certificates required.
	TLS *tls.Config
	// Unit is this unit's name, sent in every hello.
	Unit string
	// TunnelSources are the addresses the unit's tunnel and ipip packets
	// come from (unit.address4/6), sent in every hello: hosts restore
	// packets from these only.
	TunnelSources []netip.Addr
	// OnAck, when set, is called (outside the server's lock) each time
	// a host acknowledges the changes up to seq: the host's kernel holds
	// them, and the flows' held packets may go.
	OnAck func(host uint32, seq uint64)
	// OnMigrateResult and OnMigrationEnded, when set, receive the
	// hosts' reports of migrations that failed (one that succeeded is
	// acknowledged: OnAck) and their notices that a migrated connection
	// ended (called outside the server's lock, in the stream's order).
	OnMigrateResult  func(host uint32, r *pb.MigrateResult)
	OnMigrationEnded func(host uint32, e *pb.MigrationEnded)
	// OnHostKnown, when set, is called (outside the server's lock) as a
	// host's stream begins, once HostOf answers for the addresses its
	// certificate names and before the stream's first messages are
	// built: what it publishes for the host is in the host's resync.
	// Flows toward a host this process had not heard from get their
	// mappings here.
	OnHostKnown func(host uint32)
	// OnSessions, when set, receives the sessions hosts report (issue
	// 15; host.proto's Sessions), validated and in order: for one host,
	// in its stream's order, from the stream's goroutine, outside the
	// server's lock. A resync arrives whole, as one batch, once its
	// series is complete and adds up; a series cut short or refused is
	// never delivered. Streams of one host do not overlap (a new one
	// ends the old one first), but a batch of the old stream may still
	// be in the callback when the new one's first arrives. Without
	// OnSessions the unit's hello says it takes no sessions, and agents
	// send it none.
	OnSessions func(host uint32, b SessionBatch)
	Log        zerolog.Logger
}

// SessionBatch is what OnSessions receives from a host.
type SessionBatch struct {
	// Resync says Up is the host's whole table as this unit is to hold
	// it: it replaces everything the unit held from the host (Down is
	// empty). An empty resync means the host reports its sessions to
	// another unit now: this unit holds none of them.
	Resync bool
	// Up are sessions established or changed (a session the unit holds
	// takes the new application and timeout); Down sessions that ended
	// (one the unit does not hold is no error: the host may have sent
	// its establish to another unit). Down applies before Up; a session
	// is in at most one of them.
	Up, Down []*pb.Session
}

// Timings and bounds of the server's side.
const (
	// helloTimeout bounds the wait for an agent's hello: a connection
	// that says nothing holds no slot for long.
	helloTimeout = 10 * time.Second
	// queueLen bounds the changes waiting for a host's stream; a host
	// that falls this far behind is disconnected and resynced on its
	// return, which costs one full set instead of unbounded memory.
	queueLen = 256
	// readyWait bounds a hello's wait for SetReady.
	readyWait = 5 * time.Second
	// maxUnacked bounds the Migrates a host has not acknowledged: one
	// that leaves this many unanswered takes no more until it does.
	maxUnacked = 4096
)

// Server is the unit's stream listener.
type Server struct {
	pb.UnimplementedHostStreamServer

	opts Options
	log  zerolog.Logger
	boot uint64
	l    net.Listener
	grpc *grpc.Server

	mu      sync.Mutex
	hosts   map[uint32]*host
	refused map[string]uint64
	// byAddr is the host of each tunnel address, as the hosts'
	// certificates name them (the first certificate to name one keeps
	// it).
	byAddr map[netip.Addr]uint32
	// ready is closed when the unit knows every tunnel flow's mapping
	// (SetReady): a hello waits for it, bounded by readyWait, so that a
	// restarted control process does not resync hosts to an empty set.
	ready     chan struct{}
	readyOnce sync.Once
}

// host is what the unit keeps of one host: the mappings it should hold
// and its stream.
type host struct {
	view unit.HostStream
	// seq numbers the changes; sum and table are the set at seq.
	seq   uint64
	sum   uint64
	table map[uint32]*pb.Mapping
	// gen counts streams; a stream that ends updates the view only if
	// no newer one took its place. out and cancel are the live
	// stream's (nil while down).
	gen    uint64
	out    chan *pb.UnitMessage
	cancel context.CancelCauseFunc
	// addrs are the tunnel addresses the host's certificate names.
	addrs []netip.Addr
	// unacked are the Migrates sent and not yet acknowledged, in
	// sequence order: those the host's next hello says it never got
	// were lost with their stream (attach).
	unacked []sentMigrate
	// listeners are the VIP:ports the host last said it hands migrated
	// connections to applications for (Listening), listenAny that it
	// takes any; reported says it said either.
	listeners map[netip.AddrPort]bool
	listenAny bool
	reported  bool
}

// sentMigrate is a Migrate the host has not acknowledged: its change's
// seq, the migration's ID and the mapping it put in the table.
type sentMigrate struct {
	seq     uint64
	id      uint64
	mapping *pb.Mapping
}

// New opens the listener. Run serves it.
func New(opts Options) (*Server, error) {
	if opts.TLS == nil {
		return nil, errors.New("hosts: no TLS configuration")
	}
	var b [8]byte
	for binary.BigEndian.Uint64(b[:]) == 0 {
		if _, err := rand.Read(b[:]); err != nil {
			return nil, fmt.Errorf("hosts: boot ID: %w", err)
		}
	}
	l, err := net.Listen("tcp", opts.Listen)
	if err != nil {
		return nil, fmt.Errorf("hosts.listen: %q: %w", opts.Listen, err)
	}
	s := &Server{opts: opts, log: opts.Log, boot: binary.BigEndian.Uint64(b[:]), l: l,
		hosts: map[uint32]*host{}, refused: map[string]uint64{}, byAddr: map[netip.Addr]uint32{}, ready: make(chan struct{})}
	s.grpc = grpc.NewServer(
		grpc.Creds(countingCreds{credentials.NewTLS(opts.TLS), s}),
		grpc.MaxRecvMsgSize(pb.MaxMessage),
		grpc.MaxSendMsgSize(pb.MaxMessage),
		grpc.StaticStreamWindowSize(pb.Window), grpc.StaticConnWindowSize(pb.Window),
		// Agents ping every 10 s (agent/streams) so a unit notices a
		// host that vanished without closing its connection.
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 15 * time.Second, Timeout: 5 * time.Second}),
	)
	pb.RegisterHostStreamServer(s.grpc, s)
	return s, nil
}

// Addr is the listener's address.
func (s *Server) Addr() net.Addr { return s.l.Addr() }

// Boot is this server's boot ID.
func (s *Server) Boot() uint64 { return s.boot }

// Run serves until ctx ends, then closes every stream.
func (s *Server) Run(ctx context.Context) error {
	go func() { <-ctx.Done(); s.grpc.Stop() }()
	if err := s.grpc.Serve(s.l); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return fmt.Errorf("hosts: %w", err)
	}
	return nil
}

// refuse counts and logs a refusal; it changes nothing else.
func (s *Server) refuse(reason string, addr net.Addr, host uint32, err error) {
	s.mu.Lock()
	s.refused[reason]++
	s.mu.Unlock()
	ev := s.log.Warn().Str("reason", reason).Err(err)
	if addr != nil {
		ev = ev.Str("peer", addr.String())
	}
	if host != 0 {
		ev = ev.Uint32("host", host)
	}
	ev.Msg("host stream refused")
}

// countingCreds counts and logs failed handshakes, which gRPC would
// otherwise only drop: an agent with a certificate from another CA
// shows up in the admin API, not only in its own logs.
type countingCreds struct {
	credentials.TransportCredentials
	s *Server
}

// ServerHandshake implements credentials.TransportCredentials.
func (c countingCreds) ServerHandshake(conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	nc, ai, err := c.TransportCredentials.ServerHandshake(conn)
	if err != nil {
		c.s.refuse("tls", conn.RemoteAddr(), 0, err)
	}
	return nc, ai, err
}

// Clone implements credentials.TransportCredentials.
func (c countingCreds) Clone() credentials.TransportCredentials {
	return countingCreds{c.TransportCredentials.Clone(), c.s}
}

// peerHost is the host the stream's client certificate names.
func peerHost(ctx context.Context) (uint32, net.Addr, error) {
	id, addr, _, err := peerCert(ctx)
	return id, addr, err
}

// peerCert is peerHost with the tunnel addresses the certificate names.
func peerCert(ctx context.Context) (uint32, net.Addr, []netip.Addr, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return 0, nil, nil, errors.New("no peer")
	}
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(ti.State.PeerCertificates) == 0 {
		return 0, p.Addr, nil, errors.New("no client certificate")
	}
	cert := ti.State.PeerCertificates[0]
	id, err := mtls.HostID(cert)
	return id, p.Addr, mtls.TunnelAddrs(cert), err
}

// SetReady says the unit has published every tunnel flow's mapping it
// knows: hellos waiting for it are answered.
func (s *Server) SetReady() { s.readyOnce.Do(func() { close(s.ready) }) }

// HostOf returns the host whose certificate names addr as a tunnel
// address, and whether its stream is up.
func (s *Server) HostOf(addr netip.Addr) (id uint32, up, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	id, ok = s.byAddr[addr.Unmap()]
	if ok {
		up = s.hosts[id].out != nil
	}
	return id, up, ok
}

// listen records a host's valid Listeners, replacing what it said
// before.
func (s *Server) listen(hs *host, l *pb.Listeners) {
	set := make(map[netip.AddrPort]bool, len(l.GetEndpoints()))
	view := make([]string, 0, len(l.GetEndpoints())+1)
	for _, e := range l.GetEndpoints() {
		ap, _ := e.AddrPort() // valid: ValidateAgent checked it
		set[ap] = true
		view = append(view, ap.String())
	}
	if l.GetAny() {
		view = append(view, "*")
	}
	slices.Sort(view)
	s.mu.Lock()
	hs.listeners, hs.listenAny, hs.reported = set, l.GetAny(), true
	hs.view.Listeners = view
	s.mu.Unlock()
}

// Listening reports whether host said it can hand migrated connections
// to vip to an application now: it listed vip, or an unspecified
// address (either family's: a dual-stack listener registers "::") at
// vip's port, or any. A host that never said (an agent of an earlier
// version, or one whose first Listeners has not arrived) is taken to
// listen everywhere, as it was before hosts said.
func (s *Server) Listening(id uint32, vip netip.AddrPort) bool {
	vip = netip.AddrPortFrom(vip.Addr().Unmap(), vip.Port())
	s.mu.Lock()
	defer s.mu.Unlock()
	hs := s.hosts[id]
	return hs == nil || !hs.reported || hs.listenAny || hs.listeners[vip] ||
		hs.listeners[netip.AddrPortFrom(netip.IPv4Unspecified(), vip.Port())] ||
		hs.listeners[netip.AddrPortFrom(netip.IPv6Unspecified(), vip.Port())]
}

// Table returns the flow IDs host should hold, with their mappings.
func (s *Server) Table(id uint32) map[uint32]*pb.Mapping {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[uint32]*pb.Mapping{}
	if hs := s.hosts[id]; hs != nil {
		for k, v := range hs.table {
			out[k] = v
		}
	}
	return out
}

// Acked is the sequence up to which host acknowledged the changes
// published to it (0 for a host never heard from).
func (s *Server) Acked(id uint32) uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if hs := s.hosts[id]; hs != nil {
		return hs.view.Acked
	}
	return 0
}

// Hosts lists the hosts the unit keeps mappings for or ever heard from.
func (s *Server) Hosts() []uint32 {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]uint32, 0, len(s.hosts))
	for id := range s.hosts {
		out = append(out, id)
	}
	slices.Sort(out)
	return out
}

// Connect implements pb.HostStreamServer: one agent's stream.
func (s *Server) Connect(stream pb.HostStream_ConnectServer) error {
	id, addr, tunnel, err := peerCert(stream.Context())
	if err != nil {
		s.refuse("identity", addr, 0, err)
		return status.Errorf(codes.PermissionDenied, "identity: %v", err)
	}
	hello, err := s.recvHello(stream)
	if err != nil {
		return err
	}
	h := hello.GetHello()
	if h == nil {
		err := fmt.Errorf("first message is not a hello")
		s.refuse("protocol", addr, id, err)
		return status.Error(codes.FailedPrecondition, err.Error())
	}
	if h.GetHost() != id {
		err := fmt.Errorf("hello names host %d, the certificate host %d", h.GetHost(), id)
		s.refuse("identity", addr, id, err)
		return status.Error(codes.PermissionDenied, err.Error())
	}
	t := time.NewTimer(readyWait)
	select {
	case <-s.ready:
	case <-t.C:
		s.log.Warn().Uint32("host", id).Msg("answering a host before the unit knows its tunnel flows")
	case <-stream.Context().Done():
	}
	t.Stop()
	s.learn(id, tunnel)
	if s.opts.OnHostKnown != nil {
		s.opts.OnHostKnown(id)
	}
	ctx, cancel := context.WithCancelCause(stream.Context())
	defer cancel(nil)
	hs, gen, first, lost := s.attach(id, addr, h, cancel)
	s.log.Info().Uint32("host", id).Str("peer", addr.String()).Str("resync", first[0].GetHello().GetResync().String()).
		Int("mappings", len(first)-2).Int("migrates_lost", len(lost)).Msg("host stream up")
	// Before this stream's first acknowledgement, which covers the lost
	// Migrates' seqs: the failure must be heard first.
	for _, u := range lost {
		if s.opts.OnMigrateResult != nil {
			s.opts.OnMigrateResult(id, &pb.MigrateResult{Id: u.id,
				Error: fmt.Sprintf("the Migrate (change %d) was lost with the host's stream: the host held changes up to %d", u.seq, h.GetHolding().GetSeq())})
		}
	}
	err = s.serve(ctx, stream, id, hs, first)
	if c := context.Cause(ctx); c != nil && !errors.Is(c, context.Canceled) {
		err = c
	}
	s.detach(id, gen, err)
	if err != nil {
		s.log.Info().Uint32("host", id).Err(err).Msg("host stream down")
	}
	return err
}

// recvHello waits for the first message, at most helloTimeout, and
// validates it.
func (s *Server) recvHello(stream pb.HostStream_ConnectServer) (*pb.AgentMessage, error) {
	_, addr, _ := peerHost(stream.Context())
	type result struct {
		m   *pb.AgentMessage
		err error
	}
	got := make(chan result, 1)
	go func() {
		m, err := stream.Recv()
		got <- result{m, err}
	}()
	t := time.NewTimer(helloTimeout)
	defer t.Stop()
	select {
	case r := <-got:
		if r.err != nil {
			return nil, r.err
		}
		if err := pb.ValidateAgent(r.m); err != nil {
			s.refuse(reason(err), addr, 0, err)
			return nil, status.Error(codes.InvalidArgument, err.Error())
		}
		return r.m, nil
	case <-t.C:
		s.refuse("protocol", addr, 0, errors.New("no hello"))
		return nil, status.Error(codes.DeadlineExceeded, "no hello")
	}
}

func reason(err error) string {
	if errors.Is(err, pb.ErrVersion) {
		return "version"
	}
	return "invalid"
}

// learn records the tunnel addresses host id's certificate names, so
// that HostOf answers for them.
func (s *Server) learn(id uint32, tunnel []netip.Addr) {
	s.mu.Lock()
	defer s.mu.Unlock()
	hs := s.hosts[id]
	if hs == nil {
		hs = &host{table: map[uint32]*pb.Mapping{}, view: unit.HostStream{Host: id, State: unit.StreamDown, Since: time.Now()}}
		s.hosts[id] = hs
	}
	hs.addrs = tunnel
	for _, a := range tunnel {
		if other, taken := s.byAddr[a]; taken && other != id {
			s.log.Warn().Uint32("host", id).Uint32("holder", other).Stringer("address", a).
				Msg("two hosts' certificates name one tunnel address; the first keeps it")
			continue
		}
		s.byAddr[a] = id
	}
}

// attach makes the stream the host's live one (ending an older one) and
// decides the resync. The first messages (hello, and for a full resync
// the set and its end) are built under the lock, so every change
// published later queues behind them.
func (s *Server) attach(id uint32, addr net.Addr, hello *pb.AgentHello, cancel context.CancelCauseFunc) (*host, uint64, []*pb.UnitMessage, []sentMigrate) {
	s.mu.Lock()
	defer s.mu.Unlock()
	hs := s.hosts[id]
	lost := hs.lostMigrates(hello.GetHolding(), s.boot)
	if hs.cancel != nil {
		hs.cancel(errors.New("replaced by a newer stream of the same host"))
	}
	hs.gen++
	hs.out, hs.cancel = make(chan *pb.UnitMessage, queueLen), cancel
	v := &hs.view
	if v.AgentBoot != hello.GetBoot() {
		// Another agent process: what the last one listened for is
		// not this one's, which says its own after the hello (and an
		// agent that never says is taken to listen everywhere).
		hs.listeners, hs.listenAny, hs.reported = nil, false, false
		v.Listeners = nil
	}
	v.Address, v.State, v.Since, v.AgentBoot = addr.String(), unit.StreamUp, time.Now(), hello.GetBoot()
	v.Connects++
	hd := hello.GetHolding()
	resync := pb.Resync_RESYNC_FULL
	if hd != nil && hd.GetUnitBoot() == s.boot && hd.GetSeq() == hs.seq && int(hd.GetCount()) == len(hs.table) && hd.GetSum() == hs.sum {
		resync = pb.Resync_RESYNC_NONE
	}
	v.Resync = map[pb.Resync]string{pb.Resync_RESYNC_NONE: "none", pb.Resync_RESYNC_FULL: "full"}[resync]
	var sources [][]byte
	for _, a := range s.opts.TunnelSources {
		sources = append(sources, a.AsSlice())
	}
	first := []*pb.UnitMessage{{Version: pb.Version, Body: &pb.UnitMessage_Hello{Hello: &pb.UnitHello{
		Unit: s.opts.Unit, Boot: s.boot, Host: id, Resync: resync, Seq: hs.seq, TunnelSources: sources,
		Sessions: s.opts.OnSessions != nil, Listeners: true}}}}
	if resync == pb.Resync_RESYNC_FULL {
		ids := make([]uint32, 0, len(hs.table))
		for fid := range hs.table {
			ids = append(ids, fid)
		}
		slices.Sort(ids)
		for len(ids) > 0 {
			n := min(len(ids), pb.MaxBatch)
			b := &pb.Mappings{Seq: hs.seq}
			for _, fid := range ids[:n] {
				b.Add = append(b.Add, hs.table[fid])
			}
			first = append(first, &pb.UnitMessage{Version: pb.Version, Body: &pb.UnitMessage_Mappings{Mappings: b}})
			ids = ids[n:]
		}
		first = append(first, &pb.UnitMessage{Version: pb.Version, Body: &pb.UnitMessage_ResyncEnd{ResyncEnd: &pb.ResyncEnd{
			Seq: hs.seq, Count: uint32(len(hs.table)), Sum: hs.sum}}})
	}
	return hs, hs.gen, first, lost
}

// lostMigrates takes out of the table the mappings of the Migrates the
// host never got, by its holding: it applies changes in order, and a
// holding of this unit's boot at a seq below a Migrate's is of a host
// that did not apply it (the stream broke, or the unit's queue for it
// overflowed, with the Migrate on its way). Left in, the mapping would
// reach the host in the resync, the resync's acknowledgement would count
// the connection taken, and its route would send the client's packets to
// a host without it. A holding of another boot is of an agent that
// restarted, which cannot say what it took before: its Migrates stay
// in, as taken (a connection handed over outlives the agent). It
// returns the lost Migrates and forgets every unacknowledged one: the
// rest the host holds, and acknowledges on the new stream.
func (hs *host) lostMigrates(hd *pb.Holding, boot uint64) []sentMigrate {
	var lost []sentMigrate
	if hd != nil && hd.GetUnitBoot() == boot {
		for _, u := range hs.unacked {
			fid := u.mapping.GetFlowId()
			if u.seq <= hd.GetSeq() || hs.table[fid] != u.mapping {
				continue // held, or removed or replaced since
			}
			delete(hs.table, fid)
			hs.sum -= pb.MappingSum(u.mapping)
			lost = append(lost, u)
		}
	}
	hs.view.MigrationsLost += uint64(len(lost))
	hs.unacked = nil
	return lost
}

// detach marks the host's stream down, unless a newer one replaced it.
func (s *Server) detach(id uint32, gen uint64, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	hs := s.hosts[id]
	if hs.gen != gen {
		return
	}
	hs.out, hs.cancel = nil, nil
	hs.view.State, hs.view.Since = unit.StreamDown, time.Now()
	if err != nil {
		hs.view.LastError = err.Error()
	}
}

// serve sends the first messages, then the queued changes, and reads
// acknowledgements until the stream ends.
func (s *Server) serve(ctx context.Context, stream pb.HostStream_ConnectServer, id uint32, hs *host, first []*pb.UnitMessage) error {
	s.mu.Lock()
	out := hs.out
	s.mu.Unlock()
	sendErr := make(chan error, 1)
	go func() {
		send := func(m *pb.UnitMessage) error {
			if err := stream.Send(m); err != nil {
				return err
			}
			s.mu.Lock()
			hs.view.MessagesOut++
			s.mu.Unlock()
			return nil
		}
		for _, m := range first {
			if err := send(m); err != nil {
				sendErr <- err
				return
			}
		}
		for {
			select {
			case <-ctx.Done():
				sendErr <- nil
				return
			case m := <-out:
				if err := send(m); err != nil {
					sendErr <- err
					return
				}
			}
		}
	}()
	recvErr := make(chan error, 1)
	go func() { recvErr <- s.receive(stream, id, hs) }()
	select {
	case err := <-recvErr:
		return err
	case err := <-sendErr:
		if err == nil {
			return context.Cause(ctx)
		}
		return err
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

// receive reads the agent's messages after the hello: acknowledgements,
// and the answers and notices of connection migration. An invalid
// message ends the stream (the agent resyncs when it comes back) after
// it is counted and logged; it changes nothing.
func (s *Server) receive(stream pb.HostStream_ConnectServer, id uint32, hs *host) error {
	_, addr, _ := peerHost(stream.Context())
	var sess sessionState
	for {
		m, err := stream.Recv()
		if err != nil {
			return err
		}
		if err := pb.ValidateAgent(m); err != nil {
			s.refuse(reason(err), addr, id, err)
			if b := m.GetSessions(); b != nil {
				s.mu.Lock()
				hs.view.SessionsRefused += uint64(len(b.GetUp()) + len(b.GetDown()) + len(sess.series))
				s.mu.Unlock()
			}
			return status.Error(codes.InvalidArgument, err.Error())
		}
		s.mu.Lock()
		hs.view.MessagesIn++
		s.mu.Unlock()
		switch b := m.GetBody().(type) {
		case *pb.AgentMessage_Sessions:
			if err := s.sessions(id, hs, &sess, b.Sessions); err != nil {
				s.refuse("protocol", addr, id, err)
				return status.Error(codes.FailedPrecondition, err.Error())
			}
			continue
		case *pb.AgentMessage_Listeners:
			s.listen(hs, b.Listeners)
			continue
		case *pb.AgentMessage_MigrateResult:
			if s.opts.OnMigrateResult != nil {
				s.opts.OnMigrateResult(id, b.MigrateResult)
			}
			continue
		case *pb.AgentMessage_MigrationEnded:
			if s.opts.OnMigrationEnded != nil {
				s.opts.OnMigrationEnded(id, b.MigrationEnded)
			}
			continue
		}
		ack := m.GetAck()
		s.mu.Lock()
		ok := ack != nil && ack.GetSeq() <= hs.seq && ack.GetSeq() >= hs.view.Acked
		if ok {
			hs.view.Acked = ack.GetSeq()
			n := 0
			for n < len(hs.unacked) && hs.unacked[n].seq <= ack.GetSeq() {
				n++
			}
			hs.unacked = slices.Delete(hs.unacked, 0, n)
		}
		seq, acked := hs.seq, hs.view.Acked
		s.mu.Unlock()
		if !ok {
			err := fmt.Errorf("unexpected %T (acknowledged so far %d, sequence %d)", m.GetBody(), acked, seq)
			s.refuse("protocol", addr, id, err)
			return status.Error(codes.FailedPrecondition, err.Error())
		}
		if s.opts.OnAck != nil {
			s.opts.OnAck(id, acked)
		}
	}
}

// sessionState is one stream's place in the host's session reports.
type sessionState struct {
	// synced: a resync completed on this stream, so changes may follow.
	synced bool
	// open: a resync series began and has not ended; series is what it
	// brought so far.
	open   bool
	series []*pb.Session
}

// sessions takes one valid Sessions batch: it collects a resync series
// and delivers it whole at its end, and delivers changes, but only
// after the stream's first resync and never inside a series. A batch
// out of turn is an error (counted with the sessions it and the open
// series carried) and delivers nothing.
func (s *Server) sessions(id uint32, hs *host, st *sessionState, b *pb.Sessions) error {
	n := len(b.GetUp()) + len(b.GetDown())
	fail := func(format string, args ...any) error {
		s.mu.Lock()
		hs.view.SessionsRefused += uint64(n + len(st.series))
		s.mu.Unlock()
		st.open, st.series = false, nil
		return fmt.Errorf("sessions: "+format, args...)
	}
	var batch SessionBatch
	switch {
	case b.GetResync():
		if b.GetResyncBegin() == st.open {
			return fail("resync_begin %v while a series is open %v", b.GetResyncBegin(), st.open)
		}
		if b.GetResyncBegin() {
			st.open, st.series = true, nil
		}
		if len(st.series)+len(b.GetUp()) > pb.MaxHostSessions {
			return fail("a resync of more than %d sessions", pb.MaxHostSessions)
		}
		st.series = append(st.series, b.GetUp()...)
		n = 0 // counted with the series from here on
		if !b.GetResyncEnd() {
			return nil
		}
		if int(b.GetCount()) != len(st.series) {
			return fail("a resync ends with count %d after %d sessions", b.GetCount(), len(st.series))
		}
		// One session twice in a series would leave what the host meant
		// to the order of the batches.
		seen := make(map[string]bool, len(st.series))
		for _, x := range st.series {
			k := pb.SessionID(x)
			if seen[k] {
				return fail("a resync names one session twice")
			}
			seen[k] = true
		}
		batch = SessionBatch{Resync: true, Up: st.series}
		st.open, st.series, st.synced = false, nil, true
	case st.open:
		return fail("changes inside a resync series")
	case !st.synced:
		return fail("changes before the stream's first resync")
	default:
		batch = SessionBatch{Up: b.GetUp(), Down: b.GetDown()}
	}
	s.mu.Lock()
	hs.view.SessionsUp += uint64(len(batch.Up))
	hs.view.SessionsDown += uint64(len(batch.Down))
	if batch.Resync {
		hs.view.SessionResyncs++
	}
	s.mu.Unlock()
	if s.opts.OnSessions != nil {
		s.opts.OnSessions(id, batch)
	}
	return nil
}

// ErrHostDown is Migrate's error for a host without a live stream (or
// one too far behind to take more).
var ErrHostDown = errors.New("hosts: the host's stream is down")

// ErrFlowIDTaken is Migrate's error when the host holds a mapping of
// the Migrate's flow ID already.
var ErrFlowIDTaken = errors.New("hosts: the host holds the flow ID")

// Migrate sends a migrated connection's state to host, with its flow's
// mapping (pb.MigrateMapping, of mig's FlowId, which the host must not
// hold yet): the Migrate is a numbered change like a Publish, after
// every change published so far and before every later one, and Migrate
// sets its Seq and returns it. The host acknowledges seq once the
// connection exists in its kernel and it holds the mapping
// (Options.OnAck); a failure comes as a MigrateResult, and so does a
// Migrate its stream lost (the host's next hello holds changes below
// its seq), before anything on the new stream is acknowledged. A host
// whose stream is down or full, or that has not acknowledged maxUnacked
// Migrates, gets nothing and holds nothing new (ErrHostDown): a
// migration is not worth a resync, and the caller answers the client
// itself.
func (s *Server) Migrate(id uint32, mig *pb.Migrate) (uint64, error) {
	m := &pb.UnitMessage{Version: pb.Version, Body: &pb.UnitMessage_Migrate{Migrate: mig}}
	mig.Seq = 1 // validated with a placeholder; the real one is set below
	if err := pb.ValidateUnit(m); err != nil {
		return 0, fmt.Errorf("hosts: migrate: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	hs := s.hosts[id]
	if hs == nil || hs.out == nil || len(hs.unacked) >= maxUnacked {
		return 0, ErrHostDown
	}
	if _, taken := hs.table[mig.GetFlowId()]; taken {
		return 0, ErrFlowIDTaken
	}
	mig.Seq = hs.seq + 1
	select {
	case hs.out <- m:
	default:
		return 0, ErrHostDown
	}
	mp := pb.MigrateMapping(mig)
	hs.table[mp.GetFlowId()] = mp
	hs.sum += pb.MappingSum(mp)
	hs.seq = mig.Seq
	hs.unacked = append(hs.unacked, sentMigrate{seq: mig.Seq, id: mig.GetId(), mapping: mp})
	hs.view.Migrations++
	return hs.seq, nil
}

// Publish changes the mappings host should hold: removals, then
// additions (an addition of a held flow ID replaces it). A live stream
// gets the change as one numbered batch; a host that is down gets the
// whole set when it comes back. The mappings must be valid
// (pb.ValidTuple) and the batch within pb.MaxBatch. It returns the
// batch's sequence: the host holds the change once it acknowledges it
// (Options.OnAck).
func (s *Server) Publish(id uint32, add []*pb.Mapping, remove []uint32) (uint64, error) {
	b := &pb.Mappings{Add: add, Remove: remove}
	m := &pb.UnitMessage{Version: pb.Version, Body: &pb.UnitMessage_Mappings{Mappings: b}}
	b.Seq = 1 // validated with a placeholder; the real one is set below
	if err := pb.ValidateUnit(m); err != nil {
		return 0, fmt.Errorf("hosts: publish: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	hs := s.hosts[id]
	if hs == nil {
		hs = &host{table: map[uint32]*pb.Mapping{}, view: unit.HostStream{Host: id, State: unit.StreamDown, Since: time.Now()}}
		s.hosts[id] = hs
	}
	for _, fid := range remove {
		if old, ok := hs.table[fid]; ok {
			hs.sum -= pb.MappingSum(old)
			delete(hs.table, fid)
		}
	}
	for _, a := range add {
		if old, ok := hs.table[a.GetFlowId()]; ok {
			hs.sum -= pb.MappingSum(old)
		}
		hs.table[a.GetFlowId()] = a
		hs.sum += pb.MappingSum(a)
	}
	hs.seq++
	b.Seq = hs.seq
	if hs.out != nil {
		select {
		case hs.out <- m:
		default:
			hs.cancel(errors.New("the host fell behind; it resyncs when it reconnects"))
			hs.out = nil
		}
	}
	return hs.seq, nil
}

// View is the streams as the admin API shows them.
func (s *Server) View() unit.StreamsView {
	s.mu.Lock()
	defer s.mu.Unlock()
	v := unit.StreamsView{Listen: s.l.Addr().String(), Boot: s.boot, Refused: map[string]uint64{}}
	for k, n := range s.refused {
		v.Refused[k] = n
	}
	for _, hs := range s.hosts {
		hv := hs.view
		hv.Seq, hv.Mappings = hs.seq, len(hs.table)
		v.Streams = append(v.Streams, hv)
	}
	slices.SortFunc(v.Streams, func(a, b unit.HostStream) int { return int(int64(a.Host) - int64(b.Host)) })
	return v
}
