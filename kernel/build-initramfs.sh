#!/usr/bin/env bash
# Build the guest's initramfs: busybox-static, our init and agent, plus everything staged under
# STAGING (modules in lib/modules/splitdbg/, programs in usr/bin/; see kernel/module/Makefile).
# Usage: build-initramfs.sh STAGING OUT.cpio.gz    (cheap: well under a second)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
staging=$1 out=$2
busybox=/bin/busybox   # from busybox-static: it must run without a libc in the guest
dpkg -s busybox-static >/dev/null 2>&1 || { echo "build-initramfs: busybox-static not installed" >&2; exit 1; }
root=$(mktemp -d); trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{bin,sbin,usr/bin,proc,sys,dev,tmp,run,etc,lib/modules/splitdbg}
cp "$busybox" "$root/bin/busybox"
cp "$here/initramfs/init" "$root/init"
cp "$here/initramfs/splitdbg-agent" "$root/usr/bin/splitdbg-agent"
[ -d "$staging" ] && cp -a "$staging"/. "$root"/
( cd "$root" && find . -print0 | sort -z | cpio --null -o -H newc --quiet --reproducible ) | gzip -1 > "$out.tmp"
mv "$out.tmp" "$out"
