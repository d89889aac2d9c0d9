#!/usr/bin/env bash
# Start the splitdbg guest under Bochs 2.7 (Intel CPU with VMX+EPT), headless, in the foreground
# with the Bochs debugger on stdin/stdout: a person types debugger commands, or a program drives
# them through pipes (splitdbg/dbg/bochs.py, splitdbg/lab_bochs.py). Bochs starts stopped at the
# reset vector (`<bochs:1>` prompt): `c` boots.
#
# Everything about one run lives in DIR (default ${SPLITDBG_RUN:-/tmp/splitdbg}/bochs-$$):
#   bochsrc, serial.txt (com1 = the guest console), bochs.log (Bochs's own log); port 0xe9 output goes to stderr
# The boot medium is an El Torito ISO (isolinux + bzImage + initrd + the kernel command line),
# cached in build/bochs/iso/<hash of its inputs>.iso (xorriso, 0.1 s to build).
#
# Options: --kernel F  --initrd F  --append "ARGS"  --mem MiB (64)  --dir DIR
#          --cpu MODEL (corei7_skylake_x: VMX with EPT; ryzen: SVM with NPT)  --smp N (CPUs, 1)  --ips N (10000000: emulated instructions per emulated second with clock sync=none; fewer = busy waits cost fewer instructions)
#          --rc FILE (debugger commands to run first, bochs -rc)  --prepare (write DIR/bochsrc, print it, exit)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
kernel="" initrd="" append="" mem=64 smp=1 dir="" cpu=corei7_skylake_x ips=10000000 rc="" prepare=0
while [ $# -gt 0 ]; do
  case "$1" in
    --kernel) kernel=$2; shift 2 ;;
    --initrd) initrd=$2; shift 2 ;;
    --append) append=$2; shift 2 ;;
    --mem) mem=$2; shift 2 ;;
    --dir) dir=$2; shift 2 ;;
    --cpu) cpu=$2; shift 2 ;;
    --smp) smp=$2; shift 2 ;;
    --ips) ips=$2; shift 2 ;;
    --rc) rc=$2; shift 2 ;;
    --prepare) prepare=1; shift ;;
    *) echo "run-bochs: unknown option $1" >&2; exit 2 ;;
  esac
done
if [ -z "$kernel" ] || [ -z "$initrd" ]; then
  # Default: what `make guest` built.
  arts=$repo/build/guest.json
  [ -f "$arts" ] || { echo "run-bochs: $arts missing (make guest)" >&2; exit 1; }
  [ -n "$kernel" ] || kernel=$(sed -n 's/.*"bzImage":"\([^"]*\)".*/\1/p' "$arts")
  [ -n "$initrd" ] || initrd=$(sed -n 's/.*"initrd":"\([^"]*\)".*/\1/p' "$arts")
fi
[ -f "$kernel" ] || { echo "run-bochs: kernel '$kernel' not found (make guest builds it)" >&2; exit 1; }
[ -f "$initrd" ] || { echo "run-bochs: initrd '$initrd' not found (make guest builds it)" >&2; exit 1; }
command -v bochs >/dev/null || { echo "run-bochs: bochs not installed (make deps)" >&2; exit 1; }
command -v xorriso >/dev/null || { echo "run-bochs: xorriso not installed (make deps)" >&2; exit 1; }
isolinux=/usr/lib/ISOLINUX/isolinux.bin ldlinux=/usr/lib/syslinux/modules/bios/ldlinux.c32
[ -f "$isolinux" ] && [ -f "$ldlinux" ] || { echo "run-bochs: isolinux/syslinux-common not installed (make deps)" >&2; exit 1; }
# The whole command line sits on isolinux's APPEND line: a double quote in it is passed through.
# Bochs's TSC runs far slower than the 3.5 GHz the CPU model claims (about 75x at ips=10M), so on
# the TSC clocksource a guest `sleep 6` took about 40 s of wall time on 1 CPU and over 400 s on 2
# (it looked like a hang); the HPET counts emulated time at the ips rate.
# splitdbg.out=kmsg: the run's output reaches the console through printk (polled), not the tty,
# whose transmit interrupt can get lost under Bochs SMP (kernel/initramfs/init); devkmsg=on lifts
# the rate limit on /dev/kmsg writes.
cmdline="console=ttyS0,115200 panic=-1 clocksource=hpet tsc=unstable printk.devkmsg=on splitdbg.out=kmsg $append"
case "$cmdline" in *$'\n'*) echo "run-bochs: newline in --append" >&2; exit 2 ;; esac

# Boot medium, cached by its inputs.
cache=$repo/build/bochs/iso
mkdir -p "$cache"
key=$( { sha256sum "$kernel" "$initrd" "$isolinux" "$ldlinux" | cut -d' ' -f1; printf '%s\n' "$cmdline"; } | sha256sum | cut -c1-16)
iso=$cache/$key.iso
if [ ! -f "$iso" ]; then
  tree=$(mktemp -d); trap 'rm -rf "$tree"' EXIT
  mkdir -p "$tree/isolinux"
  cp "$isolinux" "$ldlinux" "$tree/isolinux/"
  cp "$kernel" "$tree/bzImage"
  cp "$initrd" "$tree/initrd.gz"
  printf 'DEFAULT linux\nPROMPT 0\nTIMEOUT 0\nLABEL linux\n  KERNEL /bzImage\n  INITRD /initrd.gz\n  APPEND %s\n' "$cmdline" \
    > "$tree/isolinux/isolinux.cfg"
  xorriso -as mkisofs -quiet -o "$iso.$$.tmp" -b isolinux/isolinux.bin -c isolinux/boot.cat \
    -no-emul-boot -boot-load-size 4 -boot-info-table "$tree" 2>/dev/null
  mv "$iso.$$.tmp" "$iso"   # atomic: two runs building the same medium do not clash
  rm -rf "$tree"; trap - EXIT  # (exec below would skip an EXIT trap)
  # Keep the 8 newest media (each --run/--load gives its own command line).
  ls -1t "$cache"/*.iso 2>/dev/null | tail -n +9 | xargs -r rm -f
fi
touch "$iso"

dir=${dir:-${SPLITDBG_RUN:-/tmp/splitdbg}/bochs-$$}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
rm -f "$dir/serial.txt"
# Headless: this Debian build has no `nogui` library; `rfb` with timeout=0 does not wait for a
# viewer (it listens on the first free port from 5900). The sound devices are off: the ALSA
# back end aborted Bochs ("buffer overflow detected") on a machine without a sound card.
cat > "$dir/bochsrc" <<EOF
# written by qemu-scripts/run-bochs.sh
megs: $mem
cpu: model=$cpu, count=$smp, ips=$ips, reset_on_triple_fault=0
romimage: file=/usr/share/bochs/BIOS-bochs-latest
vgaromimage: file=/usr/share/bochs/VGABIOS-lgpl-latest
display_library: rfb, options="timeout=0"
ata0-master: type=cdrom, path=$iso, status=inserted
boot: cdrom
clock: sync=none, time0=local
magic_break: enabled=1
port_e9_hack: enabled=1
com1: enabled=1, mode=file, dev=$dir/serial.txt
speaker: enabled=0
sound: waveoutdrv=dummy, waveindrv=dummy, midioutdrv=dummy
log: $dir/bochs.log
debugger_log: -
panic: action=fatal
error: action=report
info: action=report
debug: action=ignore
EOF
printf '%s\n' "$cmdline" > "$dir/cmdline"
printf '%s\n' "$iso" > "$dir/iso"
if [ "$prepare" = 1 ]; then
  echo "SPLITDBG-BOCHS {\"dir\":\"$dir\",\"bochsrc\":\"$dir/bochsrc\",\"iso\":\"$iso\",\"serial_log\":\"$dir/serial.txt\",\"log\":\"$dir/bochs.log\"}"
  exit 0
fi
args=(-q -f "$dir/bochsrc")
[ -n "$rc" ] && args+=(-rc "$rc")
exec bochs "${args[@]}"
