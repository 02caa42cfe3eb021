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
