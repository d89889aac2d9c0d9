"""`splitdbg gdb [HOST]:PORT`: an interactive gdb attached to the guest, symbols and plugin loaded."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from .. import lab
from ..errors import SplitdbgError

PLUGIN = Path(__file__).resolve().parent.parent / "gdb_plugin" / "load.py"


def register(sub) -> None:
    p = sub.add_parser("gdb", help="start gdb attached to TARGET with the split commands loaded")
    p.add_argument("target", help=":PORT or HOST:PORT of QEMU's gdbstub")
    p.add_argument("--vmlinux", help="kernel with DWARF (default: the lab build)")
    p.set_defaults(func=cmd_gdb)


def parse_target(target: str) -> tuple[str, int]:
    host, _, port = target.rpartition(":")
    if not port.isdigit():
        raise SplitdbgError(f"target {target!r}: expected :PORT or HOST:PORT")
    return host or "localhost", int(port)


def cmd_gdb(args) -> int:
    gdb = shutil.which("gdb")
    if gdb is None:
        raise SplitdbgError("gdb is not installed (apt-get install gdb)")
    host, port = parse_target(args.target)
    vmlinux = args.vmlinux
    if vmlinux is None:
        try:
            vmlinux = lab.artifacts()["vmlinux"]
        except SplitdbgError:
            vmlinux = None
    argv = [gdb, "-q"]
    if vmlinux:
        argv += ["-ex", f"file {vmlinux}"]
    argv += ["-ex", f"target remote {host}:{port}", "-ex", f"source {PLUGIN}"]
    os.execv(gdb, argv)
