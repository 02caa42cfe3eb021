package dataplane

import (
	"bytes"
	"fmt"
	"net/netip"

	"github.com/tetherlb/tether/api/unit"
	"github.com/tetherlb/tether/config"
	"github.com/tetherlb/tether/dataplane/channel"
	"github.com/tetherlb/tether/dataplane/header"
	"github.com/tetherlb/tether/nic"
	"github.com/tetherlb/tether/tables/encap"
	"github.com/tetherlb/tether/tables/flow"
)

// MaxBatch bounds the frames one Process call handles at once; longer
// slices are processed in pieces.
const MaxBatch = config.MaxBatch

// Config sizes a Pipeline.
type Config struct {
	// Worker is this pipeline's index among Workers. Workers own
	// disjoint SNAT ports, tunnel flow IDs and IP IDs.
	Worker, Workers int
	// Link is the link type of the port the pipeline serves.
	Link nic.LinkType
	// Flows sizes the flow-table shard; Flows.Timeouts is replaced by the
	// snapshot's.
	Flows flow.Config
	// FragDatagrams, FragPending and FragTimeout (milliseconds) bound
	// fragment handling.
	FragDatagrams int
	FragPending   int
	FragTimeout   uint32
	// GuessPartial: the port may hand over packets whose transport
	// checksum is partial without saying so (AF_XDP on a veth whose
	// sender left the checksum to the device). See Pipeline.offload.
	GuessPartial bool
	// GeneralOnly sends every packet through the general path, leaving
	// forward4 out: tests compare the two paths packet by packet, and
	// benchmarks measure what the fast one saves.
	GeneralOnly bool
}

// ConfigFrom derives a worker's Config from the unit configuration.
func ConfigFrom(c *config.Config, worker int, link nic.LinkType, seed uint64) Config {
	return Config{
		Worker:        worker,
		Workers:       c.Forwarder.Workers,
		Link:          link,
		Flows:         flow.Config{MaxFlows: c.Forwarder.Flows.Max, Timeouts: TimeoutsOf(&c.Forwarder.Flows.Timeouts), Seed: seed},
		FragDatagrams: c.Forwarder.Fragments.Datagrams,
		FragPending:   c.Forwarder.Fragments.Pending,
		FragTimeout:   uint32(c.Forwarder.Fragments.Timeout.Milliseconds()),
	}
}

// Output collects what Process decided for a batch: frames to transmit,
// frames for the host, frames to release. The caller hands each slice to
// its port and Resets the Output before the next batch.
type Output struct {
	TX   []nic.Frame
	Pass []nic.Frame
	Drop []nic.Frame
}

// NewOutput makes an Output with room for a batch plus every fragment a
// pipeline may release or make at once, so appends never allocate.
func NewOutput(c *Config) *Output {
	n := MaxBatch + c.FragPending + maxPunts + maxSplitFrames // and the acceptor's answers
	return &Output{TX: make([]nic.Frame, 0, n), Pass: make([]nic.Frame, 0, n), Drop: make([]nic.Frame, 0, n)}
}

// Reset empties the Output, keeping its memory.
func (o *Output) Reset() { o.TX, o.Pass, o.Drop = o.TX[:0], o.Pass[:0], o.Drop[:0] }

// Pipeline is one worker's dataplane.
type Pipeline struct {
	cfg   Config
	snap  *Snapshot
	flows *flow.Shard
	tun   *encap.Table
	frags *fragments
	stats Stats
	pkts  [MaxBatch]packet
	// scratch and heldScratch reprocess held fragments.
	scratch     packet
	heldScratch nic.Frame

	natCursor uint32
	ipID      uint32
	stale     func(id uint32, t *encap.Tuple) bool

	sink uint8
	// Control channel state (control.go).
	out      outbox
	held     []heldPunt
	sendWait []heldSend
	sendGen  uint64
	// redo marks a batch of frames the pipeline already counted in (held
	// and now released), so that RxPackets counts each frame once.
	redo     bool
	deferred []nic.Frame
	// superseded are held ACKs a later ACK replaced, dropped with the
	// batch (DropACKSuperseded).
	superseded []nic.Frame
	answers    []answered
	acceptID   uint32
	// syn holds the l7 VIPs' SYN cookie keys (synanswer.go).
	syn      synState
	routePk  packet
	routeHdr [header.IPv6Size]byte
	missed   [maxMissed]netip.Addr
	nMissed  int

	// now is the batch's time, for the steps deep in a packet's path
	// that need it (the ICMP answer rate).
	now flow.Tick
	// tooBigTokens and tooBigAt rate-limit the unit's answers (ICMP
	// too-big, TCP resets).
	tooBigTokens uint64
	tooBigAt     flow.Tick
	// alloc lends the port's buffers for the fragments of packets too
	// big for an ipip tunnel (split.go); pieces holds them while they
	// are filled, and splitFrames counts those of this Process call.
	alloc       nic.Allocator
	pieces      []nic.Frame
	splitFrames int

	lastMaint flow.Tick
	maintDebt uint64
	started   bool
}

// New makes a pipeline. All of its memory is allocated here.
func New(c Config, s *Snapshot) (*Pipeline, error) {
	if c.Workers < 1 || c.Worker < 0 || c.Worker >= c.Workers {
		return nil, fmt.Errorf("dataplane: worker %d of %d: out of range", c.Worker, c.Workers)
	}
	if c.Link != nic.LinkEthernet && c.Link != nic.LinkIP {
		return nil, fmt.Errorf("dataplane: link type %v not supported", c.Link)
	}
	if s == nil {
		return nil, fmt.Errorf("dataplane: no snapshot")
	}
	fl, err := flow.NewShard(c.Flows)
	if err != nil {
		return nil, fmt.Errorf("dataplane: %w", err)
	}
	p := &Pipeline{
		cfg:        c,
		flows:      fl,
		frags:      newFragments(c.FragDatagrams, c.FragPending, c.Flows.Seed),
		held:       make([]heldPunt, 0, maxPunts),
		sendWait:   make([]heldSend, 0, maxSendWait),
		deferred:   make([]nic.Frame, 0, maxDeferred),
		superseded: make([]nic.Frame, 0, maxPunts),
		answers:    make([]answered, 0, maxPunts),
		ipID:       uint32(c.Worker),
		// SNAT ports are handed out in order, each port then resting a
		// whole lap, the longest any order gives it before reuse
		// (backends hold TIME_WAIT on it). The lap starts at a place
		// of the seed's: a unit restarted without its flows should not
		// begin with the ports it used last, which the backends may
		// still hold.
		natCursor: uint32(c.Flows.Seed >> 32),
		// A full bucket: the first answers need no wait.
		tooBigTokens: answerBurst,
	}
	p.stale = p.flowIDStale
	p.SetSnapshot(s)
	return p, nil
}

// SetSnapshot swaps in new read-mostly state. Call it between batches
// from the worker's goroutine.
func (p *Pipeline) SetSnapshot(s *Snapshot) {
	p.snap = s
	p.flows.SetTimeouts(s.timeouts)
	p.stats.Backends = grow(p.stats.Backends, len(s.Backends))
}

// Snapshot returns the state in use.
func (p *Pipeline) Snapshot() *Snapshot { return p.snap }

// Flows returns the worker's flow-table shard, for inspection from the
// worker's goroutine.
func (p *Pipeline) Flows() *flow.Shard { return p.flows }

// Tunnel returns the worker's flow-ID map: the mappings a host needs to
// restore tunneled packets. It is nil until the first tunnel flow.
func (p *Pipeline) Tunnel() *encap.Table { return p.tun }

// tunnel returns the flow-ID map, making it on first use: it is as large
// as the flow table, and units without tunnel VIPs never need it. It holds
// twice the flow table's bound so that, with IDs handed out round-robin,
// the slots ahead of the cursor belong to flows long gone.
func (p *Pipeline) tunnel() *encap.Table {
	if p.tun == nil {
		t, err := encap.New(p.cfg.Worker, p.cfg.Workers, min(2*p.cfg.Flows.MaxFlows, encap.MaxCapacity))
		if err != nil {
			// New checked the worker range and MaxCapacity bounds the
			// size, so this is a programming error.
			panic(err)
		}
		p.tun = t
	}
	return p.tun
}

// Stats returns a copy of the worker's counters.
func (p *Pipeline) Stats() Stats { return p.stats.Clone() }

// Process handles a batch of received frames at time now and appends
// each frame to one of out's lists. Fragments that arrive before their
// first fragment are held back and appear in a later Output, or in Drop
// when the first fragment never comes. Process also ages the flow table
// a little on each call, so a worker calls it even when idle (with no
// frames) to keep aging.
func (p *Pipeline) Process(now flow.Tick, frames []nic.Frame, out *Output) {
	p.now = now
	p.splitFrames = 0
	if len(p.sendWait) > 0 {
		// First packets whose flow event the uplink is slow to send.
		p.releaseSendWait(func(h *heldSend) bool { return int32(h.expires-now) < 0 })
	}
	if len(p.answers) > 0 {
		p.flushAnswers(out)
	}
	if len(p.deferred) > 0 {
		// Packets whose route arrived since the last batch.
		d := p.deferred
		p.deferred = p.deferred[:0]
		p.redo = true
		p.batch(now, d, out)
		p.redo = false
	}
	for len(frames) > MaxBatch {
		p.batch(now, frames[:MaxBatch], out)
		frames = frames[MaxBatch:]
	}
	p.batch(now, frames, out)
	if len(p.superseded) > 0 {
		out.Drop = append(out.Drop, p.superseded...)
		p.superseded = p.superseded[:0]
	}
	p.maintain(now, out)
	if p.out.direct != nil {
		if !p.out.busy.Load() {
			// The batch's flow events (and aging's removals) leave now,
			// and with them any first packet that waits for its event;
			// then its punts, unless events are left for the uplink
			// (which then takes the punts too, after them).
			p.takeRemovals()
			if len(p.out.events) > 0 {
				p.sendDirect()
			}
			if len(p.out.punts) > 0 && len(p.out.events) == 0 {
				p.sendPuntsDirect(now)
			}
		} else if len(p.out.events) > 0 || len(p.out.punts) > 0 {
			// The uplink's collection went on meanwhile: it takes
			// these right after, not at its next tick.
			p.ring()
		}
	}
}

func (p *Pipeline) batch(now flow.Tick, frames []nic.Frame, out *Output) {
	// One bounds check for the batch instead of one per packet and pass.
	pkts := p.pkts[:len(frames)]
	frames = frames[:len(pkts)]
	var rxBytes uint64
	for i := range frames {
		pk := &pkts[i]
		pk.frame = &frames[i]
		rxBytes += uint64(frames[i].Len) // as received, before parse trims it
		parse(pk, p.cfg.Link)
		if o := &frames[i].Offload; o.Partial || o.GSOSize != 0 || p.cfg.GuessPartial {
			p.offload(pk)
		}
	}
	if !p.redo {
		p.stats.RxPackets += uint64(len(frames))
		p.stats.RxBytes += rxBytes
	}
	// Start loading each flow's home slot before looking any up, so the
	// batch's cache misses overlap instead of queueing. The loop is kept
	// short on purpose: a load retires only when its line arrives, and a
	// long loop body would fill the reorder buffer after a few of them.
	var touch uint8
	for i := range frames {
		pk := &pkts[i]
		if pk.kind != kindFlow {
			continue
		}
		if pk.v6 {
			pk.hash = p.flows.Hash6(&pk.k6)
			touch += p.flows.Touch6(pk.hash)
		} else {
			pk.hash = p.flows.Hash4(&pk.k4)
			touch += p.flows.Touch4(pk.hash)
		}
	}
	p.sink = touch // keeps the loads from being optimised away
	// Frames go to out in order. While every frame so far took the
	// established IPv4 path and is forwarded (most batches), none is
	// emitted: they go in one copy when that ends, before anything else
	// can add to out (other paths release held fragments and answers).
	tx := 0
	var txBytes uint64
	for i := range frames {
		pk := &pkts[i]
		var v4 *flow.Value4
		if pk.kind == kindFlow && !pk.v6 {
			// ipip flows go the general way (encapIP) at once.
			if v4 = p.flows.Lookup4(&pk.k4, pk.hash); v4 != nil && v4.Mode != unit.ModeIPIP && !p.cfg.GeneralOnly && p.forward4(pk, v4, now) {
				if tx == i && pk.kind == kindTX {
					tx++
					txBytes += uint64(pk.frame.Len)
				} else {
					p.flushTX(frames[:max(tx, 0)], txBytes, out)
					tx = -1
					p.emit(pk, out)
				}
				continue
			}
		}
		p.flushTX(frames[:max(tx, 0)], txBytes, out)
		tx = -1
		switch pk.kind {
		case kindFlow:
			if pk.v6 {
				p.flowPacket(pk, p.lookup6(pk), now, out)
			} else {
				p.flowPacket(pk, entryOf4(v4), now, out)
			}
		case kindLater:
			p.laterFragment(pk, now, out)
			continue
		case kindICMP:
			p.icmp(pk, now)
		case kindOther:
			if p.snap.roles[addrOf(pk.dst())]&roleVIP != 0 {
				pk.passWith(pk.pass)
			} else {
				pk.passWith(PassNotVIP)
			}
		}
		if pk.kind == kindHeld {
			continue // waits for its route from the control process
		}
		p.emit(pk, out)
	}
	p.flushTX(frames[:max(tx, 0)], txBytes, out)
}

// flushTX appends frames, all to be transmitted, to out.TX in one copy.
func (p *Pipeline) flushTX(frames []nic.Frame, bytes uint64, out *Output) {
	if len(frames) == 0 {
		return
	}
	p.stats.TxPackets += uint64(len(frames))
	p.stats.TxBytes += bytes
	out.TX = append(out.TX, frames...)
}

// emit appends a packet's frame to the list its kind says.
func (p *Pipeline) emit(pk *packet, out *Output) {
	switch pk.kind {
	case kindDrop:
		p.stats.Drops[pk.drop]++
		out.Drop = append(out.Drop, *pk.frame)
	case kindPass:
		p.stats.Passes[pk.pass]++
		out.Pass = append(out.Pass, *pk.frame)
	case kindTaken:
		out.Drop = append(out.Drop, *pk.frame) // counted where it was taken
	default:
		if pk.splitMTU != 0 {
			p.split(pk, out)
			return
		}
		p.stats.TxPackets++
		p.stats.TxBytes += uint64(pk.frame.Len)
		out.TX = append(out.TX, *pk.frame)
	}
}

// kindTX marks a packet ready to transmit, kindHeld one the pipeline
// keeps for now (a punted packet waiting for its route), kindTaken one
// the pipeline consumed as the connection's end (an l7 handshake's last
// ACK): its frame is freed like a drop's but it is no drop.
const (
	kindTX    = 100
	kindHeld  = 101
	kindTaken = 102
)

// entry is a flow-table value seen through the parts both families
// share; A and B slice into the table slot or a local copy. m is nil for
// no entry.
type entry struct {
	m    *flow.Meta
	a, b []byte
}

func entryOf4(v *flow.Value4) entry {
	if v == nil {
		return entry{}
	}
	return entry{&v.Meta, v.A[:], v.B[:]}
}

func entryOf6(v *flow.Value6) entry {
	if v == nil {
		return entry{}
	}
	return entry{&v.Meta, v.A[:], v.B[:]}
}

func (p *Pipeline) lookup6(pk *packet) entry { return entryOf6(p.flows.Lookup6(&pk.k6, pk.hash)) }

func (p *Pipeline) lookup(pk *packet) (entry, bool) {
	if pk.v6 {
		e := p.lookup6(pk)
		return e, e.m != nil
	}
	e := entryOf4(p.flows.Lookup4(&pk.k4, pk.hash))
	return e, e.m != nil
}

// flowPacket decides a TCP or UDP packet whose flow entry, if it has one,
// is e.
func (p *Pipeline) flowPacket(pk *packet, e entry, now flow.Tick, out *Output) {
	ok := e.m != nil
	reopened := false
	if ok && pk.tcpFlags&(synFlag|ackFlag) == synFlag && e.m.Flags&unit.FlowReply == 0 && e.m.Flags&(unit.FlowFIN|unit.FlowRST) != 0 {
		// A client that closed its connection (FIN or RST) opens a new
		// one on the same tuple, as clients reusing ephemeral ports do
		// within the closed flow's timeout: it is a new connection and
		// is decided like one, so that a backend drained, failed or
		// removed since gets no new connections by way of an old tuple.
		p.stats.Reopened++
		if reopened = p.reopen(pk, e, now); !reopened {
			p.deleteKey(pk)
			ok = false
		}
	}
	if reopened {
		if p.awaitSend(pk, e, now) {
			return
		}
	} else if ok {
		closed := e.m.Flags & (unit.FlowFIN | unit.FlowRST)
		track(e.m, pk.tcpFlags, now)
		if closed == 0 && e.m.Flags&(unit.FlowFIN|unit.FlowRST) != 0 && e.m.Flags&unit.FlowReply == 0 {
			// The first FIN or RST of the client's direction: the
			// connection is closing (its removal follows on aging).
			p.flowEvent(channel.FlowClosed, pk, e)
		}
		if e.m.Flags&unit.FlowHeld != 0 && p.awaitHost(pk, now) {
			return // after the flow's first packet, in order
		}
	} else if e, ok = p.newFlow(pk, now); !ok {
		return
	} else if p.awaitSend(pk, e, now) {
		return // leaves once the control process has its flow
	} else if e.m.Mode == unit.ModeTunnel && p.snap.holdTunnel && p.out.enabled {
		e.m.Flags |= unit.FlowHeld
		if p.awaitHost(pk, now) {
			return // leaves once the host holds the flow's mapping
		}
	}
	if pk.frag == fragFirst {
		p.firstFragment(pk, e, now, out)
		return
	}
	p.apply(pk, e)
}

// reopen starts a new incarnation of the closed nat connection e in place
// when the new connection is decided as the old one was: the same backend
// and the same SNAT address. It keeps the SNAT port, as conntrack does:
// the backend may still hold the old connection in TIME_WAIT under that
// address and port, and accepts the new SYN only because it comes from
// the same client, whose timestamps and sequence numbers only grow;
// another client's SYN on that port would be refused (PAWS) and cost the
// client a retransmission. It reports false, changing nothing, when the
// connection must be decided anew.
func (p *Pipeline) reopen(pk *packet, e entry, now flow.Tick) bool {
	if e.m.Mode != unit.ModeNAT {
		return false
	}
	v := p.snap.vips[vipKey{addr: addrOf(pk.dst()), port: pk.dport, proto: pk.proto}]
	if v == nil || v.Punt || v.Mode != unit.ModeNAT || len(v.snat) == 0 {
		return false
	}
	mh := maglevHashOf(pk)
	bid, ok := v.pick(mh)
	if !ok || bid != e.m.Backend {
		return false
	}
	src := v.snat[mh%uint64(len(v.snat))]
	if !bytes.Equal(src.a[:len(e.b)], e.b) {
		return false
	}
	// Both halves forget the old incarnation's state.
	track(e.m, pk.tcpFlags, now)
	const old = unit.FlowFIN | unit.FlowRST | unit.FlowEstablished | unit.FlowAnswered
	if pk.v6 {
		if f := p.flows.Lookup6(&pk.k6, pk.hash); f != nil {
			k := flow.PeerKey6(&pk.k6, f)
			if r := p.flows.Lookup6(&k, p.flows.Hash6(&k)); r != nil {
				r.Flags &^= old
			}
		}
	} else if f := p.flows.Lookup4(&pk.k4, pk.hash); f != nil {
		k := flow.PeerKey4(&pk.k4, f)
		if r := p.flows.Lookup4(&k, p.flows.Hash4(&k)); r != nil {
			r.Flags &^= old
		}
	}
	p.stats.NewFlows++
	p.stats.Backends[bid].NewFlows++
	p.flowEvent(channel.FlowOpened, pk, e)
	return true
}

// FlowAnswered must follow FlowReply for track's shift.
var _ = [1]struct{}{}[unit.FlowAnswered-unit.FlowReply<<1]

// track records a packet's time and TCP flags in its entry.
func track(m *flow.Meta, tcp uint8, now flow.Tick) {
	m.LastSeen = now
	// A packet through a reply entry: the backend answers (see
	// flow.Unreplied). FlowAnswered is the bit after FlowReply.
	f := m.Flags | (m.Flags&unit.FlowReply)<<1
	if tcp == 0 {
		m.Flags = f
		return
	}
	if tcp&synFlag != 0 && f&(unit.FlowFIN|unit.FlowRST) != 0 {
		// A SYN on a closed flow starts a new incarnation of the tuple:
		// forget the old one's closing state so it ages as new.
		f &^= unit.FlowFIN | unit.FlowRST | unit.FlowEstablished
	}
	switch {
	case tcp&synFlag != 0:
		f |= unit.FlowSYN
	case tcp&ackFlag != 0:
		f |= unit.FlowEstablished
	}
	if tcp&finFlag != 0 {
		f |= unit.FlowFIN
	}
	if tcp&rstFlag != 0 {
		f |= unit.FlowRST
	}
	m.Flags = f
}

const (
	finFlag = 1 << 0
	synFlag = 1 << 1
	rstFlag = 1 << 2
	pshFlag = 1 << 3
	ackFlag = 1 << 4
)
