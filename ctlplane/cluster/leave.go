package cluster

import (
	"encoding/binary"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/tetherlb/tether/api/unit"
)

// memberlist tells the event delegate that a node is gone, but not
// whether it left or was declared dead. So a unit that stops tells every
// live member first, over memberlist's encrypted stream (only members
// can send it), and then leaves:
//
//	+---------+-------------+--------------+
//	| msgLeave| boot ID (8) | name (rest)  |
//	+---------+-------------+--------------+
//
// A member gone with such a notice from its current boot left; any other
// failed. A notice that arrives after the member was already declared
// dead (the leave's own gossip overtook it) turns the failure into a
// leave.
const msgLeave = 1

// announceLeave sends the leave notice to every live member, in
// parallel, waiting at most timeout.
func (n *Node) announceLeave(timeout time.Duration) {
	n.mu.Lock()
	n.stopping = true
	n.mu.Unlock()
	msg := binary.BigEndian.AppendUint64([]byte{msgLeave}, n.self.boot)
	msg = append(msg, n.opts.Name...)
	var wg sync.WaitGroup
	for _, m := range n.ml.Members() {
		if m.Name == n.opts.Name {
			continue
		}
		wg.Add(1)
		go func(m *memberlist.Node) {
			defer wg.Done()
			if err := n.ml.SendReliable(m, msg); err != nil {
				n.log.Debug().Err(err).Str("member", m.Name).Msg("cluster: leave notice not sent")
			}
		}(m)
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(timeout):
	}
}

// leaving takes a member's leave notice.
func (n *Node) leaving(b []byte) {
	if len(b) < 10 || b[0] != msgLeave {
		return
	}
	boot, name := binary.BigEndian.Uint64(b[1:9]), string(b[9:])
	n.mu.Lock()
	m, ok := n.members[name]
	switch {
	case !ok || m.Boot != boot:
		// Not a member this unit knows (yet), or an old boot's notice.
	case m.State == unit.MemberDead:
		m.State = unit.MemberLeft
		n.events.Fails--
		n.events.Leaves++
	default:
		n.leavers[name] = boot
	}
	n.mu.Unlock()
}

// left says whether the gone node left (rather than failed), forgetting
// its notice.
func (n *Node) left(node *memberlist.Node) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if node.Name == n.opts.Name {
		return n.stopping
	}
	boot, ok := n.leavers[node.Name]
	delete(n.leavers, node.Name)
	m := n.members[node.Name]
	return ok && m != nil && m.Boot == boot
}
