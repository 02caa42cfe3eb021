// Package healthpb is the health-and-load protocol between host agents
// and Tether units: the protobuf messages (health.proto, generated into
// health.pb.go by `make proto`), the datagram framing with optional
// compression and a per-host MAC (wire.go), per-host keys derived from a
// master secret and bound to the endpoints a host may report on
// (hostkey.go), replay protection by sequence window and freshness
// (replay.go), the checks that a host speaks only for itself
// (identity.go), the checks every received message must pass before it
// may change any state (validate.go), and the table checksums both
// sides compute the same way (sum.go).
package healthpb
