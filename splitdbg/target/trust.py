"""What the root-mode handler and the shared kernel trust, as guest-physical pages: the pages a
container must not be able to write (docs/security.md, tier 2). The policy rules
`handler-pages` and `module-text` (docs/policies.md) check these against each container's nested
table.

- the handler's own pages outside the pool: the descriptor, the page of its variables
  (struct sk_state), its code and rodata (splitkernel's module core), and the page tables it runs
  on (the kernel's init_top_pgt and the tables below it on the way to those pages and the pool);
- every loaded module's text and rodata.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..arch import x86_paging as xp
from ..errors import MemoryReadError, SplitdbgError

PAGE = 0x1000
DIRECT_MAP = 0xFFFF888000000000      # x86-64 page_offset_base without KASLR (4-level paging)


def direct_map(kernel) -> int:
    """Where the kernel maps all RAM (page_offset_base when memory layout randomisation has it)."""
    try:
        return kernel.u64(kernel.symbols.address("page_offset_base"))
    except (SplitdbgError, KeyError):
        return DIRECT_MAP
GROUPS = ("descriptor", "state", "code", "host-tables")


@dataclass(frozen=True)
class PageUse:
    pa: int          # guest-physical page
    group: str       # one of GROUPS, or "module-text" / "module-rodata"
    what: str        # in words: "splitkernel text", "host PML4 (init_top_pgt)", ...


def module_pages(kernel, problems: list[str] | None = None, names=None) -> list[PageUse]:
    """Each page of each loaded module's text and rodata (core layout), translated through the
    kernel's page tables. `names` limits it to those modules."""
    out = []
    for m in kernel.modules(problems):
        if names is not None and m.name not in names:
            continue
        if not (0 < m.ro_size <= m.size <= 1 << 30) or m.text_size > m.ro_size:
            if problems is not None:
                problems.append(f"module {m.name}: sizes text {m.text_size:#x} ro {m.ro_size:#x} size {m.size:#x} "
                                f"cannot be right: its pages are not checked")
            continue
        for va in range(m.base, m.base + m.ro_size, PAGE):
            text = va < m.base + m.text_size
            try:
                pa = kernel.translate(va)
            except MemoryReadError as exc:
                if problems is not None:
                    problems.append(f"module {m.name}: {'text' if text else 'rodata'} page {va:#x}: {exc}")
                continue
            out.append(PageUse(pa, "module-text" if text else "module-rodata",
                               f"{m.name} {'text' if text else 'rodata'} {va:#x}"))
    return out


def handler_pages(sk, kernel, groups=GROUPS, problems: list[str] | None = None) -> tuple[list[PageUse], list[str]]:
    """The handler's pages outside the pool, by group; and notes on what could not be named
    (code and host tables need the kernel's symbols, to find the module's core in its list)."""
    pages: list[PageUse] = []
    notes: list[str] = []
    d = sk.d
    if "descriptor" in groups:
        pages.append(PageUse(sk.pa & ~(PAGE - 1), "descriptor", "the module's descriptor"))
    if "state" in groups:
        pages.append(PageUse(d["state_page_pa"] & ~(PAGE - 1), "state", "the handler's variables (struct sk_state)"))
    if not {"code", "host-tables"} & set(groups):
        return pages, notes
    if kernel is None:
        notes.append("without kernel symbols the handler's code and the tables it runs on are not checked")
        return pages, notes
    core = next((m for m in kernel.modules(problems) if m.base == d["module_core_va"]), None)
    if core is None:
        notes.append(f"no loaded module has its core at {d['module_core_va']:#x} (the descriptor's): "
                     f"the handler's code is not checked")
        return pages, notes
    if "code" in groups:
        pages += [PageUse(p.pa, "code", p.what.replace(core.name, "handler (" + core.name + ")", 1))
                  for p in module_pages(kernel, problems, names={core.name})]
    if "host-tables" in groups:
        pages += host_tables(sk.mem, d["host_cr3"], kernel.mode,
                             [*range(core.base, core.base + core.size, PAGE),
                              *range(direct_map(kernel) + d["pool_pa"],
                                     direct_map(kernel) + d["pool_pa"] + min(d["pool_size"], 1 << 26), PAGE)])
    return pages, notes


def host_tables(mem, cr3: int, mode, vas) -> list[PageUse]:
    """The page-table pages the handler's own walks go through (host CR3 down to the leaf) for
    the given linear addresses: a container that writes one could redirect the handler."""
    seen: dict[int, str] = {}
    for va in vas:
        try:
            t = xp.walk(mem, cr3, va, mode)
        except SplitdbgError:
            continue
        for st in t.steps:
            if st.table not in seen:
                seen[st.table] = f"host {st.name[:-1]} table" + (" (init_top_pgt)" if st.level == mode.levels else "")
    return [PageUse(pa, "host-tables", what) for pa, what in seen.items()]
