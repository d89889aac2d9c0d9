"""AMD nested paging (APM vol. 2, 15.25): nested tables are long-mode page tables walked with
nCR3; every nested access is a user access (15.25.5); a nested fault is #VMEXIT(NPF) with
EXITINFO1 = a #PF-style error code plus bit 32 (final guest-physical access) or bit 33 (access
to a guest page table), EXITINFO2 = the faulting guest-physical address (15.25.6)."""
from __future__ import annotations

from .common import Caps

P, RW, US, PWT, PCD, A, D, PS, G = (1 << i for i in range(9))
NX = 1 << 63
AVL_MASK = (0x7 << 9) | (0x7F << 52)   # available to software: bits 11:9 and 58:52

LEVEL_NAMES = {5: "nPML5E", 4: "nPML4E", 3: "nPDPE", 2: "nPDE", 1: "nPTE"}
SHIFT = {1: 12, 2: 21, 3: 30, 4: 39, 5: 48}

# EXITINFO1 of #VMEXIT(NPF)
PF_P, PF_RW, PF_US, PF_RSV, PF_ID = 1, 2, 4, 8, 16
NPF_FINAL = 1 << 32
NPF_GUEST_PT = 1 << 33


class NptOutcome:
    __slots__ = ("hpa", "kind", "level", "error_code", "reason", "page_size", "perms")

    def __init__(self, hpa=None, kind="ok", level=0, error_code=0, reason="", page_size=0, perms=""):
        self.hpa, self.kind, self.level, self.error_code, self.reason = hpa, kind, level, error_code, reason
        self.page_size, self.perms = page_size, perms


def walk(mem, ncr3: int, levels: int, gpa: int, access: str, caps: Caps, host_nxe: bool, host_smep: bool,
         steps: list, purpose: str, quirks: set, applied: list, memo: dict | None = None) -> NptOutcome:
    """Translate a guest-physical address through the nested tables (a user access of `access`)."""
    out = walk_fast(mem, ncr3, levels, gpa, access, caps, host_nxe, host_smep, steps, purpose, quirks, applied, memo)
    if out.__class__ is int:
        return NptOutcome(hpa=out)
    return out


def _prologue(access, caps, host_nxe, host_smep, quirks):
    """What a nested walk needs besides the entries: EXITINFO1 base bits, reserved masks, and the
    note of a quirk that changes the I/D bit (recorded only if a fault is reported)."""
    write, fetch = access == "write", access == "fetch"
    # I/D is reported for fetches when the host has NX or SMEP enabled, as in a #PF error code.
    fetch_bit = PF_ID if fetch and (host_nxe or host_smep) else 0
    note = None
    if fetch and not fetch_bit:
        if "npf-id-always" in quirks:
            fetch_bit = PF_ID
            note = "bochs-2.7: I/D set on a nested fetch fault although host EFER.NXE=0 and CR4.SMEP=0"
    elif fetch and host_smep and not host_nxe and "npf-id-ignores-smep" in quirks:
        fetch_bit = 0
        note = "qemu-tcg-7.2: host CR4.SMEP not taken into account for the I/D bit"
    base_code = PF_US | (PF_RW if write else 0) | fetch_bit
    # Must-be-zero bits (APM vol. 2, 5.3.3, figures 5-18..5-25): above MAXPHYADDR; NX without host
    # EFER.NXE; bits 8:7 of PML4E/PML5E (QEMU 7.2 checks only bit 7); address bits below a large
    # page.
    addr_rsv = ((1 << 52) - 1) & ~((1 << caps.maxphyaddr) - 1) | (0 if host_nxe else NX)
    upper_rsv = addr_rsv | PS | (0 if "npt-pml4e-bit8-unchecked" in quirks else G)
    rsv_table = (0, addr_rsv, addr_rsv, addr_rsv, upper_rsv, upper_rsv)
    rsv_large = (0, 0, addr_rsv | (((1 << 21) - 1) & ~0x1FFF),
                 addr_rsv | (((1 << 30) - 1) & ~0x1FFF) | (0 if caps.npt_1g else PS), 0, 0)
    return (write, fetch, base_code, note, upper_rsv, rsv_table, rsv_large,
            ((1 << caps.maxphyaddr) - 1) & ~0xFFF)


def walk_fast(mem, ncr3: int, levels: int, gpa: int, access: str, caps: Caps, host_nxe: bool, host_smep: bool,
              steps: list, purpose: str, quirks: set, applied: list, memo: dict | None = None, pro: tuple | None = None):
    """walk() for the 2D translation's hot path: the host-physical address (an int) when allowed,
    an NptOutcome for a nested page fault.

    `memo` (one dict per 2D translation) remembers the fault-free upper levels by 2 MiB and 1 GiB
    region: the guest's tables usually sit together, so later nested walks redo only the last levels."""
    if pro is None:
        pro = _prologue(access, caps, host_nxe, host_smep, quirks)
    write, fetch, base_code, id_note, upper_rsv, rsv_table, rsv_large, addr_mask = pro
    table = ncr3 & addr_mask
    read_u64 = mem.read_u64
    append = steps.append
    acc = RW | US   # AND of R/W and U/S over the entries used
    nx = 0          # OR of bit 63 (only reachable with host EFER.NXE=1: otherwise bit 63 is MBZ)
    top = levels
    upper = []
    if memo is not None:
        # Fault-free upper levels from an earlier walk of this translation (same nCR3 and host
        # controls), by the 2 MiB, then 1 GiB region.
        hit = memo.get((2, gpa >> 21))
        if hit is not None:
            top = 1
        else:
            hit = memo.get((3, gpa >> 30))
            if hit is not None:
                top = 2
        if hit is not None:
            upper, table, acc, nx = hit
            steps += [("npt", lv_, a_, e_, purpose) for lv_, a_, e_ in upper]
            upper = [*upper]
    for level in range(top, 0, -1):
        shift = SHIFT[level]
        entry_addr = table + 8 * ((gpa >> shift) & 0x1FF)
        entry = read_u64(entry_addr)
        append(("npt", level, entry_addr, entry, purpose))
        if not entry & P:
            if id_note and fetch:
                applied.append(id_note)
            return NptOutcome(kind="npf", level=level, error_code=base_code, reason=f"{LEVEL_NAMES[level]} not present")
        large = level < 4 and level > 1 and entry & PS
        rsv = entry & (rsv_large[level] if large else rsv_table[level])
        if level >= 4 and entry & G and not upper_rsv & G:
            applied.append("qemu-tcg-7.2: bit 8 of a nested PML4E/PML5E is not checked as reserved")
        if rsv:
            code = base_code | PF_RSV | PF_P
            if id_note and fetch:
                applied.append(id_note)
            if "npf-rsv-no-p" in quirks:
                code &= ~PF_P
                applied.append("qemu-tcg-7.2: EXITINFO1 of a reserved-bit NPF lacks the P bit")
            return NptOutcome(kind="npf", level=level, error_code=code,
                              reason=f"reserved bits {rsv:#x} set in {LEVEL_NAMES[level]}")
        acc &= entry
        nx |= entry
        if level == 1 or large:
            size = 1 << shift
            w = (acc >> 1) & 1
            u = (acc >> 2) & 1
            nx = nx >> 63
            if not u or (write and not w) or (fetch and nx):
                perms = ("u" if u else "-") + "r" + ("w" if w else "-") + ("-" if nx else "x")
                why = ("a nested entry has U/S=0 (nested accesses are user accesses)" if not u else
                       "write to a read-only nested mapping" if write and not w else
                       "instruction fetch from a no-execute nested mapping")
                if id_note and fetch:
                    applied.append(id_note)
                return NptOutcome(kind="npf", level=level, error_code=base_code | PF_P, reason=why, perms=perms)
            return (entry & addr_mask & ~(size - 1)) | (gpa & (size - 1))
        table = entry & addr_mask
        if memo is not None:
            upper.append((level, entry_addr, entry))
            if level <= 3:
                memo[(level, gpa >> shift)] = (tuple(upper), table, acc, nx)
    raise AssertionError("unreachable")


def decode_exitinfo1(info1: int) -> dict:
    return {"P (protection violation)": bool(info1 & PF_P), "RW (write)": bool(info1 & PF_RW),
            "US (user)": bool(info1 & PF_US), "RSV (reserved bit)": bool(info1 & PF_RSV),
            "ID (instruction fetch)": bool(info1 & PF_ID),
            "final guest-physical access": bool(info1 & NPF_FINAL),
            "guest page-table access": bool(info1 & NPF_GUEST_PT)}


def decode_entry(entry: int, level: int) -> dict:
    leaf = level == 1 or (level in (2, 3) and bool(entry & PS))
    d = {"P": bool(entry & P), "RW": bool(entry & RW), "US": bool(entry & US), "A": bool(entry & A),
         "NX": bool(entry & NX), "leaf": leaf, "avl": (entry & AVL_MASK)}
    if leaf:
        d.update({"D": bool(entry & D), "G": bool(entry & G), "PCD": bool(entry & PCD), "PWT": bool(entry & PWT)})
    return d
