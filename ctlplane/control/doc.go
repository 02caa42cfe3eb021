// Package control is Tether's control process: it starts and supervises
// the forwarder process, talks to it over the channel (punt decisions,
// routes, flow events, calls), keeps the connection inventory, owns the
// running configuration and the operator's run-time backend states, and
// answers the admin API.
//
// The forwarder keeps forwarding when the control process dies. A control
// process that starts while a forwarder runs adopts it (by the PID file)
// instead of starting a second one, and re-reads its flows. A forwarder
// that restarts gets its flows back from the inventory, so even NAT
// connections keep their SNAT ports.
package control
