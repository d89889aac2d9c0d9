"""x86-64 IA-32e paging (4- and 5-level), as the Intel SDM vol. 3A ch. 4.5 describes it.

Two entry points over any PhysicalMemory:
- `walk(mem, cr3, va, mode)`: one translation with every step, or the fault that stops it;
- `dump(mem, cr3, mode)`: the whole address space as merged ranges (`ranges()` for just the list).

Entries are named as in the SDM: PML5E, PML4E, PDPTE, PDE, PTE. Effective permissions combine over
the walk: writable = AND of R/W, user = AND of U/S, execute-disable = OR of XD (with EFER.NXE).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from ..errors import CorruptTable, CyclicTable, MemoryReadError, PageTableError, WalkBudgetExceeded

# Entry bits (SDM 4.5, tables 4-15 .. 4-20)
P, RW, US, PWT, PCD, A, D, PS, G = (1 << i for i in range(9))
PAT_4K = 1 << 7       # bit 7 of a PTE is PAT, not PS
PAT_LARGE = 1 << 12   # bit 12 of a 2 MiB / 1 GiB leaf
XD = 1 << 63

LEVEL_NAMES = {5: "PML5E", 4: "PML4E", 3: "PDPTE", 2: "PDE", 1: "PTE"}
LEVEL_SHIFT = {1: 12, 2: 21, 3: 30, 4: 39, 5: 48}
PAGE_SIZES = {1: 1 << 12, 2: 1 << 21, 3: 1 << 30}

# Packed attributes of a mapping (our own encoding, for fast comparison when merging).
ATTR_W, ATTR_U, ATTR_NX, ATTR_G, ATTR_PCD, ATTR_PWT, ATTR_PAT = (1 << i for i in range(7))
# Work budget of a dump: entries decoded plus mappings copied from reused subtrees. A real kernel
# address space costs about 1.2 million (2,160 table pages) without memoising; far fewer with it.
MAX_ENTRIES = 8_000_000
MAX_PROBLEMS = 1000   # a dump lists this many problems, then counts the rest in one more


@dataclass(frozen=True)
class PagingMode:
    levels: int = 4
    nxe: bool = True
    maxphyaddr: int = 52

    def __post_init__(self):
        if self.levels not in (4, 5):
            raise ValueError("IA-32e paging has 4 or 5 levels")

    @classmethod
    def from_regs(cls, cr0: int, cr4: int, efer: int, maxphyaddr: int = 52) -> "PagingMode":
        if not (cr0 >> 31) & 1 or not (efer >> 10) & 1:
            raise PageTableError("the CPU is not in IA-32e mode (CR0.PG and EFER.LMA): only 64-bit paging is decoded")
        return cls(levels=5 if (cr4 >> 12) & 1 else 4, nxe=bool((efer >> 11) & 1), maxphyaddr=maxphyaddr)

    @property
    def va_bits(self) -> int:
        return 57 if self.levels == 5 else 48

    def canonical(self, va: int) -> int:
        """The unsigned 64-bit canonical form: bits above the linear-address width copy its top bit."""
        bits = self.va_bits
        va &= (1 << bits) - 1
        return va | ((2**64 - 1) & ~((1 << bits) - 1)) if va >> (bits - 1) else va

    def is_canonical(self, va: int) -> bool:
        return 0 <= va < 2**64 and self.canonical(va) == va

    @property
    def addr_mask(self) -> int:
        """Bits 51:12 limited to MAXPHYADDR: the physical-address field of an entry."""
        return ((1 << self.maxphyaddr) - 1) & ~0xFFF

    def reserved_mask(self, level: int, leaf_large: bool) -> int:
        """Bits that must be 0 in a present entry at this level (SDM 4.5.4 / table 4-20 notes)."""
        mask = ((1 << 52) - 1) & ~((1 << self.maxphyaddr) - 1)
        if not self.nxe:
            mask |= XD
        if leaf_large:
            # Address bits below the page size, above the PAT bit, are reserved.
            mask |= ((1 << LEVEL_SHIFT[level]) - 1) & ~((1 << 13) - 1)
        return mask


def cr3_table(cr3: int, mode: PagingMode) -> int:
    """Physical address of the top-level table: PCID (bits 11:0) and no-flush (bit 63) dropped."""
    return cr3 & mode.addr_mask


@dataclass(frozen=True)
class WalkStep:
    level: int
    table: int          # physical address of the table page
    index: int
    entry_addr: int
    entry: int

    @property
    def name(self) -> str:
        return LEVEL_NAMES[self.level]

    @property
    def bits(self) -> dict[str, bool]:
        """The entry's bits by SDM name (PS only above PTE level, PAT where this entry has it)."""
        e, leaf_large = self.entry, self.level in (2, 3) and bool(self.entry & PS)
        out = {"P": e & P, "R/W": e & RW, "U/S": e & US, "PWT": e & PWT, "PCD": e & PCD, "A": e & A}
        if self.level == 1 or leaf_large:
            out.update(D=e & D, G=e & G, PAT=e & (PAT_4K if self.level == 1 else PAT_LARGE))
        if self.level > 1:
            out["PS"] = e & PS
        out["XD"] = e & XD
        return {k: bool(v) for k, v in out.items()}

    @property
    def frame(self) -> int:
        """Bits 51:12 of the entry: the next table, or the page frame (low bits of a large page included)."""
        return self.entry & 0x000FFFFFFFFFF000

    @property
    def flags(self) -> str:
        e = self.entry
        bits = [("P", P), ("W", RW), ("U", US), ("PWT", PWT), ("PCD", PCD), ("A", A), ("D", D)]
        out = [n for n, b in bits if e & b]
        if self.level > 1 and e & PS:
            out.append("PS")
        if e & G:
            out.append("G")
        if e & XD:
            out.append("XD")
        return " ".join(out)

    def __str__(self) -> str:
        return f"{self.name}[{self.index:3d}] @ {self.entry_addr:#x} = {self.entry:#018x}  {self.flags}"


@dataclass(frozen=True)
class Translation:
    va: int
    steps: tuple[WalkStep, ...]
    pa: int | None = None
    page_size: int = 0
    writable: bool = False
    user: bool = False
    nx: bool = False
    global_: bool = False
    pcd: bool = False
    pwt: bool = False
    pat: bool = False
    fault: str | None = None   # why there is no translation
    fault_level: str | None = None  # entry name where the walk stopped (None: non-canonical)

    @property
    def ok(self) -> bool:
        return self.pa is not None

    @property
    def perms(self) -> str:
        return perms_string(self.user, self.writable, self.nx) if self.ok else "----"


def perms_string(user: bool, writable: bool, nx: bool) -> str:
    return ("u" if user else "-") + "r" + ("w" if writable else "-") + ("-" if nx else "x")


def walk(mem, cr3: int, va: int, mode: PagingMode) -> Translation:
    """Translate one linear address, recording every entry read.

    Faults are results, not exceptions: `fault` says why (not present, reserved bit, table outside
    RAM, non-canonical) and `fault_level` names the entry (PML4E, ...) where the walk stopped.
    """
    def stop(level, why):
        return Translation(va, tuple(steps), fault=why, fault_level=LEVEL_NAMES.get(level))

    steps: list[WalkStep] = []
    if not mode.is_canonical(va):
        return stop(None, f"non-canonical address for {mode.va_bits}-bit linear addresses")
    table = cr3_table(cr3, mode)
    w = u = True
    nx = False
    for level in range(mode.levels, 0, -1):
        name = LEVEL_NAMES[level]
        index = (va >> LEVEL_SHIFT[level]) & 0x1FF
        entry_addr = table + 8 * index
        try:
            entry = mem.read_u64(entry_addr)
        except MemoryReadError:
            return stop(level, f"{name} table at {table:#x} is outside RAM")
        steps.append(WalkStep(level, table, index, entry_addr, entry))
        if not entry & P:
            return stop(level, f"{name} not present")
        large = level in (2, 3) and bool(entry & PS)
        if level in (4, 5) and entry & PS:
            return stop(level, f"reserved bit (PS) set in {name}")
        bad = entry & mode.reserved_mask(level, large)
        if bad:
            return stop(level, f"reserved bit set in {name} ({bad:#x})")
        w &= bool(entry & RW)
        u &= bool(entry & US)
        nx |= mode.nxe and bool(entry & XD)
        if level == 1 or large:
            size = 1 << LEVEL_SHIFT[level]
            base = entry & mode.addr_mask & ~(size - 1)
            return Translation(va, tuple(steps), pa=base | (va & (size - 1)), page_size=size, writable=w, user=u,
                               nx=nx, global_=bool(entry & G), pcd=bool(entry & PCD), pwt=bool(entry & PWT),
                               pat=bool(entry & (PAT_4K if level == 1 else PAT_LARGE)))
        table = entry & mode.addr_mask
    raise AssertionError("unreachable: level 1 always ends the walk")


class Range(NamedTuple):
    """Contiguous virtual addresses mapped to contiguous physical ones with the same attributes.

    A NamedTuple rather than a dataclass: a full kernel dump makes ~65,000 of them, and building
    frozen dataclasses took two thirds of the dump's time."""

    start: int          # canonical (unsigned 64-bit), inclusive
    end: int            # exclusive: 2**64 for a range that ends at the top of the address space
    phys: int
    page_size: int
    attrs: int          # ATTR_* bits

    writable = property(lambda self: bool(self.attrs & ATTR_W))
    user = property(lambda self: bool(self.attrs & ATTR_U))
    nx = property(lambda self: bool(self.attrs & ATTR_NX))
    global_ = property(lambda self: bool(self.attrs & ATTR_G))
    pcd = property(lambda self: bool(self.attrs & ATTR_PCD))
    pwt = property(lambda self: bool(self.attrs & ATTR_PWT))
    pat = property(lambda self: bool(self.attrs & ATTR_PAT))

    @property
    def size(self) -> int:
        return self.end - self.start

    @property
    def perms(self) -> str:
        return perms_string(self.user, self.writable, self.nx)

    def __str__(self) -> str:
        return (f"{self.start:016x}-{self.end & (2**64 - 1):016x} -> {self.phys:#014x} "
                f"{self.perms} {_size_name(self.page_size)}{' G' if self.global_ else ''}")


def _size_name(size: int) -> str:
    return {1 << 12: "4K", 1 << 21: "2M", 1 << 30: "1G"}.get(size, hex(size))


@dataclass(frozen=True)
class Problem:
    path: str           # e.g. "PML4E[511] -> PDPTE[510]"
    error: PageTableError
    va: int | None = None  # canonical first linear address under the bad entry

    def __str__(self) -> str:
        where = f" (va {self.va:#x})" if self.va is not None else ""
        return f"{self.path}{where}: {self.error}"


@dataclass
class Dump:
    ranges: list[Range] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    tables_read: int = 0
    tables_reused: int = 0
    entries_visited: int = 0

    def __iter__(self):
        return iter(self.ranges)

    def __len__(self) -> int:
        return len(self.ranges)


def ranges(mem, cr3: int, mode: PagingMode, **kw) -> list[Range]:
    """Merged ranges of the address space (see `dump`); raises on corrupt or cyclic tables."""
    if kw.get("on_error", "raise") != "raise":
        raise ValueError("ranges() would drop the problems: use dump(..., on_error='collect')")
    return dump(mem, cr3, mode, **kw).ranges


def dump(mem, cr3: int, mode: PagingMode, *, start: int | None = None, end: int | None = None,
         on_error: str = "raise", memoize: bool = True, max_entries: int = MAX_ENTRIES,
         memo: dict | None = None) -> Dump:
    """Every mapping of the address space under `cr3`, merged into ranges.

    Ranges merge only when virtually and physically contiguous, with the same attributes and page
    size (never across the canonical hole). A table reached again at the same level with the same
    inherited permissions is decoded once (Linux's ESPFIX area maps 65,536 pages through shared
    tables). on_error='raise' stops at the first corrupt or cyclic table; 'collect' skips that
    subtree, lists it in `problems` and keeps the rest. `max_entries` bounds the work (entries
    decoded plus mappings copied from reused subtrees): past it WalkBudgetExceeded is raised, or
    with 'collect' recorded as the last problem and the dump so far returned.
    `start`/`end` (canonical, end exclusive) restrict the dump to a virtual window. `memo`, a dict
    passed to several dumps of the same memory, shares decoded tables between address spaces (the
    kernel half is the same tables in every process's).
    """
    if on_error not in ("raise", "collect"):
        raise ValueError("on_error is 'raise' or 'collect'")
    walker = _Dumper(mem, mode, on_error == "collect", memoize, max_entries, memo)
    space = 1 << mode.va_bits
    lo = 0 if start is None else start & (space - 1)
    hi = space if end is None else ((end - 1) & (space - 1)) + 1
    runs: list = []
    if lo < hi:
        try:
            runs = walker.table(cr3_table(cr3, mode), mode.levels, ATTR_W | ATTR_U, (), (), lo, hi, 0)
        except _Stop:
            runs = walker.partial
    out = Dump(problems=walker.problems, tables_read=walker.tables_read, tables_reused=walker.tables_reused,
               entries_visited=walker.visited)
    # Runs never straddle the hole, so the sign extension is one addition per range.
    ext, hole = 2**64 - space, space >> 1
    new = tuple.__new__
    out.ranges = [new(Range, (vs + ext if vs >= hole else vs, ve + ext if ve > hole else ve, phys, size, attrs))
                  for vs, ve, phys, size, attrs in runs]
    return out


class _Stop(Exception):
    """Budget exhausted in collect mode: unwind, keeping what each level had (see `partial`)."""


class _Dumper:
    def __init__(self, mem, mode: PagingMode, collect: bool, memoize: bool, max_entries: int,
                 memo: dict | None = None):
        self.mem, self.mode, self.collect, self.memoize = mem, mode, collect, memoize
        self.max_entries = max_entries
        self.memo: dict[tuple[int, int, int], list] = {} if memo is None else memo
        self.problems: list[Problem] = []
        self.records: list[tuple] = []    # (where, error, va in index space) of each problem listed
        self.tables_read = self.tables_reused = self.visited = 0
        self.partial: list = []
        # Index-space address of the canonical hole: runs must not merge across it.
        self.hole = 1 << (mode.va_bits - 1)
        # Per level: reserved bits of a non-leaf entry / of a large leaf (SDM table 4-20 notes).
        self.rsv_table = {lv: np.uint64(mode.reserved_mask(lv, False)) for lv in LEVEL_SHIFT}
        self.rsv_large = {lv: np.uint64(mode.reserved_mask(lv, True)) for lv in (2, 3)}

    def fail(self, path: tuple[str, ...], error: PageTableError, va: int | None = None) -> None:
        self.fail_at(" -> ".join(path) or "CR3", error, va)

    def fail_at(self, where: str, error: PageTableError, va: int | None) -> None:
        if not self.collect:
            raise type(error)(f"{where}: {error}")
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(Problem(where, error, None if va is None else self.mode.canonical(va)))
            self.records.append((where, error, va))
        elif len(self.problems) == MAX_PROBLEMS:
            self.problems.append(Problem(where, CorruptTable(f"more than {MAX_PROBLEMS} problems: the rest are not listed")))

    def spend(self, n: int, path: tuple, runs: list) -> None:
        self.visited += n
        if self.visited > self.max_entries:
            self.fail(path, WalkBudgetExceeded(
                f"more than {self.max_entries} page-table entries visited: tables shared or looped beyond any "
                f"real address space (raise max_entries if this is genuine)"))
            self.partial = runs
            raise _Stop

    def table(self, pa: int, level: int, inherited: int, path: tuple, ancestors: tuple,
              lo: int, hi: int, base: int) -> list:
        """Runs (vstart, vend, phys, page_size, attrs) in the 2**va_bits index space, in order.

        `base` is the virtual address this table starts at; `lo`/`hi` the window still wanted.
        """
        shift = LEVEL_SHIFT[level]
        span = 1 << (shift + 9)
        whole = lo <= base and base + span <= hi
        key = (pa, level, inherited)
        if self.memoize and whole and key in self.memo:
            cached_base, cached, problems = self.memo[key]
            self.tables_reused += 1
            self.spend(len(cached) + len(problems), path, [])
            prefix = " -> ".join(path)
            for suffix, error, off in problems:      # a second path to a corrupt table reports it too
                if len(self.problems) > MAX_PROBLEMS:
                    break
                self.fail_at(prefix + suffix, error, None if off is None else base + off)
            d = base - cached_base
            return [(s + d, e + d, p, z, a) for s, e, p, z, a in cached]
        if pa in ancestors:
            self.fail(path, CyclicTable(f"{LEVEL_NAMES[level]} table {pa:#x} is its own ancestor"), base)
            return []
        try:
            entries = self.mem.read_u64_array(pa, 512)
        except MemoryReadError:
            self.fail(path, CorruptTable(f"{LEVEL_NAMES[level]} table at {pa:#x} is outside guest RAM"), base)
            return []
        self.tables_read += 1
        problems_before = len(self.records)
        runs: list = []
        self.spend(512, path, runs)
        mode = self.mode
        u64 = np.uint64

        # Decode the whole page at once; only present non-leaf entries and faults go through Python.
        first = 0 if lo <= base else (lo - base) >> shift
        last = 512 if base + span <= hi else -(-(hi - base) >> shift)
        present = (entries & u64(P)) != 0
        present[:first] = False
        present[last:] = False
        if level in (2, 3):
            ps = (entries & u64(PS)) != 0
            rsv = np.where(ps, self.rsv_large[level], self.rsv_table[level])
            bad = present & ((entries & rsv) != 0)
            leaf = present & ps & ~bad
        elif level == 1:
            ps = np.zeros(512, dtype=bool)
            bad = present & ((entries & self.rsv_table[1]) != 0)
            leaf = present & ~bad
        else:  # PML4E/PML5E: PS is reserved (SDM table 4-15 note; AMD APM "MBZ")
            ps = (entries & u64(PS)) != 0
            bad = present & (ps | ((entries & self.rsv_table[level]) != 0))
            leaf = np.zeros(512, dtype=bool)
        down = present & ~bad & ~leaf

        attrs = np.full(512, inherited, dtype=np.uint64)
        attrs &= np.where((entries & u64(RW)) != 0, u64(0xFF), u64(0xFF & ~ATTR_W))
        attrs &= np.where((entries & u64(US)) != 0, u64(0xFF), u64(0xFF & ~ATTR_U))
        if mode.nxe:
            attrs |= np.where((entries >> u64(63)) != 0, u64(ATTR_NX), u64(0))

        events: list[tuple[int, int, int]] = []  # (index, kind, end index): 0 run, 1 table, 2 bad
        if leaf.any():
            size = 1 << shift
            pat_bit = PAT_4K if level == 1 else PAT_LARGE
            lattrs = attrs | np.where((entries & u64(G)) != 0, u64(ATTR_G), u64(0)) \
                | np.where((entries & u64(PCD)) != 0, u64(ATTR_PCD), u64(0)) \
                | np.where((entries & u64(PWT)) != 0, u64(ATTR_PWT), u64(0)) \
                | np.where((entries & u64(pat_bit)) != 0, u64(ATTR_PAT), u64(0))
            phys = entries & u64(mode.addr_mask & ~(size - 1))
            # cont[i]: entry i extends the run of entry i-1 (both leaves, frames and attrs follow on).
            cont = np.zeros(512, dtype=bool)
            cont[1:] = leaf[1:] & leaf[:-1] & (phys[1:] == phys[:-1] + u64(size)) & (lattrs[1:] == lattrs[:-1])
            starts = np.flatnonzero(leaf & ~cont)
            ends = np.flatnonzero(leaf & ~np.append(cont[1:], False)) + 1
            events += [(int(s), 0, int(e)) for s, e in zip(starts, ends)]
        events += [(int(i), 1, 0) for i in np.flatnonzero(down)]
        events += [(int(i), 2, 0) for i in np.flatnonzero(bad)]
        if len(events) > 1:
            events.sort()

        name = LEVEL_NAMES[level]
        for i, kind, j in events:
            vstart = base + (i << shift)
            if kind == 0:
                vend = base + (j << shift)
                s, t = max(vstart, lo), min(vend, hi)
                _append(runs, (s, t, int(phys[i]) + (s - vstart), size, int(lattrs[i])), self.hole)
                continue
            e = int(entries[i])
            where = path + (f"{name}[{i}]",)
            if kind == 2:
                if level >= 4 and e & PS:
                    self.fail(where, CorruptTable(f"PS set in a {name} (reserved)"), vstart)
                else:
                    bits = e & int(self.rsv_large[level] if level in (2, 3) and e & PS else self.rsv_table[level])
                    self.fail(where, CorruptTable(f"reserved bits {bits:#x} set in {name} {e:#x}"), vstart)
                continue
            try:
                child = self.table(e & mode.addr_mask, level - 1, int(attrs[i]) & (ATTR_W | ATTR_U | ATTR_NX),
                                   where, ancestors + (pa,), lo, hi, vstart)
            except _Stop:
                for r in self.partial:
                    _append(runs, r, self.hole)
                self.partial = runs
                raise
            if child:
                # Runs of one child are merged already: only its first may join the last run here.
                _append(runs, child[0], self.hole)
                runs.extend(child[1:])
        # A subtree that produced problems is memoised too, with them (else tables pointed at one
        # corrupt table 512 times a level would decode it 512**levels times); a second path to it
        # reports them again, under its own path, up to MAX_PROBLEMS in all.
        if self.memoize and whole:
            n = len(" -> ".join(path))
            problems = [(w[n:] if path else w, e, None if v is None else v - base)
                        for w, e, v in self.records[problems_before:]]
            self.memo[key] = (base, runs, problems)   # shared, never mutated after this: callers copy
        return runs


def _append(runs: list, r: tuple, hole: int) -> None:
    if runs and r[0] != hole:
        s, e, p, z, a = runs[-1]
        if e == r[0] and a == r[4] and z == r[3] and p + (e - s) == r[2]:
            runs[-1] = (s, r[1], p, z, a)
            return
    runs.append(r)


def merge_for_info_mem(rs: list[Range]) -> list[tuple[int, int, str]]:
    """Re-merge as QEMU 7.2's `info mem` does: virtually contiguous, same user/writable, any
    physical address, NX ignored. Returns (start, end, "urw"-style perms) like its output."""
    out: list[list] = []
    for r in rs:
        perms = ("u" if r.user else "-") + "r" + ("w" if r.writable else "-")
        if out and out[-1][1] == r.start and out[-1][2] == perms:
            out[-1][1] = r.end
        else:
            out.append([r.start, r.end, perms])
    return [tuple(x) for x in out]
