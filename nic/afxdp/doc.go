// Package afxdp is a port over AF_XDP sockets: frames move between the
// NIC and a UMEM region shared with the kernel through four rings (fill,
// RX, TX, completion), with no system call per packet on receive and one
// "kick" per batch on transmit.
//
// An XDP program, built in Go with cilium/ebpf's asm package (no compiler
// at run time), redirects into the sockets only the packets Tether owns:
// those addressed to a VIP or SNAT address, and, for half-NAT services,
// those coming from a backend's service port. Everything else, ARP and
// the unit's own traffic included, passes to the kernel as before.
//
// The program is attached through a bpf_link, so it goes away with the
// process, even when the process is killed; a program left attached the
// old way (netlink, by another tool or an older version) is replaced, not
// stacked. Zero-copy binding is tried first and copy mode used where the
// driver refuses it (veth does); Mode reports which is in use.
package afxdp
