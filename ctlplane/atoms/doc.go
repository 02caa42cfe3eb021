// Package atoms is the distributed atom manager (seed S1's DAM, FIG.
// 22–24): a table of atoms, key → host and data, spread over the units
// of a cluster. Each unit holds a portion; any unit adds, deletes and
// queries atoms; the portions are kept by replication between units over
// the atom stream (api/atompb: gRPC, mutual TLS, members only).
//
// An atom is whole: added, deleted and copied, never patched. Versions
// of one key are ordered by their stamp (the adder's clock, kept
// increasing), the later winning; a delete names the version it deletes
// and turns it into a zombie, kept for the protocol's dead time so that
// late packets still reach the old host, then dropped.
//
// Placement is by rendezvous hashing over the live members: at level L
// an atom is held by its adder and by the L members that rank highest
// for its key, the adder left out; when the adder is gone from the
// cluster, by the L+1 that rank highest (its copies are re-replicated so
// that it survives another failure); level Full puts it everywhere. A
// query asks the L+1 highest first, then every other member. When
// members come and go, every holder pushes its atoms to the members
// that newly ought to hold them; a unit that starts (or meets a member
// for the first time) pulls from each member the atoms it ought to
// hold, and is ready once it has.
//
// An atom whose adder left the cluster (or restarted: a boot ID names
// an adder's life) expires its timeout after this unit learnt it,
// unless some unit adds it again; atoms learnt by a query are kept as a
// cache for a short time.
//
// The manager knows nothing of flows or sessions: keys, hosts and data
// are the caller's (ctlplane/control). Membership comes from the caller
// too (SetMembers), so that this package and ctlplane/cluster stay
// apart.
package atoms
