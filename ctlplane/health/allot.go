package health

import (
	"slices"
	"sort"
	"time"

	"github.com/tetherlb/tether/api/unit"
)

// Candidate is an endpoint of an application type as an allotment sees
// it.
type Candidate struct {
	Key unit.BackendKey
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

// WeightScale is the sum of an allotment's weights: a share of 1 is this
// weight, fine enough that a 0.01% share still gets Maglev entries.
const WeightScale = 10000

// Allotment is a batch of new-connection assignments for one application
// type (S1's "target application endpoint allotment"), valid until
// Expires: each endpoint's share as a Maglev weight, which the forwarder
// gets as the backend's weight (the one representation of a weight from
// here to the Maglev table), and as tokens that punted decisions spend
// one at a time.
type Allotment struct {
	Keys    []unit.BackendKey
	Weights []int     // sum WeightScale (or all 0: nobody eligible)
	Percent []float64 // 0-100, for people
	Tokens  []int     // left to spend
	Total   int
	Issued  time.Time
	Expires time.Time
	// eligible marks the endpoints the allotment speaks for; the others
	// keep their configured weight (and take nothing new by their state).
	eligible []bool
	// issued is Tokens as the allotment was made, which Take spends in
	// proportion to.
	issued []int
}

// NewAllotment allots total tokens over cands, valid for d from now.
func NewAllotment(cands []Candidate, total int, now time.Time, d time.Duration) *Allotment {
	shares := Shares(cands)
	a := &Allotment{Keys: make([]unit.BackendKey, len(cands)), Weights: Apportion(shares, WeightScale),
		Percent: make([]float64, len(cands)), Tokens: Apportion(shares, total), Total: total, Issued: now, Expires: now.Add(d),
		eligible: make([]bool, len(cands))}
	for i, c := range cands {
		a.Keys[i], a.eligible[i] = c.Key, c.Eligible
		a.Percent[i] = shares[i] * 100
	}
	return a
}

// Weight returns the Maglev weight allotted to key, if key is an
// eligible endpoint of a (a may be nil).
func (a *Allotment) Weight(key unit.BackendKey) (int, bool) {
	if a == nil {
		return 0, false
	}
	for i, k := range a.Keys {
		if k == key {
			return a.Weights[i], a.eligible[i]
		}
	}
	return 0, false
}

// Take spends a token of the endpoint furthest behind its share (ties
// to the first): endpoint i's next token is due at (2·spent+1)/issued,
// and the earliest due goes first. This interleaves endpoints in
// proportion to their tokens from the first take on: with 250 and 750,
// every run of four takes gives one to the first and three to the
// second, where taking from the most tokens left would give the second
// its first 500 in a row. It returns false when the allotment is spent
// or stale: stale tokens are discarded, never spent on old health and
// load.
func (a *Allotment) Take(now time.Time) (int, bool) {
	if a == nil || !now.Before(a.Expires) {
		return 0, false
	}
	if a.issued == nil {
		a.issued = slices.Clone(a.Tokens)
	}
	best := -1
	due := func(i int) (num, den int) { return 2*(a.issued[i]-a.Tokens[i]) + 1, a.issued[i] }
	for i, t := range a.Tokens {
		if t <= 0 {
			continue
		}
		if best < 0 {
			best = i
			continue
		}
		// Compare the due fractions by cross-multiplying, in integers.
		n, d := due(i)
		bn, bd := due(best)
		if n*bd < bn*d {
			best = i
		}
	}
	if best < 0 {
		return 0, false
	}
	a.Tokens[best]--
	return best, true
}
