package agent

import (
	"fmt"
	"sort"
	"sync"

	"google.golang.org/protobuf/proto"

	pb "github.com/tetherlb/tether/api/healthpb"
)

// Table is the host's health-and-load table, the authoritative copy of
// what units cache about this host: one row per application, by local
// name. Every change bumps the generation, updates the chunk checksums
// heartbeats carry, and queues a row operation for the sender. Rows are
// never changed in place: a change replaces the row, so a row handed out
// may be read without the lock.
type Table struct {
	mu      sync.Mutex
	rows    map[string]*pb.Row // by local name
	byKey   map[string]string  // pb.Key → local name
	sums    pb.Sums
	gen     uint64
	pending []*pb.RowOp
	queued  map[string]int // pb.Key → index in pending
	notify  chan struct{}
}

// NewTable returns an empty table at generation gen. Agents start from
// the clock so that a restarted agent's generations still increase.
func NewTable(gen uint64) *Table {
	return &Table{rows: map[string]*pb.Row{}, byKey: map[string]string{}, gen: max(gen, 1),
		queued: map[string]int{}, notify: make(chan struct{}, 1)}
}

// Changed is signalled after changes are queued.
func (t *Table) Changed() <-chan struct{} { return t.notify }

// Add adds an application's row.
func (t *Table) Add(name string, r *pb.Row) error {
	if err := pb.ValidRow(r); err != nil {
		return err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, dup := t.rows[name]; dup {
		return fmt.Errorf("application %q exists", name)
	}
	k := pb.Key(r.GetApp())
	if other, dup := t.byKey[k]; dup {
		return fmt.Errorf("application %q already reports %s", other, k)
	}
	if len(t.rows) >= pb.MaxRows {
		return fmt.Errorf("the table holds %d rows, the most a host may", pb.MaxRows)
	}
	r = proto.Clone(r).(*pb.Row)
	t.rows[name], t.byKey[k] = r, name
	t.sums.Add(r)
	t.queue(pb.RowOp_OP_ADD, r)
	return nil
}

// Remove deletes an application's row.
func (t *Table) Remove(name string) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	r, ok := t.rows[name]
	if !ok {
		return fmt.Errorf("no application %q", name)
	}
	delete(t.rows, name)
	delete(t.byKey, pb.Key(r.GetApp()))
	t.sums.Remove(r)
	t.queue(pb.RowOp_OP_DELETE, &pb.Row{App: r.GetApp()})
	return nil
}

// Update changes an application's row with fn (on a copy). It reports
// whether anything changed; a change that would make the row invalid is
// refused.
func (t *Table) Update(name string, fn func(*pb.Row)) (bool, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	old, ok := t.rows[name]
	if !ok {
		return false, fmt.Errorf("no application %q", name)
	}
	r := proto.Clone(old).(*pb.Row)
	fn(r)
	r.App = old.GetApp() // identity is not for fn to change
	if err := pb.ValidRow(r); err != nil {
		return false, err
	}
	if proto.Equal(r, old) {
		return false, nil
	}
	t.sums.Remove(old)
	t.rows[name] = r
	t.sums.Add(r)
	t.queue(pb.RowOp_OP_UPDATE, r)
	return true, nil
}

// queue records an operation for the sender, folding it into one still
// queued for the same application. Callers hold mu.
func (t *Table) queue(op pb.RowOp_Op, r *pb.Row) {
	t.gen++
	k := pb.Key(r.GetApp())
	if i, ok := t.queued[k]; ok {
		prev := t.pending[i].GetOp()
		if op == pb.RowOp_OP_UPDATE && prev == pb.RowOp_OP_ADD {
			op = pb.RowOp_OP_ADD // the units have not heard of it yet
		}
		t.pending[i] = &pb.RowOp{Op: op, Row: r}
	} else {
		t.queued[k] = len(t.pending)
		t.pending = append(t.pending, &pb.RowOp{Op: op, Row: r})
	}
	select {
	case t.notify <- struct{}{}:
	default:
	}
}

// TakePending returns up to n queued operations and the generation the
// table is at once units applied them: the current one when all are
// taken, else 0 ("no generation": the state after part of the queue is
// no generation the table ever had, and units apply such a change
// without checking it for staleness).
func (t *Table) TakePending(n int) ([]*pb.RowOp, uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.pending) <= n {
		ops := t.pending
		t.pending, t.queued = nil, map[string]int{}
		return ops, t.gen
	}
	ops := t.pending[:n:n]
	t.pending = t.pending[n:]
	t.queued = map[string]int{}
	for i, op := range t.pending {
		t.queued[pb.Key(op.GetRow().GetApp())] = i
	}
	select {
	case t.notify <- struct{}{}:
	default:
	}
	return ops, 0
}

// Row returns an application's row.
func (t *Table) Row(name string) (*pb.Row, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	r, ok := t.rows[name]
	return r, ok
}

// Names returns the applications' names, sorted.
func (t *Table) Names() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]string, 0, len(t.rows))
	for n := range t.rows {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// Integrity returns what a heartbeat carries: the generation and the
// checksums of the chunks that hold rows.
func (t *Table) Integrity() (uint64, []*pb.ChunkSum) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.gen, t.sums.List()
}

// Chunks returns the rows of the listed chunks (every chunk when none is
// listed) at the current generation.
func (t *Table) Chunks(chunks []uint32) (uint64, []uint32, []*pb.Row) {
	if len(chunks) == 0 {
		chunks = make([]uint32, pb.NumChunks)
		for i := range chunks {
			chunks[i] = uint32(i)
		}
	}
	want := map[uint32]bool{}
	for _, c := range chunks {
		want[c] = true
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	var rows []*pb.Row
	for _, r := range t.rows {
		if want[pb.ChunkOf(r.GetApp())] {
			rows = append(rows, r)
		}
	}
	sort.Slice(rows, func(i, j int) bool { return pb.Key(rows[i].GetApp()) < pb.Key(rows[j].GetApp()) })
	return t.gen, chunks, rows
}
