"""Memory backends: guest-physical bytes, the bottom layer.

PhysicalMemory (base.py) is the interface; backends: SharedRamFile (QEMU's memory-backend-file,
mmap), GdbstubMemory (through gdb), ImageFile (a raw image on disk), SyntheticMemory (tests).
`open_memory` picks the shared RAM file when the target has one, the gdbstub otherwise.
"""
from __future__ import annotations

import os
import re

from ..errors import SplitdbgError
from .base import PhysicalMemory, q35_ram_ranges  # noqa: F401
from .gdbstub import GdbstubMemory
from .image import ImageFile  # noqa: F401
from .shared_file import SharedRamFile
from .synthetic import SyntheticMemory  # noqa: F401


def find_ram_file(dbg) -> tuple[str, int] | None:
    """(path, size) of the target's shared memory-backend-file, asked of QEMU itself."""
    objects = dbg.monitor("qom-list /objects")
    for name in re.findall(r"^(\S+) \(child<memory-backend-file>\)", objects, re.M):
        path = dbg.monitor(f"qom-get /objects/{name} mem-path").strip().strip('"')
        share = dbg.monitor(f"qom-get /objects/{name} share").strip()
        size = int(dbg.monitor(f"qom-get /objects/{name} size").strip())
        if share == "true" and path:
            return path, size
    return None


def open_memory(dbg=None, ram_file: str | None = None, prefer: str = "auto") -> PhysicalMemory:
    """The fastest backend the target offers. prefer: 'auto', 'shared-ram-file' or 'gdbstub'."""
    if prefer not in ("auto", "shared-ram-file", "gdbstub"):
        raise SplitdbgError(f"unknown memory backend {prefer!r}")
    size = None
    if ram_file is None and dbg is not None and prefer != "gdbstub":
        found = find_ram_file(dbg)
        if found:
            ram_file, size = found
    if ram_file and prefer != "gdbstub":
        if os.access(ram_file, os.R_OK):
            return SharedRamFile(ram_file, size)
        if prefer == "shared-ram-file":
            raise SplitdbgError(f"guest RAM file {ram_file} is not readable here (another machine?)")
    if prefer == "shared-ram-file":
        raise SplitdbgError("the target has no shared RAM file (start QEMU with memory-backend-file,share=on)")
    if dbg is None:
        raise SplitdbgError("no shared RAM file and no gdb connection: nothing to read memory with")
    return GdbstubMemory(dbg)
