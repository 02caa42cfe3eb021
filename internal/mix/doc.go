// Package mix holds the MurmurHash3 64-bit finalizer, which Tether's
// stable hashes (the flow hash that picks a backend, Maglev's
// permutations, the health protocol's row sums) apply so that every
// input bit reaches the low bits a modulus or a sum keeps. Each of those
// hashes is a contract between units and versions, pinned by its own
// package's tests; this function must never change.
package mix
