// Package cpuset keeps a process's threads off the cores its pinned
// workers own.
//
// A poll-mode worker owns its core: anything else scheduled there (the
// Go runtime's threads, the forwarder's control-link and neighbour
// goroutines, the control process) takes time from the packet path and
// adds its scheduling delay to every packet's latency. Linux has no
// per-process affinity, only per-thread, and a new thread inherits its
// creator's: so Avoid sets the affinity of every thread the process has
// now, and the threads they create later inherit it. A worker pins its
// own thread afterwards; the Go runtime creates threads for a locked
// thread from its template thread, which Avoid also moved, so a worker's
// core never leaks into another thread.
//
// Both the forwarder and the control process call it, which is why it
// lives in a package of the ground floor.
package cpuset
