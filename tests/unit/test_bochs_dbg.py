"""Parsers for the Bochs 2.7 debugger, on outputs captured from a real session (tests/unit/data/bochs/,
the splitdbg guest under `qemu-scripts/run-bochs.sh`, 64 MiB, corei7_skylake_x, stopped at the magic
breakpoint of sk-bochs-break)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from splitdbg.dbg import bochs as bx
from splitdbg import lab_bochs

DATA = Path(__file__).parent / "data" / "bochs"


def data(name: str) -> str:
    return (DATA / f"{name}.txt").read_text()


def test_regs():
    regs = bx.parse_regs(data("r"))
    assert regs["rip"] == 0x401558
    assert regs["rax"] == 0
    assert regs["rsp"] >> 40 == 0x7f          # user stack
    assert set(f"r{i}" for i in range(8, 16)) <= set(regs)
    assert {"rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "eflags"} <= set(regs)
    assert regs["eflags"] & 0x2                # reserved bit 1 is always set


def test_regs_underscored_values():
    regs = bx.parse_regs("rax: ffffffff_81025e2d\nrip: ffffffff_81060777\n"
                         "eflags 0x00000046: id vip vif ac vm rf nt IOPL=0 of df if tf sf ZF af PF cf\n")
    assert regs == {"rax": 0xffffffff81025e2d, "rip": 0xffffffff81060777, "eflags": 0x46}


def test_creg():
    c = bx.parse_creg(data("creg"))
    assert c["cr0"] & 0x80000001 == 0x80000001   # PG, PE
    assert c["cr4"] & (1 << 5)                     # PAE
    assert not c["cr4"] & (1 << 12)                # no LA57: 4-level paging
    assert c["efer"] & 0x500 == 0x500              # LME, LMA
    assert c["cr3"] & 0xfff == c["cr3"] & 0xfff    # PCID bits kept as printed
    assert "cr2" in c and "cr8" in c and "xcr0" in c


def test_creg_cr2_form():
    assert bx.parse_creg("CR2=page fault laddr=0x00000000004f0215\n")["cr2"] == 0x4f0215


def test_sreg():
    s = bx.parse_sreg(data("sreg"))
    assert s["cs"]["selector"] == 0x33           # user code, 64-bit
    assert s["ss"]["selector"] == 0x2b
    assert s["gdtr"]["base"] == 0xfffffe0000001000 and s["gdtr"]["limit"] == 0x7f
    assert s["idtr"]["base"] == 0xfffffe0000000000
    assert s["tr"]["selector"] == 0x40


def test_page_2m_and_4k():
    w = bx.parse_page(data("page_2m"))
    assert w.laddr == 0xffffffff81000000 and w.paddr == 0x1000000
    assert [e for e, _ in w.entries] == ["PML4", "PDPE", "PDE"]
    assert w.entries[2][1] & 0x80                  # PS
    w = bx.parse_page(data("page_4k_user"))
    assert [e for e, _ in w.entries] == ["PML4", "PDPE", "PDE", "PTE"]
    assert w.paddr == w.entries[3][1] & 0x000ffffffffff000


def test_page_direct_map():
    w = bx.parse_page(data("page_direct_map"))
    assert w.laddr == 0xffff888001000000 and w.paddr == 0x1000000


@pytest.mark.parametrize("name, laddr, depth", [("page_unmapped", 0xffff888003ff0000, 4),
                                                 ("page_noncanonical_hole", 0x100000000000, 1)])
def test_page_unmapped(name, laddr, depth):
    w = bx.parse_page(data(name))
    assert w.paddr is None and w.laddr == laddr and len(w.entries) == depth


def test_page_garbage():
    with pytest.raises(bx.BochsError):
        bx.parse_page("Error: something else\n")


def test_x_units_agree():
    g = bx.x_bytes(data("xp_g"), "g")
    b = bx.x_bytes(data("xp_b"), "b")
    w = bx.x_bytes(data("xp_w"), "w")
    assert len(g) == 48 and len(b) == 20 and len(w) == 24
    assert g[:20] == b and g[:24] == w
    assert bx.x_bytes(data("x_g"), "g") == g       # kernel text: linear 0xffffffff81000000 = physical 0x1000000


def test_x_values_without_leading_zeros():
    vals = bx.parse_x(data("xp_g"), "g")
    assert vals[0x1000008] == 0x1b9fffffff23d8d    # printed as 0x1b9fffffff23d8d (15 digits)


def test_x_failed_read():
    assert bx.parse_x(data("x_unmapped"), "g") == {}


def test_info_tab():
    tab = bx.parse_info_tab(data("info_tab"))
    assert (0xffffffff81000000, 0xffffffff81c00000, 0x1000000) in tab
    assert all(s < e for s, e, _ in tab)
    # the Bochs 2.7 quirk documented in parse_info_tab: no direct map in the listing
    assert not any(s >> 40 == 0xffff88 for s, _, _ in tab)


def test_stops():
    st = bx.parse_stop(data("stop_magic"))
    assert st.reason == "magic" and st.cs == 0x33 and st.rip == 0x401558 and st.ticks == 1338717463
    assert st.linear == 0x1b20558
    st = bx.parse_stop(data("stop_interrupt"))
    assert st.reason == "interrupt" and st.cs == 0x10 and st.rip == 0x1d8f2c7
    # No VMX guest ran in the captured session: this report follows dbg_main.cc's format strings
    # ("(%u) Caught VMEXIT breakpoint"), the disassembly line as in the captured stops.
    st = bx.parse_stop("(0) Caught VMEXIT breakpoint\nNext at t=5\n"
                       "(0) [0x000001234567] 0010:ffffffffa0001234 (unk. ctxt): push rbp ; 55\n")
    assert st.reason == "vmexit" and st.rip == 0xffffffffa0001234 and st.ticks == 5
    # After a quit, Bochs prints the current instruction with the tick count in the prefix.
    # SMP (two CPUs; lines as Bochs printed them, the CPUs swapped): the stopping CPU's place
    st = bx.parse_stop(data("stop_vmexit_smp"))
    assert st.reason == "vmexit" and st.cpu == 1 and st.rip == 0xffffffffa0003f30 and st.linear == 0x8def30
    assert st.where == {0: (0x10, 0xffffffff811db11b), 1: (0x10, 0xffffffffa0003f30)}
    st = bx.parse_stop("(0).[1164410284] [0x0000000e1b1b] 0010:00000000000e1b1b (unk. ctxt): wrmsr ; 0f30\n")
    assert st.rip == 0xe1b1b


def test_e820():
    e = bx.parse_e820(data("serial_e820"))
    assert e[0] == (0, 0x9f000, "usable")
    assert (0x100000, 0x3ff0000, "usable") in e
    assert (0x3ff0000, 0x4000000, "ACPI data") in e
    assert lab_bochs.usable_ranges(data("serial_e820")) == [(0, 0x9f000), (0x100000, 0x3ff0000)]


def test_e820_reboot_not_repeated():
    text = data("serial_e820")
    assert bx.parse_e820(text + text) == bx.parse_e820(text)


def test_guest_run_command():
    assert lab_bochs.guest_run_command("") == "sk-bochs-break"
    assert lab_bochs.guest_run_command("sktest x") == "sktest x; rc=$?; sk-bochs-break; exit $rc"
    with pytest.raises(lab_bochs.BochsLabError):
        lab_bochs.guest_run_command('echo "x"')
    assert lab_bochs.kernel_append("splitkernel,sktest", "") == \
        'splitdbg.load=splitkernel,sktest splitdbg.run="sk-bochs-break"'


class FakeBochs:
    """`dump_linear` over a dict of mapped physical pages, the way writemem behaves: it writes up to
    the first unmapped page and stops."""

    def __init__(self, mem: bytes, unmapped: set[int]):
        self.mem, self.unmapped = mem, unmapped

    def dump_linear(self, path, laddr, size):
        pa = laddr - lab_bochs.DIRECT_MAP
        n = 0
        while n < size and (pa + n) // 4096 not in self.unmapped:
            n += 4096
        n = min(n, size)
        Path(path).write_bytes(self.mem[pa:pa + n])
        return n

    def read_memory(self, addr, size, physical=False):
        assert physical
        return self.mem[addr:addr + size]


def test_dump_ranges_skips_unmapped_pages(tmp_path):
    mem = bytes((i // 4096) & 0xff for i in range(64 * 4096))
    fake = FakeBochs(mem, unmapped={5, 6, 40})
    ranges, notes, total = lab_bochs.dump_ranges(fake, [(0, 16 * 4096), (32 * 4096, 64 * 4096)],
                                                 tmp_path / "img.raw", tmp_path)
    assert ranges == [{"gpa": 0, "offset": 0, "size": 5 * 4096},
                      {"gpa": 7 * 4096, "offset": 5 * 4096, "size": 9 * 4096},
                      {"gpa": 32 * 4096, "offset": 14 * 4096, "size": 8 * 4096},
                      {"gpa": 41 * 4096, "offset": 22 * 4096, "size": 23 * 4096}]
    img = (tmp_path / "img.raw").read_bytes()
    assert len(img) == total == 45 * 4096
    for r in ranges:
        assert img[r["offset"]:r["offset"] + r["size"]] == mem[r["gpa"]:r["gpa"] + r["size"]]
    # one note per run of unmapped pages: 5-6 (two pages) and 40
    assert [n.split(":")[0] for n in notes if "not mapped" in n] == ["gpa 0x5000-0x7000", "gpa 0x28000-0x29000"]


def test_dump_ranges_goes_past_a_long_unmapped_run(tmp_path):
    # The module's 4 MiB pool is not in the guest's direct map: a dump in VMX non-root mode skips
    # it page by page (1,024 pages) and still gets everything after it.
    mem = bytes((i // 4096) & 0xff for i in range(2048 * 4096))
    fake = FakeBochs(mem, unmapped=set(range(512, 1536)))
    ranges, notes, total = lab_bochs.dump_ranges(fake, [(0, 2048 * 4096)], tmp_path / "img.raw", tmp_path)
    assert [(r["gpa"], r["size"]) for r in ranges] == [(0, 512 * 4096), (1536 * 4096, 512 * 4096)]
    assert total == 1024 * 4096 and notes == [
        "gpa 0x200000-0x600000: 1024 page(s) not mapped at 0xffff888000200000 in this context; left out of the image"]


def test_sidecar_schema(tmp_path):
    side = lab_bochs.write_sidecar(
        tmp_path / "image.json", source="bochs-2.7", ranges=[{"gpa": 0, "offset": 0, "size": 4096}],
        vmlinux=None, cmdline="console=ttyS0",
        cpus=[{"cpu": 0, "mode": "native",
               "regs": {"rip": 1, "rsp": 2, "cr0": 3, "cr2": 4, "cr3": 5, "cr4": 6, "efer": 7, "rax": 8}}],
        serial_log=str(tmp_path / "serial.txt"), notes=["n"])
    assert json.loads((tmp_path / "image.json").read_text()) == side
    assert set(side) == {"format", "version", "source", "created", "ranges", "vmlinux", "kernel_cmdline",
                         "cpus", "serial_log", "notes"}
    assert side["format"] == "splitdbg-image" and side["version"] == 1
    assert side["cpus"] == [{"cpu": 0, "mode": "native",
                             "regs": {"rip": 1, "rsp": 2, "cr0": 3, "cr2": 4, "cr3": 5, "cr4": 6, "efer": 7}}]
    assert Path(side["serial_log"]).is_absolute()


def test_dump_ranges_reads_unmapped_runs_physically_when_asked(tmp_path):
    mem = bytes((i // 4096) & 0xff for i in range(64 * 4096))
    fake = FakeBochs(mem, unmapped={5, 6, 63})
    ranges, notes, total = lab_bochs.dump_ranges(fake, [(0, 64 * 4096)], tmp_path / "img.raw", tmp_path,
                                                 physical_holes=True)
    assert ranges == [{"gpa": 0, "offset": 0, "size": 64 * 4096}] and total == 64 * 4096
    assert (tmp_path / "img.raw").read_bytes() == mem
    assert [n.split(": ", 1)[0] for n in notes] == ["gpa 0x5000-0x7000", "gpa 0x3f000-0x40000"]
    assert all(n.endswith("read with xp (physical)") for n in notes)
