package e2e

import (
	"runtime"
	"testing"
)

// TestWakeRoundTrip: the probe measures a round trip on one core and,
// where there are two, across cores; a core that does not exist fails
// it at once, before any thread blocks.
func TestWakeRoundTrip(t *testing.T) {
	if d, err := WakeRoundTrip(0, 0); err != nil || d <= 0 {
		t.Fatalf("on core 0: %v, %v", d, err)
	}
	if runtime.NumCPU() > 1 {
		if d, err := WakeRoundTrip(0, 1); err != nil || d <= 0 {
			t.Fatalf("across cores 0 and 1: %v, %v", d, err)
		}
	}
	t.Logf("a thread's wake-up: %s", WakeTimes())
	if _, err := WakeRoundTrip(0, 4095); err == nil {
		t.Fatal("a probe on core 4095 did not fail")
	}
}
