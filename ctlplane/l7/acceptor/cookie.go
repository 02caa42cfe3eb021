package acceptor

import (
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
	"fmt"
	"io"
	"time"
)

// mssClasses are the client MSS values a cookie can carry (three bits):
// the smallest a real path uses, the RFC 9293 default (also taken when
// the SYN has no MSS option), the usual tunnel and PPPoE sizes,
// Ethernet's, and jumbo frames'. A client is credited with the largest
// class not above what it announced, never more.
var mssClasses = [8]uint16{216, 536, 1220, 1300, 1380, 1440, 1460, 8960}

// mssIndex returns the class of a client's announced MSS.
func mssIndex(mss uint16) uint32 {
	for i := len(mssClasses) - 1; i > 0; i-- {
		if mss >= mssClasses[i] {
			return uint32(i)
		}
	}
	return 0
}

// Cookie layout: parity of the epoch (1 bit), MSS class (3), MAC (28).
const (
	cookieEpochShift = 31
	cookieMSSShift   = 28
	cookieMACMask    = 1<<28 - 1
)

// TSval low bits when the client sends timestamps: its window scale
// (tsNoWS: none) and SACK-permitted.
const (
	tsOptMask = 0x1f
	tsNoWS    = 0x0f
	tsSACK    = 0x10
)

// secret is one epoch's cookie key.
type secret struct {
	epoch int64
	block cipher.Block
}

// secrets holds the current and the previous epoch's keys.
type secrets struct {
	src   io.Reader
	every time.Duration
	cur   secret
	prev  secret // block nil: none
	// in and out are the MAC's working blocks: fields, so that passing
	// them to the cipher (an interface) does not move them to the heap
	// on every packet. The Acceptor's mutex guards them.
	in, out [aes.BlockSize]byte
	key     [16]byte
}

func (s *secrets) epochOf(now time.Time) int64 { return now.UnixNano() / int64(s.every) }

func (s *secrets) fresh(epoch int64) (secret, error) {
	if _, err := io.ReadFull(s.src, s.key[:]); err != nil {
		return secret{}, fmt.Errorf("acceptor: read a cookie secret: %w", err)
	}
	b, err := aes.NewCipher(s.key[:])
	if err != nil {
		return secret{}, fmt.Errorf("acceptor: cookie cipher: %w", err)
	}
	return secret{epoch: epoch, block: b}, nil
}

// rotate makes cur the secret of now's epoch. A secret that cannot be
// read keeps the current one in service (counted by the caller): cookies
// stay valid a little longer, which is better than refusing every
// client.
func (s *secrets) rotate(now time.Time) error {
	e := s.epochOf(now)
	if e <= s.cur.epoch {
		return nil
	}
	n, err := s.fresh(e)
	if err != nil {
		return err
	}
	if e == s.cur.epoch+1 {
		s.prev = s.cur
	} else {
		s.prev = secret{}
	}
	s.cur = n
	return nil
}

// mac is a two-block CBC-MAC (fixed length, so sound) of the flow, the
// client's ISN and the MSS class under b.
func (s *secrets) mac(b cipher.Block, k *Key, isn, idx uint32) uint32 {
	copy(s.in[0:4], k.Client[:])
	copy(s.in[4:8], k.VIP[:])
	binary.BigEndian.PutUint16(s.in[8:], k.ClientPort)
	binary.BigEndian.PutUint16(s.in[10:], k.VIPPort)
	binary.BigEndian.PutUint32(s.in[12:], isn)
	b.Encrypt(s.out[:], s.in[:])
	s.out[0] ^= byte(idx)
	b.Encrypt(s.in[:], s.out[:])
	return binary.BigEndian.Uint32(s.in[:]) & cookieMACMask
}

// cookie returns the ISN of the SYN-ACK for a SYN of k with sequence
// number isn and MSS class idx.
func (s *secrets) cookie(k *Key, isn, idx uint32) uint32 {
	return uint32(s.cur.epoch&1)<<cookieEpochShift | idx<<cookieMSSShift | s.mac(s.cur.block, k, isn, idx)
}

// check validates cookie c for a SYN of k with sequence number isn and
// returns its MSS class.
func (s *secrets) check(k *Key, isn, c uint32) (idx uint32, ok bool) {
	parity := int64(c >> cookieEpochShift)
	idx = c >> cookieMSSShift & 7
	b := s.cur.block
	if s.cur.epoch&1 != parity {
		if s.prev.block == nil {
			return 0, false
		}
		b = s.prev.block
	}
	return idx, s.mac(b, k, isn, idx) == c&cookieMACMask
}
