package control

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/tetherlb/tether/api/unit"
)

// What the admin API (ctlplane/admin) serves, in the contract's types.

// Status reports the unit's state.
func (c *Control) Status(context.Context) unit.Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := unit.Status{Unit: c.file.Unit.Name, Config: c.opts.ConfigPath, Generation: c.ids.Generation, ControlPID: os.Getpid(),
		Uptime: time.Since(c.started).Round(time.Second).String(), Punts: c.punts, Flows: c.inv.len(),
		EventsLost: c.lost.Load(), States: maps.Clone(c.states)}
	s.Forwarder.Supervisor = c.sup
	if mgr := c.cl.atoms.Load(); mgr != nil {
		s.Cluster = &unit.ClusterStatus{}
		s.Cluster.Ready, s.Cluster.Members, s.Cluster.Atoms = mgr.Summary()
	}
	if c.link != nil {
		s.Forwarder.Connected, s.Forwarder.PID, s.Forwarder.Workers = true, c.link.hello.PID, c.link.hello.Workers
	}
	return s
}

// Report asks the forwarder for its counters, adding the inventory's
// connection counts per backend.
func (c *Control) Report(ctx context.Context) (unit.Report, []int, error) {
	var rep unit.Report
	lk, err := c.current()
	if err != nil {
		return rep, nil, err
	}
	if err := lk.call(ctx, unit.CallReport, nil, &rep); err != nil {
		return rep, nil, err
	}
	per := c.inv.perBackend()
	conns := make([]int, len(rep.Backends))
	for i, b := range rep.Backends {
		conns[i] = per[b.ID]
	}
	return rep, conns, nil
}

// Flows asks the forwarder for a page of flows.
func (c *Control) Flows(ctx context.Context, req unit.FlowsRequest) (unit.FlowsReply, error) {
	var reply unit.FlowsReply
	lk, err := c.current()
	if err != nil {
		return reply, err
	}
	err = lk.call(ctx, unit.CallFlows, req, &reply)
	return reply, err
}

// BackendID returns the forwarder's ID of a backend of the running
// configuration.
func (c *Control) BackendID(key unit.BackendKey) (uint32, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	id, ok := c.ids.Backends[key]
	return id, ok
}

// ConfigPath returns the configuration file this process reloads from,
// which is where the admin API writes a configuration it is given.
func (c *Control) ConfigPath() string { return c.opts.ConfigPath }

// Config returns the running configuration file.
func (c *Control) Config() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.raw
}

// Explain says which backend a flow from src to dst would get and why.
// The forwarder answers from its flow table and Maglev tables; for a
// punted VIP whose health source allots new connections, the control
// process decides by its allotment instead, and says so.
func (c *Control) Explain(ctx context.Context, proto string, src, dst netip.AddrPort) (unit.Explanation, error) {
	req := unit.ExplainRequest{Src: src, Dst: dst}
	switch strings.ToLower(proto) {
	case "tcp":
		req.Proto = 6
	case "udp":
		req.Proto = 17
	default:
		return unit.Explanation{}, fmt.Errorf("protocol %q: want tcp or udp", proto)
	}
	lk, err := c.current()
	if err != nil {
		return unit.Explanation{}, err
	}
	var e unit.Explanation
	if err := lk.call(ctx, unit.CallExplain, req, &e); err != nil {
		return e, err
	}
	if e.Existing || e.VIP == "" {
		return e, nil
	}
	c.mu.Lock()
	a := c.eval.Allotments[e.VIP]
	punt := false
	for i := range c.running.VIPs {
		if c.running.VIPs[i].Name == e.VIP {
			punt = c.running.VIPs[i].Punt
		}
	}
	c.mu.Unlock()
	if a != nil && punt {
		e.Reason += fmt.Sprintf("; but the control process decides this VIP's new flows from its allotment of %d tokens (tetherctl health shows the shares), so the backend may differ", a.Total)
	}
	return e, nil
}
