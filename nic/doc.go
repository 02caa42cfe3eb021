// Package nic defines how the forwarder moves frames in and out: the Port
// interface, which every packet I/O driver implements (AF_XDP, TUN, pcap
// files, in-memory rings), and Frame, a buffer the driver owns and lends
// to the dataplane.
//
// Frames move in batches. Receive lends frames to the caller; the caller
// gives every one of them back, either by Transmit (the port sends it and
// reuses the buffer) or by Release (the port reuses it at once). Drivers
// reserve Headroom bytes in front of every received frame so that the
// dataplane can prepend an encapsulation header without copying.
package nic
