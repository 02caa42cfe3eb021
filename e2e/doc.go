// Package e2e builds test networks out of Linux network namespaces and
// veth pairs, starts real processes inside them, and tears everything
// down again, even after a failure or an interrupt. The system tests,
// the demo and the throughput benchmark all use it. It also measures
// what the machine charges for a thread's wake-up (WakeTimes), and
// keeps the tests whose margins a CPU-heavy neighbour breaks apart from
// such neighbours (Exclusive).
//
// Everything here needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN) and the
// iproute2 `ip` command. Traffic stays inside the namespaces this package
// creates: nothing is routed to the host's own network.
package e2e
