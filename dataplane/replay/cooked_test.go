package replay

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"

	"github.com/tetherlb/tether/config"
)

// TestCookedCapturesReplayAsRawIP: the raw_ipv4_nat golden's packets,
// captured instead behind a Linux cooked header (SLL, SLL2: tcpdump -i
// any) or BSD's loopback header, with an ARP frame among them, replay
// to the golden's output and summary, the ARP frame counted as
// unreadable.
func TestCookedCapturesReplayAsRawIP(t *testing.T) {
	dir := filepath.Join("testdata", "raw_ipv4_nat")
	cfg, err := config.LoadFile(filepath.Join(dir, "config.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	in, err := os.ReadFile(filepath.Join(dir, "in.pcap"))
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile(filepath.Join(dir, "want.pcap"))
	if err != nil {
		t.Fatal(err)
	}
	wantTxt, err := os.ReadFile(filepath.Join(dir, "want.txt"))
	if err != nil {
		t.Fatal(err)
	}
	arp := []byte{0, 1, 8, 0, 6, 4, 0, 1}
	for _, c := range []struct {
		name string
		lt   layers.LinkType
		wrap func(ip []byte) []byte // nil: the ARP frame
	}{
		{"SLL", layers.LinkTypeLinuxSLL, func(ip []byte) []byte {
			h := make([]byte, 16)
			h[5] = 6
			binary.BigEndian.PutUint16(h[14:], 0x0806)
			if ip != nil {
				binary.BigEndian.PutUint16(h[14:], 0x0800)
			}
			return append(h, orARP(ip, arp)...)
		}},
		{"SLL2", layers.LinkTypeLinuxSLL2, func(ip []byte) []byte {
			h := make([]byte, 20)
			h[11] = 6
			binary.BigEndian.PutUint16(h, 0x0806)
			if ip != nil {
				binary.BigEndian.PutUint16(h, 0x0800)
			}
			return append(h, orARP(ip, arp)...)
		}},
		{"NULL", layers.LinkTypeNull, func(ip []byte) []byte {
			af := uint32(7)
			if ip != nil {
				af = 2
			}
			return append(binary.LittleEndian.AppendUint32(nil, af), orARP(ip, arp)...)
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			var b bytes.Buffer
			w := pcapgo.NewWriterNanos(&b)
			if err := w.WriteFileHeader(65536, c.lt); err != nil {
				t.Fatal(err)
			}
			write := func(f []byte, r record) {
				if err := w.WritePacket(gopacket.CaptureInfo{Timestamp: r.ts, CaptureLength: len(f), Length: len(f)}, f); err != nil {
					t.Fatal(err)
				}
			}
			for i, r := range readCapture(t, in) {
				if i == 1 {
					write(c.wrap(nil), r)
				}
				write(c.wrap(r.data), r)
			}
			port, _, out, summary := replayCapture(t, cfg, c.name, b.Bytes())
			got, wantFrames := readCapture(t, out), readCapture(t, want)
			if len(got) != len(wantFrames) {
				t.Fatalf("%d frames forwarded, the golden has %d", len(got), len(wantFrames))
			}
			for i := range got {
				if !bytes.Equal(got[i].data, wantFrames[i].data) || !got[i].ts.Equal(wantFrames[i].ts) {
					t.Fatalf("output frame %d differs from the golden's", i)
				}
			}
			// The golden's summary, with the ARP frame unreadable.
			first, rest, _ := strings.Cut(string(wantTxt), "\n")
			wantSummary := first + ", 1 unreadable (oversize, truncated by the capture, or not IP in a capture replayed as raw IP)\n" + rest
			if summary != wantSummary {
				t.Fatalf("summary\n%s\nwant\n%s", summary, wantSummary)
			}
			if port.NotIP() != 1 {
				t.Fatalf("%d frames not IP, want the ARP frame", port.NotIP())
			}
		})
	}
}

func orARP(ip, arp []byte) []byte {
	if ip == nil {
		return arp
	}
	return ip
}
