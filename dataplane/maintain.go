package dataplane

import "github.com/tetherlb/tether/tables/flow"

// Aging visits flow-table slots at a rate that covers the whole table once
// per sweepPeriod (milliseconds), whatever the packet rate, in steps of
// at most maxAgingStep slots so that one call never stalls the worker for
// long. A flow is removed at most one sweep period after its timeout.
const (
	sweepPeriod  = 2000
	maxAgingStep = 16384
)

// maintain runs the work a worker does between batches: flow aging and
// the expiry of held fragments.
func (p *Pipeline) maintain(now flow.Tick, out *Output) {
	if !p.started {
		p.started, p.lastMaint = true, now
	}
	if elapsed := now.Since(p.lastMaint); elapsed > 0 {
		v4, v6 := p.flows.Len()
		if v4+v6 > 0 {
			slots := uint64(p.cfg.Flows.MaxFlows) * 5 / 4
			p.maintDebt = min(p.maintDebt+slots*uint64(elapsed)/sweepPeriod+1, slots)
		}
		p.lastMaint = now
	}
	if p.maintDebt > 0 {
		step := min(p.maintDebt, maxAgingStep)
		p.flows.Expire(now, int(step))
		p.maintDebt -= step
	}
	if len(p.frags.held) > 0 {
		p.expireHeld(now, out)
	}
	if len(p.held) > 0 {
		p.expirePunts(now, out)
	}
}
