package ring

import (
	"bytes"
	"testing"

	"github.com/tetherlb/tether/nic"
)

func TestRingAccountsForEveryBuffer(t *testing.T) {
	p := New("t", nic.LinkEthernet, 4, nic.Headroom+100)
	for i := range 4 {
		if err := p.Inject([]byte{byte(i), 1, 2}, int64(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Inject([]byte{9}, 0); err == nil {
		t.Fatal("Inject succeeded with no free buffer")
	}
	frames := make([]nic.Frame, 8)
	n, err := p.Receive(frames)
	if err != nil || n != 4 {
		t.Fatalf("Receive = %d, %v", n, err)
	}
	for i := range n {
		if frames[i].Data()[0] != byte(i) || frames[i].Time != int64(i) || frames[i].Off != nic.Headroom {
			t.Fatalf("frame %d out of order or misplaced: %+v", i, frames[i])
		}
	}
	p.Transmit(frames[:2])
	p.Release(frames[2:4])
	if p.Free() != 2 {
		t.Fatalf("Free = %d after releasing 2", p.Free())
	}
	var got [][]byte
	p.Drain(func(d []byte, _ int64) { got = append(got, append([]byte(nil), d...)) })
	if len(got) != 2 || got[0][0] != 0 || got[1][0] != 1 {
		t.Fatalf("drained %v", got)
	}
	if p.Free() != 4 {
		t.Fatalf("Free = %d after draining, want 4", p.Free())
	}
	if err := p.Inject(bytes.Repeat([]byte{1}, 101), 0); err == nil {
		t.Fatal("an oversize frame was injected")
	}
	if s := p.Stats(); s.RxFrames != 4 || s.TxFrames != 2 || s.RxDropped != 2 {
		t.Fatalf("stats %+v", s)
	}
}

// TestAlloc: a lent buffer is an empty frame with headroom that the port
// sends like a received one and takes back when drained or released.
func TestAlloc(t *testing.T) {
	p := New("r", nic.LinkEthernet, 2, 256)
	f, ok := p.Alloc()
	if !ok || f.Len != 0 || f.Off != nic.Headroom || len(f.Buf) != 256 {
		t.Fatalf("Alloc = off %d len %d buf %d, %v", f.Off, f.Len, len(f.Buf), ok)
	}
	g, _ := p.Alloc()
	if _, ok := p.Alloc(); ok || p.Free() != 0 {
		t.Fatal("lent a third buffer of two")
	}
	f.Len = copy(f.Buf[f.Off:], "sent")
	p.Transmit([]nic.Frame{f})
	p.Release([]nic.Frame{g})
	var got []string
	p.Drain(func(d []byte, _ int64) { got = append(got, string(d)) })
	if len(got) != 1 || got[0] != "sent" || p.Free() != 2 {
		t.Fatalf("sent %q, %d buffers free; want the lent frame sent and both back", got, p.Free())
	}
}
