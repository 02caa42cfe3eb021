package flow

import "github.com/tetherlb/tether/api/unit"

// Removals records the connections a shard removes (aged, evicted or
// deleted), so that the dataplane can tell the control process about
// them. Only the client-direction entry of a pair is recorded: the pair
// is one connection. The log is bounded; when full, further removals are
// counted as Lost until the owner takes the log with Take.
type Removals struct {
	v4   []Removed4
	v6   []Removed6
	Lost uint64
}

// Removed4 and Removed6 are removed entries.
type Removed4 struct {
	Key   Key4
	Value Value4
}

// Removed6 is Removed4 for IPv6.
type Removed6 struct {
	Key   Key6
	Value Value6
}

// EnableRemovals starts recording removals, up to n of each family
// between two Take calls.
func (s *Shard) EnableRemovals(n int) {
	s.log = &Removals{v4: make([]Removed4, 0, n), v6: make([]Removed6, 0, n)}
	s.v4.log, s.v6.log = s.log, s.log
}

// TakeRemovals calls fn with the removals recorded since the last call
// and clears them. fn must not keep the slices.
func (s *Shard) TakeRemovals(fn func(v4 []Removed4, v6 []Removed6, lost uint64)) {
	if s.log == nil {
		return
	}
	fn(s.log.v4, s.log.v6, s.log.Lost)
	s.log.v4, s.log.v6, s.log.Lost = s.log.v4[:0], s.log.v6[:0], 0
}

func (l *Removals) add4(k *Key4, v *Value4) {
	if l == nil || v.Flags&unit.FlowReply != 0 {
		return
	}
	if len(l.v4) == cap(l.v4) {
		l.Lost++
		return
	}
	l.v4 = append(l.v4, Removed4{Key: *k, Value: *v})
}

func (l *Removals) add6(k *Key6, v *Value6) {
	if l == nil || v.Flags&unit.FlowReply != 0 {
		return
	}
	if len(l.v6) == cap(l.v6) {
		l.Lost++
		return
	}
	l.v6 = append(l.v6, Removed6{Key: *k, Value: *v})
}
