"""Cross-check a recorded VM exit against the model: agree, or differ with an explanation."""
from __future__ import annotations

from . import npt
from .translate import slat_translate

ACTIONS_THAT_CHANGE_TABLES = {"isolate", "allow", "probe", "6"}


def npf_access(exitinfo1: int) -> tuple[str, bool]:
    """(access, final) encoded in an NPF's EXITINFO1 (APM 15.25.6)."""
    access = "fetch" if exitinfo1 & npt.PF_ID else "write" if exitinfo1 & npt.PF_RW else "read"
    return access, bool(exitinfo1 & npt.NPF_FINAL)


def crosscheck_event(mem, event, *, levels: int = 4, host_efer: int | None = None,
                     host_cr4: int | None = None, live_roots: set[int] | None = None) -> str:
    """Recompute an NPF event from the container's current tables (event.slat_root)."""
    if event.exit_code != 0x400:
        return ""
    if live_roots is not None and event.slat_root not in live_roots:
        return "not checkable now: its container has been freed"
    access, final = npf_access(event.exitinfo1)
    kw = dict(mem=mem, arch="svm", slat_root=event.slat_root, gpa=event.exitinfo2, access=access, final=final,
              levels=levels, host_efer=host_efer, host_cr4=host_cr4)
    arch = slat_translate(**kw)
    got = (arch.exitinfo1, arch.exitinfo2)
    if got == (event.exitinfo1, event.exitinfo2):
        return "agree"
    action = getattr(event, "action_name", getattr(event, "action", ""))
    if arch.kind == "ok" and action in ACTIONS_THAT_CHANGE_TABLES:
        return f"not checkable now: the handler's action ({action}) has since made the page accessible"
    qemu = slat_translate(**kw, quirks="qemu-tcg-7.2")
    if (qemu.exitinfo1, qemu.exitinfo2) == (event.exitinfo1, event.exitinfo2):
        return "differs from the architecture as QEMU 7.2 is known to: " + "; ".join(qemu.quirks_applied)
    want = f"{arch.exitinfo1:#x}" if arch.exitinfo1 is not None else "no fault"
    return f"differs: the model expects EXITINFO1 {want} ({arch.reason}), recorded {event.exitinfo1:#x}"
