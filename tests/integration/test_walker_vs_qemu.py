"""Our page-table walker against QEMU's own monitor (`info mem`, `info tlb`, `gva2gpa`, `xp`) on
the real booted guest, in 4- and 5-level paging, and our two memory backends against each other."""
from __future__ import annotations

import random
import re

import pytest

from splitdbg.arch import qemu_monitor as qm
from splitdbg.arch import x86_paging as xp
from splitdbg.dbg.gdbmi import GdbMI
from splitdbg.mem import GdbstubMemory, SharedRamFile, open_memory


def cpu_state(guest):
    """CR0/CR3/CR4/EFER of CPU 0 as QEMU's monitor prints them."""
    regs = guest.hmp("info registers")
    get = lambda name: int(re.search(rf"\b{name}=([0-9a-f]+)", regs).group(1), 16)  # noqa: E731
    return get("CR0"), get("CR3"), get("CR4"), get("EFER")


@pytest.fixture
def stopped(guest):
    """The guest, paused (so its tables hold still), its RAM file and CPU 0's paging state.
    A busy user process on CPU 0 makes its CR3 a process's, so user mappings are compared too."""
    guest.run("taskset 1 sh -c 'while :; do :; done' >/dev/null 2>&1 & echo $! > /tmp/busy.pid", check=True)
    import time
    time.sleep(0.3)
    guest.pause()
    mem = SharedRamFile(guest.ram_file)
    cr0, cr3, cr4, efer = cpu_state(guest)
    yield guest, mem, cr3, xp.PagingMode.from_regs(cr0, cr4, efer)
    mem.close()
    guest.resume()
    guest.run("kill $(cat /tmp/busy.pid)")


def test_paging_mode_is_what_was_asked(stopped, guest):
    _, mem, cr3, mode = stopped
    assert mode.levels == guest.paging
    # CPU 0 runs the busy process: its tables map user pages, not only the kernel.
    assert any(r.user for r in xp.ranges(mem, cr3, mode))


def test_dump_matches_info_mem(stopped, guest):
    g, mem, cr3, mode = stopped
    if mode.levels == 5:
        pytest.skip("QEMU 7.2's `info mem` cannot walk 5-level tables (REFERENCE.md); `info tlb` covers them")
    ours = xp.ranges(mem, cr3, mode)
    theirs = g.hmp("info mem")
    assert len(qm.parse_info_mem(theirs)) > 20
    assert qm.compare_info_mem(ours, theirs) == []


def test_dump_matches_info_tlb(stopped):
    g, mem, cr3, mode = stopped
    ours = xp.ranges(mem, cr3, mode)
    theirs = g.hmp("info tlb")
    assert len(qm.parse_info_tlb(theirs)) > 1000
    assert qm.compare_info_tlb(ours, theirs) == []


def test_walk_matches_gva2gpa(stopped):
    g, mem, cr3, mode = stopped
    ours = xp.ranges(mem, cr3, mode)
    rnd = random.Random(1234)
    samples = []
    for r in rnd.sample(ours, min(len(ours), 120)):
        samples += [r.start, r.end - 1, rnd.randrange(r.start, r.end)]
    # Unmapped ones: random canonical addresses in both halves, and the holes between ranges.
    samples += [mode.canonical(rnd.getrandbits(mode.va_bits)) for _ in range(100)]
    samples += [r.end for r in ours[:-1] if r.end < 2**64][:40]
    mapped = unmapped = 0
    for va in samples:
        t = xp.walk(mem, cr3, va, mode)
        qemu = qm.parse_gva2gpa(g.hmp(f"gva2gpa {va:#x}"))
        assert t.pa == qemu, f"{va:#x}: ours {t.pa if t.pa is None else hex(t.pa)} ({t.fault}), QEMU {qemu}"
        mapped += t.ok
        unmapped += not t.ok
    assert mapped >= 200 and unmapped >= 50


def test_page_table_pages_read_the_same_through_xp(stopped):
    g, mem, cr3, mode = stopped
    t = xp.walk(mem, cr3, 0xFFFFFFFF81000000, mode)
    for step in t.steps:
        assert qm.parse_xp(g.hmp(f"xp /1gx {step.entry_addr:#x}")) == [step.entry]


def test_backends_agree_and_gdb_registers_match(guest):
    dbg = GdbMI.connect(f":{guest.port}")  # attaching stops the guest
    try:
        auto = open_memory(dbg)
        assert auto.name == "shared-ram-file" and auto.path == guest.ram_file
        stub = GdbstubMemory(dbg)
        assert stub.ram_ranges() == auto.ram_ranges()
        regs = dbg.read_registers(("cr0", "cr3", "cr4", "efer"))
        mode = xp.PagingMode.from_regs(regs["cr0"], regs["cr4"], regs["efer"])
        # The page tables through either backend: same tables, same dump.
        assert xp.ranges(stub, regs["cr3"], mode) == xp.ranges(auto, regs["cr3"], mode)
        rnd = random.Random(7)
        for addr in [0, 0x1000000, guest.ram_size - 0x1000] + [rnd.randrange(0, guest.ram_size, 0x1000) for _ in range(20)]:
            assert stub.read(addr, 0x1000) == auto.read(addr, 0x1000), hex(addr)
        # gdb's view is virtual again afterwards: the user's session is not disturbed.
        dbg.set_physical(False)
        assert dbg.read_memory(0xFFFFFFFF81000000, 16) == auto.read(0x1000000, 16)
    finally:
        dbg.close()
    assert guest.status() == "running"
