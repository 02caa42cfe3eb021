// Package header provides typed views over packet headers held in byte
// slices: Ethernet (with 802.1Q/802.1ad tags), IPv4, IPv6 and its extension
// headers, TCP (with options), UDP, ICMPv4 and ICMPv6, plus the Internet
// checksum in full and incremental (RFC 1624) forms.
//
// A view is a named []byte that starts at the header. Accessors read and
// write the slice in place through encoding/binary; nothing is copied or
// allocated. Accessors do not check bounds: a caller must first establish
// that the slice is long enough, with the size constants and the
// validation helpers here (for example [IPv4.HeaderLength] after checking
// [IPv4MinSize]). The dataplane's parser does that once per packet and
// then uses the unchecked accessors, so that a malformed frame is turned
// into a counted drop, never an out-of-range read.
//
// Building packets field by field is the business of tests and tools
// (they use gopacket); this package only reads and rewrites.
package header
