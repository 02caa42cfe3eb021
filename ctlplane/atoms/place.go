package atoms

import (
	"hash/fnv"
	"slices"

	"github.com/tetherlb/tether/internal/mix"
)

// Full is the replication level that puts every atom on every member.
const Full = -1

// score is member's rendezvous weight for key: FNV-1a over both,
// finished with MurmurHash3's mixer so that close names spread.
func score(key, member string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(key))
	h.Write([]byte{0})
	h.Write([]byte(member))
	return mix.Fmix64(h.Sum64())
}

// rank returns the first n of names (all for n < 0) in rendezvous order
// for key, highest first, leaving out skip. names is not changed.
func rank(key string, names []string, skip string, n int) []string {
	type scored struct {
		name string
		s    uint64
	}
	all := make([]scored, 0, len(names))
	for _, m := range names {
		if m != skip {
			all = append(all, scored{m, score(key, m)})
		}
	}
	slices.SortFunc(all, func(a, b scored) int {
		switch {
		case a.s > b.s:
			return -1
		case a.s < b.s:
			return 1
		}
		return compareStrings(a.name, b.name)
	})
	if n >= 0 && n < len(all) {
		all = all[:n]
	}
	out := make([]string, len(all))
	for i := range all {
		out[i] = all[i].name
	}
	return out
}

func compareStrings(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// holders are the members that ought to hold an atom of key besides its
// adder, among live (names): at level L, the L highest-ranked others
// while the adder is live; once it is not, the L+1 highest, so that the
// atom keeps L+1 copies; every member at Full.
func holders(key, adder string, adderLive bool, live []string, level int) []string {
	switch {
	case level == Full:
		return rank(key, live, adder, -1)
	case adderLive:
		return rank(key, live, adder, level)
	}
	return rank(key, live, "", level+1)
}

// queryTargets are the members a query for key asks first: whoever the
// adder is, its holders are among the level+1 highest-ranked of live
// (self is left out: the caller looked in its own portion).
func queryTargets(key string, live []string, self string, level int) []string {
	if level == Full {
		return rank(key, live, self, -1)
	}
	return slices.DeleteFunc(rank(key, live, "", level+1), func(m string) bool { return m == self })
}
