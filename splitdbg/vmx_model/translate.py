"""Two-dimensional translation: guest paging (IA-32e, 4 or 5 levels) where every guest
paging-structure access, and then the final guest-physical access, goes through the SLAT (EPT or
NPT). Returns what the hardware must do: the host-physical address, a guest #PF with its error
code, or a VM exit with its exit information. The model reads memory and never writes it: guest
A/D updates are accounted for as the accesses they are, not performed.
"""
from __future__ import annotations

from functools import lru_cache

from . import ept, npt
from .common import ACCESSES, Caps, ModelError, Result
from .quirks import quirk_set

# Guest paging-structure bits (SDM 4.5 / APM 5.3)
P, RW, US, PS = 1, 2, 4, 1 << 7
ACC, DIRTY = 1 << 5, 1 << 6
XD = 1 << 63
PF_P, PF_W, PF_U, PF_RSVD, PF_ID = 1, 2, 4, 8, 16
GUEST_NAMES = {5: "PML5E", 4: "PML4E", 3: "PDPTE", 2: "PDE", 1: "PTE"}
SHIFT = {1: 12, 2: 21, 3: 30, 4: 39, 5: 48}

CR0_WP, CR0_PG = 1 << 16, 1 << 31
CR4_PAE, CR4_LA57, CR4_SMEP, CR4_SMAP = 1 << 5, 1 << 12, 1 << 20, 1 << 21
EFER_LME, EFER_LMA, EFER_NXE = 1 << 8, 1 << 10, 1 << 11
RFLAGS_AC = 1 << 18


def translate(*, mem, arch: str, gva: int, access: str, cpl: int, cr0: int, cr3: int, cr4: int, efer: int,
              slat_root: int, host_efer: int | None = None, host_cr4: int | None = None, caps: Caps | None = None,
              quirks: str | None = None, rflags: int = 0) -> Result:
    if arch not in ("vmx", "svm"):
        raise ModelError(f"arch is 'vmx' or 'svm', not {arch!r}")
    if access not in ACCESSES:
        raise ModelError(f"access is one of {ACCESSES}, not {access!r}")
    if cpl not in (0, 1, 2, 3):
        raise ModelError(f"cpl {cpl} out of range")
    caps = caps or _DEFAULT_CAPS[arch]
    q = quirk_set(quirks)
    if not hasattr(mem, "read_u64"):
        mem = _U64Reader(mem)
    t = _Translation(mem, arch, access, cpl, caps, q, gva)
    t.second_level(slat_root, host_efer, host_cr4)
    return t.run(gva, cr0, cr3, cr4, efer, rflags)


_DEFAULT_CAPS = {"vmx": Caps.default("vmx"), "svm": Caps.default("svm")}
_GUEST_STEP_NAMES = {lv: f"guest {n}" for lv, n in GUEST_NAMES.items()}
_GUEST_PURPOSES = {lv: f"GPA of guest {n}" for lv, n in GUEST_NAMES.items()}


_EPTPS: dict = {}


def _decode_eptp(eptp: int, caps: Caps) -> ept.Eptp:
    # Eptp and Caps are immutable: decoding once per (EPTP, processor) keeps it off the hot path.
    # Keyed by the identity of caps (held in the value, so the id cannot be reused): hashing the
    # frozen dataclass would cost as much as a walk step.
    hit = _EPTPS.get((eptp, id(caps)))
    if hit is not None and hit[0] is caps:
        return hit[1]
    if len(_EPTPS) > 256:
        _EPTPS.clear()
    d = ept.Eptp.decode(eptp, caps)
    _EPTPS[(eptp, id(caps))] = (caps, d)
    return d


class _U64Reader:
    """Adapts any object with read(addr, size) (the model's whole memory contract)."""

    def __init__(self, mem):
        self.read = mem.read

    def read_u64(self, addr: int) -> int:
        return int.from_bytes(self.read(addr, 8), "little")


class _Translation:
    def __init__(self, mem, arch, access, cpl, caps, quirks, gva):
        self.mem, self.arch, self.access, self.cpl, self.caps, self.quirks = mem, arch, access, cpl, caps, quirks
        self.steps: list[tuple] = []   # raw (walk, level, entry_addr, entry, purpose)
        self.applied: list[str] = []
        self.npt_memo: dict = {}
        self.npt_pro: dict = {}   # fault-free upper SLAT levels by 2 MiB region, for this translation
        self.result = Result(kind="ok", arch=arch, gva=gva, access=access, raw_steps=self.steps,
                             quirks_applied=self.applied)

    def second_level(self, slat_root, host_efer, host_cr4, levels: int = 4) -> None:
        if self.arch == "vmx":
            self.eptp = _decode_eptp(slat_root, self.caps)
            self.ept_masks = ept._masks(self.caps)
            return
        self.ncr3 = slat_root
        # Nested paging walks with the host's paging controls (APM 15.25.5): EFER.NXE and CR4.SMEP,
        # and as many levels as the host's paging (CR4.LA57).
        self.host_nxe = bool((EFER_NXE if host_efer is None else host_efer) & EFER_NXE)
        self.host_smep = bool((host_cr4 or 0) & CR4_SMEP)
        self.nlevels = 5 if (host_cr4 or 0) & CR4_LA57 or levels == 5 else 4

    # -- the guest walk -----------------------------------------------------------------------
    def run(self, gva, cr0, cr3, cr4, efer, rflags) -> Result:
        r = self.result
        if not cr0 & CR0_PG:
            # Paging off: the linear address is the guest-physical address.
            return self.final(gva & 0xFFFFFFFF if not efer & EFER_LMA else gva, None)
        if not (efer & (EFER_LMA | EFER_LME) and cr4 & CR4_PAE):
            raise ModelError("only IA-32e (4- and 5-level) guest paging is modelled; this guest uses 32-bit or PAE paging")
        levels = 5 if cr4 & CR4_LA57 else 4
        bits = 57 if levels == 5 else 48
        top = gva >> (bits - 1)
        if top not in (0, (1 << (65 - bits)) - 1):
            raise ModelError(f"{gva:#x} is not canonical for {bits}-bit linear addresses: the access raises #GP, no walk happens")
        nxe = bool(efer & EFER_NXE)
        gmask = ((1 << self.caps.maxphyaddr) - 1) & ~0xFFF
        fetch, write, user = self.access == "fetch", self.access == "write", self.cpl == 3
        err = (PF_W if write else 0) | (PF_U if user else 0) | (PF_ID if fetch and (nxe or cr4 & CR4_SMEP) else 0)
        table = cr3 & gmask
        pt_access = self.guest_pt_access()
        rsv_table, rsv_large = _guest_rsv_masks(self.caps.maxphyaddr, nxe)
        read_u64, append, slat = self.mem.read_u64, self.steps.append, self.slat
        w = u = 1
        nx = 0
        for level in range(levels, 0, -1):
            entry_gpa = table + 8 * ((gva >> SHIFT[level]) & 0x1FF)
            name = _GUEST_STEP_NAMES[level]
            hpa = slat(entry_gpa, pt_access, _GUEST_PURPOSES[level], False)
            if hpa is None:
                r.level = level
                return r
            entry = read_u64(hpa)
            append(("guest", level, entry_gpa, entry, name))
            if not entry & P:
                return self.guest_pf(err, level, entry_gpa, f"{name} not present")
            rsv = entry & (rsv_large[level] if entry & PS and level in (2, 3) else rsv_table[level])
            if rsv:
                code = err | PF_RSVD | PF_P
                if "guest-pf-rsv-no-p" in self.quirks:
                    code &= ~PF_P
                    self.applied.append("qemu-tcg-7.2: guest #PF for a reserved bit lacks the P bit")
                return self.guest_pf(code, level, entry_gpa, f"reserved bits {rsv:#x} set in {name}")
            if not entry & ACC and pt_access == "read" and self.ad_update(entry_gpa, level, "accessed") is None:
                r.level = level
                return r
            w &= (entry >> 1) & 1
            u &= (entry >> 2) & 1
            if nxe:
                nx |= entry >> 63
            if level == 1 or (level in (2, 3) and entry & PS):
                size = 1 << SHIFT[level]
                gpa = (entry & gmask & ~(size - 1)) | (gva & (size - 1))
                why = _guest_denies(self.access, user, w, u, nx, cr0, cr4, rflags)
                if why:
                    return self.guest_pf(err | PF_P, level, gpa, why)
                if write and not entry & DIRTY and pt_access == "read" \
                        and self.ad_update(entry_gpa, level, "dirty") is None:
                    r.level = level
                    return r
                return self.final(gpa, (u, w, nx))
            table = entry & gmask
        raise AssertionError("unreachable")

    def guest_pt_access(self) -> str:
        """How the SLAT sees the processor's access to a guest paging-structure entry."""
        if self.arch == "svm":
            # The walker may set A/D bits: AMD treats guest page-table accesses as writes in the nested
            # walk (KVM's paging_tmpl.h likewise; kvm-unit-tests npt_rw_pfwalk expects RW in EXITINFO1).
            return "write"
        if self.eptp.ad:
            if "ept-guest-ad-as-read" in self.quirks:
                self.applied.append("bochs-2.7: guest paging-structure access treated as a read despite EPT A/D")
                return "read"
            return "write"   # SDM 29.3.3.2: with EPT A/D enabled, treated as writes
        return "read"

    def ad_update(self, entry_gpa, level, flag):
        """The processor setting the accessed or dirty flag of a guest paging-structure entry: a
        write to that entry, which the second level must allow (the reason Intel added the EPT
        "paging-write" control). Returns the host-physical address, or None after a violation."""
        if "ept-guest-ad-as-read" in self.quirks:
            self.applied.append(f"bochs-2.7: the guest's {flag}-flag update of a {_GUEST_STEP_NAMES[level]} was not "
                                "checked as a write against the EPT")
            return True
        return self.slat(entry_gpa, "write", f"{flag}-flag update of the {_GUEST_STEP_NAMES[level]}", False)

    def guest_pf(self, code, level, addr, reason) -> Result:
        r = self.result
        r.kind, r.error_code, r.level, r.reason = "guest_pf", code, level, reason
        r.gpa = addr
        return r

    def final(self, gpa, linear) -> Result:
        hpa = self.slat(gpa, self.access, "final GPA", final=True, linear=linear)
        r = self.result
        r.gpa = gpa
        if hpa is not None:
            r.hpa = hpa
            r.reason = "translated"
        return r

    # -- the second level ---------------------------------------------------------------------
    def slat(self, gpa, access, purpose, final, linear=None):
        r = self.result
        if self.arch == "vmx":
            out = ept.walk_fast(self.mem, self.eptp, gpa, access, self.caps, self.steps, purpose,
                                bool(linear[0]) if linear else None, self.npt_memo, self.ept_masks)
            if out.__class__ is int:
                return out
            r.kind, r.gpa, r.level, r.reason = out.kind, gpa, out.level, out.reason
            r.during_guest_walk = not final
            if out.kind == "ept_violation":
                r.qualification = self.ept_qualification(access, out.rwx_bits, final, linear)
                r.guest_linear = r.gva
            return None
        pro = self.npt_pro.get(access)
        if pro is None:   # the access-dependent part of every nested walk, once per translation
            pro = self.npt_pro[access] = npt._prologue(access, self.caps, self.host_nxe, self.host_smep, self.quirks)
        out = npt.walk_fast(self.mem, self.ncr3, self.nlevels, gpa, access, self.caps, self.host_nxe,
                            self.host_smep, self.steps, purpose, self.quirks, self.applied, self.npt_memo, pro)
        if out.__class__ is int:
            return out
        r.kind, r.gpa, r.level, r.reason = "npf", gpa, out.level, out.reason
        r.during_guest_walk = not final
        r.exitinfo1 = out.error_code | (npt.NPF_FINAL if final else npt.NPF_GUEST_PT)
        r.exitinfo2 = gpa
        return None

    def ept_qualification(self, access, rwx_bits, final, linear) -> int:
        if not final and access == "write":
            q = ept.Q_READ | ept.Q_WRITE   # SDM: an A/D-enabled paging-structure access sets both bits 0 and 1
        else:
            q = {"read": ept.Q_READ, "write": ept.Q_WRITE, "fetch": ept.Q_FETCH}[access]
        q |= rwx_bits | ept.Q_GLA_VALID
        if final:
            q |= ept.Q_GLA_TRANSLATED
            if linear is not None and self.caps.ept_advanced_exit_info:
                u, w, nx = linear
                q |= (ept.Q_GLA_USER if u else 0) | (ept.Q_GLA_WRITABLE if w else 0) | (ept.Q_GLA_XD if nx else 0)
        return q


def _guest_mbz(level: int, large: bool, maxphyaddr: int, nxe: bool) -> int:
    """Must-be-zero bits of a present IA-32e guest entry (SDM 4.5, tables 4-14..4-20)."""
    mbz = ((1 << 52) - 1) & ~((1 << maxphyaddr) - 1)
    if not nxe:
        mbz |= XD
    if level >= 4:
        mbz |= PS
    elif level in (2, 3) and large:
        mbz |= ((1 << SHIFT[level]) - 1) & ~((1 << 13) - 1)   # bit 12 is PAT
    return mbz


@lru_cache(maxsize=64)
def _guest_rsv_masks(maxphyaddr: int, nxe: bool) -> tuple[tuple, tuple]:
    """_guest_mbz by level, for entries referencing a table and for large pages, once per (MAXPHYADDR, NXE)."""
    return (tuple(_guest_mbz(lv, False, maxphyaddr, nxe) if lv else 0 for lv in range(6)),
            tuple(_guest_mbz(lv, True, maxphyaddr, nxe) if lv else 0 for lv in range(6)))


def _guest_reserved(entry, level, maxphyaddr, nxe) -> int:
    return entry & _guest_mbz(level, bool(entry & PS), maxphyaddr, nxe)


def _guest_denies(access, user, w, u, nx, cr0, cr4, rflags) -> str | None:
    """SDM 4.6 access rights for a guest linear address (None when allowed)."""
    if user:
        if not u:
            return "user-mode access to a supervisor-mode address"
        if access == "write" and not w:
            return "user-mode write to a read-only address"
        if access == "fetch" and nx:
            return "instruction fetch from an execute-disable address"
        return None
    if access == "fetch":
        if nx:
            return "instruction fetch from an execute-disable address"
        if u and cr4 & CR4_SMEP:
            return "supervisor-mode fetch from a user-mode address with CR4.SMEP=1"
        return None
    if u and cr4 & CR4_SMAP and not rflags & RFLAGS_AC:
        return "supervisor-mode data access to a user-mode address with CR4.SMAP=1 and RFLAGS.AC=0"
    if access == "write" and not w and cr0 & CR0_WP:
        return "supervisor-mode write to a read-only address with CR0.WP=1"
    return None


def slat_translate(*, mem, arch: str, slat_root: int, gpa: int, access: str, final: bool = True,
                   levels: int = 4, host_efer: int | None = None, host_cr4: int | None = None,
                   caps: Caps | None = None, quirks: str | None = None, gva: int | None = None) -> Result:
    """The second level alone: one guest-physical access through EPT or NPT, as the final access
    (`final=True`) or as a guest paging-structure access. For exits that record only the GPA
    (AMD without decode assists) this is what can be checked."""
    if arch not in ("vmx", "svm"):
        raise ModelError(f"arch is 'vmx' or 'svm', not {arch!r}")
    caps = caps or Caps.default(arch)
    if not hasattr(mem, "read_u64"):
        mem = _U64Reader(mem)
    t = _Translation(mem, arch, access, 0, caps, quirk_set(quirks), gva)
    t.second_level(slat_root, host_efer, host_cr4, levels)
    hpa = t.slat(gpa, access, "final GPA" if final else "guest paging-structure access", final=final)
    r = t.result
    r.gpa = gpa
    if hpa is not None:
        r.hpa, r.reason = hpa, "translated"
    return r
