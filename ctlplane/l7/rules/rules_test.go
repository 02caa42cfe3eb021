package rules

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/tetherlb/tether/api/unit"
	"github.com/tetherlb/tether/config"
	"github.com/tetherlb/tether/ctlplane/l7/request"
)

const conf = `
unit: {address4: 198.51.100.254}
hosts: {listen: "198.51.100.254:7320", tls: {ca: /c, cert: /c, key: /k}}
vips:
  - name: web
    address: 10.0.0.100
    port: 80
    protocol: tcp
    mode: l7
    l7:
      rules:
        - name: api
          host: API.example.com
          path_prefix: /api/
          header: {name: X-Tenant, value: blue}
          cookie: {name: backend, value: b}
          backends: [api-1, api-2]
        - name: static
          host: "*.static.example.com"
          backends: [web-1]
        - name: canary
          cookie: {name: canary, value: "1"}
          backends: [web-2]
        - name: v6
          host: "2001:db8::1"
          backends: [web-1]
        - name: counted
          path_prefix: /health
    backends:
      - {name: api-1, address: 10.1.0.1}
      - {name: api-2, address: 10.1.0.2}
      - {name: web-1, address: 10.1.0.3}
      - {name: web-2, address: 10.1.0.4}
`

func compile(t testing.TB) *Set {
	t.Helper()
	c, err := config.Parse([]byte(conf))
	if err != nil {
		t.Fatal(err)
	}
	s, err := Compile(&c.VIPs[0])
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func req(t testing.TB, target, host string, fields ...string) *request.Request {
	t.Helper()
	head := "GET " + target + " HTTP/1.1\r\nHost: " + host + "\r\n"
	for _, f := range fields {
		head += f + "\r\n"
	}
	r, err := request.Parse([]byte(head + "\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	return &r
}

// cands are the four backends at weight 1, changed by edits: "name=w"
// sets a weight, "name:url,url" URL patterns.
func cands(edits ...string) []Candidate {
	out := []Candidate{}
	for _, n := range []string{"api-1", "api-2", "web-1", "web-2"} {
		out = append(out, Candidate{Name: n, Key: unit.BackendKey{VIP: "web", Backend: n}, Weight: 1})
	}
	for _, e := range edits {
		for i := range out {
			if n, w, ok := strings.Cut(e, "="); ok && n == out[i].Name {
				fmt.Sscan(w, &out[i].Weight)
			}
			if n, u, ok := strings.Cut(e, ":"); ok && n == out[i].Name {
				out[i].URLs = strings.Split(u, ",")
			}
		}
	}
	return out
}

// TestChoose: which rule decides, and which candidates are then
// eligible. Every hash from 0 to 199 is tried, and the set of backends
// chosen must be exactly the eligible set.
func TestChoose(t *testing.T) {
	s := compile(t)
	apiFields := []string{"X-Tenant: blue", "Cookie: a=1; backend=b"}
	for _, tc := range []struct {
		name  string
		r     *request.Request
		cands []Candidate
		rule  string
		want  []string // the eligible backends; none: Choose says false
	}{
		{"every condition of api", req(t, "/api/v1", "api.example.com:80", apiFields...), cands(), "api", []string{"api-1", "api-2"}},
		{"api through the absolute form", req(t, "http://API.EXAMPLE.COM/api/x", "other", apiFields...), cands(), "api", []string{"api-1", "api-2"}},
		{"api without its cookie", req(t, "/api/v1", "api.example.com", "X-Tenant: blue"), cands(), "default", []string{"api-1", "api-2", "web-1", "web-2"}},
		{"api with another tenant", req(t, "/api/v1", "api.example.com", "X-Tenant: Blue", "Cookie: backend=b"), cands(), "default", []string{"api-1", "api-2", "web-1", "web-2"}},
		{"api with the tenant on a later line", req(t, "/api/v1", "api.example.com", "x-tenant: red", "X-TENANT: blue", "Cookie: backend=b"), cands(), "api", []string{"api-1", "api-2"}},
		{"api on another path", req(t, "/apiary", "api.example.com", apiFields...), cands(), "default", []string{"api-1", "api-2", "web-1", "web-2"}},
		{"api on another host", req(t, "/api/v1", "www.example.com", apiFields...), cands(), "default", []string{"api-1", "api-2", "web-1", "web-2"}},
		{"wildcard below", req(t, "/x", "a.b.static.example.com"), cands(), "static", []string{"web-1"}},
		{"wildcard apex", req(t, "/x", "static.example.com"), cands(), "default", []string{"api-1", "api-2", "web-1", "web-2"}},
		{"cookie", req(t, "/x", "www.example.com", "Cookie: canary=1"), cands(), "canary", []string{"web-2"}},
		{"first match wins", req(t, "/x", "cdn.static.example.com", "Cookie: canary=1"), cands(), "static", []string{"web-1"}},
		{"address host", req(t, "/", "[2001:DB8:0::1]:80"), cands(), "v6", []string{"web-1"}},
		{"a rule without backends allows all", req(t, "/healthz", "x"), cands(), "counted", []string{"api-1", "api-2", "web-1", "web-2"}},
		{"weight 0 takes nothing", req(t, "/x", "www.example.com", "Cookie: canary=1"), cands("web-2=0"), "canary", nil},
		{"a rule's backends only", req(t, "/x", "a.static.example.com"), cands("web-1=0", "api-1=1000"), "static", nil},
		{"no candidates", req(t, "/", "x"), nil, "default", nil},
		{"a candidate the rule names is missing", req(t, "/x", "a.static.example.com"), cands()[:2], "static", nil},
		{"URL patterns narrow", req(t, "/img/a.png", "x"), cands("api-1:/api", "api-2:/api,/img", "web-1:/video/*"), "default", []string{"api-2", "web-2"}},
		{"URL patterns after the rule", req(t, "/api/v1", "api.example.com", apiFields...), cands("api-1:/api/v1", "api-2:/api/v2"), "api", []string{"api-1"}},
		{"no URL pattern takes the path", req(t, "/api/v1", "api.example.com", apiFields...), cands("api-1:/x", "api-2:/y"), "api", nil},
		{"URL pattern with a host", req(t, "/a", "shop.example.com"), cands("api-1=0", "api-2=0", "web-1:http://*.example.com/a", "web-2:http://other.example.com/"), "default", []string{"web-1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := map[string]bool{}
			for h := range uint64(200) {
				ch, ok := s.Choose(tc.r, tc.cands, h)
				if ch.Rule != tc.rule {
					t.Fatalf("rule %q, want %q", ch.Rule, tc.rule)
				}
				if !ok {
					if ch.Index != -1 || ch.Name != "" {
						t.Fatalf("no choice, yet %+v", ch)
					}
					continue
				}
				if c := tc.cands[ch.Index]; c.Name != ch.Name || c.Key != ch.Key {
					t.Fatalf("choice %+v is not candidate %d %+v", ch, ch.Index, c)
				}
				got[ch.Name] = true
			}
			names := make([]string, 0, len(got))
			for n := range got {
				names = append(names, n)
			}
			slices.Sort(names)
			if !slices.Equal(names, tc.want) && !(len(names) == 0 && len(tc.want) == 0) {
				t.Fatalf("chose %v, want %v", names, tc.want)
			}
		})
	}
}

// TestChooseStable: the choice depends on the hash and the candidates,
// not on their order, and a backend's leaving moves only the requests
// it had.
func TestChooseStable(t *testing.T) {
	s := compile(t)
	r := req(t, "/", "x")
	all := cands("api-1=3", "web-2=7")
	rev := slices.Clone(all)
	slices.Reverse(rev)
	without := slices.DeleteFunc(slices.Clone(all), func(c Candidate) bool { return c.Name == "web-1" })
	moved := 0
	for h := range uint64(2000) {
		a, _ := s.Choose(r, all, h*0x9e3779b97f4a7c15)
		b, _ := s.Choose(r, rev, h*0x9e3779b97f4a7c15)
		c, _ := s.Choose(r, without, h*0x9e3779b97f4a7c15)
		if a.Name != b.Name {
			t.Fatalf("hash %d: %s in one order, %s in the other", h, a.Name, b.Name)
		}
		if a.Name != "web-1" && c.Name != a.Name {
			moved++
		}
	}
	if moved != 0 {
		t.Errorf("%d requests moved that web-1 did not have", moved)
	}
}

// TestWeights: over many deterministic hashes each backend's share is
// its weight's, within a loose tolerance.
func TestWeights(t *testing.T) {
	s := compile(t)
	r := req(t, "/", "x")
	cs := cands("api-1=1000", "api-2=2000", "web-1=3000", "web-2=4000")
	const n = 200000
	count := map[string]int{}
	for h := range uint64(n) {
		ch, ok := s.Choose(r, cs, h)
		if !ok {
			t.Fatal("no choice")
		}
		count[ch.Name]++
	}
	for _, c := range cs {
		want := float64(c.Weight) / 10000
		if got := float64(count[c.Name]) / n; math.Abs(got-want) > 0.01 {
			t.Errorf("%s: share %.4f, want %.2f ± 0.01", c.Name, got, want)
		}
	}
}

func TestMatchURL(t *testing.T) {
	for _, tc := range []struct {
		pattern, host, path string
		want                bool
	}{
		{"/api", "h", "/api", true},
		{"/api", "h", "/api/v1", true},
		{"/api", "h", "/apiary", false},
		{"/api", "h", "/", false},
		{"/api/", "h", "/api/v1", true},
		{"/api/", "h", "/api", false},
		{"/api*", "h", "/apiary", true},
		{"/api/*", "h", "/api/", true},
		{"/api/*", "h", "/api", false},
		{"*", "h", "*", true},
		{"/*", "h", "/anything", true},
		{"/", "h", "/anything", true},
		{"api", "h", "/api/x", true},
		{"api", "h", "api", false},
		{"", "h", "/", false},
		{"http://shop.example.com/a", "shop.example.com", "/a/b", true},
		{"http://Shop.Example.com:8080/a", "shop.example.com", "/a", true},
		{"http://shop.example.com./a", "shop.example.com", "/a", true},
		{"http://shop.example.com/a", "www.example.com", "/a", false},
		{"https://*.example.com/", "a.b.example.com", "/x", true},
		{"https://*.example.com/", "example.com", "/x", false},
		{"http://*/a", "anything", "/a", true},
		{"http://shop.example.com", "shop.example.com", "/x", true},
		{"http://[2001:db8::1]:80/a", "2001:db8::1", "/a", true},
		{"/%61pi", "h", "/api", false},
	} {
		if got := MatchURL(tc.pattern, tc.host, tc.path); got != tc.want {
			t.Errorf("MatchURL(%q, %q, %q) = %v", tc.pattern, tc.host, tc.path, got)
		}
	}
}

func TestCompileRefuses(t *testing.T) {
	c, err := config.Parse([]byte(conf))
	if err != nil {
		t.Fatal(err)
	}
	v := &c.Clone().VIPs[0]
	v.L7.Rules[1].Backends = []string{"web-9"}
	if _, err := Compile(v); err == nil || !strings.Contains(err.Error(), `"web-9"`) {
		t.Errorf("a rule naming an unknown backend: %v", err)
	}
	other, err := config.Parse([]byte("vips: [{name: h, address: 10.0.0.1, port: 80, protocol: tcp, mode: halfnat}]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Compile(&other.VIPs[0]); err == nil || !strings.Contains(err.Error(), "halfnat") {
		t.Errorf("a halfnat VIP: %v", err)
	}
	if s := compile(t); s.VIP() != "web" {
		t.Errorf("VIP %q", s.VIP())
	}
	// A Set keeps what it was compiled from.
	cl := c.Clone()
	s, err := Compile(&cl.VIPs[0])
	if err != nil {
		t.Fatal(err)
	}
	cl.VIPs[0].L7.Rules[2].Cookie.Value = "0"
	if ch, _ := s.Choose(req(t, "/", "x", "Cookie: canary=1"), cands(), 1); ch.Rule != "canary" {
		t.Errorf("changing the configuration changed the compiled rules: rule %q", ch.Rule)
	}
	if _, ok := s.Choose(nil, cands(), 1); ok {
		t.Error("a nil request was given a backend")
	}
}

// The acceptor's window is one number in config and request.
func TestBounds(t *testing.T) {
	if config.MaxL7Request != request.MaxHead {
		t.Errorf("config.MaxL7Request %d, request.MaxHead %d", config.MaxL7Request, request.MaxHead)
	}
}

func TestChooseAllocs(t *testing.T) {
	s := compile(t)
	r := req(t, "/api/v1", "api.example.com", "X-Tenant: blue", "Cookie: backend=b")
	cs := cands("api-1:/api")
	if n := testing.AllocsPerRun(100, func() { s.Choose(r, cs, 7) }); n != 0 {
		t.Errorf("Choose: %v allocations", n)
	}
}

func BenchmarkChoose(b *testing.B) {
	s := compile(b)
	r := req(b, "/api/v1", "api.example.com", "X-Tenant: blue", "Cookie: backend=b")
	cs := cands()
	b.ReportAllocs()
	for i := uint64(0); b.Loop(); i++ {
		s.Choose(r, cs, i)
	}
}

// FuzzMatchURL: agents report patterns; none makes MatchURL panic, "*"
// takes every path, and a path (with its leading /) takes itself and
// what is below it.
func FuzzMatchURL(f *testing.F) {
	for _, s := range []string{"/api", "/api/*", "http://[::1]:80/a", "https://*.example.com/", "*", "", "[", "x://"} {
		f.Add(s, "api.example.com", "/api/v1")
	}
	f.Fuzz(func(t *testing.T, pattern, host, path string) {
		got := MatchURL(pattern, host, path)
		if pattern == "*" && !got {
			t.Fatal("* did not match")
		}
		if strings.HasPrefix(path, "/") && !strings.HasSuffix(path, "*") && !strings.Contains(path, "://") {
			if !MatchURL(path, host, path) || !MatchURL(path, host, path+"/x") {
				t.Fatalf("%q does not match itself and below", path)
			}
		}
	})
}

// TestPick: Pick shares hashes by weight alone and skips weight 0.
func TestPick(t *testing.T) {
	cands := []Candidate{{Name: "r1", Weight: 1}, {Name: "r2", Weight: 3}, {Name: "off", Weight: 0}}
	var n [3]int
	for h := range uint64(40000) {
		i := Pick(cands, mix(h))
		if i < 0 {
			t.Fatal("no router picked among weighted ones")
		}
		n[i]++
	}
	if n[2] != 0 || n[1] < 2*n[0] || n[1] > 4*n[0] {
		t.Fatalf("picks %v: want about 1:3 and none for weight 0", n)
	}
	if Pick(cands[2:], 1) != -1 || Pick(nil, 1) != -1 {
		t.Fatal("picked a candidate without weight")
	}
}
