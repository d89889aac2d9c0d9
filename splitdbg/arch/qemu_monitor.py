"""Parsers for QEMU 7.2 monitor output (target/i386/monitor.c): the oracle our decoders are
checked against, and comparisons that return the differences (empty when they agree)."""
from __future__ import annotations

import re
from dataclasses import dataclass

from .x86_paging import PagingMode, Range, merge_for_info_mem

_INFO_MEM = re.compile(r"^([0-9a-f]{16})-([0-9a-f]{16}) ([0-9a-f]{16}) ([u-])r([w-])$", re.M)
_INFO_TLB = re.compile(r"^([0-9a-f]{16}): ([0-9a-f]{16}) ([X-])([G-])([P-])([D-])([A-])([C-])([T-])([U-])([W-])$", re.M)


def parse_info_mem(text: str) -> list[tuple[int, int, str]]:
    """`info mem`: (start, end, "urw"-style perms); `end` of the last range may be 2**64."""
    out = []
    for start, end, size, u, w in _INFO_MEM.findall(text.replace("\r", "")):
        s, n = int(start, 16), int(size, 16)
        out.append((s, s + n, f"{u}r{w}"))  # start+size, since QEMU prints end modulo 2**64
    return out


@dataclass(frozen=True)
class TlbEntry:
    va: int
    pa: int
    nx: bool
    global_: bool
    large: bool
    dirty: bool
    accessed: bool
    pcd: bool
    pwt: bool
    user: bool
    writable: bool


def parse_info_tlb(text: str) -> list[TlbEntry]:
    """`info tlb`: one line per leaf entry, flags of the leaf entry alone (not combined)."""
    out = []
    for m in _INFO_TLB.finditer(text.replace("\r", "")):
        va, pa, *flags = m.groups()
        out.append(TlbEntry(int(va, 16), int(pa, 16), *(f != "-" for f in flags)))
    return out


def parse_gva2gpa(text: str) -> int | None:
    """`gva2gpa ADDR`: the guest-physical address, or None for "Unmapped"."""
    m = re.search(r"gpa: (0x[0-9a-f]+|0)\b", text)  # QEMU prints 0 without "0x"
    if m:
        return int(m.group(1), 16)
    if "Unmapped" in text:
        return None
    raise ValueError(f"unexpected gva2gpa output: {text!r}")


def parse_xp(text: str) -> list[int]:
    """`xp /Ngx ADDR`: the 64-bit words, in order."""
    words = []
    for line in text.splitlines():
        if ":" in line:
            words += [int(w, 16) for w in re.findall(r"0x([0-9a-f]+)", line.split(":", 1)[1])]
    return words


def parse_info_memdev(text: str) -> list[dict]:
    """`info memdev`: one dict per backend: id, size (int), merge/dump/prealloc/share/reserve
    (bool), policy, host nodes. QEMU 7.2 prints no mem-path here: see mem.find_ram_file."""
    out: list[dict] = []
    for line in text.replace("\r", "").splitlines():
        if line.startswith("memory backend:"):
            out.append({"id": line.split(":", 1)[1].strip()})
        elif out and ":" in line and line.startswith("  "):
            key, value = (x.strip() for x in line.split(":", 1))
            if key == "size":
                out[-1][key] = int(value)
            elif value in ("true", "false"):
                out[-1][key] = value == "true"
            else:
                out[-1][key] = value
    return out


def compare_info_mem(ours: list[Range], text: str) -> list[str]:
    """Differences between our ranges (re-merged the way `info mem` merges) and its output."""
    mine = merge_for_info_mem(ours)
    theirs = parse_info_mem(text)
    diffs = []
    for i, (a, b) in enumerate(zip(mine, theirs)):
        if a != b:
            diffs.append(f"range {i}: ours {_fmt(a)} vs QEMU {_fmt(b)}")
            if len(diffs) > 20:
                break
    if len(mine) != len(theirs):
        diffs.append(f"ours has {len(mine)} ranges, QEMU {len(theirs)}")
    return diffs


def leaves(ours: list[Range]):
    """(va, pa, range) of every leaf entry behind our merged ranges."""
    for r in ours:
        for va in range(r.start, r.end, r.page_size):
            yield va, r.phys + (va - r.start), r


def compare_info_tlb(ours: list[Range], text: str) -> list[str]:
    """`info tlb` lists each leaf entry once (large pages at their base) with the leaf's own flags.
    The sets of (va, pa) must be equal; our effective permissions must be implied by the leaf's
    (writable => leaf W, user => leaf U, leaf XD => NX)."""
    theirs = {e.va: e for e in parse_info_tlb(text)}
    diffs = []
    seen = set()
    for va, pa, r in leaves(ours):
        seen.add(va)
        e = theirs.get(va)
        if e is None:
            diffs.append(f"we map {va:#x} -> {pa:#x}; QEMU lists no leaf there")
        elif e.pa != pa:
            diffs.append(f"{va:#x}: QEMU -> {e.pa:#x}, ours -> {pa:#x}")
        elif (r.writable and not e.writable) or (r.user and not e.user) or (e.nx and not r.nx):
            diffs.append(f"{va:#x}: ours {r.perms} contradicts the leaf's flags in QEMU")
        if len(diffs) > 20:
            return diffs
    for va in sorted(set(theirs) - seen)[:20]:
        diffs.append(f"QEMU lists a leaf at {va:#x} -> {theirs[va].pa:#x}; we do not map it")
    return diffs


def _fmt(r) -> str:
    return f"{r[0]:#x}-{r[1]:#x} {r[2]}"


def guest_maxphyaddr(dbg) -> int | None:
    """The vCPUs' MAXPHYADDR (QEMU's `phys-bits`), through gdb's `monitor qom-*` commands.

    It matters: QEMU 7.2 TCG defaults to 40 bits even for -cpu max, and then bits 51:40 of a
    paging entry are reserved. None when QEMU shows no x86 CPU object.
    """
    text = dbg.monitor("qom-list /machine/unattached")
    m = re.search(r"^(device\[\d+\]) \(child<[\w-]*x86_64-cpu>\)", text.replace("\r", ""), re.M)
    if not m:
        return None
    value = dbg.monitor(f"qom-get /machine/unattached/{m.group(1)} phys-bits").strip()
    return int(value) if value.isdigit() and int(value) else None


def paging_mode_from_gdb(dbg, cpu: int | None = None) -> tuple[PagingMode, int]:
    """(PagingMode, CR3) of a vCPU: CR0/CR4/EFER/CR3 from gdb, MAXPHYADDR from QEMU."""
    regs = dbg.read_registers(("cr0", "cr3", "cr4", "efer"), cpu=cpu)
    maxphy = guest_maxphyaddr(dbg) or 52
    return PagingMode.from_regs(regs["cr0"], regs["cr4"], regs["efer"], maxphyaddr=maxphy), regs["cr3"]
