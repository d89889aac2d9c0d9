"""The x86-64 walker on synthetic tables (SDM vol. 3A 4.5). Expectations come from the builder's
bookkeeping and from the SDM's rules written out in each test, not from the walker."""
from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from splitdbg.arch import x86_paging as xp
from splitdbg.errors import CorruptTable, CyclicTable, PageTableError
from splitdbg.mem.synthetic import SyntheticMemory

from .ptbuilder import PS, RW, US, XD, A, D, G, P, PCD, PageTables, canonical

KERNEL = 0xFFFFFFFF81000000
M4 = xp.PagingMode(levels=4)
M5 = xp.PagingMode(levels=5)


@pytest.mark.parametrize("levels", [4, 5])
@pytest.mark.parametrize("size", [1 << 12, 1 << 21, 1 << 30])
def test_each_page_size_translates(levels, size):
    pt = PageTables(levels)
    va = canonical(0xFFFF800000000000 if levels == 4 else 0xFF00000000000000, levels) + 5 * size
    pt.map(va, 0x40000000, size)
    mode = xp.PagingMode(levels=levels)
    t = xp.walk(pt.mem, pt.root, va + 0x123, mode)
    assert t.ok and t.pa == 0x40000000 + 0x123 and t.page_size == size
    assert [s.level for s in t.steps] == list(range(levels, {1 << 12: 0, 1 << 21: 1, 1 << 30: 2}[size], -1))
    # The step addresses are the builder's entry addresses.
    assert [s.entry_addr for s in t.steps] == [pt.entry_addr(va, s.level) for s in t.steps]
    (r,) = xp.ranges(pt.mem, pt.root, mode)
    assert (r.start, r.end, r.phys, r.page_size) == (va, va + size, 0x40000000, size)


def test_permissions_combine_over_levels():
    # SDM 4.6.1: a write is allowed only if R/W=1 in every entry; user only if U/S=1 in every entry;
    # execute-disable if XD=1 in any entry (with IA32_EFER.NXE=1).
    pt = PageTables()
    pt.map(0x1000, 0x5000, leaf=P | RW | US, upper=P | US)          # upper read-only
    pt.map(0x10000000000, 0x6000, leaf=P | RW, upper=P | RW | US)    # leaf supervisor (own PML4E)
    pt.map(0x8000000000, 0x7000, leaf=P | RW | US, upper=P | RW | US | XD)  # upper XD
    got = {t.va: (t.writable, t.user, t.nx) for t in (xp.walk(pt.mem, pt.root, va, M4) for va, *_ in pt.mapped)}
    assert got == {va: (w, u, nx) for va, _, _, w, u, nx in pt.mapped}
    assert got[0x1000] == (False, True, False)
    assert got[0x10000000000] == (True, False, False)
    assert got[0x8000000000] == (True, True, True)
    # Without EFER.NXE, XD is a reserved bit (SDM 4.5.4 table 4-20 note: "If IA32_EFER.NXE = 0").
    t = xp.walk(pt.mem, pt.root, 0x8000000000, xp.PagingMode(levels=4, nxe=False))
    assert not t.ok and "reserved" in t.fault


def test_cr3_pcid_and_noflush_bits_are_masked():
    pt = PageTables()
    pt.map(0x2000, 0x9000)
    cr3 = pt.root | 0x5 | (1 << 63)  # PCID 5, bit 63 "no flush" as in a MOV to CR3
    assert xp.walk(pt.mem, cr3, 0x2000, M4).pa == 0x9000


def test_not_present_at_each_level():
    pt = PageTables()
    pt.map(0x200000, 0xA000)
    for level in (4, 3, 2, 1):
        va = 0x200000 + {4: 1 << 39, 3: 1 << 30, 2: 1 << 21, 1: 1 << 12}[level]
        t = xp.walk(pt.mem, pt.root, va, M4)
        assert not t.ok and t.fault == f"{xp.LEVEL_NAMES[level]} not present"
        assert len(t.steps) == 5 - level


def test_non_canonical_is_a_fault_not_a_walk():
    pt = PageTables()
    t = xp.walk(pt.mem, pt.root, 0x0000800000000000, M4)
    assert not t.ok and "non-canonical" in t.fault and t.steps == ()
    assert xp.walk(pt.mem, pt.root, 0x0000800000000000, M5).fault == "PML5E not present"


def test_reserved_bits_by_maxphyaddr_and_large_page_alignment():
    pt = PageTables()
    pt.map(0x1000, 0x1_0000_0000_0000)  # a frame above 2**40
    assert xp.walk(pt.mem, pt.root, 0x1000, M4).ok
    t = xp.walk(pt.mem, pt.root, 0x1000, xp.PagingMode(levels=4, maxphyaddr=40))
    assert not t.ok and "reserved bit set in PTE" in t.fault
    # A 2 MiB PDE with address bit 13 set: bits 20:13 are reserved (SDM table 4-18).
    pt2 = PageTables()
    pt2.map(0x200000, 0x400000 | (1 << 13), 1 << 21)
    assert "reserved" in xp.walk(pt2.mem, pt2.root, 0x200000, M4).fault
    with pytest.raises(CorruptTable, match="reserved bits"):
        xp.dump(pt2.mem, pt2.root, M4)


def test_ps_in_pml4e_is_reserved():
    pt = PageTables()
    pt.map(0x1000, 0x2000)
    pt.mem.write_u64(pt.entry_addr(0x1000, 4), pt.mem.read_u64(pt.entry_addr(0x1000, 4)) | PS)
    assert "PS" in xp.walk(pt.mem, pt.root, 0x1000, M4).fault
    d = xp.dump(pt.mem, pt.root, M4, on_error="collect")
    assert d.ranges == [] and "PML4E[0]" in str(d.problems[0])


def test_merging_rules():
    pt = PageTables()
    for i in range(4):                       # 4 contiguous pages, contiguous frames: one range
        pt.map(0x10000 + i * 0x1000, 0x80000 + i * 0x1000)
    pt.map(0x14000, 0x90000)                 # virtually contiguous, physically not: new range
    pt.map(0x15000, 0x91000, leaf=P)          # read-only: new range
    pt.map(0x16000, 0x92000, leaf=P | RW | G)  # global: new range
    rs = xp.ranges(pt.mem, pt.root, M4)
    assert [(r.start, r.end, r.phys) for r in rs] == [
        (0x10000, 0x14000, 0x80000), (0x14000, 0x15000, 0x90000), (0x15000, 0x16000, 0x91000),
        (0x16000, 0x17000, 0x92000)]
    assert [r.perms for r in rs] == ["-rwx", "-rwx", "-r-x", "-rwx"] and rs[3].global_
    # info mem merges virtually contiguous ranges of equal (user, writable) whatever the frames.
    assert xp.merge_for_info_mem(rs) == [(0x10000, 0x15000, "-rw"), (0x15000, 0x16000, "-r-"),
                                         (0x16000, 0x17000, "-rw")]


def test_window_restricts_dump():
    pt = PageTables()
    pt.map(0x200000, 0x400000, 1 << 21)
    rs = xp.ranges(pt.mem, pt.root, M4, start=0x300000, end=0x301000)
    assert [(r.start, r.end, r.phys) for r in rs] == [(0x300000, 0x301000, 0x500000)]


def test_kernel_half_is_canonical_and_top_range_ends_at_2_64():
    pt = PageTables()
    pt.map(0xFFFFFFFFFFFFF000, 0x3000)
    pt.map(KERNEL, 0x1000000, 1 << 21)
    rs = xp.ranges(pt.mem, pt.root, M4)
    assert [(r.start, r.end) for r in rs] == [(KERNEL, KERNEL + (1 << 21)), (0xFFFFFFFFFFFFF000, 1 << 64)]


def test_cyclic_tables_terminate_with_named_error():
    pt = PageTables()
    pt.map(0x1000, 0x2000)
    pdpte = pt.entry_addr(0x1000, 3)
    pt.mem.write_u64(pdpte, pt.root | P | RW)  # PDPTE points back at the PML4
    with pytest.raises(CyclicTable):
        xp.dump(pt.mem, pt.root, M4)
    d = xp.dump(pt.mem, pt.root, M4, on_error="collect")
    assert len(d.problems) == 1 and isinstance(d.problems[0].error, CyclicTable)


def test_table_outside_ram():
    pt = PageTables()
    pt.map(0x1000, 0x2000)
    pt.mem.write_u64(pt.entry_addr(0x1000, 2), (1 << 40) | P | RW)
    t = xp.walk(pt.mem, pt.root, 0x1000, M4)
    assert not t.ok and "outside RAM" in t.fault
    with pytest.raises(CorruptTable, match="outside guest RAM"):
        xp.dump(pt.mem, pt.root, M4)


def test_shared_subtrees_are_decoded_once():
    # Like Linux's ESPFIX area: many upper entries point at one lower table.
    pt = PageTables()
    pt.map(0, 0x300000, 0x1000)
    pd = pt.mem.read_u64(pt.entry_addr(0, 3))  # PDPTE[0] -> the PD
    for i in range(1, 64):
        pt.mem.write_u64(pt.entry_addr(0, 3) + 8 * i, pd)
    d = xp.dump(pt.mem, pt.root, M4)
    plain = xp.dump(pt.mem, pt.root, M4, memoize=False)
    assert d.ranges == plain.ranges and len(d.ranges) == 64
    assert [r.start for r in d.ranges] == [i << 30 for i in range(64)]
    assert d.tables_reused == 63 and d.tables_read == 4 and plain.tables_read == 2 + 2 * 64


def _random_tables(seed: int, levels: int, corrupt: bool) -> PageTables:
    rnd = random.Random(seed)
    pt = PageTables(levels)
    for _ in range(rnd.randint(1, 40)):
        size = rnd.choice([1 << 12, 1 << 12, 1 << 21, 1 << 30])
        va = canonical(rnd.getrandbits(57 if levels == 5 else 48) & ~(size - 1), levels)
        leaf = P | rnd.choice([0, RW]) | rnd.choice([0, US]) | rnd.choice([0, XD]) | rnd.choice([0, G, PCD, A | D])
        try:
            pt.map(va, rnd.randrange(0, 1 << 30, size), size, leaf=leaf,
                   upper=P | rnd.choice([RW, 0]) | rnd.choice([US, 0]) | rnd.choice([0, XD]))
        except KeyError:
            pass
    if corrupt:
        # Scribble over random table words: pointers into tables, reserved bits, loops.
        for _ in range(rnd.randint(1, 20)):
            addr = rnd.randrange(pt.root, pt.next_table, 8)
            pt.mem.write_u64(addr, rnd.choice([rnd.getrandbits(64), pt.root | P, rnd.randrange(pt.root, pt.next_table, 0x1000) | P | PS,
                                               rnd.getrandbits(64) | P]))
    return pt


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32), levels=st.sampled_from([4, 5]), corrupt=st.booleans())
def test_property_walk_agrees_with_dump_and_errors_are_named(seed, levels, corrupt):
    pt = _random_tables(seed, levels, corrupt)
    mode = xp.PagingMode(levels=levels, maxphyaddr=46)
    # In collect mode nothing is raised, whatever the tables hold; in raise mode only PageTableError.
    d = xp.dump(pt.mem, pt.root, mode, on_error="collect", max_entries=2_000_000)
    try:
        strict = xp.dump(pt.mem, pt.root, mode, max_entries=2_000_000)
        assert not d.problems and strict.ranges == d.ranges
    except PageTableError:
        assert d.problems
    if any(isinstance(p.error, xp.WalkBudgetExceeded) for p in d.problems):
        return  # the dump is partial: walk() may map what it did not reach
    rnd = random.Random(seed)
    samples = [r.start for r in d.ranges] + [r.end - 1 for r in d.ranges]
    samples += [canonical(rnd.getrandbits(mode.va_bits), levels) for _ in range(50)]
    for va in samples:
        t = xp.walk(pt.mem, pt.root, va & (2**64 - 1), mode)
        inside = [r for r in d.ranges if r.start <= va < r.end]
        if t.ok:
            assert len(inside) == 1, f"walk maps {va:#x} but the dump has {inside}"
            r = inside[0]
            assert t.pa == r.phys + (va - r.start) and (t.writable, t.user, t.nx) == (r.writable, r.user, r.nx)
        else:
            assert not inside, f"walk faults at {va:#x} ({t.fault}) but the dump maps it"
    # A window is the full dump clipped (memo reuse and partial tables at the window's edges).
    if not d.problems:
        a, b = sorted(canonical(rnd.getrandbits(mode.va_bits), levels) for _ in range(2))
        part = xp.dump(pt.mem, pt.root, mode, start=a, end=b + 1)
        clipped = [(max(r.start, a), min(r.end, b + 1), r.phys + max(0, a - r.start), r.attrs)
                   for r in d.ranges if r.start <= b and r.end > a]
        assert [(r.start, r.end, r.phys, r.attrs) for r in part.ranges] == clipped
    if not corrupt:
        # Every page the builder mapped last (later maps may overwrite upper entries' flags) is there.
        assert not d.problems


@pytest.mark.parametrize("levels", [4, 5])
def test_no_merge_across_the_canonical_hole(levels):
    # The last page of the lower half and the first of the upper half are adjacent only in the
    # 48/57-bit index space; as linear addresses they are 2**64 - 2**va_bits apart.
    pt = PageTables(levels)
    bits = 57 if levels == 5 else 48
    low_top = (1 << (bits - 1)) - 0x1000
    high_bottom = canonical(1 << (bits - 1), levels)
    pt.map(low_top, 0x200000)
    pt.map(high_bottom, 0x201000)  # physically contiguous, same attributes
    rs = xp.ranges(pt.mem, pt.root, xp.PagingMode(levels=levels))
    assert [(r.start, r.end, r.phys) for r in rs] == [(low_top, low_top + 0x1000, 0x200000),
                                                      (high_bottom, high_bottom + 0x1000, 0x201000)]


def _fan_out(levels: int = 4) -> PageTables:
    # Every PML4E -> one PDPT whose every entry -> one PD whose every entry -> one PT whose every
    # entry maps the same frame: 512**4 distinct mappings from 4 table pages (a DAG, no cycle).
    pt = PageTables(levels)
    pdpt, pd, ptab = pt.alloc(), pt.alloc(), pt.alloc()
    for i in range(512):
        pt.mem.write_u64(pt.root + 8 * i, pdpt | P | RW)
        pt.mem.write_u64(pdpt + 8 * i, pd | P | RW)
        pt.mem.write_u64(pd + 8 * i, ptab | P | RW)
        pt.mem.write_u64(ptab + 8 * i, 0x5000 | P | RW)
    return pt


def test_budget_bounds_a_table_dag_with_astronomically_many_mappings():
    pt = _fan_out()
    with pytest.raises(xp.WalkBudgetExceeded):
        xp.dump(pt.mem, pt.root, M4, max_entries=100_000)
    d = xp.dump(pt.mem, pt.root, M4, on_error="collect", max_entries=100_000)
    assert len(d.problems) == 1 and isinstance(d.problems[0].error, xp.WalkBudgetExceeded)
    # What was walked before the budget ran out is kept, in order, and is right.
    assert 0 < len(d.ranges) <= 100_000
    assert [r.start for r in d.ranges[:3]] == [0, 0x1000, 0x2000] and d.ranges[0].phys == 0x5000
    # Without memoisation the budget also stops the (here 262,657-page) re-reading.
    d2 = xp.dump(pt.mem, pt.root, M4, on_error="collect", max_entries=100_000, memoize=False)
    assert d2.tables_read <= 100_000 // 512 + 1 and isinstance(d2.problems[-1].error, xp.WalkBudgetExceeded)


def test_collected_problems_under_a_shared_subtree_are_reported_on_every_path():
    # A corrupt PT shared by two PDEs: both paths are named (memoising must not hide the second).
    pt = PageTables()
    pt.map(0x0, 0x9000)
    pt.map(0x1000, 0xA000)
    pde = pt.entry_addr(0, 2)
    pt.mem.write_u64(pde + 8, pt.mem.read_u64(pde))  # PDE[1] -> the same PT
    pt.mem.write_u64(pt.entry_addr(0x1000, 1), 0xA000 | P | (1 << 51))  # reserved with MAXPHYADDR 46
    d = xp.dump(pt.mem, pt.root, xp.PagingMode(4, maxphyaddr=46), on_error="collect")
    assert sorted(p.path for p in d.problems) == ["PML4E[0] -> PDPTE[0] -> PDE[0] -> PTE[1]",
                                                 "PML4E[0] -> PDPTE[0] -> PDE[1] -> PTE[1]"]
    assert [(r.start, r.end) for r in d.ranges] == [(0, 0x1000), (0x200000, 0x201000)]
    assert [p.va for p in d.problems] == [0x1000, 0x201000]


@pytest.mark.parametrize("levels", [4, 5])
def test_window_over_a_large_table_matches_the_full_dump(levels):
    rnd = random.Random(levels)
    pt = PageTables(levels)
    base = canonical(0xFFFF888000000000 if levels == 4 else 0xFF11000000000000, levels)
    for i in range(600):
        if rnd.random() < 0.8:
            pt.map(base + i * 0x1000, 0x800000 + (i + (i // 7) * 3) * 0x1000, leaf=P | rnd.choice([0, RW]))
    full = xp.ranges(pt.mem, pt.root, xp.PagingMode(levels=levels))
    lo, hi = base + 0x5800, base + 0x21F000
    part = xp.ranges(pt.mem, pt.root, xp.PagingMode(levels=levels), start=lo, end=hi)
    expect = []
    for r in full:
        s, e = max(r.start, lo), min(r.end, hi)
        if s < e:
            expect.append((s, e, r.phys + (s - r.start), r.attrs))
    assert [(r.start, r.end, r.phys, r.attrs) for r in part] == expect


def test_fault_level_and_decoded_bits():
    pt = PageTables()
    pt.map(0x200000, 0x400000, 1 << 21, leaf=P | RW | G | (1 << 12))  # PAT of a 2 MiB page is bit 12
    t = xp.walk(pt.mem, pt.root, 0x200000, M4)
    assert t.ok and t.pat and t.global_ and t.fault_level is None
    assert t.steps[-1].bits == {"P": True, "R/W": True, "U/S": False, "PWT": False, "PCD": False, "A": False,
                                "D": False, "G": True, "PAT": True, "PS": True, "XD": False}
    assert t.steps[0].bits["U/S"] and "PAT" not in t.steps[0].bits
    t = xp.walk(pt.mem, pt.root, 0x400000, M4)
    assert t.fault_level == "PDE" and t.fault == "PDE not present"
    assert xp.walk(pt.mem, pt.root, 1 << 47, M4).fault_level is None


def test_a_shared_table_under_different_permissions_is_not_reused_wrongly():
    # Two PDPTEs point at one PD, one read-only and user-less: same table, different effective
    # permissions (SDM 4.6.1), so the memo (keyed by inherited permissions) must not reuse it.
    pt = PageTables()
    pt.map(0x0, 0x700000, leaf=P | RW | US)
    pdpte0 = pt.entry_addr(0, 3)
    pd = pt.mem.read_u64(pdpte0) & 0x000FFFFFFFFFF000
    pt.mem.write_u64(pdpte0 + 8, pd | P)              # PDPTE[1]: R/W=0, U/S=0
    pt.mem.write_u64(pdpte0 + 16, pd | P | RW | US)   # PDPTE[2]: same as PDPTE[0]
    d = xp.dump(pt.mem, pt.root, M4)
    got = [(r.start, r.writable, r.user) for r in d.ranges]
    assert got == [(0, True, True), (1 << 30, False, False), (2 << 30, True, True)]
    assert d.tables_reused == 1  # PDPTE[2] reuses PDPTE[0]'s PD, PDPTE[1] cannot
    assert xp.walk(pt.mem, pt.root, 1 << 30, M4).writable is False


def test_window_cutting_a_shared_subtree():
    pt = PageTables()
    for i in range(512):
        pt.map(i * 0x1000, 0x7000, leaf=P | RW)       # one PT, every page the same frame
    pde0 = pt.entry_addr(0, 2)
    ptab = pt.mem.read_u64(pde0)
    for i in range(1, 8):
        pt.mem.write_u64(pde0 + 8 * i, ptab)          # 8 PDEs share the PT: 4096 pages
    full = xp.dump(pt.mem, pt.root, M4)
    assert len(full.ranges) == 4096 and full.tables_reused == 7
    lo, hi = 0x1FF000, 0x601000                       # starts in PT 0, ends in PT 3
    part = xp.dump(pt.mem, pt.root, M4, start=lo, end=hi)
    assert [(r.start, r.phys) for r in part.ranges] == [(va, 0x7000) for va in range(lo, hi, 0x1000)]


def test_table_outside_ram_collected_keeps_the_rest():
    pt = PageTables()
    pt.map(0x1000, 0x2000)
    pt.map(1 << 39, 0x3000)
    pt.mem.write_u64(pt.entry_addr(0x1000, 2), (1 << 40) | P | RW)
    d = xp.dump(pt.mem, pt.root, M4, on_error="collect")
    assert [(r.start, r.phys) for r in d.ranges] == [(1 << 39, 0x3000)]
    (p,) = d.problems
    assert isinstance(p.error, CorruptTable) and p.path == "PML4E[0] -> PDPTE[0] -> PDE[0]" and p.va == 0
