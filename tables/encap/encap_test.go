package encap

import "testing"

func TestIDsAreDisjointAcrossWorkers(t *testing.T) {
	const workers = 3
	seen := map[uint32]int{}
	never := func(uint32, *Tuple) bool { return false }
	for w := range workers {
		tb, err := New(w, workers, 100)
		if err != nil {
			t.Fatal(err)
		}
		for i := range 100 {
			tu := Tuple{SrcPort: uint16(i), Proto: 6}
			id, ok := tb.Alloc(&tu, never)
			if !ok {
				t.Fatalf("worker %d: alloc %d failed", w, i)
			}
			if prev, dup := seen[id]; dup {
				t.Fatalf("id %d given to workers %d and %d", id, prev, w)
			}
			seen[id] = w
			if got := tb.Get(id); got == nil || *got != tu {
				t.Fatalf("Get(%d) = %v, want %v", id, got, tu)
			}
		}
		if _, ok := tb.Alloc(&Tuple{}, never); ok {
			t.Fatalf("worker %d: alloc succeeded with every slot live", w)
		}
	}
}

func TestStaleSlotsAreReused(t *testing.T) {
	tb, _ := New(0, 1, 4)
	live := map[uint32]bool{}
	stale := func(id uint32, _ *Tuple) bool { return !live[id] }
	for i := range 4 {
		id, _ := tb.Alloc(&Tuple{SrcPort: uint16(i)}, stale)
		live[id] = true
	}
	delete(live, 2)
	id, ok := tb.Alloc(&Tuple{SrcPort: 99}, stale)
	if !ok || id != 2 {
		t.Fatalf("Alloc = %d, %v; want the stale ID 2", id, ok)
	}
	if tb.Len() != 4 {
		t.Fatalf("Len = %d, want 4", tb.Len())
	}
}

func TestForeignIDs(t *testing.T) {
	tb, _ := New(1, 2, 10)
	if tb.Get(4) != nil || tb.Put(4, &Tuple{}) {
		t.Fatal("worker 1 of 2 accepted an even ID")
	}
	if tb.Get(1<<31+1) != nil {
		t.Fatal("Get accepted an ID beyond the table")
	}
	if !tb.Put(3, &Tuple{Proto: 17}) || tb.Get(3).Proto != 17 {
		t.Fatal("Put/Get of an own ID failed")
	}
	tb.Free(3)
	if tb.Get(3) != nil || tb.Len() != 0 {
		t.Fatal("Free did not forget the ID")
	}
}

func TestNewRejectsBadShapes(t *testing.T) {
	// The last: workers whose IDs would reach the control process's.
	for _, c := range [][3]int{{0, 0, 1}, {2, 2, 1}, {0, 1, 0}, {0, 2, MaxCapacity + 1}, {0, 1<<30 + 1, 2}} {
		if _, err := New(c[0], c[1], c[2]); err == nil {
			t.Errorf("New(%d, %d, %d) accepted", c[0], c[1], c[2])
		}
	}
	// As many IDs as the workers may have: the last worker's last ID is
	// just below the control process's first.
	const workers = 1 << 30
	tb, err := New(workers-1, workers, 2)
	if err != nil {
		t.Fatal(err)
	}
	if last := tb.id(1); last != FirstMigratedID-1 {
		t.Fatalf("the last worker's last ID is %d, want %d", last, FirstMigratedID-1)
	}
}
