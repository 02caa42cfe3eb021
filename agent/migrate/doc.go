// Package migrate is the host's side of connection migration (issue 14;
// seed S1, FIG. 32-37): a unit's acceptor accepted a client's TCP
// connection to an l7 VIP, read and acknowledged its first request,
// chose this host, and sends the connection's state over the host
// stream. The Migrator recreates the connection in this host's kernel
// with TCP_REPAIR (Upload), bound to the VIP, with the acknowledged
// bytes in its receive queue, and hands it to the application:
//
//  1. to a listener shim (agent/shim) that registered the VIP:port over
//     the hand-off socket, which receives the descriptor (SCM_RIGHTS)
//     and acknowledges within a bound; or
//  2. to a configured splice: the agent connects to an unmodified local
//     server, sends a PROXY protocol v2 header naming the client, and
//     copies both ways; or
//  3. to nobody: the client is reset.
//
// A hand-off that fails after the upload resets the client with an RST
// of the connection's own sequence numbers: the agent does while it
// holds the socket, a shim that refuses a socket it was sent does (the
// agent closes its copy once the descriptor is on its way, so that the
// application's close is the last and sends the FIN at once). Each connection handed over
// is reported ended exactly once (the Config's Ended callback), so the
// unit drops its route at once.
package migrate
