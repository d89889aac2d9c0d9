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
from .image import ImageError, ImageFile, ImageMeta  # noqa: F401
from .shared_file import SharedRamFile
from .synthetic import SyntheticMemory  # noqa: F401


def find_ram_file(dbg) -> tuple[str, int] | None:
    """(path, size) of the machine's shared memory-backend-file, asked of QEMU itself.

    QEMU 7.2's `info memdev` prints no mem-path, so the QOM tree is read instead: the machine's
    `memory-backend` link names the RAM backend (e.g. "/objects/mem"); its mem-path, size and share.
    None when RAM is not a shared file (share=off: the file is not what the guest sees).
    """
    objects = dbg.monitor("qom-list /objects")
    files = re.findall(r"^(\S+) \(child<memory-backend-file>\)", objects, re.M)
    if not files:
        return None
    link = dbg.monitor("qom-get /machine memory-backend").strip().strip('"')
    if link.startswith("/objects/") and link[len("/objects/"):] in files:
        files = [link[len("/objects/"):]]
    elif len(files) > 1:
        return None  # several file backends (NUMA?) and no machine link: the layout is unknown
    name = files[0]
    share = dbg.monitor(f"qom-get /objects/{name} share").strip()
    path = dbg.monitor(f"qom-get /objects/{name} mem-path").strip().strip('"')
    size_text = dbg.monitor(f"qom-get /objects/{name} size").strip()
    if share != "true" or not path or not size_text.isdigit():
        return None
    return path, int(size_text)


def open_memory(dbg=None, ram_file: str | None = None, prefer: str = "auto") -> PhysicalMemory:
    """The fastest backend the target offers. prefer: 'auto', 'shared-ram-file' or 'gdbstub'.

    The shared RAM file when QEMU has one that this machine can read and whose size matches what
    QEMU says; the gdbstub otherwise. `describe()` of the result says which was chosen.
    """
    if prefer not in ("auto", "shared-ram-file", "gdbstub"):
        raise SplitdbgError(f"unknown memory backend {prefer!r}")
    size = None
    why = "the target has no shared RAM file (start QEMU with memory-backend-file,share=on)"
    if ram_file is None and dbg is not None and prefer != "gdbstub":
        found = find_ram_file(dbg)
        if found:
            ram_file, size = found
    if ram_file and prefer != "gdbstub":
        if not os.access(ram_file, os.R_OK):
            why = f"guest RAM file {ram_file} is not readable here (QEMU on another machine?)"
        elif size is not None and os.path.getsize(ram_file) != size:
            why = (f"guest RAM file {ram_file} holds {os.path.getsize(ram_file)} bytes but QEMU's backend has "
                   f"{size}: a stale file of an earlier guest?")
        else:
            mem = SharedRamFile(ram_file, size)
            mem.dbg = dbg  # registers still come through gdb
            return mem
    if prefer == "shared-ram-file":
        raise SplitdbgError(why)
    if dbg is None:
        raise SplitdbgError("no shared RAM file and no gdb connection: nothing to read memory with")
    return GdbstubMemory(dbg)
