package dataplane

import (
	"testing"

	"github.com/tetherlb/tether/tables/flow"
)

// TestMaglevHashIsPinned fails when the backend-selection hash changes.
// Changing it moves flows between backends on upgrade and makes units of
// different versions disagree; do it only deliberately.
func TestMaglevHashIsPinned(t *testing.T) {
	k4 := flow.Key4{Src: [4]byte{203, 0, 113, 1}, Dst: [4]byte{192, 0, 2, 10}, SrcPort: 40000, DstPort: 80, Proto: 6}
	k6 := flow.Key6{Src: [16]byte{0x20, 0x01, 0x0d, 0xb8, 15: 1}, Dst: [16]byte{0x20, 0x01, 0x0d, 0xb8, 15: 0x10}, SrcPort: 40000, DstPort: 443, Proto: 17}
	if got, want := maglevHash4(&k4), uint64(0x2abb78d6f9f436e6); got != want {
		t.Errorf("maglevHash4 = %#x, want %#x", got, want)
	}
	if got, want := maglevHash6(&k6), uint64(0xc2166393c92cc067); got != want {
		t.Errorf("maglevHash6 = %#x, want %#x", got, want)
	}
}
