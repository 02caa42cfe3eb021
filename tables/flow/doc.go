// Package flow is the forwarder's per-worker flow table: a bounded,
// open-addressing hash table (Robin Hood probing with backward-shift
// deletion) for IPv4 and IPv6 flows, with idle aging by protocol and TCP
// state and with eviction that prefers closed, then idle flows.
//
// One Shard belongs to one worker and is never touched by another
// goroutine, so nothing here is locked or atomic. Memory is allocated once
// when the shard is made; inserts never grow it.
//
// An entry maps a 5-tuple to a rewrite: "set the destination to A:PortA
// and the source to B:PortB", or for tunnel modes "send to A, tagged with
// B". Entries of address-translating modes come in pairs: the entry for
// the client's direction and its peer for the replies, whose key is
// (B:PortB → A:PortA)'s reverse. The pair ages and is evicted as one
// connection; see Meta.
package flow
