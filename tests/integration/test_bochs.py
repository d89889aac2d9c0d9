"""The guest under Bochs 2.7 (corei7_skylake_x: VMX with EPT), without the split-kernel module:
`splitdbg.lab_bochs.capture` boots it, stops at sk-bochs-break's magic breakpoint and dumps
guest-physical memory. The image is checked against oracles that do not go through the dump:
(a) Bochs's own `xp` of physical addresses, (b) the `linux_banner` bytes of vmlinux at their
physical address, (c) Bochs's `page` translations against splitdbg's walker run on the image.

One Bochs session for the module (about 20 s on the project's machines).
"""
from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from splitdbg import lab, lab_bochs
from splitdbg.arch.x86_paging import PagingMode, walk
from splitdbg.mem import ImageFile
from splitdbg.target.symbols import ElfSymbols

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

KERNEL_MAP = 0xFFFFFFFF80000000     # __START_KERNEL_map


def _need_tools():
    for tool in ("bochs", "xorriso"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} not installed (make deps)")
    try:
        lab.artifacts()
    except lab.LabError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def bochs_capture(tmp_path_factory):
    _need_tools()
    arts = lab.artifacts()
    syms = ElfSymbols(arts["vmlinux"])
    out = tmp_path_factory.mktemp("bochs")
    seen: dict = {"xp": {}, "page": {}}
    rng = random.Random(1234)

    def on_stopped(dbg, info):
        # (a) physical reads by Bochs itself, at fixed and random places of every range
        addrs = {0x1000, 0x1000000, info["regs"]["cr3"] & ~0xFFF}
        for r in info["ranges"]:
            addrs.add(r["gpa"])
            addrs.add(r["gpa"] + r["size"] - 64)
            for _ in range(3):
                addrs.add(r["gpa"] + rng.randrange(0, r["size"] - 64) & ~7)
        for a in sorted(addrs):
            seen["xp"][a] = dbg.read_memory(a, 64, physical=True)
        # (c) Bochs's translations of kernel and user addresses
        vas = [syms.address("linux_banner"), syms.address("init_task"), syms.address("phys_base"),
               0xFFFF888000000000, 0xFFFF888001000000, lab_bochs.DIRECT_MAP + info["ranges"][-1]["gpa"] + 0x10000,
               info["regs"]["rip"], 0xFFFF888000000000 + (1 << 40)]
        for va in vas:
            seen["page"][va] = dbg.page(va)

    cap = lab_bochs.capture(out, on_stopped=on_stopped, log=lambda *a: None)
    mem = ImageFile(str(cap.image))
    yield cap, mem, seen, syms, arts
    mem.close()


def test_sidecar(bochs_capture):
    cap, mem, _, _, arts = bochs_capture
    side = json.loads(cap.sidecar.read_text())
    assert side["format"] == "splitdbg-image" and side["version"] == 1 and side["source"] == "bochs-2.7"
    assert side["cpus"][0]["mode"] == "native"
    assert set(side["cpus"][0]["regs"]) == {"rip", "rsp", "cr0", "cr2", "cr3", "cr4", "efer"}
    assert side["vmlinux"] == str(Path(arts["vmlinux"]).resolve())
    assert "splitdbg.run=" in side["kernel_cmdline"]
    assert Path(side["serial_log"]).exists()
    # ranges: the E820 usable RAM, back to back in the file; nothing else
    usable = lab_bochs.usable_ranges(Path(side["serial_log"]).read_text())
    assert [(r["gpa"], r["gpa"] + r["size"]) for r in side["ranges"]] == usable
    offsets = [r["offset"] for r in side["ranges"]]
    assert offsets[0] == 0 and all(offsets[i] + side["ranges"][i]["size"] == offsets[i + 1]
                                   for i in range(len(offsets) - 1))
    assert (cap.out / "image.raw").stat().st_size == sum(r["size"] for r in side["ranges"])
    assert not mem.contains(0x9F000)                      # reserved (EBDA) is absent, not zero-filled
    for name in ("serial.txt", "bochs.log", "image.raw", "image.json"):
        assert (cap.out / name).exists()
    assert "SPLITDBG: run-end rc=0" in (cap.out / "serial.txt").read_text()


def test_image_matches_bochs_xp(bochs_capture):
    _, mem, seen, _, _ = bochs_capture
    assert len(seen["xp"]) >= 8
    for addr, data in seen["xp"].items():
        assert mem.read(addr, 64) == data, f"image and Bochs xp differ at {addr:#x}"


def test_linux_banner_at_its_physical_address(bochs_capture):
    _, mem, _, syms, arts = bochs_capture
    va = syms.address("linux_banner")
    # phys_base (the kernel's own variable, read through the same formula) is 0: no relocation
    phys_base = int.from_bytes(mem.read(syms.address("phys_base") - KERNEL_MAP, 8), "little")
    assert phys_base == 0
    with open(arts["vmlinux"], "rb") as f:
        elf = ELFFile(f)
        sec = next(s for s in elf.iter_sections() if s["sh_addr"] <= va < s["sh_addr"] + s["sh_size"]
                   and s["sh_type"] == "SHT_PROGBITS")
        banner = sec.data()[va - sec["sh_addr"]:][:200].split(b"\0")[0]
    assert banner.startswith(b"Linux version 6.1")
    assert mem.read(va - KERNEL_MAP + phys_base, len(banner)) == banner


def test_walker_on_image_agrees_with_bochs_page(bochs_capture):
    _, mem, seen, _, _ = bochs_capture
    regs = mem.registers(0)
    mode = PagingMode.from_regs(regs["cr0"], regs["cr4"], regs["efer"])
    assert mode.levels == 4
    mapped = 0
    for va, bochs in seen["page"].items():
        t = walk(mem, regs["cr3"], va, mode)
        if bochs.paddr is None:
            assert not t.ok, f"{va:#x}: Bochs says unmapped, the walker found {t.pa:#x}"
        else:
            mapped += 1
            assert t.ok, f"{va:#x}: Bochs maps it to {bochs.paddr:#x}, the walker: {t.fault}"
            # Bochs prints the physical 4 KiB page of the address, also inside a large page
            assert t.pa & ~0xFFF == bochs.paddr, f"{va:#x}: walker {t.pa:#x}, Bochs {bochs.paddr:#x}"
            assert [s.entry for s in t.steps] == [v for _, v in bochs.entries], f"{va:#x}: entries differ"
    assert mapped >= 6
