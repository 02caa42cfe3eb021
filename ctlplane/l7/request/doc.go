// Package request reads the head of a client's first HTTP/1.x request
// on a connection an l7 VIP's acceptor took (issue 14, seed S1 §4): the
// part the unit needs to choose a host before it migrates the
// connection.
//
// Complete tells the acceptor, as bytes arrive, whether it holds the
// whole head yet, or that the head can never be good (and which status
// to answer with). Parse turns a complete head into a Request.
//
// The parser is strict where request smuggling lives, because the host
// the connection migrates to reads the same bytes again with its own
// parser: whatever two parsers could read differently (a folded line, a
// bare CR or LF, Content-Length and Transfer-Encoding together,
// disagreeing lengths, a field name with whitespace before its colon)
// is refused with 400 rather than guessed at (RFC 9112 §2.2, §3, §5,
// §6). Nothing it is given makes it panic, and Parse's results are
// substrings of one copy of the head, so a parse allocates little.
package request
