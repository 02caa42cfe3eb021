// Package hostpb is the host stream between host agents and Tether
// units: the protobuf messages and the gRPC service (host.proto,
// generated into host.pb.go and host_grpc.pb.go by `make proto`), the
// bounds every receiver enforces and the checks every received message
// must pass before it may change any state (validate.go), and the
// order-free sum both sides keep over a host's mappings (sum.go).
package hostpb
