package migrate

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/tetherlb/tether/agent/shim/wire"
	pb "github.com/tetherlb/tether/api/hostpb"
)

// Splice hands the migrated connections to one VIP:port to a local
// server.
type Splice struct {
	VIP netip.AddrPort
	To  netip.AddrPort
	// ProxyProtocol sends a PROXY protocol v2 header first, so the
	// server learns the client's address.
	ProxyProtocol bool
}

// Config configures a Migrator.
type Config struct {
	// Socket is the hand-off socket the listener shims connect to.
	Socket string
	// Group, when set, may use the socket besides root (mode 0660);
	// otherwise the mode is 0600: a process that can connect can
	// register for any VIP and receive its clients' connections.
	Group   string
	Splices []Splice
	// AckTimeout bounds the wait for a shim's acknowledgement (default
	// 1 s); DialTimeout the splice's connect to the local server
	// (default 1 s).
	AckTimeout, DialTimeout time.Duration
	// Ended hears once of every connection handed over (or uploaded
	// and then not taken), from one goroutine, never from inside
	// Migrate: the unit is told after a failed migration's result.
	Ended func(unit string, e *pb.MigrationEnded)
	Log   zerolog.Logger
}

// Hand-off kinds and failure reasons as Status counts them.
const (
	HandoffListener = "listener"
	HandoffSplice   = "splice"
)

// Bounds.
const (
	// maxShims bounds the shim connections the agent keeps.
	maxShims = 1024
	// maxEndedQueue bounds the ended notices waiting for the unit's
	// stream; beyond it they are dropped (counted), and the unit ages
	// the routes out.
	maxEndedQueue = 1 << 16
)

// Migrator uploads migrated connections and hands them over.
type Migrator struct {
	cfg Config
	lis *net.UnixListener

	mu     sync.Mutex
	shims  map[*shimConn]bool
	live   map[uint64]*liveConn // by hand-off ID
	nextID uint64
	st     Counters
	// upload and handoff time the latest uploads (Upload) and hand-offs
	// (from the upload to the application holding the connection).
	upload, handoff recent
	queue           []endedNotice
	wake            chan struct{}
	// listening is signalled when the shims' registrations change
	// (ListeningChanged).
	listening chan struct{}
}

// recentSteps is how many of the latest uploads and hand-offs Status
// summarises.
const recentSteps = 512

// recent keeps the durations of the latest steps of one kind.
type recent struct {
	d [recentSteps]time.Duration
	n uint64 // recorded so far
}

func (r *recent) add(d time.Duration) {
	r.d[r.n%recentSteps] = d
	r.n++
}

// StepTimes summarises the durations of the latest steps of one kind
// (at most 512), in microseconds.
type StepTimes struct {
	Count int     `json:"count"`
	P50   float64 `json:"p50_us"`
	P99   float64 `json:"p99_us"`
	Max   float64 `json:"max_us"`
}

func (r *recent) view() StepTimes {
	d := slices.Clone(r.d[:min(r.n, recentSteps)])
	if len(d) == 0 {
		return StepTimes{}
	}
	slices.Sort(d)
	us := func(i int) float64 { return float64(d[i]) / float64(time.Microsecond) }
	return StepTimes{Count: len(d), P50: us(len(d) / 2), P99: us(min(len(d)-1, len(d)*99/100)), Max: us(len(d) - 1)}
}

// Counters count migrations.
type Counters struct {
	// Uploaded counts connections recreated in the kernel; Handed the
	// ones the application took, by hand-off kind.
	Uploaded uint64            `json:"uploaded"`
	Handed   map[string]uint64 `json:"handed"`
	// Failed counts Migrates that did not end with the application
	// holding the connection, by reason.
	Failed map[string]uint64 `json:"failed"`
	// Ended counts ended notices, by reason; EndedDropped those the
	// queue had no room for.
	Ended        map[string]uint64 `json:"ended"`
	EndedDropped uint64            `json:"ended_dropped,omitempty"`
	// ShimErrors counts shim connections closed for a protocol error.
	ShimErrors uint64 `json:"shim_errors,omitempty"`
}

type endedNotice struct {
	unit string
	e    *pb.MigrationEnded
}

// liveConn is a connection handed over (or being handed over).
type liveConn struct {
	hid     uint64
	unit    string
	id      uint64
	tuple   *pb.Tuple
	handoff string
	shim    *shimConn // listener hand-offs
	since   time.Time
	pending bool // waiting for the shim's answer
}

// shimConn is one listener shim's connection.
type shimConn struct {
	c     *net.UnixConn
	wmu   sync.Mutex
	addrs []netip.AddrPort     // under Migrator.mu
	acks  map[uint64]chan bool // under Migrator.mu
	gone  bool                 // the connection ended; under Migrator.mu
}

// New creates the hand-off socket; Run serves it.
func New(cfg Config) (*Migrator, error) {
	if cfg.AckTimeout <= 0 {
		cfg.AckTimeout = time.Second
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = time.Second
	}
	if cfg.Socket == "" {
		return nil, errors.New("migrate: no hand-off socket")
	}
	gid := -1
	if cfg.Group != "" {
		g, err := user.LookupGroup(cfg.Group)
		if err != nil {
			return nil, fmt.Errorf("migrate: group %q: %w", cfg.Group, err)
		}
		if gid, err = strconv.Atoi(g.Gid); err != nil {
			return nil, fmt.Errorf("migrate: group %q: gid %q", cfg.Group, g.Gid)
		}
	}
	if err := os.MkdirAll(filepath.Dir(cfg.Socket), 0o755); err != nil {
		return nil, fmt.Errorf("migrate: %w", err)
	}
	if err := os.Remove(cfg.Socket); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("migrate: remove stale socket: %w", err)
	}
	lis, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: cfg.Socket, Net: "unixpacket"})
	if err != nil {
		return nil, fmt.Errorf("migrate: listen on %s: %w", cfg.Socket, err)
	}
	mode := os.FileMode(0o600)
	if gid >= 0 {
		mode = 0o660
		if err := os.Chown(cfg.Socket, 0, gid); err != nil {
			lis.Close()
			return nil, fmt.Errorf("migrate: %s: %w", cfg.Socket, err)
		}
	}
	if err := os.Chmod(cfg.Socket, mode); err != nil {
		lis.Close()
		return nil, fmt.Errorf("migrate: %s: %w", cfg.Socket, err)
	}
	return &Migrator{cfg: cfg, lis: lis, shims: map[*shimConn]bool{}, live: map[uint64]*liveConn{},
		st:   Counters{Handed: map[string]uint64{}, Failed: map[string]uint64{}, Ended: map[string]uint64{}},
		wake: make(chan struct{}, 1), listening: make(chan struct{}, 1)}, nil
}

// Listening is what the host can hand migrated connections to now:
// every registered shim's addresses (an unspecified address takes its
// port on any address) and every splice's VIP, sorted, each once.
func (m *Migrator) Listening() []netip.AddrPort {
	set := map[netip.AddrPort]bool{}
	for _, sp := range m.cfg.Splices {
		set[sp.VIP] = true
	}
	m.mu.Lock()
	for sc := range m.shims {
		for _, a := range sc.addrs {
			set[a] = true
		}
	}
	m.mu.Unlock()
	out := make([]netip.AddrPort, 0, len(set))
	for a := range set {
		out = append(out, a)
	}
	slices.SortFunc(out, func(a, b netip.AddrPort) int { return a.Compare(b) })
	return out
}

// ListeningChanged is signalled (without blocking: one signal waits at
// most) after Listening changed.
func (m *Migrator) ListeningChanged() <-chan struct{} { return m.listening }

func (m *Migrator) listeningChanged() {
	select {
	case m.listening <- struct{}{}:
	default:
	}
}

// Run serves the hand-off socket and delivers ended notices until ctx
// ends; then it closes the socket and the shims' connections (the
// connections handed over stay with the application).
func (m *Migrator) Run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); m.deliver(ctx) }()
	go func() { <-ctx.Done(); m.lis.Close() }()
	for {
		c, err := m.lis.AcceptUnix()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				break
			}
			m.cfg.Log.Warn().Err(err).Msg("hand-off socket: accept")
			continue
		}
		sc := &shimConn{c: c, acks: map[uint64]chan bool{}}
		m.mu.Lock()
		full := len(m.shims) >= maxShims
		if !full {
			m.shims[sc] = true
		}
		m.mu.Unlock()
		if full {
			m.cfg.Log.Warn().Int("shims", maxShims).Msg("hand-off socket: too many shims; connection refused")
			c.Close()
			continue
		}
		wg.Add(1)
		go func() { defer wg.Done(); m.serveShim(sc) }()
	}
	os.Remove(m.cfg.Socket)
	m.mu.Lock()
	for sc := range m.shims {
		sc.c.Close()
	}
	m.mu.Unlock()
	wg.Wait()
}

// serveShim reads one shim's frames until its connection ends; then its
// addresses are no longer served and its connections are reported
// ended (the application died or closed its listener: with the process
// gone, so are they).
func (m *Migrator) serveShim(sc *shimConn) {
	defer sc.c.Close()
	log := m.cfg.Log.With().Str("shim", peer(sc.c)).Logger()
	buf := make([]byte, wire.MaxFrame+1)
	oob := make([]byte, unix.CmsgSpace(4*4))
	err := func() error {
		for {
			n, oobn, flags, _, err := sc.c.ReadMsgUnix(buf, oob)
			if oobn > 0 {
				closeRights(oob[:oobn]) // shims pass no descriptors
				return errors.New("a descriptor from the shim")
			}
			if err != nil {
				if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
					return nil
				}
				return err
			}
			if n == 0 {
				return nil // the shim closed (a zero-length record is EOF)
			}
			if flags&unix.MSG_TRUNC != 0 {
				return fmt.Errorf("a record of more than %d bytes", wire.MaxFrame)
			}
			f, err := wire.Decode(buf[:n])
			if err != nil {
				return err
			}
			switch f.Type {
			case wire.TypeRegister:
				m.mu.Lock()
				sc.addrs = f.Addrs
				m.mu.Unlock()
				m.listeningChanged()
				log.Info().Interface("addrs", f.Addrs).Msg("listener shim registered")
			case wire.TypeAck:
				m.mu.Lock()
				if ch := sc.acks[f.ID]; ch != nil {
					ch <- f.Accepted
					delete(sc.acks, f.ID)
				}
				m.mu.Unlock()
			case wire.TypeClosed:
				m.mu.Lock()
				lc := m.live[f.ID]
				mine := lc != nil && lc.shim == sc
				m.mu.Unlock()
				if mine {
					m.end(f.ID, pb.EndReason_END_REASON_CLOSED)
				}
			default:
				return fmt.Errorf("%s from a shim", f.Type)
			}
		}
	}()
	if err != nil {
		m.mu.Lock()
		m.st.ShimErrors++
		m.mu.Unlock()
		log.Warn().Err(err).Msg("listener shim: protocol error; connection closed")
	}
	defer m.listeningChanged()
	m.mu.Lock()
	delete(m.shims, sc)
	sc.gone = true
	for id, ch := range sc.acks {
		ch <- false
		delete(sc.acks, id)
	}
	var gone []uint64
	for hid, lc := range m.live {
		if lc.shim == sc && !lc.pending {
			gone = append(gone, hid)
		}
	}
	m.mu.Unlock()
	for _, hid := range gone {
		m.end(hid, pb.EndReason_END_REASON_CLOSED)
	}
	if len(sc.addrs) > 0 {
		log.Info().Interface("addrs", sc.addrs).Int("connections_ended", len(gone)).Msg("listener shim gone")
	}
}

func peer(c *net.UnixConn) string {
	sc, err := c.SyscallConn()
	if err != nil {
		return "?"
	}
	var cred *unix.Ucred
	sc.Control(func(fd uintptr) { cred, _ = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED) })
	if cred == nil {
		return "?"
	}
	return fmt.Sprintf("pid %d uid %d", cred.Pid, cred.Uid)
}

func closeRights(oob []byte) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return
	}
	for _, msg := range msgs {
		if fds, err := unix.ParseUnixRights(&msg); err == nil {
			for _, fd := range fds {
				unix.Close(fd)
			}
		}
	}
}

// end removes a live connection and queues its ended notice; a second
// call for the same connection does nothing, so each ends once.
func (m *Migrator) end(hid uint64, reason pb.EndReason) {
	m.mu.Lock()
	defer m.mu.Unlock()
	lc := m.live[hid]
	if lc == nil {
		return
	}
	delete(m.live, hid)
	name := map[pb.EndReason]string{pb.EndReason_END_REASON_CLOSED: "closed", pb.EndReason_END_REASON_HANDOFF_FAILED: "handoff_failed"}[reason]
	m.st.Ended[name]++
	if m.cfg.Ended == nil {
		return
	}
	if len(m.queue) >= maxEndedQueue {
		m.st.EndedDropped++
		return
	}
	m.queue = append(m.queue, endedNotice{lc.unit, &pb.MigrationEnded{Id: lc.id, Tuple: lc.tuple, Reason: reason}})
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

// deliver calls Ended for the queued notices, in order, outside the
// lock.
func (m *Migrator) deliver(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-m.wake:
		}
		for {
			m.mu.Lock()
			q := m.queue
			m.queue = nil
			m.mu.Unlock()
			if len(q) == 0 {
				break
			}
			for _, n := range q {
				m.cfg.Ended(n.unit, n.e)
			}
		}
	}
}

// Migrate uploads m's connection and hands it over, and returns how
// (HandoffListener or HandoffSplice), or why it could not: Take, waiting
// for its result. Within about AckTimeout + DialTimeout.
func (m *Migrator) Migrate(unit string, msg *pb.Migrate) (string, error) {
	type result struct {
		kind string
		err  error
	}
	ch := make(chan result, 1)
	m.take(unit, msg, func(kind string, err error) { ch <- result{kind, err} })
	r := <-ch
	return r.kind, r.err
}

// Take uploads msg's connection into the host's kernel, passes it on
// toward the application, and returns; the hand-off goes on in the
// background, and done gets the result once, within about AckTimeout +
// DialTimeout (at once when the upload fails): nil when the application
// has the connection. The stream's later messages need not wait for the
// hand-off: the order the unit relies on (the socket before the flow's
// mapping) holds once Take returns. An error means the client is reset
// (by this host once the upload got as far as a connected socket, by the
// unit otherwise). The migration's end is reported after done.
func (m *Migrator) Take(unit string, msg *pb.Migrate, done func(error)) {
	m.take(unit, msg, func(_ string, err error) { done(err) })
}

func (m *Migrator) take(unit string, msg *pb.Migrate, done func(kind string, err error)) {
	fail := func(reason string, err error) {
		m.mu.Lock()
		m.st.Failed[reason]++
		m.mu.Unlock()
		m.cfg.Log.Warn().Str("unit", unit).Uint64("id", msg.GetId()).Str("reason", reason).Err(err).Msg("migration failed")
		done("", err)
	}
	if err := pb.ValidateUnit(&pb.UnitMessage{Version: pb.Version, Body: &pb.UnitMessage_Migrate{Migrate: msg}}); err != nil {
		fail("invalid", err)
		return
	}
	st := msg.GetState()
	client, vip := tupleAddrs(st.GetClient(), st.GetClientPort(), st.GetVip(), st.GetVipPort())
	began := time.Now()
	f, err := Upload(st, msg.GetData())
	if err != nil {
		fail("upload", err)
		return
	}
	uploaded := time.Now()
	m.mu.Lock()
	m.st.Uploaded++
	m.upload.add(uploaded.Sub(began))
	m.nextID++
	lc := &liveConn{hid: m.nextID, unit: unit, id: msg.GetId(), since: time.Now(),
		tuple: &pb.Tuple{Proto: pb.Proto_PROTO_TCP, Client: st.GetClient(), ClientPort: st.GetClientPort(), Vip: st.GetVip(), VipPort: st.GetVipPort()}}
	m.live[lc.hid] = lc
	sc := m.shimFor(vip)
	m.mu.Unlock()
	// Uploaded but not taken: the client is reset (here while the agent
	// still holds the socket, by the shim once it was sent there), and
	// the unit hears HANDOFF_FAILED (once) after the failed result.
	failHandoff := func(reason string, err error) {
		Reset(f) // after a send, f is closed already and this resets nothing
		fail(reason, err)
		m.end(lc.hid, pb.EndReason_END_REASON_HANDOFF_FAILED)
	}
	if sc == nil {
		// A splice's connect is local and quick, and is made here, in
		// the caller's network namespace (the copying goes on in the
		// background).
		sp, ok := m.spliceFor(vip)
		if !ok {
			failHandoff("no_handoff", fmt.Errorf("no listener shim registered and no splice configured for %v", vip))
			return
		}
		if err := m.splice(lc, f, sp, client); err != nil {
			failHandoff("splice", err)
			return
		}
		m.handed(HandoffSplice, time.Since(uploaded))
		done(HandoffSplice, nil)
		return
	}
	// The descriptor goes to the shim now, before the caller
	// acknowledges the flow's mapping: the application wakes while the
	// stream goes on. A shim answers when the application has accepted,
	// which can take a while: that wait goes on in the background.
	ch, reason, err := m.toShim(sc, lc, f, client, vip)
	if err != nil {
		m.shimAnswered(sc, lc, false)
		failHandoff(reason, err)
		return
	}
	go func() {
		ok, reason, err := m.shimAnswer(ch)
		m.shimAnswered(sc, lc, ok)
		if !ok {
			failHandoff(reason, err)
			return
		}
		m.handed(HandoffListener, time.Since(uploaded))
		done(HandoffListener, nil)
	}()
}

func (m *Migrator) handed(kind string, took time.Duration) {
	m.mu.Lock()
	m.st.Handed[kind]++
	m.handoff.add(took)
	m.mu.Unlock()
}

// shimFor is a shim registered for vip exactly, else one registered on
// the unspecified address of its port; among several (processes that
// share the port) any one. Under m.mu.
func (m *Migrator) shimFor(vip netip.AddrPort) *shimConn {
	var exact, wild *shimConn
	for sc := range m.shims {
		for _, a := range sc.addrs {
			switch {
			case a == vip:
				exact = sc
			case a.Port() == vip.Port() && a.Addr().IsUnspecified():
				wild = sc
			}
		}
	}
	if exact != nil {
		return exact
	}
	return wild
}

func (m *Migrator) spliceFor(vip netip.AddrPort) (Splice, bool) {
	for _, s := range m.cfg.Splices {
		if s.VIP == vip {
			return s, true
		}
	}
	return Splice{}, false
}

// toShim passes f to the shim and closes it; the shim's answer comes
// on the channel it returns (shimAnswer waits for it; shimAnswered,
// called once either way, ends the wait).
//
// The agent lets go of the socket as soon as the descriptor is in
// flight (the message holds it): the application's copy must be the
// last one, so that its close sends the FIN at once. Were the agent
// still holding a copy, a server that answers and closes before the
// agent reads the shim's answer would have its FIN wait for the agent,
// and the client, having read the whole response, would close first and
// keep the TIME_WAIT a server's close leaves on the server. So a shim
// that refuses the connection resets the client itself (it holds the
// only copy), and one that never answers leaves the client to the unit,
// which resets it on its next packet once the migration failed.
func (m *Migrator) toShim(sc *shimConn, lc *liveConn, f *os.File, client, vip netip.AddrPort) (ch chan bool, reason string, err error) {
	ch = make(chan bool, 1)
	m.mu.Lock()
	lc.handoff, lc.shim, lc.pending = HandoffListener, sc, true
	sc.acks[lc.hid] = ch
	m.mu.Unlock()
	b, err := wire.Encode(make([]byte, 0, wire.MaxFrame), &wire.Frame{Type: wire.TypeHandoff, ID: lc.hid, Client: client, VIP: vip})
	if err != nil {
		return nil, "shim_send", err
	}
	sc.wmu.Lock()
	sc.c.SetWriteDeadline(time.Now().Add(m.cfg.AckTimeout))
	_, _, err = sc.c.WriteMsgUnix(b, unix.UnixRights(int(f.Fd())), nil)
	sc.wmu.Unlock()
	if err != nil {
		return nil, "shim_send", fmt.Errorf("pass the connection to the listener shim: %w", err)
	}
	f.Close()
	return ch, "", nil
}

// shimAnswer waits, at most AckTimeout, for a shim's answer on ch.
func (m *Migrator) shimAnswer(ch chan bool) (ok bool, reason string, err error) {
	t := time.NewTimer(m.cfg.AckTimeout)
	defer t.Stop()
	select {
	case accepted := <-ch:
		if !accepted {
			return false, "shim_refused", errors.New("the listener shim did not take the connection")
		}
		return true, "", nil
	case <-t.C:
		return false, "shim_timeout", fmt.Errorf("no answer from the listener shim within %v", m.cfg.AckTimeout)
	}
}

// shimAnswered ends lc's wait for sc's answer. A shim gone while this
// waited skipped the pending connection (serveShim): once taken, it is
// ended here instead (end is idempotent); one not taken ends as
// HANDOFF_FAILED.
func (m *Migrator) shimAnswered(sc *shimConn, lc *liveConn, ok bool) {
	m.mu.Lock()
	delete(sc.acks, lc.hid)
	lc.pending = false
	gone := sc.gone
	m.mu.Unlock()
	if ok && gone {
		m.end(lc.hid, pb.EndReason_END_REASON_CLOSED)
	}
}

// splice connects the uploaded connection to the local server and
// copies both ways until both directions are done.
func (m *Migrator) splice(lc *liveConn, f *os.File, sp Splice, client netip.AddrPort) error {
	nc, err := net.FileConn(f)
	if err != nil {
		return fmt.Errorf("file conn: %w", err)
	}
	down, ok := nc.(*net.TCPConn)
	if !ok {
		nc.Close()
		return fmt.Errorf("file conn: a %T, not TCP", nc)
	}
	d := net.Dialer{Timeout: m.cfg.DialTimeout}
	c, err := d.Dial("tcp", sp.To.String())
	if err != nil {
		down.Close()
		return fmt.Errorf("splice to %v: %w", sp.To, err)
	}
	up, ok := c.(*net.TCPConn)
	if !ok {
		c.Close()
		down.Close()
		return fmt.Errorf("splice to %v: a %T, not TCP", sp.To, c)
	}
	if sp.ProxyProtocol {
		hdr, err := AppendProxyHeader(nil, client, sp.VIP)
		if err == nil {
			up.SetWriteDeadline(time.Now().Add(m.cfg.DialTimeout))
			_, err = up.Write(hdr)
			up.SetWriteDeadline(time.Time{})
		}
		if err != nil {
			up.Close()
			down.Close()
			return fmt.Errorf("splice to %v: PROXY header: %w", sp.To, err)
		}
	}
	// f stays open (Reset needs it) until the splice is up; FileConn
	// holds its own descriptor.
	f.Close()
	m.mu.Lock()
	lc.handoff = HandoffSplice
	m.mu.Unlock()
	go func() {
		var wg sync.WaitGroup
		pipe := func(dst, src *net.TCPConn) {
			defer wg.Done()
			if _, err := io.Copy(dst, src); err != nil {
				// A reset or error: nothing more flows either way.
				dst.Close()
				src.Close()
				return
			}
			dst.CloseWrite()
		}
		wg.Add(2)
		go pipe(up, down)
		go pipe(down, up)
		wg.Wait()
		up.Close()
		down.Close()
		m.end(lc.hid, pb.EndReason_END_REASON_CLOSED)
	}()
	return nil
}

// Status is what the agent's API shows.
type Status struct {
	Socket string `json:"socket"`
	// Shims are the listener shims connected, with the addresses they
	// registered.
	Shims   []ShimStatus   `json:"shims"`
	Splices []SpliceStatus `json:"splices"`
	Counters
	// Upload and Handoff time the latest migrations' steps on this host:
	// recreating the connection in the kernel, then handing it to the
	// application (a shim's Accept, or a splice's connect and header).
	Upload      StepTimes  `json:"upload_times"`
	Handoff     StepTimes  `json:"handoff_times"`
	Live        int        `json:"live"`
	Connections []LiveView `json:"connections"`
}

// ShimStatus is one listener shim.
type ShimStatus struct {
	Peer  string   `json:"peer"`
	Addrs []string `json:"addrs"`
}

// SpliceStatus is one configured splice.
type SpliceStatus struct {
	VIP           string `json:"vip"`
	To            string `json:"to"`
	ProxyProtocol bool   `json:"proxy_protocol"`
}

// LiveView is one migrated connection the application holds.
type LiveView struct {
	Unit    string    `json:"unit"`
	ID      uint64    `json:"id"`
	Client  string    `json:"client"`
	VIP     string    `json:"vip"`
	Handoff string    `json:"handoff"`
	Since   time.Time `json:"since"`
}

// maxListedConns bounds the connections Status lists.
const maxListedConns = 10000

// Status is the Migrator's state.
func (m *Migrator) Status() Status {
	s := Status{Socket: m.cfg.Socket, Shims: []ShimStatus{}, Splices: []SpliceStatus{}, Connections: []LiveView{}}
	for _, sp := range m.cfg.Splices {
		s.Splices = append(s.Splices, SpliceStatus{VIP: sp.VIP.String(), To: sp.To.String(), ProxyProtocol: sp.ProxyProtocol})
	}
	m.mu.Lock()
	var shims []*shimConn
	for sc := range m.shims {
		var addrs []string
		for _, a := range sc.addrs {
			addrs = append(addrs, a.String())
		}
		shims = append(shims, sc)
		s.Shims = append(s.Shims, ShimStatus{Addrs: addrs})
	}
	s.Counters = Counters{Uploaded: m.st.Uploaded, Handed: maps(m.st.Handed), Failed: maps(m.st.Failed),
		Ended: maps(m.st.Ended), EndedDropped: m.st.EndedDropped, ShimErrors: m.st.ShimErrors}
	s.Upload, s.Handoff = m.upload.view(), m.handoff.view()
	for _, lc := range m.live {
		if lc.pending || lc.handoff == "" {
			continue
		}
		s.Live++
		if len(s.Connections) < maxListedConns {
			t := lc.tuple
			client, vip := tupleAddrs(t.GetClient(), t.GetClientPort(), t.GetVip(), t.GetVipPort())
			s.Connections = append(s.Connections, LiveView{Unit: lc.unit, ID: lc.id, Handoff: lc.handoff, Since: lc.since,
				Client: client.String(), VIP: vip.String()})
		}
	}
	m.mu.Unlock()
	for i, sc := range shims {
		s.Shims[i].Peer = peer(sc.c)
	}
	slices.SortFunc(s.Connections, func(a, b LiveView) int { return a.Since.Compare(b.Since) })
	return s
}

// tupleAddrs is a validated Migrate's client and VIP, IPv4 or IPv6 as
// the state gives them (4 or 16 bytes, never IPv4-mapped).
func tupleAddrs(client []byte, clientPort uint32, vip []byte, vipPort uint32) (c, v netip.AddrPort) {
	ca, _ := netip.AddrFromSlice(client)
	va, _ := netip.AddrFromSlice(vip)
	return netip.AddrPortFrom(ca, uint16(clientPort)), netip.AddrPortFrom(va, uint16(vipPort))
}

func maps(in map[string]uint64) map[string]uint64 {
	out := make(map[string]uint64, len(in))
	for k, v := range in {
		out[k] = v
	}
	return out
}
