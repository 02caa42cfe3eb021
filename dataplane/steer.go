package dataplane

import (
	"encoding/binary"

	"github.com/tetherlb/tether/api/unit"
	"github.com/tetherlb/tether/dataplane/header"
	"github.com/tetherlb/tether/internal/mix"
	"github.com/tetherlb/tether/nic"
)

// Software RSS. When workers share one port queue, a dispatcher hands each
// frame to the worker that owns its flow. A symmetric 5-tuple hash is not
// enough for a load balancer: the reply of a translated flow has other
// addresses than the request. So the key is chosen by what the
// destination is:
//
//   - a SNAT address: the destination port, since worker w owns the SNAT
//     ports p with p mod workers = w (Pipeline.nextPort);
//   - a VIP: the client's address (the source), not its port, so that
//     the fragments of a datagram, which carry no ports, meet their first
//     fragment and its flow;
//   - anything else (half-NAT replies, going to the client): the
//     destination address, the same client address as the request's;
//   - an ICMP error: the key of the packet it quotes, turned around, so
//     the error meets the flow it is about.
//
// Malformed frames go to worker 0, which drops and counts them.

// Steerer picks workers for frames; each dispatcher owns one.
type Steerer struct {
	pk      packet
	workers int
}

// NewSteerer makes a steerer for n workers.
func NewSteerer(workers int) *Steerer { return &Steerer{workers: max(1, workers)} }

// Worker returns the index of the worker that owns f's flow under snap.
func (st *Steerer) Worker(snap *Snapshot, f *nic.Frame, link nic.LinkType) int {
	if st.workers == 1 {
		return 0
	}
	pk := &st.pk
	pk.frame = f
	parse(pk, link)
	switch pk.kind {
	case kindFlow:
		return st.tuple(snap, pk.src(), pk.dst(), pk.dport, true)
	case kindLater:
		return st.tuple(snap, pk.src(), pk.dst(), 0, false)
	case kindICMP:
		if q, why := parseQuote(pk); why == dropNone {
			qsrc, qdst := pk.quotedAddrs(&q)
			return st.tuple(snap, qdst, qsrc, binary.BigEndian.Uint16(pk.b[q.l4:]), true)
		}
		return st.tuple(snap, pk.src(), pk.dst(), 0, false)
	case kindOther:
		return st.tuple(snap, pk.src(), pk.dst(), 0, false)
	}
	return 0
}

func (st *Steerer) tuple(snap *Snapshot, src, dst []byte, dport uint16, ports bool) int {
	role := snap.roles[addrOf(dst)]
	switch {
	case role&roleSNAT != 0 && ports:
		return int(dport) % st.workers
	case role&roleVIP != 0:
		return int(addrHash(src) % uint64(st.workers))
	}
	return int(addrHash(dst) % uint64(st.workers))
}

// addrHash mixes an IPv4 or IPv6 address.
func addrHash(a []byte) uint64 {
	if len(a) == header.IPv4AddrSize {
		return mix.Fmix64(uint64(binary.BigEndian.Uint32(a)))
	}
	return mix.Fmix64(mix.Fmix64(binary.BigEndian.Uint64(a)) ^ binary.BigEndian.Uint64(a[8:]))
}

// KeyWorker returns the worker that owns the flow with key k (a route
// from the control process), by the same rules as Worker.
func (st *Steerer) KeyWorker(snap *Snapshot, k *unit.FlowKey) int {
	if st.workers == 1 {
		return 0
	}
	n := 4
	if k.V6 {
		n = 16
	}
	return st.tuple(snap, k.Src[:n], k.Dst[:n], k.DstPort, true)
}
