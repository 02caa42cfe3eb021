// Package maglev builds the Maglev consistent-hashing lookup table
// (Eisenbud et al., "Maglev: A Fast and Reliable Software Network Load
// Balancer", NSDI 2016, §3.4 "Consistent Hashing"): a table of prime size
// M in which every backend fills entries in the order of its own
// permutation of 0..M-1, taking turns, so that load is even (each backend
// within one entry of the others when weights are equal) and removing one
// of N backends moves little more than the 1/N of entries it owned. A
// flow's backend is entry[hash mod M], one memory read.
//
// The permutation comes from the backend's name alone (see permutation
// in maglev.go), never from a random seed or its position in the list,
// so units behind one router build identical tables from identical
// configurations and agree on every flow without talking to each other.
// Weights are honoured by giving heavier backends more frequent turns,
// which reduces to the paper's algorithm when weights are equal.
//
// Tables are built by the control side and are immutable afterwards, so
// any number of workers may look up concurrently without locks.
package maglev
