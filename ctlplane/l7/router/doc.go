// Package router is the unit's request router (design S1 §4, FIG. 25;
// DESIGN.md §4 "l7"): an HTTP/1.1 proxy for hosts without an agent and
// for requests a rule marks, where the unit cannot migrate the client's
// connection and must stay in the path instead.
//
// The router keeps the client's connection and decides every request on
// it separately, through the caller's Decide callback (the rules engine
// lives elsewhere), so the second request of a keep-alive connection may
// go to another host. It sends requests to hosts over connections it
// keeps open and shares among all clients (the seed's "connection
// aggregation": many short client connections over a few long host
// connections), and it opens those connections from an address dedicated
// to the router, not the VIP, so that when several units run, every
// host's answer returns to the unit that asked.
//
// What a client sees when something fails:
//
//   - 503 Service Unavailable: Decide found no host; the host is at
//     MaxConnsPerHost and none became free within DialTimeout; or the
//     router is at MaxClientConns (answered on accept, then closed).
//     An ejected host is not a reason for 503 (see below).
//   - 502 Bad Gateway: the host refused the connection, or closed or
//     reset it before a complete response header. For a request
//     without a body, a refused connection is first retried on another
//     host, and the client sees that host's answer.
//   - 504 Gateway Timeout: the host did not accept the connection
//     within DialTimeout (for a request without a body, after a retry
//     on another host failed too, or found no other host), or sent no
//     response header within ResponseHeaderTimeout.
//   - 408 Request Timeout: the client sent part of a request header and
//     then stalled past ReadHeaderTimeout, or did not send its whole body
//     within RequestBodyTimeout (if no response has started yet). A
//     client that opens a connection and sends nothing, or is idle
//     between requests, is closed without an answer, as the standard
//     library does: an unsolicited 408 would confuse a client that is
//     about to reuse the connection.
//   - 431 Request Header Fields Too Large: the header passed
//     MaxHeaderBytes (the standard library answers this one).
//
// The router ejects a host that keeps failing (passive health checking,
// or outlier detection), since it does not see the unit's health
// verdicts. It counts, per Target.Key, consecutive failures that say the
// host is unreachable or broken: a dial that failed (refused,
// unreachable) or timed out, or a connection dialed for the request
// closed or reset before a response header. A slow answer is not one, nor a reused connection the host
// closed, nor anything after a response header came. Any response
// header from the host, a 5xx too, starts the count again. After
// EjectAfter failures the key is ejected for EjectFor: Decide's avoid
// names it, so Decide sends its requests elsewhere. When the ejection
// ends the key is on probation: it takes requests again, one success
// readmits it, and one failure ejects it again for twice as long as the
// last time, up to MaxEjectFor. A Decide with nothing but ejected hosts
// for a request should still choose one, and the router still sends it
// there: a failure may be the router's own (its source address, say),
// and 503 for everything would be worse than trying.
//
// A request without a body whose dial failed or timed out has sent
// nothing to its host, so the router decides it once more, with the
// failed key avoided, and sends it there if Decide chose another key;
// each attempt has its own DialTimeout. A request with a body is never
// retried: the router keeps no copy of what it may have read. Stats
// counts retries, the keys ejected now and ejections so far.
//
// Upgrades (WebSocket and any other "Connection: Upgrade") are proxied:
// the host's 101 answer is passed on and the two connections are joined
// byte for byte until either side closes. From then on no timeout of the
// router applies; the connection still counts against MaxClientConns.
//
// Bodies are streamed in both directions through pooled 32 KiB buffers,
// and every write to the client is flushed at once, so the router holds
// no more of a body than one buffer per direction and server-sent events
// or long polls reach the client as the host writes them.
//
// Every connection the router takes counts in [Stats], with the requests
// by rule and by status class, host dials and reuses, errors by kind,
// retries and ejections, for the admin view.
package router
