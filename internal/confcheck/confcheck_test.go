package confcheck

import (
	"strings"
	"testing"
	"time"
)

type sample struct {
	Name     string        `mapstructure:"name"`
	Interval time.Duration `mapstructure:"interval"`
	Ports    []int         `mapstructure:"ports"`
}

func TestDecodeYAML(t *testing.T) {
	t.Setenv("CCTEST_NAME", "from-env")
	var s sample
	v := NewViper(map[string]any{"name": "default", "interval": time.Second}, "CCTEST")
	if err := DecodeYAML(v, []byte("interval: 250ms\nports: [80, 443]\n"), &s); err != nil {
		t.Fatal(err)
	}
	if s.Name != "from-env" || s.Interval != 250*time.Millisecond || len(s.Ports) != 2 {
		t.Fatalf("decoded %+v", s)
	}
	for _, tc := range []struct{ yaml, want string }{
		{"colour: blue\n", "colour"},
		{"ports: [http]\n", "ports[0]"},
		{"interval: soon\n", "interval"},
		{"name: [\n", "yaml"},
	} {
		err := DecodeYAML(NewViper(nil, ""), []byte(tc.yaml), &sample{})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: got %v, want an error naming %q", tc.yaml, err, tc.want)
		}
	}
}

func TestProblems(t *testing.T) {
	var p Problems
	if p.Err() != nil {
		t.Fatal("no problems, yet an error")
	}
	p.Add("vips[0].port", 0, "must be between %d and %d", 1, 65535)
	p.Add("unit.name", "", "required")
	want := "vips[0].port: \"0\": must be between 1 and 65535\nunit.name: \"\": required"
	if got := p.Err().Error(); got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}
