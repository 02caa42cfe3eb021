package hosts

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/rs/zerolog"
	"google.golang.org/protobuf/proto"

	pb "github.com/tetherlb/tether/api/hostpb"
	"github.com/tetherlb/tether/api/unit"
)

// seriesInput encodes batches as the fuzz target reads them: each a
// 2-byte big-endian length and an AgentMessage.
func seriesInput(batches ...*pb.Sessions) []byte {
	var out []byte
	for _, b := range batches {
		m, _ := proto.Marshal(&pb.AgentMessage{Version: pb.Version, Body: &pb.AgentMessage_Sessions{Sessions: b}})
		out = binary.BigEndian.AppendUint16(out, uint16(len(m)))
		out = append(out, m...)
	}
	return out
}

func seriesSeeds() map[string][]byte {
	up := func(ports ...uint32) []*pb.Session {
		var out []*pb.Session
		for _, p := range ports {
			out = append(out, tcpSession(p))
		}
		return out
	}
	return map[string][]byte{
		"resync-then-changes": seriesInput(
			&pb.Sessions{Resync: true, ResyncBegin: true, Up: up(1, 2)},
			&pb.Sessions{Resync: true, ResyncEnd: true, Count: 3, Up: up(3)},
			&pb.Sessions{Up: up(4), Down: up(1)}),
		"empty-resync":      seriesInput(&pb.Sessions{Resync: true, ResyncBegin: true, ResyncEnd: true}),
		"changes-first":     seriesInput(&pb.Sessions{Up: up(1)}),
		"twice-in-a-series": seriesInput(&pb.Sessions{Resync: true, ResyncBegin: true, Up: up(1)}, &pb.Sessions{Resync: true, ResyncEnd: true, Count: 2, Up: up(1)}),
	}
}

// FuzzSessionSeries: any sequence of batches on one stream, validated as
// the server validates them, never panics, and whatever reaches
// OnSessions keeps the promises: nothing before the stream's first
// resync, a resync whole (its count, each session once), changes with
// each session once.
func FuzzSessionSeries(f *testing.F) {
	for _, b := range seriesSeeds() {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		synced := false
		s := &Server{log: zerolog.Nop(), refused: map[string]uint64{}}
		s.opts.OnSessions = func(_ uint32, b SessionBatch) {
			if !b.Resync && !synced {
				t.Fatal("changes delivered before a resync")
			}
			if b.Resync && len(b.Down) > 0 {
				t.Fatal("a resync with sessions down")
			}
			seen := map[string]bool{}
			for _, x := range append(append([]*pb.Session(nil), b.Up...), b.Down...) {
				if pb.ValidSession(x) != nil {
					t.Fatal("an invalid session delivered")
				}
				if seen[pb.SessionID(x)] {
					t.Fatal("a session delivered twice in one batch")
				}
				seen[pb.SessionID(x)] = true
			}
			synced = synced || b.Resync
		}
		hs := &host{view: unit.HostStream{Host: 7}}
		var st sessionState
		for len(in) >= 2 {
			n := int(binary.BigEndian.Uint16(in))
			in = in[2:]
			if n > len(in) {
				return
			}
			var m pb.AgentMessage
			if proto.Unmarshal(in[:n], &m) != nil || pb.ValidateAgent(&m) != nil || m.GetSessions() == nil {
				return // the server ends the stream
			}
			in = in[n:]
			if s.sessions(7, hs, &st, m.GetSessions()) != nil {
				return
			}
		}
	})
}

// TestWriteSeriesCorpus rewrites testdata/fuzz/FuzzSessionSeries when
// HOSTS_WRITE_CORPUS is set.
func TestWriteSeriesCorpus(t *testing.T) {
	if os.Getenv("HOSTS_WRITE_CORPUS") == "" {
		t.Skip("HOSTS_WRITE_CORPUS not set")
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzSessionSeries")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, b := range seriesSeeds() {
		if err := os.WriteFile(filepath.Join(dir, name), fmt.Appendf(nil, "go test fuzz v1\n[]byte(%q)\n", b), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
