// Package vm holds the appliance image's build (build.sh, mkconfig.sh,
// mkimage/, rootfs/) and its boot test: the image boots under qemu with
// network namespaces as its world, and must answer its admin API and
// forward real TCP traffic. See docs/appliance.md.
package vm
