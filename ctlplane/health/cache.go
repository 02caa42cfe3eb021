package health

import (
	"net/netip"
	"sort"
	"time"

	pb "github.com/tetherlb/tether/api/healthpb"
)

// Host is one host's part of the consolidated cache: a copy of its
// health-and-load table, the integrity data to check the copy against,
// and what is needed to age it out and to ask it for a snapshot.
type Host struct {
	ID         uint32
	Name       string // DNS name or address from its heartbeats
	Port       uint32 // its agent's UDP port, from its heartbeats
	Source     netip.AddrPort
	Rows       map[string]*pb.Row // by pb.Key
	Sums       pb.Sums
	Generation uint64
	Interval   time.Duration // its heartbeat period
	LastHeard  time.Time
	// Leader is the group leader that last vouched for this host (0:
	// heard directly).
	Leader uint32
	// Grant is the endpoint grant of the host's key, from its frames;
	// this unit's frames to the host are signed with the key derived
	// for it.
	Grant pb.Grant
	// VouchLeader may keep this host alive until VouchUntil: the
	// host's own heartbeat said so (membership mode).
	VouchLeader uint32
	VouchUntil  time.Time
	// wanted and askedAt track an outstanding snapshot request.
	wanted  []uint32
	askedAt time.Time
}

// Cache is the consolidated health-and-load cache: rows of every host,
// indexed by host (to apply each host's updates) and by application type
// (to choose among the endpoints of one type). It is not safe for
// concurrent use; Server serialises access.
type Cache struct {
	hosts map[uint32]*Host
	// byType maps a pb.TypeKey to the hosts that have rows of that type
	// and how many each has.
	byType map[string]map[uint32]int
}

// NewCache returns an empty cache.
func NewCache() *Cache {
	return &Cache{hosts: map[uint32]*Host{}, byType: map[string]map[uint32]int{}}
}

// Host returns a host, or nil.
func (c *Cache) Host(id uint32) *Host { return c.hosts[id] }

// Len returns the number of hosts.
func (c *Cache) Len() int { return len(c.hosts) }

// touch returns the host, creating it if needed.
func (c *Cache) touch(id uint32) *Host {
	h := c.hosts[id]
	if h == nil {
		h = &Host{ID: id, Rows: map[string]*pb.Row{}}
		c.hosts[id] = h
	}
	return h
}

// put adds or replaces a row of host h.
func (c *Cache) put(h *Host, r *pb.Row) {
	k := pb.Key(r.GetApp())
	if old := h.Rows[k]; old != nil {
		h.Sums.Remove(old)
	} else {
		c.index(pb.TypeKey(r.GetApp()), h.ID, +1)
	}
	h.Rows[k] = r
	h.Sums.Add(r)
}

// del removes a row of host h; it reports whether there was one.
func (c *Cache) del(h *Host, app *pb.AppID) bool {
	k := pb.Key(app)
	old := h.Rows[k]
	if old == nil {
		return false
	}
	h.Sums.Remove(old)
	delete(h.Rows, k)
	c.index(pb.TypeKey(app), h.ID, -1)
	return true
}

// replaceChunks makes the listed chunks of h hold exactly rows.
func (c *Cache) replaceChunks(h *Host, chunks []uint32, rows []*pb.Row) {
	in := map[uint32]bool{}
	for _, ch := range chunks {
		in[ch] = true
	}
	for _, r := range h.Rows {
		if in[pb.ChunkOf(r.GetApp())] {
			c.del(h, r.GetApp())
		}
	}
	for _, r := range rows {
		c.put(h, r)
	}
}

// remove drops a host and all its rows.
func (c *Cache) remove(id uint32) bool {
	h := c.hosts[id]
	if h == nil {
		return false
	}
	for _, r := range h.Rows {
		c.index(pb.TypeKey(r.GetApp()), id, -1)
	}
	delete(c.hosts, id)
	return true
}

func (c *Cache) index(typ string, host uint32, delta int) {
	m := c.byType[typ]
	if m == nil {
		m = map[uint32]int{}
		c.byType[typ] = m
	}
	if m[host] += delta; m[host] <= 0 {
		delete(m, host)
		if len(m) == 0 {
			delete(c.byType, typ)
		}
	}
}

// Endpoint is one row of an application type, with the host holding it.
type Endpoint struct {
	Host uint32
	Row  *pb.Row
}

// OfType returns the endpoints of an application type across all hosts,
// ordered by host then endpoint.
func (c *Cache) OfType(typ string) []Endpoint {
	var out []Endpoint
	for id := range c.byType[typ] {
		for _, r := range c.hosts[id].Rows {
			if pb.TypeKey(r.GetApp()) == typ {
				out = append(out, Endpoint{Host: id, Row: r})
			}
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Host != out[j].Host {
			return out[i].Host < out[j].Host
		}
		return out[i].Row.GetApp().GetEndpoint() < out[j].Row.GetApp().GetEndpoint()
	})
	return out
}

// Types returns every application type in the cache, sorted.
func (c *Cache) Types() []string {
	out := make([]string, 0, len(c.byType))
	for t := range c.byType {
		out = append(out, t)
	}
	sort.Strings(out)
	return out
}

// HostIDs returns every host's ID, sorted.
func (c *Cache) HostIDs() []uint32 {
	out := make([]uint32, 0, len(c.hosts))
	for id := range c.hosts {
		out = append(out, id)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// Sorted returns the host's rows ordered by key.
func (h *Host) Sorted() []*pb.Row {
	keys := make([]string, 0, len(h.Rows))
	for k := range h.Rows {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([]*pb.Row, len(keys))
	for i, k := range keys {
		out[i] = h.Rows[k]
	}
	return out
}
