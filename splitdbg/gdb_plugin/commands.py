"""The `split` prefix command and its subcommands (one class each), rendering snapshots."""
from __future__ import annotations

import argparse
import json
import shlex
from dataclasses import asdict

import gdb

from ..arch import x86_paging as xp
from ..cli import render
from ..policy import Checker, load_policy
from ..dbg.inprocess import GdbInProcess
from ..errors import SplitdbgError
from ..target import snapshot as snap
from ..vmx_model import vmcb
from . import session


class Split(gdb.Command):
    """Inspect a split kernel's containers and the guest's page tables.

split status                 module, CPUs, counters, memory backend
split ps                     processes with mode (R/NR), container, protected pages, violations
split ept [ID|--pid P]       a container's nested table as merged ranges (* = differs from root)
split walk PID GVA           the two-dimensional walk through the model
split events                 the event rings, decoded and cross-checked
split vmcb CPU               a CPU's VMCB, decoded
split check POLICY.toml      check a policy;  split snapshot FILE: save everything as JSON
split pagetable [CR3]        a guest address space's merged ranges
Every command takes --json. `set split-backend auto|shared-ram-file|gdbstub` picks the memory backend.
Guest memory that cannot be right (a corrupt ring header, a looping task list) is a
`splitdbg: problem: ...` line on stderr before the output, which shows the rest."""

    def __init__(self):
        super().__init__("split", gdb.COMMAND_DATA, gdb.COMPLETE_COMMAND, prefix=True)


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse would print and exit: in gdb, an error is a GdbError
        raise gdb.GdbError(f"{self.prog}: {message}\n{self.format_usage().strip()}")


class _Command(gdb.Command):
    """Base: parses arguments with argparse, turns our errors into gdb errors."""

    name = ""
    complete = gdb.COMPLETE_NONE

    def __init__(self):
        super().__init__(f"split {self.name}", gdb.COMMAND_DATA, self.complete)
        self.parser = _Parser(prog=f"split {self.name}", add_help=False)
        self.parser.add_argument("--json", action="store_true")
        self.arguments(self.parser)

    def arguments(self, parser):
        pass

    def invoke(self, arg, from_tty):
        args = self.parser.parse_args(shlex.split(arg))
        try:
            self.run(args)
        except SplitdbgError as exc:
            raise gdb.GdbError(str(exc))

    def take(self, **kw) -> snap.Snapshot:
        mem = session.memory()
        return snap.take(mem, target="gdb", backend=mem.describe(), kernel=session.kernel(), **kw)

    def snapshot(self, say: bool = True, **kw) -> snap.Snapshot:
        """A snapshot, its problems said first (as the CLI says them: one line each, on stderr,
        so that --json output stays JSON); `say=False` where the output itself lists them."""
        s = self.take(**kw)
        if say:
            say_problems(s.problems)
        return s


def say_problems(problems: list[str]) -> None:
    """What could not be read (corrupt guest memory), one `splitdbg: problem: ...` line each."""
    for line in render.problem_lines(problems):
        gdb.write(line + "\n", gdb.STDERR)


def _paging_state():
    regs = GdbInProcess().read_registers(("cr0", "cr3", "cr4", "efer"))
    return regs["cr3"], xp.PagingMode.from_regs(regs["cr0"], regs["cr4"], regs["efer"])


class Status(_Command):
    """Module present and version, CPUs in root mode, global counters, memory backend.
Usage: split status [--json]"""

    name = "status"

    def run(self, args):
        # The text lists the problems itself (render.status), as `splitdbg status` does; --json says them.
        s = self.snapshot(say=args.json, with_ranges=False, crosscheck=False)
        cr3, mode = _paging_state()
        if args.json:
            gdb.write(json.dumps({"backend": session.memory().name, "backend_detail": s.backend, "cr3": cr3,
                                  "paging_levels": mode.levels, "nxe": mode.nxe, "module": s.module,
                                  "cpus": s.cpus, "containers": len(s.containers), "problems": s.problems}) + "\n")
            return
        gdb.write(render.status(s) + "\n")
        gdb.write(f"this vCPU      : {mode.levels}-level paging, EFER.NXE={int(mode.nxe)}, CR3={cr3:#x}\n")


class Ps(_Command):
    """Processes with pid, comm, mode (R or NR), container, protected pages, violations.
Usage: split ps [--json]"""

    name = "ps"

    def run(self, args):
        s = self.snapshot(with_ranges=False, crosscheck=False)
        if args.json:
            gdb.write(json.dumps([dict(asdict(p), mode=p.mode) for p in s.processes or []]) + "\n")
        else:
            gdb.write(render.ps(s) + "\n")


class Tasks(_Command):
    """Task states, last CPU and wait channel (as /proc/PID/stat and wchan say them); with --stacks,
each task's kernel stack, symbolized (guessed frames, as the kernel's unwinder guesses them).
Usage: split tasks [--stacks] [--pid N]... [--json]"""

    name = "tasks"

    def arguments(self, parser):
        parser.add_argument("--stacks", action="store_true")
        parser.add_argument("--pid", type=int, action="append")

    def run(self, args):
        from ..target.tasks import task_states

        from ..target.splitkernel import ModuleNotLoaded, ModuleUnusable, SplitKernel

        kernel = session.kernel()
        if kernel is None:
            raise SplitdbgError("split tasks needs the kernel's symbols (vmlinux)")
        problems: list[str] = []
        try:
            sk = SplitKernel(session.memory())
        except ModuleNotLoaded:
            sk = None
        except ModuleUnusable as exc:      # as `splitdbg tasks`: the tasks listed, their containers unknown
            sk = None
            problems.append(f"{exc}: containers not shown")
        states = task_states(kernel, stacks=args.stacks, pids=set(args.pid) if args.pid else None, sk=sk,
                             problems=problems)
        say_problems(problems)
        gdb.write((json.dumps([asdict(t) for t in states]) if args.json else
                   render.tasks(states, stacks=args.stacks)) + "\n")


class Ept(_Command):
    """A container's nested page table (NPT/EPT) as merged ranges.
Ranges that differ from the root container are marked with *.
Usage: split ept [ID | --pid PID | --root] [--filter r,w,x,-w,protected,isolated,differs] [--range A-B] [--json]"""

    name = "ept"

    def arguments(self, parser):
        parser.add_argument("container", nargs="?", type=int, default=0)
        parser.add_argument("--pid", type=int)
        parser.add_argument("--root", action="store_true")
        parser.add_argument("--filter", default="")
        parser.add_argument("--range", dest="window")

    def run(self, args):
        window = render.parse_range(args.window, "--range") if args.window is not None else None
        flt = render.parse_filter(args.filter)           # before the target is read
        s = self.snapshot(crosscheck=False)
        cid = 0 if args.root else args.container
        if args.pid is not None:
            match = [p for p in s.processes or [] if p.pid == args.pid]
            if not match:
                raise SplitdbgError(f"no process {args.pid} (or no kernel symbols)")
            cid = match[0].container
        c = s.container(cid)
        if c is None:
            raise SplitdbgError(f"no container {cid}")
        if args.json:
            gdb.write(json.dumps({"container": cid, "slat": s.slat, "ranges": [
                asdict(r) for r in c.ranges if (not window or (r.end > window[0] and r.start < window[1]))
                and (not flt or render._match(r, flt))]}) + "\n")
        else:
            gdb.write(render.ept(s, cid, flt, window) + "\n")


class Events(_Command):
    """The module's per-CPU event rings, decoded; each violation cross-checked with the model.
Usage: split events [--pid N] [--kind K] [--last N] [--follow [--for SECONDS]] [--json]
--follow prints new events as they arrive (run the guest with `continue &`; Ctrl-C stops)."""

    name = "events"

    def arguments(self, parser):
        parser.add_argument("--pid", type=int)
        parser.add_argument("--kind")
        parser.add_argument("--last", type=int)
        parser.add_argument("--follow", action="store_true")
        parser.add_argument("--for", dest="seconds", type=float)

    def follow(self, args):
        from ..target.following import loss_text
        from ..target.splitkernel import SplitKernel, follow

        sk = SplitKernel(session.memory())
        if not args.json:
            gdb.write(render.events_header(sk.slat_name) + "\n")

        def lost(cpu: int, ring: int, n: int) -> None:     # as `splitdbg events --follow` says it
            gdb.write(f"splitdbg: {loss_text(cpu, ring, n)}: overwritten before they were read\n", gdb.STDERR)

        try:
            for e, check in follow(sk, args.seconds, args.pid, args.kind, on_loss=lost):
                gdb.write((json.dumps(dict(e.as_dict(), check=check)) if args.json else render.event_line(
                    e.cpu, e.seq, e.container, e.pid, e.kind_name, e.action_name, e.region_name,
                    e.exitinfo1, e.exitinfo2, e.rip, check, sk.delivery(e))) + "\n")
                gdb.flush()
        except KeyboardInterrupt:
            pass

    def run(self, args):
        if args.follow:
            return self.follow(args)
        s = self.snapshot(with_ranges=False)
        if args.json:
            evs = [asdict(e) for e in s.events if (args.pid is None or e.pid == args.pid)
                   and (args.kind is None or e.kind == args.kind)]
            gdb.write(json.dumps(evs[-args.last:] if args.last else evs) + "\n")
        else:
            gdb.write(render.events(s, args.pid, args.kind, args.last) + "\n")


class Vmcb(_Command):
    """The decoded VMCB of a CPU (control area and state-save area, APM names).
Usage: split vmcb CPU [--json]"""

    name = "vmcb"

    def arguments(self, parser):
        parser.add_argument("cpu", type=int)

    def run(self, args):
        from ..target.splitkernel import SplitKernel

        sk = SplitKernel(session.memory())
        if args.cpu not in sk.cpus:
            raise SplitdbgError(f"CPU {args.cpu} is not under the root-mode handler (CPUs: {sk.cpus})")
        if sk.arch != "svm":
            raise SplitdbgError("the module runs the VMX backend: a VMCS's in-memory layout is the CPU's own "
                                "(not architectural), so it cannot be decoded; `split status` shows the guest "
                                "registers the handler recorded")
        d = vmcb.decode(sk.mem.read(sk.vmcb_pa(args.cpu), 4096))
        if args.json:
            gdb.write(json.dumps(d) + "\n")
            return
        c, sv = d["control"], d["save"]
        gdb.write(f"VMCB of CPU {args.cpu} at {sk.vmcb_pa(args.cpu):#x}\n")
        gdb.write(f"  last exit      {c['decoded']['exit']} ({c['exit_code']:#x})  EXITINFO1 {c['exit_info_1']:#x}"
                  f"  EXITINFO2 {c['exit_info_2']:#x}\n")
        gdb.write(f"  nested paging  {c['decoded']['np_enable']}  nCR3 {c['nested_cr3']:#x}  ASID {c['asid']}\n")
        gdb.write(f"  intercepts     CR writes {c['decoded']['cr_write_intercepts']}  {' '.join(c['decoded']['intercepts'])}\n")
        gdb.write(f"  guest          RIP {sv['rip']:#x}  RSP {sv['rsp']:#x}  CR3 {sv['cr3']:#x}  CR0 {sv['cr0']:#x}"
                  f"  CR4 {sv['cr4']:#x}  EFER {sv['efer']:#x}  CPL {sv['cpl']}\n")


class Walk(_Command):
    """The two-dimensional walk of a process's virtual address, through the model.
Guest tables, each entry read through the container's nested table, then the final access.
Usage: split walk PID GVA [--access read|write|fetch] [--json]"""

    name = "walk"

    def arguments(self, parser):
        parser.add_argument("pid", type=int)
        parser.add_argument("gva", type=lambda v: int(v, 16))
        parser.add_argument("--access", choices=["read", "write", "fetch"], default="read")

    def run(self, args):
        from ..target.walk import walk_process

        w = walk_process(session.memory(), session.kernel(), args.pid, args.gva, args.access)
        gdb.write((json.dumps(w) if args.json else render.walk(w)) + "\n")


class Check(_Command):
    """Check a policy file (TOML, see docs/policies.md) against the target.
Usage: split check POLICY.toml [--json]"""

    name = "check"
    complete = gdb.COMPLETE_FILENAME

    def arguments(self, parser):
        parser.add_argument("policy")

    def run(self, args):
        rules = load_policy(args.policy)
        s = self.snapshot(crosscheck=False)

        from ..target.splitkernel import SplitKernel

        mem = session.memory()
        results = Checker(s, mem=mem, kernel=session.kernel(), splitkernel=lambda: SplitKernel(mem)).run(rules)
        if args.json:
            gdb.write(json.dumps(results) + "\n")
            return
        for r in results:
            gdb.write(f"{'VACUOUS' if r.get('vacuous') else 'PASS' if r['ok'] else 'FAIL'}  {r['name']}\n")
            for p in r["problems"][:10]:
                gdb.write(f"      {p}\n")


class Snap(_Command):
    """Save a snapshot of every container, process and event as JSON (for splitdbg diff).
Usage: split snapshot FILE [--force]
An existing FILE is replaced only when it is an older snapshot (--force: whatever it is).
The file is written whole or not at all: a full disk leaves the old one as it was."""

    name = "snapshot"
    complete = gdb.COMPLETE_FILENAME

    def arguments(self, parser):
        parser.add_argument("file")
        parser.add_argument("--force", action="store_true")

    def run(self, args):
        from ..fileio import atomic_write, check_writable, is_snapshot

        check_writable(args.file, force=args.force, ours=is_snapshot)     # before the target is read
        s = self.snapshot()
        atomic_write(args.file, s.to_json(), force=args.force, ours=is_snapshot)
        gdb.write(f"snapshot written to {args.file}" + (f" ({len(s.problems)} problems in it)" if s.problems else "")
                  + "\n")


class PageTable(_Command):
    """Merged ranges of an address space: start-end -> physical, permissions, page size.
Usage: split pagetable [CR3] [--range START-END] [--json]
Without CR3, the current vCPU's. Ranges merge when virtually and physically contiguous with equal attributes."""

    name = "pagetable"

    def arguments(self, parser):
        parser.add_argument("cr3", nargs="?", type=lambda s: int(s, 0))
        parser.add_argument("--range", dest="window")

    def run(self, args):
        cur_cr3, mode = _paging_state()
        cr3 = cur_cr3 if args.cr3 is None else args.cr3
        start = end = None
        if args.window is not None:
            start, end = render.parse_range(args.window, "--range")
        d = xp.dump(session.memory(), cr3, mode, start=start, end=end, on_error="collect")
        gdb.write((json.dumps(render.pagetable_json(d, cr3)) if args.json else render.pagetable(d, cr3, mode)) + "\n")


Split()
for _cls in (Status, Ps, Tasks, Ept, Events, Vmcb, Walk, Check, Snap, PageTable):
    _cls()


class Symbols(_Command):
    """Load the symbols of the guest's modules at their real section addresses.
Usage: split symbols [DIR]   (DIR holds NAME.ko files; default: the lab's build/guest-root tree)
Section addresses come from the kernel's own module list in guest memory."""

    name = "symbols"
    complete = gdb.COMPLETE_FILENAME

    def arguments(self, parser):
        parser.add_argument("dir", nargs="?")

    def run(self, args):
        from pathlib import Path

        from ..lab import REPO

        k = session.kernel()
        if k is None:
            raise SplitdbgError("load vmlinux first (file vmlinux): the module list is read through its symbols")
        where = Path(args.dir) if args.dir else REPO / "build" / "guest-root" / "lib" / "modules" / "splitdbg"
        loaded = []
        for mod in k.modules():
            ko = where / f"{mod.name}.ko"
            if not ko.exists():
                gdb.write(f"{mod.name}: no {ko}; skipped\n")
                continue
            sections = k.module_sections(mod)
            text = sections.pop(".text", mod.base)
            extra = " ".join(f"-s {name} {addr:#x}" for name, addr in sections.items()
                             if name.startswith((".data", ".bss", ".rodata")))
            gdb.execute(f"add-symbol-file {ko} {text:#x} {extra}", to_string=True)
            loaded.append(f"{mod.name} (.text {text:#x})")
        gdb.write(("loaded symbols of " + ", ".join(loaded) if loaded else "no module symbols loaded") + "\n")


Symbols()
