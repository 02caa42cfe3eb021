// Package shim is the listener a Go server uses so that the Tether host
// agent can hand it migrated connections (issue 14; seed S1, FIG. 35-37).
//
// A Tether unit may accept a client's connection to an l7 VIP itself,
// read the client's first request, choose a host, and migrate the live
// connection to it. The host's agent recreates the connection in the
// host's kernel (TCP_REPAIR), bound to the VIP, with the request already
// in its receive queue. The application then has to take it: with this
// package, by replacing
//
//	ln, err := net.Listen("tcp", "192.0.2.50:80")
//
// with
//
//	ln, err := shim.Listen("tcp", "192.0.2.50:80", shim.Options{})
//
// The listener accepts ordinary connections on the address as before,
// and also connects to the agent's hand-off socket (Options.Socket,
// default DefaultSocket) and registers the address. Accept returns both
// kinds alike: a migrated connection is a *shim.Conn (a *net.TCPConn
// made with net.FileConn, so io.Copy still splices) whose LocalAddr is
// the VIP and whose RemoteAddr is the client; the first bytes read are
// the client's request. Code that type-asserts *net.TCPConn should use
// shim.TCPConn(c) instead.
//
// The application holds a migrated connection's only descriptor (the
// agent closes its own once it has sent it), so its Close sends the FIN
// at once, as for a connection it accepted itself; a connection the
// shim refuses (Accept not called within Options.DeliverTimeout, or a
// descriptor that does not match the listener) is closed with an RST.
// Closing a migrated connection tells the agent, which tells the unit
// that the connection is gone, so the unit drops its route at once. If
// the application dies, the agent sees its hand-off connection drop and
// reports all its migrated connections ended.
//
// If the agent is not running, Listen still succeeds: the shim connects
// in the background and again, with back-off, whenever the agent
// restarts; meanwhile the agent has no listener for the address and
// migrated connections to it fail (the unit falls back to its routes).
//
// Permissions: the hand-off socket is the agent's, mode 0600 (root
// only), or 0660 with the group migration.handoff_group names; the
// application needs write access to it: run it in that group, or as
// root. Whoever can connect may register for any VIP and receive its
// clients' connections, which is why nothing looser is offered.
//
// The package imports only the standard library and
// golang.org/x/sys/unix, so that applications can link it cheaply.
package shim
