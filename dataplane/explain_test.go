package dataplane

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/tetherlb/tether/api/unit"
)

// TestExplainMixedFamilies: an explain request whose source and VIP are
// of different families (admin input: tetherctl explain) gets an answer
// saying no packet has both, not a panic; IPv4-mapped addresses count as
// IPv4; a request of one family is explained as before.
func TestExplainMixedFamilies(t *testing.T) {
	s, err := Build(loadConfig(t, 1024, "1024-65535"), nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		src, dst string
		mixed    bool
	}{
		{"203.0.113.9:5555", "[2001:db8::1]:80", true},
		{"[::ffff:203.0.113.9]:5555", "[2001:db8::1]:80", true},
		{"[2001:db8:9::9]:5555", "192.0.2.1:80", true},
		{"[2001:db8:9::9]:5555", "[2001:db8::1]:80", false},
	} {
		e := s.Explain(unit.ExplainRequest{Proto: 6, Src: netip.MustParseAddrPort(c.src), Dst: netip.MustParseAddrPort(c.dst)}, nil)
		if got := strings.Contains(e.Reason, "families"); got != c.mixed || !c.mixed && e.Backend == "" {
			t.Errorf("%s → %s: %+v", c.src, c.dst, e)
		}
	}
}
