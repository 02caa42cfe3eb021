package health

import (
	"sort"
	"time"
)

// Candidate is an endpoint of an application type as an allotment sees
// it.
type Candidate struct {
	Name string
	// Eligible: healthy and active, so it may take new connections.
	Eligible bool
	// Weight scales the endpoint's capacity (the operator's weight from
	// the unit's configuration; 1 by default).
	Weight float64
	// Capacity (0-99, relative among endpoints of the type) and Load (%
	// of capacity in use), as the host reports them.
	Capacity, Load uint32
}

// Available is the capacity a candidate has left: weight × capacity ×
// (100 − load)%. Ineligible candidates have none.
func (c Candidate) Available() float64 {
	if !c.Eligible || c.Load >= 100 {
		return 0
	}
	return c.Weight * float64(c.Capacity) * float64(100-c.Load) / 100
}

// Shares divides new connections among candidates in proportion to
// their available capacity (design S1, FIG. 18: "relative available
// capacity among healthy endpoints"). When every eligible candidate is
// full (or reports no capacity) they share equally in their weights:
// refusing every connection would be worse than overloading evenly.
// The result sums to 1, or is all 0 when nobody is eligible.
func Shares(cands []Candidate) []float64 {
	out := make([]float64, len(cands))
	var sum float64
	for i, c := range cands {
		out[i] = c.Available()
		sum += out[i]
	}
	if sum == 0 {
		for i, c := range cands {
			if c.Eligible {
				out[i] = c.Weight
				sum += c.Weight
			}
		}
	}
	if sum == 0 {
		return out
	}
	for i := range out {
		out[i] /= sum
	}
	return out
}

// Apportion splits total units among shares by the largest-remainder
// method: the parts sum to exactly total (when any share is above 0) and
// each differs from share×total by less than 1.
func Apportion(shares []float64, total int) []int {
	parts := make([]int, len(shares))
	type rem struct {
		i int
		r float64
	}
	var rems []rem
	given := 0
	for i, s := range shares {
		exact := s * float64(total)
		parts[i] = int(exact)
		given += parts[i]
		if s > 0 {
			rems = append(rems, rem{i, exact - float64(parts[i])})
		}
	}
	sort.SliceStable(rems, func(a, b int) bool { return rems[a].r > rems[b].r })
	for j := 0; given < total && len(rems) > 0; j = (j + 1) % len(rems) {
		parts[rems[j].i]++
		given++
	}
	return parts
}

// Allotment is a batch of new-connection assignments for one application
// type (S1's "target application endpoint allotment"): percentages for
// the forwarder's tables and tokens that punted decisions spend one at a
// time, both valid until Expires.
type Allotment struct {
	Names   []string
	Percent []float64 // 0-100
	Tokens  []int     // left to spend
	Total   int
	Issued  time.Time
	Expires time.Time
}

// NewAllotment allots total tokens over cands, valid for d from now.
func NewAllotment(cands []Candidate, total int, now time.Time, d time.Duration) *Allotment {
	shares := Shares(cands)
	a := &Allotment{Names: make([]string, len(cands)), Percent: make([]float64, len(cands)),
		Tokens: Apportion(shares, total), Total: total, Issued: now, Expires: now.Add(d)}
	for i, c := range cands {
		a.Names[i] = c.Name
		a.Percent[i] = shares[i] * 100
	}
	return a
}

// Take spends a token of the endpoint with the most left (ties to the
// first), which interleaves endpoints in proportion to their tokens. It
// returns false when the allotment is spent or stale: stale tokens are
// discarded, never spent on old health and load.
func (a *Allotment) Take(now time.Time) (int, bool) {
	if a == nil || !now.Before(a.Expires) {
		return 0, false
	}
	best := -1
	for i, t := range a.Tokens {
		if t > 0 && (best < 0 || t > a.Tokens[best]) {
			best = i
		}
	}
	if best < 0 {
		return 0, false
	}
	a.Tokens[best]--
	return best, true
}
