package nic

// Buffers are a port's own frame buffers, all of one size, each known by
// its index (a frame's Handle): those it receives into, and those Alloc
// lends. A port that embeds Buffers gets Alloc (Allocator) and Release
// (Port).
type Buffers struct {
	bufs [][]byte
	free []uint64 // a stack of free handles
}

// NewBuffers makes n buffers of size bytes each, headroom included.
func NewBuffers(n, size int) Buffers {
	b := Buffers{bufs: make([][]byte, n), free: make([]uint64, 0, n)}
	for i := range b.bufs {
		b.bufs[i] = make([]byte, size)
		b.free = append(b.free, uint64(i))
	}
	return b
}

// Alloc implements Allocator: a free buffer as an empty frame, its
// headroom in front.
func (b *Buffers) Alloc() (Frame, bool) {
	if len(b.free) == 0 {
		return Frame{}, false
	}
	h := b.free[len(b.free)-1]
	b.free = b.free[:len(b.free)-1]
	return Frame{Buf: b.bufs[h], Off: Headroom, Handle: h}, true
}

// Put frees the buffer of handle h.
func (b *Buffers) Put(h uint64) { b.free = append(b.free, h) }

// Release implements Port.Release: the frames' buffers are free again.
func (b *Buffers) Release(frames []Frame) {
	for i := range frames {
		b.free = append(b.free, frames[i].Handle)
	}
}

// Free returns how many buffers are free.
func (b *Buffers) Free() int { return len(b.free) }
