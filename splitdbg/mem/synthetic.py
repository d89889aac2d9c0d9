"""Sparse in-memory guest-physical memory for unit tests of decoders, walkers and the model."""
from __future__ import annotations

from .base import PhysicalMemory

PAGE = 0x1000


class SyntheticMemory(PhysicalMemory):
    """`size` bytes of RAM at 0, all zero until written; only touched pages take space."""

    name = "synthetic"

    def __init__(self, size: int = 1 << 30):
        self.size = size
        self.pages: dict[int, bytearray] = {}

    def ram_ranges(self):
        return [(0, self.size)]

    def describe(self):
        return f"synthetic memory ({self.size >> 20} MiB, {len(self.pages)} pages written)"

    def _page(self, pfn: int) -> bytearray:
        page = self.pages.get(pfn)
        if page is None:
            page = self.pages[pfn] = bytearray(PAGE)
        return page

    def write(self, addr: int, data: bytes) -> None:
        if addr < 0 or addr + len(data) > self.size:
            raise ValueError(f"write at {addr:#x} outside synthetic RAM")
        while data:
            off = addr & (PAGE - 1)
            n = min(len(data), PAGE - off)
            self._page(addr >> 12)[off:off + n] = data[:n]
            addr, data = addr + n, data[n:]

    def write_u64(self, addr: int, value: int) -> None:
        self.write(addr, (value & (2**64 - 1)).to_bytes(8, "little"))

    def write_u64_array(self, addr: int, values) -> None:
        """Little-endian u64s from addr on, e.g. a whole table page of 512 entries."""
        self.write(addr, b"".join((int(v) & (2**64 - 1)).to_bytes(8, "little") for v in values))

    def read_u64(self, addr: int) -> int:
        off = addr & (PAGE - 1)
        if off <= PAGE - 8 and 0 <= addr < self.size:  # fast path: within one page
            page = self.pages.get(addr >> 12)
            return int.from_bytes(page[off:off + 8], "little") if page is not None else 0
        return super().read_u64(addr)

    def _read(self, addr, size):
        out = bytearray()
        while size:
            off = addr & (PAGE - 1)
            n = min(size, PAGE - off)
            page = self.pages.get(addr >> 12)
            out += page[off:off + n] if page is not None else bytes(n)
            addr, size = addr + n, size - n
        return bytes(out)
