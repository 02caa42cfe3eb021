// Package pkttest builds packets for tests and tools with gopacket, and
// checks packets independently of the dataplane: it decodes them with
// gopacket and recomputes every checksum with a deliberately plain
// RFC 1071 loop, so a bug in the dataplane's header or checksum code
// cannot hide behind the same bug in the check.
package pkttest
