// Package tun is a port over a Linux TUN device: frames
// are raw IPv4/IPv6 packets, and the unit's kernel routes the traffic
// Tether owns (VIPs, SNAT addresses) into the device and whatever Tether
// writes back out of it. It needs no special NIC support and works
// wherever /dev/net/tun does, at the cost of one system call per packet.
//
// With offload, each packet crosses the device behind a virtio-net header
// (IFF_VNET_HDR) and the device announces checksum and TCP segmentation
// offload (TUNSETOFFLOAD): the kernel then hands over locally sent and
// forwarded TCP super-packets of up to 64 KiB whole, with a partial
// checksum, and takes them back the same way, so that the forwarder's one
// header rewrite and one system call move tens of kilobytes. That is what
// wireguard-go's TUN offload does. The kernel cannot cut an IP-in-IP
// super-packet, so the port cuts those itself as it writes them.
//
// The device is made with ioctl(TUNSETIFF) directly: songgao/water, used
// before, cannot ask for virtio-net headers.
//
// The device's file descriptor is non-blocking; Receive reads until the
// device has nothing more or the batch is full, and Wait blocks in poll(2)
// for an idle worker.
package tun
