"""Everything the event-detail views show, computed in the target layer (presentation only renders):
decoded exit information, the guest RIP symbolized and disassembled, the nested walk that led to
the fault, and the model's verdict."""
from __future__ import annotations

from ..errors import SplitdbgError
from ..vmx_model import npt, slat_translate
from ..vmx_model.crosscheck import npf_access


def event_detail(mem, event, kernel=None, module_symbols=None, levels: int = 4, verdict: str = "") -> dict:
    d = {"decoded": {}, "symbol": None, "disassembly": [], "walk": [], "walk_outcome": "", "verdict": verdict}
    if event.exit_code == 0x400:
        d["decoded"] = npt.decode_exitinfo1(event.exitinfo1)
        access, final = npf_access(event.exitinfo1)
        d["decoded"]["access"] = access
        try:
            r = slat_translate(mem=mem, arch="svm", slat_root=event.slat_root, gpa=event.exitinfo2, access=access,
                               final=final, levels=levels)
            d["walk"] = [{"level": s.level, "entry_addr": s.entry_addr, "entry": s.entry,
                          "fields": npt.decode_entry(s.entry, s.level)} for s in r.steps]
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
