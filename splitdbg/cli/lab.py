"""`splitdbg lab up|down|status|run`: the bundled guest under QEMU."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from .. import lab
from ..errors import SplitdbgError


def register(sub) -> None:
    p = sub.add_parser("lab", help="start, stop and use the bundled QEMU guest")
    lsub = p.add_subparsers(dest="lab_command", required=True)

    up = lsub.add_parser("up", help="boot a guest (detached) with the gdbstub on PORT")
    up.add_argument("--port", type=int, default=1234)
    up.add_argument("--smp", type=int, default=1, choices=[1, 2, 3, 4])
    up.add_argument("--mem", type=int, default=512, help="guest RAM in MiB (default 512)")
    up.add_argument("--paging", type=int, default=4, choices=[4, 5], help="4- or 5-level (LA57) paging")
    up.add_argument("--stopped", action="store_true", help="hold the CPUs until gdb continues them")
    up.add_argument("--load", default="", help="modules to load at boot, comma-separated (e.g. splitkernel)")
    up.add_argument("--run", default="", help="command from /usr/bin to run after boot")
    up.add_argument("--append", default="", help="extra kernel command line")
    up.add_argument("--json", action="store_true")
    up.set_defaults(func=cmd_up)

    down = lsub.add_parser("down", help="stop the guest on PORT and delete its RAM file")
    down.add_argument("--port", type=int, default=1234)
    down.add_argument("--quiet", action="store_true", help="say nothing and succeed when no guest runs")
    down.set_defaults(func=cmd_down)

    st = lsub.add_parser("status", help="what is known about the guest on PORT")
    st.add_argument("--port", type=int, default=1234)
    st.set_defaults(func=cmd_status)

    run = lsub.add_parser("run", help="run a shell command in the guest (through its second serial port)")
    run.add_argument("--port", type=int, default=1234)
    run.add_argument("--timeout", type=float, default=60)
    run.add_argument("cmd", nargs="+")
    run.set_defaults(func=cmd_run)

    bx = lsub.add_parser("bochs", help="boot the guest under Bochs (Intel VMX+EPT), stop it, dump its physical memory")
    bx.add_argument("--load", default="", help="modules to load at boot, comma-separated (e.g. splitkernel,sktest)")
    bx.add_argument("--run", default="", help="command from /usr/bin to run before the stop (sk-bochs-break)")
    bx.add_argument("--mem", type=int, default=64, help="guest RAM in MiB (default 64; 32 is too small for the initramfs)")
    bx.add_argument("--append", default="", help="extra kernel command line")
    bx.add_argument("--timeout", type=float, default=600, help="seconds to wait for the stop (default 600)")
    bx.add_argument("--smp", type=int, default=1, help="CPUs (default 1)")
    bx.add_argument("--cpu", default="corei7_skylake_x",
                    help="Bochs CPU model (default corei7_skylake_x: VMX+EPT; ryzen (SVM+NPT) did not boot this kernel: no console output in 10 min)")
    bx.add_argument("--out", required=True, help="directory for image.raw, image.json, serial.txt, bochs.log")
    bx.add_argument("--json", action="store_true", help="print the sidecar")
    bx.set_defaults(func=cmd_bochs)


def cmd_up(args) -> int:
    append = args.append
    if args.load:
        append += f" splitdbg.load={args.load}"
    if args.run:
        append += f' splitdbg.run="{args.run}"'
    guest = lab.up(port=args.port, smp=args.smp, mem_mib=args.mem, paging=args.paging,
                   stopped=args.stopped, append=append.strip())
    info = {k: v for k, v in vars(guest).items() if not k.startswith("_")}
    if args.json:
        print(json.dumps(info))
    else:
        state = "stopped at reset, waiting for gdb" if args.stopped else "ready"
        print(f"guest {state}: gdbstub :{guest.port}, {guest.smp} CPU(s), {args.paging}-level paging, "
              f"RAM file {guest.ram_file}\n  console log {guest.serial_log}  monitor {guest.monitor}  pid {guest.pid}")
    return 0


def cmd_bochs(args) -> int:
    from .. import lab_bochs
    log = (lambda *a, **k: print(*a, file=sys.stderr, **k)) if args.json else print
    cap = lab_bochs.capture(args.out, load=args.load, run=args.run, mem_mib=args.mem, append=args.append,
                            boot_timeout=args.timeout, cpu=args.cpu, smp=args.smp, log=log)
    if args.json:
        print(cap.sidecar.read_text(), end="")
    else:
        size = sum(r["size"] for r in cap.ranges)
        print(f"image {cap.image} ({size >> 20} MiB in {len(cap.ranges)} range(s)), sidecar {cap.sidecar}, "
              f"mode {cap.mode}\n  times: " + ", ".join(f"{k} {v}" for k, v in cap.times.items()))
    return 0


def cmd_down(args) -> int:
    try:
        lab.down(args.port)
    except SplitdbgError as exc:
        if args.quiet:
            return 0
        raise
    if not args.quiet:
        print(f"guest on port {args.port} stopped")
    return 0


def cmd_status(args) -> int:
    guest = lab.Guest.find(args.port)
    print(json.dumps({"status": guest.status(),
                      **{k: v for k, v in vars(guest).items() if not k.startswith("_")}}, indent=2))
    return 0


def cmd_run(args) -> int:
    rc, out = lab.Guest.find(args.port).run(" ".join(args.cmd), timeout=args.timeout)
    sys.stdout.write(out)
    return rc
