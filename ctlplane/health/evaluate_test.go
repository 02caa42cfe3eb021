package health

import (
	"testing"
	"time"

	pb "github.com/tetherlb/tether/api/healthpb"
	"github.com/tetherlb/tether/api/unit"
	"github.com/tetherlb/tether/config"
)

const evalConfig = `
unit: {name: u1}
vips:
  - name: web
    address: 192.0.2.10
    port: 80
    protocol: tcp
    mode: halfnat
    health: {source: agent}
    backends:
      - {name: b0, address: 10.0.0.10, port: 8080}
      - {name: b1, address: 10.0.0.11, port: 8080}
      - {name: b2, address: 10.0.0.12, port: 8080, weight: 2}
  - name: static
    address: 192.0.2.11
    port: 80
    protocol: tcp
    mode: halfnat
    backends:
      - {name: s0, address: 10.0.0.10}
`

func cacheWith(rows map[uint32][]*pb.Row) *Cache {
	c := NewCache()
	for id, rs := range rows {
		h := c.touch(id)
		for _, r := range rs {
			c.put(h, r)
		}
	}
	return c
}

func vipRow(ep string, health pb.Health, load, capacity uint32, target pb.State) *pb.Row {
	return &pb.Row{App: &pb.AppID{Proto: "tcp", Vip: "192.0.2.10:80", Endpoint: ep}, Health: health, Load: load,
		Capacity: capacity, Target: target, Current: target}
}

func TestEvaluate(t *testing.T) {
	cfg, err := config.Parse([]byte(evalConfig))
	if err != nil {
		t.Fatal(err)
	}
	H, F := pb.Health_HEALTH_HEALTHY, pb.Health_HEALTH_FAILING
	A, D := pb.State_STATE_ACTIVE, pb.State_STATE_DRAINING
	now := time.Unix(0, 0)
	cases := []struct {
		name    string
		rows    map[uint32][]*pb.Row
		op      map[string]string
		grace   bool
		states  map[string]string
		percent []float64 // b0, b1, b2
	}{
		{"all healthy, weight 2 doubles b2", map[uint32][]*pb.Row{
			1: {vipRow("10.0.0.10:8080", H, 0, 50, A)}, 2: {vipRow("10.0.0.11:8080", H, 0, 50, A)}, 3: {vipRow("10.0.0.12:8080", H, 0, 50, A)}},
			nil, false, map[string]string{}, []float64{25, 25, 50}},
		{"90% load gets a tenth", map[uint32][]*pb.Row{
			1: {vipRow("10.0.0.10:8080", H, 90, 50, A)}, 2: {vipRow("10.0.0.11:8080", H, 0, 50, A)}, 3: {vipRow("10.0.0.12:8080", H, 0, 50, A)}},
			nil, false, map[string]string{}, []float64{100 * 5.0 / 155, 100 * 50.0 / 155, 100 * 100.0 / 155}},
		{"failing and draining take nothing new", map[uint32][]*pb.Row{
			1: {vipRow("10.0.0.10:8080", F, 0, 50, A)}, 2: {vipRow("10.0.0.11:8080", H, 0, 50, D)}, 3: {vipRow("10.0.0.12:8080", H, 0, 50, A)}},
			nil, false, map[string]string{"web/b0": "draining", "web/b1": "draining"}, []float64{0, 0, 100}},
		{"unreported after grace takes nothing", map[uint32][]*pb.Row{
			1: {vipRow("10.0.0.10:8080", H, 0, 50, A)}},
			nil, false, map[string]string{"web/b1": "draining", "web/b2": "draining"}, []float64{100, 0, 0}},
		{"unreported within grace keeps its state", map[uint32][]*pb.Row{
			1: {vipRow("10.0.0.10:8080", H, 0, 50, A)}},
			nil, true, map[string]string{}, []float64{0, 0, 0}},
		{"operator's disable stays stricter than health", map[uint32][]*pb.Row{
			1: {vipRow("10.0.0.10:8080", F, 0, 50, A)}, 2: {vipRow("10.0.0.11:8080", H, 0, 50, A)}, 3: {vipRow("10.0.0.12:8080", H, 0, 50, A)}},
			map[string]string{"web/b0": "inactive", "web/b2": "draining"}, false, map[string]string{}, []float64{0, 100, 0}},
		{"a healthy proxy outvotes a failing one; endpoint-only rows count", map[uint32][]*pb.Row{
			1: {vipRow("10.0.0.10:8080", F, 0, 50, A)}, 2: {vipRow("10.0.0.10:8080", H, 0, 50, A)},
			3: {{App: &pb.AppID{Proto: "tcp", Endpoint: "10.0.0.11:8080"}, Health: H, Capacity: 50, Target: A, Current: A}},
			4: {vipRow("10.0.0.12:8080", H, 0, 50, A)}},
			nil, false, map[string]string{}, []float64{25, 25, 50}},
		{"an agent VIP ignores the unit's probes", map[uint32][]*pb.Row{
			1: {vipRow("10.0.0.10:8080", H, 0, 50, A)}, 2: {vipRow("10.0.0.11:8080", H, 0, 50, A)},
			3: {vipRow("10.0.0.12:8080", F, 0, 50, A)}, ProbeHost: {vipRow("10.0.0.12:8080", H, 0, 50, A)}},
			nil, false, map[string]string{"web/b2": "draining"}, []float64{50, 50, 0}},
	}
	for _, c := range cases {
		ev := Evaluate(cacheWith(c.rows), cfg, opStates(t, c.op), c.grace, 1000, time.Second, now)
		if len(ev.States) != len(c.states) {
			t.Errorf("%s: states %v, want %v", c.name, ev.States, c.states)
		}
		for k, v := range c.states {
			if got := ev.States[mustKey(t, k)].String(); got != v {
				t.Errorf("%s: %s is %q, want %q", c.name, k, got, v)
			}
		}
		if len(ev.Backends) != 3 {
			t.Fatalf("%s: %d views; the static VIP must not be evaluated", c.name, len(ev.Backends))
		}
		if c.grace {
			continue // within grace the unreported keep the file's state and share by their weights
		}
		for i, want := range c.percent {
			if got := ev.Backends[i].Percent; got < want-0.01 || got > want+0.01 {
				t.Errorf("%s: %s gets %.2f%%, want %.2f%%", c.name, ev.Backends[i].Backend, got, want)
			}
		}
		a := ev.Allotments["web"]
		sum := 0
		for _, n := range a.Tokens {
			sum += n
		}
		if sum != 1000 && c.percent[0]+c.percent[1]+c.percent[2] > 0 {
			t.Errorf("%s: %d tokens allotted", c.name, sum)
		}
	}
}

func mustKey(t *testing.T, s string) unit.BackendKey {
	t.Helper()
	k, err := unit.ParseBackendKey(s)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func opStates(t *testing.T, m map[string]string) map[unit.BackendKey]unit.State {
	out := map[unit.BackendKey]unit.State{}
	for k, v := range m {
		s, err := unit.ParseState(v)
		if err != nil {
			t.Fatal(err)
		}
		out[mustKey(t, k)] = s
	}
	return out
}

// TestApply: the evaluation reaches the forwarder's configuration as
// backend states and Maglev weights, one weight per allotted backend; an
// eligible backend whose share is 0 (fully loaded while others are not)
// gets weight 0, and a VIP without a health source is left alone.
func TestApply(t *testing.T) {
	cfg, err := config.Parse([]byte(evalConfig))
	if err != nil {
		t.Fatal(err)
	}
	H, F, A := pb.Health_HEALTH_HEALTHY, pb.Health_HEALTH_FAILING, pb.State_STATE_ACTIVE
	ev := Evaluate(cacheWith(map[uint32][]*pb.Row{
		1: {vipRow("10.0.0.10:8080", H, 100, 50, A)}, 2: {vipRow("10.0.0.11:8080", F, 0, 50, A)}, 3: {vipRow("10.0.0.12:8080", H, 0, 50, A)}}),
		cfg, nil, false, 1000, time.Second, time.Unix(0, 0))
	ev.Apply(cfg)
	b := cfg.VIPs[0].Backends
	want := []struct {
		state  string
		weight int
	}{{"active", 0}, {"draining", 1}, {"active", WeightScale}}
	for i, w := range want {
		if b[i].State != w.state || b[i].WeightValue() != w.weight {
			t.Errorf("%s: state %s weight %d, want %s %d", b[i].Name, b[i].State, b[i].WeightValue(), w.state, w.weight)
		}
	}
	if s := cfg.VIPs[1].Backends[0]; s.State != "active" || s.WeightValue() != 1 {
		t.Errorf("the static VIP's backend became %s weight %d", s.State, s.WeightValue())
	}
}
