package streams

import (
	"testing"
	"time"
)

// TestBackoff: waits double from the minimum to the maximum and never
// leave [d/2, d] of their step, so they are bounded and jittered.
func TestBackoff(t *testing.T) {
	lo, hi := 100*time.Millisecond, 5*time.Second
	for n := 1; n <= 40; n++ {
		step := lo << min(n-1, 10)
		step = min(step, hi)
		for range 50 {
			d := backoff(n, lo, hi)
			if d < step/2 || d > step {
				t.Fatalf("backoff(%d) = %v, want within [%v, %v]", n, d, step/2, step)
			}
		}
	}
	seen := map[time.Duration]bool{}
	for range 50 {
		seen[backoff(5, lo, hi)] = true
	}
	if len(seen) < 10 {
		t.Errorf("backoff(5) took %d values in 50 draws; no jitter?", len(seen))
	}
}
