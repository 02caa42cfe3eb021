package afxdp

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/tetherlb/tether/internal/nstest"
	"github.com/tetherlb/tether/internal/pkttest"
)

// BenchmarkProgram times the redirect program on one frame of each kind
// it decides (BPF_PROG_TEST_RUN, repeated in the kernel): a packet to a
// VIP, a half-NAT backend's reply, and a packet of the unit's own
// traffic, which it passes. The maps are filled directly, so that the
// benchmark runs unchanged against earlier versions of the program.
func BenchmarkProgram(b *testing.B) {
	nstest.Require(b)
	m, err := newMaps(1)
	if err != nil {
		b.Fatal(err)
	}
	defer m.close()
	prog, err := loadProgram(m)
	if err != nil {
		b.Fatal(err)
	}
	defer prog.Close()
	vip := netip.MustParseAddr("192.0.2.10").As4()
	if err := m.dst4.Put(vip, uint8(1)); err != nil {
		b.Fatal(err)
	}
	var src [src4KeySize]byte
	be := netip.MustParseAddr("10.0.0.10").As4()
	copy(src[:], be[:])
	binary.BigEndian.PutUint16(src[4:], 8080)
	src[6] = 6
	if err := m.src4.Put(src, uint8(1)); err != nil {
		b.Fatal(err)
	}
	const mac = "02:00:00:00:00:01"
	ep := func(s string) pkttest.Endpoint { return pkttest.EP(mac, s) }
	o := pkttest.Opts{Payload: make([]byte, 1400)}
	for _, c := range []struct {
		name  string
		frame []byte
	}{
		{"vip", pkttest.TCP(ep("10.0.1.2:40000"), ep("192.0.2.10:80"), pkttest.ACK, 1, 1, o)},
		{"halfnat-reply", pkttest.TCP(ep("10.0.0.10:8080"), ep("10.0.1.2:40000"), pkttest.ACK, 1, 1, o)},
		{"other", pkttest.TCP(ep("10.0.0.11:22"), ep("10.0.0.1:40000"), pkttest.ACK, 1, 1, o)},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.ResetTimer()
			if _, _, err := prog.Benchmark(c.frame, b.N, nil); err != nil {
				b.Fatal(err)
			}
		})
	}
}
