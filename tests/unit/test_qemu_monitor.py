"""Parsers of QEMU 7.2 monitor output, on text captured from QEMU itself (tests/unit/data)."""
from __future__ import annotations

from pathlib import Path

from splitdbg.arch import qemu_monitor as qm
from splitdbg.arch import x86_paging as xp

DATA = Path(__file__).parent / "data"


def test_info_mem():
    rows = qm.parse_info_mem((DATA / "info_mem_4level.txt").read_text())
    assert rows[0] == (0x400000, 0x420000, "ur-")
    assert all(s < e for s, e, _ in rows) and all(rows[i][1] <= rows[i + 1][0] for i in range(len(rows) - 1))
    assert rows[-1][1] <= 1 << 64 and len(rows) == 59


def test_info_tlb():
    rows = qm.parse_info_tlb((DATA / "info_tlb_4level_head.txt").read_text())
    assert len(rows) == 60
    last = rows[-1]  # "ffffffffff5fd000: 00000000fee00000 XG-DACT-W" : the local APIC
    assert (last.va, last.pa, last.nx, last.global_, last.large, last.pcd, last.pwt, last.user, last.writable) == \
        (0xFFFFFFFFFF5FD000, 0xFEE00000, True, True, False, True, True, False, True)


def test_gva2gpa_and_xp():
    ok, unmapped, xpout = (DATA / "monitor_misc.txt").read_text().split("----\n")
    assert qm.parse_gva2gpa(ok) == 0x1000000
    assert qm.parse_gva2gpa(unmapped) is None
    assert qm.parse_xp(xpout) == [0x4800803F51258D48, 0x01B9FFFFFFF23D8D, 0x989E058B48C00001, 0x000000C2C748008A]


def test_compare_info_mem_reports_differences():
    r = [xp.Range(0x1000, 0x3000, 0x5000, 0x1000, xp.ATTR_W)]
    assert qm.compare_info_mem(r, "0000000000001000-0000000000003000 0000000000002000 -rw\r\n") == []
    diffs = qm.compare_info_mem(r, "0000000000001000-0000000000003000 0000000000002000 -r-\r\n")
    assert diffs and "ours" in diffs[0]


def test_compare_info_tlb_reports_differences():
    r = [xp.Range(0x1000, 0x3000, 0x5000, 0x1000, xp.ATTR_W)]
    good = "0000000000001000: 0000000000005000 ---DA---W\n0000000000002000: 0000000000006000 ---DA---W\n"
    assert qm.compare_info_tlb(r, good) == []
    assert qm.compare_info_tlb(r, good.replace("6000 ---DA---W", "7000 ---DA---W"))
    assert qm.compare_info_tlb(r, good.replace("---DA---W\n0", "---DA----\n0"))  # leaf read-only, ours writable
    assert qm.compare_info_tlb(r, good + "0000000000009000: 0000000000009000 ---DA---W\n")


def test_info_memdev():
    (mem,) = qm.parse_info_memdev((DATA / "info_memdev.txt").read_text())
    assert mem == {"id": "mem", "size": 512 << 20, "merge": True, "dump": True, "prealloc": False,
                   "share": True, "reserve": True, "policy": "default", "host nodes": ""}


def _guest_snapshot(name):
    """Page-table pages of a real guest (QEMU 7.2, -cpu max) with QEMU's own `info tlb`/`info mem`
    taken while it was stopped: QEMU is the oracle, the walker is checked against it offline."""
    import gzip

    import numpy as np

    from splitdbg.mem.synthetic import SyntheticMemory

    z = np.load(DATA / name)
    mem = SyntheticMemory(512 << 20)
    for addr, page in zip(z["addrs"], z["pages"]):
        mem.write(int(addr), page.astype("<u8").tobytes())
    cr0, cr3, cr4, efer = (int(x) for x in z["regs"])
    text = {k: gzip.decompress(z[k].tobytes()).decode() for k in ("info_tlb", "info_mem")}
    return mem, cr3, xp.PagingMode.from_regs(cr0, cr4, efer), text


def test_walker_agrees_with_qemu_on_a_real_4level_guest():
    mem, cr3, mode, text = _guest_snapshot("guest_4level_tables.npz")
    assert mode.levels == 4
    d = xp.dump(mem, cr3, mode)
    assert not d.problems and len(d.ranges) > 50
    assert qm.compare_info_mem(d.ranges, text["info_mem"]) == []
    assert qm.compare_info_tlb(d.ranges, text["info_tlb"]) == []
    assert len(qm.parse_info_tlb(text["info_tlb"])) > 4000


def test_walker_agrees_with_qemu_on_a_real_5level_guest():
    mem, cr3, mode, text = _guest_snapshot("guest_5level_tables.npz")
    assert mode.levels == 5  # QEMU 7.2's `info mem` cannot walk 5 levels: `info tlb` only
    d = xp.dump(mem, cr3, mode)
    assert not d.problems and qm.compare_info_tlb(d.ranges, text["info_tlb"]) == []
    # Spot checks with walk(): every leaf QEMU lists translates to its frame.
    for e in qm.parse_info_tlb(text["info_tlb"])[::97]:
        t = xp.walk(mem, cr3, e.va, mode)
        assert t.ok and t.pa == e.pa
        assert e.user or not t.user  # effective U implies the leaf's U


def test_compare_info_tlb_catches_a_changed_real_leaf():
    mem, cr3, mode, text = _guest_snapshot("guest_4level_tables.npz")
    t = xp.walk(mem, cr3, 0xFFFFFFFF81000000, mode)
    leaf = t.steps[-1]
    mem.write_u64(leaf.entry_addr, leaf.entry ^ (1 << 21 if t.page_size > 4096 else 1 << 12))  # next frame
    assert qm.compare_info_tlb(xp.ranges(mem, cr3, mode), text["info_tlb"])


class _QomDbg:
    def monitor(self, cmd):
        if cmd == "qom-list /machine/unattached":
            return (DATA / "qom_list_machine_unattached.txt").read_text()
        assert cmd == "qom-get /machine/unattached/device[0] phys-bits"
        return "40\r\n"  # what QEMU 7.2 TCG answered for -cpu max

    def read_registers(self, names=(), cpu=None):
        # gdb's values on the 4-level guest (la57=off) and the 5-level one differ only in CR4.LA57
        return {"cr0": 0x80050033, "cr3": 0x483000 | (1 << 63), "cr4": 0x7506B0, "efer": 0xD01}


def test_maxphyaddr_and_mode_from_qemu():
    assert qm.guest_maxphyaddr(_QomDbg()) == 40
    mode, cr3 = qm.paging_mode_from_gdb(_QomDbg())
    assert mode == xp.PagingMode(levels=4, nxe=True, maxphyaddr=40) and cr3 == 0x483000 | (1 << 63)


def test_real_tables_have_no_reserved_bits_at_the_real_maxphyaddr():
    # The guest ran on these tables under QEMU, whose TCG checks bits 51:phys-bits (40): so must we.
    for name in ("guest_4level_tables.npz", "guest_5level_tables.npz"):
        mem, cr3, mode, _ = _guest_snapshot(name)
        strict = xp.PagingMode(mode.levels, mode.nxe, maxphyaddr=40)
        assert xp.dump(mem, cr3, strict).ranges == xp.dump(mem, cr3, mode).ranges


def test_debian_kernel_espfix_memo_against_qemu():
    # Debian 6.1 (linux-image-6.1.0-56-amd64) in QEMU 7.2, 4-level: its ESPFIX area maps 65,536
    # pages through shared tables. Memoising must read ~110 table pages instead of ~2,160 and
    # give exactly what QEMU's `info mem` and `info tlb` print.
    mem, cr3, mode, text = _guest_snapshot("debian61_4level_tables.npz")
    d = xp.dump(mem, cr3, mode)
    plain = xp.dump(mem, cr3, mode, memoize=False)
    assert d.ranges == plain.ranges and len(d.ranges) > 65_536
    assert d.tables_read < 120 and plain.tables_read > 2_000
    assert qm.compare_info_mem(d.ranges, text["info_mem"]) == []
    assert qm.compare_info_tlb(d.ranges, text["info_tlb"]) == []


def test_debian_kernel_5level_against_qemu_info_tlb():
    mem, cr3, mode, text = _guest_snapshot("debian61_5level_tables.npz")
    assert mode.levels == 5
    d = xp.dump(mem, cr3, mode)
    assert len(d.ranges) > 65_536 and d.tables_read < 120 and d.tables_reused > 100
    assert qm.compare_info_tlb(d.ranges, text["info_tlb"]) == []
