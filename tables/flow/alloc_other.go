//go:build !linux

package flow

// hugeAlloc falls back to the Go heap where huge pages are not offered.
func hugeAlloc[T, O any](n int, owner *O) []T { return make([]T, n) }
