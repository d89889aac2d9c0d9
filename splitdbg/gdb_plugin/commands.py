"""The `split` prefix command and its subcommands (one class each)."""
from __future__ import annotations

import argparse
import json
import shlex

import gdb

from ..arch import x86_paging as xp
from ..dbg.inprocess import GdbInProcess
from ..errors import SplitdbgError
from . import session


class Split(gdb.Command):
    """Inspect a split kernel's containers and the guest's page tables.

split status              which memory backend is in use, CPU paging state
split pagetable [CR3]     merged ranges of an address space (default: the current CR3)"""

    def __init__(self):
        super().__init__("split", gdb.COMMAND_DATA, gdb.COMPLETE_COMMAND, prefix=True)


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse would print and exit: in gdb, an error is a GdbError
        raise gdb.GdbError(f"{self.prog}: {message}\n{self.format_usage().strip()}")


class _Command(gdb.Command):
    """Base: parses arguments with argparse, turns our errors into gdb errors."""

    name = ""

    def __init__(self):
        super().__init__(f"split {self.name}", gdb.COMMAND_DATA)
        self.parser = _Parser(prog=f"split {self.name}", add_help=False)
        self.arguments(self.parser)

    def arguments(self, parser):
        parser.add_argument("--json", action="store_true")

    def invoke(self, arg, from_tty):
        args = self.parser.parse_args(shlex.split(arg))
        try:
            self.run(args)
        except SplitdbgError as exc:
            raise gdb.GdbError(str(exc))


def _paging_state():
    regs = GdbInProcess().read_registers(("cr0", "cr3", "cr4", "efer"))
    return regs["cr3"], xp.PagingMode.from_regs(regs["cr0"], regs["cr4"], regs["efer"])


class Status(_Command):
    """Memory backend in use and the current CPU's paging state.
Usage: split status [--json]"""

    name = "status"

    def run(self, args):
        mem = session.memory()
        cr3, mode = _paging_state()
        info = {"backend": mem.name, "backend_detail": mem.describe(), "cr3": cr3, "paging_levels": mode.levels,
                "nxe": mode.nxe, "module": None}
        if args.json:
            gdb.write(json.dumps(info) + "\n")
            return
        gdb.write(f"memory backend : {mem.describe()}\n")
        gdb.write(f"paging         : {mode.levels}-level, EFER.NXE={int(mode.nxe)}, CR3={cr3:#x}\n")
        gdb.write("split kernel   : not inspected yet (module introspection comes with the module)\n")


class PageTable(_Command):
    """Merged ranges of an address space: start-end -> physical, permissions, page size.
Usage: split pagetable [CR3] [--range START-END] [--json]
Without CR3, the current vCPU's. Ranges merge when virtually and physically contiguous with equal attributes."""

    name = "pagetable"

    def arguments(self, parser):
        super().arguments(parser)
        parser.add_argument("cr3", nargs="?", type=lambda s: int(s, 0))
        parser.add_argument("--range", dest="window")

    def run(self, args):
        cur_cr3, mode = _paging_state()
        cr3 = cur_cr3 if args.cr3 is None else args.cr3
        start = end = None
        if args.window:
            a, _, b = args.window.partition("-")
            start, end = int(a, 16), int(b, 16)
        d = xp.dump(session.memory(), cr3, mode, start=start, end=end, on_error="collect")
        if args.json:
            gdb.write(json.dumps({"cr3": cr3, "ranges": [
                {"start": r.start, "end": r.end, "phys": r.phys, "perms": r.perms, "page_size": r.page_size,
                 "global": r.global_} for r in d.ranges], "problems": [str(p) for p in d.problems]}) + "\n")
            return
        for r in d.ranges:
            gdb.write(f"{r}\n")
        for p in d.problems:
            gdb.write(f"problem: {p}\n")
        gdb.write(f"{len(d.ranges)} ranges, {d.tables_read} table pages read ({mode.levels}-level, CR3={cr3:#x})\n")


Split()
Status()
PageTable()
