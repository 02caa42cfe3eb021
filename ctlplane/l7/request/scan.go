package request

// text is what the scanner reads: Complete scans the caller's bytes in
// place, Parse the one string it copies them into, so that both run the
// same checks and cannot disagree.
type text interface{ ~string | ~[]byte }

func indexByte[S text](s S, c byte) int {
	for i := 0; i < len(s); i++ {
		if s[i] == c {
			return i
		}
	}
	return -1
}

// scan walks the lines of s. It returns the length of the head through
// its blank line, the number of field lines, and a status when the head
// is bad; all zero while the head is incomplete but good so far. It
// checks every line completely, and the incomplete last line as far as
// it can without guessing, so that a head that Parse accepts is never
// refused by a prefix of it.
func scan[S text](s S) (headLen, fields, status int) {
	start, lines := 0, 0 // lines: non-empty lines seen; the first is the request line
	for start < len(s) {
		i := indexByte(s[start:], '\n')
		if i < 0 {
			return 0, 0, checkPartial(s[start:], lines == 0)
		}
		end := start + i
		if end == start || s[end-1] != '\r' {
			return 0, 0, StatusBadRequest // a bare LF ends no line here (§2.2)
		}
		line := s[start : end-1]
		start = end + 1
		switch {
		case lines == 0 && len(line) == 0:
			// §2.2: a server SHOULD ignore empty lines before the
			// request line.
			continue
		case lines == 0:
			if _, st := parseRequestLine(line); st != 0 {
				return 0, 0, st
			}
		case len(line) == 0:
			return start, lines - 1, 0
		case lines > MaxFields:
			return 0, 0, StatusHeaderTooLarge
		default:
			if st := checkField(line); st != 0 {
				return 0, 0, st
			}
		}
		lines++
	}
	return 0, 0, 0
}

// checkPartial refuses an incomplete line that no further bytes can make
// good, with the status its complete form would get: a control
// character (a TLS ClientHello sent to a plain port starts with one), or
// an obs-fold.
func checkPartial[S text](s S, requestLine bool) int {
	if !requestLine && len(s) > 0 && (s[0] == ' ' || s[0] == '\t') {
		return StatusBadRequest
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '\r' && i == len(s)-1:
			// Its LF may be next.
		case requestLine && (c < ' ' || c >= 0x7f):
			return StatusBadRequest
		case c == '\t' || c >= 0x80:
		case c < ' ' || c == 0x7f:
			return StatusBadRequest
		}
	}
	return 0
}

// requestLine is a request line's parts (§3).
type requestLine[S text] struct {
	method, target S
	minor          int
	// path, query and authority come from the target (§3.2):
	// authority only from the absolute and authority forms.
	path, query, authority S
	hasAuthority           bool
}

// parseRequestLine parses method SP request-target SP HTTP-version,
// with exactly one space between them (§3: a recipient MAY accept more
// whitespace; this one does not). Every byte must be visible ASCII or
// the two spaces.
func parseRequestLine[S text](l S) (requestLine[S], int) {
	var r requestLine[S]
	for i := 0; i < len(l); i++ {
		if c := l[i]; c < ' ' || c >= 0x7f {
			return r, StatusBadRequest
		}
	}
	sp1 := indexByte(l, ' ')
	if sp1 <= 0 {
		return r, StatusBadRequest
	}
	rest := l[sp1+1:]
	sp2 := indexByte(rest, ' ')
	if sp2 <= 0 {
		return r, StatusBadRequest
	}
	r.method, r.target = l[:sp1], rest[:sp2]
	v := rest[sp2+1:]
	if !isToken(r.method) {
		return r, StatusBadRequest
	}
	// HTTP-version = "HTTP/" DIGIT "." DIGIT, case-sensitive (§2.3).
	if len(v) != 8 || string(v[:5]) != "HTTP/" || !isDigit(v[5]) || v[6] != '.' || !isDigit(v[7]) {
		return r, StatusBadRequest
	}
	if v[5] != '1' {
		// HTTP/2's connection preface ("PRI * HTTP/2.0") lands here
		// too: prior knowledge of h2 is not for this acceptor.
		return r, StatusVersionNotSupported
	}
	r.minor = int(v[7] - '0')
	if !parseTarget(&r) {
		return r, StatusBadRequest
	}
	return r, 0
}

// parseTarget splits r.target in its form (§3.2): origin-form
// ("/path?query"), absolute-form ("http://host/path?query"),
// authority-form (CONNECT only, "host:port") or asterisk-form (OPTIONS
// only, "*"). A fragment has no place in a request target.
func parseTarget[S text](r *requestLine[S]) bool {
	t := r.target
	if indexByte(t, '#') >= 0 {
		return false
	}
	switch {
	case string(r.method) == "CONNECT":
		host, port, ok := splitAuthority(t)
		if !ok || len(host) == 0 || len(port) == 0 {
			return false
		}
		r.authority, r.hasAuthority = t, true
		return true
	case len(t) == 1 && t[0] == '*':
		r.path = t
		return string(r.method) == "OPTIONS"
	case t[0] == '/':
		r.path, r.query = cutQuery(t)
		return true
	}
	// absolute-form: only http and https URIs name an origin here.
	i := indexByte(t, ':')
	if i < 0 || !isScheme(t[:i]) || len(t) < i+3 || t[i+1] != '/' || t[i+2] != '/' {
		return false
	}
	rest := t[i+3:]
	end := len(rest)
	for j := 0; j < len(rest); j++ {
		if rest[j] == '/' || rest[j] == '?' {
			end = j
			break
		}
	}
	r.authority, r.hasAuthority = rest[:end], true
	if host, _, ok := splitAuthority(r.authority); !ok || len(host) == 0 {
		// RFC 9110 §4.2.1: an http URI with an empty host is invalid.
		return false
	}
	r.path, r.query = cutQuery(rest[end:])
	if len(r.path) == 0 {
		// §3.2.1: an empty path is "/" (one byte of the target's
		// "//" serves: the path is a substring like every other part).
		r.path = t[i+2 : i+3]
	}
	return true
}

// cutQuery splits a path from its query at the first '?'.
func cutQuery[S text](t S) (path, query S) {
	if q := indexByte(t, '?'); q >= 0 {
		return t[:q], t[q+1:]
	}
	return t, t[len(t):]
}

// isScheme: "http" or "https", in any case (schemes are
// case-insensitive, RFC 3986 §3.1).
func isScheme[S text](s S) bool {
	lower := func(c byte) byte { return c | 0x20 }
	if len(s) != 4 && len(s) != 5 {
		return false
	}
	if lower(s[0]) != 'h' || lower(s[1]) != 't' || lower(s[2]) != 't' || lower(s[3]) != 'p' {
		return false
	}
	return len(s) == 4 || lower(s[4]) == 's'
}

// splitAuthority splits uri-host [":" port] (RFC 9110 §7.2). The host
// is a bracketed IPv6 literal, or a name or IPv4 address of letters,
// digits, '-', '.', '_' and '~' — stricter than reg-name, which also
// allows sub-delimiters and percent-escapes no DNS name holds and which
// two parsers would read differently. userinfo ("user@") is refused
// (RFC 9110 §4.2.4). host is returned without brackets, port without
// its colon; both may be empty.
func splitAuthority[S text](a S) (host, port S, ok bool) {
	rest := a
	if len(a) > 0 && a[0] == '[' {
		end := indexByte(a, ']')
		if end < 0 {
			return host, port, false
		}
		host, rest = a[1:end], a[end+1:]
		colons := 0
		for i := 0; i < len(host); i++ {
			c := host[i]
			switch {
			case c == ':':
				colons++
			case isDigit(c) || c == '.' || ('a' <= c|0x20 && c|0x20 <= 'f'):
			default:
				return host, port, false
			}
		}
		if colons < 2 {
			return host, port, false
		}
	} else {
		end := indexByte(a, ':')
		if end < 0 {
			end = len(a)
		}
		host, rest = a[:end], a[end:]
		for i := 0; i < len(host); i++ {
			if c := host[i]; !isAlnum(c) && c != '-' && c != '.' && c != '_' && c != '~' {
				return host, port, false
			}
		}
	}
	if len(rest) == 0 {
		return host, rest, true
	}
	if rest[0] != ':' || len(rest) > 6 {
		return host, port, false
	}
	port = rest[1:]
	for i := 0; i < len(port); i++ {
		if !isDigit(port[i]) {
			return host, port, false
		}
	}
	if len(port) == 5 && string(port) > "65535" {
		return host, port, false
	}
	return host, port, true
}

// checkField checks a field line (§5): a token, a colon right after it,
// and a value of visible characters, spaces, tabs and obs-text. A line
// that starts with whitespace continues the previous one (obs-fold),
// which a server may refuse (§5.2) and this one does; whitespace before
// the colon MUST be refused (§5.1).
func checkField[S text](l S) int {
	colon := indexByte(l, ':')
	if colon <= 0 || !isToken(l[:colon]) {
		return StatusBadRequest
	}
	for i := colon + 1; i < len(l); i++ {
		if c := l[i]; (c < ' ' && c != '\t') || c == 0x7f {
			return StatusBadRequest
		}
	}
	return 0
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

func isAlnum(c byte) bool {
	return isDigit(c) || ('a' <= c|0x20 && c|0x20 <= 'z')
}

// isToken: 1*tchar (RFC 9110 §5.6.2).
func isToken[S text](s S) bool {
	if len(s) == 0 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if isAlnum(c) {
			continue
		}
		switch c {
		case '!', '#', '$', '%', '&', '\'', '*', '+', '-', '.', '^', '_', '`', '|', '~':
			continue
		}
		return false
	}
	return true
}
