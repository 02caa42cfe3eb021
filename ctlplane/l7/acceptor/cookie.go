package acceptor

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/tetherlb/tether/dataplane/syncookie"
)

// The cookie itself (its MAC, the MSS classes, the options in the
// TSval, the SYN-ACK) is package syncookie's, shared with the
// forwarder's workers, which answer SYNs with the keys SYNKeys gives.

// tuple is k as package syncookie names a flow.
func (k *Key) tuple() *syncookie.Tuple { return (*syncookie.Tuple)(k) }

// secrets holds the previous, current and next epoch's keys. The next
// one is drawn a whole epoch early, so that a worker that holds it (see
// SYNKeys) answers with the key the acceptor will have when the epoch
// turns, whenever the control process gets to push keys again.
type secrets struct {
	src io.Reader
	// shared, when set, is what every epoch's secret is derived from
	// instead of drawn from src (Config.Shared).
	shared []byte
	every  time.Duration
	cur    syncookie.Key
	prev   syncookie.Key // Block nil: none
	next   syncookie.Key // Block nil: none (a secret could not be read)
	// mac holds the MAC's working blocks. The Acceptor's mutex guards
	// it.
	mac syncookie.MAC
	key [syncookie.KeySize]byte
}

func (s *secrets) epochOf(now time.Time) int64 { return syncookie.Epoch(now, s.every) }

func (s *secrets) fresh(epoch int64) (syncookie.Key, error) {
	if s.shared != nil {
		s.key = [syncookie.KeySize]byte(derive(s.shared, "epoch key", uint64(epoch)))
	} else if _, err := io.ReadFull(s.src, s.key[:]); err != nil {
		return syncookie.Key{}, fmt.Errorf("acceptor: read a cookie secret: %w", err)
	}
	k, err := syncookie.NewKey(epoch, s.key)
	if err != nil {
		return syncookie.Key{}, fmt.Errorf("acceptor: %w", err)
	}
	return k, nil
}

// rotate makes cur the secret of now's epoch (the one drawn ahead as
// next, when it is that epoch's), and draws the next one. A secret that
// cannot be read keeps the current one in service (counted by the
// caller): cookies stay valid a little longer, which is better than
// refusing every client.
func (s *secrets) rotate(now time.Time) error {
	e := s.epochOf(now)
	if e <= s.cur.Epoch {
		return nil
	}
	n := s.next
	if n.Block == nil || n.Epoch != e {
		var err error
		if n, err = s.fresh(e); err != nil {
			return err
		}
	}
	switch {
	case e == s.cur.Epoch+1:
		s.prev = s.cur
	case s.shared != nil:
		// The previous epoch's key is known even when this acceptor
		// did not hold it: another unit, or the process before, may
		// have made cookies with it.
		if p, err := s.fresh(e - 1); err == nil {
			s.prev = p
		}
	default:
		s.prev = syncookie.Key{}
	}
	s.cur = n
	var err error
	if s.next, err = s.fresh(e + 1); err != nil {
		s.next = syncookie.Key{}
		return err
	}
	return nil
}

// derive is HMAC-SHA256 of label and n under secret: the cookie keys
// and the TSval offset of acceptors that share a secret.
func derive(secret []byte, label string, n uint64) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte("tether l7 syn cookie " + label))
	m.Write(binary.BigEndian.AppendUint64(nil, n))
	return m.Sum(nil)
}

// check validates cookie c for a SYN of k with sequence number isn and
// returns its MSS class.
func (s *secrets) check(k *Key, isn, c uint32) (idx uint32, ok bool) {
	return s.mac.Check(&s.cur, &s.prev, k.tuple(), isn, c)
}

// SYNKeys is what a forwarder worker needs to answer the VIP's SYNs
// exactly as the acceptor would: the current epoch's key and the next
// one's, the timestamp offset and the SYN-ACK's own parameters. A worker
// answers with Cur while the clock is in Cur's epoch, with Next in the
// epoch after; the acceptor takes the cookies of either (see rotate).
type SYNKeys struct {
	Every     time.Duration
	Cur, Next syncookie.Key // Next.Block nil: none
	TSOffset  uint32
	Params    syncookie.Params
}

// SYNKeys turns the secrets to now's epoch and returns the keys a
// worker answers SYNs with; changed reports whether they differ from
// what the last call returned (a rotation). Send them to the forwarder
// when they change.
func (a *Acceptor) SYNKeys(now time.Time) (k SYNKeys, changed bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if err := a.sec.rotate(now); err != nil {
		a.count(cSecretErrors)
	}
	k = SYNKeys{Every: a.cfg.SecretEvery, Cur: a.sec.cur, Next: a.sec.next, TSOffset: a.tsOffset, Params: a.synParams()}
	e := exportedKeys{cur: k.Cur.Raw, next: k.Next.Raw, hasNext: k.Next.Block != nil, done: true}
	changed = e != a.exported
	a.exported = e
	return k, changed
}

// Adopt takes the keys a previous process's acceptor for the VIP gave
// the workers, read back from the forwarder this process adopted, so
// that the cookies of handshakes made before this process ran (by that
// acceptor, or by the workers, which go on answering SYNs while no
// control process runs) stay valid here: their clients' requests are
// taken rather than reset. Keys of another epoch length or other
// SYN-ACK parameters are refused, since a cookie's meaning depends on
// them, as are keys older than the previous epoch and keys offered to an
// acceptor that has answered a SYN or handed out keys of its own. A
// refusal changes nothing. Cookies of the epoch before the adopted
// keys' are lost: the forwarder never held that key.
func (a *Acceptor) Adopt(k SYNKeys, now time.Time) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	e := a.sec.epochOf(now)
	switch {
	case a.sec.shared != nil:
		return errors.New("acceptor: adopt keys: its keys are derived from a shared secret, the same as any process's")
	case a.exported.done || a.counters[cSYNCookiesSent] > 0 || a.counters[cAccepted] > 0:
		return errors.New("acceptor: adopt keys: it has answered with keys of its own")
	case k.Every != a.cfg.SecretEvery:
		return fmt.Errorf("acceptor: adopt keys: epochs of %v, not this acceptor's %v", k.Every, a.cfg.SecretEvery)
	case k.Params != a.synParams():
		return fmt.Errorf("acceptor: adopt keys: SYN-ACKs with %+v, not this acceptor's %+v", k.Params, a.synParams())
	case k.Cur.Block == nil || k.Next.Block != nil && k.Next.Epoch != k.Cur.Epoch+1:
		return errors.New("acceptor: adopt keys: no current key, or a next one of another epoch")
	case e == k.Cur.Epoch:
		next := k.Next
		if next.Block == nil {
			var err error
			if next, err = a.sec.fresh(e + 1); err != nil {
				return err
			}
		}
		a.sec.prev, a.sec.cur, a.sec.next = syncookie.Key{}, k.Cur, next
	case e == k.Cur.Epoch+1 && k.Next.Block != nil:
		next, err := a.sec.fresh(e + 1)
		if err != nil {
			return err
		}
		a.sec.prev, a.sec.cur, a.sec.next = k.Cur, k.Next, next
	default:
		return fmt.Errorf("acceptor: adopt keys: of epoch %d, the clock's is %d", k.Cur.Epoch, e)
	}
	a.tsOffset = k.TSOffset
	return nil
}

// synParams are the SYN-ACK's own options and window.
func (a *Acceptor) synParams() syncookie.Params {
	return syncookie.Params{MSS: uint16(a.cfg.MSS), WScale: uint8(a.cfg.WindowScale), Window: uint16(min(a.cfg.MaxRequest, 65535))}
}

// exportedKeys are the keys SYNKeys returned last.
type exportedKeys struct {
	cur, next     [syncookie.KeySize]byte
	hasNext, done bool
}
