"""Guest-physical memory through QEMU's gdbstub, via gdb (in-process or pygdbmi).

QEMU's stub reads virtual addresses unless `Qqemu.PhyMemMode:1` is set. In the user's gdb we switch
it on for each read and back off after, since the user expects virtual addresses; in a gdb we own
(GdbMI) it stays on until a virtual read needs it off. About 10 MB/s: the
shared RAM file is about 1000x faster when the target has one.
"""
from __future__ import annotations

import re

from ..errors import MemoryReadError, SplitdbgError, TargetGone
from .base import PhysicalMemory

_MTREE_LINE = re.compile(r"^\s*([0-9a-f]+)-([0-9a-f]+) \(prio -?\d+, (\w+)\): ([^\s@]+)", re.M)
CHUNK = 0x10000  # gdb splits into 0x800-byte packets itself; this bounds one MI round trip


def parse_mtree_ram(text: str) -> list[tuple[int, int]]:
    """RAM ranges ([start, end)) of the system address space in `info mtree -f` output."""
    for view in text.split("FlatView #")[1:]:
        if 'AS "memory"' not in view:
            continue
        lines = _MTREE_LINE.findall(view)
        ram_names = {name for _, _, kind, name in lines if kind == "ram"}
        # ROM-shadowed pieces of the RAM block (PAM) are still backed by RAM: keep them.
        spans = sorted((int(s, 16), int(e, 16) + 1) for s, e, kind, name in lines
                       if name in ram_names and kind in ("ram", "rom"))
        merged: list[tuple[int, int]] = []
        for s, e in spans:
            if merged and merged[-1][1] == s:
                merged[-1] = (merged[-1][0], e)
            else:
                merged.append((s, e))
        return merged
    raise SplitdbgError("QEMU's `info mtree -f` shows no system address space")


class GdbstubMemory(PhysicalMemory):
    name = "gdbstub"

    def __init__(self, dbg):
        self.dbg = dbg
        self._ranges = parse_mtree_ram(dbg.monitor("info mtree -f"))

    def ram_ranges(self):
        return self._ranges

    def _read(self, addr, size):
        # One switch for the whole read; the user's gdb gets virtual addressing back even when a
        # chunk fails (physical_mode restores it in `finally`).
        out = bytearray()
        with self.dbg.physical_mode():
            while len(out) < size:
                n = min(CHUNK, size - len(out))
                try:
                    out += self.dbg.read_memory(addr + len(out), n, physical=True)
                except TargetGone:
                    raise
                except SplitdbgError as exc:
                    raise MemoryReadError(addr + len(out), n, str(exc)) from exc
        return bytes(out)

    def describe(self):
        total = sum(e - s for s, e in self._ranges)
        how = "physical mode kept on in our gdb" if self.dbg.keeps_physical_mode else "physical mode per read"
        return f"gdbstub through gdb ({total >> 20} MiB of RAM, {how})"
