package unit

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestTextForms: the enums and the backend key read back what they
// write, in JSON as the admin API carries them, and refuse anything
// else.
func TestTextForms(t *testing.T) {
	for _, m := range Modes() {
		got, err := ParseMode(m.String())
		if err != nil || got != m {
			t.Errorf("mode %s: parsed as %v, %v", m, got, err)
		}
	}
	for _, s := range []State{StateActive, StateDraining, StateInactive, StateRemoved, 0} {
		b, _ := s.MarshalText()
		var back State
		if err := back.UnmarshalText(b); err != nil || back != s {
			t.Errorf("state %q: read back %v, %v", b, back, err)
		}
	}
	if _, err := ParseState("removed"); err == nil {
		t.Error("an operator may not set removed")
	}
	st := Status{States: map[BackendKey]State{{VIP: "web", Backend: "b0"}: StateDraining}}
	b, err := json.Marshal(st)
	if err != nil || !strings.Contains(string(b), `"backend_states":{"web/b0":"draining"}`) {
		t.Fatalf("status JSON %s, %v", b, err)
	}
	var back Status
	if err := json.Unmarshal(b, &back); err != nil || back.States[BackendKey{VIP: "web", Backend: "b0"}] != StateDraining {
		t.Fatalf("status read back %+v, %v", back, err)
	}
	for _, bad := range []string{"", "web", "/b0", "web/", "a/b/c"} {
		if _, err := ParseBackendKey(bad); err == nil {
			t.Errorf("backend key %q parsed", bad)
		}
	}
	var m Mode
	if err := json.Unmarshal([]byte(`"sideways"`), &m); err == nil {
		t.Error("mode sideways parsed")
	}
	if FlowFlags(0).String() != "-" || (FlowSYN|FlowPeer).String() != "syn,peer" {
		t.Errorf("flags %s, %s", FlowFlags(0), FlowSYN|FlowPeer)
	}
}

func TestStricter(t *testing.T) {
	order := []State{0, StateActive, StateDraining, StateInactive}
	for i, a := range order {
		for j, b := range order {
			want := i > j && !(i == 1 && j == 0)
			if got := a.Stricter(b); got != want {
				t.Errorf("%q stricter than %q: %v, want %v", a, b, got, want)
			}
		}
	}
}

// FuzzText: no text makes the contract's parsers panic, and what they
// accept writes back to the same text.
func FuzzText(f *testing.F) {
	for _, s := range []string{"web/b0", "nat", "draining", "removed", "", "a/b/c", "tunnel"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if k, err := ParseBackendKey(s); err == nil && k.String() != s {
			t.Fatalf("key %q written back as %q", s, k)
		}
		if m, err := ParseMode(s); err == nil && m.String() != s {
			t.Fatalf("mode %q written back as %q", s, m)
		}
		var st State
		if err := st.UnmarshalText([]byte(s)); err == nil && st.String() != s {
			t.Fatalf("state %q written back as %q", s, st)
		}
	})
}
