package healthpb

import (
	"errors"
	"fmt"
	"sync"
	"time"
)

// Replay protection. Every frame carries its sender's sequence number and
// the time it was sent, both under the MAC. A receiver refuses a frame
// whose time is further than its freshness window from its own clock,
// and one whose sequence number it has already accepted from that sender
// or that lies below its window (Window). The window needs no state
// that survives a restart of the receiver: after one, a frame older than
// the freshness window is refused by its time, and a replay of a newer
// one can be accepted at most once, within that window.

// Errors of replay protection.
var (
	ErrReplay = errors.New("health: replayed or too old a sequence number")
	ErrStale  = errors.New("health: sent too long ago (or in the future): outside the freshness window")
)

// DefaultFreshness is how far a frame's time may be from the receiver's
// clock by default: generous for clocks kept by NTP, short enough that a
// captured datagram is soon useless.
const DefaultFreshness = 30 * time.Second

// Fresh checks a frame's send time against now.
func Fresh(h *Header, now time.Time, window time.Duration) error {
	d := now.Sub(time.UnixMilli(int64(h.Time)))
	if d > window || -d > window {
		return fmt.Errorf("%w: sent %s from now, window ±%s", ErrStale, d.Round(time.Millisecond), window)
	}
	return nil
}

// seqCounterBits is the low part of a sequence number: a counter within
// one epoch. The high part is the epoch: the sender's start time in
// milliseconds, so that a restarted sender's numbers are above the ones
// it sent before (as long as its clock did not step back), and the
// receiver needs to remember nothing across the sender's restart.
const seqCounterBits = 22

// Sequencer hands out a sender's sequence numbers. It is safe for
// concurrent use.
type Sequencer struct {
	mu   sync.Mutex
	next uint64
}

// NewSequencer starts a sender's numbering at the epoch of now.
func NewSequencer(now time.Time) *Sequencer {
	return &Sequencer{next: uint64(now.UnixMilli()) << seqCounterBits}
}

// Next returns the next number. When an epoch's counter runs out (4 Mi
// frames) the next epoch starts at the current time or one after the
// last, whichever is later.
func (s *Sequencer) Next(now time.Time) uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.next
	s.next++
	if s.next&(1<<seqCounterBits-1) == 0 {
		s.next = max(s.next, uint64(now.UnixMilli())<<seqCounterBits)
	}
	return n
}

// WindowSize is how far behind the newest accepted sequence number an
// unseen one is still accepted: frames overtake each other on the
// network, and a leader relays its members' heartbeats up to an interval
// after the members' direct messages.
const WindowSize = 1024

// Window is one sender's replay window (RFC 4303's sliding window): the
// newest accepted number and a bitmap of the WindowSize numbers below it.
type Window struct {
	top  uint64
	seen [WindowSize / 64]uint64
	used bool
}

// Admit records seq and reports whether it is new: above the newest, or
// within the window and not seen yet. Call it only for frames that are
// authentic and otherwise accepted, so that forgeries cannot move it.
func (w *Window) Admit(seq uint64) bool {
	if !w.used {
		w.used, w.top = true, seq
		w.seen = [WindowSize / 64]uint64{}
		w.set(seq)
		return true
	}
	if seq > w.top {
		shift := seq - w.top
		if shift >= WindowSize {
			w.seen = [WindowSize / 64]uint64{}
		} else {
			for i := w.top + 1; i <= seq; i++ {
				w.clear(i)
			}
		}
		w.top = seq
		w.set(seq)
		return true
	}
	if w.top-seq >= WindowSize || w.isSet(seq) {
		return false
	}
	w.set(seq)
	return true
}

func (w *Window) set(s uint64)        { w.seen[(s/64)%(WindowSize/64)] |= 1 << (s % 64) }
func (w *Window) clear(s uint64)      { w.seen[(s/64)%(WindowSize/64)] &^= 1 << (s % 64) }
func (w *Window) isSet(s uint64) bool { return w.seen[(s/64)%(WindowSize/64)]&(1<<(s%64)) != 0 }
