// Package channel is the wire format between the forwarder and the
// control process: small binary messages over a Unix SOCK_SEQPACKET
// socket, which keeps message boundaries, so a message is one datagram.
//
// Every message starts with an 8-byte header:
//
//	 0       1       2       3       4               8
//	+-------+-------+-------+-------+---------------+------------
//	| 'T'   |version| type  | flags |   sequence    | payload ...
//	+-------+-------+-------+-------+---------------+------------
//
// Hot messages (hello, punt, route, flow event, barrier) are fixed binary
// layouts; cold ones (reload, stats, flow dumps) are calls whose bodies
// are JSON, split into chunks when larger than a message. Decoding checks
// every length and never panics: a malformed message is an error, which
// the receiver counts and logs, and ignores.
package channel
