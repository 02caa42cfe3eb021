package acceptor

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/tetherlb/tether/dataplane/header"
)

// A fuzz input is a script: records of an op byte, a 16-bit length and
// that many bytes of packet. The op's bits:
const (
	opCookie = 1 << 0 // make an ACK's cookie valid: send its SYN first, patch the ack
	opClock  = 7 << 1 // advance the clock by this × 700 ms first
	opExpire = 1 << 4 // call Expire after the packet
	opForget = 1 << 5 // Forget the packet's flow after it
	opAnswer = 1 << 6 // Answer 503 on the packet's flow after it
)

// script encodes packets and their ops as a fuzz input.
func script(steps ...any) []byte {
	var b []byte
	for i := 0; i+1 < len(steps); i += 2 {
		op, pkt := steps[i].(int), steps[i+1].([]byte)
		b = append(b, byte(op))
		b = binary.BigEndian.AppendUint16(b, uint16(len(pkt)))
		b = append(b, pkt...)
	}
	return b
}

// ipHeaderLen is the IP header length of a packet parse took.
func ipHeaderLen(pkt []byte) int {
	if pkt[0]>>4 == 6 {
		return header.IPv6Size
	}
	return header.IPv4(pkt).HeaderLength()
}

// synFor turns a copy of an IPv4/TCP or IPv6/TCP packet into the SYN
// that would have preceded it: same options, no payload, seq - 1.
func synFor(pkt []byte) []byte {
	var s seg
	if s.parse(pkt) != cNone {
		return nil
	}
	hl := ipHeaderLen(pkt)
	t := header.TCP(pkt[hl:])
	n := hl + t.DataOffset()
	syn := bytes.Clone(pkt[:n])
	if hl == header.IPv6Size {
		binary.BigEndian.PutUint16(syn[4:], uint16(n-hl))
	} else {
		binary.BigEndian.PutUint16(syn[2:], uint16(n))
	}
	binary.BigEndian.PutUint32(syn[hl+4:], s.seq-1)
	binary.BigEndian.PutUint32(syn[hl+8:], 0)
	syn[hl+13] = header.TCPFlagSYN
	return syn
}

// tsOffset returns the offset in a checked TCP header of the
// timestamps option's TSval, 0 without one.
func tsOffset(t []byte) int {
	end := header.TCP(t).DataOffset()
	for i := header.TCPMinSize; i < end; {
		switch t[i] {
		case header.TCPOptEnd:
			return 0
		case header.TCPOptNOP:
			i++
			continue
		}
		if i+1 >= end || t[i+1] < 2 {
			return 0
		}
		if t[i] == header.TCPOptTimestamps && t[i+1] == 10 && i+10 <= end {
			return i + 2
		}
		i += int(t[i+1])
	}
	return 0
}

func fuzzSeeds(t testing.TB) [][]byte {
	a := newTest(t, nil)
	c := newClient(t, a, 5000)
	syn := c.packet("S", c.isn, 0, nil, c.synOpts())
	ack := func(flags string, off uint32, p string) []byte {
		return c.packet(flags, c.isn+1+off, 0, []byte(p), c.dataOpts())
	}
	noTS := newClient(t, a, 5001)
	noTS.ts = false
	v6 := append([]byte{0x60}, make([]byte, 59)...)
	c6 := newClient6(t, a, 5002)
	ack6 := func(flags string, off uint32, p string) []byte {
		return c6.packet(flags, c6.isn+1+off, 0, []byte(p), c6.dataOpts())
	}
	return [][]byte{
		script(0, syn),
		script(opCookie, ack("PA", 0, request)),
		script(opCookie, ack("A", 0, ""), 0, ack("PA", 0, "GET / HT"), 0, ack("PA", 8, "TP/1.1\r\n\r\n"), opForget, ack("PA", 0, request)),
		script(opCookie, ack("PA", 0, "GET /"), 0, ack("FA", 5, ""), 0, ack("A", 6, "")),
		script(opCookie, ack("PA", 0, "GET /"), 0, ack("R", 5, "")),
		script(opCookie, ack("PA", 0, string(bytes.Repeat([]byte("x"), 600))), 0, ack("FA", 600, "")),
		script(opCookie, ack("PA", 0, "BAD\r\n"), 2*2, ack("PA", 0, "BAD\r\n"), opExpire|14, ack("A", 5, "")),
		script(opCookie|opAnswer, ack("PA", 0, request), 0, ack("PA", 0, request)),
		script(opCookie|6, noTS.packet("PA", noTS.isn+1, 0, []byte(request), nil)),
		script(0, ack("A", 0, ""), 0, ack("R", 0, "")),
		script(0, v6, 0, syn[:30], 0, []byte{}),
		script(0, c6.packet("S", c6.isn, 0, nil, c6.synOpts())),
		script(opCookie, ack6("PA", 0, request)),
		script(opCookie, ack6("PA", 0, "GET /"), 0, ack6("FA", 5, ""), opForget, ack6("A", 6, ""), 0, ack6("R", 6, "")),
		script(opCookie|opAnswer, ack6("PA", 0, request), 0, ack6("PA", 0, request)),
	}
}

// TestWriteSeeds keeps testdata/fuzz/FuzzHandle in step with the seeds.
func TestWriteSeeds(t *testing.T) {
	if os.Getenv("TETHER_WRITE_SEEDS") == "" {
		t.Skip("set TETHER_WRITE_SEEDS=1 to rewrite testdata/fuzz/FuzzHandle")
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzHandle")
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for i, b := range fuzzSeeds(t) {
		body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", b)
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("seed-%02d", i)), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// FuzzHandle: whatever arrives, the acceptor never panics, replies only
// with well-formed IPv4/TCP or IPv6/TCP packets whose checksums are right, stays
// within its memory bound and its counts, and every Ready it reports
// makes a Migrate that hostpb accepts.
func FuzzHandle(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		a := newTest(t, func(c *Config) { c.MaxConns = 4; c.MaxRequest = 512 })
		now := t0
		out := make([]byte, 0, MaxReply)
		check := func(what string, reply []byte) {
			if reply == nil {
				return
			}
			if _, err := checkReply(t, reply); err != nil {
				t.Fatalf("%s: reply %x: %v", what, reply, err)
			}
		}
		for len(in) >= 3 {
			op := int(in[0])
			n := min(int(binary.BigEndian.Uint16(in[1:])), len(in)-3)
			pkt := bytes.Clone(in[3 : 3+n])
			in = in[3+n:]
			now = now.Add(time.Duration(op&opClock>>1) * 700 * time.Millisecond)
			var s seg
			parsed := s.parse(pkt) == cNone
			if op&opCookie != 0 && parsed && s.flags&header.TCPFlagACK != 0 && s.flags&header.TCPFlagSYN == 0 {
				if syn := synFor(pkt); syn != nil {
					sa, _ := a.Handle(now, syn, out)
					check("SYN", sa)
					if sa != nil {
						hl, sl := ipHeaderLen(pkt), ipHeaderLen(sa)
						binary.BigEndian.PutUint32(pkt[hl+8:], binary.BigEndian.Uint32(sa[sl+4:])+1)
						// Echo the SYN-ACK's TSval, as a client does.
						if at, from := tsOffset(pkt[hl:]), tsOffset(sa[sl:]); at > 0 && from > 0 {
							copy(pkt[hl+at+4:hl+at+8], sa[sl+from:sl+from+4])
						}
					}
				}
			}
			reply, ev := a.Handle(now, pkt, out)
			check("Handle", reply)
			if ev.Kind == Ready {
				if err := validMigrate(ev); err != nil {
					t.Fatalf("Ready makes an invalid Migrate: %v", err)
				}
				if len(ev.Data) > 512 || ev.HeadLen > len(ev.Data) {
					t.Fatalf("Ready with %d bytes, head %d", len(ev.Data), ev.HeadLen)
				}
			}
			if parsed {
				if op&opForget != 0 {
					a.Forget(s.key, now)
				}
				if op&opAnswer != 0 {
					check("Answer", a.Answer(s.key, 503, now))
				}
			}
			if op&opExpire != 0 {
				a.Expire(now)
			}
			st := a.Stats()
			if st.BytesHeld > a.Bound() || st.Conns > 4 || st.Closing > 4 || st.Tombstones > 4 || st.Conns+st.Closing != len(a.conns) {
				t.Fatalf("over the bounds: %+v, bound %d, %d in the table", st, a.Bound(), len(a.conns))
			}
		}
	})
}
