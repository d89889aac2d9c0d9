"""`splitdbg status|ps|tasks|ept|events|snapshot|diff|walk TARGET`: read-only views of a target, and
`splitdbg dump TARGET OUT.raw`, which makes a memory image of it.

TARGET is :PORT or HOST:PORT (QEMU's gdbstub; the shared RAM file is used when QEMU has one),
or a memory image (docs/images.md) / snapshot file where the command allows it."""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict

from ..errors import SplitdbgError, TargetGone
from ..target.session import Session
from ..target.snapshot import Snapshot
from . import render


def _target(p) -> None:
    p.add_argument("target", help=":PORT, HOST:PORT or a memory image")
    p.add_argument("--vmlinux", help="kernel with symbols (default: the lab build, when there is one)")
    p.add_argument("--backend", choices=["auto", "shared-ram-file", "gdbstub"], default="auto")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--scan", action="store_true",
                   help="through the gdbstub without kernel symbols: scan all RAM for the module's descriptor "
                        "(minutes: a few MiB/s)")


def register(sub) -> None:
    for name, func, help_ in [("status", cmd_status, "module, CPUs, counters, memory backend"),
                              ("ps", cmd_ps, "processes with their mode (R/NR) and container"),
                              ("containers", cmd_containers, "containers with counters and policies"),
                              ("snapshot", cmd_snapshot, "everything, as JSON, to a file")]:
        p = sub.add_parser(name, help=help_)
        _target(p)
        if name == "snapshot":
            p.add_argument("-o", "--output", required=True)
            p.add_argument("--force", action="store_true",
                           help="replace OUTPUT even when it is not a snapshot (an image, its sidecar, any file)")
        p.set_defaults(func=func)
    p = sub.add_parser("tasks", help="task states, CPUs and wait channels (as /proc says them); --stacks for "
                                     "the kernel stacks")
    _target(p)
    p.add_argument("--stacks", action="store_true", help="each task's kernel stack, symbolized (guessed frames)")
    p.add_argument("--pid", type=int, action="append", help="only this process (repeatable)")
    p.set_defaults(func=cmd_tasks)
    p = sub.add_parser("ept", help="a container's nested page table (NPT/EPT) as merged ranges")
    _target(p)
    p.add_argument("container", nargs="?", type=int, default=0, help="container id (0 = root)")
    p.add_argument("--pid", type=int, help="the container of this process instead")
    p.add_argument("--filter", default="", help="comma list of r,w,x,u,-r,-w,-x,-u,protected,isolated,differs "
                                                 "and START-END (hex); an unknown word is an error")
    p.add_argument("--range", dest="window", help="START-END guest-physical, hex, end exclusive (START < END)")
    p.set_defaults(func=cmd_ept)
    p = sub.add_parser("events", help="the module's event rings, decoded and cross-checked")
    _target(p)
    p.add_argument("--pid", type=int)
    p.add_argument("--kind", choices=["exit", "violation", "cr3-switch", "hypercall", "enter-nr", "cr4-blocked",
                                      "lifecycle", "attack", "fatal"])
    p.add_argument("--last", type=int)
    p.add_argument("--follow", action="store_true", help="keep printing new events (Ctrl-C stops)")
    p.add_argument("--for", dest="seconds", type=float, help="with --follow: stop after this many seconds")
    p.set_defaults(func=cmd_events)
    p = sub.add_parser("dump", help="stop a live QEMU guest, copy its RAM to an image (and sidecar), continue it")
    p.add_argument("target", help=":PORT or HOST:PORT")
    p.add_argument("output", help="the image (raw); the sidecar goes next to it (x.raw -> x.json)")
    p.add_argument("--vmlinux", help="kernel to name in the sidecar (default: the lab build, when there is one)")
    p.add_argument("--backend", choices=["auto", "shared-ram-file", "gdbstub"], default="auto",
                   help="where the RAM is copied from (auto: the shared RAM file when readable here)")
    p.add_argument("--force", action="store_true", help="replace an existing image, sidecar or serial log")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_dump)
    p = sub.add_parser("diff", help="compare two snapshot files: ranges added, removed, changed")
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_diff)
    p = sub.add_parser("pagetable", help="a guest address space's merged ranges (the current vCPU's, a --pid's "
                                         "or a --cr3's)")
    _target(p)
    who = p.add_mutually_exclusive_group()
    who.add_argument("--cr3", type=_address, help="the address space under this CR3 (hex or decimal)")
    who.add_argument("--pid", type=int, help="the address space of this process (needs kernel symbols)")
    p.add_argument("--range", dest="window", help="only START-END (guest-virtual, end exclusive)")
    p.set_defaults(func=cmd_pagetable)
    p = sub.add_parser("walk", help="two-dimensional walk of a process's address through the model")
    _target(p)
    p.add_argument("pid", type=int)
    p.add_argument("gva", type=lambda s: int(s, 16))
    p.add_argument("--access", choices=["read", "write", "fetch"], default="read")
    p.set_defaults(func=cmd_walk)


def _snapshot(args, need_module: bool = True, state: list | None = None, **kw) -> Snapshot:
    with Session(args.target, vmlinux=args.vmlinux, prefer=args.backend, scan=getattr(args, "scan", False)) as s:
        snap = s.snapshot(**kw)
        if state is not None:
            state.append(s.run_state())     # as QEMU says it, after gdb let go
    if need_module and snap.module_unusable:
        raise SplitdbgError(snap.problems[0] if snap.problems else snap.notes[0])
    if need_module and snap.module is None:
        raise SplitdbgError("the split-kernel module is not loaded: " + "; ".join(snap.notes))
    return snap


def say_problems(problems: list[str], limit: int = 20) -> None:
    """What could not be read (corrupt memory), one line each on stderr: the output above is the
    rest, read as far as it could be."""
    for line in render.problem_lines(problems, limit):
        print(line, file=sys.stderr)


def cmd_status(args):
    state: list = []
    s = _snapshot(args, need_module=False, state=state, with_ranges=False, crosscheck=False)
    why = s.notes[0] if s.module is None and s.notes else ""
    module_state = "loaded" if s.module else "unusable" if s.module_unusable else \
        "unknown" if why.startswith("module state unknown") else "not loaded"
    print(json.dumps({"target": s.target, "backend": s.backend, "guest": state[0], "module_state": module_state,
                      "module": s.module, "cpus": s.cpus, "cpu_state": [asdict(c) for c in s.cpu_state],
                      "containers": len(s.containers), "notes": s.notes,
                      "problems": s.problems})
          if args.json else render.status(s, state[0]))
    if args.json:
        say_problems(s.problems)
    return 2 if s.module_unusable else 0


def cmd_ps(args):
    s = _snapshot(args, need_module=False, with_ranges=False, crosscheck=False)
    if args.json:
        print(json.dumps([dict(asdict(p), mode=p.mode) for p in s.processes or []]))
    else:
        print(render.ps(s))
    say_problems(s.problems)
    unusable = [n for n in s.notes if n.startswith("kernel symbols unusable")]
    if s.processes is None and unusable:
        # Symbols given but the kernel could not be read: no list at all, which is not an empty one.
        raise SplitdbgError(f"no processes: {unusable[0]}")


def cmd_tasks(args) -> int:
    from ..target.splitkernel import ModuleNotLoaded, ModuleUnusable
    from ..target.tasks import task_states

    with Session(args.target, vmlinux=args.vmlinux, prefer=args.backend, scan=args.scan) as sess:
        if sess.kernel is None:
            raise SplitdbgError(f"tasks need the kernel's symbols: {sess.kernel_error or 'give --vmlinux'}")
        problems: list[str] = []
        try:
            sk = sess.splitkernel()
        except ModuleNotLoaded:
            sk = None                  # every task in root mode
        except ModuleUnusable as exc:
            sk = None                  # the tasks are still the kernel's: listed, their containers unknown
            problems.append(f"{exc}: containers not shown")
        states = task_states(sess.kernel, stacks=args.stacks, pids=set(args.pid) if args.pid else None, sk=sk,
                             problems=problems)
    print(json.dumps([asdict(t) for t in states]) if args.json else render.tasks(states, stacks=args.stacks))
    say_problems(problems)
    return 0


def cmd_containers(args):
    s = _snapshot(args, with_ranges=False, crosscheck=False)
    print(json.dumps([asdict(c) for c in s.containers]) if args.json else render.containers(s))
    say_problems(s.problems)


def cmd_ept(args):
    # Checked before the target is read: a bad --range or --filter word is an error, not an empty
    # (or a complete) listing.
    window = render.parse_range(args.window, "--range") if args.window is not None else None
    flt = render.parse_filter(args.filter)
    s = _snapshot(args, crosscheck=False)
    cid = args.container
    if args.pid is not None:
        if s.processes is None:
            raise SplitdbgError("--pid needs kernel symbols (--vmlinux)")
        match = [p for p in s.processes if p.pid == args.pid]
        if not match:
            raise SplitdbgError(f"no process {args.pid}")
        cid = match[0].container
    c = s.container(cid)
    if c is None:
        why = next((p for p in s.problems if p.startswith(f"container slot {cid} ")), None)
        raise SplitdbgError(f"no container {cid}" + (f": {why}" if why else ""))
    if args.json:
        print(json.dumps({"container": cid, "slat": s.slat, "slat_root": c.slat_root,
                          "ranges": [asdict(r) for r in c.ranges if (not window or (r.end > window[0] and r.start < window[1]))
                                     and (not flt or render._match(r, flt))]}))
    else:
        print(render.ept(s, cid, flt, window))
    say_problems(s.problems)


def cmd_events(args):
    if args.follow:
        return follow_events(args)
    s = _snapshot(args, with_ranges=False)
    evs = [e for e in s.events if (args.pid is None or e.pid == args.pid) and (args.kind is None or e.kind == args.kind)]
    if args.last:
        evs = evs[-args.last:]
    print(json.dumps([asdict(e) for e in evs]) if args.json else render.events(s, args.pid, args.kind, args.last))
    say_problems(s.problems)


def cmd_snapshot(args):
    from ..fileio import atomic_write, check_writable, is_snapshot

    # Refused before the target is read: a snapshot replaces only an older snapshot (--force: anything).
    if not args.force and os.path.exists(args.output) and os.path.exists(args.target) \
            and os.path.samefile(args.output, args.target):
        raise SplitdbgError(f"{args.output} is the target being read: write the snapshot elsewhere (--force replaces it)")
    check_writable(args.output, force=args.force, ours=is_snapshot, thing="snapshot")
    s = _snapshot(args)
    atomic_write(args.output, s.to_json(), force=args.force, ours=is_snapshot)
    print(f"snapshot of {len(s.containers)} containers, {len(s.processes or [])} processes, {len(s.events)} events "
          f"written to {args.output}" + (f" ({len(s.problems)} problems in it)" if s.problems else ""))
    say_problems(s.problems)


def diff(a: Snapshot, b: Snapshot) -> list[dict]:
    """Per container (matched by id and owner), ranges added, removed and changed in permission."""
    out = []
    bc = {(c.id, c.owner_pid): c for c in b.containers}
    ac = {(c.id, c.owner_pid): c for c in a.containers}
    for key in sorted(set(ac) | set(bc)):
        ca, cb = ac.get(key), bc.get(key)
        ra = {(r.start, r.end): r for r in (ca.ranges if ca else [])}
        rb = {(r.start, r.end): r for r in (cb.ranges if cb else [])}
        added = [asdict(rb[k]) for k in sorted(set(rb) - set(ra))]
        removed = [asdict(ra[k]) for k in sorted(set(ra) - set(rb))]
        changed = [{"start": k[0], "end": k[1], "before": ra[k].perms + f"@{ra[k].hpa:#x}",
                    "after": rb[k].perms + f"@{rb[k].hpa:#x}"}
                   for k in sorted(set(ra) & set(rb)) if (ra[k].perms, ra[k].hpa) != (rb[k].perms, rb[k].hpa)]
        if added or removed or changed or not ca or not cb:
            out.append({"container": key[0], "owner_pid": key[1], "state": "added" if not ca else
                        "removed" if not cb else "changed", "added": added, "removed": removed, "changed": changed})
    return out


def load_snapshot(path: str) -> Snapshot:
    """A snapshot file as `splitdbg snapshot` writes it; anything else is a one-line SplitdbgError
    naming the file and what is wrong (not JSON, a list, a memory image's sidecar, a missing key,
    a field of the wrong type), never a traceback."""
    from dataclasses import MISSING, fields

    from ..target.snapshot import FORMAT, ContainerRec, RangeRec

    try:
        with open(path, "rb") as f:
            text = f.read().decode()
    except UnicodeDecodeError:
        raise SplitdbgError(f"{path}: not a snapshot (binary: a memory image? `splitdbg snapshot IMAGE -o FILE` "
                            f"makes one of it)") from None
    except OSError as exc:
        raise SplitdbgError(f"cannot read {path}: {exc.strerror}") from exc
    try:
        d = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SplitdbgError(f"{path}: not valid JSON: {exc}") from None
    except RecursionError:
        raise SplitdbgError(f"{path}: not a splitdbg snapshot (JSON nested too deeply to read)") from None
    if not isinstance(d, dict):
        raise SplitdbgError(f"{path}: a JSON {type(d).__name__}, not a splitdbg snapshot (an object with "
                            f"format {FORMAT!r})")
    if d.get("format") != FORMAT:
        fmt = d.get("format")
        hint = ": a memory image's sidecar (give the image to `splitdbg snapshot`)" if fmt == "splitdbg-image" else ""
        raise SplitdbgError(f"{path}: not a splitdbg snapshot (format {str(fmt)[:60]!r}, expected {FORMAT!r}){hint}")

    def required(cls):
        return [f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING]

    def need(obj, cls, where):
        if not isinstance(obj, dict):
            raise SplitdbgError(f"{path}: {where} must be an object, not {type(obj).__name__}")
        missing = [k for k in required(cls) if k not in obj]
        if missing:
            raise SplitdbgError(f"{path}: {where} is missing {', '.join(missing)}: not a complete snapshot")

    need(d, Snapshot, "the snapshot")
    for key in ("containers", "events"):
        if not isinstance(d[key], list):
            raise SplitdbgError(f"{path}: {key} must be a list, not {type(d[key]).__name__}")
    for i, c in enumerate(d["containers"]):
        need(c, ContainerRec, f"containers[{i}]")
        if not isinstance(c.get("ranges", []), list):
            raise SplitdbgError(f"{path}: containers[{i}].ranges must be a list")
        for k in ("id", "owner_pid"):
            if not isinstance(c[k], int) or isinstance(c[k], bool):
                raise SplitdbgError(f"{path}: containers[{i}].{k} must be an integer, not {c[k]!r:.60}")
        for j, r in enumerate(c.get("ranges", [])):
            need(r, RangeRec, f"containers[{i}].ranges[{j}]")
            for k in ("start", "end", "hpa", "page_size"):
                if not isinstance(r[k], int) or isinstance(r[k], bool):
                    raise SplitdbgError(f"{path}: containers[{i}].ranges[{j}].{k} must be an integer, not {r[k]!r:.60}")
            if not isinstance(r["perms"], str):
                raise SplitdbgError(f"{path}: containers[{i}].ranges[{j}].perms must be a string")
    if d["processes"] is not None and not isinstance(d["processes"], list):
        raise SplitdbgError(f"{path}: processes must be a list or null")
    try:
        return Snapshot.from_json(text)
    except (TypeError, KeyError, AttributeError, ValueError) as exc:   # a field no check above names
        raise SplitdbgError(f"{path}: malformed snapshot: {type(exc).__name__}: {' '.join(str(exc).split())[:200]}") from None


def cmd_diff(args):
    a, b = (load_snapshot(p) for p in (args.a, args.b))
    d = diff(a, b)
    if args.json:
        print(json.dumps(d))
        return 1 if d else 0
    if not d:
        print("no differences")
    for c in d:
        print(f"container {c['container']} (owner {c['owner_pid']}): {c['state']}")
        for r in c["added"]:
            print(f"  + {r['start']:#x}-{r['end']:#x} -> {r['hpa']:#x} {r['perms']}")
        for r in c["removed"]:
            print(f"  - {r['start']:#x}-{r['end']:#x} -> {r['hpa']:#x} {r['perms']}")
        for r in c["changed"]:
            print(f"  ~ {r['start']:#x}-{r['end']:#x} {r['before']} -> {r['after']}")
    return 1 if d else 0


def _address(text: str) -> int:
    try:
        v = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an address (hex 0x... or decimal)") from None
    if not 0 <= v < 1 << 64:
        raise argparse.ArgumentTypeError(f"{text!r} is not a 64-bit address")
    return v


def cmd_pagetable(args) -> int:
    from ..arch import x86_paging as xp

    window = render.parse_range(args.window, "--range") if args.window is not None else None
    with Session(args.target, vmlinux=args.vmlinux, prefer=args.backend, scan=args.scan) as sess:
        regs = sess.guest_control_regs() if args.cr3 is None or sess.kernel is None else {}
        mode = sess.kernel.mode if sess.kernel is not None else \
            xp.PagingMode.from_regs(regs["cr0"], regs["cr4"], regs["efer"])
        if args.pid is not None:
            if sess.kernel is None:
                raise SplitdbgError(f"--pid needs the kernel's symbols: {sess.kernel_error or 'give --vmlinux'}")
            task = next((t for t in sess.kernel.tasks() if t.pid == args.pid), None)
            if task is None or not task.pgd:
                raise SplitdbgError(f"no process {args.pid}" if task is None else
                                    f"process {args.pid} ({task.comm}) is a kernel thread: no address space of its own")
            cr3 = task.pgd
        else:
            cr3 = args.cr3 if args.cr3 is not None else regs["cr3"]
        start, end = window if window else (None, None)
        d = xp.dump(sess.mem, cr3, mode, start=start, end=end, on_error="collect")
    print(json.dumps(render.pagetable_json(d, cr3)) if args.json else render.pagetable(d, cr3, mode))
    return 0


def cmd_walk(args):
    from ..target.walk import walk_process

    with Session(args.target, vmlinux=args.vmlinux, prefer=args.backend, scan=args.scan) as sess:
        w = walk_process(sess.mem, sess.kernel, args.pid, args.gva, args.access)
    if args.json:
        print(json.dumps(w))
        return 0
    print(render.walk(w))
    return 0


def cmd_dump(args) -> int:
    from ..target.dump import dump
    from ..target.session import default_vmlinux

    vmlinux = os.path.abspath(args.vmlinux) if args.vmlinux else default_vmlinux()
    serial = None
    try:                          # a lab guest's console log goes into the image's record too
        from ..lab import Guest

        serial = Guest.find(int(args.target.rpartition(":")[2])).serial_log
    except (SplitdbgError, ValueError):
        pass
    r = dump(args.target, args.output, vmlinux=vmlinux, serial_log=serial, prefer=args.backend, force=args.force)
    if args.json:
        print(json.dumps(r))
    else:
        print(f"{r['bytes'] >> 20} MiB of guest RAM and {r['cpus']} vCPUs' registers written to {r['image']} "
              f"(sidecar {r['sidecar']}) in {r['seconds']:.2f} s: copy {r['copy_seconds']:.2f} s "
              f"from the {r['backend']} ({r['copied'] >> 20} MiB in use, the rest left sparse), {r['mb_per_s']:.0f} MB/s of RAM; the guest was stopped {r['stopped_seconds']:.2f} s and "
              + ("runs on" if r["left"] == "running" else f"stays {r['left']}, as it was before the dump"))
    return 0


def follow_events(args) -> int:
    """Print new events as they arrive (the guest keeps running; Ctrl-C stops)."""
    from ..target.following import loss_text
    from ..target.splitkernel import ModuleNotLoaded, follow

    if os.path.exists(args.target) and not args.target.startswith(":"):
        raise SplitdbgError(f"{args.target} is a memory image: nothing new will ever arrive; "
                            f"`splitdbg events {args.target}` lists the events in it")
    with Session(args.target, vmlinux=args.vmlinux, prefer=args.backend, scan=args.scan) as sess:
        sk = sess.splitkernel()

        def ready() -> None:
            # On stderr, so that --json output stays pure: scripts (and tests) wait for this line.
            print(f"splitdbg: following the events of {args.target}", file=sys.stderr, flush=True)
            if not args.json:
                print(render.events_header(sk.slat_name), flush=True)

        def lost(cpu: int, ring: int, n: int) -> None:
            print(f"splitdbg: {loss_text(cpu, ring, n)}: overwritten before they were read", file=sys.stderr,
                  flush=True)

        try:
            for e, check in follow(sk, args.seconds, args.pid, args.kind, on_ready=ready, on_loss=lost):
                print(json.dumps(dict(e.as_dict(), check=check)) if args.json else render.event_line(
                    e.cpu, e.seq, e.container, e.pid, e.kind_name, e.action_name, e.region_name,
                    e.exitinfo1, e.exitinfo2, e.rip, check, sk.delivery(e)), flush=True)
        except ModuleNotLoaded as exc:
            print(f"splitdbg: {exc}", file=sys.stderr)
            return 2
        except TargetGone as exc:       # QEMU exited, its RAM file went, the guest rebooted
            print(f"splitdbg: {exc}: no more events", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            pass
    return 0
