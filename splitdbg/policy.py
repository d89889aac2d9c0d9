"""Policies (docs/policies.md): rules about a split kernel's state, checked against one snapshot
of a target. The CLI (`splitdbg check`), the gdb plugin (`split check`) and the API all check with
this; it reads through the layers below (the snapshot, the kernel, the module) and renders nothing."""
from __future__ import annotations

import tomllib

from .arch import x86_paging as xp
from .errors import SplitdbgError
from .target import trust
from .target.sharing import sharing_graph, writable_paths
from .target.snapshot import Snapshot
from .target.spans import parse_range
from .target.splitkernel import REGIONS as SK_REGIONS
from .target.splitkernel import span_problem

START_KERNEL_MAP = 0xFFFFFFFF80000000
KINDS = ("permissions", "protected-only-in-owner", "no-aliases", "violations", "address-spaces",
         "contained-tasks", "cpu-containers", "handler-pages", "module-text")


class PolicyError(SplitdbgError):
    pass


class Uncheckable(SplitdbgError):
    """What a rule needs cannot be read as it should be (corrupt guest memory): the rule fails,
    saying why, and the others are still checked."""


# What each kind of rule reads; anything else in a rule is a typo that would be silently ignored.
SPAN_KEYS = ("region", "range", "symbol", "section")
KEYS = {"permissions": {"containers", "forbid", "require", *SPAN_KEYS},
        "protected-only-in-owner": set(),
        "no-aliases": set(SPAN_KEYS),
        "violations": {"containers", "max"},
        "address-spaces": {"containers"},
        "contained-tasks": set(),
        "cpu-containers": set(),
        "handler-pages": {"containers", "pages"},
        "module-text": {"containers", "modules"}}
REGIONS = ("kernel-text", "kernel-rodata")
HANDLER_GROUPS = trust.GROUPS
HANDLER_DEFAULT = ("descriptor", "state", "code")     # host-tables: a known gap (docs/security.md)
VIOLATION_REGIONS = tuple(SK_REGIONS.values())       # the counters a container keeps, by region
PERMS = "rwxu"


def _int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)     # TOML's true is not a number


def check_rule(rule, where: str) -> None:
    """Every key of a rule known for its kind, of the right type and in range; a rule that could
    never find anything (no permission named, an empty container list, no limits) is refused."""
    if not isinstance(rule, dict):
        raise PolicyError(f"{where}: a rule must be a [[rule]] table, not {rule!r}")
    name = rule.get("name")
    if name is not None and (not isinstance(name, str) or not name.strip()):
        raise PolicyError(f"{where}: name = {name!r}: must be a non-empty string")
    kind = rule.get("kind")
    if kind not in KINDS:
        raise PolicyError(f"{where}: kind must be one of {', '.join(KINDS)}"
                          + (f" (not {kind!r})" if "kind" in rule else " (no kind given)"))
    unknown = sorted(set(rule) - KEYS[kind] - {"name", "kind"})
    if unknown:
        raise PolicyError(f"{where}: unknown key{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} for a {kind} "
                          f"rule (it takes {', '.join(sorted(KEYS[kind])) or 'no keys but name and kind'})")
    spans = [k for k in SPAN_KEYS if k in rule]
    if len(spans) > 1:
        raise PolicyError(f"{where}: {' and '.join(spans)}: a rule names one of region, range, symbol or section")
    if kind == "permissions" and not spans:
        raise PolicyError(f"{where}: a permissions rule names its memory: region, range, symbol or section")
    for k in spans:
        v = rule[k]
        if k == "region" and v not in REGIONS:
            raise PolicyError(f"{where}: region = {v!r}: must be one of {', '.join(REGIONS)}")
        if k == "range":
            try:
                parse_range(v, "range")
            except SplitdbgError as exc:
                raise PolicyError(f"{where}: {exc}") from None
        if k in ("symbol", "section") and (not isinstance(v, str) or not v.strip()):
            raise PolicyError(f"{where}: {k} = {v!r}: must be a non-empty string")
    if "containers" in rule:
        sel = rule["containers"]
        if isinstance(sel, list):
            if not sel:
                raise PolicyError(f"{where}: containers = []: selects no container (the rule would hold vacuously)")
            for x in sel:
                if not ((_int(x) and x >= 0) or (isinstance(x, str) and x.strip())):
                    raise PolicyError(f"{where}: containers = {sel!r}: {x!r} is neither a container id (an integer "
                                      f">= 0) nor a command name")
        elif sel not in ("all", "root", "non-root"):
            raise PolicyError(f"{where}: containers = {sel!r}: use all, root, non-root or a list of ids/commands")
    if kind == "permissions":
        for k in ("forbid", "require"):
            v = rule.get(k, "")
            if not isinstance(v, str) or any(c not in PERMS for c in v):
                raise PolicyError(f"{where}: {k} = {v!r}: must be a string of permissions among {' '.join(PERMS)}")
        if not rule.get("forbid") and not rule.get("require"):
            raise PolicyError(f"{where}: a permissions rule needs forbid or require (else it holds vacuously)")
    for k, known in (("pages", HANDLER_GROUPS), ("modules", None)):
        if k in rule:
            v = rule[k]
            if not isinstance(v, list) or not v or not all(isinstance(x, str) and x.strip() for x in v):
                raise PolicyError(f"{where}: {k} = {v!r}: must be a non-empty list of names"
                                  + (f" among {', '.join(known)}" if known else ""))
            bad = [x for x in v if known and x not in known]
            if bad:
                raise PolicyError(f"{where}: {k} = {v!r}: {', '.join(bad)} unknown (known: {', '.join(known)})")
    if kind == "violations":
        limits = rule.get("max")
        if not isinstance(limits, dict) or not limits:
            raise PolicyError(f"{where}: max = {limits!r}: must be a table of region = limit, e.g. max = {{ text = 0 }} "
                              f"(else the rule holds vacuously)")
        for region, n in limits.items():
            if region not in VIOLATION_REGIONS:
                raise PolicyError(f"{where}: max.{region}: unknown region (known: {', '.join(VIOLATION_REGIONS)})")
            if not _int(n) or n < 0:
                raise PolicyError(f"{where}: max.{region} = {n!r}: must be an integer >= 0")


def load_policy(path: str) -> list[dict]:
    """The rules of a policy file, each checked (check_rule); PolicyError names the rule and the key."""
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"{path}: not valid TOML: {' '.join(str(exc).split())}") from exc
    except OSError as exc:
        raise PolicyError(f"cannot read policy {path}: {exc.strerror}") from exc
    unknown = sorted(set(doc) - {"rule"})
    if unknown:
        raise PolicyError(f"{path}: unknown top-level key{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} "
                          f"(a policy is [[rule]] tables)")
    rules = doc.get("rule")
    if not isinstance(rules, list) or not rules:
        raise PolicyError(f"{path}: no [[rule]] tables")
    for i, r in enumerate(rules):
        label = r.get("name") if isinstance(r, dict) and isinstance(r.get("name"), str) else "unnamed"
        check_rule(r, f"{path}: rule {i + 1} ({label})")
    return rules


class Checker:
    """Checks rules against one snapshot, with the memory, the kernel (None without symbols) and
    the module's state (a callable, read only by the rules that need it) of the same target."""

    def __init__(self, snap: Snapshot, *, mem=None, kernel=None, splitkernel=None):
        self.snap, self.mem, self.kernel = snap, mem, kernel
        self._sk = splitkernel
        m = snap.module or {}
        self.regions = {"kernel-text": (m.get("kernel_text_pa"), m.get("kernel_text_end_pa")),
                        "kernel-rodata": (m.get("rodata_pa"), m.get("rodata_end_pa"))}

    def splitkernel(self):
        if self._sk is None:
            raise PolicyError("this rule needs the module's state (a live target or an image)")
        return self._sk()

    # -- what a rule talks about ---------------------------------------------------------------
    def span(self, rule) -> tuple[int, int]:
        """The guest-physical span a rule names: region, range, symbol or section."""
        if "region" in rule:
            lo, hi = self.regions.get(rule["region"], (None, None))
            if lo is None:
                raise PolicyError(f"unknown region {rule['region']!r} (or the module is not loaded): "
                                  f"known: {', '.join(self.regions)}")
            why = span_problem(rule["region"], lo, hi, self.mem)
            if why:      # a corrupt descriptor: the span would make the work as large as the value
                raise Uncheckable(f"the descriptor's {why}")
            return lo, hi
        if "range" in rule:
            return parse_range(rule["range"])
        k = self.kernel
        if k is None:
            raise PolicyError("symbol and section rules need kernel symbols (--vmlinux)")
        if "symbol" in rule:
            sym = k.symbols.by_name.get(rule["symbol"])
            if sym is None:
                raise PolicyError(f"no symbol {rule['symbol']!r}")
            pa = k.image_pa(sym.addr)
            return pa, pa + max(sym.size, 1)
        if "section" in rule:
            addr, size = k.symbols.sections.get(rule["section"], (0, 0))
            if not addr:
                raise PolicyError(f"no section {rule['section']!r} in vmlinux")
            return k.image_pa(addr), k.image_pa(addr) + size
        raise PolicyError(f"rule {rule.get('name')!r} names no region, range, symbol or section")

    def containers(self, rule):
        # A released container without address spaces can never run again: its tables only await
        # reaping by the handler, so no rule applies to them.
        live = [c for c in self.snap.containers if not (c.released and not c.pgds)]
        return self._select(live, rule.get("containers", "non-root"))

    @staticmethod
    def _select(containers, sel):
        if sel == "all":
            return containers
        if sel == "root":
            return [c for c in containers if c.id == 0]
        if sel == "non-root":
            return [c for c in containers if c.id != 0]
        if isinstance(sel, list):
            return [c for c in containers if c.id in sel or c.owner_comm in sel]
        raise PolicyError(f"containers = {sel!r}: use all, root, non-root or a list of ids/commands")

    # -- rules ---------------------------------------------------------------------------------
    def permissions(self, rule) -> list[str]:
        lo, hi = self.span(rule)
        forbid, require = rule.get("forbid", ""), rule.get("require", "")
        bad = []
        for c in self.containers(rule):
            covered = []
            for r in c.ranges:
                if r.end <= lo or r.start >= hi:
                    continue
                if not (lo <= r.hpa + (max(r.start, lo) - r.start) < hi):
                    continue   # the span's addresses map a private copy here (isolate): not the frames named
                covered.append((max(r.start, lo), min(r.end, hi)))
                got = [f for f in forbid if f in r.perms] + [f"missing {f}" for f in require if f not in r.perms]
                if got:
                    bad.append(f"container {c.id} ({c.owner_comm or 'root'}): {max(r.start, lo):#x}-{min(r.end, hi):#x} "
                               f"is {r.perms} ({', '.join(got)})")
            # Absent from the map at all counts as no permission: fine for forbid, not for require.
            if require:
                pos = lo
                for a, b in sorted(covered) + [(hi, hi)]:
                    if a > pos:
                        bad.append(f"container {c.id} ({c.owner_comm or 'root'}): {pos:#x}-{a:#x} is not mapped "
                                   f"(missing {', '.join(require)})")
                    pos = max(pos, b)
        return bad

    def protected_only_in_owner(self, rule) -> list[str]:
        bad = []
        for owner in self.snap.containers:
            for pa in owner.protected:
                for c in self.snap.containers:
                    if c.id == owner.id:
                        continue
                    for r in c.ranges:
                        if r.start <= pa < r.end and r.hpa + (pa - r.start) == pa:
                            bad.append(f"protected page {pa:#x} of container {owner.id} is mapped in container {c.id}"
                                       f" ({r.perms})")
        return bad

    def no_aliases(self, rule) -> list[str]:
        lo, hi = self.span(rule if any(k in rule for k in ("region", "range", "symbol", "section"))
                           else {"region": "kernel-text"})
        mode = self.kernel.mode if self.kernel else xp.PagingMode(levels=4)
        g = sharing_graph(self.mem, self.containers({"containers": "non-root"}), lo, hi, mode)
        return [f"container {c} (CR3 {pgd:#x}): guest-virtual {gva:#x} writes frame {frame:#x} through guest-physical {gpa:#x}"
                for c, pgd, gva, gpa, frame in writable_paths(g)]

    def violations(self, rule) -> list[str]:
        limits = rule.get("max", {})
        bad = []
        for c in self.containers({"containers": rule.get("containers", "all")}):
            for region, n in c.counters["violations"].items():
                if region in limits and n > limits[region]:
                    bad.append(f"container {c.id} ({c.owner_comm or 'root'}): {n} {region} violations (max {limits[region]})")
        return bad

    def address_spaces(self, rule) -> list[str]:
        """Every address space (pgd) a container lists is in use: a process's, or held by a CPU.
        Anything else is a stale entry: the freed page, once it is some new process's pgd, would
        put that process in this container."""
        if self.snap.processes is None or self.kernel is None:
            raise PolicyError("the address-spaces rule needs kernel symbols (--vmlinux)")
        owners = {p.pgd for p in self.snap.processes if p.pgd}
        held = set().union(*self.kernel.cpu_pgds().values())
        # A CPU stopped inside switch_mm (at the VM exit of its CR3 write) still holds the CR3 it
        # leaves: the guest CR3 the handler noted at its last exit.
        sk = self.splitkernel()
        held |= {xp.cr3_table(sk.guest_regs(cpu)["cr3"], self.kernel.mode) for cpu in self.snap.cpus}
        return [f"container {c.id} ({c.owner_comm or 'root'}{', released' if c.released else ''}) lists address space "
                f"{pgd:#x}, which no process owns and no CPU holds (stale)"
                for c in self.containers({"containers": rule.get("containers", "all")})
                for pgd in c.pgds if pgd not in owners and pgd not in held]

    def _writable(self, rule, pages) -> list[str]:
        """Each page (trust.PageUse) that some chosen container maps to itself writably."""
        import bisect

        bad = []
        for c in self.containers({"containers": rule.get("containers", "non-root")}):
            starts = [r.start for r in c.ranges]
            for p in pages:
                i = bisect.bisect_right(starts, p.pa) - 1
                if i < 0:
                    continue
                r = c.ranges[i]
                if r.start <= p.pa < r.end and r.hpa + (p.pa - r.start) == p.pa and "w" in r.perms:
                    bad.append(f"container {c.id} ({c.owner_comm or 'root'}): {p.what} at {p.pa:#x} is {r.perms}")
        return bad

    def handler_pages(self, rule) -> list[str]:
        """No page the handler relies on outside its pool is writable in a chosen container."""
        problems: list[str] = []
        pages, notes = trust.handler_pages(self.splitkernel(), self.kernel, rule.get("pages", HANDLER_DEFAULT),
                                           problems)
        missing = set(rule.get("pages", HANDLER_DEFAULT)) - {p.group for p in pages}
        if missing:
            raise Uncheckable("; ".join(notes + problems) or f"no {', '.join(sorted(missing))} pages found")
        return self._writable(rule, pages) + [f"not checked: {p}" for p in problems]

    def module_text(self, rule) -> list[str]:
        """No loaded module's text or rodata is writable in a chosen container."""
        if self.kernel is None:
            raise PolicyError("the module-text rule needs kernel symbols (--vmlinux), to list the modules")
        problems: list[str] = []
        names = rule.get("modules")
        pages = trust.module_pages(self.kernel, problems, names=set(names) if names else None)
        found = {p.what.split()[0] for p in pages}
        lost = [n for n in names or () if n not in found]
        return (self._writable(rule, pages) + [f"module {n} is not loaded" for n in lost]
                + [f"not checked: {p}" for p in problems])

    def cpu_containers(self, rule) -> list[str]:
        """Every CPU whose CR3 is an address space a container lists runs in that container (as
        the handler left it at its last exit): a contained CR3 in another container, or in root
        where the kernel is writable, is a way out."""
        if not self.snap.cpu_state:
            raise Uncheckable("the module records no CPU state (ABI before 6)")
        return [f"CPU {c.cpu} runs {'root (container 0)' if not c.container else f'container {c.container}'} with CR3 "
                f"{c.cr3:#x}, an address space of container {c.cr3_listed_in}"
                for c in self.snap.cpu_state if c.cr3_listed_in and c.container != c.cr3_listed_in]

    def contained_tasks(self, rule) -> list[str]:
        """Every process whose nearest contained ancestor (through real_parent) is in container N
        runs in container N: a fork that escaped shows here. Kernel threads and zombies (no
        address space) are left out."""
        if self.snap.processes is None:
            raise PolicyError("the contained-tasks rule needs kernel symbols (--vmlinux), to list the processes")
        by_tgid = {p.tgid: p for p in self.snap.processes}
        bad = []
        for p in self.snap.processes:
            if not p.pgd:
                continue
            seen, up = {p.tgid}, by_tgid.get(p.ppid)
            while up is not None and up.tgid not in seen and not (up.container and up.pgd):
                seen.add(up.tgid)
                up = by_tgid.get(up.ppid)
            if up is None or up.tgid in seen or up.container == p.container:
                continue
            bad.append(f"process {p.tgid} ({p.comm}) runs in {f'container {p.container}' if p.container else 'root'}, "
                       f"but its ancestor {up.tgid} ({up.comm}) is in container {up.container}")
        return bad

    # Which containers a rule looks at (None: it does not choose): when it is none at all, the rule
    # holds vacuously, and is reported so, not as holding.
    SELECTS = {"permissions": "non-root", "no-aliases": "non-root", "violations": "all", "address-spaces": "all",
               "handler-pages": "non-root", "module-text": "non-root", "contained-tasks": "non-root",
               "cpu-containers": "non-root"}

    def selected(self, rule) -> list | None:
        default = self.SELECTS.get(rule["kind"])
        if default is None:
            return None
        return self.containers({"containers": rule.get("containers", default) if rule["kind"] != "no-aliases"
                                else default})

    def run(self, rules) -> list[dict]:
        results = []
        for r in rules:
            name = r.get("name", r["kind"])
            sel = self.selected(r)
            if sel is not None and not sel:
                # Nothing to check. A rule that names its containers expected them to be there: it
                # fails. A rule over whatever non-root containers exist holds vacuously when there
                # are none, and says so (VACUOUS, never a plain PASS).
                named = isinstance(r.get("containers"), list) and r["kind"] != "no-aliases"
                results.append({"name": name, "kind": r["kind"], "ok": not named, "vacuous": True, "problems": [
                    f"no container is selected (containers = {r.get('containers', self.SELECTS[r['kind']])!r}): "
                    f"{'the containers it names are not there' if named else 'nothing to check, it holds vacuously'}"]})
                continue
            fn = getattr(self, r["kind"].replace("-", "_"))
            try:
                problems = fn(r)
            except PolicyError:
                raise
            except SplitdbgError as exc:     # corrupt memory under this rule: it fails, the rest is checked
                problems = [f"cannot be checked: {exc}"]
            results.append({"name": name, "kind": r["kind"], "ok": not problems, "vacuous": False,
                             "problems": problems})
        return results


