// Package ring is an in-memory port for tests and benchmarks: frames are
// injected by the test, received by the dataplane, and what the dataplane
// transmits is drained by the test. It is the dataplane's NIC stand-in in
// the way gVisor's channel endpoint is the netstack's.
//
// A Port is driven by one goroutine: the one that injects, runs the
// worker step and drains. All buffers are allocated by New.
package ring
