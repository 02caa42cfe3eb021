// Package floors checks that imports point down: every package of the
// tree stands on a floor, and a package may import only packages on
// lower floors, so the contract and the ground-floor helpers never
// depend on the dataplane, the dataplane never on the control process,
// and tools link only what they use.
//
// The floors are written down once, in docs/architecture.md (the table
// under "## Floors"); this package reads that table, and its test runs
// the check over the whole tree, so the document and the code cannot
// drift apart.
package floors
