#!/usr/bin/env bash
# make vm: builds the appliance from the project's static binaries and
# Debian's packages only (linux-image-amd64, busybox-static), into
#   vm/out/vmlinuz        the Debian kernel, as packaged
#   vm/out/initramfs.img  the whole appliance (gzipped cpio; runs from RAM)
#   vm/out/manifest.txt   package versions and SHA-256 of both
# Packages are fetched with apt-get download into vm/cache (so apt's
# sources are the only origin). The image's bytes depend only on the
# commit (its time stamps every file), the Go toolchain and the package
# versions: two builds of one commit on one day's Debian are identical.
# See docs/appliance.md.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=/usr/local/go/bin:$PATH

out=${VM_OUT:-vm/out}
cache=${VM_CACHE:-vm/cache}
modules=virtio_pci,virtio_net,virtio_blk,virtio_console,ext4,crc32c_generic,tun,button,evdev
epoch=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}

mkdir -p "$out" "$cache"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The kernel package linux-image-amd64 points at (the current ABI).
if ! kpkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}') || [ -z "$kpkg" ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "vm/build.sh: apt knows no linux-image-amd64; run apt-get update (as root) first" >&2
    exit 1
  fi
  apt-get update -qq
  kpkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
fi
kver=${kpkg#linux-image-}

fetch() { # package → path of its .deb in the cache
  local pkg=$1 ver deb
  ver=$(apt-cache policy "$pkg" | awk '/Candidate:/ {print $2}')
  deb=$(ls "$cache"/"${pkg}"_*.deb 2>/dev/null | grep -F "_$(echo "$ver" | sed 's/:/%3a/')_" | head -1 || true)
  if [ -z "$deb" ]; then
    # As root, apt would fetch as its _apt user, which may not write
    # here; it warns and falls back. Say so up front instead.
    local sandbox=()
    [ "$(id -u)" -eq 0 ] && sandbox=(-o APT::Sandbox::User=root)
    (cd "$cache" && apt-get download -q "${sandbox[@]}" "$pkg=$ver" >&2)
    deb=$(ls "$cache"/"${pkg}"_*.deb | grep -F "_$(echo "$ver" | sed 's/:/%3a/')_" | head -1)
  fi
  echo "$deb"
}
kdeb=$(fetch "$kpkg")
bdeb=$(fetch busybox-static)
echo "vm: kernel $kpkg ($(basename "$kdeb")), $(basename "$bdeb")"

dpkg-deb -x "$kdeb" "$work/kernel"
dpkg-deb -x "$bdeb" "$work/busybox"

mkdir -p "$work/bin"
for cmd in tether-init tetherd tetherctl tether-agent; do
  CGO_ENABLED=0 go build -trimpath -buildvcs=false -ldflags='-s -w -buildid=' -o "$work/bin/$cmd" "./cmd/$cmd"
done

cp -r vm/rootfs "$work/files"
chmod -R u=rwX,go=rX "$work/files"
{
  echo "Tether appliance $(git describe --always --dirty 2>/dev/null || echo unknown)"
  echo "kernel $kver, $(basename "$bdeb" .deb)"
} > "$work/files/etc/tether-release"

cp "$work/kernel/boot/vmlinuz-$kver" "$out/vmlinuz"
go run ./vm/mkimage --kernel-root "$work/kernel" --kernel-version "$kver" \
  --busybox "$work/busybox/bin/busybox" --bin "$work/bin" --files "$work/files" \
  --modules "$modules" --epoch "$epoch" --out "$out/initramfs.img"

{
  echo "kernel package: $(basename "$kdeb")"
  echo "busybox package: $(basename "$bdeb")"
  echo "go: $(go version)"
  echo "epoch: $epoch"
  (cd "$out" && sha256sum vmlinuz initramfs.img)
  echo "size: $(du -b "$out/vmlinuz" | cut -f1) + $(du -b "$out/initramfs.img" | cut -f1) bytes"
} > "$out/manifest.txt"
cat "$out/manifest.txt"
