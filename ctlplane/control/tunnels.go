package control

import (
	"cmp"
	"encoding/binary"
	"net/netip"
	"slices"
	"sync"

	pb "github.com/tetherlb/tether/api/hostpb"
	"github.com/tetherlb/tether/api/unit"
	"github.com/tetherlb/tether/dataplane/channel"
	"github.com/tetherlb/tether/tables/encap"
)

// tunnels publishes the mappings of the unit's tunnel flows to their
// hosts over the host streams (seed S1 §9.5: the mapping reaches the host
// before the packets it restores), and lets the forwarder send a new
// flow's held packets once the host acknowledged its mapping.
//
// A flow's host is the one whose certificate names the flow's backend
// address as a tunnel address (hosts.Server.HostOf). Flows whose backend
// has no such host, or whose host's stream is down, are released at
// once: their packets reach a host that drops them (it has no mapping)
// and the client retransmits; holding them would only fill the
// forwarder's queue.
type tunnels struct {
	// order serialises the inventory's changes with the full syncs that
	// read it: a batch of flow events is published before the inventory
	// applies it, and a sync in between would undo the publication.
	order sync.Mutex
	// mu orders publishing and acknowledgements: a batch's keys are
	// recorded before its acknowledgement can be handled.
	mu      sync.Mutex
	pending map[uint32][]pendingBatch // by host, in sequence order
	stats   unit.TunnelStats
}

// pendingBatch is a published batch whose new flows wait for the host,
// or a Migrate (migration is its ID, not 0) whose flow does.
type pendingBatch struct {
	seq       uint64
	keys      []heldKey
	migration uint64
}

// heldKey names a flow whose packets the forwarder holds.
type heldKey struct {
	worker uint8
	key    unit.FlowKey
}

// hostChange is what one round of events changes for one host. A host
// applies a batch's removals before its additions, so a flow that both
// began and ended within the round must leave no addition behind.
type hostChange struct {
	add    []*pb.Mapping
	remove []uint32
	keys   []heldKey
}

// ended records that flow ID id ended: any addition of it earlier in the
// round goes, and the host forgets whatever it holds under id.
func (ch *hostChange) ended(id uint32) {
	ch.add = slices.DeleteFunc(ch.add, func(m *pb.Mapping) bool { return m.GetFlowId() == id })
	ch.remove = append(ch.remove, id)
}

// flowID is the 32-bit flow ID of a tunnel flow's action (B's first four
// bytes, as the forwarder writes it).
func flowID(a *unit.Action) uint32 { return binary.BigEndian.Uint32(a.B[:4]) }

// backendAddr is a flow's backend address (A), in its family.
func backendAddr(k *unit.FlowKey, a *unit.Action) netip.Addr {
	if k.V6 {
		return netip.AddrFrom16(a.A)
	}
	return netip.AddrFrom4([4]byte(a.A[:4]))
}

// mappingOf is the mapping a host needs for a tunnel flow: its flow ID
// and the packet the client sent.
func mappingOf(k *unit.FlowKey, id uint32) *pb.Mapping {
	t := &pb.Tuple{ClientPort: uint32(k.SrcPort), VipPort: uint32(k.DstPort)}
	switch k.Proto {
	case 6:
		t.Proto = pb.Proto_PROTO_TCP
	case 17:
		t.Proto = pb.Proto_PROTO_UDP
	}
	if k.V6 {
		t.Client, t.Vip = append([]byte(nil), k.Src[:]...), append([]byte(nil), k.Dst[:]...)
	} else {
		t.Client, t.Vip = append([]byte(nil), k.Src[:4]...), append([]byte(nil), k.Dst[:4]...)
	}
	return &pb.Mapping{FlowId: id, Tuple: t}
}

// tunnelEvents publishes what a batch of flow events changes for the
// hosts: new tunnel flows' mappings, and the removal of those that ended.
// Call it before the inventory applies the events (an ended flow's
// action is read from the inventory).
func (c *Control) tunnelEvents(lk *fwdLink, events []channel.FlowEvent) {
	if c.hosts == nil {
		return
	}
	var byHost map[uint32]*hostChange
	var now []heldKey
	for i := range events {
		e := &events[i]
		a := &e.Action
		switch e.Kind {
		case channel.FlowOpened:
		case channel.FlowExpired:
			old, ok := c.inv.get(e.Key)
			if !ok {
				continue
			}
			a = &old.Action
		default:
			continue
		}
		if a.Mode != unit.ModeTunnel {
			continue
		}
		if e.Kind == channel.FlowOpened && flowID(a) >= encap.FirstMigratedID {
			// A migrated connection's: its Migrate carried the
			// mapping, and its acknowledgement releases the flow
			// (awaitMigration).
			continue
		}
		host, up, ok := c.hosts.HostOf(backendAddr(&e.Key, a))
		if !ok {
			if e.Kind == channel.FlowOpened {
				now = append(now, heldKey{e.Worker, e.Key})
				c.tun.count(func(s *unit.TunnelStats) { s.NoHost++ })
			}
			continue
		}
		if byHost == nil {
			byHost = map[uint32]*hostChange{}
		}
		ch := byHost[host]
		if ch == nil {
			ch = &hostChange{}
			byHost[host] = ch
		}
		if e.Kind == channel.FlowExpired {
			ch.ended(flowID(a))
			continue
		}
		ch.add = append(ch.add, mappingOf(&e.Key, flowID(a)))
		if up {
			ch.keys = append(ch.keys, heldKey{e.Worker, e.Key})
		} else {
			now = append(now, heldKey{e.Worker, e.Key})
			c.tun.count(func(s *unit.TunnelStats) { s.HostDown++ })
		}
	}
	for host, ch := range byHost {
		c.publish(lk, host, ch)
	}
	c.release(lk, now)
}

// publish sends one host's change in batches and records the keys to
// release when the host acknowledges the last one.
func (c *Control) publish(lk *fwdLink, host uint32, ch *hostChange) {
	c.tun.mu.Lock()
	defer c.tun.mu.Unlock()
	add, remove := ch.add, ch.remove
	var seq uint64
	for first := true; first || len(add) > 0 || len(remove) > 0; first = false {
		na, nr := min(len(add), pb.MaxBatch), min(len(remove), pb.MaxBatch)
		s, err := c.hosts.Publish(host, add[:na], remove[:nr])
		if err != nil {
			// Only a mapping the forwarder should never make (a
			// protocol other than TCP or UDP) gets here.
			c.log.Warn().Err(err).Uint32("host", host).Msg("tunnel mappings not published")
			c.tun.stats.Refused += uint64(na)
		} else {
			c.tun.stats.Published += uint64(na)
			c.tun.stats.Removed += uint64(nr)
		}
		seq = s
		add, remove = add[na:], remove[nr:]
	}
	if len(ch.keys) > 0 {
		c.tun.pending[host] = append(c.tun.pending[host], pendingBatch{seq: seq, keys: ch.keys})
	}
}

// awaitMigration holds a migrated connection's flow k until host
// acknowledges seq, the Migrate that carried the flow's mapping, unless
// it has already: then it reports true, and the caller releases the flow
// and counts the migration uploaded itself.
func (c *Control) awaitMigration(host uint32, seq uint64, k heldKey, migration uint64) (acked bool) {
	c.tun.mu.Lock()
	defer c.tun.mu.Unlock()
	// onHostAck takes c.tun.mu after the server records the ack: an ack
	// this does not see here finds the entry there.
	if c.hosts.Acked(host) >= seq {
		return true
	}
	c.tun.pending[host] = addPending(c.tun.pending[host], pendingBatch{seq: seq, keys: []heldKey{k}, migration: migration})
	return false
}

// addPending puts b into p, which is in sequence order, after the
// entries of its seq or below: a batch published while b's Migrate was
// on its way may be there already with a later seq.
func addPending(p []pendingBatch, b pendingBatch) []pendingBatch {
	i, _ := slices.BinarySearchFunc(p, b.seq, func(e pendingBatch, seq uint64) int { return cmp.Compare(e.seq, seq+1) })
	return slices.Insert(p, i, b)
}

// takeAcked splits p, in sequence order, at an acknowledgement of seq:
// the flows to release and the migrations taken up to seq, and the rest.
func takeAcked(p []pendingBatch, seq uint64) (keys []heldKey, migrations []uint64, rest []pendingBatch) {
	n := 0
	for n < len(p) && p[n].seq <= seq {
		keys = append(keys, p[n].keys...)
		if p[n].migration != 0 {
			migrations = append(migrations, p[n].migration)
		}
		n++
	}
	return keys, migrations, p[n:]
}

// onHostAck releases the flows whose mappings host now holds, and tells
// the l7 part which migrations it took.
func (c *Control) onHostAck(host uint32, seq uint64) {
	c.tun.mu.Lock()
	keys, migrations, rest := takeAcked(c.tun.pending[host], seq)
	c.tun.pending[host] = rest
	c.tun.mu.Unlock()
	if len(migrations) > 0 {
		c.migrationsTaken(host, migrations)
	}
	if len(keys) == 0 {
		return
	}
	lk, err := c.current()
	if err != nil {
		return // the forwarder is gone; its held packets went with it
	}
	c.release(lk, keys)
}

// release lets the forwarder send the packets it holds for keys.
func (c *Control) release(lk *fwdLink, keys []heldKey) {
	for _, k := range keys {
		r := channel.Route{Op: channel.RouteRelease, Worker: k.worker, Key: k.key}
		if err := lk.route(&r); err != nil {
			c.log.Warn().Err(err).Msg("release held tunnel packets")
			return
		}
	}
	c.tun.count(func(s *unit.TunnelStats) { s.Released += uint64(len(keys)) })
}

// flowEvents hands a batch of the forwarder's flow events to the tunnels
// and the inventory, in that order, as one step against syncTunnels.
func (c *Control) flowEvents(lk *fwdLink, events []channel.FlowEvent) {
	c.tun.order.Lock()
	defer c.tun.order.Unlock()
	c.tunnelEvents(lk, events)
	c.migratedFlowsExpired(events)
	c.inv.apply(events)
	c.shareRoutes(events)
}

// hostKnown publishes the mappings of the flows toward a host whose
// stream begins (hosts.Options.OnHostKnown): a flow made before this
// process knew which host holds its backend's address (the host had not
// connected since it started) was released unpublished, and its host
// learns it now, in the stream's resync.
func (c *Control) hostKnown(host uint32) {
	lk, err := c.current()
	if err != nil {
		return // no forwarder, no flows; the first read syncs every host
	}
	c.syncTunnels(lk, &host)
}

// syncTunnels makes every host's set of mappings (or only one host's)
// that of the tunnel flows in the inventory: after the inventory was
// read from the forwarder (this process started, or events were lost),
// some flows may never have been published and some published ones may
// be gone. It returns how many tunnel flows it found whose host is not
// known (hostKnown publishes them when it is).
func (c *Control) syncTunnels(lk *fwdLink, only *uint32) (unknown int) {
	if c.hosts == nil {
		return 0
	}
	c.tun.order.Lock()
	defer c.tun.order.Unlock()
	want := map[uint32]map[uint32]*pb.Mapping{}
	for _, e := range c.inv.all() {
		if e.Action.Mode != unit.ModeTunnel {
			continue
		}
		host, _, ok := c.hosts.HostOf(backendAddr(&e.Key, &e.Action))
		if !ok {
			unknown++
			continue
		}
		if only != nil && host != *only {
			continue
		}
		if want[host] == nil {
			want[host] = map[uint32]*pb.Mapping{}
		}
		id := flowID(&e.Action)
		want[host][id] = mappingOf(&e.Key, id)
	}
	for _, host := range c.hosts.Hosts() {
		if want[host] == nil && (only == nil || host == *only) {
			want[host] = map[uint32]*pb.Mapping{}
		}
	}
	for host, set := range want {
		have := c.hosts.Table(host)
		ch := &hostChange{}
		for id, m := range set {
			if old, ok := have[id]; !ok || pb.MappingSum(old) != pb.MappingSum(m) {
				ch.add = append(ch.add, m)
			}
		}
		for id := range have {
			if _, ok := set[id]; !ok {
				ch.remove = append(ch.remove, id)
			}
		}
		if len(ch.add) > 0 || len(ch.remove) > 0 {
			c.publish(lk, host, ch)
		}
	}
	return unknown
}

// count changes the tunnel counters.
func (t *tunnels) count(fn func(*unit.TunnelStats)) {
	t.mu.Lock()
	fn(&t.stats)
	t.mu.Unlock()
}
