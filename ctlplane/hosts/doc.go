// Package hosts is the unit's end of the host streams (issue 13): a gRPC
// server on hosts.listen with mutual TLS, one bidirectional stream per
// agent. The host's identity is its client certificate's; a hello that
// names another host is refused. The server keeps, per host, the
// flow-ID mappings the host should hold with a sequence, answers each
// hello with a resync decision (none when the agent's holding matches,
// else the whole set), pushes later changes in numbered batches and
// records the acknowledgements, and tracks each host's stream (address,
// state, since, messages, last error) for the admin API.
//
// Nothing produces mappings yet: the forwarder's tunnel flows will call
// Publish in the next step of issue 13; the tests call it now.
package hosts
