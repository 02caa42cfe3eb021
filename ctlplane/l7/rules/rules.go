package rules

import (
	"errors"
	"fmt"
	"math"
	"net/netip"
	"strings"

	"github.com/tetherlb/tether/api/unit"
	"github.com/tetherlb/tether/config"
	"github.com/tetherlb/tether/ctlplane/l7/request"
)

// DefaultRule is the rule a Choice names when no rule matched.
const DefaultRule = config.L7DefaultRule

// Candidate is a backend a request may go to, as the caller sees it now.
type Candidate struct {
	// Name is the backend's name in the VIP's configuration; rules
	// name backends by it.
	Name string
	Key  unit.BackendKey
	// Weight is the backend's current weight (health.WeightScale
	// shares, or any relative scale): 0 takes no new connections.
	Weight uint32
	// URLs are the URL patterns of the health rows reporting on this
	// backend (healthpb Row.app.url); none: it takes any path. See
	// MatchURL for the syntax.
	URLs []string
}

// Choice is what Choose decided.
type Choice struct {
	// Index is the chosen candidate's index in the slice Choose got;
	// Name and Key are its.
	Index int
	Name  string
	Key   unit.BackendKey
	// Rule is the name of the rule that decided which backends were
	// allowed, or DefaultRule; set even when no candidate was
	// eligible, so that refusals count per rule too.
	Rule string
}

// Set is an l7 VIP's compiled rules. It is immutable, so one Set serves
// any number of goroutines; a new configuration compiles a new Set.
type Set struct {
	vip   string
	rules []rule
}

type rule struct {
	name string
	// host: exact (lowercase), or suffix ".example.com" when wild; an
	// address compares as an address (2001:DB8::1 is 2001:db8::1).
	host     string
	wild     bool
	hostAddr netip.Addr
	path     string
	// header and cookie are copies, so that a Set never changes with
	// the configuration it was compiled from; nil: no condition.
	header, cookie *config.L7Match
	// backends allowed; nil: every backend.
	backends map[string]bool
}

// Compile compiles the rules of v, an l7 VIP whose configuration was
// checked (config.Check). It refuses a VIP of another mode and rules
// that name backends v does not have.
func Compile(v *config.VIP) (*Set, error) {
	if v.ModeValue() != unit.ModeL7 || v.L7 == nil {
		return nil, fmt.Errorf("rules: vip %s: mode %q, not a checked l7 VIP", v.Name, v.Mode)
	}
	have := make(map[string]bool, len(v.Backends))
	for i := range v.Backends {
		have[v.Backends[i].Name] = true
	}
	s := &Set{vip: v.Name, rules: make([]rule, 0, len(v.L7.Rules))}
	var errs []error
	for i := range v.L7.Rules {
		cr := &v.L7.Rules[i]
		r := rule{name: cr.Name, path: cr.PathPrefix}
		if cr.Header != nil {
			h := *cr.Header
			r.header = &h
		}
		if cr.Cookie != nil {
			c := *cr.Cookie
			r.cookie = &c
		}
		if r.name == "" {
			r.name = fmt.Sprintf("rule-%d", i)
		}
		h := strings.ToLower(cr.Host)
		if a, err := netip.ParseAddr(h); err == nil {
			r.hostAddr = a.Unmap()
		} else if strings.HasPrefix(h, "*.") {
			r.host, r.wild = h[1:], true // ".example.com"
		} else {
			r.host = h
		}
		if len(cr.Backends) > 0 {
			r.backends = make(map[string]bool, len(cr.Backends))
			for _, b := range cr.Backends {
				if !have[b] {
					errs = append(errs, fmt.Errorf("rules: vip %s: rule %s: backend %q is not one of the VIP's", v.Name, r.name, b))
				}
				r.backends[b] = true
			}
		}
		s.rules = append(s.rules, r)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return s, nil
}

// VIP returns the name of the VIP the set was compiled for.
func (s *Set) VIP() string { return s.vip }

// match returns the name of the first rule r matches and its allowed
// backends (nil: all), or DefaultRule and nil.
func (s *Set) match(r *request.Request) (string, map[string]bool) {
	for i := range s.rules {
		if s.rules[i].matches(r) {
			return s.rules[i].name, s.rules[i].backends
		}
	}
	return DefaultRule, nil
}

func (ru *rule) matches(r *request.Request) bool {
	switch {
	case ru.hostAddr.IsValid():
		if a, err := netip.ParseAddr(r.Host); err != nil || a.Unmap() != ru.hostAddr {
			return false
		}
	case ru.wild:
		if !matchWild(r.Host, ru.host) {
			return false
		}
	case ru.host != "" && r.Host != ru.host:
		return false
	}
	if !strings.HasPrefix(r.Path, ru.path) {
		return false
	}
	if h := ru.header; h != nil && !hasField(r, h.Name, h.Value) {
		return false
	}
	if c := ru.cookie; c != nil {
		if v, ok := r.Cookie(c.Name); !ok || v != c.Value {
			return false
		}
	}
	return true
}

// matchWild: host is below suffix (".example.com"), at any depth.
func matchWild(host, suffix string) bool {
	return len(host) > len(suffix) && strings.HasSuffix(host, suffix)
}

// hasField: some field line named name has exactly value.
func hasField(r *request.Request, name, value string) bool {
	for i := range r.Fields {
		if f := &r.Fields[i]; f.Value == value && strings.EqualFold(f.Name, name) {
			return true
		}
	}
	return false
}

// Choose picks the backend for r among cands: the first rule r matches
// allows some of them (no rule: all); a candidate that reports URL
// patterns takes r only when one matches; among the eligible with
// Weight > 0 it picks by weighted rendezvous hashing of hash, so each
// gets a share of hashes proportional to its weight, the same inputs
// always give the same backend, and a backend's leaving moves only the
// hashes it had. hash should mix what should stick together (the
// client's address, say). false: nobody is eligible, answer 503; the
// Choice still names the rule.
func (s *Set) Choose(r *request.Request, cands []Candidate, hash uint64) (Choice, bool) {
	if r == nil {
		return Choice{Index: -1, Rule: DefaultRule}, false
	}
	name, allowed := s.match(r)
	ch := Choice{Index: pick(cands, hash, func(c *Candidate) bool { return (allowed == nil || allowed[c.Name]) && takesPath(c, r) }), Rule: name}
	if ch.Index < 0 {
		return ch, false
	}
	ch.Name, ch.Key = cands[ch.Index].Name, cands[ch.Index].Key
	return ch, true
}

// Pick picks among cands with Weight > 0 by the weighted rendezvous
// Choose uses, without rules or URL patterns (a request router for a
// connection, say); -1 when none has a weight.
func Pick(cands []Candidate, hash uint64) int {
	return pick(cands, hash, func(*Candidate) bool { return true })
}

func pick(cands []Candidate, hash uint64, eligible func(*Candidate) bool) int {
	best, at := math.Inf(1), -1
	for i := range cands {
		c := &cands[i]
		if c.Weight == 0 || !eligible(c) {
			continue
		}
		// Weighted rendezvous (Schindelhauer and Schomaker): the
		// smallest -ln(u)/w wins, where u is uniform in (0, 1] per
		// (hash, backend); P(win) = w / Σw.
		u := (float64(mix(hash^nameHash(c.Name))>>11) + 1) / (1 << 53)
		if score := -math.Log(u) / float64(c.Weight); score < best {
			best, at = score, i
		}
	}
	return at
}

func takesPath(c *Candidate, r *request.Request) bool {
	if len(c.URLs) == 0 {
		return true
	}
	for _, u := range c.URLs {
		if MatchURL(u, r.Host, r.Path) {
			return true
		}
	}
	return false
}

// MatchURL reports whether a health row's URL pattern takes a request
// for host and path (as request.Request has them). A pattern is a path,
// optionally after scheme://host:
//
//   - "/api" matches /api and everything below it (/api/v1), not /apiary;
//   - "/api/" matches everything below /api/ (not /api itself);
//   - "/api*" matches every path that starts with /api, /apiary too;
//   - "*", "/*" and "/" match every path;
//   - "http://api.example.com/api/*" also needs the request's host to
//     be api.example.com ("*.example.com" for any name below it; port
//     and case ignored); "http://*/api" any host.
//
// A path without its leading "/" is read as if it had one. The path is
// compared as the client sent it, without the query, not
// percent-decoded. An empty pattern matches nothing.
func MatchURL(pattern, host, path string) bool {
	if pattern == "" {
		return false
	}
	if _, rest, ok := strings.Cut(pattern, "://"); ok {
		h, p, _ := strings.Cut(rest, "/")
		if !matchPatternHost(h, host) {
			return false
		}
		pattern = "/" + p
	}
	if pattern == "*" {
		return true
	}
	if pattern[0] != '/' {
		return strings.HasPrefix(path, "/") && matchPath(pattern, path[1:])
	}
	return matchPath(pattern, path)
}

func matchPath(pattern, path string) bool {
	if p, ok := strings.CutSuffix(pattern, "*"); ok {
		return strings.HasPrefix(path, p)
	}
	if strings.HasSuffix(pattern, "/") {
		return strings.HasPrefix(path, pattern)
	}
	return path == pattern || (strings.HasPrefix(path, pattern) && path[len(pattern)] == '/')
}

// matchPatternHost: "" and "*" match any host; "*.example.com" names
// below example.com; otherwise the host without port, in any case.
func matchPatternHost(pattern, host string) bool {
	if pattern == "" || pattern == "*" {
		return true
	}
	if rest, ok := strings.CutPrefix(pattern, "["); ok {
		pattern, _, _ = strings.Cut(rest, "]") // [2001:db8::1]:80
	} else {
		pattern, _, _ = strings.Cut(pattern, ":")
	}
	pattern = strings.TrimSuffix(pattern, ".")
	if suffix, ok := strings.CutPrefix(pattern, "*"); ok && strings.HasPrefix(suffix, ".") {
		return len(host) > len(suffix) && hasSuffixFold(host, suffix)
	}
	return strings.EqualFold(pattern, host)
}

func hasSuffixFold(s, suffix string) bool {
	return len(s) >= len(suffix) && strings.EqualFold(s[len(s)-len(suffix):], suffix)
}

// nameHash is FNV-1a of a backend's name: its identity in the
// rendezvous, stable across restarts and units.
func nameHash(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return h
}

// mix is splitmix64's finalizer: every input bit moves every output bit,
// so hashes that differ in a few bits give independent scores.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	return x ^ x>>31
}
