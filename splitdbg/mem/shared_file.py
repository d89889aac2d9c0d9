"""Guest RAM through QEMU's shared memory-backend-file: mmap read-only, GB/s, guest may run."""
from __future__ import annotations

import mmap
import os
import struct

import numpy as np

from ..errors import MemoryReadError, SplitdbgError
from .base import PhysicalMemory, q35_ram_ranges


_U64 = struct.Struct("<Q")


class SharedRamFile(PhysicalMemory):
    name = "shared-ram-file"

    def __init__(self, path: str, ram_size: int | None = None):
        self.path = path
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError as exc:
            raise SplitdbgError(f"cannot open guest RAM file {path}: {exc.strerror}") from exc
        try:
            size = os.fstat(fd).st_size
            self.ram_size = ram_size or size
            if size < self.ram_size or size == 0:
                raise SplitdbgError(f"guest RAM file {path} holds {size} bytes, expected {self.ram_size}")
            # PROT_READ only: the debugger never writes guest memory through this mapping.
            self._map = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ)
        finally:
            os.close(fd)
        self._view = memoryview(self._map)
        self._layout = q35_ram_ranges(self.ram_size)

    def ram_ranges(self):
        return [(s, e) for s, e, _ in self._layout]

    def read_u64(self, addr: int) -> int:
        # Fast path for page-table walkers: one unpack from the mapping, no copies.
        start, end, off = self._layout[0]
        if start <= addr <= end - 8 and self._map is not None:
            return _U64.unpack_from(self._map, addr - start + off)[0]
        return super().read_u64(addr)

    def page_heads(self, start, end):
        # Strided straight from the mapping: one word a page is touched, not the whole range copied.
        for s, e, off in self._layout:
            if s <= start and end <= e and self._map is not None:
                words = np.frombuffer(self._map, dtype="<u8", count=(end - start) // 8, offset=off + start - s)
                return words[::512].copy()      # the copy lets go of the mapping (close() needs that)
        return super().page_heads(start, end)

    def _read(self, addr, size):
        for start, end, off in self._layout:
            if start <= addr < end:
                o = addr - start + off
                try:
                    return bytes(self._view[o:o + size])
                except ValueError as exc:  # the mapping was closed
                    raise MemoryReadError(addr, size, str(exc)) from exc
        raise MemoryReadError(addr, size, "outside guest RAM")

    def describe(self):
        return f"shared RAM file {self.path} ({self.ram_size >> 20} MiB, read-only mmap)"

    def close(self):
        if self._map is not None:
            self._view.release()
            self._map.close()
            self._map = None
