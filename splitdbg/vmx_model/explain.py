"""One readable paragraph for a Result."""
from __future__ import annotations

from . import ept, npt


def _bits(d: dict) -> str:
    return ", ".join(k for k, v in d.items() if v) or "none"


def explain(r) -> str:
    slat = "EPT" if r.arch == "vmx" else "NPT"
    if r.gva is None:   # a second-level walk alone (slat_translate)
        head = f"{r.access} of guest-physical {r.gpa:#x}"
        if r.kind == "ok":
            return f"{head} translates to host-physical {r.hpa:#x} through {slat}."
    else:
        head = f"{r.access} of guest-virtual {r.gva:#x}"
    if r.kind == "ok":
        text = f"{head} translates to guest-physical {r.gpa:#x} and host-physical {r.hpa:#x} through the guest tables and {slat}."
    elif r.kind == "guest_pf":
        text = (f"{head} raises a page fault in the guest, not a VM exit: {r.reason}. Error code {r.error_code:#x} "
                f"(P={r.error_code & 1}, W/R={r.error_code >> 1 & 1}, U/S={r.error_code >> 2 & 1}, "
                f"RSVD={r.error_code >> 3 & 1}, I/D={r.error_code >> 4 & 1}).")
    else:
        where = ("while the processor read a guest paging-structure entry at guest-physical "
                 f"{r.gpa:#x}" if r.during_guest_walk else f"on the final access to guest-physical {r.gpa:#x}")
        if r.kind == "ept_violation":
            text = (f"{head} causes an EPT violation {where}: {r.reason}. Exit qualification {r.qualification:#x} "
                    f"({_bits(ept.decode_qualification(r.qualification))}); guest-physical address {r.gpa:#x}" +
                    (f", guest linear address {r.guest_linear:#x}." if r.guest_linear is not None else "."))
        elif r.kind == "ept_misconfig":
            text = f"{head} causes an EPT misconfiguration {where}: {r.reason}. There is no exit qualification; the guest-physical address field holds {r.gpa:#x}."
        else:
            text = (f"{head} causes #VMEXIT(NPF) {where}: {r.reason}. EXITINFO1 {r.exitinfo1:#x} "
                    f"({_bits(npt.decode_exitinfo1(r.exitinfo1))}), EXITINFO2 {r.exitinfo2:#x}.")
    if r.quirks_applied:
        text += " Emulator quirks applied: " + "; ".join(r.quirks_applied) + "."
    return text
