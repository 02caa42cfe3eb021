#!/usr/bin/env bash
# vm/mkconfig.sh DIR IMAGE [SIZE]: makes a config disk for the appliance
# from a directory holding appliance.yaml and tether.yaml (or agent.yaml):
# an ext4 filesystem labelled tether-config, 16 MiB unless SIZE says
# otherwise. No root needed (mke2fs -d copies the files in). Attach it as
# the first virtio disk: qemu -drive file=IMAGE,if=virtio,format=raw.
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: vm/mkconfig.sh DIR IMAGE [SIZE]" >&2
  exit 2
fi
dir=$1 img=$2 size=${3:-16M}
if [ ! -f "$dir/tether.yaml" ] && [ ! -f "$dir/agent.yaml" ]; then
  echo "vm/mkconfig.sh: $dir has neither tether.yaml nor agent.yaml" >&2
  exit 1
fi
rm -f "$img"
PATH=$PATH:/sbin:/usr/sbin mke2fs -q -F -t ext4 -L tether-config -d "$dir" "$img" "$size"
echo "$img: config disk from $dir ($(ls "$dir" | tr '\n' ' '))"
