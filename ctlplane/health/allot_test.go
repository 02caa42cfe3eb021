package health

import (
	"math"
	"slices"
	"testing"
	"time"

	"github.com/tetherlb/tether/api/unit"
)

// TestSharesPaperExample: endpoints with 40%, 35% and 25% of the
// available capacity get 400, 350 and 250 of 1000 tokens (S1, FIG. 18
// and FIG. 30's app #1).
func TestSharesPaperExample(t *testing.T) {
	cands := []Candidate{
		{Key: unit.BackendKey{VIP: "app1", Backend: "ip1"}, Eligible: true, Weight: 1, Capacity: 80, Load: 50}, // 40 available
		{Key: unit.BackendKey{VIP: "app1", Backend: "ip2"}, Eligible: true, Weight: 1, Capacity: 70, Load: 50}, // 35
		{Key: unit.BackendKey{VIP: "app1", Backend: "ip3"}, Eligible: true, Weight: 1, Capacity: 50, Load: 50}, // 25
	}
	a := NewAllotment(cands, 1000, time.Unix(0, 0), time.Second)
	want := []int{400, 350, 250}
	for i, w := range want {
		if a.Tokens[i] != w || math.Abs(a.Percent[i]-float64(w)/10) > 1e-9 {
			t.Fatalf("%s: %d tokens, %.2f%%; want %d", a.Keys[i], a.Tokens[i], a.Percent[i], w)
		}
	}
}

func TestSharesRules(t *testing.T) {
	cases := []struct {
		name  string
		cands []Candidate
		want  []float64
	}{
		{"load lowers share", []Candidate{
			{Eligible: true, Weight: 1, Capacity: 50, Load: 90},
			{Eligible: true, Weight: 1, Capacity: 50, Load: 0}}, []float64{10.0 / 110, 100.0 / 110}},
		{"ineligible gets nothing", []Candidate{
			{Eligible: false, Weight: 1, Capacity: 50},
			{Eligible: true, Weight: 1, Capacity: 50}}, []float64{0, 1}},
		{"weight scales capacity", []Candidate{
			{Eligible: true, Weight: 3, Capacity: 50},
			{Eligible: true, Weight: 1, Capacity: 50}}, []float64{0.75, 0.25}},
		{"all full share by weight", []Candidate{
			{Eligible: true, Weight: 1, Capacity: 50, Load: 100},
			{Eligible: true, Weight: 2, Capacity: 50, Load: 100},
			{Eligible: false, Weight: 5, Capacity: 50}}, []float64{1.0 / 3, 2.0 / 3, 0}},
		{"nobody eligible", []Candidate{{Weight: 1, Capacity: 50}}, []float64{0}},
	}
	for _, c := range cases {
		got := Shares(c.cands)
		for i := range got {
			if math.Abs(got[i]-c.want[i]) > 1e-9 {
				t.Errorf("%s: shares %v, want %v", c.name, got, c.want)
				break
			}
		}
	}
}

func TestApportion(t *testing.T) {
	for _, total := range []int{1, 7, 10, 45, 100, 637, 1000} {
		shares := []float64{1.0 / 3, 1.0 / 3, 1.0 / 3}
		parts := Apportion(shares, total)
		sum := 0
		for i, p := range parts {
			sum += p
			if math.Abs(float64(p)-shares[i]*float64(total)) >= 1 {
				t.Fatalf("total %d: part %d off its share", total, p)
			}
		}
		if sum != total {
			t.Fatalf("total %d: parts %v sum to %d", total, parts, sum)
		}
	}
	if parts := Apportion([]float64{0, 0}, 10); parts[0]+parts[1] != 0 {
		t.Fatalf("zero shares got %v", parts)
	}
}

// TestTakeSpendsInProportion: tokens interleave in proportion from the
// first take on (every prefix of the takes is within one token of the
// shares), run out, and go stale.
func TestTakeSpendsInProportion(t *testing.T) {
	now := time.Unix(100, 0)
	for _, tokens := range [][]int{{3, 1}, {250, 750}, {1, 1, 8}, {0, 5}} {
		a := &Allotment{Tokens: slices.Clone(tokens), Expires: now.Add(time.Second)}
		total := 0
		for _, n := range tokens {
			total += n
		}
		got := make([]int, len(tokens))
		for k := 1; ; k++ {
			i, ok := a.Take(now)
			if !ok {
				if k-1 != total {
					t.Fatalf("%v: %d takes, want %d", tokens, k-1, total)
				}
				break
			}
			got[i]++
			for j, n := range tokens {
				if want := float64(k) * float64(n) / float64(total); math.Abs(float64(got[j])-want) > 1 {
					t.Fatalf("%v: after %d takes endpoint %d has %d, want %.1f±1", tokens, k, j, got[j], want)
				}
			}
		}
	}
	b := &Allotment{Tokens: []int{5}, Expires: now}
	if _, ok := b.Take(now); ok {
		t.Fatal("a stale token was spent")
	}
}
