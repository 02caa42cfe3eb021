package e2e

import (
	"path/filepath"
	"runtime"
	"testing"
	"time"
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

// TestExclusive: a second taker of a held lock goes on without it once
// its wait is over; the lock is free again when its holder ends.
func TestExclusive(t *testing.T) {
	path := filepath.Join(t.TempDir(), "exclusive.lock")
	t.Run("holder", func(t *testing.T) {
		if !exclusive(t, path, time.Minute) {
			t.Fatal("a free lock was not taken")
		}
		t.Run("second", func(t *testing.T) {
			if exclusive(t, path, 100*time.Millisecond) {
				t.Fatal("a held lock was taken twice")
			}
		})
	})
	t.Run("after", func(t *testing.T) {
		if !exclusive(t, path, time.Minute) {
			t.Fatal("the lock was not free after its holder ended")
		}
	})
}
