// Package cluster makes a unit a member of a cluster of units (issue
// 15, first slice): who is alive, and failure detection with bounds an
// operator chooses. It wraps hashicorp/memberlist, an implementation of
// SWIM: every member probes one other member per probe interval,
// directly and, when that fails, through a few others; a member that
// fails its probe is suspected, gossiped as such, and declared dead when
// its suspicion times out without it refuting it.
//
// # Trust
//
// Gossip is encrypted and authenticated (AES-256-GCM) with one 32-byte
// key every unit holds, and memberlist is told to refuse anything else
// (GossipVerifyIncoming and GossipVerifyOutgoing): a node without the
// key can neither join nor inject state, so a unit never trusts state
// from a non-member. What it refuses is counted (View's Refused): the
// decryption failures as memberlist logs them, since it reports them
// nowhere else, and the members whose metadata this package refuses.
//
// # Metadata
//
// Each member publishes a small binary record (meta.go): a protocol
// version, its boot ID (random per start, so a restart is visible even
// under the same name) and its tunnel source addresses. A record that
// is malformed, oversized or of another version makes its alive
// messages ignored (memberlist's AliveDelegate), so that member never
// enters this unit's list.
//
// # Failure detection bound
//
// With N members, probe interval I, probe timeout T, suspicion
// multiplier S and memberlist's SuspicionMaxTimeoutMult M (6), a member
// that stops answering is declared dead by a given unit after at most
//
//	N·I·A + T + M·S·max(1, log10 N)·I
//
// where A is memberlist's awareness factor (1 on a healthy unit, up to
// 8 when the unit itself misses acks: it slows its own probing rather
// than accuse others). The first term is the wait for its turn in the
// probe round (members are probed round robin in a shuffled order), the
// second the failed probe, the third the suspicion timeout, which falls
// towards S·max(1, log10 N)·I as other members confirm the suspicion
// (and is that minimum at once in clusters of fewer than S members,
// where no confirmations are awaited). With the defaults (I 1s, T
// 500ms, S 4) and 3 units: at most 3s + 0.5s + 4s on a healthy unit.
// The verdict then spreads by gossip within a few gossip intervals. A
// unit that leaves gracefully is seen as left at once.
package cluster
