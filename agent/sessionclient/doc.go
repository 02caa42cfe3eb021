// Package sessionclient is the library applications use to report their
// sessions to the host's agent (seed S1 §1: SessionEstablished and
// SessionTerminated), over the agent's local API socket. The agent holds
// the host's session table and sends it to a unit, so that the units
// keep a session's later connections on this host.
//
//	c := sessionclient.New("/run/tether-agent/agent.sock")
//	s, err := sessionclient.TCP(conn, "web")
//	...
//	err = c.Established(ctx, s)
//	defer c.Terminated(ctx, s)
//
// Errors wrap sessions.ErrInvalid (a malformed session),
// sessions.ErrFull (the host holds sessions.max sessions) and
// sessions.ErrUnknown (a terminate of a session the agent does not
// hold: never established, terminated already, or a client-IP session
// that expired). The package uses the standard library and
// agent/sessions only, so applications link nothing else of Tether.
package sessionclient
