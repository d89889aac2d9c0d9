"""Text renderings of a Snapshot, shared by the CLI and the gdb plugin (presentation only)."""
from __future__ import annotations

from ..errors import SplitdbgError
from ..target.snapshot import UNUSABLE, Snapshot, slat_names
from ..target.spans import parse_range  # noqa: F401  (the CLI, gdb and the TUI parse --range with it)

SIZE = {0x1000: "4K", 0x200000: "2M", 0x40000000: "1G"}


def status(s: Snapshot, run_state: str | None = None) -> str:
    lines = [f"target         : {s.target}", f"memory backend : {s.backend}"]
    if run_state is not None:
        lines.append(f"guest          : {run_state} (QEMU's run state)")
    m = s.module
    if m is None and s.module_unusable:
        lines.append("split kernel   : unusable (" + next(p for p in s.problems) + ")")
    elif m is None:
        why = "; ".join(s.notes[:1])
        state = "unknown" if why.startswith("module state unknown") else "not loaded"
        lines.append(f"split kernel   : {state} ({why})")
    else:
        lines += [f"split kernel   : ABI {m['version']}, {m['vendor_name']} with {s.names['slat_long']} ({s.slat}, "
                  f"{m['slat_levels']} levels), descriptor at {m['descriptor_pa']:#x}",
                  f"CPUs in R mode : {', '.join(map(str, s.cpus)) or 'none'} of {m['ncpus']}",
                  *[f"  CPU {c.cpu:<2}       : {'root' if not c.container else f'container {c.container}'}, "
                    f"guest CR3 {c.cr3:#x} (as its last exit left it)" for c in s.cpu_state],
                  f"containers     : {len(s.containers)} (root + {len(s.containers) - 1})",
                  f"VM exits       : {m['total_exits']} total, {m['hypercalls']} hypercalls",
                  f"pool           : {m['pool_pa']:#x} + {m['pool_size'] >> 20} MiB (absent from every container)"]
    if s.processes is not None:
        nr = sum(1 for p in s.processes if p.container)
        lines.append(f"processes      : {len(s.processes)} ({nr} in non-root mode)")
    lines += [f"note           : {n}" for n in s.notes if not n.startswith(UNUSABLE)]
    lines += [f"problem        : {p}" for p in s.problems]
    return "\n".join(lines)


def problem_lines(problems: list[str], limit: int = 20) -> list[str]:
    """What could not be read (corrupt memory), one line each, as the CLI and the gdb plugin say it."""
    out = [f"splitdbg: problem: {p}" for p in problems[:limit]]
    if len(problems) > limit:
        out.append(f"splitdbg: ... and {len(problems) - limit} more problems")
    return out


def ps(s: Snapshot) -> str:
    if s.processes is None:
        return "no kernel symbols: give --vmlinux to list processes\n" + containers(s)
    viol = {c.id: sum(c.counters["violations"].values()) for c in s.containers}
    prot = {c.id: len(c.protected) for c in s.containers}
    out = [f"{'PID':>6} {'COMM':16} {'MODE':4} {'CONT':>4} {'PROT':>4} {'VIOL':>5}  PGD"]
    for p in s.processes:
        c = p.container
        out.append(f"{p.pid:>6} {p.comm:16} {p.mode:4} {c:>4} {prot.get(c, 0) if c else 0:>4} "
                   f"{viol.get(c, 0) if c else 0:>5}  {p.pgd:#x}" if p.pgd else
                   f"{p.pid:>6} {p.comm:16} {'R':4} {'-':>4} {'-':>4} {'-':>5}  (kernel thread)")
    return "\n".join(out)


def tasks(states, stacks: bool = False) -> str:
    """`splitdbg tasks`: state letters and wait channels as /proc says them; with stacks, the
    kernel text addresses found on each stack, marked '?' as the kernel marks guessed frames."""
    out = [f"{'PID':>6} {'TGID':>6} {'COMM':16} {'ST':2} {'CPU':>3} {'MODE':4} {'CONT':>4}  WCHAN"]
    for t in states:
        c = t.container
        where = "(on CPU)" if t.on_cpu else (t.wchan or t.note or "-")
        out.append(f"{t.pid:>6} {t.tgid:>6} {t.comm:16} {t.state:2} {t.cpu:>3} {'NR' if c else 'R':4} "
                   f"{c if c else '-':>4}  {where}")
        if stacks:
            out += [f"{'':8}? {f.symbol or hex(f.addr)}" for f in t.frames]
            if t.on_cpu:
                out.append(f"{'':8}(running: its saved stack pointer is stale)")
    return "\n".join(out)


def containers(s: Snapshot) -> str:
    n = s.names
    out = [f"{'ID':>3} {'OWNER':>6} {'COMM':16} {n['root']:>12} {'PGDS':>4} {'EXITS':>7} {n['violation']:>5} {'DENY':>4} "
           f"{'ISO':>4} {'LOG':>4} POLICY"]
    for c in s.containers:
        k = c.counters
        pol = "-" if c.id == 0 else ",".join(f"{r}={p}" for r, p in c.policy.items())
        out.append(f"{c.id:>3} {c.owner_pid:>6} {(c.owner_comm or ('root' if c.id == 0 else '')):16} "
                   f"{c.slat_root:>#12x} {len(c.pgds):>4} {k['exits']:>7} {k['exits_npf']:>5} {k['denied']:>4} "
                   f"{k['isolated']:>4} {k['allowed']:>4} {pol}{' (released)' if c.released else ''}")
    return "\n".join(out)


def ept(s: Snapshot, cid: int, flt: set[str] | None = None, window: tuple[int, int] | None = None) -> str:
    c = s.container(cid)
    if c is None:
        return f"no container {cid}"
    out = [f"container {cid} ({'root' if cid == 0 else c.owner_comm}), {s.slat} root {c.slat_root:#x}: "
           f"{len(c.ranges)} ranges; * = differs from the root container"]
    for r in c.ranges:
        if window and (r.end <= window[0] or r.start >= window[1]):
            continue
        if flt and not _match(r, flt):
            continue
        mark = "*" if r.differs_from_root else " "
        out.append(f"{mark} {r.start:#014x}-{r.end:#014x} -> {r.hpa:#014x} {r.perms:4} {SIZE.get(r.page_size, hex(r.page_size)):>3}"
                   f"{'  ' + r.note if r.note else ''}")
    return "\n".join(out)


# The words of a map filter (`ept --filter`, the TUI's `/` on the map), besides START-END ranges.
FILTER_WORDS = ("r", "w", "x", "u", "-r", "-w", "-x", "-u", "protected", "isolated", "differs")


def _is_range(word: str) -> bool:
    return "-" in word[1:] and all(c in "0123456789abcdefx-" for c in word.lower())


def parse_filter(text: str, what: str = "--filter") -> set[str]:
    """The words of a map filter (comma- or space-separated), each checked: an unknown word is an
    error that lists the valid ones, not a filter that silently matches everything."""
    words = {f for f in text.replace(",", " ").split() if f}
    for f in sorted(words):
        if _is_range(f):
            parse_range(f, f"{what} range")
        elif f not in FILTER_WORDS:
            raise SplitdbgError(f"{what} {f!r}: not a filter word; valid: {', '.join(FILTER_WORDS)} "
                                f"or START-END (hexadecimal)")
    return words


def _match(r, flt: set[str]) -> bool:
    for f in flt:
        if _is_range(f):
            lo, hi = parse_range(f)                                # an address range A-B (hex)
            if r.end <= lo or r.start >= hi:
                return False
            continue
        if f in ("r", "w", "x", "u") and f not in r.perms:
            return False
        if f in ("-r", "-w", "-x", "-u") and f[1] in r.perms:
            return False
        if f == "protected" and "protected" not in r.note:
            return False
        if f == "isolated" and "isolated" not in r.note:
            return False
        if f == "differs" and not r.differs_from_root:
            return False
    return True


def events_header(slat: str = "NPT") -> str:
    n = slat_names(slat)
    return (f"{'CPU':>3} {'SEQ':>6} {'CONT':>4} {'PID':>5} {'KIND':12} {'ACTION':8} {'REGION':12} "
            f"{n['info1']:>12} {n['info2']:>14} {'RIP':>18}  CHECK")


def event_line(cpu, seq, container, pid, kind, action, region, exitinfo1, exitinfo2, rip, check,
               delivery: str = "") -> str:
    # An exit that interrupted an event's delivery says which event: the handler delivers it again.
    return (f"{cpu:>3} {seq:>6} {container:>4} {pid:>5} {kind:12} {action:8} {region:12} "
            f"{exitinfo1:>#12x} {exitinfo2:>#14x} {rip:>#18x}  {check}"
            + (f"  [delivering {delivery}]" if delivery else ""))


def events(s: Snapshot, pid: int | None = None, kind: str | None = None, last: int | None = None) -> str:
    evs = [e for e in s.events if (pid is None or e.pid == pid) and (kind is None or e.kind == kind)]
    if last:
        evs = evs[-last:]
    return "\n".join([events_header(s.slat)] + [event_line(e.cpu, e.seq, e.container, e.pid, e.kind, e.action, e.region,
                                                    e.exitinfo1, e.exitinfo2, e.rip, e.what or _verdict(e),
                                                    e.delivery)
                                         for e in evs])


def _verdict(e) -> str:
    """The model's verdict, marked when it comes from today's tables rather than the walk at exit."""
    return f"{e.check} (tables now)" if e.check and e.check_basis == "now" else e.check


def walk(w: dict) -> str:
    out = [f"process {w['pid']} ({w['comm']}), container {w['container']}, guest CR3 {w['guest_cr3']:#x}, "
           f"{slat_names(w.get('slat', 'NPT'))['root']} {w['slat_root']:#x}", w["explanation"]]
    for st in w["steps"]:
        out.append(f"  {st['walk']:5} L{st['level']} {st['purpose']:28} @ {st['entry_addr']:#014x} = {st['entry']:#018x}")
    return "\n".join(out)


def pagetable(d, cr3: int, mode) -> str:
    """A guest address space's merged ranges (x86_paging.dump), as `splitdbg pagetable` and
    `split pagetable` print them."""
    out = [str(r) for r in d.ranges] + [f"problem: {p}" for p in d.problems]
    out.append(f"{len(d.ranges)} ranges, {d.tables_read} table pages read ({mode.levels}-level, CR3={cr3:#x})")
    return "\n".join(out)


def pagetable_json(d, cr3: int) -> dict:
    return {"cr3": cr3, "ranges": [{"start": r.start, "end": r.end, "phys": r.phys, "perms": r.perms,
                                    "page_size": r.page_size, "global": r.global_} for r in d.ranges],
            "problems": [str(p) for p in d.problems]}
