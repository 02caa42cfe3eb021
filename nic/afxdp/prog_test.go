package afxdp

import (
	"bytes"
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/tetherlb/tether/internal/nstest"
	"github.com/tetherlb/tether/internal/pkttest"
)

// TestProgramCatchesFragmentedReplies runs the redirect program on
// frames (BPF_PROG_TEST_RUN; with no socket in the map a redirect comes
// back as XDP_DROP): a half-NAT backend's reply is caught by its source
// address and port, and when it is fragmented, its later fragments,
// which carry no port, are caught with it, for IPv4 and IPv6 (with or
// without a VLAN tag). A later fragment of a datagram whose first
// fragment was not caught (another port, or never seen) passes, as does
// the backend's other traffic.
func TestProgramCatchesFragmentedReplies(t *testing.T) {
	nstest.Require(t)
	m, err := newMaps(1)
	if err != nil {
		t.Fatal(err)
	}
	defer m.close()
	prog, err := loadProgram(m)
	if err != nil {
		t.Fatal(err)
	}
	defer prog.Close()
	const udp = 17
	if err := m.own(nil, []Endpoint{
		{Addr: netip.MustParseAddr("10.0.0.10"), Port: 5353, Proto: udp},
		{Addr: netip.MustParseAddr("fd00::10"), Port: 5353, Proto: udp},
	}); err != nil {
		t.Fatal(err)
	}
	verdict := func(frame []byte) string {
		t.Helper()
		ret, err := prog.Run(&ebpf.RunOptions{Data: frame})
		if err != nil {
			t.Fatal(err)
		}
		return map[uint32]string{xdpDrop: "caught", xdpPass: "passed"}[ret]
	}
	const mac = "02:00:00:00:00:01"
	payload := bytes.Repeat([]byte("reply "), 700) // 4,200 bytes: four fragments of 1,400
	for _, vlans := range [][]uint16{nil, {7}} {
		o := pkttest.Opts{VLANs: vlans, Payload: payload}
		reply := func(src, dst string, id uint16) [][]byte {
			o := o
			o.ID = id
			frame := pkttest.UDP(pkttest.EP(mac, src), pkttest.EP(mac, dst), o)
			if netip.MustParseAddrPort(src).Addr().Is4() {
				return pkttest.FragmentIPv4(frame, 1400, false)
			}
			return pkttest.FragmentIPv6(frame, 1400, uint32(id)<<8|uint32(len(vlans)))
		}
		for _, c := range []struct {
			name     string
			frags    [][]byte
			from     int // the first fragment sent
			want     string
			wantRest string
		}{
			{"IPv4 reply", reply("10.0.0.10:5353", "10.0.1.2:40000", 1), 0, "caught", "caught"},
			{"IPv4 reply, first fragment never seen", reply("10.0.0.10:5353", "10.0.1.2:40000", 2), 1, "passed", "passed"},
			{"IPv4 from another port", reply("10.0.0.10:5354", "10.0.1.2:40000", 3), 0, "passed", "passed"},
			{"IPv4 from another host", reply("10.0.0.11:5353", "10.0.1.2:40000", 4), 0, "passed", "passed"},
			{"IPv6 reply", reply("[fd00::10]:5353", "[fd00:1::2]:40000", 1), 0, "caught", "caught"},
			{"IPv6 reply, first fragment never seen", reply("[fd00::10]:5353", "[fd00:1::2]:40000", 2), 1, "passed", "passed"},
			{"IPv6 from another port", reply("[fd00::10]:5354", "[fd00:1::2]:40000", 3), 0, "passed", "passed"},
		} {
			if len(c.frags) < 3 {
				t.Fatalf("%s: %d fragments", c.name, len(c.frags))
			}
			for i, f := range c.frags[c.from:] {
				want := c.wantRest
				if i == 0 {
					want = c.want
				}
				if got := verdict(f); got != want {
					t.Errorf("vlans %v, %s: fragment %d %s, want %s", vlans, c.name, c.from+i, got, want)
				}
			}
		}
		// Whole datagrams: caught by the source, as before.
		o.Payload = []byte("small")
		if got := verdict(pkttest.UDP(pkttest.EP(mac, "10.0.0.10:5353"), pkttest.EP(mac, "10.0.1.2:40000"), o)); got != "caught" {
			t.Errorf("vlans %v: a whole IPv4 reply %s", vlans, got)
		}
		if got := verdict(pkttest.UDP(pkttest.EP(mac, "[fd00::10]:5353"), pkttest.EP(mac, "[fd00:1::2]:40000"), o)); got != "caught" {
			t.Errorf("vlans %v: a whole IPv6 reply %s", vlans, got)
		}
		if got := verdict(pkttest.UDP(pkttest.EP(mac, "10.0.0.10:22"), pkttest.EP(mac, "10.0.1.2:40000"), o)); got != "passed" {
			t.Errorf("vlans %v: the backend's other traffic %s", vlans, got)
		}
	}
}
