"""A raw guest-physical memory image on disk (a copy of the RAM file: offline snapshots)."""
from __future__ import annotations

import json
import mmap
import os

from ..errors import MemoryReadError, NotAvailable, SplitdbgError
from .base import PhysicalMemory
from .shared_file import SharedRamFile


class ImageFile(SharedRamFile):
    """Same q35 layout as QEMU's RAM file, so `cp /dev/shm/splitdbg-* image.raw` is an image."""

    name = "image"

    def describe(self):
        return f"memory image {self.path} ({self.ram_size >> 20} MiB)"


class SplitdbgImage(PhysicalMemory):
    """A "splitdbg-image" v1 dump: IMAGE.raw holding guest-physical ranges back to back and the
    IMAGE.json sidecar saying where each range sits (written by splitdbg.lab_bochs, and by the QEMU
    side). Only the listed ranges are readable; registers come from the sidecar."""

    name = "splitdbg-image"

    def __init__(self, sidecar: str):
        self.sidecar_path = sidecar
        with open(sidecar) as f:
            self.meta = json.load(f)
        if self.meta.get("format") != "splitdbg-image" or self.meta.get("version") != 1:
            raise SplitdbgError(f"{sidecar}: not a splitdbg-image v1 sidecar")
        raw = sidecar[:-5] + ".raw" if sidecar.endswith(".json") else sidecar + ".raw"
        self.path = raw
        self._ranges = sorted((r["gpa"], r["gpa"] + r["size"], r["offset"]) for r in self.meta["ranges"])
        need = max((off + e - s for s, e, off in self._ranges), default=0)
        fd = os.open(raw, os.O_RDONLY)
        try:
            size = os.fstat(fd).st_size
            if size < need:
                raise SplitdbgError(f"{raw} holds {size} bytes, its sidecar lists ranges up to {need}")
            self._map = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ) if size else None
        finally:
            os.close(fd)

    def ram_ranges(self):
        return [(s, e) for s, e, _ in self._ranges]

    def _read(self, addr, size):
        for s, e, off in self._ranges:
            if s <= addr < e:
                o = off + addr - s
                return bytes(self._map[o:o + size])
        raise MemoryReadError(addr, size, "not in the image")

    def registers(self, cpu: int | None = None) -> dict[str, int]:
        cpus = self.meta.get("cpus") or []
        want = 0 if cpu is None else cpu
        for c in cpus:
            if c.get("cpu") == want:
                return dict(c.get("regs", {}))
        raise NotAvailable(f"{self.sidecar_path} has no registers for CPU {want}")

    def describe(self):
        total = sum(e - s for s, e, _ in self._ranges)
        return f"splitdbg image {self.path} ({self.meta.get('source')}, {total >> 20} MiB in {len(self._ranges)} ranges)"

    def close(self):
        if self._map is not None:
            self._map.close()
            self._map = None
