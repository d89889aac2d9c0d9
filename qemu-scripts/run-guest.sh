#!/usr/bin/env bash
# Start the splitdbg guest under QEMU TCG, detached. Everything about one guest lives in
#   ${SPLITDBG_RUN:-/tmp/splitdbg}/guest-PORT/   (serial logs, monitor and QMP sockets, pid)
# and its RAM in /dev/shm/splitdbg-PORT-<nonce>, deleted when QEMU exits. Prints one line:
#   SPLITDBG-GUEST {"port":..,"ram_file":..,"ram_size":..,"monitor":..,"qmp":..,"serial_log":..,...,"pid":..}
#
# Options: --port N (gdbstub, default 1234)  --smp N (1)  --mem MiB (512)  --stopped (wait for gdb)
#          --paging 4|5 (5 = -cpu max with LA57)  --cpu MODEL (overrides --paging's model)
#          --kernel F  --initrd F  --append "ARGS"
set -euo pipefail
port=1234 smp=1 mem=512 stopped=0 paging=4 kernel="" initrd="" append="" cpu_override=""
while [ $# -gt 0 ]; do
  case "$1" in
    --port) port=$2; shift 2 ;;
    --smp) smp=$2; shift 2 ;;
    --mem) mem=$2; shift 2 ;;
    --stopped) stopped=1; shift ;;
    --paging) paging=$2; shift 2 ;;
    --kernel) kernel=$2; shift 2 ;;
    --initrd) initrd=$2; shift 2 ;;
    --append) append=$2; shift 2 ;;
    --cpu) cpu_override=$2; shift 2 ;;
    *) echo "run-guest: unknown option $1" >&2; exit 2 ;;
  esac
done
[ -f "$kernel" ] || { echo "run-guest: kernel '$kernel' not found (make guest builds it)" >&2; exit 1; }
[ -f "$initrd" ] || { echo "run-guest: initrd '$initrd' not found (make guest builds it)" >&2; exit 1; }
case "$paging" in 4) cpu="max,la57=off" ;; 5) cpu="max" ;; *) echo "run-guest: --paging 4 or 5" >&2; exit 2 ;; esac
[ -n "$cpu_override" ] && cpu=$cpu_override

dir=${SPLITDBG_RUN:-/tmp/splitdbg}/guest-$port
if [ -f "$dir/pid" ] && kill -0 "$(cat "$dir/pid")" 2>/dev/null; then
  echo "run-guest: a guest already runs on port $port (pid $(cat "$dir/pid")); splitdbg lab down --port $port" >&2; exit 1
fi
if (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null; then
  echo "run-guest: port $port is in use by another program" >&2; exit 1
fi
rm -rf "$dir"; mkdir -p "$dir"
ram=/dev/shm/splitdbg-$port-$$-$RANDOM
ram_size=$((mem * 1024 * 1024))

args=(
  -name "splitdbg-$port" -accel tcg -cpu "$cpu" -smp "$smp"
  -object "memory-backend-file,id=mem,size=${mem}M,mem-path=$ram,share=on"
  -machine q35,memory-backend=mem -m "${mem}M"
  -kernel "$kernel" -initrd "$initrd"
  -append "console=ttyS0 panic=-1 $append"
  -display none -no-reboot -nodefaults
  # ttyS0: console, logged and reachable on a socket for people (socat - UNIX:console.sock)
  -chardev "socket,id=ser0,path=$dir/console.sock,server=on,wait=off,logfile=$dir/serial.log"
  -serial chardev:ser0
  # ttyS1: the command agent (kernel/initramfs/splitdbg-agent), driven by splitdbg.lab
  -chardev "socket,id=ser1,path=$dir/agent.sock,server=on,wait=off,logfile=$dir/agent.log"
  -serial chardev:ser1
  -monitor "unix:$dir/monitor.sock,server=on,wait=off"
  -qmp "unix:$dir/qmp.sock,server=on,wait=off"
  -gdb "tcp:127.0.0.1:$port"
  -pidfile "$dir/pid" -daemonize
)
[ "$stopped" = 1 ] && args+=(-S)
qemu-system-x86_64 "${args[@]}" 2> "$dir/qemu.err" || { echo "run-guest: QEMU failed: $(cat "$dir/qemu.err")" >&2; rm -f "$ram"; exit 1; }
pid=$(cat "$dir/pid")
# The RAM file outlives QEMU unless someone deletes it: a small watcher does, whatever ends QEMU.
setsid bash -c "while kill -0 $pid 2>/dev/null; do sleep 0.5; done; rm -f '$ram'" </dev/null >/dev/null 2>&1 &
info=$(printf '{"port":%d,"pid":%d,"smp":%d,"paging":%d,"ram_file":"%s","ram_size":%d,"dir":"%s","monitor":"%s","qmp":"%s","serial_log":"%s","console":"%s","agent":"%s","kernel":"%s","initrd":"%s","stopped":%s}' \
  "$port" "$pid" "$smp" "$paging" "$ram" "$ram_size" "$dir" "$dir/monitor.sock" "$dir/qmp.sock" "$dir/serial.log" \
  "$dir/console.sock" "$dir/agent.sock" "$kernel" "$initrd" "$([ $stopped = 1 ] && echo true || echo false)")
echo "$info" > "$dir/info.json"
echo "SPLITDBG-GUEST $info"
