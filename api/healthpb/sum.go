package healthpb

import (
	"hash/fnv"

	"github.com/tetherlb/tether/internal/mix"
)

// NumChunks is how many chunks a host's table falls into. Heartbeats
// carry one checksum per chunk that holds rows, and a unit that finds
// one wrong asks for that chunk alone, so a repair moves 1/NumChunks of
// a large table rather than all of it.
const NumChunks = 16

// Key is an application endpoint's identity within a host's table: two
// rows with the same key are the same row. Validated AppIDs contain no
// spaces, so the space-separated form is unambiguous.
func Key(a *AppID) string {
	return a.GetProto() + " " + a.GetVip() + " " + a.GetEndpoint() + " " + a.GetUrl()
}

// TypeKey is an application's type: the key without the endpoint. Units
// balance new connections over the endpoints of one type.
func TypeKey(a *AppID) string {
	return a.GetProto() + " " + a.GetVip() + " " + a.GetUrl()
}

// ChunkOf is the chunk an application's row falls into.
func ChunkOf(a *AppID) uint32 {
	h := fnv.New32a()
	h.Write([]byte(Key(a)))
	return h.Sum32() % NumChunks
}

// RowSum is a row's contribution to its chunk's checksum. A chunk's
// checksum is the sum of its rows' (mod 2^64): independent of order, and
// kept up to date by adding and subtracting as rows change.
func RowSum(r *Row) uint64 {
	h := fnv.New64a()
	h.Write([]byte(Key(r.GetApp())))
	h.Write([]byte{0, byte(r.GetHealth()), byte(r.GetLoad()), byte(r.GetCapacity()), byte(r.GetTarget()), byte(r.GetCurrent())})
	x := h.Sum64()
	// The MurmurHash3 finalizer: FNV's low bits are weak, and a sum of
	// weak values collides more easily than a sum of mixed ones.
	return mix.Fmix64(x)
}

// Sums holds the checksum and row count of every chunk of a table.
type Sums [NumChunks]struct {
	Sum  uint64
	Rows uint32
}

// Add counts r in its chunk.
func (s *Sums) Add(r *Row) {
	c := &s[ChunkOf(r.GetApp())]
	c.Sum += RowSum(r)
	c.Rows++
}

// Remove takes r out of its chunk.
func (s *Sums) Remove(r *Row) {
	c := &s[ChunkOf(r.GetApp())]
	c.Sum -= RowSum(r)
	c.Rows--
}

// List returns the chunks that hold rows, as a heartbeat carries them.
func (s *Sums) List() []*ChunkSum {
	var out []*ChunkSum
	for i, c := range s {
		if c.Rows > 0 {
			out = append(out, &ChunkSum{Chunk: uint32(i), Checksum: c.Sum, Rows: c.Rows})
		}
	}
	return out
}

// Differ returns the chunks whose checksum or row count in s differs
// from what a heartbeat reports (chunks it does not list are empty).
func (s *Sums) Differ(reported []*ChunkSum) []uint32 {
	var want Sums
	for _, c := range reported {
		want[c.GetChunk()].Sum, want[c.GetChunk()].Rows = c.GetChecksum(), c.GetRows()
	}
	var out []uint32
	for i := range s {
		if s[i] != want[i] {
			out = append(out, uint32(i))
		}
	}
	return out
}
