package acceptor

// counter names one of the acceptor's counters.
type counter uint8

const (
	cNone counter = iota
	cSYNCookiesSent
	cAccepted
	cReady
	cForgotten
	cAnswered
	cClosed
	cResets
	cBadCookie
	cKeepalives
	cTableFull
	cTimeouts
	cReadyTimeouts
	cBadRequests
	cTooLarge
	cEarlyFIN
	cRetransmits
	cOutOfOrder
	cOutOfWindow
	cTrimmed
	cHeldWhileReady
	cPAWS
	cBadACK
	cDiscardedBytes
	cClosingFull
	cTombstoneDrops
	cRefused
	cTombstonesEvicted
	cTombstonesReused
	cRSTSent
	cRSTLimited
	cRSTUnknown
	cUnknownSYNACK
	cNoACK
	cSecretErrors
	cExtHeaders
	cFragment
	cSourceRouted
	cNotTCP
	cBadAddress
	cMalformedShort
	cMalformedIP
	cMalformedTCP
	cMalformedOptions
	cMalformedFlags
	nCounters
)

var counterNames = [nCounters]string{
	cNone:              "",
	cSYNCookiesSent:    "syn_cookies_sent",
	cAccepted:          "accepted",
	cReady:             "ready",
	cForgotten:         "forgotten",
	cAnswered:          "answered",
	cClosed:            "closed",
	cResets:            "resets",
	cBadCookie:         "bad_cookie",
	cKeepalives:        "keepalives",
	cTableFull:         "table_full",
	cTimeouts:          "timeouts",
	cReadyTimeouts:     "ready_timeouts",
	cBadRequests:       "bad_requests",
	cTooLarge:          "too_large",
	cEarlyFIN:          "early_fin",
	cRetransmits:       "retransmits",
	cOutOfOrder:        "out_of_order",
	cOutOfWindow:       "out_of_window",
	cTrimmed:           "trimmed",
	cHeldWhileReady:    "held_while_ready",
	cPAWS:              "paws",
	cBadACK:            "bad_ack",
	cDiscardedBytes:    "discarded_bytes",
	cClosingFull:       "closing_full",
	cTombstoneDrops:    "tombstone_drops",
	cRefused:           "refused",
	cTombstonesEvicted: "tombstones_evicted",
	cTombstonesReused:  "tombstones_reused",
	cRSTSent:           "rst_sent",
	cRSTLimited:        "rst_limited",
	cRSTUnknown:        "rst_unknown",
	cUnknownSYNACK:     "unknown_synack",
	cNoACK:             "no_ack",
	cSecretErrors:      "secret_errors",
	cExtHeaders:        "ext_headers",
	cFragment:          "fragment",
	cSourceRouted:      "source_routed",
	cNotTCP:            "not_tcp",
	cBadAddress:        "bad_address",
	cMalformedShort:    "malformed_short",
	cMalformedIP:       "malformed_ip",
	cMalformedTCP:      "malformed_tcp",
	cMalformedOptions:  "malformed_options",
	cMalformedFlags:    "malformed_flags",
}

func (a *Acceptor) count(c counter)         { a.counters[c]++ }
func (a *Acceptor) add(c counter, n uint64) { a.counters[c] += n }

// Stats is a snapshot of the acceptor.
type Stats struct {
	// Counters by name; every name is present.
	Counters map[string]uint64
	// Conns are the connections holding state (collecting or Ready),
	// Closing those lingering after an answer, Tombstones the forgotten
	// flows remembered.
	Conns, Closing, Tombstones int
	// RequestBytes is the capacity of every request buffer held;
	// BytesHeld adds the fixed costs, as Bound counts them.
	RequestBytes, BytesHeld int
}

// Stats returns the counters and what is held now.
func (a *Acceptor) Stats() Stats {
	a.mu.Lock()
	defer a.mu.Unlock()
	s := Stats{
		Counters:     make(map[string]uint64, nCounters),
		Conns:        a.nLive,
		Closing:      a.nClosing,
		Tombstones:   len(a.tombs),
		RequestBytes: a.held,
	}
	for i := cNone + 1; i < nCounters; i++ {
		s.Counters[counterNames[i]] = a.counters[i]
	}
	s.BytesHeld = a.held + (a.nLive+a.nClosing)*ConnOverhead + len(a.tombs)*TombstoneOverhead
	return s
}
