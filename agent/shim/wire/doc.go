// Package wire is the hand-off protocol between the host agent
// (agent/migrate) and the listener shims of applications (agent/shim),
// over a Unix SOCK_SEQPACKET socket: one frame per record, so a
// descriptor passed with SCM_RIGHTS belongs to exactly one frame.
//
// A frame is a 4-byte header (version, type, body length big-endian)
// and a body of exactly that length, at most MaxFrame bytes in all.
// Every decoder checks the version, the type, the exact length of each
// type's body and every address: a frame that fails is refused and the
// connection is closed, since the two ends no longer agree.
//
//	shim → agent  Register {addresses the shim's listener serves}
//	agent → shim  Handoff  {id, client, vip} + one descriptor (SCM_RIGHTS)
//	shim → agent  Ack      {id, accepted}
//	shim → agent  Closed   {id}: the application closed a migrated conn
//
// The package imports only the standard library, since applications
// link it through agent/shim.
package wire
