// Package dataplane is the forwarder's per-packet work: parse a frame,
// find its flow, choose a backend for a new flow (Maglev over the VIP's
// healthy, weighted backends), rewrite the packet for the VIP's mode
// (nat, halfnat, the flow-ID tunnel, ipip) and hand it back to the port.
//
// A Pipeline belongs to one worker and is used by one goroutine. It owns
// its flow-table shard, its tunnel flow IDs, its fragment state and its
// counters; nothing in it is locked or atomic. Read-mostly state (VIPs,
// backends, Maglev tables, neighbours) lives in an immutable Snapshot
// that the control side builds and swaps in between batches.
//
// Process allocates nothing and makes no interface calls per packet. A
// frame that cannot be forwarded is dropped and counted under a named
// Drop reason, or passed to the host and counted under a Pass reason;
// nothing in a frame can make Process panic or read out of range.
package dataplane
