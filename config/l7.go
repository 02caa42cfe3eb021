package config

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tetherlb/tether/api/unit"
)

// L7 configures a VIP of mode l7 (issue 14): the unit's acceptor takes
// each TCP connection, reads the client's first request head, chooses a
// backend by Rules and by health and load, and migrates the connection
// to it. The backends are tunnel-style hosts: a backend's address is the
// host's tunnel address, the client's destination port is kept, and a
// backend's port is ignored. The choice is made once per connection, on
// its first request; later requests on the connection go where it went.
type L7 struct {
	// MaxRequest bounds the request head the acceptor waits for:
	// bytes, or a number with B, KiB or MiB ("16KiB"); at most 64 KiB,
	// the acceptor's window and the most a migration carries to the
	// host. Default 16 KiB. A longer head is answered with 431.
	MaxRequest string `mapstructure:"max_request"`
	// RequestTimeout is how long the acceptor waits for the whole head
	// before it answers 408 and closes. Default 5s.
	RequestTimeout time.Duration `mapstructure:"request_timeout"`
	// Rules choose the backends a request may go to; the first that
	// matches wins, and a request no rule matches may go to every
	// backend of the VIP.
	Rules []L7Rule `mapstructure:"rules"`
	// Handoff is where a connection goes once its first request is read:
	// "migrate" (the default) to the host the rules choose, which must
	// run an agent; "proxy" to a request router, which routes each
	// request of the connection by the rules; "migrate-or-proxy" to the
	// chosen host when one with an agent can take it, else to a router
	// (hosts without an agent are reached this way).
	Handoff string `mapstructure:"handoff"`
	// Routers are the names of the VIP's backends that are request
	// routers (`tetherd router` on a host with an agent): connections
	// reach them by migration like any host's, and they proxy each
	// request to the VIP's other backends. Rules never choose them.
	Routers []string `mapstructure:"routers"`

	maxRequest int
	handoff    L7Handoff
}

// L7Handoff is an l7 VIP's handoff.
type L7Handoff uint8

// Handoffs.
const (
	HandoffMigrate L7Handoff = iota
	HandoffProxy
	HandoffMigrateOrProxy
)

var handoffNames = [...]string{"migrate", "proxy", "migrate-or-proxy"}

// String returns the handoff's configuration name.
func (h L7Handoff) String() string {
	if int(h) < len(handoffNames) {
		return handoffNames[h]
	}
	return fmt.Sprintf("handoff-%d", uint8(h))
}

// HandoffValue returns handoff, once checked.
func (l *L7) HandoffValue() L7Handoff { return l.handoff }

// IsRouter reports whether the VIP's backend name is a request router.
func (l *L7) IsRouter(name string) bool { return slices.Contains(l.Routers, name) }

// L7Rule restricts the requests it matches to some of the VIP's
// backends. A request matches when it meets every condition the rule
// sets; a rule sets at least one.
type L7Rule struct {
	// Name identifies the rule in logs and counters; default
	// "rule-<index>". "default" names the requests no rule matched.
	Name string `mapstructure:"name"`
	// Host is the request's host (from the target's authority, else the
	// Host field; port and case ignored): "api.example.com" exactly, or
	// "*.example.com" for any name below example.com (at any depth, not
	// example.com itself).
	Host string `mapstructure:"host"`
	// PathPrefix is a prefix of the request's path as sent (not
	// percent-decoded, nor normalized; no query): "/api/" matches
	// "/api/v1" but not "/api" or "/%61pi/".
	PathPrefix string `mapstructure:"path_prefix"`
	// Header matches a request with a field of this name (any case)
	// whose whole value, without surrounding whitespace, is Value.
	Header *L7Match `mapstructure:"header"`
	// Cookie matches a request whose cookie of this name (exact case)
	// has the value Value.
	Cookie *L7Match `mapstructure:"cookie"`
	// Backends are names of the VIP's backends the matching requests
	// go to; empty: every backend (a rule that only counts).
	Backends []string `mapstructure:"backends"`
	// Proxy sends the connections whose first request the rule matches
	// to a request router, whatever the VIP's handoff (their later
	// requests may want other backends, or the backends have no agent).
	Proxy bool `mapstructure:"proxy"`
}

// L7Match is a name and an exact value.
type L7Match struct {
	Name  string `mapstructure:"name"`
	Value string `mapstructure:"value"`
}

// Bounds and defaults of an l7 section.
const (
	// MaxL7Request is max_request's bound: the acceptor's window
	// (ctlplane/l7/request.MaxHead, hostpb.MaxMigrateData).
	MaxL7Request     = 64 << 10
	MinL7Request     = 1 << 10
	DefaultL7Request = 16 << 10
	DefaultL7Timeout = 5 * time.Second
	MaxL7Rules       = 1000
	// L7DefaultRule is the name a choice reports when no rule matched.
	L7DefaultRule = "default"
)

// MaxRequestBytes returns max_request in bytes, once checked.
func (l *L7) MaxRequestBytes() int { return l.maxRequest }

// checkL7 checks v's l7 section against its mode, and fills its
// defaults. It runs after the backends are checked, so that their names
// are final.
func (v *VIP) checkL7(p *problems, key string, hostsListen string) {
	if !v.modeL7() {
		if v.L7 != nil {
			p.Add(key+".l7", v.Mode, "only mode l7 reads requests: set mode: l7 or remove the l7 section")
		}
		return
	}
	if v.Protocol != "tcp" {
		p.Add(key+".protocol", v.Protocol, "mode l7 reads HTTP requests, which come over tcp")
	}
	if hostsListen == "" {
		p.Add("hosts.listen", hostsListen, "%s (mode l7) migrates connections to hosts over the host streams: set hosts.listen (and hosts.tls)", key)
	}
	if v.L7 == nil {
		v.L7 = &L7{}
	}
	l := v.L7
	key += ".l7"
	if l.MaxRequest == "" {
		l.MaxRequest = strconv.Itoa(DefaultL7Request)
	}
	n, err := parseSize(l.MaxRequest)
	switch {
	case err != nil:
		p.Add(key+".max_request", l.MaxRequest, "%v", err)
	case n < MinL7Request || n > MaxL7Request:
		p.Add(key+".max_request", l.MaxRequest, "must be between 1KiB and 64KiB (the acceptor's window)")
	}
	l.maxRequest = n
	if l.RequestTimeout == 0 {
		l.RequestTimeout = DefaultL7Timeout
	}
	if l.RequestTimeout < 100*time.Millisecond || l.RequestTimeout > time.Minute {
		p.Add(key+".request_timeout", l.RequestTimeout, "must be between 100ms and 1m: the acceptor holds each connection that long for its head")
	}
	if len(l.Rules) > MaxL7Rules {
		p.Add(key+".rules", len(l.Rules), "more than %d rules", MaxL7Rules)
	}
	switch l.Handoff {
	case "", "migrate":
		l.Handoff, l.handoff = "migrate", HandoffMigrate
	case "proxy":
		l.handoff = HandoffProxy
	case "migrate-or-proxy":
		l.handoff = HandoffMigrateOrProxy
	default:
		p.Add(key+".handoff", l.Handoff, "want migrate, proxy or migrate-or-proxy")
	}
	backends := map[string]bool{}
	for i := range v.Backends {
		backends[v.Backends[i].Name] = true
	}
	routers := map[string]int{}
	for i, r := range l.Routers {
		rkey := fmt.Sprintf("%s.routers[%d]", key, i)
		if !backends[r] {
			p.Add(rkey, r, "not the name of a backend of this VIP")
		}
		if j, dup := routers[r]; dup {
			p.Add(rkey, r, "also %s.routers[%d]", key, j)
		}
		routers[r] = i
	}
	proxied := l.handoff != HandoffMigrate
	for i := range l.Rules {
		proxied = proxied || l.Rules[i].Proxy
	}
	if proxied && len(l.Routers) == 0 {
		p.Add(key+".routers", "[]", "handoff %s or a rule with proxy: true sends connections to request routers: name at least one of the VIP's backends", l.Handoff)
	}
	if len(l.Routers) > 0 && len(l.Routers) == len(v.Backends) {
		p.Add(key+".routers", strings.Join(l.Routers, ","), "every backend is a router: the routers would have nowhere to send requests")
	}
	names := map[string]int{}
	for i := range l.Rules {
		r := &l.Rules[i]
		rkey := fmt.Sprintf("%s.rules[%d]", key, i)
		if r.Name == "" {
			r.Name = fmt.Sprintf("rule-%d", i)
		}
		switch {
		case r.Name == L7DefaultRule:
			p.Add(rkey+".name", r.Name, "names the requests no rule matches: choose another name")
		case !isRuleName(r.Name):
			p.Add(rkey+".name", r.Name, "must be 1 to 64 letters, digits, '-', '_' or '.'")
		}
		if j, dup := names[r.Name]; dup {
			p.Add(rkey+".name", r.Name, "also the name of %s.rules[%d]", key, j)
		}
		names[r.Name] = i
		r.check(p, rkey, backends)
		for j, b := range r.Backends {
			if _, ok := routers[b]; ok {
				p.Add(fmt.Sprintf("%s.backends[%d]", rkey, j), b, "a request router: rules choose the backends that serve requests (proxy: true sends a connection to the routers)")
			}
		}
	}
}

func (v *VIP) modeL7() bool { return v.mode == unit.ModeL7 }

func (r *L7Rule) check(p *problems, key string, backends map[string]bool) {
	if r.Host == "" && r.PathPrefix == "" && r.Header == nil && r.Cookie == nil {
		p.Add(key, r.Name, "matches every request: give at least one of host, path_prefix, header and cookie (requests no rule matches already go to every backend)")
	}
	if r.Host != "" {
		if why := checkRuleHost(r.Host); why != "" {
			p.Add(key+".host", r.Host, "%s", why)
		}
	}
	if r.PathPrefix != "" {
		if !strings.HasPrefix(r.PathPrefix, "/") || strings.ContainsAny(r.PathPrefix, "?#") || !visible(r.PathPrefix) {
			p.Add(key+".path_prefix", r.PathPrefix, "must start with / and hold visible ASCII only, without ? or # (it matches the path as the client sent it, before the query)")
		}
	}
	if h := r.Header; h != nil {
		switch {
		case !isFieldName(h.Name):
			p.Add(key+".header.name", h.Name, "must be a field name (letters, digits and !#$%%&'*+-.^_`|~)")
		case strings.EqualFold(h.Name, "host"), strings.EqualFold(h.Name, "cookie"):
			p.Add(key+".header.name", h.Name, "use the rule's %s key: it reads the field as a client means it", strings.ToLower(h.Name))
		}
		if h.Value == "" || strings.Trim(h.Value, " \t") != h.Value || !visibleOrSpace(h.Value) {
			p.Add(key+".header.value", h.Value, "must be a field value without surrounding whitespace or control characters (requests' values are compared without it)")
		}
	}
	if c := r.Cookie; c != nil {
		if !isFieldName(c.Name) {
			p.Add(key+".cookie.name", c.Name, "must be a cookie name (letters, digits and !#$%%&'*+-.^_`|~)")
		}
		if c.Value == "" || strings.ContainsAny(c.Value, "\" ,;\\") || !visible(c.Value) {
			p.Add(key+".cookie.value", c.Value, "must be a cookie value: visible ASCII without spaces, quotes, commas, semicolons or backslashes")
		}
	}
	seen := map[string]int{}
	for i, b := range r.Backends {
		bkey := fmt.Sprintf("%s.backends[%d]", key, i)
		if !backends[b] {
			p.Add(bkey, b, "not the name of a backend of this VIP")
		}
		if j, dup := seen[b]; dup {
			p.Add(bkey, b, "also %s.backends[%d]", key, j)
		}
		seen[b] = i
	}
}

// checkRuleHost says what is wrong with a rule's host, or "".
func checkRuleHost(h string) string {
	if a, err := netip.ParseAddr(h); err == nil {
		if a.Zone() != "" {
			return "an address with a zone never names a request's host"
		}
		return ""
	}
	name, wild := strings.CutPrefix(h, "*.")
	switch {
	case strings.HasSuffix(name, "."):
		return "requests' hosts are compared without their trailing dot: drop it"
	case strings.Contains(name, ":"):
		return "hosts are compared without port: drop it"
	case len(name) > 253 || !isHostName(name):
		if wild {
			return "want *. followed by a DNS name, e.g. *.example.com"
		}
		return "want a DNS name (api.example.com), *.example.com, or an IP address"
	}
	return ""
}

// isHostName: dot-separated labels of letters, digits, '-' and '_'.
func isHostName(s string) bool {
	for label := range strings.SplitSeq(s, ".") {
		if label == "" || len(label) > 63 {
			return false
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

func isRuleName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

// isFieldName: a token (RFC 9110 §5.6.2), which cookie names are too.
func isFieldName(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("!#$%&'*+-.^_`|~", c)) {
			return false
		}
	}
	return true
}

func visible(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] >= 0x7f {
			return false
		}
	}
	return true
}

func visibleOrSpace(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < ' ' && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}

// parseSize reads a size in bytes: digits, optionally followed by B,
// KiB or MiB (a space between is allowed).
func parseSize(s string) (int, error) {
	num := strings.TrimRightFunc(s, func(c rune) bool { return c < '0' || c > '9' })
	mult := 1
	switch strings.TrimSpace(s[len(num):]) {
	case "", "B":
	case "KiB":
		mult = 1 << 10
	case "MiB":
		mult = 1 << 20
	default:
		return 0, fmt.Errorf("want bytes, or a number with B, KiB or MiB (e.g. 16KiB)")
	}
	n, err := strconv.Atoi(num)
	if err != nil || n < 0 || n > 1<<30 {
		return 0, fmt.Errorf("want bytes, or a number with B, KiB or MiB (e.g. 16KiB)")
	}
	return n * mult, nil
}

// clone returns a deep copy of l (nil for nil).
func (l *L7) clone() *L7 {
	if l == nil {
		return nil
	}
	out := *l
	out.Rules = slices.Clone(l.Rules)
	out.Routers = slices.Clone(l.Routers)
	for i, r := range out.Rules {
		r.Backends = slices.Clone(r.Backends)
		if r.Header != nil {
			h := *r.Header
			r.Header = &h
		}
		if r.Cookie != nil {
			c := *r.Cookie
			r.Cookie = &c
		}
		out.Rules[i] = r
	}
	return &out
}
