package afxdp

import (
	"fmt"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ring is one of the four shared rings: a producer and a consumer index
// (free-running u32 counters), a flags word and an array of entries,
// mapped from the socket. The kernel owns one index, we own the other.
type ring struct {
	mem      []byte
	producer *uint32
	consumer *uint32
	flags    *uint32
	desc     unsafe.Pointer
	mask     uint32
	size     uint32
	// cached copy of the index we own, published with a store-release
	cached uint32
}

func mapRing(fd int, off unix.XDPRingOffset, pgoff int64, size uint32, entry uintptr) (*ring, error) {
	length := int(off.Desc) + int(size)*int(entry)
	mem, err := unix.Mmap(fd, pgoff, length, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return nil, fmt.Errorf("mmap ring at %#x: %w", pgoff, err)
	}
	base := unsafe.Pointer(unsafe.SliceData(mem))
	return &ring{
		mem:      mem,
		producer: (*uint32)(unsafe.Add(base, off.Producer)),
		consumer: (*uint32)(unsafe.Add(base, off.Consumer)),
		flags:    (*uint32)(unsafe.Add(base, off.Flags)),
		desc:     unsafe.Add(base, off.Desc),
		mask:     size - 1,
		size:     size,
	}, nil
}

func (r *ring) unmap() {
	if r != nil && r.mem != nil {
		_ = unix.Munmap(r.mem)
		r.mem = nil
	}
}

// addr returns the i-th entry of a fill or completion ring (UMEM offsets).
func (r *ring) addr(i uint32) *uint64 {
	return (*uint64)(unsafe.Add(r.desc, uintptr(i&r.mask)*8))
}

// xdpDesc returns the i-th entry of an RX or TX ring.
func (r *ring) xdpDesc(i uint32) *unix.XDPDesc {
	return (*unix.XDPDesc)(unsafe.Add(r.desc, uintptr(i&r.mask)*unsafe.Sizeof(unix.XDPDesc{})))
}

// Producer side (fill, TX): free slots, then publish.
func (r *ring) free() uint32 {
	return r.size - (r.cached - atomic.LoadUint32(r.consumer))
}

func (r *ring) publish(n uint32) {
	r.cached += n
	atomic.StoreUint32(r.producer, r.cached)
}

// Consumer side (RX, completion): ready entries, then release.
func (r *ring) ready() uint32 {
	return atomic.LoadUint32(r.producer) - r.cached
}

func (r *ring) release(n uint32) {
	r.cached += n
	atomic.StoreUint32(r.consumer, r.cached)
}

func (r *ring) needWakeup() bool {
	return atomic.LoadUint32(r.flags)&unix.XDP_RING_NEED_WAKEUP != 0
}

func atomic32(p *uint32) uint32 { return atomic.LoadUint32(p) }
