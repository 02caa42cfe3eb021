package nic

import "testing"

func TestFrameHeadroom(t *testing.T) {
	f := Frame{Buf: make([]byte, 200), Off: 40, Len: 100}
	if _, ok := f.Prepend(41); ok {
		t.Fatal("Prepend beyond the headroom succeeded")
	}
	b, ok := f.Prepend(40)
	if !ok || f.Off != 0 || f.Len != 140 || len(b) != 140 {
		t.Fatalf("Prepend(40): off %d len %d ok %v", f.Off, f.Len, ok)
	}
	if f.TrimFront(141) {
		t.Fatal("TrimFront beyond the frame succeeded")
	}
	if !f.TrimFront(20) || f.Off != 20 || f.Len != 120 || len(f.Data()) != 120 {
		t.Fatalf("TrimFront(20): off %d len %d", f.Off, f.Len)
	}
}

// TestBuffersLendEachOnce: every buffer is lent once until it comes back,
// with its headroom in front, and comes back by Put or Release.
func TestBuffersLendEachOnce(t *testing.T) {
	b := NewBuffers(3, Headroom+64)
	seen := map[uint64]bool{}
	var lent []Frame
	for {
		f, ok := b.Alloc()
		if !ok {
			break
		}
		if seen[f.Handle] || f.Off != Headroom || len(f.Buf) != Headroom+64 || f.Len != 0 {
			t.Fatalf("lent %+v (handle seen before: %v)", f, seen[f.Handle])
		}
		seen[f.Handle] = true
		lent = append(lent, f)
	}
	if len(lent) != 3 || b.Free() != 0 {
		t.Fatalf("lent %d of 3 buffers, %d left free", len(lent), b.Free())
	}
	b.Put(lent[0].Handle)
	b.Release(lent[1:])
	if b.Free() != 3 {
		t.Fatalf("%d free after all came back, want 3", b.Free())
	}
}
