package pcapio

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"

	"github.com/tetherlb/tether/nic"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 123, time.UTC)

func capture(t *testing.T, lt layers.LinkType, frames ...[]byte) []byte {
	t.Helper()
	var b bytes.Buffer
	w := pcapgo.NewWriterNanos(&b)
	if err := w.WriteFileHeader(65536, lt); err != nil {
		t.Fatal(err)
	}
	for i, f := range frames {
		ci := gopacket.CaptureInfo{Timestamp: t0.Add(time.Duration(i) * time.Second), CaptureLength: len(f), Length: len(f)}
		if err := w.WritePacket(ci, f); err != nil {
			t.Fatal(err)
		}
	}
	return b.Bytes()
}

func readAll(t *testing.T, p *Port) []nic.Frame {
	t.Helper()
	var all []nic.Frame
	for {
		fr := make([]nic.Frame, 2)
		n, err := p.Receive(fr)
		all = append(all, fr[:n]...)
		if errors.Is(err, io.EOF) {
			return all
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

func TestRoundTrip(t *testing.T) {
	in := capture(t, layers.LinkTypeEthernet, []byte("frame-one-....."), []byte("frame-two"), []byte("three"))
	var out bytes.Buffer
	p, err := New("t", bytes.NewReader(in), &out)
	if err != nil {
		t.Fatal(err)
	}
	if p.LinkType() != nic.LinkEthernet {
		t.Fatalf("link %v", p.LinkType())
	}
	frames := readAll(t, p)
	if len(frames) != 3 || frames[1].Time != t0.Add(time.Second).UnixNano() {
		t.Fatalf("read %d frames, second at %d", len(frames), frames[1].Time)
	}
	if n, err := p.Transmit(frames); n != 3 || err != nil {
		t.Fatalf("Transmit = %d, %v", n, err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	r, err := pcapgo.NewReader(&out)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"frame-one-.....", "frame-two", "three"} {
		data, ci, err := r.ReadPacketData()
		if err != nil || string(data) != want {
			t.Fatalf("output frame %q, %v; want %q", data, err, want)
		}
		if ci.Timestamp.Before(t0) {
			t.Fatalf("output timestamp %v lost", ci.Timestamp)
		}
	}
}

func TestPcapngAndRawIP(t *testing.T) {
	var b bytes.Buffer
	w, err := pcapgo.NewNgWriter(&b, layers.LinkTypeRaw)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.WritePacket(gopacket.CaptureInfo{Timestamp: t0, CaptureLength: 3, Length: 3, InterfaceIndex: 0}, []byte{0x45, 0, 0}); err != nil {
		t.Fatal(err)
	}
	w.Flush()
	p, err := New("ng", &b, nil)
	if err != nil {
		t.Fatal(err)
	}
	if p.LinkType() != nic.LinkIP {
		t.Fatalf("raw IP capture read as %v", p.LinkType())
	}
	if got := readAll(t, p); len(got) != 1 || got[0].Data()[0] != 0x45 {
		t.Fatalf("read %v", got)
	}
}

func TestUnreadableInput(t *testing.T) {
	if _, err := New("sll", bytes.NewReader(capture(t, layers.LinkTypeLinuxSLL)), nil); err == nil || !strings.Contains(err.Error(), "not supported") {
		t.Fatalf("Linux SLL capture: %v", err)
	}
	for _, in := range [][]byte{nil, []byte("not a capture at all")} {
		if _, err := New("bad", bytes.NewReader(in), nil); err == nil {
			t.Fatalf("New accepted %q", in)
		}
	}
}

func TestTruncatedAndOversizeFramesAreSkipped(t *testing.T) {
	var b bytes.Buffer
	w := pcapgo.NewWriterNanos(&b)
	w.WriteFileHeader(65536, layers.LinkTypeEthernet)
	w.WritePacket(gopacket.CaptureInfo{Timestamp: t0, CaptureLength: 4, Length: 100}, []byte{1, 2, 3, 4})
	w.WritePacket(gopacket.CaptureInfo{Timestamp: t0, CaptureLength: 2, Length: 2}, []byte{5, 6})
	p, err := New("t", &b, nil)
	if err != nil {
		t.Fatal(err)
	}
	got := readAll(t, p)
	if len(got) != 1 || got[0].Data()[0] != 5 || p.Stats().RxDropped != 1 {
		t.Fatalf("got %d frames, %d dropped", len(got), p.Stats().RxDropped)
	}
}

// TestCaptureCutShort: a file that ends inside its last record delivers
// the records before it and says which record was lost, for both formats.
func TestCaptureCutShort(t *testing.T) {
	var b bytes.Buffer
	w := pcapgo.NewWriterNanos(&b)
	w.WriteFileHeader(65536, layers.LinkTypeEthernet)
	for i := range 3 {
		w.WritePacket(gopacket.CaptureInfo{Timestamp: t0, CaptureLength: 60, Length: 60}, bytes.Repeat([]byte{byte(i)}, 60))
	}
	whole := b.Bytes()
	for name, in := range map[string][]byte{
		"whole":                 whole,
		"cut in the last frame": whole[:len(whole)-10],
		"cut in its header":     whole[:len(whole)-60-8],
	} {
		p, err := New(name, bytes.NewReader(in), nil)
		if err != nil {
			t.Fatal(err)
		}
		got := readAll(t, p)
		want, cut := 3, uint64(0)
		if name != "whole" {
			want, cut = 2, 3
		}
		if len(got) != want || p.Truncated() != cut || p.Stats().RxDropped != cut/3 {
			t.Errorf("%s: %d frames, record %d cut, %d unreadable; want %d, %d, %d", name, len(got), p.Truncated(), p.Stats().RxDropped, want, cut, cut/3)
		}
	}
}

// FuzzReader: no capture file makes the port panic or lend a frame
// larger than MaxFrame.
func FuzzReader(f *testing.F) {
	var pc bytes.Buffer
	w := pcapgo.NewWriterNanos(&pc)
	w.WriteFileHeader(65536, layers.LinkTypeEthernet)
	w.WritePacket(gopacket.CaptureInfo{Timestamp: t0, CaptureLength: 14, Length: 14}, make([]byte, 14))
	f.Add(pc.Bytes())
	var ng bytes.Buffer
	if nw, err := pcapgo.NewNgWriter(&ng, layers.LinkTypeEthernet); err == nil {
		nw.WritePacket(gopacket.CaptureInfo{Timestamp: t0, CaptureLength: 14, Length: 14}, make([]byte, 14))
		nw.Flush()
		f.Add(ng.Bytes())
	}
	f.Add([]byte("garbage"))
	f.Fuzz(func(t *testing.T, in []byte) {
		p, err := New("f", bytes.NewReader(in), io.Discard)
		if err != nil {
			return
		}
		fr := make([]nic.Frame, 4)
		for range 1000 {
			n, err := p.Receive(fr)
			for i := range n {
				if fr[i].Len > MaxFrame {
					t.Fatalf("frame of %d bytes", fr[i].Len)
				}
			}
			p.Transmit(fr[:n])
			if err != nil {
				return
			}
		}
	})
}
