package replay

import (
	"errors"
	"io"

	"github.com/tetherlb/tether/config"
	"github.com/tetherlb/tether/dataplane"
	"github.com/tetherlb/tether/nic"
	"github.com/tetherlb/tether/tables/encap"
	"github.com/tetherlb/tether/tables/flow"
)

// Result is what a replay did.
type Result struct {
	dataplane.Summary
	// Tunnel holds the flow-ID mappings the worker made: what the hosts
	// need to restore tunneled packets.
	Tunnel *encap.Table
}

// Run replays every frame port yields through a single worker configured
// by c, transmitting to port what the worker forwards. Fragments still
// held at the end are dropped as if their timeout had passed, so every
// frame is accounted for.
func Run(c *config.Config, port nic.Port) (*Result, error) {
	snap, err := dataplane.Build(c, nil)
	if err != nil {
		return nil, err
	}
	pc := dataplane.ConfigFrom(c, 0, port.LinkType(), 0)
	// One worker, and a fixed table seed, whatever the configuration
	// says: a replay must not depend on how many cores the unit has.
	pc.Workers = 1
	p, err := dataplane.New(pc, snap)
	if err != nil {
		return nil, err
	}
	if a, ok := port.(nic.Allocator); ok {
		p.UseAllocator(a) // for packets sent in fragments
	}
	out := dataplane.NewOutput(&pc)
	frames := make([]nic.Frame, c.Forwarder.Batch)
	var t0 int64
	started := false
	var now flow.Tick
	flush := func() error {
		if len(out.TX) > 0 {
			if _, err := port.Transmit(out.TX); err != nil {
				return err
			}
		}
		port.Release(out.Pass)
		port.Release(out.Drop)
		out.Reset()
		return nil
	}
	for {
		n, rerr := port.Receive(frames)
		if n > 0 {
			if !started {
				t0, started = frames[0].Time, true
			}
			if d := frames[0].Time - t0; d > 0 {
				now = flow.Tick(d / 1e6)
			}
			p.Process(now, frames[:n], out)
			if err := flush(); err != nil {
				return nil, err
			}
		}
		if errors.Is(rerr, io.EOF) {
			break
		}
		if rerr != nil {
			return nil, rerr
		}
	}
	if p.HeldFragments() > 0 {
		p.Process(now+flow.Tick(pc.FragTimeout)+1, nil, out)
		if err := flush(); err != nil {
			return nil, err
		}
	}
	return &Result{Summary: p.Summary(port.Stats()), Tunnel: p.Tunnel()}, nil
}
