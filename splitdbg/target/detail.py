"""Everything the event-detail views show, computed in the target layer (presentation only renders):
decoded exit information, the guest RIP symbolized and disassembled, the nested walk that led to
the fault, and the model's verdict."""
from __future__ import annotations

from ..errors import SplitdbgError
from ..vmx_model import ept, npt, slat_translate
from ..vmx_model.crosscheck import SVM_EXIT_NPF, VMX_EXIT_EPT_VIOLATION, ept_access, npf_access


def event_detail(mem, event, kernel=None, module_symbols=None, levels: int = 4, verdict: str = "",
                 arch: str = "svm", caps=None) -> dict:
    d = {"decoded": {}, "symbol": None, "disassembly": [], "walk": [], "walk_outcome": "", "verdict": verdict}
    fmt = None
    if arch == "svm" and event.exit_code == SVM_EXIT_NPF:
        d["decoded"] = npt.decode_exitinfo1(event.exitinfo1)
        access, final = npf_access(event.exitinfo1)
        fmt = npt
    elif arch == "vmx" and event.exit_code == VMX_EXIT_EPT_VIOLATION:
        d["decoded"] = ept.decode_qualification(event.exitinfo1)
        access, final = ept_access(event.exitinfo1)
        if event.exitinfo1 & ept.Q_GLA_VALID:
            d["decoded"]["guest-linear address"] = f"{getattr(event, 'guest_linear', 0):#x}"
        fmt = ept
    if fmt is not None:
        d["decoded"]["access"] = access
        try:
            # The second-level walk of the faulting guest-physical address in the container's tables.
            gla = getattr(event, "guest_linear", 0) if arch == "vmx" and event.exitinfo1 & ept.Q_GLA_VALID else None
            r = slat_translate(mem=mem, arch=arch, slat_root=event.slat_root, gpa=event.exitinfo2, access=access,
                               final=final, levels=levels, caps=caps, gva=gla)
            d["walk"] = [{"level": s.level, "entry_addr": s.entry_addr, "entry": s.entry,
                          "fields": fmt.decode_entry(s.entry, s.level)} for s in r.steps]
            d["walk_outcome"] = r.explain()
        except SplitdbgError as exc:
            d["walk_outcome"] = f"cannot walk: {exc}"
    d["symbol"] = symbolize(event.rip, kernel, module_symbols)
    if kernel is not None:
        d["disassembly"] = disassemble(kernel, event.rip)
    return d


def symbolize(rip: int, kernel=None, module_symbols=None) -> str | None:
    for syms in (kernel.symbols if kernel is not None else None, module_symbols):
        if syms is None:
            continue
        hit = syms.lookup(rip)
        if hit:
            sym, off = hit
            return f"{sym.name}+{off:#x}"
    return None


def disassemble(kernel, rip: int, before: int = 24, after: int = 24) -> list[str]:
    """Instructions around RIP (capstone); the faulting one is marked with '=>'."""
    import capstone

    try:
        code = kernel.read(rip - before, before + after)
    except SplitdbgError:
        try:
            code, before = kernel.read(rip, after), 0
        except SplitdbgError:
            return []
    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    # Find a decoding start that lands exactly on RIP (x86 is variable length).
    for start in range(0, before + 1):
        insns = list(md.disasm(code[start:], rip - before + start))
        if any(i.address == rip for i in insns):
            break
    else:
        insns = list(md.disasm(code[before:], rip))
    out = []
    for i in insns[-12:]:
        mark = "=>" if i.address == rip else "  "
        out.append(f"{mark} {i.address:#x}: {i.bytes.hex():<20} {i.mnemonic} {i.op_str}")
    return out
