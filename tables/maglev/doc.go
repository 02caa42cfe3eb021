// Package maglev builds the Maglev consistent-hashing lookup table
// (Eisenbud et al., "Maglev: A Fast and Reliable Software Network Load
// Balancer", NSDI 2016, §3.4): a table of prime size M in which every
// backend fills entries in the order of its own permutation of 0..M-1,
// taking turns, so that load is even and removing one of N backends moves
// only about 1/N of the entries. A flow's backend is entry[hash % M].
//
// Tables are built by the control side and are immutable afterwards, so
// any number of workers may look up concurrently.
package maglev
