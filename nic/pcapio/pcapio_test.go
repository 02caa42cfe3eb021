package pcapio

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
	"github.com/klauspost/compress/zstd"

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
	if _, err := New("wifi", bytes.NewReader(capture(t, layers.LinkTypeIEEE80211Radio)), nil); err == nil || !strings.Contains(err.Error(), "not supported") {
		t.Fatalf("802.11 capture: %v", err)
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

// FuzzReader: no capture file, of any link type or mix of them,
// compressed or not, makes the port panic or lend a frame larger than
// MaxFrame.
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
	// Every other link type the port reads, and a pcapng file mixing two.
	for lt, frame := range map[layers.LinkType][]byte{
		layers.LinkTypeLinuxSLL:  cooked(false, 0x8100, append([]byte{0, 7, 0x08, 0x00}, ip4...)),
		layers.LinkTypeLinuxSLL2: cooked(true, 0x86dd, ip6),
		layers.LinkTypeNull:      loopback(binary.LittleEndian, 2, ip4),
		layers.LinkTypeLoop:      loopback(binary.BigEndian, 30, ip6),
	} {
		var b bytes.Buffer
		w := pcapgo.NewWriterNanos(&b)
		w.WriteFileHeader(65536, lt)
		w.WritePacket(gopacket.CaptureInfo{Timestamp: t0, CaptureLength: len(frame), Length: len(frame)}, frame)
		f.Add(b.Bytes())
	}
	var mixed bytes.Buffer
	if nw, err := pcapgo.NewNgWriter(&mixed, layers.LinkTypeRaw); err == nil {
		nw.AddInterface(pcapgo.NgInterface{LinkType: layers.LinkTypeEthernet, SnapLength: 65536})
		nw.WritePacket(gopacket.CaptureInfo{Timestamp: t0, CaptureLength: len(ip4), Length: len(ip4)}, ip4)
		nw.WritePacket(gopacket.CaptureInfo{Timestamp: t0, CaptureLength: 14, Length: 14, InterfaceIndex: 1}, make([]byte, 14))
		nw.Flush()
		f.Add(mixed.Bytes())
	}
	// Compressed: the pcap above, in gzip and in zstd.
	var gz bytes.Buffer
	gw := gzip.NewWriter(&gz)
	gw.Write(pc.Bytes())
	gw.Close()
	f.Add(gz.Bytes())
	if zw, err := zstd.NewWriter(nil); err == nil {
		f.Add(zw.EncodeAll(pc.Bytes(), nil))
		zw.Close()
	}
	f.Add([]byte("garbage"))
	f.Fuzz(func(t *testing.T, in []byte) {
		p, err := New("f", bytes.NewReader(in), io.Discard)
		if err != nil {
			return
		}
		defer p.Close()
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

// Two packets to deliver, an IPv4 and an IPv6 one (only their first
// bytes matter to the port), and a frame that is not IP.
var (
	ip4 = []byte{0x45, 0, 0, 20, 1, 2, 3, 4}
	ip6 = []byte{0x60, 0, 0, 0, 5, 6, 7, 8}
	arp = []byte{0, 1, 8, 0, 6, 4, 0, 1}
)

// cooked returns the packet behind a Linux cooked header (SLL, or SLL2
// when v2) with protocol et.
func cooked(v2 bool, et uint16, payload []byte) []byte {
	if v2 {
		h := make([]byte, 20)
		binary.BigEndian.PutUint16(h, et)
		h[11] = 6 // address length
		return append(h, payload...)
	}
	h := make([]byte, 16)
	binary.BigEndian.PutUint16(h[14:], et)
	h[5] = 6
	return append(h, payload...)
}

// loopback returns the packet behind a BSD loopback header: the family
// in order o.
func loopback(o binary.AppendByteOrder, af uint32, payload []byte) []byte {
	return append(o.AppendUint32(nil, af), payload...)
}

// TestCookedAndLoopbackCaptures: captures with Linux's cooked headers
// (tcpdump -i any) and BSD's loopback header are replayed as raw IP:
// the port delivers the IP packets (behind a VLAN tag too), counts what
// is not IP as unreadable without delivering it, and writes a raw IP
// capture.
func TestCookedAndLoopbackCaptures(t *testing.T) {
	vlan := append([]byte{0, 7, 0x08, 0x00}, ip4...) // tag 7, then IPv4
	for _, c := range []struct {
		name   string
		lt     layers.LinkType
		frames [][]byte
	}{
		{"SLL", layers.LinkTypeLinuxSLL, [][]byte{cooked(false, 0x0800, ip4), cooked(false, 0x0806, arp), cooked(false, 0x86dd, ip6), cooked(false, 0x8100, vlan)}},
		{"SLL2", layers.LinkTypeLinuxSLL2, [][]byte{cooked(true, 0x0800, ip4), cooked(true, 0x0806, arp), cooked(true, 0x86dd, ip6), cooked(true, 0x8100, vlan)}},
		{"NULL, little-endian host", layers.LinkTypeNull, [][]byte{loopback(binary.LittleEndian, 2, ip4), loopback(binary.LittleEndian, 7, arp), loopback(binary.LittleEndian, 30, ip6), loopback(binary.LittleEndian, 2, ip4)}},
		{"NULL, big-endian host", layers.LinkTypeNull, [][]byte{loopback(binary.BigEndian, 2, ip4), loopback(binary.BigEndian, 7, arp), loopback(binary.BigEndian, 24, ip6), loopback(binary.BigEndian, 2, ip4)}},
		{"LOOP", layers.LinkTypeLoop, [][]byte{loopback(binary.BigEndian, 2, ip4), loopback(binary.BigEndian, 7, arp), loopback(binary.BigEndian, 28, ip6), loopback(binary.BigEndian, 2, ip4)}},
	} {
		var out bytes.Buffer
		p, err := New(c.name, bytes.NewReader(capture(t, c.lt, c.frames...)), &out)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if p.LinkType() != nic.LinkIP {
			t.Fatalf("%s: read as %v, want raw IP", c.name, p.LinkType())
		}
		got := readAll(t, p)
		want := [][]byte{ip4, ip6, ip4}
		if len(got) != len(want) {
			t.Fatalf("%s: %d frames delivered, want %d", c.name, len(got), len(want))
		}
		for i, w := range want {
			if !bytes.Equal(got[i].Data(), w) {
				t.Errorf("%s: frame %d is % x, want % x", c.name, i, got[i].Data(), w)
			}
		}
		if st := p.Stats(); st.RxDropped != 1 || p.NotIP() != 1 || st.RxFrames != 3 {
			t.Errorf("%s: %d delivered, %d unreadable, %d not IP; want 3, 1, 1", c.name, st.RxFrames, st.RxDropped, p.NotIP())
		}
		p.Transmit(got)
		if err := p.Close(); err != nil {
			t.Fatal(err)
		}
		r, err := pcapgo.NewReader(&out)
		if err != nil {
			t.Fatal(err)
		}
		if r.LinkType() != layers.LinkTypeRaw {
			t.Errorf("%s: output capture of link type %v, want raw IP", c.name, r.LinkType())
		}
		if data, _, err := r.ReadPacketData(); err != nil || !bytes.Equal(data, ip4) {
			t.Errorf("%s: first output frame % x, %v", c.name, data, err)
		}
	}
}

// TestPcapngMixedLinkTypes: a pcapng file whose interfaces have
// different link types delivers every frame in the first interface's:
// a raw IP packet gets an Ethernet header without addresses, an
// Ethernet frame loses its header (and tags) or, not IP, is counted
// unreadable. Before, frames of the other interfaces were skipped
// without a count.
func TestPcapngMixedLinkTypes(t *testing.T) {
	eth := func(et uint16, payload []byte) []byte {
		h := make([]byte, 14)
		copy(h, []byte{2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2})
		binary.BigEndian.PutUint16(h[12:], et)
		return append(h, payload...)
	}
	write := func(first, second layers.LinkType, frames ...[]byte) *Port {
		t.Helper()
		var b bytes.Buffer
		w, err := pcapgo.NewNgWriter(&b, first)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.AddInterface(pcapgo.NgInterface{LinkType: second, SnapLength: 65536}); err != nil {
			t.Fatal(err)
		}
		for i, f := range frames {
			ci := gopacket.CaptureInfo{Timestamp: t0, CaptureLength: len(f), Length: len(f), InterfaceIndex: i % 2}
			if err := w.WritePacket(ci, f); err != nil {
				t.Fatal(err)
			}
		}
		w.Flush()
		p, err := New("mixed", &b, nil)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	check := func(name string, p *Port, link nic.LinkType, want [][]byte, notIP uint64) {
		t.Helper()
		if p.LinkType() != link {
			t.Fatalf("%s: read as %v, want %v", name, p.LinkType(), link)
		}
		got := readAll(t, p)
		if len(got) != len(want) {
			t.Fatalf("%s: %d frames delivered, want %d", name, len(got), len(want))
		}
		for i, w := range want {
			if !bytes.Equal(got[i].Data(), w) {
				t.Errorf("%s: frame %d is % x, want % x", name, i, got[i].Data(), w)
			}
		}
		if p.NotIP() != notIP || p.Stats().RxDropped != notIP {
			t.Errorf("%s: %d not IP, %d unreadable; want %d", name, p.NotIP(), p.Stats().RxDropped, notIP)
		}
	}
	// Frames alternate between the interfaces: even on the first.
	check("Ethernet first", write(layers.LinkTypeEthernet, layers.LinkTypeRaw, eth(0x0806, arp), ip6, eth(0x0800, ip4), ip4),
		nic.LinkEthernet, [][]byte{eth(0x0806, arp), append(make([]byte, 12), append([]byte{0x86, 0xdd}, ip6...)...), eth(0x0800, ip4), append(make([]byte, 12), append([]byte{0x08, 0x00}, ip4...)...)}, 0)
	tagged := eth(0x8100, append([]byte{0, 7, 0x86, 0xdd}, ip6...))
	check("raw IP first", write(layers.LinkTypeRaw, layers.LinkTypeEthernet, ip4, eth(0x0806, arp), ip6, tagged, ip4, eth(0x0800, ip4)),
		nic.LinkIP, [][]byte{ip4, ip6, ip6, ip4, ip4}, 1)
}

// TestCompressedCaptures: a pcap or pcapng capture compressed with gzip
// or zstd reads as the capture itself; a compressed stream that is not
// a capture, or is cut short, is refused or cut as an uncompressed one
// would be.
func TestCompressedCaptures(t *testing.T) {
	frames := [][]byte{[]byte("frame-one-....."), []byte("frame-two")}
	var ng bytes.Buffer
	nw, err := pcapgo.NewNgWriter(&ng, layers.LinkTypeEthernet)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range frames {
		nw.WritePacket(gopacket.CaptureInfo{Timestamp: t0, CaptureLength: len(f), Length: len(f)}, f)
	}
	nw.Flush()
	gz := func(b []byte) []byte {
		var out bytes.Buffer
		w := gzip.NewWriter(&out)
		w.Write(b)
		w.Close()
		return out.Bytes()
	}
	zst := func(b []byte) []byte {
		w, err := zstd.NewWriter(nil)
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close()
		return w.EncodeAll(b, nil)
	}
	for name, raw := range map[string][]byte{"pcap": capture(t, layers.LinkTypeEthernet, frames...), "pcapng": ng.Bytes()} {
		for kind, in := range map[string][]byte{"gzip": gz(raw), "zstd": zst(raw)} {
			p, err := New(name+"."+kind, bytes.NewReader(in), nil)
			if err != nil {
				t.Fatalf("%s %s: %v", kind, name, err)
			}
			got := readAll(t, p)
			if len(got) != len(frames) || string(got[1].Data()) != "frame-two" || p.LinkType() != nic.LinkEthernet {
				t.Errorf("%s %s: read %d frames", kind, name, len(got))
			}
			if err := p.Close(); err != nil {
				t.Fatal(err)
			}
			cut, err := New(name+"."+kind+" cut short", bytes.NewReader(in[:len(in)*3/4]), nil)
			if err != nil {
				continue // cut inside the capture's header
			}
			if got := readAll(t, cut); len(got) >= len(frames) {
				t.Errorf("%s %s cut short: read all %d frames", kind, name, len(got))
			}
			cut.Close()
		}
	}
	for kind, in := range map[string][]byte{"gzip": gz([]byte("not a capture at all")), "zstd": zst([]byte("not a capture at all"))} {
		if _, err := New(kind, bytes.NewReader(in), nil); err == nil {
			t.Errorf("a %s stream that is not a capture was accepted", kind)
		}
	}
}
