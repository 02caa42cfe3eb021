package control

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/tetherlb/tether/dataplane"
	"github.com/tetherlb/tether/forwarder"
)

// Status is the unit's state as tetherctl status shows it.
type Status struct {
	Unit       string            `json:"unit"`
	Config     string            `json:"config"`
	Generation uint64            `json:"generation"`
	ControlPID int               `json:"control_pid"`
	Uptime     string            `json:"uptime"`
	Forwarder  ForwarderStatus   `json:"forwarder"`
	Punts      puntStats         `json:"punts"`
	Flows      int               `json:"flows"` // connections in the inventory
	States     map[string]string `json:"backend_states,omitempty"`
	// Problem is set when the unit is not running a configuration at
	// all: tetherd run --rescue found its file missing or invalid and
	// serves only enough of the API to fix it. It says why.
	Problem string `json:"problem,omitempty"`
}

// ForwarderStatus is the forwarder process as the control process sees it.
type ForwarderStatus struct {
	Connected  bool            `json:"connected"`
	PID        uint32          `json:"pid,omitempty"`
	Workers    uint8           `json:"workers,omitempty"`
	Supervisor supervisorState `json:"supervisor"`
}

// Status reports the unit's state.
func (c *Control) Status(context.Context) Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := Status{Unit: c.cfg.Unit.Name, Config: c.opts.ConfigPath, Generation: c.snap.Generation, ControlPID: os.Getpid(),
		Uptime: time.Since(c.started).Round(time.Second).String(), Punts: c.punts, Flows: c.inv.len(),
		States: copyStates(c.states)}
	s.Forwarder.Supervisor = c.sup
	if c.link != nil {
		s.Forwarder.Connected, s.Forwarder.PID, s.Forwarder.Workers = true, c.link.hello.PID, c.link.hello.Workers
	}
	return s
}

// Report asks the forwarder for its counters, adding the inventory's
// connection counts per backend.
func (c *Control) Report(ctx context.Context) (dataplane.Report, []int, error) {
	var rep dataplane.Report
	lk, err := c.current()
	if err != nil {
		return rep, nil, err
	}
	if err := lk.call(ctx, "report", nil, &rep); err != nil {
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
func (c *Control) Flows(ctx context.Context, req forwarder.FlowsRequest) (forwarder.FlowsReply, error) {
	var reply forwarder.FlowsReply
	lk, err := c.current()
	if err != nil {
		return reply, err
	}
	err = lk.call(ctx, "flows", req, &reply)
	return reply, err
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

// Explanation says what a new flow would get, and why.
type Explanation struct {
	VIP       string `json:"vip,omitempty"`
	Mode      string `json:"mode,omitempty"`
	Backend   string `json:"backend,omitempty"`
	Reason    string `json:"reason"`
	Existing  bool   `json:"existing_flow"`
	Slot      uint32 `json:"maglev_slot,omitempty"`
	Rewritten string `json:"rewritten,omitempty"`
}

// Explain says which backend a flow from src to dst would get and why:
// an existing flow first, then the VIP's Maglev slot.
func (c *Control) Explain(ctx context.Context, proto string, src, dst netip.AddrPort) (Explanation, error) {
	var pn uint8
	switch strings.ToLower(proto) {
	case "tcp":
		pn = 6
	case "udp":
		pn = 17
	default:
		return Explanation{}, fmt.Errorf("protocol %q: want tcp or udp", proto)
	}
	c.mu.Lock()
	snap := c.snap
	c.mu.Unlock()
	v := snap.LookupVIP(dst.Addr(), dst.Port(), pn)
	if v == nil {
		return Explanation{Reason: fmt.Sprintf("%s is no VIP: the forwarder passes such packets to the host", dst)}, nil
	}
	e := Explanation{VIP: v.Name, Mode: v.Mode.String()}
	if page, err := c.Flows(ctx, forwarder.FlowsRequest{VIP: dst.String(), Client: src.Addr().String(), Backend: -1, Limit: forwarder.MaxFlowPage}); err == nil {
		for _, f := range page.Flows {
			if f.Key.SrcPort == src.Port() && f.Key.Proto == pn {
				for _, b := range snap.Backends {
					if b.ID == f.Action.Backend {
						e.Backend = b.Name
					}
				}
				e.Existing = true
				e.Reason = "an existing flow: its packets keep going where the first one went"
				e.Rewritten = rewritten(v.Mode, src, dst, f.Action.A[:], f.Action.PortA, f.Action.B[:], f.Action.PortB, src.Addr().Is4())
				return e, nil
			}
		}
	}
	bid, ok := v.Choose(src, pn)
	if !ok {
		e.Reason = "the VIP has no backend that takes new flows (all draining, inactive or weight 0): the packet is dropped as no_backend"
		return e, nil
	}
	b := snap.Backends[bid]
	e.Backend = b.Name
	e.Slot = v.Slot(src, pn)
	e.Reason = fmt.Sprintf("a new flow: Maglev slot %d of %d belongs to %s", e.Slot, v.Maglev.Size(), b.Name)
	if v.Punt {
		e.Reason += "; the VIP punts new flows, and the control process decides the same way"
	}
	ba := b.Addr.AsSlice()
	switch v.Mode {
	case dataplane.ModeNAT:
		e.Rewritten = fmt.Sprintf("%s:<SNAT port> > %s", "<SNAT address>", netip.AddrPortFrom(b.Addr, b.Port))
	case dataplane.ModeHalfNAT:
		e.Rewritten = rewritten(v.Mode, src, dst, ba, b.Port, src.Addr().AsSlice(), src.Port(), src.Addr().Is4())
	case dataplane.ModeTunnel:
		e.Rewritten = fmt.Sprintf("<unit address> > %s, both ports replaced by the flow ID", b.Addr)
	case dataplane.ModeIPIP:
		e.Rewritten = fmt.Sprintf("outer <unit address> > %s around %s > %s", b.Addr, src, dst)
	}
	return e, nil
}

func rewritten(m dataplane.Mode, src, dst netip.AddrPort, a []byte, pa uint16, b []byte, pb uint16, v4 bool) string {
	addr := func(x []byte) netip.Addr {
		if v4 {
			return netip.AddrFrom4([4]byte(x[:4]))
		}
		return netip.AddrFrom16([16]byte(x[:16]))
	}
	switch m {
	case dataplane.ModeNAT, dataplane.ModeHalfNAT:
		return fmt.Sprintf("%s > %s", netip.AddrPortFrom(addr(b), pb), netip.AddrPortFrom(addr(a), pa))
	case dataplane.ModeTunnel:
		return fmt.Sprintf("<unit address> > %s, ports replaced by flow ID %d", addr(a), uint32(b[0])<<24|uint32(b[1])<<16|uint32(b[2])<<8|uint32(b[3]))
	case dataplane.ModeIPIP:
		return fmt.Sprintf("outer <unit address> > %s around %s > %s", addr(a), src, dst)
	}
	return ""
}
