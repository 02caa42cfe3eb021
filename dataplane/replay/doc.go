// Package replay runs frames from a port through one dataplane worker
// until the port runs dry, the way a worker runs on a live port but
// driven by the frames' own timestamps, and summarises what happened per
// VIP, backend and drop reason. With a capture port it is deterministic:
// the same capture and configuration give the same output, byte for byte,
// which is what the golden tests and `tetherd replay` rely on.
package replay
