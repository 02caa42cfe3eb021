// Package encap is the encapsulation map of the flow-ID tunnel (seed S1,
// FIGS. 38-39): each tunneled connection gets a 32-bit flow ID, unique
// within the forwarder that originates the tunnel, which replaces the
// TCP/UDP ports of its packets on the way to the host; the host looks the
// ID up to restore the original addresses and ports. The forwarder side
// allocates IDs and keeps ID → 5-tuple so that the mapping can be handed
// to the host; the host side stores the mappings it is given.
//
// IDs are laid out so that workers never collide without talking to each
// other: worker w of n owns the IDs congruent to w modulo n, and index i
// of its table is ID i*n + w. The table is a fixed array, so a lookup is
// one multiplication away and nothing is allocated after New.
package encap
