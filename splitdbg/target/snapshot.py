"""One snapshot of a split kernel: the data model every presentation layer renders.

A Snapshot is plain data (dataclasses of ints and strings) and round-trips through JSON, so the
CLI, the gdb plugin, the TUI, `splitdbg diff` and CI checks all see the same thing. Building it
is the only place that reads guest memory (`take`).
"""
from __future__ import annotations

import json
import time

from ..errors import SplitdbgError, WalkBudgetExceeded
from dataclasses import asdict, dataclass, field

from ..vmx_model import slat_ranges
from ..vmx_model.crosscheck import basis as check_basis
from ..vmx_model.crosscheck import crosscheck_event
from .detail import event_detail
from .splitkernel import KIND_ATTACK, ModuleNotLoaded, ModuleUnusable, SplitKernel, attack_what

FORMAT = "splitdbg-snapshot/1"
UNUSABLE = "the split-kernel module's state is unusable"    # how a snapshot's note says so


@dataclass
class RangeRec:
    start: int          # guest-physical
    end: int
    hpa: int
    perms: str          # "rwxu": read, write, execute, user (nested entries: every access is a user access)
    page_size: int
    differs_from_root: bool = False
    note: str = ""      # "protected", "isolated copy", ...


@dataclass
class ContainerRec:
    id: int
    owner_pid: int
    owner_comm: str
    released: bool
    policy: dict
    slat_root: int
    pgds: list[int]
    protected: list[int]
    isolated: list[list[int]]
    counters: dict
    ranges: list[RangeRec] = field(default_factory=list)


@dataclass
class ProcessRec:
    pid: int
    tgid: int
    comm: str
    pgd: int
    container: int
    ppid: int = 0        # the parent's tgid (real_parent: the one that forked it)

    @property
    def mode(self) -> str:
        return "NR" if self.container else "R"


@dataclass
class EventRec:
    seq: int
    tsc: int
    cpu: int
    container: int
    pid: int
    kind: str
    action: str
    region: str
    exit_code: int
    exitinfo1: int
    exitinfo2: int
    rip: int
    cr3: int
    slat_root: int
    extra: int
    check: str = ""      # the model's verdict for violations: "agree", "differs: ...", or ""
    detail: dict | None = None   # violations: decoded exit information, symbol, disassembly, walk
    guest_linear: int = 0        # VMX EPT violations: the guest-linear address, when valid
    exitintinfo: int = 0         # EXITINTINFO / IDT-vectoring information (error code in bits 63:32)
    delivery: str = ""           # the event whose delivery the exit interrupted, decoded ("" if none)
    ring: int = 0                # the CPU's ring that held it: 0 the busy ring, 1 the security ring
    slat_walk: list[int] | None = None   # violations: the second-level entries walked at the exit, top first
    check_basis: str = ""        # violations: "at exit" (verdict from the recorded walk) or "now" (today's tables)
    what: str = ""               # attacks: what was refused, in words (the event's extra, decoded)


# What the manuals call each field, by second-level format: the presentation takes its labels here.
SLAT_NAMES = {
    "NPT": {"root": "nCR3", "info1": "EXITINFO1", "info2": "EXITINFO2", "exit": "exit code",
            "violation": "NPF", "walk": "nested walk", "slat_long": "nested paging", "intinfo": "EXITINTINFO"},
    "EPT": {"root": "EPTP", "info1": "QUALIFICATION", "info2": "GPA", "exit": "exit reason",
            "violation": "EPT-V", "walk": "EPT walk", "slat_long": "extended page tables",
            "intinfo": "IDT-vectoring information"},
}


def slat_names(slat: str) -> dict[str, str]:
    return SLAT_NAMES.get(slat, SLAT_NAMES["NPT"])


@dataclass
class CpuRec:
    """A CPU as its last exit's handling left it (the handler wrote the pair together)."""
    cpu: int
    cr3: int              # the guest CR3 it runs
    container: int        # the container the handler runs it in
    cr3_listed_in: int    # the container whose address-space list holds that CR3's pgd (0: none)


@dataclass
class Snapshot:
    format: str
    taken: float
    target: str
    backend: str
    module: dict | None
    slat: str                         # "NPT" or "EPT"
    cpus: list[int]
    containers: list[ContainerRec]
    processes: list[ProcessRec] | None   # None without kernel symbols
    events: list[EventRec]
    notes: list[str] = field(default_factory=list)
    sharing: list[dict] = field(default_factory=list)   # kernel text/rodata frames: who maps them, how
    # What could not be read as it should be (a corrupt ring header, a looping task list, a nested
    # table that points at itself): each a line naming the thing and the bad value; the rest of the
    # snapshot is still there. Empty for a healthy guest.
    problems: list[str] = field(default_factory=list)
    cpu_state: list[CpuRec] = field(default_factory=list)

    @property
    def names(self) -> dict[str, str]:
        return slat_names(self.slat)

    @property
    def module_unusable(self) -> bool:
        """The module's descriptor was found but its fields cannot be right (see notes)."""
        return self.module is None and any(n.startswith(UNUSABLE) for n in self.notes)

    def container(self, cid: int) -> ContainerRec | None:
        return next((c for c in self.containers if c.id == cid), None)

    def to_json(self) -> str:
        d = asdict(self)
        for p, rec in zip(d["processes"] or [], self.processes or []):
            p["mode"] = rec.mode
        return json.dumps(d, indent=1)

    @classmethod
    def from_json(cls, text: str) -> "Snapshot":
        d = json.loads(text)
        if d.get("format") != FORMAT:
            raise ValueError(f"not a splitdbg snapshot (format {d.get('format')!r})")
        conts = [ContainerRec(**{**c, "ranges": [RangeRec(**r) for r in c["ranges"]]}) for c in d["containers"]]
        procs = None if d["processes"] is None else [ProcessRec(**{k: v for k, v in p.items() if k != "mode"})
                                                     for p in d["processes"]]
        return cls(**{**d, "containers": conts, "processes": procs, "events": [EventRec(**e) for e in d["events"]],
                      "cpu_state": [CpuRec(**c) for c in d.get("cpu_state", [])]})


class _TableBudget:
    """Guest memory for one second-level table walk, which may read at most `pages` table pages.
    The nested tables live in the module's pool, so a walk that reads more pages than the pool
    holds goes round tables shared or looped by corruption: stop it (its work is then bounded by
    the pool's size, not by 512**levels)."""

    def __init__(self, mem, pages: int):
        self.mem, self.left, self.pages = mem, pages, pages

    def read_u64_array(self, addr: int, count: int):
        self.left -= 1
        if self.left < 0:
            raise WalkBudgetExceeded(f"the walk read more than {self.pages} table pages (the module's pool holds "
                                     f"{self.pages}): tables shared or looped")
        return self.mem.read_u64_array(addr, count)

    def __getattr__(self, name):
        return getattr(self.mem, name)


# A container's nested table is an identity map in large pages, split where a page is isolated,
# protected or module text (at most a few hundred of those): some 20 ranges in the lab's guests.
# More than this many is tables aliased by corruption, each alias its own ranges.
MAX_RANGES = 16384


def container_ranges(sk: SplitKernel, ncr3: int, problems: list[str] | None = None,
                     what: str = "") -> list[RangeRec]:
    """The merged ranges of a container's nested table. With `problems`, a table that cannot be
    walked (outside RAM, cyclic, shared past the pool's size) or more than MAX_RANGES ranges ends
    the list with a line there."""
    out = []
    mem = _TableBudget(sk.mem, max(sk.d["pool_size"] >> 12, 1))
    try:
        for r in slat_ranges(mem, sk.arch, sk.slat_root(ncr3), caps=sk.caps(), levels=sk.levels):
            if len(out) == MAX_RANGES:
                raise WalkBudgetExceeded(f"more than {MAX_RANGES} ranges (tables aliased: corrupt)")
            out.append(RangeRec(r.start, r.end, r.hpa, r.perms, r.page_size))
    except SplitdbgError as exc:
        if problems is None:
            raise
        problems.append(f"{what or f'nested table {ncr3:#x}'}: {exc}: "
                        f"{'ranges after ' + hex(out[-1].end) if out else 'no ranges'} not shown")
    return out


def mark_differences(root: list[RangeRec], other: list[RangeRec]) -> None:
    """Set differs_from_root on each range of `other` whose mapping or permissions differ from
    the root container's over any part of it."""
    import bisect

    starts = [r.start for r in root]
    for r in other:
        i = max(bisect.bisect_right(starts, r.start) - 1, 0)
        pos, differs = r.start, False
        while pos < r.end and not differs:
            if i >= len(root) or root[i].start > pos:
                differs = True          # root maps nothing here
                break
            rr = root[i]
            if rr.end <= pos:
                i += 1
                continue
            if rr.perms != r.perms or rr.hpa + (pos - rr.start) != r.hpa + (pos - r.start):
                differs = True
            pos = min(rr.end, r.end)
            i += 1
        r.differs_from_root = differs


def module_symbols(kernel):
    """Symbols of the loaded modules whose .ko the lab built (for symbolizing RIPs in modules)."""
    if kernel is None:
        return None
    from ..lab import REPO
    from .symbols import ModuleSymbols

    ms = ModuleSymbols()
    where = REPO / "build" / "guest-root" / "lib" / "modules" / "splitdbg"
    try:
        for m in kernel.modules():
            ko = where / f"{m.name}.ko"
            if ko.exists():
                ms.add(m.name, ko, kernel.module_sections(m).get(".text", m.base), m.text_size or m.size)
    except SplitdbgError:
        return None
    return ms


def take(mem, *, target: str = "", backend: str = "", kernel=None, with_ranges: bool = True,
         crosscheck: bool = True, guest_regs: dict | None = None, detail_cache: dict | None = None,
         event_cache: dict | None = None, descriptor_pa: int | None = None, locate=None) -> Snapshot:
    """Read everything once. `kernel` (target.kernel.Kernel) adds processes; without it, the
    module's state alone (found by its magic) still makes a snapshot. `locate()`, when given,
    says where the descriptor is instead of `descriptor_pa` (or raises ModuleNotLoaded): a
    session's bounded lookup, where a whole-RAM scan would take minutes (the gdbstub)."""
    notes, problems = [], []
    try:
        sk = SplitKernel(mem, locate() if locate else descriptor_pa, event_cache=event_cache)
    except ModuleNotLoaded as exc:
        sk = None
        notes.append(str(exc))
    except ModuleUnusable as exc:
        sk = None
        notes.append(f"{UNUSABLE}: {exc}")
        problems.append(str(exc))
    containers, events, module, cpus, cpu_state = [], [], None, [], []
    if sk is not None:
        problems += sk.problems
        module = {k: v for k, v in sk.d.items() if not k.startswith(("rings_pa", "sec_rings_pa", "vmcb_pa"))}
        module["vendor_name"] = sk.vendor
        module["descriptor_pa"] = sk.pa
        module["ring_overflow"] = sk.overflow()
        cpus = sk.cpus
        root_ranges = None
        conts = sk.containers(problems)
        prot = set(p for cc in conts for p in cc.protected)
        for c in conts:
            rec = ContainerRec(c.id, c.owner_pid, c.owner_comm, c.released, c.policy, sk.slat_root(c.ncr3), list(c.pgds),
                               list(c.protected), [list(x) for x in c.isolated], asdict(c.counters))
            if with_ranges:
                rec.ranges = container_ranges(sk, c.ncr3, problems, f"container {c.id}'s nested table {c.ncr3:#x}")
                iso = {g: cp for g, cp in c.isolated}
                for r in rec.ranges:
                    if r.start in iso:
                        r.note = "isolated copy"
                    elif r.start in c.protected:
                        r.note = "protected (own)"
                if c.id == 0:
                    root_ranges = rec.ranges
                elif root_ranges is not None:
                    mark_differences(root_ranges, rec.ranges)
                    for r in rec.ranges:
                        if not r.note and r.differs_from_root and r.end - r.start == 0x1000 and r.start in prot:
                            r.note = "protected (other)"
            containers.append(rec)
        listed = {pgd: c.id for c in conts for pgd in c.pgds}
        for cpu in cpus:
            now = sk.cpu_now(cpu)
            cpu_state.append(CpuRec(cpu, now.cr3, now.container, listed.get(now.cr3 & 0x000FFFFFFFFFF000, 0)))
        modsyms = module_symbols(kernel) if crosscheck else None
        for e in sk.events(problems=problems):
            rec = EventRec(e.seq, e.tsc, e.cpu, e.container, e.pid, e.kind_name, e.action_name, e.region_name,
                           e.exit_code, e.exitinfo1, e.exitinfo2, e.rip, e.cr3, e.slat_root, e.extra,
                           guest_linear=e.guest_linear, exitintinfo=e.exitintinfo, ring=e.ring,
                           slat_walk=list(e.slat_walk) or None)
            rec.delivery = sk.delivery(e)
            if e.kind == KIND_ATTACK:
                rec.what = attack_what(e.region, e.extra, sk.d["vendor"])
            key = (e.cpu, e.ring, e.seq, e.tsc)
            if e.kind_name == "violation":
                rec.check_basis = check_basis(e)
            if crosscheck and e.kind_name == "violation" and detail_cache is not None and key in detail_cache:
                rec.check, rec.detail = detail_cache[key]   # a poller sees the same events again and again
            elif crosscheck and e.kind_name == "violation":
                try:
                    rec.check = crosscheck_event(sk.mem, e, levels=sk.levels, arch=sk.arch, caps=sk.caps(),
                                                 host_efer=(guest_regs or {}).get("efer"),
                                                 guest_regs=sk.guest_regs(e.cpu),
                                                 live_roots={c.slat_root for c in containers},
                                                 live_pgds={c.slat_root: c.pgds for c in containers})
                    rec.detail = event_detail(sk.mem, e, kernel, modsyms, levels=sk.levels, verdict=rec.check,
                                              arch=sk.arch, caps=sk.caps())
                except SplitdbgError as exc:    # tables or fields it names that cannot be read: say so
                    rec.check = f"not checked: {exc}"
                    problems.append(f"violation seq {e.seq} on CPU {e.cpu}: the model cannot judge it: {exc}")
                if detail_cache is not None:
                    detail_cache[key] = (rec.check, rec.detail)
            events.append(rec)
    processes = None
    if kernel is not None:
        processes = []
        for t in kernel.tasks(problems):
            cid = sk.container_of_cr3(t.pgd) if (sk is not None and t.pgd) else 0
            processes.append(ProcessRec(t.pid, t.tgid, t.comm, t.pgd, cid, t.ppid))
    else:
        notes.append("no kernel symbols (vmlinux): processes are not listed")
    sharing = []
    if with_ranges and module is not None and kernel is not None:
        from .sharing import frame_rows_of, mappings

        dumps: dict = {}      # each address space read once for both regions
        for name in ("text", "rodata"):
            span = sk.region(name)
            if span is None:
                continue              # a corrupt span: sk.problems says so
            lo, hi = span
            maps = mappings(mem, [c for c in containers if c.id and c.pgds], lo, hi, kernel.mode, dumps,
                            problems if name == "text" else None)      # each address space's problems once
            try:
                sharing += [dict(r, region=name) for r in frame_rows_of(maps, limit=500)]
            except SplitdbgError as exc:
                problems.append(f"sharing of kernel {name}: {exc}: not shown")
    slat = sk.slat_name if sk is not None else "NPT"
    return Snapshot(FORMAT, time.time(), target, backend, module, slat, cpus, containers, processes, events, notes,
                    sharing, problems, cpu_state)
