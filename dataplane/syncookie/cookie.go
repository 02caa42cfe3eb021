// Package syncookie is the one implementation of the l7 VIPs' SYN
// cookies: the cookie's MAC under an epoch's key, the MSS classes it
// carries, the options a SYN-ACK encodes in its TSval, and the segments
// the acceptor sends (Build). The control process's acceptor
// (ctlplane/l7/acceptor) uses it to answer and to check cookies; the
// forwarder's workers (dataplane) use it to answer an l7 VIP's SYN
// themselves, with the same bytes the acceptor would send, so that the
// acceptor takes the cookie of either.
//
// Nothing here allocates per packet: a MAC keeps its working blocks in
// fields, so that handing them to the cipher (an interface) does not
// move them to the heap on every call; keep a MAC inside a struct that
// lives on the heap already (an Acceptor, a Pipeline).
package syncookie

import (
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
	"fmt"
	"net/netip"
	"time"
)

// Tuple names a flow from the client's side. Client and VIP are of one
// family, IPv4 or IPv6 (not IPv4-mapped), as on the wire.
type Tuple struct {
	Client, VIP         netip.Addr
	ClientPort, VIPPort uint16
}

// Replyable reports whether a reply to client a can reach one host: not
// an unspecified, loopback, multicast or (IPv4) reserved address, not an
// IPv6 link-local one (which names no link here), and not an IPv4
// address written as IPv6. The acceptor drops the others' packets
// (bad_address), and a worker leaves them to it.
func Replyable(a netip.Addr) bool {
	if a.Is4() {
		b := a.As4()
		return b[0] != 0 && b[0] != 127 && b[0] < 224
	}
	return a.IsValid() && !a.IsUnspecified() && !a.IsLoopback() && !a.IsMulticast() && !a.IsLinkLocalUnicast() && !a.Is4In6()
}

// MSSClasses are the client MSS values a cookie can carry (three bits):
// the smallest a real path uses, the RFC 9293 default (also taken when
// the SYN has no MSS option), the usual tunnel and PPPoE sizes,
// Ethernet's, and jumbo frames'. A client is credited with the largest
// class not above what it announced, never more.
var MSSClasses = [8]uint16{216, 536, 1220, 1300, 1380, 1440, 1460, 8960}

// DefaultMSS is the MSS of a client whose SYN has no MSS option (RFC
// 9293).
const DefaultMSS = 536

// MSSIndex returns the class of a client's announced MSS.
func MSSIndex(mss uint16) uint32 {
	for i := len(MSSClasses) - 1; i > 0; i-- {
		if mss >= MSSClasses[i] {
			return uint32(i)
		}
	}
	return 0
}

// Cookie layout: parity of the epoch (1 bit), MSS class (3), MAC (28).
const (
	EpochShift = 31
	MSSShift   = 28
	MACMask    = 1<<28 - 1
)

// TSval low bits when the client sends timestamps: its window scale
// (TSNoWS: none) and SACK-permitted.
const (
	TSOptMask = 0x1f
	TSNoWS    = 0x0f
	TSSACK    = 0x10
)

// KeySize is the size of a cookie key.
const KeySize = 16

// Key is one epoch's cookie key. A zero Key (Block nil) is none.
type Key struct {
	Epoch int64
	Raw   [KeySize]byte
	Block cipher.Block
}

// NewKey makes epoch's key of raw. It allocates (the cipher): call it
// when a key changes, never per packet.
func NewKey(epoch int64, raw [KeySize]byte) (Key, error) {
	b, err := aes.NewCipher(raw[:])
	if err != nil {
		return Key{}, fmt.Errorf("syncookie: cipher: %w", err)
	}
	return Key{Epoch: epoch, Raw: raw, Block: b}, nil
}

// Epoch is the key epoch of now when keys change every every: both
// processes read the same host clock.
func Epoch(now time.Time, every time.Duration) int64 { return now.UnixNano() / int64(every) }

// TSNow is the TSval clock: milliseconds, moved by a random offset so
// that the TSval says nothing about the unit's clock.
func TSNow(now time.Time, offset uint32) uint32 { return uint32(now.UnixMilli()) + offset }

// before is sequence-space a < b.
func before(a, b uint32) bool { return int32(a-b) < 0 }

// MAC computes and checks cookies. Its zero value is ready; one MAC
// serves one goroutine at a time.
type MAC struct {
	in, out [aes.BlockSize]byte
}

// sum is a CBC-MAC of the flow, the client's ISN and the MSS class
// under b: two blocks for IPv4, four for IPv6. Each family's message
// has a fixed length, which is what makes CBC-MAC sound; a cookie
// reveals 28 bits of the last block's cipher text, never a whole block,
// so one family's cookies tell nothing that forges the other's.
func (m *MAC) sum(b cipher.Block, t *Tuple, isn, idx uint32) uint32 {
	if t.Client.Is4() {
		c, v := t.Client.As4(), t.VIP.As4()
		copy(m.in[0:4], c[:])
		copy(m.in[4:8], v[:])
		binary.BigEndian.PutUint16(m.in[8:], t.ClientPort)
		binary.BigEndian.PutUint16(m.in[10:], t.VIPPort)
		binary.BigEndian.PutUint32(m.in[12:], isn)
		b.Encrypt(m.out[:], m.in[:])
	} else {
		m.in = t.Client.As16()
		b.Encrypt(m.out[:], m.in[:])
		m.in = t.VIP.As16()
		xor(&m.in, &m.out)
		b.Encrypt(m.out[:], m.in[:])
		m.in = [aes.BlockSize]byte{}
		binary.BigEndian.PutUint16(m.in[0:], t.ClientPort)
		binary.BigEndian.PutUint16(m.in[2:], t.VIPPort)
		binary.BigEndian.PutUint32(m.in[4:], isn)
		xor(&m.in, &m.out)
		b.Encrypt(m.out[:], m.in[:])
	}
	m.out[0] ^= byte(idx)
	b.Encrypt(m.in[:], m.out[:])
	return binary.BigEndian.Uint32(m.in[:]) & MACMask
}

// xor sets *a to *a ^ *b.
func xor(a, b *[aes.BlockSize]byte) {
	for i := range a {
		a[i] ^= b[i]
	}
}

// Cookie returns the ISN of the SYN-ACK under k for a SYN of t with
// sequence number isn and MSS class idx.
func (m *MAC) Cookie(k *Key, t *Tuple, isn, idx uint32) uint32 {
	return uint32(k.Epoch&1)<<EpochShift | idx<<MSSShift | m.sum(k.Block, t, isn, idx)
}

// Check validates cookie c for a SYN of t with sequence number isn,
// under cur or (the other parity) prev, and returns its MSS class.
func (m *MAC) Check(cur, prev *Key, t *Tuple, isn, c uint32) (idx uint32, ok bool) {
	parity := int64(c >> EpochShift)
	idx = c >> MSSShift & 7
	b := cur.Block
	if cur.Epoch&1 != parity {
		if prev.Block == nil {
			return 0, false
		}
		b = prev.Block
	}
	if b == nil {
		return 0, false
	}
	return idx, m.sum(b, t, isn, idx) == c&MACMask
}

// SYN is what a SYN-ACK answers: the client's sequence number and
// options.
type SYN struct {
	Seq  uint32
	MSS  uint16 // announced; DefaultMSS without the option
	TS   bool
	TSV  uint32 // the client's TSval
	WS   bool
	WSh  uint8 // the client's window scale
	SACK bool
}

// Params are the SYN-ACK's own: the MSS and window scale advertised and
// its (unscaled) window.
type Params struct {
	MSS    uint16
	WScale uint8
	Window uint16
}

// MaxSYNACK is the longest SYN-ACK SYNACK builds: IPv6 and TCP headers
// and 20 bytes of options.
const MaxSYNACK = 40 + 20 + 20

// SYNACK appends to out[:0] the SYN-ACK answering s on t with a cookie
// under k (which must be the key of the epoch now is in, as the acceptor
// draws it), at TSval clock tsNow. Without timestamps nothing but the
// MSS survives in the cookie: no window scaling and no SACK, as Linux
// does. It allocates nothing when cap(out) ≥ MaxSYNACK.
func (m *MAC) SYNACK(out []byte, k *Key, tsNow uint32, p *Params, t *Tuple, s *SYN) []byte {
	idx := MSSIndex(s.MSS)
	cookie := m.Cookie(k, t, s.Seq, idx)
	o := Opts{SYN: true, MSS: p.MSS}
	if s.TS {
		o.TS = true
		bits := uint32(TSNoWS)
		if s.WS {
			bits = uint32(min(s.WSh, 14))
			o.WS, o.WScale = true, p.WScale
		}
		if s.SACK {
			bits |= TSSACK
			o.SACK = true
		}
		// Linux's trick: the low bits are replaced, and the result moved
		// back by their span when that put it ahead of the clock, so
		// that the TSvals after it never go backwards.
		v := tsNow&^TSOptMask | bits
		if before(tsNow, v) {
			v -= TSOptMask + 1
		}
		o.TSVal, o.TSEcr = v, s.TSV
	}
	return Build(out, t, cookie, s.Seq+1, flagSYN|flagACK, p.Window, &o, nil)
}

const (
	flagSYN = 0x02
	flagACK = 0x10
)
