package mix

import "testing"

// Reference values of MurmurHash3's fmix64 (computed independently, step
// by step, from the published constants).
func TestFmix64(t *testing.T) {
	for _, tc := range []struct{ in, want uint64 }{
		{0, 0},
		{1, 0xb456bcfc34c2cb2c},
		{0xffffffffffffffff, 0x64b5720b4b825f21},
	} {
		if got := Fmix64(tc.in); got != tc.want {
			t.Errorf("Fmix64(%#x) = %#x, want %#x", tc.in, got, tc.want)
		}
	}
}
