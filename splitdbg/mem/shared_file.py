"""Guest RAM through QEMU's shared memory-backend-file: mmap read-only, GB/s, guest may run.

A mapping outlives the file: once QEMU is gone (its RAM file deleted, or replaced by a new QEMU's)
the mapping still reads, frozen at the moment QEMU died. So reads check, at most every
CHECK_EVERY seconds, that the file is still the one QEMU has (same inode at the path, not
unlinked) and that whatever `watch()` was given (the QEMU process) still lives; a dead target
raises TargetGone and the mapping is closed: nothing is read from it again."""
from __future__ import annotations

import mmap
import os
import struct
import time

import numpy as np

from ..errors import MemoryReadError, SplitdbgError, TargetGone
from .base import PhysicalMemory, q35_ram_ranges


_U64 = struct.Struct("<Q")


class SharedRamFile(PhysicalMemory):
    name = "shared-ram-file"
    CHECK_EVERY = 0.1     # seconds between liveness checks on the read path

    def __init__(self, path: str, ram_size: int | None = None):
        self.path = path
        self._map = None
        self._fd = -1
        self.lost: str | None = None          # why the target is gone, once it is
        self._watchers: list = []
        self._checked = 0.0
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError as exc:
            raise SplitdbgError(f"cannot open guest RAM file {path}: {exc.strerror}") from exc
        try:
            st = os.fstat(fd)
            size = st.st_size
            self.ram_size = ram_size or size
            if size < self.ram_size or size == 0:
                raise SplitdbgError(f"guest RAM file {path} holds {size} bytes, expected {self.ram_size}")
            # PROT_READ only: the debugger never writes guest memory through this mapping.
            self._map = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd                        # kept: fstat tells whether the file was unlinked
        self._ident = (st.st_dev, st.st_ino)
        self._view = memoryview(self._map)
        self._layout = q35_ram_ranges(self.ram_size)

    # -- liveness ------------------------------------------------------------------------------
    def watch(self, gone) -> None:
        """Also check `gone()` (None while the target lives, else why it went) on the read path."""
        self._watchers.append(gone)

    def why_gone(self) -> str | None:
        """Why this file is no longer the target's RAM, or None while it is."""
        if self.lost:
            return self.lost
        for gone in self._watchers:
            why = gone()
            if why:
                return why
        try:
            if os.fstat(self._fd).st_nlink == 0:
                return f"QEMU exited (its RAM file {self.path} was deleted)"
            st = os.stat(self.path)
        except FileNotFoundError:
            return f"QEMU exited (its RAM file {self.path} was deleted)"
        except OSError as exc:
            return f"guest RAM file {self.path}: {exc.strerror}"
        if (st.st_dev, st.st_ino) != self._ident:
            return f"QEMU was replaced (a new RAM file at {self.path})"
        return None

    def check_alive(self, force: bool = True) -> None:
        """TargetGone (and the mapping closed) when the target went away."""
        if self.lost:
            raise TargetGone(f"target lost: {self.lost}")
        now = time.monotonic()
        if not force and now - self._checked < self.CHECK_EVERY:
            return
        self._checked = now
        why = self.why_gone()
        if why:
            self.lost = why
            self.close()
            raise TargetGone(f"target lost: {why}")

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
        self.check_alive(force=False)
        for start, end, off in self._layout:
            if start <= addr < end:
                o = addr - start + off
                try:
                    return bytes(self._view[o:o + size])
                except ValueError as exc:  # the mapping was closed
                    raise MemoryReadError(addr, size, str(exc)) from exc
        raise MemoryReadError(addr, size, "outside guest RAM")

    def find(self, needle: bytes, limit: int = 1 << 30) -> int | None:
        """Guest-physical address of the first `needle` in RAM, or None. Reads with pread over the
        file's data extents (SEEK_DATA): never through the mmap, whose faults on a tmpfs hole
        would allocate the page, and never the holes (RAM the guest never touched)."""
        chunk, pos = 4 << 20, 0
        end = min(self.ram_size, limit)
        while pos < end:
            try:
                pos = os.lseek(self._fd, pos, os.SEEK_DATA)
                stop = min(os.lseek(self._fd, pos, os.SEEK_HOLE), end)
            except OSError:          # ENXIO: no data past pos
                return None
            while pos < stop:
                buf = os.pread(self._fd, min(chunk, stop - pos) + len(needle) - 1, pos)
                i = buf.find(needle)
                if i >= 0:
                    return next((gpa + pos + i - off for gpa, gend, off in self._layout
                                 if off <= pos + i < off + gend - gpa), None)
                pos += chunk
        return None

    def describe(self):
        return f"shared RAM file {self.path} ({self.ram_size >> 20} MiB, read-only mmap)"

    def close(self):
        if self._map is not None:
            self._view.release()
            self._map.close()
            self._map = None
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
