package healthpb

import (
	"errors"
	"fmt"
)

// Errors of identity: a frame that is authentic but says more than its
// sender may.
var (
	ErrNotYours   = errors.New("health: frame speaks for a host other than its sender")
	ErrNotGranted = errors.New("health: endpoint outside the sender's grant")
	ErrDirection  = errors.New("health: message not sent in this direction")
)

// CheckFromHost checks that a host's frame speaks only for that host:
// the header's sender is the host whose key signed it, every host ID in
// the message is that host, and, when granted is set (the receiver holds
// keys, so the grant in the header is authentic), every endpoint it
// names lies in the host's grant. Messages only units send are refused.
func CheckFromHost(env *Envelope, h *Header, granted bool) error {
	if h.FromUnit {
		return fmt.Errorf("%w: a unit's frame sent to a unit", ErrDirection)
	}
	if h.Sender != h.Host {
		return fmt.Errorf("%w: sender %d, key of host %d", ErrNotYours, h.Sender, h.Host)
	}
	own := func(what string, id uint32) error {
		if id != h.Host {
			return fmt.Errorf("%w: %s names host %d, sent by host %d", ErrNotYours, what, id, h.Host)
		}
		return nil
	}
	app := func(a *AppID) error {
		if granted && !h.Grant.Allows(a.GetEndpoint()) {
			return fmt.Errorf("%w: host %d reported %s, granted %s", ErrNotGranted, h.Host, a.GetEndpoint(), h.Grant)
		}
		return nil
	}
	switch b := env.GetBody().(type) {
	case *Envelope_Heartbeat:
		return own("heartbeat", b.Heartbeat.GetHost())
	case *Envelope_Goodbye:
		return own("goodbye", b.Goodbye.GetHost())
	case *Envelope_RowChange:
		if err := own("row_change", b.RowChange.GetHost()); err != nil {
			return err
		}
		for _, op := range b.RowChange.GetOps() {
			if err := app(op.GetRow().GetApp()); err != nil {
				return err
			}
		}
		return nil
	case *Envelope_SendSnapshot:
		if err := own("send_snapshot", b.SendSnapshot.GetHost()); err != nil {
			return err
		}
		for _, r := range b.SendSnapshot.GetRows() {
			if err := app(r.GetApp()); err != nil {
				return err
			}
		}
		return nil
	case *Envelope_Postulate:
		if err := own("postulate", b.Postulate.GetHost()); err != nil {
			return err
		}
		return app(b.Postulate.GetApp())
	case *Envelope_Aggregate:
		if err := own("aggregate", b.Aggregate.GetLeader()); err != nil {
			return err
		}
		return own("aggregate heartbeat", b.Aggregate.GetOwn().GetHost())
	}
	return fmt.Errorf("%w: %s from a host", ErrDirection, Kind(env))
}

// CheckFromUnit checks a unit's frame to host self: signed for self,
// and the unit it names is its sender.
func CheckFromUnit(env *Envelope, h *Header, self uint32) error {
	if !h.FromUnit {
		return fmt.Errorf("%w: %s from a host, not a unit", ErrDirection, Kind(env))
	}
	if h.Host != self {
		return fmt.Errorf("%w: addressed to host %d, this is %d", ErrNotYours, h.Host, self)
	}
	switch b := env.GetBody().(type) {
	case *Envelope_GetSnapshot:
		if b.GetSnapshot.GetUnit() != h.Sender {
			return fmt.Errorf("%w: get_snapshot names unit %d, sent by %d", ErrNotYours, b.GetSnapshot.GetUnit(), h.Sender)
		}
		return nil
	case *Envelope_PostulateWrong:
		w := b.PostulateWrong
		if w.GetUnit() != h.Sender || w.GetHost() != self {
			return fmt.Errorf("%w: postulate_wrong of unit %d about host %d, sent by unit %d", ErrNotYours, w.GetUnit(), w.GetHost(), h.Sender)
		}
		return nil
	}
	return fmt.Errorf("%w: %s from a unit", ErrDirection, Kind(env))
}
