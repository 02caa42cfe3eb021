// Package atompb is the atom stream between Tether units: the protobuf
// messages and the gRPC service of the distributed atom manager
// (atom.proto, generated into atom.pb.go and atom_grpc.pb.go by `make
// proto`), the bounds every receiver enforces and the checks every
// received message must pass before it may change any state
// (validate.go).
package atompb
