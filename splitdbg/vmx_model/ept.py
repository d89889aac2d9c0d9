"""Intel EPT (SDM vol. 3C, "EPT translation mechanism"; section numbers of the 2023+ SDM, 29.3).

The walk of one guest-physical address through EPT paging structures, the misconfiguration
rules (29.3.3.1), violations (29.3.3.2) and the exit qualification of an EPT violation
(table 28-7, "Exit Qualification for EPT Violations").
"""
from __future__ import annotations

from dataclasses import dataclass

from .common import Caps, ModelError

# EPTP (SDM 25.6.11)
EPTP_MEMTYPE = 0x7
EPTP_WALK_LENGTH_SHIFT = 3
EPTP_AD = 1 << 6
EPTP_SSS = 1 << 7

# EPT paging-structure entry bits (SDM tables 29-1 .. 29-6)
R, W, X = 1, 2, 4            # X is supervisor-mode execute when MBEC is on
MEMTYPE_SHIFT, MEMTYPE_MASK = 3, 0x7
IGNORE_PAT = 1 << 6
PS = 1 << 7
ACCESSED = 1 << 8
DIRTY = 1 << 9
XU = 1 << 10                 # user-mode execute (MBEC)
SUPPRESS_VE = 1 << 63
MEMTYPES = {0: "UC", 1: "WC", 4: "WT", 5: "WP", 6: "WB"}   # 2, 3, 7 are reserved

LEVEL_NAMES = {5: "EPT PML5E", 4: "EPT PML4E", 3: "EPT PDPTE", 2: "EPT PDE", 1: "EPT PTE"}
SHIFT = {1: 12, 2: 21, 3: 30, 4: 39, 5: 48}

# Exit qualification for EPT violations (SDM table 28-7)
Q_READ, Q_WRITE, Q_FETCH = 1 << 0, 1 << 1, 1 << 2
Q_READABLE, Q_WRITABLE, Q_EXECUTABLE, Q_USER_EXECUTABLE = 1 << 3, 1 << 4, 1 << 5, 1 << 6
Q_GLA_VALID, Q_GLA_TRANSLATED = 1 << 7, 1 << 8
Q_GLA_USER, Q_GLA_WRITABLE, Q_GLA_XD = 1 << 9, 1 << 10, 1 << 11
Q_NMI_UNBLOCKING = 1 << 12


@dataclass(frozen=True)
class Eptp:
    raw: int
    memtype: int
    levels: int
    ad: bool
    pml_addr: int

    @classmethod
    def decode(cls, eptp: int, caps: Caps) -> "Eptp":
        memtype = eptp & EPTP_MEMTYPE
        levels = ((eptp >> EPTP_WALK_LENGTH_SHIFT) & 7) + 1
        if memtype not in (0, 6):
            raise ModelError(f"EPTP {eptp:#x}: memory type {memtype} is not UC(0) or WB(6); VM entry would fail")
        if levels not in (4, 5) or (levels == 5 and not caps.ept_5level):
            raise ModelError(f"EPTP {eptp:#x}: page-walk length {levels} is not supported; VM entry would fail")
        if eptp & EPTP_AD and not caps.ept_ad:
            raise ModelError(f"EPTP {eptp:#x}: A/D flags enabled but not supported")
        reserved = (eptp & 0xF00) | (eptp & ~((1 << caps.maxphyaddr) - 1))
        if reserved:
            raise ModelError(f"EPTP {eptp:#x}: reserved bits {reserved:#x} set")
        return cls(eptp, memtype, levels, bool(eptp & EPTP_AD), eptp & ((1 << caps.maxphyaddr) - 1) & ~0xFFF)


def present(entry: int, caps: Caps) -> bool:
    """SDM 29.3.2: an entry is present if any of bits 2:0 is set (or bit 10 with MBEC)."""
    return bool(entry & 7) or (caps.mbec and bool(entry & XU))


def misconfiguration(entry: int, level: int, caps: Caps) -> str | None:
    """Why a present entry is misconfigured (SDM 29.3.3.1), or None."""
    if entry & W and not entry & R:
        return "write permission without read permission"
    executable = entry & X or (caps.mbec and entry & XU)
    if not caps.ept_execute_only and executable and not entry & (R | W):
        return "execute-only, which this processor does not support"
    addr_reserved = ((1 << 52) - 1) & ~((1 << caps.maxphyaddr) - 1)
    if entry & addr_reserved:
        return f"reserved address bits {entry & addr_reserved:#x} (MAXPHYADDR {caps.maxphyaddr})"
    large = level in (2, 3) and entry & PS
    if level >= 4 and entry & 0xF8:
        return f"reserved bits 7:3 set in {LEVEL_NAMES[level]}"
    if level == 3 and entry & PS and not caps.ept_1g:
        return "1-GByte page, which this processor does not support"
    if level in (2, 3) and not large and entry & 0x78:
        return f"reserved bits 6:3 set in {LEVEL_NAMES[level]} that references a table"
    if large:
        low = ((1 << SHIFT[level]) - 1) & ~0xFFF
        if entry & low:
            return f"reserved address bits {entry & low:#x} below the {'1G' if level == 3 else '2M'} page"
    if level == 1 or large:
        mt = (entry >> MEMTYPE_SHIFT) & MEMTYPE_MASK
        if mt in (2, 3, 7):
            return f"reserved EPT memory type {mt}"
    return None


class EptOutcome:
    """Result of one EPT walk: hpa, or a violation/misconfiguration with the qualification bits 3:6."""

    __slots__ = ("hpa", "kind", "level", "rwx_bits", "reason", "page_size")

    def __init__(self, hpa=None, kind="ok", level=0, rwx_bits=0, reason="", page_size=0):
        self.hpa, self.kind, self.level, self.rwx_bits, self.reason, self.page_size = hpa, kind, level, rwx_bits, reason, page_size


_MASKS: dict = {}


def _masks(caps: Caps) -> tuple:
    """Per-level screening masks for a processor (computed once per Caps: the walk is the hot path).

    screen[level]: bits whose presence in an entry means it may be misconfigured (reserved address
    bits above MAXPHYADDR, reserved bits 7:3 of PML4E/PML5E, 6:3 of a non-leaf PDE/PDPTE); the
    leaf variant adds the address bits below a large page. misconfiguration() gives the reason."""
    m = _MASKS.get(id(caps))
    if m is not None and m[0] is caps:   # by identity: hashing a frozen dataclass costs more than a walk step
        return m[1]
    addr_rsv = ((1 << 52) - 1) & ~((1 << caps.maxphyaddr) - 1)
    table = [0] * 6
    leaf = [0] * 6
    for level in range(1, 6):
        if level >= 4:
            table[level] = leaf[level] = addr_rsv | 0xF8
        else:
            table[level] = addr_rsv | 0x78
            leaf[level] = addr_rsv | (((1 << SHIFT[level]) - 1) & ~0xFFF)
    masks = (tuple(table), tuple(leaf), ((1 << caps.maxphyaddr) - 1) & ~0xFFF)
    if len(_MASKS) > 64:
        _MASKS.clear()
    _MASKS[id(caps)] = (caps, masks)   # holding caps keeps its id from being reused
    return masks


_SHIFTS = (0, 12, 21, 30, 39, 48)
_BAD_MEMTYPES = (False, False, True, True, False, False, False, True)
_ACCESS_BIT = {"read": R, "write": W, "fetch": X}


def walk(mem, eptp: Eptp, gpa: int, access: str, caps: Caps, steps: list, purpose: str,
         linear_user: bool | None = None, memo: dict | None = None, masks: tuple | None = None) -> EptOutcome:
    """Translate `gpa` for `access` ("read"/"write"/"fetch"). `linear_user` is the U/S of the guest
    linear address (only for fetches under MBEC: XU decides for user addresses, X otherwise)."""
    out = walk_fast(mem, eptp, gpa, access, caps, steps, purpose, linear_user, memo, masks)
    if out.__class__ is int:
        return EptOutcome(hpa=out, level=0)
    return out


def walk_fast(mem, eptp: Eptp, gpa: int, access: str, caps: Caps, steps: list, purpose: str,
              linear_user: bool | None = None, memo: dict | None = None, masks: tuple | None = None):
    """walk() for the 2D translation's hot path: the host-physical address (an int) when the
    access is allowed, an EptOutcome only for a violation or misconfiguration."""
    table = eptp.pml_addr
    acc = R | W | X | XU           # AND of the permission bits over the entries used
    screen_table, screen_leaf, addr_mask = masks or _masks(caps)
    read_u64 = mem.read_u64
    append = steps.append
    mbec = caps.mbec
    top = eptp.levels
    upper = []
    if memo is not None:
        # Fault-free upper levels from an earlier walk of this translation (same EPTP), by the
        # 2 MiB, then 1 GiB region: the guest's tables usually share them with each other.
        hit = memo.get((2, gpa >> 21))
        if hit is not None:
            top = 1
        else:
            hit = memo.get((3, gpa >> 30))
            if hit is not None:
                top = 2
        if hit is not None:
            upper, table, acc = hit
            steps += [("ept", lv_, a_, e_, purpose) for lv_, a_, e_ in upper]
            upper = [*upper]
    for level in range(top, 0, -1):
        shift = _SHIFTS[level]
        entry_addr = table + ((gpa >> shift) & 0x1FF) * 8
        entry = read_u64(entry_addr)
        append(("ept", level, entry_addr, entry, purpose))
        acc &= entry
        leaf = level == 1 or (level < 4 and entry & PS)
        # The full rules only when a cheap screen says something may be wrong: R=0 (not present,
        # write without read, execute-only), reserved bits, a reserved memory type, a 1 GiB page.
        if not entry & R or entry & (screen_leaf[level] if leaf else screen_table[level]) \
                or (leaf and (_BAD_MEMTYPES[(entry >> 3) & 7] or (level == 3 and not caps.ept_1g))):
            if not (entry & 7 or (mbec and entry & XU)):
                return EptOutcome(kind="ept_violation", level=level, rwx_bits=_rwx(acc, caps),
                                  reason=f"{LEVEL_NAMES[level]} not present")
            why = misconfiguration(entry, level, caps)
            if why:
                return EptOutcome(kind="ept_misconfig", level=level, reason=f"{LEVEL_NAMES[level]}: {why}")
        if leaf:
            if access == "fetch" and mbec and linear_user:
                allowed = acc & XU
            else:
                allowed = acc & _ACCESS_BIT[access]
            if not allowed:
                what = {"read": "read", "write": "write", "fetch": "execute"}[access]
                if access == "fetch" and mbec:
                    what = "user-mode execute" if linear_user else "supervisor-mode execute"
                return EptOutcome(kind="ept_violation", level=level, rwx_bits=_rwx(acc, caps),
                                  reason=f"{what} access not permitted by the EPT entries")
            size = 1 << shift
            return (entry & addr_mask & ~(size - 1)) | (gpa & (size - 1))
        table = entry & addr_mask
        if memo is not None:
            upper.append((level, entry_addr, entry))
            if level <= 3:
                memo[(level, gpa >> shift)] = (tuple(upper), table, acc)
    raise AssertionError("unreachable")


def _rwx(acc, caps) -> int:
    """Exit qualification bits 6:3: the AND of R, W, X (and XU with MBEC) over the entries used."""
    bits = (acc & 7) << 3
    if caps.mbec and acc & XU:
        bits |= Q_USER_EXECUTABLE
    return bits


def decode_qualification(q: int) -> dict:
    """EPT-violation exit qualification, bit by bit, with the SDM's names."""
    return {
        "data read": bool(q & Q_READ), "data write": bool(q & Q_WRITE), "instruction fetch": bool(q & Q_FETCH),
        "readable": bool(q & Q_READABLE), "writable": bool(q & Q_WRITABLE),
        "executable": bool(q & Q_EXECUTABLE), "user-mode executable": bool(q & Q_USER_EXECUTABLE),
        "guest linear address valid": bool(q & Q_GLA_VALID),
        "access to the translated linear address": bool(q & Q_GLA_TRANSLATED),
        "linear address is user-mode": bool(q & Q_GLA_USER), "linear address is writable": bool(q & Q_GLA_WRITABLE),
        "linear address is execute-disable": bool(q & Q_GLA_XD), "NMI unblocking due to IRET": bool(q & Q_NMI_UNBLOCKING),
        "shadow-stack access": bool(q & (1 << 13)), "supervisor shadow stack": bool(q & (1 << 14)),
        "guest-paging verification": bool(q & (1 << 15)), "asynchronous to instruction execution": bool(q & (1 << 16)),
    }


def decode_entry(entry: int, level: int) -> dict:
    leaf = level == 1 or (level in (2, 3) and bool(entry & PS))
    d = {"R": bool(entry & R), "W": bool(entry & W), "X": bool(entry & X), "XU": bool(entry & XU),
         "A": bool(entry & ACCESSED), "leaf": leaf}
    if leaf:
        mt = (entry >> MEMTYPE_SHIFT) & MEMTYPE_MASK
        d.update({"memtype": MEMTYPES.get(mt, f"reserved({mt})"), "ignore_pat": bool(entry & IGNORE_PAT),
                  "D": bool(entry & DIRTY), "suppress_ve": bool(entry & SUPPRESS_VE)})
    return d
