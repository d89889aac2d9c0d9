#!/usr/bin/env bash
# Build the guest kernel (Linux 6.1 from Debian's linux-source-6.1) with our config fragment and
# patches, cached outside the checkout and keyed by everything that goes into it:
#   ${SPLITDBG_CACHE:-~/.cache/splitdbg}/kernel/<key>/{bzImage,vmlinux,build/}
# A cached build prints its directory and returns at once. Prints the directory on stdout; progress
# goes to stderr and the full log to <dir>.log.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=${SPLITDBG_CACHE:-$HOME/.cache/splitdbg}
tarball=/usr/src/linux-source-6.1.tar.xz
[ -f "$tarball" ] || { echo "build-kernel: $tarball missing (apt-get install linux-source-6.1)" >&2; exit 1; }

srcver=$(dpkg-query -W -f='${Version}' linux-source-6.1)
key=$( { echo "linux-source-6.1 $srcver"; cat "$here"/config/*.config; \
         for p in "$here"/patches/*.patch; do [ -e "$p" ] && cat "$p"; done; \
         cat "$0"; } | sha256sum | cut -c1-16)
out=$cache/kernel/$key
if [ -f "$out/.done" ]; then echo "$out"; exit 0; fi

# One build at a time in this cache (several checkouts share it): wait for the lock, then look
# again, since the build we waited for may have been this one.
mkdir -p "$cache/kernel"
exec 9>"$cache/kernel/.lock"
flock 9
if [ -f "$out/.done" ]; then echo "$out"; exit 0; fi

jobs=$(nproc)
log=$out.log
rm -rf "$out" && mkdir -p "$out"
echo "build-kernel: building $key (linux-source-6.1 $srcver) -j$jobs; log in $log; about 6-8 minutes on 2 cores" >&2
{
  tar -C "$out" -xf "$tarball"
  mv "$out/linux-source-6.1" "$out/build"
  cd "$out/build"
  for p in "$here"/patches/*.patch; do
    [ -e "$p" ] || continue
    echo "applying $(basename "$p")"; patch -p1 --forward < "$p"
  done
  make tinyconfig
  scripts/kconfig/merge_config.sh -m .config "$here"/config/*.config
  make olddefconfig
} > "$log" 2>&1 || { echo "build-kernel: configuration failed; see $log" >&2; tail -20 "$log" >&2; exit 1; }

# Every line of the fragment must have survived olddefconfig: a dependency Kconfig silently drops
# is a kernel that does not do what the fragment says.
bad=0
while IFS= read -r line; do
  case "$line" in
    CONFIG_*=*) grep -qxF "$line" "$out/build/.config" || { echo "build-kernel: config wants '$line', got '$(grep -E "^(# )?${line%%=*}[= ]" "$out/build/.config" || echo unset)'" >&2; bad=1; } ;;
    "# CONFIG_"*" is not set") sym=${line#\# }; sym=${sym%% *}
      grep -qE "^$sym=" "$out/build/.config" && { echo "build-kernel: config wants $sym unset, got '$(grep -E "^$sym=" "$out/build/.config")'" >&2; bad=1; } ;;
  esac
done < <(cat "$here"/config/*.config)
[ $bad = 0 ] || exit 1

# `modules` also writes Module.symvers, which out-of-tree modules link against.
( cd "$out/build" && make -j"$jobs" bzImage vmlinux modules scripts_gdb ) >> "$log" 2>&1 \
  || { echo "build-kernel: build failed; see $log" >&2; tail -30 "$log" >&2; exit 1; }
cp "$out/build/arch/x86/boot/bzImage" "$out/build/vmlinux" "$out/"
ln -sfn "$out/build/scripts/gdb/vmlinux-gdb.py" "$out/vmlinux-gdb.py"
touch "$out/.done"
ln -sfn "$key" "$cache/kernel/latest"
# Keep the three newest finished builds (each is about 2 GB); other checkouts may use older keys.
ls -1t "$cache"/kernel/*/.done 2>/dev/null | tail -n +4 | xargs -r -n1 dirname | xargs -r rm -rf
echo "build-kernel: done in ${SECONDS}s" >&2
echo "$out"
