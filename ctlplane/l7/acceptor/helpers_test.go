package acceptor

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/tetherlb/tether/api/hostpb"
)

// testComplete is a minimal request-head finder for the tests (the real
// HTTP parser is another package's): a head ends at the first empty
// line (CRLF or bare LF); its request line must end in HTTP/1.0 or HTTP/1.1 (else 400),
// and data starting "BAD" is bad at once.
func testComplete(d []byte) (int, int) {
	if bytes.HasPrefix(d, []byte("BAD")) {
		return 0, 400
	}
	end := -1
	if i := bytes.Index(d, []byte("\r\n\r\n")); i >= 0 {
		end = i + 4
	}
	if i := bytes.Index(d, []byte("\n\n")); i >= 0 && (end < 0 || i+2 < end) {
		end = i + 2
	}
	if end < 0 {
		return 0, 0
	}
	line := d[:bytes.IndexByte(d, '\n')]
	line = bytes.TrimSuffix(line, []byte("\r"))
	if !bytes.HasSuffix(line, []byte(" HTTP/1.1")) && !bytes.HasSuffix(line, []byte(" HTTP/1.0")) {
		return 0, 400
	}
	return end, 0
}

// seededReader is a deterministic secret source.
type seededReader struct{ r *rand.ChaCha8 }

func (s seededReader) Read(p []byte) (int, error) { return s.r.Read(p) }

func newSeeded(seed byte) seededReader {
	var s [32]byte
	s[0] = seed
	return seededReader{rand.NewChaCha8(s)}
}

// t0 is the tests' clock origin, in the middle of a secret epoch.
var t0 = time.Unix(1_800_000_000, 0).Add(10 * time.Second)

func newTest(t testing.TB, mod func(*Config)) *Acceptor {
	t.Helper()
	cfg := Config{
		MaxConns:       16,
		MaxRequest:     4096,
		RequestTimeout: 5 * time.Second,
		MSS:            1400,
		WindowScale:    7,
		Secrets:        newSeeded(1),
		SecretEvery:    64 * time.Second,
		Complete:       testComplete,
	}
	if mod != nil {
		mod(&cfg)
	}
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// client is a test peer: it builds packets with gopacket and checks
// every reply.
type client struct {
	t    testing.TB
	a    *Acceptor
	ip   net.IP
	vip  net.IP
	port uint16
	isn  uint32
	now  time.Time
	// What its SYN offered.
	mss           uint16 // 0: no option
	ws            int    // -1: no option
	sack, ts      bool
	tsVal         uint32
	serverISN     uint32 // learned from the SYN-ACK
	serverTS      uint32 // the last TSval heard
	seq           uint32 // next byte to send
	synAckWindow  uint16
	lastRightEdge uint32
	checkNoShrink bool
}

func newClient(t testing.TB, a *Acceptor, port uint16) *client {
	return &client{t: t, a: a, ip: net.IPv4(198, 51, 100, 7).To4(), vip: net.IPv4(192, 0, 2, 80).To4(), port: port,
		isn: 0xfffffff0 - uint32(port), now: t0, mss: 1460, ws: 8, sack: true, ts: true, tsVal: 1000}
}

// newClient6 is newClient over IPv6.
func newClient6(t testing.TB, a *Acceptor, port uint16) *client {
	c := newClient(t, a, port)
	c.ip, c.vip, c.mss = net.ParseIP("2001:db8:7::7"), net.ParseIP("2001:db8::80"), 1440
	return c
}

// families runs f over an IPv4 and an IPv6 client.
func families(t *testing.T, f func(t *testing.T, newClient func(testing.TB, *Acceptor, uint16) *client)) {
	t.Run("ipv4", func(t *testing.T) { f(t, newClient) })
	t.Run("ipv6", func(t *testing.T) { f(t, newClient6) })
}

func (c *client) v6() bool { return c.ip.To4() == nil }

// l3 is the length of the client's IP header.
func (c *client) l3() int {
	if c.v6() {
		return 40
	}
	return 20
}

func (c *client) key() Key {
	k := Key{ClientPort: c.port, VIPPort: 80}
	k.Client, _ = netip.AddrFromSlice(c.ip)
	k.VIP, _ = netip.AddrFromSlice(c.vip)
	return k
}

// packet builds a segment from the client.
func (c *client) packet(flags string, seq, ack uint32, payload []byte, opts []layers.TCPOption) []byte {
	c.t.Helper()
	var ip gopacket.SerializableLayer
	var nl gopacket.NetworkLayer
	if c.v6() {
		ip6 := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolTCP, SrcIP: c.ip, DstIP: c.vip}
		ip, nl = ip6, ip6
	} else {
		ip4 := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: layers.IPProtocolTCP, SrcIP: c.ip, DstIP: c.vip, Flags: layers.IPv4DontFragment}
		ip, nl = ip4, ip4
	}
	tcp := &layers.TCP{SrcPort: layers.TCPPort(c.port), DstPort: 80, Seq: seq, Ack: ack, Window: 502, Options: opts}
	for _, f := range flags {
		switch f {
		case 'S':
			tcp.SYN = true
		case 'A':
			tcp.ACK = true
		case 'F':
			tcp.FIN = true
		case 'R':
			tcp.RST = true
		case 'P':
			tcp.PSH = true
		}
	}
	tcp.SetNetworkLayerForChecksum(nl)
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ip, tcp, gopacket.Payload(payload)); err != nil {
		c.t.Fatal(err)
	}
	return bytes.Clone(buf.Bytes())
}

func tsOpt(val, ecr uint32) layers.TCPOption {
	d := make([]byte, 8)
	binary.BigEndian.PutUint32(d, val)
	binary.BigEndian.PutUint32(d[4:], ecr)
	return layers.TCPOption{OptionType: layers.TCPOptionKindTimestamps, OptionLength: 10, OptionData: d}
}

func (c *client) synOpts() []layers.TCPOption {
	var o []layers.TCPOption
	if c.mss != 0 {
		o = append(o, layers.TCPOption{OptionType: layers.TCPOptionKindMSS, OptionLength: 4, OptionData: binary.BigEndian.AppendUint16(nil, c.mss)})
	}
	if c.sack {
		o = append(o, layers.TCPOption{OptionType: layers.TCPOptionKindSACKPermitted, OptionLength: 2})
	}
	if c.ts {
		o = append(o, tsOpt(c.tsVal, 0))
	}
	if c.ws >= 0 {
		o = append(o, layers.TCPOption{OptionType: layers.TCPOptionKindNop, OptionLength: 1},
			layers.TCPOption{OptionType: layers.TCPOptionKindWindowScale, OptionLength: 3, OptionData: []byte{byte(c.ws)}})
	}
	return o
}

// reply is a decoded, checked reply.
type reply struct {
	raw      []byte
	ip       *layers.IPv4 // nil for IPv6
	src, dst net.IP
	tcp      *layers.TCP
	opts     map[layers.TCPOptionKind][]byte
}

func (r *reply) String() string {
	if r == nil {
		return "no reply"
	}
	return fmt.Sprintf("%s seq %d ack %d win %d len %d", flagString(r.tcp), r.tcp.Seq, r.tcp.Ack, r.tcp.Window, len(r.tcp.Payload))
}

func flagString(t *layers.TCP) string {
	s := ""
	for _, f := range []struct {
		on bool
		c  string
	}{{t.SYN, "S"}, {t.ACK, "A"}, {t.FIN, "F"}, {t.RST, "R"}, {t.PSH, "P"}} {
		if f.on {
			s += f.c
		}
	}
	return s
}

// inetSum is the RFC 1071 checksum, written apart from the package's
// so that a bug there cannot hide itself.
func inetSum(parts ...[]byte) uint16 {
	var s uint32
	for _, b := range parts {
		for i := 0; i+1 < len(b); i += 2 {
			s += uint32(b[i])<<8 | uint32(b[i+1])
		}
		if len(b)%2 == 1 {
			s += uint32(b[len(b)-1]) << 8
		}
	}
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return uint16(s)
}

// checkReply verifies that b is a well-formed IPv4/TCP or IPv6/TCP
// packet with correct checksums and decodes it.
func checkReply(t testing.TB, b []byte) (*reply, error) {
	var seg, pseudo []byte
	first := layers.LayerTypeIPv4
	switch {
	case len(b) >= 40 && b[0] == 0x45:
		if int(binary.BigEndian.Uint16(b[2:])) != len(b) {
			return nil, fmt.Errorf("total length %d, packet %d", binary.BigEndian.Uint16(b[2:]), len(b))
		}
		if inetSum(b[:20]) != 0xffff {
			return nil, fmt.Errorf("bad IPv4 checksum")
		}
		if b[9] != 6 {
			return nil, fmt.Errorf("protocol %d", b[9])
		}
		seg = b[20:]
		pseudo = append(append(append([]byte{}, b[12:20]...), 0, 6), byte(len(seg)>>8), byte(len(seg)))
	case len(b) >= 60 && b[0]>>4 == 6:
		if int(binary.BigEndian.Uint16(b[4:]))+40 != len(b) {
			return nil, fmt.Errorf("payload length %d, packet %d", binary.BigEndian.Uint16(b[4:]), len(b))
		}
		if b[6] != 6 || b[7] == 0 {
			return nil, fmt.Errorf("next header %d, hop limit %d", b[6], b[7])
		}
		seg = b[40:]
		pseudo = append(append(append([]byte{}, b[8:40]...), 0, 0), byte(len(seg)>>8), byte(len(seg)), 0, 0, 0, 6)
		first = layers.LayerTypeIPv6
	default:
		return nil, fmt.Errorf("reply of %d bytes, first byte %#x", len(b), b[0])
	}
	if inetSum(pseudo, seg) != 0xffff {
		return nil, fmt.Errorf("bad TCP checksum")
	}
	p := gopacket.NewPacket(b, first, gopacket.Default)
	if el := p.ErrorLayer(); el != nil {
		return nil, fmt.Errorf("decode: %v", el.Error())
	}
	r := &reply{raw: b, opts: map[layers.TCPOptionKind][]byte{}}
	if first == layers.LayerTypeIPv4 {
		r.ip = p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
		r.src, r.dst = r.ip.SrcIP, r.ip.DstIP
	} else {
		ip := p.Layer(layers.LayerTypeIPv6).(*layers.IPv6)
		r.src, r.dst = ip.SrcIP, ip.DstIP
	}
	tl := p.Layer(layers.LayerTypeTCP)
	if tl == nil {
		return nil, fmt.Errorf("no TCP layer")
	}
	r.tcp = tl.(*layers.TCP)
	for _, o := range r.tcp.Options {
		if o.OptionType > layers.TCPOptionKindNop {
			r.opts[o.OptionType] = o.OptionData
		}
	}
	return r, nil
}

// send hands pkt to the acceptor and checks the reply.
func (c *client) send(pkt []byte) (*reply, Event) {
	c.t.Helper()
	out, ev := c.a.Handle(c.now, pkt, make([]byte, 0, MaxReply))
	if out == nil {
		return nil, ev
	}
	r, err := checkReply(c.t, out)
	if err != nil {
		c.t.Fatalf("reply %x: %v", out, err)
	}
	if !r.src.Equal(c.vip) || !r.dst.Equal(c.ip) || r.tcp.SrcPort != 80 || r.tcp.DstPort != layers.TCPPort(c.port) {
		c.t.Fatalf("reply %v:%d → %v:%d, want the flow reversed", r.src, r.tcp.SrcPort, r.dst, r.tcp.DstPort)
	}
	if ts, ok := r.opts[layers.TCPOptionKindTimestamps]; ok {
		v := binary.BigEndian.Uint32(ts)
		if c.serverTS != 0 && int32(v-c.serverTS) < 0 {
			c.t.Fatalf("TSval went back from %d to %d", c.serverTS, v)
		}
		c.serverTS = v
	}
	if c.checkNoShrink && r.tcp.ACK && !r.tcp.RST && !r.tcp.SYN {
		// Only the window of an established connection scales.
		edge := r.tcp.Ack + uint32(r.tcp.Window)<<c.wscaleSeen()
		if c.lastRightEdge != 0 && int32(edge-c.lastRightEdge) < 0 {
			c.t.Fatalf("window's right edge moved back from %d to %d", c.lastRightEdge, edge)
		}
		c.lastRightEdge = edge
	}
	return r, ev
}

func (c *client) wscaleSeen() uint {
	if c.ws >= 0 && c.ts {
		return 7
	}
	return 0
}

// syn sends the SYN and records the cookie.
func (c *client) syn() *reply {
	c.t.Helper()
	r, _ := c.send(c.packet("S", c.isn, 0, nil, c.synOpts()))
	if r == nil || !r.tcp.SYN || !r.tcp.ACK || r.tcp.Ack != c.isn+1 {
		c.t.Fatalf("SYN answered with %v", r)
	}
	c.serverISN = r.tcp.Seq
	c.seq = c.isn + 1
	c.synAckWindow = r.tcp.Window
	return r
}

// dataOpts are the options of a segment after the handshake.
func (c *client) dataOpts() []layers.TCPOption {
	if !c.ts {
		return nil
	}
	c.tsVal++
	return []layers.TCPOption{{OptionType: layers.TCPOptionKindNop, OptionLength: 1}, {OptionType: layers.TCPOptionKindNop, OptionLength: 1}, tsOpt(c.tsVal, c.serverTS)}
}

// data sends payload at seq (with flags, "A" at least) acknowledging
// the SYN-ACK.
func (c *client) dataAt(flags string, seq uint32, payload []byte) (*reply, Event) {
	c.t.Helper()
	return c.send(c.packet(flags, seq, c.serverISN+1, payload, c.dataOpts()))
}

// data sends the next bytes in order.
func (c *client) data(flags string, payload []byte) (*reply, Event) {
	c.t.Helper()
	r, ev := c.dataAt(flags, c.seq, payload)
	c.seq += uint32(len(payload))
	return r, ev
}

// handshake makes the connection: SYN, then the cookie ACK.
func (c *client) handshake() {
	c.t.Helper()
	c.syn()
	r, ev := c.data("A", nil)
	if r != nil || ev.Kind != None {
		c.t.Fatalf("cookie ACK answered with %v, %v", r, ev.Kind)
	}
}

// validMigrate runs hostpb's check on what a Ready event carries, as
// the unit will send it (with the message's own fields, which the unit
// sets, as placeholders).
func validMigrate(ev Event) error {
	return hostpb.ValidateUnit(&hostpb.UnitMessage{Version: hostpb.Version, Body: &hostpb.UnitMessage_Migrate{
		Migrate: &hostpb.Migrate{Id: 1, FlowId: 1, Seq: 1, State: ev.State, Data: ev.Data}}})
}

const request = "GET /index.html HTTP/1.1\r\nHost: example.com\r\nUser-Agent: test\r\n\r\n"
