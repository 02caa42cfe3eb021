package channel

import (
	"encoding/binary"
	"fmt"
	"net/netip"

	"github.com/tetherlb/tether/api/unit"
)

// Roles in a hello.
const (
	RoleForwarder = 1
	RoleControl   = 2
)

// Hello opens a connection. The forwarder says how many workers it has
// and which configuration generation it runs.
type Hello struct {
	Role       uint8
	PID        uint32
	Workers    uint8
	Generation uint64
	Name       string
}

// AppendHello appends a hello message.
func AppendHello(b []byte, seq uint32, m *Hello) []byte {
	b = AppendHeader(b, Header{Type: THello, Seq: seq})
	b = append(b, m.Role)
	b = binary.BigEndian.AppendUint32(b, m.PID)
	b = append(b, m.Workers)
	b = binary.BigEndian.AppendUint64(b, m.Generation)
	name := m.Name[:min(len(m.Name), 255)]
	b = binary.BigEndian.AppendUint16(b, uint16(len(name)))
	return append(b, name...)
}

// DecodeHello decodes a hello payload.
func DecodeHello(p []byte) (Hello, error) {
	r := reader{b: p}
	m := Hello{Role: r.u8(), PID: r.u32(), Workers: r.u8(), Generation: r.u64()}
	m.Name = string(r.bytes16())
	if err := r.done(); err != nil {
		return Hello{}, fmt.Errorf("hello: %w", err)
	}
	if len(m.Name) > 255 {
		return Hello{}, fmt.Errorf("hello: %w: name of %d bytes", ErrLength, len(m.Name))
	}
	if m.Role != RoleForwarder && m.Role != RoleControl {
		return Hello{}, fmt.Errorf("hello: %w: role %d", ErrValue, m.Role)
	}
	return m, nil
}

// Punt is a packet the forwarder hands to control: the first packet of
// a flow on a VIP whose policy needs control-plane state (PuntNewFlow:
// the forwarder holds it until a route for its key arrives), a TCP
// segment without SYN of a connection another unit may carry
// (PuntMidFlow: held the same way, until a route or a refusal), or any
// packet of an l7 VIP that has no flow yet (PuntAccept: for the
// acceptor, which answers it with an Answer naming the punt's ID).
type Punt struct {
	Worker uint8
	Reason uint8
	VIP    uint32 // the VIP's ID in the forwarder's configuration
	// ID numbers the punts of one worker (PuntAccept's answer names it).
	ID uint32
	// Choice is the backend the VIP's Maglev table gives the flow (an ID
	// in the forwarder's configuration), or NoChoice when no backend
	// takes new flows. It is the control process's answer when nothing
	// it knows (allotments; later sessions and affinity) decides
	// otherwise, so the control process keeps no Maglev tables of its
	// own. A PuntMidFlow of a nat VIP always carries NoChoice: a fresh
	// flow (a new SNAT port) cannot carry a connection already under
	// way.
	Choice uint32
	Key    unit.FlowKey
	// Frame is a copy of the frame (PuntNewFlow) or of its IP packet,
	// without the link header (PuntAccept), at most MaxPuntFrame bytes.
	Frame []byte
}

// NoChoice is a punt's Choice when the VIP has no backend for new flows.
const NoChoice = ^uint32(0)

// NoVIP is a mid-flow punt's VIP when the packet is a nat reply to a
// SNAT address (its key is the reply's): the control process looks the
// connection up by it and routes the client's side.
const NoVIP = ^uint32(0)

// MaxPuntFrame bounds the frame bytes a punt carries.
const MaxPuntFrame = 2048

// Punt reasons.
const (
	PuntNewFlow = 1
	PuntAccept  = 2
	// PuntMidFlow: a TCP segment without SYN (an ACK, FIN or RST) that
	// no flow of this unit expects, in a unit whose flows are shared
	// with other units (a cluster): the connection may be another
	// unit's, moved here by the router. The control process answers
	// with RouteAdd (where the connection goes) or RouteRefuse.
	PuntMidFlow = 3
)

// AppendPunt appends a punt message.
func AppendPunt(b []byte, seq uint32, m *Punt) []byte {
	b = AppendHeader(b, Header{Type: TPunt, Seq: seq})
	b = append(b, m.Worker, m.Reason)
	b = binary.BigEndian.AppendUint32(b, m.VIP)
	b = binary.BigEndian.AppendUint32(b, m.ID)
	b = binary.BigEndian.AppendUint32(b, m.Choice)
	b = appendKey(b, &m.Key)
	f := m.Frame[:min(len(m.Frame), MaxPuntFrame)]
	b = binary.BigEndian.AppendUint16(b, uint16(len(f)))
	return append(b, f...)
}

// DecodePunt decodes a punt payload. Frame aliases p.
func DecodePunt(p []byte) (Punt, error) {
	r := reader{b: p}
	m := Punt{Worker: r.u8(), Reason: r.u8(), VIP: r.u32(), ID: r.u32(), Choice: r.u32(), Key: r.key()}
	m.Frame = r.bytes16()
	if err := r.done(); err != nil {
		return Punt{}, fmt.Errorf("punt: %w", err)
	}
	if len(m.Frame) > MaxPuntFrame {
		return Punt{}, fmt.Errorf("punt: %w: frame of %d bytes", ErrLength, len(m.Frame))
	}
	if m.Reason < PuntNewFlow || m.Reason > PuntMidFlow {
		return Punt{}, fmt.Errorf("punt: %w: reason %d", ErrValue, m.Reason)
	}
	return m, nil
}

// Answer is the control process's reply to a PuntAccept: Packet (an IP
// packet, no link header) goes out in place of the punted frame, which
// the forwarder turns around (link addresses swapped). An empty Packet
// drops the frame, unless the answer carries a route.
//
// Route, when its Op is not zero, is applied before the packet goes: a
// migrated connection's route and the ACK of its request travel in one
// message, so that the control process writes, and the forwarder reads
// and hands to its workers, one message per connection fewer. With a
// route and an empty Packet the frame itself goes on, along the route:
// the segment of a connection another unit of a cluster carried, which
// continues here.
type Answer struct {
	Worker uint8
	ID     uint32
	Packet []byte
	Route  Route
}

// MaxAnswer bounds an answer's packet: what fits a held frame's buffer
// after any link header.
const MaxAnswer = 1600

// AppendAnswer appends an answer message.
func AppendAnswer(b []byte, seq uint32, m *Answer) []byte {
	b = AppendHeader(b, Header{Type: TAnswer, Seq: seq})
	b = append(b, m.Worker)
	b = binary.BigEndian.AppendUint32(b, m.ID)
	pk := m.Packet[:min(len(m.Packet), MaxAnswer)]
	b = binary.BigEndian.AppendUint16(b, uint16(len(pk)))
	b = append(b, pk...)
	if m.Route.Op != 0 {
		b = appendRoute(b, &m.Route)
	}
	return b
}

// DecodeAnswer decodes an answer payload. Packet aliases p.
func DecodeAnswer(p []byte) (Answer, error) {
	r := reader{b: p}
	m := Answer{Worker: r.u8(), ID: r.u32()}
	m.Packet = r.bytes16()
	if r.err == nil && len(r.b) > 0 {
		m.Route = r.route()
	}
	if err := r.done(); err != nil {
		return Answer{}, fmt.Errorf("answer: %w", err)
	}
	if len(m.Packet) > MaxAnswer {
		return Answer{}, fmt.Errorf("answer: %w: packet of %d bytes", ErrLength, len(m.Packet))
	}
	return m, nil
}

// Route operations.
const (
	RouteAdd    = 1
	RouteDelete = 2
	// RouteRelease: the host of the key's tunnel flow holds its mapping;
	// the packets the forwarder holds for the flow may go.
	RouteRelease = 3
	// RouteRefuse: the control process knows no route for the key of a
	// punt (a PuntMidFlow whose connection no unit holds). The forwarder
	// answers the frames it holds for the key as a host that does not
	// know the connection would (a reset for a segment without RST)
	// and lets them go; it records no flow.
	RouteRefuse = 4
)

// Route adds, deletes, releases or refuses a flow. Worker 0xff means
// "the worker that owns the key" (the forwarder steers it).
type Route struct {
	Op     uint8
	Worker uint8
	Key    unit.FlowKey
	Action unit.Action
}

// AnyWorker lets the forwarder choose the worker of a route.
const AnyWorker = 0xff

// AppendRoute appends a route message.
func AppendRoute(b []byte, seq uint32, m *Route) []byte {
	return appendRoute(AppendHeader(b, Header{Type: TRoute, Seq: seq}), m)
}

func appendRoute(b []byte, m *Route) []byte {
	b = append(b, m.Op, m.Worker)
	b = appendKey(b, &m.Key)
	if m.Op == RouteAdd {
		b = appendAction(b, &m.Action)
	}
	return b
}

const actionSize = 1 + 4 + 16 + 16 + 2 + 2 + 1

func appendAction(b []byte, a *unit.Action) []byte {
	b = append(b, byte(a.Mode))
	b = binary.BigEndian.AppendUint32(b, a.Backend)
	b = append(b, a.A[:]...)
	b = append(b, a.B[:]...)
	b = binary.BigEndian.AppendUint16(b, a.PortA)
	b = binary.BigEndian.AppendUint16(b, a.PortB)
	return append(b, byte(a.Flags))
}

func (r *reader) action() unit.Action {
	var a unit.Action
	a.Mode, a.Backend = unit.Mode(r.u8()), r.u32()
	if r.err == nil && a.Mode != 0 && (!a.Mode.Valid() || a.Mode == unit.ModeL7) {
		// l7 is a VIP's mode, never a flow's (its flows are tunnel flows).
		r.err = fmt.Errorf("%w: mode %d", ErrValue, a.Mode)
	}
	a.A, a.B = r.addr16(), r.addr16()
	a.PortA, a.PortB = r.u16(), r.u16()
	a.Flags = unit.FlowFlags(r.u8())
	return a
}

// DecodeRoute decodes a route payload.
func DecodeRoute(p []byte) (Route, error) {
	r := reader{b: p}
	m := r.route()
	if err := r.done(); err != nil {
		return Route{}, fmt.Errorf("route: %w", err)
	}
	return m, nil
}

func (r *reader) route() Route {
	m := Route{Op: r.u8(), Worker: r.u8(), Key: r.key()}
	switch m.Op {
	case RouteAdd:
		m.Action = r.action()
	case RouteDelete, RouteRelease, RouteRefuse:
	default:
		if r.err == nil {
			r.err = fmt.Errorf("%w: route op %d", ErrValue, m.Op)
		}
	}
	return m
}

// Flow event kinds.
const (
	FlowOpened  = 1 // a new flow was recorded
	FlowClosed  = 2 // FIN or RST seen
	FlowExpired = 3 // removed by idle aging or eviction
)

// FlowEvent tells control about a flow, for its connection inventory.
// An opened flow carries its whole action, so that control can put the
// flow back into a restarted forwarder exactly as it was.
type FlowEvent struct {
	Kind   uint8
	Worker uint8
	Key    unit.FlowKey
	Action unit.Action
}

// flowEventSize is the encoded size of one event.
const flowEventSize = 2 + KeySize + actionSize

// MaxFlowEvents bounds the events of one message.
const MaxFlowEvents = (MaxMessage - HeaderSize - 2) / flowEventSize

// AppendFlowEvents appends one message carrying events (at most
// MaxFlowEvents).
func AppendFlowEvents(b []byte, seq uint32, events []FlowEvent) []byte {
	events = events[:min(len(events), MaxFlowEvents)]
	b = AppendHeader(b, Header{Type: TFlowEvent, Seq: seq})
	b = binary.BigEndian.AppendUint16(b, uint16(len(events)))
	for i := range events {
		e := &events[i]
		b = append(b, e.Kind, e.Worker)
		b = appendKey(b, &e.Key)
		b = appendAction(b, &e.Action)
	}
	return b
}

// DecodeFlowEvents decodes a flow-event payload, appending to dst.
func DecodeFlowEvents(dst []FlowEvent, p []byte) ([]FlowEvent, error) {
	r := reader{b: p}
	n := int(r.u16())
	if n > MaxFlowEvents {
		return dst, fmt.Errorf("flow events: %w: %d events", ErrLength, n)
	}
	for range n {
		e := FlowEvent{Kind: r.u8(), Worker: r.u8(), Key: r.key(), Action: r.action()}
		if r.err == nil && (e.Kind < FlowOpened || e.Kind > FlowExpired) {
			r.err = fmt.Errorf("%w: kind %d", ErrValue, e.Kind)
		}
		dst = append(dst, e)
	}
	if err := r.done(); err != nil {
		return dst[:len(dst)-n], fmt.Errorf("flow events: %w", err)
	}
	return dst, nil
}

// AppendBarrier appends a barrier; the forwarder answers with an ack of
// the same sequence once it has applied every message before it.
func AppendBarrier(b []byte, seq uint32) []byte {
	return AppendHeader(b, Header{Type: TBarrier, Seq: seq})
}

// AppendAck appends the answer to a barrier.
func AppendAck(b []byte, seq uint32) []byte {
	return AppendHeader(b, Header{Type: TAck, Seq: seq})
}

// Call is a cold request: Method names it, Body is JSON. A body too large
// for one message is sent in chunks with the same sequence; Chunk counts
// from 0 to Chunks-1.
type Call struct {
	Method string
	Chunk  uint16
	Chunks uint16
	Body   []byte
}

// Return answers a call (same sequence). Err is empty on success.
type Return struct {
	Err    string
	Chunk  uint16
	Chunks uint16
	Body   []byte
}

// maxBodyChunk keeps a chunk and its fields inside MaxMessage.
const maxBodyChunk = MaxMessage - HeaderSize - 1024

// AppendCalls appends one message per chunk of body to msgs.
func AppendCalls(msgs [][]byte, seq uint32, method string, body []byte) [][]byte {
	return appendChunked(msgs, TCall, seq, method[:min(len(method), 255)], body)
}

// AppendReturns appends one message per chunk of an answer to msgs.
func AppendReturns(msgs [][]byte, seq uint32, errText string, body []byte) [][]byte {
	return appendChunked(msgs, TReturn, seq, errText[:min(len(errText), 1000)], body)
}

// appendChunked writes calls and returns: a length-prefixed text (the
// method, or the error), the chunk's index and count, and the chunk.
func appendChunked(msgs [][]byte, t Type, seq uint32, text string, body []byte) [][]byte {
	chunks := chunk(body)
	for i, c := range chunks {
		b := AppendHeader(nil, Header{Type: t, Seq: seq})
		b = binary.BigEndian.AppendUint16(b, uint16(len(text)))
		b = append(b, text...)
		b = binary.BigEndian.AppendUint16(b, uint16(i))
		b = binary.BigEndian.AppendUint16(b, uint16(len(chunks)))
		b = binary.BigEndian.AppendUint16(b, uint16(len(c)))
		msgs = append(msgs, append(b, c...))
	}
	return msgs
}

// MaxChunks bounds a chunked body (about 4 MB).
const MaxChunks = 64

func chunk(body []byte) [][]byte {
	var cs [][]byte
	for len(body) > maxBodyChunk {
		cs = append(cs, body[:maxBodyChunk])
		body = body[maxBodyChunk:]
	}
	return append(cs, body)
}

// DecodeCall decodes a call payload. Body aliases p.
func DecodeCall(p []byte) (Call, error) {
	r := reader{b: p}
	m := Call{Method: string(r.bytes16()), Chunk: r.u16(), Chunks: r.u16()}
	m.Body = r.bytes16()
	if err := r.done(); err != nil {
		return Call{}, fmt.Errorf("call: %w", err)
	}
	if m.Chunks == 0 || m.Chunks > MaxChunks || m.Chunk >= m.Chunks {
		return Call{}, fmt.Errorf("call: %w: chunk %d of %d", ErrValue, m.Chunk, m.Chunks)
	}
	return m, nil
}

// DecodeReturn decodes a return payload. Body aliases p.
func DecodeReturn(p []byte) (Return, error) {
	r := reader{b: p}
	m := Return{Err: string(r.bytes16()), Chunk: r.u16(), Chunks: r.u16()}
	m.Body = r.bytes16()
	if err := r.done(); err != nil {
		return Return{}, fmt.Errorf("return: %w", err)
	}
	if m.Chunks == 0 || m.Chunks > MaxChunks || m.Chunk >= m.Chunks {
		return Return{}, fmt.Errorf("return: %w: chunk %d of %d", ErrValue, m.Chunk, m.Chunks)
	}
	return m, nil
}

// AppendLost appends a lost message: the forwarder dropped n flow events
// (its outbox or the flow table's removal log was full), so the control
// process's inventory is no longer exact and must be read again.
func AppendLost(b []byte, seq uint32, n uint64) []byte {
	b = AppendHeader(b, Header{Type: TLost, Seq: seq})
	return binary.BigEndian.AppendUint64(b, n)
}

// DecodeLost decodes a lost payload.
func DecodeLost(p []byte) (uint64, error) {
	r := reader{b: p}
	n := r.u64()
	if err := r.done(); err != nil {
		return 0, fmt.Errorf("lost: %w", err)
	}
	return n, nil
}

// SYNKey is what the forwarder's workers need to answer an l7 VIP's SYN
// with the SYN-ACK its acceptor would send (package syncookie): the
// keys of the current epoch and the next, the TSval offset and the
// SYN-ACK's own options. A worker answers with Cur while the host
// clock's epoch (UnixNano / Every) is Epoch, with Next (when HasNext)
// while it is Epoch+1, and punts the SYN to the acceptor otherwise.
type SYNKey struct {
	VIP uint32 // the VIP's ID in the forwarder's configuration
	// Addr and Port are the VIP's: a worker uses the key only for
	// packets to them, so that an ID the forwarder gave another VIP
	// since never gets this one's key. Addr is IPv4 or IPv6 (not
	// IPv4-mapped, no zone).
	Addr     netip.Addr
	Port     uint16
	Every    uint64 // the epoch's length, nanoseconds
	Epoch    int64  // Cur's epoch; Next is Epoch+1's
	Cur      [16]byte
	Next     [16]byte
	HasNext  bool
	TSOffset uint32
	MSS      uint16 // the SYN-ACK's MSS option
	WScale   uint8  // its window scale option (0 to 14)
	Window   uint16 // its window
}

// synKeySize is the encoded size of one SYNKey.
const synKeySize = 4 + 1 + 16 + 2 + 8 + 8 + 16 + 16 + 1 + 4 + 2 + 1 + 2

// MaxSYNKeys bounds the keys of one message.
const MaxSYNKeys = (MaxMessage - HeaderSize - 2) / synKeySize

// AppendSYNKeys appends a SYN keys message: the whole set, which
// replaces what the workers hold (an l7 VIP not in it gets no more
// answers from the workers). Keys past MaxSYNKeys are left out.
func AppendSYNKeys(b []byte, seq uint32, keys []SYNKey) []byte {
	keys = keys[:min(len(keys), MaxSYNKeys)]
	b = AppendHeader(b, Header{Type: TSYNKeys, Seq: seq})
	b = binary.BigEndian.AppendUint16(b, uint16(len(keys)))
	for i := range keys {
		k := &keys[i]
		b = binary.BigEndian.AppendUint32(b, k.VIP)
		var a [16]byte // an IPv4 address in the first four bytes
		fam := byte(6)
		if k.Addr.Is4() {
			fam = 4
			a4 := k.Addr.As4()
			copy(a[:], a4[:])
		} else {
			a = k.Addr.As16()
		}
		b = append(b, fam)
		b = append(b, a[:]...)
		b = binary.BigEndian.AppendUint16(b, k.Port)
		b = binary.BigEndian.AppendUint64(b, k.Every)
		b = binary.BigEndian.AppendUint64(b, uint64(k.Epoch))
		b = append(b, k.Cur[:]...)
		b = append(b, k.Next[:]...)
		has := byte(0)
		if k.HasNext {
			has = 1
		}
		b = append(b, has)
		b = binary.BigEndian.AppendUint32(b, k.TSOffset)
		b = binary.BigEndian.AppendUint16(b, k.MSS)
		b = append(b, k.WScale)
		b = binary.BigEndian.AppendUint16(b, k.Window)
	}
	return b
}

// DecodeSYNKeys decodes a SYN keys payload.
func DecodeSYNKeys(p []byte) ([]SYNKey, error) {
	r := reader{b: p}
	n := int(r.u16())
	if n > MaxSYNKeys {
		return nil, fmt.Errorf("syn keys: %w: %d keys", ErrLength, n)
	}
	if r.err == nil && len(r.b) != n*synKeySize {
		return nil, fmt.Errorf("syn keys: %w: %d bytes for %d keys", ErrLength, len(r.b), n)
	}
	keys := make([]SYNKey, 0, n)
	seen := make(map[uint32]bool, n)
	for range n {
		var k SYNKey
		k.VIP = r.u32()
		fam, a := r.u8(), r.addr16()
		k.Port = r.u16()
		k.Every = r.u64()
		k.Epoch = int64(r.u64())
		copy(k.Cur[:], r.take(16))
		copy(k.Next[:], r.take(16))
		has := r.u8()
		k.HasNext = has == 1
		k.TSOffset = r.u32()
		k.MSS, k.WScale, k.Window = r.u16(), r.u8(), r.u16()
		if r.err != nil {
			break
		}
		switch fam {
		case 4:
			k.Addr = netip.AddrFrom4([4]byte(a[:4]))
			if [12]byte(a[4:]) != ([12]byte{}) {
				r.err = fmt.Errorf("%w: VIP %d: IPv4 address %x", ErrValue, k.VIP, a)
			}
		case 6:
			k.Addr = netip.AddrFrom16(a)
		default:
			r.err = fmt.Errorf("%w: VIP %d: address family %d", ErrValue, k.VIP, fam)
		}
		switch {
		case r.err != nil:
		case k.Addr.Is4In6() || k.Addr.IsUnspecified():
			r.err = fmt.Errorf("%w: VIP %d: address %v", ErrValue, k.VIP, k.Addr)
		case seen[k.VIP]:
			r.err = fmt.Errorf("%w: VIP %d twice", ErrValue, k.VIP)
		case has > 1:
			r.err = fmt.Errorf("%w: has-next %d", ErrValue, has)
		case k.Port == 0:
			r.err = fmt.Errorf("%w: VIP %d: port 0", ErrValue, k.VIP)
		case k.Every == 0 || k.Every > 1<<62:
			r.err = fmt.Errorf("%w: VIP %d: epoch of %d ns", ErrValue, k.VIP, k.Every)
		case k.Epoch < 0 || k.Epoch == 1<<63-1:
			r.err = fmt.Errorf("%w: VIP %d: epoch %d", ErrValue, k.VIP, k.Epoch)
		case k.MSS < 64:
			r.err = fmt.Errorf("%w: VIP %d: MSS %d", ErrValue, k.VIP, k.MSS)
		case k.WScale > 14:
			r.err = fmt.Errorf("%w: VIP %d: window scale %d", ErrValue, k.VIP, k.WScale)
		case k.Window == 0:
			r.err = fmt.Errorf("%w: VIP %d: window 0", ErrValue, k.VIP)
		}
		if r.err != nil {
			break
		}
		seen[k.VIP] = true
		keys = append(keys, k)
	}
	if err := r.done(); err != nil {
		return nil, fmt.Errorf("syn keys: %w", err)
	}
	return keys, nil
}
