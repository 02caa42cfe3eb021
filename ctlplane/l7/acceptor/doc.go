// Package acceptor is the userspace TCP acceptor of an l7 VIP (issue
// 14; seed S1 FIG. 32, steps 1 to 4): fed the IP packets the forwarder
// punts for flows it has no entry for, and the time, it answers each
// with at most one reply packet, accepts the connection on behalf of a
// host not yet chosen, collects the client's first HTTP/1.x request
// head, acknowledges it, and reports the connection Ready with what a
// host needs to continue it in its kernel with TCP_REPAIR
// (hostpb.TCPState plus the acknowledged bytes). The caller then either
// forgets the connection (it migrated: no FIN, no RST) or has the
// acceptor answer an HTTP error and close.
//
// # Use
//
//	reply, ev := a.Handle(now, punted, buf)  // send reply in place of the held frame, if any
//	switch ev.Kind {
//	case acceptor.Ready:   // decide on ev.Data[:ev.HeadLen]; send Migrate{State: ev.State, Data: ev.Data}
//	                       // and a.Forget(ev.Key, now) when it is committed (the tombstone
//	                       // covers packets punted before the route exists),
//	                       // or reply = a.Answer(ev.Key, 503, now) and send it
//	case acceptor.Reset:   // abandon any migration of ev.Key
//	}
//	a.Refuse(key, now)     // a migration failed where nobody reset the client: reset it on its next packet
//	a.Expire(now)          // about once a second
//
// # SYN cookies
//
// A SYN creates no state: the SYN-ACK's sequence number is a cookie,
// Linux style. Its top bit is the parity of the secret's epoch, the
// next three the index of the client's MSS in a table of classes (the
// largest class not above the client's MSS), the low 28 a MAC: a two
// block CBC-MAC under AES-128 of the 4-tuple, the client's ISN and the
// MSS index, keyed by a random secret per epoch (Config.SecretEvery).
// The current and the previous epoch's secret are accepted, so a cookie
// lives between one and two epochs. When the client sends timestamps,
// the low five bits of the SYN-ACK's TSval carry its window scale
// (15: none) and SACK-permitted, and come back in the ACK's TSecr;
// without timestamps there is no window scaling and no SACK, as in
// Linux. State is made only by an ACK whose cookie is valid, and only
// while fewer than Config.MaxConns connections hold state; beyond that
// the ACK is answered with a RST (counted table_full).
//
// The cookie, its MAC and the SYN-ACK are package
// dataplane/syncookie's, shared with the forwarder's workers: SYNKeys
// hands out the current epoch's key and the next one's (drawn a whole
// epoch ahead), the timestamp offset and the SYN-ACK's parameters, and
// a worker that holds them answers an l7 VIP's SYN itself with the very
// SYN-ACK Handle would send, using the key of the clock's epoch, which
// is the acceptor's current one then. Such a SYN never reaches the
// acceptor (syn_cookies_sent counts only the SYNs it answers itself).
// The worker also takes the handshake's ACK when it has no data and a
// cookie of its keys: the connection is then made by the client's first
// data segment, which carries the same numbers (seq-1 the client's ISN,
// ack-1 the cookie), so RequestTimeout runs from the first byte.
//
// # What is accepted
//
// In-order data only, up to Config.MaxRequest bytes counted from the
// first byte after the SYN; the advertised window never lets a client
// send more, and its right edge never moves back. Out-of-order segments
// get a duplicate ACK and are not stored; retransmitted bytes are
// re-acknowledged; a segment beyond the window gets an ACK and its
// window is not taken. A RST resets only at exactly the next sequence
// number (elsewhere in the window it earns a challenge ACK, RFC 5961). Data carried on a SYN is not acknowledged (the
// client sends it again). Once the head is complete (Config.Complete)
// the connection is Ready and accepts nothing more: new bytes and a FIN
// are dropped unacknowledged, so the client retransmits them to the host
// after the migration. A FIN that arrives before the head is complete
// is answered with a FIN-ACK and no HTTP response (a client that has
// stopped sending will not read one); a head over MaxRequest is answered
// "431", a bad one (Complete's status) with that status, a head not
// complete within Config.RequestTimeout "408" on the connection's next
// packet. An answer is one segment, response and FIN together; the
// connection then stays in a small closing state (no request bytes)
// that retransmits the answer while the client has not acknowledged it,
// acknowledges and discards what the client still sends (a lingering
// close, so that the client reads the answer rather than a reset), and
// acknowledges its FIN, for at most Config.CloseLinger and at most
// Config.MaxConns connections at once.
//
// An ACK that is not a valid cookie for a flow without state is
// answered with a RST, at most Config.RSTPerSecond a second; a RST
// without state is ignored. Forget leaves a tombstone for
// Config.TombstoneTTL (at most Config.MaxConns of them, oldest evicted
// first), so that a retransmission of the client's first segment that
// reaches the acceptor before the forwarder's route exists is dropped,
// not accepted a second time from its still-valid cookie. The tombstone
// records the connection's ISN: a client that reuses the tuple at once
// (the server closed first) makes a new connection with a new ISN,
// whose valid cookie ACK clears the tombstone and is accepted (counted
// tombstones_reused), since its SYN may have been answered by a worker
// and never come here; a segment with the old ISN, or without a valid
// cookie, is the old connection's and dropped (tombstone_drops). A SYN
// that does come here clears the tombstone too.
//
// IPv4 and IPv6 alike: the cookie's MAC covers either family's tuple,
// and replies are of the client's family. Fragments, packets with IP
// source routes (an IPv6 routing header), IPv6 packets with other
// extension headers (ext_headers: the forwarder punts none, and a
// migrated connection's tunnel carries none) and every malformed packet
// are dropped, each under its own reason; so are clients no reply can
// reach (bad_address: unspecified, loopback, multicast, IPv6 link-local
// or IPv4-mapped). Checksums are assumed verified upstream.
//
// # Memory bound
//
// Request bytes are held only by connections collecting or Ready, each
// in one buffer whose capacity never exceeds MaxRequest; closing
// connections and tombstones hold fixed-size records. The worst case is
//
//	MaxConns × (MaxRequest × 9/8 + ConnOverhead)   live connections
//	+ MaxConns × ConnOverhead                      closing connections
//	+ MaxConns × TombstoneOverhead                 tombstones
//
// with ConnOverhead = 320 bytes and TombstoneOverhead = 256 bytes (the
// record, rounded up to its allocation class, and its map slot twice
// over for the map's spare room); the 1/8 is what Go's allocator may
// add when it rounds a buffer up to its size class. Bound returns it;
// Stats().BytesHeld is the same sum over what is held now, counting
// buffers by capacity. With MaxConns 4096 and MaxRequest 16 KiB it is
// about 75 MiB. A SYN flood holds nothing. Buffers are never reused,
// so the Data of a Ready event stays valid after the acceptor lets go
// of the connection.
//
// # Concurrency and cost
//
// An Acceptor is safe for concurrent use (one mutex); the control
// process calls it from one goroutine. A SYN and an ACK whose cookie
// fails allocate nothing when out has room for the reply (about 80
// bytes; an HTTP answer needs about 150). Expire scans every
// connection; call it about once a second.
package acceptor
