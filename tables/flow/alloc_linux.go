package flow

import (
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// hugeAlloc returns n zeroed slots in anonymous memory that the kernel is
// asked to back with transparent huge pages. A table of a million flows
// spans 50 MB; with 4 KiB pages nearly every lookup also misses the TLB
// and walks the page tables, which costs as much as the lookup's own
// cache miss. T must contain no Go pointers: the garbage collector does
// not scan this memory. The memory is unmapped when owner is collected.
func hugeAlloc[T, O any](n int, owner *O) []T {
	var zero T
	size := int(unsafe.Sizeof(zero)) * n
	if size < 2<<20 {
		// Small tables gain nothing from huge pages.
		return make([]T, n)
	}
	mem, err := unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return make([]T, n)
	}
	// Advice only: without THP support the memory still works.
	_ = unix.Madvise(mem, unix.MADV_HUGEPAGE)
	runtime.AddCleanup(owner, func(m []byte) { _ = unix.Munmap(m) }, mem)
	return unsafe.Slice((*T)(unsafe.Pointer(unsafe.SliceData(mem))), n)
}
