package atoms

import (
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/tetherlb/tether/api/atompb"
)

// FuzzApply: any valid request applied to a portion, twice over, keeps
// the portion's invariants: its bound, its zombie count, and the later
// version of each key.
func FuzzApply(f *testing.F) {
	add := &atompb.Request{Version: atompb.Version, Body: &atompb.Request_Add{Add: &atompb.Add{Seq: 1, Atoms: []*atompb.Atom{
		{Key: "route/a", Host: "10.0.0.1", Adder: "u1", AdderBoot: 1, Stamp: 5, TimeoutMs: 10},
		{Key: "route/a", Host: "10.0.0.2", Adder: "u2", AdderBoot: 1, Stamp: 5, TimeoutMs: 10, Zombie: true},
	}}}}
	del := &atompb.Request{Version: atompb.Version, Body: &atompb.Request_Delete{Delete: &atompb.Delete{Seq: 2, Atoms: []*atompb.Atom{
		{Key: "route/a", Adder: "u2", Stamp: 5},
	}}}}
	for _, m := range []*atompb.Request{add, del} {
		b, _ := proto.Marshal(m)
		f.Add(b, b)
	}
	f.Fuzz(func(t *testing.T, b1, b2 []byte) {
		m := &Manager{t: newTable(8), live: map[string]Member{"u1": {Name: "u1", Boot: 1}}, refused: map[string]uint64{},
			opts: Options{ZombieTime: time.Second}, now: time.Now}
		for _, b := range [][]byte{b1, b2} {
			var r atompb.Request
			if proto.Unmarshal(b, &r) != nil || atompb.ValidateRequest(&r) != nil {
				continue
			}
			switch body := r.GetBody().(type) {
			case *atompb.Request_Add:
				m.applyLocked(body.Add.GetAtoms())
			case *atompb.Request_Delete:
				for _, a := range body.Delete.GetAtoms() {
					m.t.del(a.GetKey(), a.GetStamp(), a.GetAdder(), 1)
				}
			}
		}
		z := 0
		for _, e := range m.t.atoms {
			if e.zombie {
				z++
			}
		}
		if z != m.t.zombies || len(m.t.atoms) > 8 {
			t.Fatalf("zombies %d counted %d; %d atoms", z, m.t.zombies, len(m.t.atoms))
		}
		m.t.expire(time.Now().Add(48 * time.Hour).UnixNano())
		for k, e := range m.t.atoms {
			if e.expires != 0 {
				t.Fatalf("%s outlived its expiry", k)
			}
		}
	})
}
