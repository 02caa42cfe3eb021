// Package sessions is the host's session table (seed S1 §1, FIG. 23A):
// the sessions the host's applications report as established and
// terminated, which the agent holds authoritatively and sends to a unit
// (agent/streams) so that the units can keep a session's connections on
// this host.
//
// A Session is identified by its kind and the fields the kind uses: a
// TCP connection's canonical 4-tuple, a client address (optionally
// scoped to one VIP address and port), or an application-defined key
// scoped to a VIP address and port. Establishing a session that is
// already held refreshes it; client-IP sessions end by themselves once
// idle for their timeout, unless established again.
//
// The package uses only the standard library: the client library
// (agent/sessionclient) that applications link shares its Session type.
package sessions
