package atoms

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	grpcpeer "google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/tetherlb/tether/api/atompb"
	"github.com/tetherlb/tether/internal/mtls"
)

// server answers other units' streams (atompb.AtomsServer).
type server struct {
	atompb.UnimplementedAtomsServer
	m *Manager
}

var _ atompb.AtomsServer = (*server)(nil)

// inStream is a stream from another unit, cancelled when that unit
// leaves the cluster or restarts.
type inStream struct {
	boot   uint64
	cancel context.CancelFunc
}

// Exchange implements atompb.AtomsServer: it checks who calls (a unit
// certificate, a hello that repeats its name, a live member of that
// boot), then answers until the stream ends or the caller stops being
// a member.
func (s *server) Exchange(st atompb.Atoms_ExchangeServer) error {
	m := s.m
	name, err := unitOf(st.Context())
	if err != nil {
		m.refuse(RefusedIdentity, err)
		return status.Error(codes.Unauthenticated, err.Error())
	}
	ctx, cancel := context.WithCancel(st.Context())
	defer cancel()
	reqs := make(chan *atompb.Request)
	recvErr := make(chan error, 1)
	go func() {
		for {
			r, err := st.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			select {
			case reqs <- r:
			case <-ctx.Done():
				return
			}
		}
	}()
	var hello *atompb.Request
	select {
	case hello = <-reqs:
	case err := <-recvErr:
		return err
	case <-time.After(helloTimeout):
		return status.Error(codes.DeadlineExceeded, "no hello")
	}
	if err := atompb.ValidateRequest(hello); err != nil || hello.GetHello() == nil {
		if err == nil {
			err = fmt.Errorf("%w: first message is not a hello", atompb.ErrInvalid)
		}
		m.refuse(RefusedInvalid, err)
		return status.Error(codes.InvalidArgument, err.Error())
	}
	h := hello.GetHello()
	if h.GetUnit() != name {
		err := fmt.Errorf("hello names unit %q, certificate %q", h.GetUnit(), name)
		m.refuse(RefusedIdentity, err)
		return status.Error(codes.PermissionDenied, err.Error())
	}
	in := &inStream{boot: h.GetBoot(), cancel: cancel}
	if err := m.admit(name, in); err != nil {
		m.refuse(RefusedNotMember, err)
		return status.Error(codes.PermissionDenied, err.Error())
	}
	defer m.dismiss(name, in)
	for {
		var r *atompb.Request
		select {
		case r = <-reqs:
		case err := <-recvErr:
			return err
		case <-ctx.Done():
			return status.Error(codes.PermissionDenied, fmt.Sprintf("unit %q is no longer a member", name))
		}
		if err := atompb.ValidateRequest(r); err != nil {
			m.refuse(RefusedInvalid, err)
			return status.Error(codes.InvalidArgument, err.Error())
		}
		if err := m.answer(st, name, h.GetBoot(), r); err != nil {
			return err
		}
	}
}

// unitOf is the unit the stream's client certificate names.
func unitOf(ctx context.Context) (string, error) {
	p, ok := grpcpeer.FromContext(ctx)
	if !ok {
		return "", fmt.Errorf("no peer")
	}
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(ti.State.PeerCertificates) == 0 {
		return "", fmt.Errorf("no client certificate")
	}
	return mtls.UnitName(ti.State.PeerCertificates[0])
}

// admit registers a stream from name if it is a live member in the
// life its hello names.
func (m *Manager) admit(name string, in *inStream) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	mem, ok := m.live[name]
	switch {
	case name == m.opts.Self.Name:
		return fmt.Errorf("unit %q is this unit", name)
	case !ok:
		return fmt.Errorf("unit %q is not a live member", name)
	case mem.Boot != in.boot:
		return fmt.Errorf("unit %q is a member in boot %016x, not %016x", name, mem.Boot, in.boot)
	}
	if m.inbound[name] == nil {
		m.inbound[name] = map[*inStream]struct{}{}
	}
	m.inbound[name][in] = struct{}{}
	return nil
}

func (m *Manager) dismiss(name string, in *inStream) {
	m.mu.Lock()
	delete(m.inbound[name], in)
	if len(m.inbound[name]) == 0 {
		delete(m.inbound, name)
	}
	m.mu.Unlock()
}

// answer carries out one request from member name (of boot).
func (m *Manager) answer(st atompb.Atoms_ExchangeServer, name string, boot uint64, r *atompb.Request) error {
	reply := func(b any) error {
		out := &atompb.Reply{Version: atompb.Version}
		switch b := b.(type) {
		case *atompb.Ack:
			out.Body = &atompb.Reply_Ack{Ack: b}
		case *atompb.Return:
			out.Body = &atompb.Reply_Return{Return: b}
		}
		return st.Send(out)
	}
	switch b := r.GetBody().(type) {
	case *atompb.Request_Hello:
		err := fmt.Errorf("%w: a second hello", atompb.ErrInvalid)
		m.refuse(RefusedInvalid, err)
		return status.Error(codes.InvalidArgument, err.Error())
	case *atompb.Request_Add:
		m.mu.Lock()
		m.applyLocked(b.Add.GetAtoms())
		m.mu.Unlock()
		return reply(&atompb.Ack{Seq: b.Add.GetSeq()})
	case *atompb.Request_Delete:
		m.mu.Lock()
		exp := m.now().Add(m.opts.ZombieTime).UnixNano()
		for _, a := range b.Delete.GetAtoms() {
			if m.t.del(a.GetKey(), a.GetStamp(), a.GetAdder(), exp) == deleted {
				m.counts.Received++
			}
		}
		m.mu.Unlock()
		return reply(&atompb.Ack{Seq: b.Delete.GetSeq()})
	case *atompb.Request_Query:
		var found []*atompb.Atom
		m.mu.Lock()
		for _, k := range b.Query.GetKeys() {
			// A cache is not an answer: it may miss a delete.
			if e, ok := m.t.atoms[k]; ok && !e.cached {
				found = append(found, e.wire(k))
			}
		}
		m.mu.Unlock()
		return reply(&atompb.Return{Id: b.Query.GetId(), Atoms: found, Last: true})
	case *atompb.Request_Pull:
		m.mu.Lock()
		share := m.shareLocked(name)
		m.mu.Unlock()
		for {
			n := min(len(share), atompb.MaxBatch)
			if err := reply(&atompb.Return{Id: b.Pull.GetId(), Atoms: share[:n], Last: n == len(share)}); err != nil {
				return err
			}
			share = share[n:]
			if len(share) == 0 {
				return nil
			}
		}
	}
	return nil
}
