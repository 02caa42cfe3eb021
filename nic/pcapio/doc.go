// Package pcapio is a port over capture files: received frames are read
// from a pcap or pcapng file, transmitted frames are written to a pcap
// file. Replaying a capture through the dataplane with it is
// deterministic: frames keep their capture timestamps, which also drive
// the dataplane's clock, and output frames carry the timestamp of the
// input frame they came from.
package pcapio
