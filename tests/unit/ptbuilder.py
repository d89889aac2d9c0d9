"""Builds x86-64 page tables in a SyntheticMemory for tests, independently of the walker: it
records what it mapped so tests compare the walker against the builder's own bookkeeping."""
from __future__ import annotations

from splitdbg.mem.synthetic import SyntheticMemory

P, RW, US, PWT, PCD, A, D, PS, G = (1 << i for i in range(9))
XD = 1 << 63
SHIFTS = {5: 48, 4: 39, 3: 30, 2: 21, 1: 12}


class PageTables:
    def __init__(self, levels: int = 4, mem: SyntheticMemory | None = None, table_base: int = 0x100000):
        self.levels = levels
        self.mem = mem or SyntheticMemory(1 << 30)
        self.next_table = table_base
        self.root = self.alloc()
        self.mapped: list[tuple[int, int, int, bool, bool, bool]] = []  # va, pa, size, w, u, nx

    def alloc(self) -> int:
        pa = self.next_table
        self.next_table += 0x1000
        self.mem.write(pa, bytes(0x1000))
        return pa

    def map(self, va: int, pa: int, size: int = 0x1000, leaf: int = P | RW, upper: int = P | RW | US) -> None:
        """Map one page of `size` (4K/2M/1G); intermediate entries get `upper` flags."""
        leaf_level = {1 << 12: 1, 1 << 21: 2, 1 << 30: 3}[size]
        table = self.root
        for level in range(self.levels, leaf_level, -1):
            idx = (va >> SHIFTS[level]) & 0x1FF
            entry = self.mem.read_u64(table + 8 * idx)
            if not entry & P:
                child = self.alloc()
                entry = child | upper
                self.mem.write_u64(table + 8 * idx, entry)
            table = entry & 0x000FFFFFFFFFF000
        idx = (va >> SHIFTS[leaf_level]) & 0x1FF
        self.mem.write_u64(table + 8 * idx, pa | leaf | (PS if leaf_level > 1 else 0))
        self.mapped.append((va, pa, size, bool(leaf & RW and upper & RW), bool(leaf & US and upper & US),
                            bool(leaf & XD or upper & XD)))

    def entry_addr(self, va: int, level: int) -> int:
        """Address of the entry at `level` on va's walk (tables must exist down to it)."""
        table = self.root
        for lv in range(self.levels, level, -1):
            table = self.mem.read_u64(table + 8 * ((va >> SHIFTS[lv]) & 0x1FF)) & 0x000FFFFFFFFFF000
        return table + 8 * ((va >> SHIFTS[level]) & 0x1FF)


def canonical(va: int, levels: int = 4) -> int:
    bits = 57 if levels == 5 else 48
    va &= (1 << bits) - 1
    return va | ((2**64 - 1) & ~((1 << bits) - 1)) if va >> (bits - 1) else va
