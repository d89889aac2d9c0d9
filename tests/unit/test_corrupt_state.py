"""Corrupt guest memory under the decoders (issue 12, "No traceback"): each bad value found by the
fuzzer (tests/fuzz) is a named problem in the snapshot, and the rest is still read; the work stays
bounded by the data's size. The module's state is built here in synthetic memory, field by field
as kernel/include/splitkernel.h lays it out."""
from __future__ import annotations

import struct
import time
from types import SimpleNamespace

import pytest

from splitdbg.arch import x86_paging as xp
from splitdbg.errors import MemoryReadError
from splitdbg.mem import SyntheticMemory
from splitdbg.target import snapshot as snap
from splitdbg.target import splitkernel as skm
from splitdbg.target.kernel import Kernel, KernelError

DESC, POOL, POOL_SIZE = 0x10000, 0x100000, 0x400000
CONTAINERS = POOL
RING0, SEC0, RING1, SEC1 = POOL + 0x20000, POOL + 0x40000, POOL + 0x60000, POOL + 0x80000
ROOT_NCR3 = POOL + 0x100000
ENTRIES = 64
NPT_RWU = 0x7


def build(**desc) -> SyntheticMemory:
    """Two CPUs, a root container whose nested table maps 16 pages, one event in each ring."""
    mem = SyntheticMemory(64 << 20)
    d = dict.fromkeys(skm.DESCRIPTOR_FIELDS, 0)
    d.update(magic=skm.SK_MAGIC, version=skm.SK_ABI_VERSION, size=skm.DESCRIPTOR.size, self_pa=DESC, vendor=1,
             ncpus=2, cpu_mask=3, max_containers=32, containers_pa=CONTAINERS, container_size=skm.CONTAINER_SIZE,
             event_size=skm.EVENT.size, ring_entries=ENTRIES, slat_levels=4, rings_pa0=RING0, rings_pa1=RING1,
             sec_rings_pa0=SEC0, sec_rings_pa1=SEC1, pool_pa=POOL, pool_size=POOL_SIZE,
             kernel_text_pa=0x1000000, kernel_text_end_pa=0x1400000, rodata_pa=0x1600000, rodata_end_pa=0x1700000,
             maxphyaddr=40, load_nonce=1)
    d.update(desc)
    mem.write(DESC, skm.DESCRIPTOR.pack(*(d[f] for f in skm.DESCRIPTOR_FIELDS)))
    # the root container: slot 0, nested table PML4 -> PDPT -> PD -> PT mapping 16 pages at 0
    mem.write(CONTAINERS, skm.CONTAINER_HEAD.pack(0, 1, 0, 0, ROOT_NCR3, 0, 0))
    pdpt, pd, pt = ROOT_NCR3 + 0x1000, ROOT_NCR3 + 0x2000, ROOT_NCR3 + 0x3000
    mem.write_u64(ROOT_NCR3, pdpt | NPT_RWU)
    mem.write_u64(pdpt, pd | NPT_RWU)
    mem.write_u64(pd, pt | NPT_RWU)
    mem.write_u64_array(pt, [(i << 12) | NPT_RWU for i in range(16)])
    for cpu, (ring, sec) in enumerate(((RING0, SEC0), (RING1, SEC1))):
        ring_header(mem, ring, cpu=cpu)
        ring_header(mem, sec, cpu=cpu, kind=1)
        event(mem, ring, 0, cpu=cpu, seq=1, kind=1)
        event(mem, sec, 0, cpu=cpu, seq=1, kind=6)
    return mem


def ring_header(mem, pa, head=1, overflow=0, entries=None, event_size=None, cpu=0, kind=0):
    entries = entries if entries is not None else ENTRIES // (4 if kind else 1)
    mem.write(pa, skm.RING_HEADER.pack(head, overflow, entries, event_size or skm.EVENT.size, cpu, kind))


def event(mem, ring, slot, *, cpu, seq, kind, tsc=100):
    f = dict.fromkeys(skm.EVENT_FIELDS, 0)
    f.update(seq=seq, tsc=tsc + seq, cpu=cpu, kind=kind)
    mem.write(ring + skm.RING_HEADER.size + slot * skm.EVENT.size, skm.EVENT.pack(*(f[k] for k in skm.EVENT_FIELDS)))


def poke(mem, field: str, value: int) -> None:
    """Overwrite one descriptor field."""
    offs, o = {}, 0
    for name, code in zip(skm.DESCRIPTOR_FIELDS, _codes(skm.DESCRIPTOR.format)):
        n = struct.calcsize(code)
        o = (o + n - 1) // n * n
        offs[name] = (o, code)
        o += n
    off, code = offs[field]
    mem.write(DESC + off, struct.pack("<" + code, value))


def _codes(fmt):
    import re

    return [c for n, c in re.findall(r"(\d*)([QIHB])", fmt) for _ in range(int(n or 1))]


def take(mem):
    return snap.take(mem, crosscheck=False)


def test_a_healthy_state_has_no_problems():
    s = take(build())
    assert s.problems == [] and s.module is not None
    assert len(s.events) == 4 and [c.id for c in s.containers] == [0]
    assert s.containers[0].ranges[0].start == 0 and s.containers[0].ranges[0].end == 0x10000


@pytest.mark.parametrize("field, value, words", [
    ("slat_levels", 64, "slat_levels 64"), ("slat_levels", 33, "slat_levels 33"),
    ("ncpus", 9, "ncpus 9"), ("max_containers", 33, "max_containers 33"), ("vendor", 7, "vendor 7"),
    ("ring_entries", 0x10001, "ring_entries 65537"), ("ring_entries", 1 << 17, "ring_entries 131072"),
    ("pool_pa", 1 << 40, "pool"), ("containers_pa", 0x3000000, "containers"),
])
def test_a_descriptor_nothing_can_be_read_through_is_unusable_in_one_line(field, value, words):
    mem = build()
    poke(mem, field, value)
    with pytest.raises(skm.ModuleUnusable, match=words):
        skm.SplitKernel(mem)
    s = take(mem)
    assert s.module is None and s.module_unusable and words in s.problems[0]
    from splitdbg.cli import render

    assert "split kernel   : unusable (" in render.status(s)


def test_a_ring_header_that_cannot_be_right_skips_that_ring_only():
    mem = build()
    ring_header(mem, RING1, entries=0x10001, cpu=1)           # the fuzzer's case: entries not a power of two
    ring_header(mem, SEC0, event_size=113, kind=1)
    s = take(mem)
    assert {(e.cpu, e.ring) for e in s.events} == {(0, 0), (1, 1)}       # the other two rings
    assert any("CPU 1's busy ring" in p and "entries 65537" in p for p in s.problems)
    assert any("CPU 0's security ring" in p and "event_size 113" in p for p in s.problems)


@pytest.mark.parametrize("change, words", [
    (dict(cpu=0x801), "cpu 2049"), (dict(kind=1, entries=ENTRIES), "ring_kind 1 (not 0)"), (dict(head=1 << 60), "head"),
    (dict(overflow=5), "overflow 0x5 > head"), (dict(entries=1 << 16), "entries 65536"),
])
def test_ring_header_fields(change, words):
    mem = build()
    ring_header(mem, RING1, **{"cpu": 1, **change})
    s = take(mem)
    assert any(words in p for p in s.problems), s.problems
    assert len(s.events) == 3


def test_a_ring_outside_the_pool_is_a_problem():
    mem = build()
    poke(mem, "rings_pa1", 0x2)
    s = take(mem)
    assert any("address 0x2 is not inside the module's pool" in p for p in s.problems) and len(s.events) == 3


def test_an_entry_naming_another_cpu_is_left_out():
    """Found by the fuzzer: an entry's cpu field picked another CPU's registers (KeyError guest4095_cr0)."""
    mem = build()
    event(mem, RING0, 0, cpu=4095, seq=1, kind=1)
    s = take(mem)
    assert len(s.events) == 3 and any("1 entry naming another CPU left out" in p for p in s.problems)


def test_maxphyaddr_out_of_range_is_a_problem_and_the_default_is_used():
    """Found by the fuzzer: maxphyaddr 0x128 overflowed numpy in the nested-table walk."""
    mem = build(maxphyaddr=0x128)
    s = take(mem)
    assert any("maxphyaddr 296" in p for p in s.problems) and s.containers[0].ranges


def test_cpu_mask_beyond_ncpus_is_ignored():
    s = take(build(cpu_mask=0x83))
    assert s.cpus == [0, 1] and any("cpu_mask 0x83" in p for p in s.problems)


@pytest.mark.parametrize("lo, hi, words", [(0x1400000, 0x1000000, "empty or reversed"),
                                           (0x1000000, 1 << 63, "MiB (more than 1024 MiB)"),
                                           (0x1000000, 0x10000000, "not inside guest RAM")])
def test_a_kernel_text_span_that_cannot_be_right_is_not_used(lo, hi, words):
    """A corrupt kernel_text_end_pa once made `check` take 18.7 s and 1.84 GB."""
    mem = build(kernel_text_pa=lo, kernel_text_end_pa=hi)
    sk = skm.SplitKernel(mem)
    assert sk.region("text") is None and sk.region("rodata") == (0x1600000, 0x1700000)
    assert any(words in p and "kernel text" in p for p in take(mem).problems)


@pytest.mark.parametrize("field, off, value, words", [("npgds", 24, 65, "npgds 65 > 64"),
                                                       ("nisolated", 28, 1000, "nisolated 1000 > 64"),
                                                       ("id", 0, 7, "id 7 in slot 1"),
                                                       ("active", 4, 9, "active 9")])
def test_a_container_that_cannot_be_right_is_left_out(field, off, value, words):
    mem = build()
    mem.write(CONTAINERS + skm.CONTAINER_SIZE, skm.CONTAINER_HEAD.pack(1, 1, 42, 0, ROOT_NCR3, 0, 0))
    mem.write(CONTAINERS + skm.CONTAINER_SIZE + off, struct.pack("<I", value))
    s = take(mem)
    assert [c.id for c in s.containers] == [0] and any(words in p and "slot 1" in p for p in s.problems)


def test_nprotected_past_its_array():
    mem = build()
    tail = skm.CONTAINER_HEAD.size + 8 * (64 + 128) + skm.COUNTERS.size + 16
    mem.write(CONTAINERS + tail, struct.pack("<I", 17))
    s = take(mem)
    assert s.containers == [] and any("nprotected 17 > 16" in p for p in s.problems)


def test_nested_tables_pointed_at_one_table_are_bounded_by_the_pool():
    """Every entry at every level pointing at one table: 512**3 walks of it without a bound."""
    mem = build()
    mem.write_u64_array(ROOT_NCR3, [(ROOT_NCR3 + 0x1000) | NPT_RWU] * 512)
    mem.write_u64_array(ROOT_NCR3 + 0x1000, [(ROOT_NCR3 + 0x2000) | NPT_RWU] * 512)
    mem.write_u64_array(ROOT_NCR3 + 0x2000, [(ROOT_NCR3 + 0x3000) | NPT_RWU] * 512)
    t0 = time.monotonic()
    s = take(mem)
    assert time.monotonic() - t0 < 5
    assert any("more than 1024 table pages" in p and "container 0" in p for p in s.problems)
    assert s.containers[0].ranges            # what was read before the bound is kept


@pytest.mark.parametrize("entry, words", [(ROOT_NCR3 | NPT_RWU, "its own ancestor"),
                                          ((1 << 39) | NPT_RWU, "cannot read")])
def test_a_nested_table_at_itself_or_outside_ram(entry, words):
    mem = build()
    mem.write_u64(ROOT_NCR3 + 8, entry)          # PML4E[1]: after the 16 pages PML4E[0] maps
    s = take(mem)
    assert [c.id for c in s.containers] == [0]
    assert any(words in p and "container 0's nested table" in p for p in s.problems), s.problems


def kernel_with_list(mem, nodes: dict[int, int]) -> Kernel:
    """A Kernel that reads `nodes` (address -> next) and knows one struct offset."""
    k = Kernel.__new__(Kernel)
    k.types = SimpleNamespace(offsetof=lambda struct, member: 0x10)

    def u64(va):
        if va not in nodes:
            raise MemoryReadError(va, 8, "not mapped")
        return nodes[va]
    k.u64 = u64
    return k


def test_a_list_that_loops_without_its_head_is_reported_not_empty():
    k = kernel_with_list(None, {0x100: 0x200, 0x200: 0x300, 0x300: 0x200})
    with pytest.raises(KernelError, match="loops"):
        list(k.list_entries(0x100, "task_struct", "tasks"))
    problems = []
    assert list(k.list_entries(0x100, "task_struct", "tasks", problems=problems)) == [0x1F0, 0x2F0]
    assert len(problems) == 1 and "loops" in problems[0] and "stops after 2 nodes" in problems[0]


def test_a_list_with_a_wild_pointer_or_too_long():
    k = kernel_with_list(None, {0x100: 0x200, 0x200: 0xDEAD})
    problems = []
    assert list(k.list_entries(0x100, "module", "list", problems=problems)) == [0x1F0]
    assert "node unreadable" in problems[0] and "stops after 1 nodes" in problems[0]
    with pytest.raises(KernelError, match="node unreadable"):
        list(k.list_entries(0x100, "module", "list"))
    k = kernel_with_list(None, {**{0x100 + i * 0x10: 0x110 + i * 0x10 for i in range(100)}})
    problems = []
    assert len(list(k.list_entries(0x100, "module", "list", limit=10, problems=problems))) == 10
    assert "longer than 10 nodes" in problems[0]


def test_a_stack_pointer_outside_the_stack_is_a_read_error():
    """Found by the fuzzer: MemoryReadError was raised with one argument (a TypeError)."""
    from splitdbg.target.tasks import TaskReader

    r = TaskReader.__new__(TaskReader)
    r.o_stack, r.o_sp = 0, 8
    r.k = SimpleNamespace(u64=lambda va: {0: 0xFFFFC90000000000, 8: 0x1234}[va])
    with pytest.raises(MemoryReadError, match="outside the stack"):
        r.frames(0)


def test_guest_tables_pointed_at_one_corrupt_table_are_decoded_once():
    """Every PDPTE at one PD full of reserved-bit entries: each path reports them, and the work is
    bounded (memoised; at most MAX_PROBLEMS problems listed)."""
    mem = SyntheticMemory(64 << 20)
    pml4, pdpt, pd = 0x1000, 0x2000, 0x3000
    mem.write_u64(pml4, pdpt | 7)
    mem.write_u64_array(pdpt, [pd | 7] * 512)
    mem.write_u64_array(pd, [(1 << 50) | 0x87] * 512)     # reserved bits under MAXPHYADDR 40
    t0 = time.monotonic()
    d = xp.dump(mem, pml4, xp.PagingMode(4, maxphyaddr=40), on_error="collect")
    assert time.monotonic() - t0 < 3 and d.tables_read == 3
    assert len(d.problems) == xp.MAX_PROBLEMS + 1 and "the rest are not listed" in str(d.problems[-1])
    assert d.problems[0].path == "PML4E[0] -> PDPTE[0] -> PDE[0]"
    assert d.problems[512].path == "PML4E[0] -> PDPTE[1] -> PDE[0]"


# -- the commands on an image of such a state -------------------------------------------------------
def image_of(mem, tmp_path):
    from splitdbg.mem.image import ImageMeta, now_iso

    path = tmp_path / "g.raw"
    with open(path, "wb") as f:
        f.truncate(mem.size)
        for pfn, page in mem.pages.items():
            f.seek(pfn << 12)
            f.write(page)
    ImageMeta(source="test", created=now_iso(), ranges=[{"gpa": 0, "offset": 0, "size": mem.size}]).save(
        tmp_path / "g.json")
    return str(path)


def run(capsys, *argv):
    from splitdbg.cli import main

    rc = main([argv[0], argv[1], "--vmlinux", "", *argv[2:]])
    out, err = capsys.readouterr()
    return rc, out, err


def test_commands_say_the_problems_and_show_the_rest(tmp_path, capsys):
    mem = build()
    ring_header(mem, RING1, entries=0x10001, cpu=1)
    img = image_of(mem, tmp_path)
    rc, out, err = run(capsys, "events", img)
    assert rc == 0 and "Traceback" not in out + err
    assert "splitdbg: problem: CPU 1's busy ring" in err and "entries 65537" in err
    assert len([line for line in out.splitlines() if "cr4-blocked" in line]) == 2     # the security rings
    rc, out, err = run(capsys, "status", img)
    assert rc == 0 and "problem        : CPU 1's busy ring" in out
    rc, out, err = run(capsys, "containers", img, "--json")
    assert rc == 0 and "splitdbg: problem:" in err and out.startswith("[")


def test_an_unusable_module_is_one_line_and_non_zero(tmp_path, capsys):
    img = image_of(build(slat_levels=64), tmp_path)
    for cmd in ("containers", "events", "ept", "snapshot"):
        extra = ("-o", str(tmp_path / "s.json")) if cmd == "snapshot" else ()
        rc, out, err = run(capsys, cmd, img, *extra)
        assert rc == 2 and err.count("\n") == 1 and "slat_levels 64 (not 4 or 5)" in err, (cmd, err)
    rc, out, err = run(capsys, "status", img)
    assert rc == 2 and "split kernel   : unusable (split-kernel descriptor at 0x10000 is corrupt: slat_levels 64" in out


def test_a_violation_the_model_cannot_read_is_not_checked_and_named(monkeypatch):
    """Found by the fuzzer: a violation whose tables the nested table maps outside RAM ended
    `snapshot` with "cannot read ... outside guest RAM" (rc 2) instead of listing the rest."""
    mem = build()
    f = dict.fromkeys(skm.EVENT_FIELDS, 0)
    f.update(seq=2, tsc=300, cpu=0, kind=2, exit_code=0x400, exitinfo1=0x7, exitinfo2=0x1000, slat_root=ROOT_NCR3)
    mem.write(SEC0 + skm.RING_HEADER.size + skm.EVENT.size, skm.EVENT.pack(*(f[k] for k in skm.EVENT_FIELDS)))
    ring_header(mem, SEC0, head=2, kind=1)

    def unreadable(*a, **kw):
        raise MemoryReadError(0xDE70749000, 8, "outside guest RAM")
    monkeypatch.setattr(snap, "crosscheck_event", unreadable)
    s = snap.take(mem, crosscheck=True)
    v = [e for e in s.events if e.kind == "violation"]
    assert len(s.events) == 5 and len(v) == 1 and v[0].check.startswith("not checked: cannot read 0x8 bytes")
    assert any("violation seq 2 on CPU 0: the model cannot judge it" in p for p in s.problems)


def test_nested_tables_aliased_into_many_ranges_are_cut_short():
    """Found by the fuzzer on a VMX image: every PDPTE at one PD of 512 2 MiB leaves (alternately
    writable) stays under the pool's page budget but makes 262,144 ranges; `snapshot` spent 35 s
    writing them."""
    mem = build()
    pdpt, pd = ROOT_NCR3 + 0x1000, ROOT_NCR3 + 0x2000
    mem.write_u64_array(pdpt, [pd | NPT_RWU] * 512)
    mem.write_u64_array(pd, [(i << 21) | 0x80 | (NPT_RWU if i % 2 else 0x5) for i in range(512)])
    t0 = time.monotonic()
    s = take(mem)
    assert time.monotonic() - t0 < 5
    assert len(s.containers[0].ranges) == snap.MAX_RANGES
    assert any(f"more than {snap.MAX_RANGES} ranges" in p for p in s.problems)
