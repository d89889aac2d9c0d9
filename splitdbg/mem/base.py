"""The memory interface every layer above reads guest-physical memory through."""
from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from ..errors import MemoryReadError, NotAvailable


class PhysicalMemory(ABC):
    """Guest-physical memory, read-only. Subclasses implement `_read` and `ram_ranges`."""

    name = "abstract"
    dbg = None  # a splitdbg.dbg.Debugger, when registers can be had through gdb

    @abstractmethod
    def ram_ranges(self) -> list[tuple[int, int]]:
        """[start, end) guest-physical ranges this backend can read, sorted."""

    @abstractmethod
    def _read(self, addr: int, size: int) -> bytes:
        """Read within one RAM range (already checked)."""

    def describe(self) -> str:
        return self.name

    def read(self, addr: int, size: int) -> bytes:
        """Exactly `size` bytes at guest-physical `addr`; MemoryReadError outside RAM."""
        if size < 0 or addr < 0:
            raise MemoryReadError(addr, size, "negative address or size")
        if size == 0:
            return b""
        for start, end in self.ram_ranges():
            if start <= addr and addr + size <= end:
                return self._read(addr, size)
        raise MemoryReadError(addr, size, f"outside guest RAM ({_fmt_ranges(self.ram_ranges())})")

    def read_u64(self, addr: int) -> int:
        return int.from_bytes(self.read(addr, 8), "little")

    def read_u64_array(self, addr: int, count: int) -> np.ndarray:
        """`count` little-endian u64 at addr, e.g. a whole 4 KiB table page (count=512)."""
        return np.frombuffer(self.read(addr, 8 * count), dtype="<u8")

    def page_heads(self, start: int, end: int) -> np.ndarray:
        """The first u64 of every 4 KiB page in [start, end), page-aligned: a scan for a magic
        number. Backends with a mapping override it to skip copying the whole range."""
        return np.frombuffer(self.read(start, end - start), dtype="<u8")[::512]

    def contains(self, addr: int, size: int = 1) -> bool:
        return any(s <= addr and addr + size <= e for s, e in self.ram_ranges())

    def registers(self, cpu: int | None = None) -> dict[str, int]:
        """Registers of vCPU `cpu` (0-based; None: gdb's selected one), by gdb's names."""
        if self.dbg is None:
            raise NotAvailable(f"the {self.name} backend has no CPU registers (no gdb connection)")
        return self.dbg.read_registers(cpu=cpu)

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _fmt_ranges(ranges) -> str:
    return ", ".join(f"{s:#x}-{e:#x}" for s, e in ranges) or "no RAM"


def q35_ram_ranges(ram_size: int) -> list[tuple[int, int, int]]:
    """QEMU q35's guest-physical layout of `ram_size` bytes of RAM: (gpa start, gpa end, offset).

    hw/i386/pc_q35.c (QEMU 7.2): below 4 GiB up to 0xb0000000 when the whole RAM fits under it,
    else only 2 GiB; the rest starts at 4 GiB. A memory-backend-file holds RAM in that order.
    """
    lowmem = 0x80000000 if ram_size >= 0xB0000000 else 0xB0000000
    below = min(ram_size, lowmem)
    layout = [(0, below, 0)]
    if ram_size > below:
        layout.append((1 << 32, (1 << 32) + ram_size - below, below))
    return layout
