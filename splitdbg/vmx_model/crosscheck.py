"""Cross-check a recorded VM exit against the model: agree, or differ with an explanation.

SVM (NPF, exit code 0x400): AMD records only the guest-physical address, so the second level is
recomputed alone from EXITINFO1's access and final/guest-walk bits. VMX (EPT violation, exit
reason 48): the exit also gives the guest-linear address, so when the qualification says it is
valid the whole two-dimensional walk is recomputed (guest CR3 from the event, CR0/CR4/EFER from
the handler's record), which predicts the advanced bits 9-11 of the qualification as well.
"""
from __future__ import annotations

from . import ept, npt
from .translate import slat_translate, translate

ACTIONS_THAT_CHANGE_TABLES = {"isolate", "allow", "probe", "6"}
SVM_EXIT_NPF = 0x400
VMX_EXIT_EPT_VIOLATION = 48


def npf_access(exitinfo1: int) -> tuple[str, bool]:
    """(access, final) encoded in an NPF's EXITINFO1 (APM 15.25.6)."""
    access = "fetch" if exitinfo1 & npt.PF_ID else "write" if exitinfo1 & npt.PF_RW else "read"
    return access, bool(exitinfo1 & npt.NPF_FINAL)


def ept_access(qualification: int) -> tuple[str, bool]:
    """(access, final) encoded in an EPT violation's exit qualification (SDM table 28-7): bit 8
    set means the access was to the translated linear address, clear a guest paging-structure
    access (when bit 7 says the linear address is valid)."""
    access = "fetch" if qualification & ept.Q_FETCH else "write" if qualification & ept.Q_WRITE else "read"
    final = bool(qualification & ept.Q_GLA_TRANSLATED) or not qualification & ept.Q_GLA_VALID
    return access, final


ADDR = 0x000FFFFFFFFFF000


class AtExit:
    """Guest memory as the hardware saw it at a violation's exit, on the walk that matters: the
    second-level entries the handler recorded (event.slat_walk, top level first) laid over today's
    memory at the addresses the walk itself gives. Everything else reads as it is now."""

    def __init__(self, mem, slat_root: int, gpa: int, walk, arch: str, levels: int):
        self.mem, self.entries = mem, {}
        table = slat_root & ADDR
        for i, e in enumerate(walk[:levels]):
            level = levels - i
            self.entries[table + ((gpa >> (12 + 9 * (level - 1))) & 511) * 8] = e
            present = e & 7 if arch == "vmx" else e & 1
            if level == 1 or not present or (level <= 3 and e & 0x80):
                break
            table = e & ADDR

    def read(self, addr: int, size: int) -> bytes:
        data = bytearray(self.mem.read(addr, size))
        for a, value in self.entries.items():
            if addr <= a and a + 8 <= addr + size:
                data[a - addr:a - addr + 8] = value.to_bytes(8, "little")
        return bytes(data)


def basis(event) -> str:
    """Where a verdict's second-level tables come from: "at exit" (the walk the handler recorded)
    or "now" (today's tables: an event of a module before ABI v5, or not a violation)."""
    return "at exit" if getattr(event, "slat_walk", ()) else "now"


def is_slat_violation(event) -> bool:
    return event.exit_code == SVM_EXIT_NPF or event.exit_code == VMX_EXIT_EPT_VIOLATION


def crosscheck_event(mem, event, *, levels: int = 4, host_efer: int | None = None,
                     host_cr4: int | None = None, live_roots: set[int] | None = None, arch: str = "svm",
                     caps=None, guest_regs: dict | None = None, quirks: str | None = None,
                     live_pgds: dict[int, list[int]] | None = None) -> str:
    """Recompute a second-level violation from the walk the handler recorded at the exit (ABI v5),
    or else from the container's current tables (event.slat_root). `live_pgds` (container's slat
    root -> its address spaces' CR3s) tells whether the guest tables of the event's CR3 still
    exist, for VMX's two-dimensional check."""
    if not is_slat_violation(event):
        return ""
    walk = getattr(event, "slat_walk", ())
    if walk:
        # Exactly the state the hardware saw: no later change (the handler's own action, a freed
        # container) can make the verdict differ.
        mem = AtExit(mem, event.slat_root, event.exitinfo2, walk, arch, levels)
        live_roots = None
    elif live_roots is not None and event.slat_root not in live_roots:
        return "not checkable now: its container has been freed"
    if arch == "vmx":
        return _check_ept(mem, event, caps, guest_regs, quirks or "bochs-2.7", live_pgds, at_exit=bool(walk))
    access, final = npf_access(event.exitinfo1)
    kw = dict(mem=mem, arch="svm", slat_root=event.slat_root, gpa=event.exitinfo2, access=access, final=final,
              levels=levels, host_efer=host_efer, host_cr4=host_cr4, caps=caps)
    model = slat_translate(**kw)
    got = (model.exitinfo1, model.exitinfo2)
    if got == (event.exitinfo1, event.exitinfo2):
        return "agree"
    action = _action(event)
    if not walk and model.kind == "ok" and action in ACTIONS_THAT_CHANGE_TABLES:
        return f"not checkable now: the handler's action ({action}) has since made the page accessible"
    qemu = slat_translate(**kw, quirks="qemu-tcg-7.2")
    if (qemu.exitinfo1, qemu.exitinfo2) == (event.exitinfo1, event.exitinfo2):
        return "differs from the architecture as QEMU 7.2 is known to: " + "; ".join(qemu.quirks_applied)
    want = f"{model.exitinfo1:#x}" if model.exitinfo1 is not None else "no fault"
    return f"differs: the model expects EXITINFO1 {want} ({model.reason}), recorded {event.exitinfo1:#x}"


def _action(event) -> str:
    return getattr(event, "action_name", getattr(event, "action", ""))


# Bits the recorded qualification carries that the model does not predict: NMI unblocking (12),
# and the asynchronous/shadow-stack bits (13-16) that no access here can set.
_UNMODELLED = ept.Q_NMI_UNBLOCKING | (0xF << 13)
# Advanced information about the linear address (bits 9-11): needs the guest's own walk.
_LINEAR_INFO = ept.Q_GLA_USER | ept.Q_GLA_WRITABLE | ept.Q_GLA_XD


def _guest_cr3(event, gla: int, live_pgds) -> int | None:
    """The guest tables to walk: the event's own CR3 while that address space lives; for a
    kernel-half address, any live address space of the same container (they share the kernel's
    tables); None when neither is known to exist (e.g. the faulting task was killed)."""
    if live_pgds is None:
        return event.cr3
    cr3 = event.cr3 & 0x000FFFFFFFFFF000
    if any(cr3 in pgds for pgds in live_pgds.values()):
        return event.cr3
    mine = live_pgds.get(event.slat_root) or []
    if gla >> 63 and mine:
        return mine[0]
    return None


def _ept_model(mem, event, caps, guest_regs, quirks, live_pgds=None):
    """(model result, bits of the qualification it cannot predict)."""
    q = event.exitinfo1
    access, final = ept_access(q)
    gla = getattr(event, "guest_linear", 0)
    cr3 = _guest_cr3(event, gla, live_pgds)
    if q & ept.Q_GLA_VALID and guest_regs and guest_regs.get("cr0") and cr3 is not None:
        # The two-dimensional walk of the faulting linear address, as the guest made it.
        return translate(mem=mem, arch="vmx", gva=gla, access=access, cpl=getattr(event, "cpl", 0),
                         cr0=guest_regs["cr0"], cr3=cr3, cr4=guest_regs["cr4"], efer=guest_regs["efer"],
                         slat_root=event.slat_root, caps=caps, quirks=quirks), _UNMODELLED
    # Without the guest's control registers: the second level alone, linear-address bits unchecked.
    return slat_translate(mem=mem, arch="vmx", slat_root=event.slat_root, gpa=event.exitinfo2, access=access,
                          final=final, caps=caps, quirks=quirks, gva=gla if q & ept.Q_GLA_VALID else None), \
        _UNMODELLED | _LINEAR_INFO


def _check_ept(mem, event, caps, guest_regs, quirks, live_pgds=None, at_exit: bool = False) -> str:
    model, unknown = _ept_model(mem, event, caps, guest_regs, None, live_pgds)
    if at_exit and model.kind != "ept_violation":
        # The second level is as the exit saw it, but the guest's own tables are today's (a
        # writer's alias unmapped since): judge the second level alone, linear-address bits unchecked.
        guest_regs = None
        model, unknown = _ept_model(mem, event, caps, None, None, live_pgds)
    recorded = event.exitinfo1 & ~unknown
    if model.qualification is not None:
        model.qualification &= ~unknown
    if model.kind == "ept_violation" and (model.qualification, model.gpa) == (recorded, event.exitinfo2):
        return "agree"
    action = _action(event)
    if not at_exit and model.kind in ("ok", "guest_pf") and action in ACTIONS_THAT_CHANGE_TABLES:
        return f"not checkable now: the handler's action ({action}) has since made the page accessible"
    if quirks:
        emu, _ = _ept_model(mem, event, caps, guest_regs, quirks, live_pgds)
        if emu.kind == "ept_violation" and ((emu.qualification or 0) & ~unknown, emu.gpa) == (recorded, event.exitinfo2) \
                and emu.quirks_applied:
            return f"differs from the architecture as {quirks} is known to: " + "; ".join(emu.quirks_applied)
    if model.kind != "ept_violation":
        return f"differs: the model expects no EPT violation ({model.kind}: {model.reason}), recorded " \
               f"qualification {event.exitinfo1:#x} at GPA {event.exitinfo2:#x}"
    return (f"differs: the model expects qualification {model.qualification:#x} at GPA {model.gpa:#x} "
            f"({model.reason}), recorded {event.exitinfo1:#x} at GPA {event.exitinfo2:#x}")
