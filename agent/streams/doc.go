// Package streams is the agent's end of the host streams (issue 13): one
// gRPC stream with mutual TLS to every unit of the agent's
// configuration, kept up with bounded exponential back-off with jitter.
// Each hello says what the agent holds from that unit (the unit's boot,
// the last sequence, a count and a sum of the flow-ID mappings); the
// unit answers with what the host should hold, and the agent replaces
// its set on a full resync, checks the count and sum, and acknowledges.
// Later batches are applied in sequence and acknowledged.
//
// The mappings are held in memory and given to a Sink (the host's
// kernel: the agent's XDP program, agent/tunnel) before each
// acknowledgement, so that an acknowledged mapping is one the host can
// restore packets with.
package streams
