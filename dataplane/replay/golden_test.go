package replay

import (
	"bytes"
	"encoding/hex"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"

	"github.com/tetherlb/tether/config"
	"github.com/tetherlb/tether/internal/pkttest"
	"github.com/tetherlb/tether/nic/pcapio"
)

var update = flag.Bool("update", false, "rewrite testdata: config.yaml and in.pcap from the case definitions, want.pcap and want.txt from the pipeline")

// goldenCase is one directory of testdata: a configuration, the frames
// that go in (built here, stored as in.pcap so that tcpdump and
// `tetherd replay` can read them) and what must come out.
type goldenCase struct {
	name   string
	config string
	raw    bool // raw-IP capture instead of Ethernet
	frames func(c *config.Config) [][]byte
	// check asserts what the case is about, beyond matching the golden:
	// a golden rewritten with -update must still pass it.
	check func(t *testing.T, r *Result, in, out []record)
	// incomplete is how many fragmented datagrams the case means to
	// leave incomplete (pieces forwarded before the rest was refused).
	incomplete int
}

type record struct {
	data []byte
	ts   time.Time
}

// epoch is the timestamp of a case's first frame; frames follow 1 ms
// apart unless a case says otherwise.
var epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func TestGolden(t *testing.T) {
	for _, c := range goldenCases {
		t.Run(c.name, func(t *testing.T) { runGolden(t, &c) })
	}
}

// replayCapture replays the capture in through cfg and returns the port,
// the result, the output capture and the summary.
func replayCapture(t *testing.T, cfg *config.Config, name string, in []byte) (*pcapio.Port, *Result, []byte, string) {
	t.Helper()
	var out bytes.Buffer
	port, err := pcapio.New(name, bytes.NewReader(in), &out)
	if err != nil {
		t.Fatal(err)
	}
	res, err := Run(cfg, port)
	if err != nil {
		t.Fatal(err)
	}
	if err := port.Close(); err != nil {
		t.Fatal(err)
	}
	var summary strings.Builder
	if _, err := res.WriteTo(&summary); err != nil {
		t.Fatal(err)
	}
	return port, res, out.Bytes(), summary.String()
}

func runGolden(t *testing.T, c *goldenCase) {
	dir := filepath.Join("testdata", c.name)
	cfg, err := config.Parse([]byte(c.config))
	if err != nil {
		t.Fatalf("case config: %v", err)
	}
	in := writeCapture(t, c.frames(cfg), c.raw)
	if *update {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		mustWrite(t, filepath.Join(dir, "config.yaml"), []byte(c.config))
		mustWrite(t, filepath.Join(dir, "in.pcap"), in)
	} else {
		for name, want := range map[string][]byte{"config.yaml": []byte(c.config), "in.pcap": in} {
			got, err := os.ReadFile(filepath.Join(dir, name))
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("%s/%s does not match the case definition; rerun with -update", dir, name)
			}
		}
	}
	cfg, err = config.LoadFile(filepath.Join(dir, "config.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	_, res, out, summary := replayCapture(t, cfg, c.name, in)
	if *update {
		mustWrite(t, filepath.Join(dir, "want.pcap"), out)
		mustWrite(t, filepath.Join(dir, "want.txt"), []byte(summary))
	}
	got := readCapture(t, out)
	wantPcap, err := os.ReadFile(filepath.Join(dir, "want.pcap"))
	if err != nil {
		t.Fatal(err)
	}
	want := readCapture(t, wantPcap)
	for i := 0; i < len(got) || i < len(want); i++ {
		switch {
		case i >= len(got):
			t.Fatalf("output frame %d missing; want\n%s", i, hex.Dump(want[i].data))
		case i >= len(want):
			t.Fatalf("extra output frame %d:\n%s", i, hex.Dump(got[i].data))
		case !bytes.Equal(got[i].data, want[i].data) || !got[i].ts.Equal(want[i].ts):
			t.Fatalf("output frame %d differs\ngot %v\n%s\nwant %v\n%s", i, got[i].ts, hex.Dump(got[i].data), want[i].ts, hex.Dump(want[i].data))
		}
	}
	wantTxt, err := os.ReadFile(filepath.Join(dir, "want.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if summary != string(wantTxt) {
		t.Fatalf("summary differs\ngot:\n%s\nwant:\n%s", summary, wantTxt)
	}
	// Every forwarded frame must carry correct checksums, recomputed
	// independently of the dataplane.
	ck := &pkttest.Checker{Raw: c.raw}
	for i, r := range got {
		if err := ck.Check(r.data); err != nil {
			t.Errorf("output frame %d: %v\n%s", i, err, hex.Dump(r.data))
		}
	}
	if n := ck.Incomplete(); n != c.incomplete {
		t.Errorf("%d fragmented datagrams left the unit incomplete, want %d", n, c.incomplete)
	}
	// Every frame that went in is accounted for (a packet sent in
	// fragments left in several frames).
	s := &res.Stats
	if s.RxPackets != uint64(len(readCapture(t, in))) || s.RxPackets != s.Forwarded()+s.Passed()+s.Dropped() {
		t.Errorf("frames in %d != forwarded %d + passed %d + dropped %d", s.RxPackets, s.Forwarded(), s.Passed(), s.Dropped())
	}
	if c.check != nil {
		c.check(t, res, readCapture(t, in), got)
	}
}

func writeCapture(t *testing.T, frames [][]byte, raw bool) []byte {
	t.Helper()
	var b bytes.Buffer
	w := pcapgo.NewWriterNanos(&b)
	lt := layers.LinkTypeEthernet
	if raw {
		lt = layers.LinkTypeRaw
	}
	if err := w.WriteFileHeader(65536, lt); err != nil {
		t.Fatal(err)
	}
	for i, f := range frames {
		ci := gopacket.CaptureInfo{Timestamp: epoch.Add(time.Duration(i) * time.Millisecond), CaptureLength: len(f), Length: len(f)}
		if err := w.WritePacket(ci, f); err != nil {
			t.Fatal(err)
		}
	}
	return b.Bytes()
}

func readCapture(t *testing.T, b []byte) []record {
	t.Helper()
	r, err := pcapgo.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	var out []record
	for {
		data, ci, err := r.ReadPacketData()
		if err != nil {
			return out
		}
		out = append(out, record{data: append([]byte(nil), data...), ts: ci.Timestamp})
	}
}

func mustWrite(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}
