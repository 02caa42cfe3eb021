#!/usr/bin/env bash
# Installs the Debian packages a job shells out to, but only those whose
# commands are missing, so that `make demo` and .ci/run work on a fresh
# Debian machine that has nothing but Go. The lists live here and nowhere
# else: make demo runs the "demo" set, .ci/run the "test" set, make
# bench-system and make bench-dam the "bench" set.
#
#   scripts/deps.sh demo   # make demo
#   scripts/deps.sh test   # make test (the demo set and more)
#   scripts/deps.sh bench  # make bench-system and make bench-dam (the demo set, the peers and real clients and servers)
set -euo pipefail

# command:package pairs, each with the reason it is needed. The demo's
# network (e2e.Net, e2e.NewLB, e2e.NewSwitchedLB) is built by running
# these commands; tetherd itself talks netlink and needs none of them.
demo=(
  ip:iproute2       # namespaces, veth pairs, bridge, routes; `ip netns exec` starts every helper
  ethtool:ethtool   # checksum and segmentation offload off on veth senders (AF_XDP topology)
  sysctl:procps     # forwarding and rp_filter in each namespace
)
test=(
  "${demo[@]}"
  curl:curl                           # system tests fetch through the VIP with curl
  nginx:nginx                         # e2e.TestL7Migration: an unmodified server behind the agent's PROXY v2 splice
  nft:nftables                        # e2e.TestHealthAndLoad drops health messages with nft
  bird:bird2                          # e2e.TestBGP: the router the unit announces its VIPs to
  protoc:protobuf-compiler            # make check-generated regenerates the protobuf code
  mke2fs:e2fsprogs                    # make vm makes config disks
  qemu-system-x86_64:qemu-system-x86  # the VM boot test runs the image under qemu
)
# bench/lbbench: real backends, clients and peers around the unit.
bench=(
  "${demo[@]}"
  nginx:nginx        # the backends' HTTP servers
  wrk:wrk            # the HTTP client: keep-alive, new connections, parallel 1 MiB downloads
  curl:curl          # the one long stream
  haproxy:haproxy    # a peer: HAProxy mode tcp
  nft:nftables       # a peer: kernel DNAT
  nstat:iproute2     # the client's SYN retransmissions
  taskset:util-linux # pins the load balancer to core 1 and everything else to core 0
  # bench/dambench (make bench-dam): the clustered peer and its probes
  conntrackd:conntrackd # a peer: replicates conntrack between two nftables NAT units
  conntrack:conntrack   # lists the units' entries and prints the injected ones (conntrack -E)
  stdbuf:coreutils      # line-buffers conntrack -E into a pipe
  tcpdump:tcpdump       # dambench --hops: the probes' handshakes at the router and the hosts
)

usage() {
  echo "usage: $0 demo|test|bench ..." >&2
  exit 2
}
[ $# -gt 0 ] || usage

want=()
for set in "$@"; do
  case $set in
    demo) want+=("${demo[@]}") ;;
    test) want+=("${test[@]}") ;;
    bench) want+=("${bench[@]}") ;;
    *) usage ;;
  esac
done

# A user's PATH often lacks the sbin directories where ip, ethtool,
# sysctl, nft and mke2fs live; look there too rather than reinstall what
# is present. apt-get needs them on PATH as well (dpkg runs ldconfig).
export PATH=$PATH:/usr/local/sbin:/usr/sbin:/sbin

cmds=() missing=() pkgs=()
for pair in "${want[@]}"; do
  cmd=${pair%%:*} pkg=${pair#*:}
  case " ${cmds[*]} " in *" $cmd "*) continue ;; esac
  cmds+=("$cmd")
  if ! command -v "$cmd" >/dev/null; then
    missing+=("$cmd (package $pkg)")
    pkgs+=("$pkg")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "==> dependencies ($*): ${cmds[*]}: all installed"
  exit 0
fi

echo "==> dependencies ($*): missing ${missing[*]}"
if [ "$(id -u)" -ne 0 ]; then
  echo "deps: installing packages needs root: run this as root (sudo make demo), or install them yourself: apt-get install ${pkgs[*]}" >&2
  exit 1
fi
if ! command -v apt-get >/dev/null; then
  echo "deps: this machine has no apt-get: install the packages that provide ${missing[*]} with its package manager" >&2
  exit 1
fi
echo "==> installing ${pkgs[*]} with apt-get"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${pkgs[@]}"

# The package names are Debian's; prove they provided the commands.
still=()
for cmd in "${cmds[@]}"; do
  command -v "$cmd" >/dev/null || still+=("$cmd")
done
if [ ${#still[@]} -gt 0 ]; then
  echo "deps: apt-get installed ${pkgs[*]} but ${still[*]} still missing" >&2
  exit 1
fi
echo "==> dependencies ($*): installed ${pkgs[*]}"
