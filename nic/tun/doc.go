// Package tun is a port over a Linux TUN device (songgao/water): frames
// are raw IPv4/IPv6 packets, and the unit's kernel routes the traffic
// Tether owns (VIPs, SNAT addresses) into the device and whatever Tether
// writes back out of it. It needs no special NIC support and works
// wherever /dev/net/tun does, at the cost of one system call per packet.
//
// The device's file descriptor is non-blocking; Receive reads until the
// device has nothing more or the batch is full, and Wait blocks in poll(2)
// for an idle worker.
package tun
